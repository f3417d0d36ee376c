//! What the emulated-board tests (deploy_board, fleet) share: this workstation's
//! seg-cam, release keys, and reading what a deploy said.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// stdout and stderr of a finished command, for assertions and their messages.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// This workstation's seg-cam (the test's own build): golden sets, keys, signatures.
pub fn workstation_seg_cam() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().join("seg-cam")
}

/// A release key pair `dir/name` (and its .pub) made by `seg-cam release keygen`,
/// with its key id.
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = Command::new(workstation_seg_cam())
        .args(["release", "keygen", "--key"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("key ").map(str::to_string))
        .unwrap_or_else(|| panic!("no key id: {}", text(&out)));
    (key, id)
}

/// The bytes the first upload of a deploy's output sent ("deploy: sending N of M
/// files (B bytes); …").
pub fn bytes_sent(said: &str) -> u64 {
    said.split("deploy: sending ")
        .nth(1)
        .and_then(|rest| rest.split(" bytes)").next())
        .and_then(|head| head.rsplit('(').next())
        .and_then(|bytes| bytes.parse().ok())
        .unwrap_or_else(|| panic!("no bytes-sent line: {said}"))
}

/// What someone with the deploy account could do to a signed release folder: flip a
/// byte of its model and make MANIFEST.sha256 match (release.json's signature cannot).
pub fn tamper_with_model(folder: &Path) {
    let model = folder.join("model.onnx");
    let mut bytes = std::fs::read(&model).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&model, &bytes).unwrap();
    let sum = Command::new("sha256sum")
        .current_dir(folder)
        .arg("model.onnx")
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&sum.stdout).trim().to_string();
    let manifest: String = std::fs::read_to_string(folder.join("MANIFEST.sha256"))
        .unwrap()
        .lines()
        .map(|l| if l.ends_with(" model.onnx") { line.clone() } else { l.to_string() } + "\n")
        .collect();
    std::fs::write(folder.join("MANIFEST.sha256"), manifest).unwrap();
}

/// A kept reference set (`seg-cam check --make`) in `dir/golden`, made from a model of
/// the scene's first three classes only: a six-class release fails it.
pub fn golden_of_other_classes(dir: &Path, config: &str) -> PathBuf {
    let golden = dir.join("golden");
    let three = segcam::testing::card(segcam::scene::scene_classes().first(3), 24, 32, false);
    let other = segcam::testing::write_model(dir, "other.onnx", &three);
    let made = Command::new(workstation_seg_cam())
        .args(["check", "--make", "--golden", golden.to_str().unwrap()])
        .args(["--model", other.to_str().unwrap(), "--config", config])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    golden
}
