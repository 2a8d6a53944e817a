//! The seed networks' totals, pinned to the published figures, and golden summaries.

mod common;

use cnnc_compiler::compile;
use cnnc_compiler::summary::{self, Summary, si};
use common::{assert_golden, cnnc, example, stdout};

fn summarize(name: &str) -> Summary {
    let source = std::fs::read_to_string(example(name)).expect("example exists");
    let compilation = compile(&source);
    assert!(
        !compilation.has_errors(),
        "{name} has errors: {:?}",
        compilation.diagnostics
    );
    assert_eq!(compilation.networks.len(), 1, "{name} defines one network");
    summary::summarize(&compilation.networks[0], None)
}

/// (example, parameters, MACs as published to two decimals). Inference totals: side
/// outputs pruned.
const PUBLISHED: &[(&str, u64, &str)] = &[
    // LeNet-5 with a full C3 and dense 120-84-10.
    ("lenet5", 61_706, "416.52 K"),
    // torchvision's figures (parameters exact, GFLOPS column = MACs).
    ("alexnet_torchvision", 61_100_840, "714.19 M"),
    ("vgg11", 132_863_336, "7.61 G"),
    ("vgg13", 133_047_848, "11.31 G"),
    ("vgg16", 138_357_544, "15.47 G"),
    ("vgg19", 143_667_240, "19.63 G"),
    ("googlenet_torchvision", 6_624_904, "1.50 G"),
    ("inception_v3", 23_834_568, "5.71 G"),
    ("resnet18", 11_689_512, "1.81 G"),
    ("resnet34", 21_797_672, "3.66 G"),
    ("resnet50", 25_557_032, "4.09 G"),
    ("resnet101", 44_549_160, "7.80 G"),
    ("resnet152", 60_192_808, "11.51 G"),
    // timm's inception_resnet_v2.
    ("inception_resnet_v2", 55_843_464, "13.16 G"),
];

#[test]
fn seed_networks_match_published_figures() {
    let mut wrong = Vec::new();
    for &(name, params, macs) in PUBLISHED {
        let totals = summarize(name).totals.inference;
        if totals.params != params || si(totals.macs) != macs {
            wrong.push(format!(
                "{name}: {} params, {} MACs; published {params} params, {macs} MACs",
                totals.params,
                si(totals.macs)
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn side_outputs_are_counted_separately() {
    // torchvision's Inception-v3 with its auxiliary classifier: 27,161,264.
    let v3 = summarize("inception_v3").totals;
    assert_eq!(v3.with_side_outputs.map(|c| c.params), Some(27_161_264));
    assert_eq!(v3.side_outputs, ["AuxLogits"]);
    let googlenet = summarize("googlenet_torchvision").totals;
    assert_eq!(googlenet.inference.params, 6_624_904);
    assert_eq!(googlenet.side_outputs.len(), 2);
    assert!(
        googlenet
            .with_side_outputs
            .is_some_and(|c| c.params > googlenet.inference.params)
    );
    assert_eq!(summarize("resnet50").totals.with_side_outputs, None);
}

#[test]
fn paper_variants_have_their_own_counts() {
    // The AlexNet paper's two-group convolutions and 227x227 input.
    assert_eq!(summarize("alexnet").totals.inference.params, 60_965_224);
    // GoogLeNet as in Table 1 of the paper (biases included, 5x5 branches, no BN).
    assert_eq!(summarize("googlenet").totals.inference.params, 6_998_552);
    // VGG-A with LRN has no more parameters than VGG-A.
    assert_eq!(
        summarize("vgg11_lrn").totals.inference.params,
        summarize("vgg11").totals.inference.params
    );
}

#[test]
fn golden_summaries() {
    let table = |args: &[&str]| {
        let output = cnnc(args);
        assert!(output.status.success(), "cnnc {args:?} failed");
        stdout(&output)
    };
    assert_golden(
        "lenet5.summary.txt",
        &table(&["summary", "examples/lenet5.cnn"]),
    );
    assert_golden(
        "resnet18.depth2.summary.txt",
        &table(&["summary", "examples/resnet18.cnn", "--depth", "2"]),
    );
    assert_golden(
        "googlenet.summary.md",
        &table(&[
            "summary",
            "examples/googlenet.cnn",
            "--format",
            "markdown",
            "--depth",
            "1",
        ]),
    );
    assert_golden(
        "lenet5.summary.json",
        &table(&["summary", "examples/lenet5.cnn", "--format", "json"]),
    );
}

#[test]
fn json_summary_has_totals_and_every_layer() {
    let output = cnnc(&["summary", "examples/googlenet.cnn", "--format", "json"]);
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("valid JSON");
    let layers = json["layers"].as_array().expect("layers");
    assert!(
        layers
            .iter()
            .any(|l| l["name"] == "inception_4a.branch2.conv1")
    );
    assert!(layers.iter().any(|l| l["side"] == "aux1"));
    assert_eq!(json["totals"]["inference"]["params"], 6_998_552);
    assert_eq!(
        json["totals"]["side_outputs"],
        serde_json::json!(["aux1", "aux2"])
    );
}
