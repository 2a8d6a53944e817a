//! Generates the Rust types of ONNX's protobuf schema.

use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let proto_dir = root.join("onnx/proto");
    let out_dir = root.join("onnx/src/proto");
    let descriptors = protox::compile([proto_dir.join("onnx.proto")], [&proto_dir]).expect("onnx.proto compiles");
    std::fs::create_dir_all(&out_dir).expect("output folder");
    prost_build::Config::new()
        .out_dir(&out_dir)
        .compile_fds(descriptors)
        .expect("code generation");
    println!("wrote {}", out_dir.join("onnx.rs").display());
}
