//! The diagram as a standalone SVG document: clusters as nested rounded boxes, layers as
//! boxes coloured by kind, edges as curves with their tensor shapes, side outputs dashed
//! and greyed. Every element carries a `<title>` with its full name (a tooltip in
//! browsers).

use super::layout::{Layout, Rect, TITLE_HEIGHT};
use super::{Diagram, Kind, Node};
use std::fmt::Write;

const FONT_SIZE: f64 = 12.0;
/// Monospace advance at `FONT_SIZE`: boxes are sized from character counts, since no
/// font is measured here.
const CHAR_WIDTH: f64 = 7.3;
const LINE_HEIGHT: f64 = 15.0;
const PAD_X: f64 = 9.0;
const PAD_Y: f64 = 6.0;
/// Room above the layout for the diagram's title.
const HEADER: f64 = 34.0;
const EDGE_COLOUR: &str = "#4b5563";
const SIDE_COLOUR: &str = "#9ca3af";

/// The size of a box holding `lines` of text.
pub fn box_size(lines: &[String]) -> (f64, f64) {
    let chars = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    (
        (chars as f64 * CHAR_WIDTH + 2.0 * PAD_X).max(60.0),
        lines.len() as f64 * LINE_HEIGHT + 2.0 * PAD_Y,
    )
}

pub fn render(diagram: &Diagram) -> String {
    let layout = diagram.layout();
    let title_width = diagram.title.chars().count() as f64 * CHAR_WIDTH * 14.0 / FONT_SIZE + 40.0;
    let width = layout.width.max(title_width).ceil();
    let height = (layout.height + HEADER).ceil();
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="{FONT_SIZE}">"#
    );
    let _ = writeln!(out, "<title>{}</title>", escape(&diagram.network));
    out.push_str(&defs());
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/>
<text x="12" y="22" font-size="14" font-weight="bold">{}</text>
<g transform="translate(0 {HEADER})">"#,
        escape(&diagram.title)
    );
    clusters(&mut out, diagram, &layout);
    edges(&mut out, diagram, &layout);
    nodes(&mut out, diagram, &layout);
    out.push_str("</g>\n</svg>\n");
    out
}

fn defs() -> String {
    format!(
        r#"<defs>
<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{EDGE_COLOUR}"/></marker>
<marker id="arrow-side" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{SIDE_COLOUR}"/></marker>
</defs>
"#
    )
}

/// Outer clusters first, so inner ones are drawn over them.
fn clusters(out: &mut String, diagram: &Diagram, layout: &Layout) {
    let depth = |name: &str| name.matches('.').count();
    let mut order: Vec<usize> = (0..diagram.clusters.len()).collect();
    order.sort_by_key(|&c| depth(&diagram.clusters[c].name));
    for c in order {
        let (cluster, Some(Some(rect))) = (&diagram.clusters[c], layout.clusters.get(c)) else {
            continue;
        };
        let fill = ["#f8fafc", "#f1f5f9", "#e9eef5", "#e2e8f0"][depth(&cluster.name) % 4];
        let dash = if cluster.side {
            r#" stroke-dasharray="5 4""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r##"<g class="cluster"><title>{name}</title><rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" rx="6" fill="{fill}" stroke="#94a3b8"{dash}/><text x="{tx:.1}" y="{ty:.1}" font-size="11" fill="#475569">{short}</text></g>"##,
            name = escape(&cluster.name),
            short = escape(cluster_title(&cluster.name)),
            x = rect.x,
            y = rect.y,
            w = rect.width,
            h = rect.height,
            tx = rect.x + 6.0,
            ty = rect.y + TITLE_HEIGHT - 2.0,
        );
    }
}

/// A nested cluster is titled by its last name segment (its parent's box says the
/// rest), but a bare repeat index keeps its parent's: `layer1.0`, not `0`.
fn cluster_title(name: &str) -> &str {
    let mut starts = name.rmatch_indices('.').map(|(i, _)| i + 1);
    let last = starts.next().unwrap_or(0);
    if name[last..].bytes().all(|b| b.is_ascii_digit()) {
        &name[starts.next().unwrap_or(0)..]
    } else {
        &name[last..]
    }
}

fn edges(out: &mut String, diagram: &Diagram, layout: &Layout) {
    let mut labelled = vec![false; diagram.nodes.len()];
    for (edge, points) in diagram.edges.iter().zip(&layout.edges) {
        if points.len() < 2 {
            continue;
        }
        let side = diagram.nodes[edge.from].side || diagram.nodes[edge.to].side;
        let (colour, marker, dash) = if side {
            (SIDE_COLOUR, "arrow-side", r#" stroke-dasharray="5 4""#)
        } else {
            (EDGE_COLOUR, "arrow", "")
        };
        let _ = writeln!(
            out,
            r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="1.3"{dash} marker-end="url(#{marker})"/>"#,
            path(points)
        );
        // A tensor read by several boxes is labelled once, below its producer.
        if !std::mem::replace(&mut labelled[edge.from], true) {
            let (x, y) = layout.label_anchors[edge.from];
            let colour = if diagram.nodes[edge.from].side {
                SIDE_COLOUR
            } else {
                EDGE_COLOUR
            };
            let _ = writeln!(
                out,
                r#"<text x="{x:.1}" y="{y:.1}" font-size="10" fill="{colour}">{}</text>"#,
                escape(&edge.shape)
            );
        }
    }
}

/// Straight where vertical, a smooth S-curve between ranks.
fn path(points: &[(f64, f64)]) -> String {
    let mut d = format!("M{:.1},{:.1}", points[0].0, points[0].1);
    for pair in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        if (x0 - x1).abs() < 0.5 {
            let _ = write!(d, " L{x1:.1},{y1:.1}");
        } else {
            let mid = (y0 + y1) / 2.0;
            let _ = write!(d, " C{x0:.1},{mid:.1} {x1:.1},{mid:.1} {x1:.1},{y1:.1}");
        }
    }
    d
}

fn nodes(out: &mut String, diagram: &Diagram, layout: &Layout) {
    for (node, rect) in diagram.nodes.iter().zip(&layout.nodes) {
        node_box(out, node, rect);
    }
}

fn node_box(out: &mut String, node: &Node, rect: &Rect) {
    let (fill, stroke, extra) = if node.side {
        ("#f3f4f6", SIDE_COLOUR, r#" stroke-dasharray="5 4""#)
    } else {
        (fill(node.kind), "#334155", "")
    };
    let _ = write!(
        out,
        r#"<g class="node"><title>{}</title><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="4" fill="{fill}" stroke="{stroke}"{extra}/>"#,
        escape(&node.name),
        rect.x,
        rect.y,
        rect.width,
        rect.height
    );
    let text_colour = if node.side { "#6b7280" } else { "#111827" };
    for (i, line) in node.lines.iter().enumerate() {
        let weight = if i == 0 { r#" font-weight="bold""# } else { "" };
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{text_colour}"{weight}>{}</text>"#,
            rect.center_x(),
            rect.y + PAD_Y + LINE_HEIGHT * (i as f64 + 1.0) - 3.5,
            escape(line)
        );
    }
    out.push_str("</g>\n");
}

pub fn fill(kind: Kind) -> &'static str {
    match kind {
        Kind::Input => "#ffffff",
        Kind::Conv => "#dbeafe",
        Kind::Pool => "#dcfce7",
        Kind::Dense => "#fde68a",
        Kind::Norm => "#f3e8ff",
        Kind::Activation => "#f1f5f9",
        Kind::Merge => "#fee2e2",
        Kind::Reshape => "#f5f5f4",
        Kind::Block => "#e0e7ff",
    }
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}
