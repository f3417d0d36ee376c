//! Helpers shared by the host's integration tests: the reference Python, and (in
//! `fixtures`) models and data.
#![allow(dead_code)] // each test file uses some of them

pub mod fixtures;

use std::path::PathBuf;
use std::process::Command;

/// The Python that has PyTorch, torchvision and onnxruntime: `SEGCAM_PYTHON`, else the
/// venv `just setup` makes. A missing interpreter fails the test (never skips it).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SEGCAM_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    PathBuf::from(home).join(".cache/segcam/venv/bin/python")
}

/// A script under `host/tests/reference/`.
pub fn reference_script(name: &str) -> String {
    format!("{}/tests/reference/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Run the reference Python with `args`; panic with its output if it fails.
pub fn run_python(args: &[&str]) -> String {
    let py = python();
    let out = Command::new(&py).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run {} ({e}); run `just setup` or set SEGCAM_PYTHON",
            py.display()
        )
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{text}",
        py.display()
    );
    text
}
