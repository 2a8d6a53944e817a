//! Links the `cnnc` executable at a fixed address (not position-independent): a PIE
//! binary of this size starts with 21 K relocations to apply and 90 more pages to
//! write, a tenth of a small network's `cnnc run` (0.9 of 2.3 ms went to the process
//! itself, 0.1 of it to relocating).
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
