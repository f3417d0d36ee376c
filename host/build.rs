//! Make `seg-host` runnable without LD_LIBRARY_PATH, and make it really use CUDA.
//!
//! torch-sys tells its direct dependents where libtorch lives (`DEP_TCH_LIBTORCH_LIB`).
//! We bake that folder in as an rpath, and link `libtorch_cuda` with `--no-as-needed`:
//! nothing references its symbols directly, so the linker would otherwise drop it and
//! CUDA would be silently unavailable on a GPU machine.

use std::path::Path;

fn main() {
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").unwrap_or_default();
    let lib = Path::new(&lib);
    println!(
        "cargo:rustc-env=SEG_HOST_LIBTORCH_VERSION={}",
        libtorch_version(lib)
    );
    if lib.as_os_str().is_empty() {
        return;
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

/// The version written beside libtorch: `torch/version.py` in a PyTorch wheel,
/// `build-version` in a libtorch zip.
fn libtorch_version(lib: &Path) -> String {
    let Some(root) = lib.parent() else {
        return "unknown".into();
    };
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        if let Some(v) = text.lines().find_map(|l| l.strip_prefix("__version__ = ")) {
            return format!(
                "{} (PyTorch wheel at {})",
                v.trim_matches(['\'', '"']),
                root.display()
            );
        }
    }
    match std::fs::read_to_string(root.join("build-version")) {
        Ok(v) => format!("{} ({})", v.trim(), root.display()),
        Err(_) => format!("unknown ({})", root.display()),
    }
}
