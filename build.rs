//! Link settings of the `cnnc` executable that make it start sooner (a small network's
//! `cnnc run` is mostly its start; docs/architecture.md weighs what they give up).
fn main() {
    // Without it Cargo runs this again, and relinks, whenever any file of the package
    // changes (docs and tests included).
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        // At a fixed address (not position-independent): a PIE binary of this size
        // starts with 21 K relocations to apply and 90 more pages to write, 0.1 ms.
        println!("cargo:rustc-link-arg-bins=-no-pie");
        if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu") {
            static_unwinder();
        }
    }
}

/// The unwinder linked in (`libgcc_eh`, gcc's static archive), not loaded as
/// `libgcc_s.so.1`: one shared library fewer to find, map and relocate at each start
/// (0.03-0.05 ms). Rust's standard library asks for `-lgcc_s`; a linker script of that
/// name, found first, answers with the static archive. The search path is the whole
/// package's, so the (position-independent) test executables link it too, as gcc's
/// archive allows: `tests/unwind.rs` checks that a panic still unwinds there.
fn static_unwinder() {
    // Only where the C compiler that links has the archive (gcc's `libgcc-dev` does);
    // elsewhere the shared library stays.
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let found = std::process::Command::new(compiler)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string());
    if !found.is_some_and(|path| std::path::Path::new(&path).is_absolute()) {
        return;
    }
    let out = std::env::var("OUT_DIR").expect("Cargo sets OUT_DIR");
    let dir = std::path::Path::new(&out).join("unwinder");
    std::fs::create_dir_all(&dir).expect("create the linker script's folder");
    std::fs::write(dir.join("libgcc_s.so"), "INPUT(-lgcc_eh)\n").expect("write the linker script");
    println!("cargo:rustc-link-search=native={}", dir.display());
}
