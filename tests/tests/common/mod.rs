//! Helpers for the end-to-end tests: find the workspace's binaries and run them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A binary of the workspace, built beside this test (`cargo test --workspace` builds
/// every package's binaries with its tests, as `just test` runs it).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target folder")
        .join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `just test` (or `cargo test --workspace --no-run` first)",
        path.display()
    );
    path
}

/// Run `seg-host` with `args`, returning its output whatever the exit status.
pub fn seg_host(args: &[&str]) -> Output {
    Command::new(binary("seg-host"))
        .args(args)
        .output()
        .expect("seg-host runs")
}

/// Run `seg-host` and insist that it succeeds; returns stdout.
pub fn seg_host_ok(args: &[&str]) -> String {
    let out = seg_host(args);
    assert!(
        out.status.success(),
        "seg-host {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The per-epoch records of a run folder.
pub fn history(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.json")).expect("metrics.json written");
    serde_json::from_str(&text).expect("metrics.json is JSON")
}
