//! Links the `cnnc` executable at a fixed address (not position-independent): a PIE
//! binary of this size starts with 21 K relocations to apply and 90 more pages to
//! write, 0.1 ms of a small network's 2.3 ms `cnnc run` (docs/architecture.md weighs
//! what it gives up).
fn main() {
    // Without it Cargo runs this again, and relinks, whenever any file of the package
    // changes (docs and tests included).
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
