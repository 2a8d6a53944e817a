//! `cnnc graph`: golden DOT output, SVGs that parse and rasterize to sensible images,
//! layouts that keep boxes apart and edges pointing down, and the committed diagrams
//! in docs/diagrams kept up to date with the generator.

mod common;

use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::compile;
use cnnc_compiler::diagram::{self, Diagram};
use common::{assert_golden, cnnc, example_files, root, stderr, stdout};
use resvg::{tiny_skia, usvg};

fn checked(path: &str) -> CheckedGraph {
    let source = std::fs::read_to_string(root().join(path)).expect("network file exists");
    let compilation = compile(&source);
    assert!(!compilation.has_errors(), "{path} has errors");
    compilation.networks.into_iter().next().expect("a network")
}

fn svg(name: &str, depth: Option<usize>) -> String {
    diagram::to_svg(&checked(&format!("examples/{name}.cnn")), depth)
}

/// The SVG parsed and drawn at `scale`: its size, and how many pixels are not white.
fn rasterize(svg: &str, scale: f32) -> (u32, u32, usize) {
    let tree = usvg::Tree::from_str(svg, &usvg::Options::default()).expect("well-formed SVG");
    let size = tree.size().to_int_size().scale_by(scale).expect("a size");
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height()).expect("a pixmap");
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    let inked = pixmap
        .pixels()
        .iter()
        .filter(|p| (p.red(), p.green(), p.blue()) != (255, 255, 255))
        .count();
    (size.width(), size.height(), inked)
}

#[test]
fn lenet5_dot_is_golden() {
    let output = cnnc(&["graph", "examples/lenet5.cnn", "--format", "dot"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_golden("lenet5.dot", &stdout(&output));
}

#[test]
fn blocks_residuals_concat_and_side_outputs_dot_is_golden() {
    let output = cnnc(&["graph", "tests/networks/tiny_blocks.cnn", "--format", "dot"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_golden("tiny_blocks.dot", &stdout(&output));
    let collapsed = cnnc(&[
        "graph",
        "tests/networks/tiny_blocks.cnn",
        "--format",
        "dot",
        "--depth",
        "1",
    ]);
    assert_golden("tiny_blocks.depth1.dot", &stdout(&collapsed));
}

#[test]
fn svgs_rasterize_to_images_whose_sizes_make_sense() {
    let (lenet_w, lenet_h, lenet_ink) = rasterize(&svg("lenet5", None), 0.5);
    let (_, resnet_h, resnet_ink) = rasterize(&svg("resnet50", None), 0.25);
    let (_, collapsed_h, collapsed_ink) = rasterize(&svg("resnet50", Some(1)), 0.25);
    // Boxes, edges and arrowheads are drawn even without fonts for the text.
    let area = (lenet_w * lenet_h) as usize;
    assert!(lenet_ink * 50 > area, "LeNet-5's diagram is nearly blank");
    assert!(resnet_ink > 0 && collapsed_ink > 0);
    // Back to full size: LeNet-5 was drawn at 1/2, ResNet-50 at 1/4.
    assert!(
        resnet_h * 4 > 5 * lenet_h * 2,
        "ResNet-50 is not much taller than LeNet-5"
    );
    assert!(
        collapsed_h * 3 < resnet_h,
        "--depth 1 did not shrink ResNet-50"
    );
}

#[test]
fn collapsed_diagrams_name_their_blocks() {
    let googlenet = svg("googlenet", Some(1));
    for block in ["inception_3a", "inception_5b", "aux1", "aux2"] {
        assert!(
            googlenet.contains(&format!("<title>{block}</title>")),
            "{block}"
        );
    }
    assert!(!googlenet.contains("inception_3a.branch1"));
    let resnet = svg("resnet50", Some(2));
    for block in ["layer1", "layer1.0", "layer4.2"] {
        assert!(
            resnet.contains(&format!("<title>{block}</title>")),
            "{block}"
        );
    }
    assert!(resnet.contains("12 layers, 75.01 K params"));
}

#[test]
fn side_outputs_are_dashed_and_apart() {
    let checked = checked("examples/googlenet.cnn");
    let diagram = Diagram::new(&checked, None);
    let layout = diagram.layout();
    let main_right = diagram
        .nodes
        .iter()
        .zip(&layout.nodes)
        .filter(|(n, _)| !n.side)
        .map(|(_, r)| r.right())
        .fold(0.0, f64::max);
    let sides: Vec<_> = diagram
        .nodes
        .iter()
        .zip(&layout.nodes)
        .filter(|(n, _)| n.side)
        .collect();
    assert_eq!(sides.len(), 18, "two auxiliary classifiers of 9 layers");
    assert!(sides.iter().all(|(_, r)| r.x > main_right));
    let svg = diagram::to_svg(&checked, None);
    assert!(svg.contains(r#"<title>aux1.conv1</title><rect"#));
    assert!(svg.contains("stroke-dasharray"));
}

/// Every example, in full and collapsed: within a rank no two boxes overlap, and every
/// edge runs downwards from its source's bottom to its target's top.
#[test]
fn layouts_keep_boxes_apart_and_edges_downward() {
    for file in example_files() {
        let checked = checked(&file);
        for depth in [None, Some(1), Some(2)] {
            let diagram = Diagram::new(&checked, depth);
            let layout = diagram.layout();
            let mut by_rank: Vec<(usize, f64, f64)> = layout
                .ranks
                .iter()
                .zip(&layout.nodes)
                .map(|(&rank, r)| (rank, r.x, r.right()))
                .collect();
            by_rank.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
            for pair in by_rank.windows(2) {
                if pair[0].0 == pair[1].0 {
                    assert!(pair[0].2 < pair[1].1, "{file} {depth:?}: boxes overlap");
                }
            }
            for (edge, path) in diagram.edges.iter().zip(&layout.edges) {
                assert!(layout.ranks[edge.from] < layout.ranks[edge.to]);
                assert_eq!(
                    path.first().map(|p| p.1),
                    Some(layout.nodes[edge.from].bottom())
                );
                assert_eq!(path.last().map(|p| p.1), Some(layout.nodes[edge.to].y));
                assert!(
                    path.windows(2).all(|p| p[1].1 >= p[0].1),
                    "{file}: edge goes up"
                );
            }
        }
    }
}

#[test]
fn graph_writes_a_file_and_reports_errors_without_panicking() {
    let dir = common::scratch("graph-test");
    let out = dir.join("lenet5.dot");
    let output = cnnc(&[
        "graph",
        "examples/lenet5.cnn",
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let written = std::fs::read_to_string(&out).expect("written");
    assert!(
        written.starts_with("digraph \"LeNet5\""),
        "the .dot extension picks DOT"
    );
    let entries = std::fs::read_dir(&dir).expect("dir").count();
    assert_eq!(entries, 1, "no temporary file left behind");

    let cases: [(&[&str], &str); 3] = [
        (
            &["graph", "examples/missing.cnn"],
            "cannot read examples/missing.cnn",
        ),
        (
            &["graph", "examples/lenet5.cnn", "--network", "Nope"],
            "no network named `Nope`; this file defines: LeNet5",
        ),
        (
            &[
                "graph",
                "examples/lenet5.cnn",
                "-o",
                "/nonexistent-dir/x.svg",
            ],
            "cannot write /nonexistent-dir/x.svg",
        ),
    ];
    for (args, message) in cases {
        let output = cnnc(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&output).contains(message),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(!stderr(&output).contains("panicked"));
    }
}

/// docs/diagrams/NAME.svg is `cnnc graph examples/NAME.cnn`, and NAME-depthN.svg the
/// same with `--depth N` (tools/render_diagrams.sh writes them); they must be current.
#[test]
fn committed_diagrams_are_up_to_date() {
    let dir = root().join("docs/diagrams");
    let mut checked_any = false;
    for entry in std::fs::read_dir(&dir).expect("docs/diagrams exists") {
        let path = entry.expect("entry").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_none_or(|e| e != "svg") {
            continue;
        }
        let (name, depth) = match stem.rsplit_once("-depth") {
            Some((name, depth)) => (name, Some(depth.parse().expect("a depth"))),
            None => (stem, None),
        };
        let committed = std::fs::read_to_string(&path).expect("readable");
        assert!(
            committed == svg(name, depth),
            "{} is out of date: run tools/render_diagrams.sh",
            path.display()
        );
        checked_any = true;
    }
    assert!(checked_any);
}

/// A block's box holds its own layers and no others.
#[test]
fn cluster_boxes_hold_no_strangers() {
    let mut strangers = Vec::new();
    for file in example_files() {
        let checked = checked(&file);
        for depth in [None, Some(1), Some(2)] {
            let diagram = Diagram::new(&checked, depth);
            let layout = diagram.layout();
            for (c, cluster) in layout.clusters.iter().enumerate() {
                let Some(b) = cluster else { continue };
                for (node, r) in diagram.nodes.iter().zip(&layout.nodes) {
                    let inside =
                        r.x < b.right() && b.x < r.right() && r.y < b.bottom() && b.y < r.bottom();
                    if inside && !node.clusters.contains(&c) {
                        strangers.push(format!(
                            "{file} {depth:?}: {} in {}",
                            node.name, diagram.clusters[c].name
                        ));
                    }
                }
            }
        }
    }
    assert!(strangers.is_empty(), "{}", strangers.join("\n"));
}

#[test]
fn bench_draws_its_profile_as_a_bar_chart() {
    let dir = common::scratch("chart");
    let path = dir.join("profile.svg");
    let out = cnnc(&[
        "bench",
        "examples/lenet5.cnn",
        "--runs",
        "2",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--chart",
        path.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let svg = std::fs::read_to_string(&path).expect("the chart");
    // One bar per kernel of the fused graph, in network order.
    assert_eq!(svg.matches("<title>").count(), 8, "{svg}");
    let order: Vec<usize> = ["c1 (", "s2 (", "c3 (", "s4 (", "c5 (", "f6 ("]
        .iter()
        .map(|name| {
            svg.find(name)
                .unwrap_or_else(|| panic!("{name} in the chart"))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "network order: {order:?}"
    );
    let (width, height, inked) = rasterize(&svg, 1.0);
    assert!(width > 600 && height > 8 * 16, "{width}x{height}");
    assert!(inked > 2000, "bars drawn: {inked} pixels");
}
