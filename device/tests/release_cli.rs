//! `seg-cam release`: a key pair made, a release folder signed and verified as a board
//! does, each refusal named, and the signature checked by the minisign tool as well.

use std::ffi::OsStr;
use std::fmt::Debug;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use segcam::scene::scene_classes;
use segcam::testing::{card, write_model};

const SEG_CAM: &str = env!("CARGO_BIN_EXE_seg-cam");

fn release<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(SEG_CAM)
        .arg("release")
        .args(args)
        .output()
        .expect("run seg-cam release")
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok<S: AsRef<OsStr> + Debug>(args: &[S]) -> String {
    let out = release(args);
    assert!(out.status.success(), "{args:?}: {}", output_text(&out));
    output_text(&out)
}

/// Refused with exit status 3 and a message holding `why`.
fn refused<S: AsRef<OsStr> + Debug>(args: &[S], why: &str) {
    let out = release(args);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{args:?}: {}",
        output_text(&out)
    );
    assert!(
        output_text(&out).contains(why),
        "{args:?}: {}",
        output_text(&out)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn releases_are_signed_verified_and_refused_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("workstation/release.key");
    let said = ok(&["keygen", "--key", s(&key)]);
    let id = said
        .lines()
        .find_map(|l| l.strip_prefix("key "))
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 16, "{said}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the secret key is its owner's only");
    let public = key.with_extension("pub");
    assert!(public.is_file());
    // A second keygen never replaces a key boards trust.
    let again = release(&["keygen", "--key", s(&key)]);
    assert!(!again.status.success() && output_text(&again).contains("already exists"));

    // The board's trusted keys: ours.
    let keys = dir.path().join("board-keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy(&public, keys.join("ours.pub")).unwrap();

    let rel = dir.path().join("release");
    std::fs::create_dir(&rel).unwrap();
    std::fs::write(rel.join("seg-cam"), b"\x7fELF a board binary").unwrap();
    write_model(&rel, "model.onnx", &card(scene_classes(), 24, 32, false));
    std::fs::write(rel.join("seg-cam.toml"), "http = \"0.0.0.0:8080\"\n").unwrap();
    let said = ok(&[
        "sign",
        s(&rel),
        "--key",
        s(&key),
        "--board",
        "pi5",
        "--board",
        "orin",
    ]);
    assert!(said.contains("3 files"), "{said}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rel.join("release.json")).unwrap()).unwrap();
    assert_eq!(manifest["model"]["name"], "conv-test");
    let counter = manifest["counter"].as_u64().unwrap();
    let kept = std::fs::read_to_string(key.with_extension("counter")).unwrap();
    assert_eq!(kept.trim().parse::<u64>().unwrap(), counter);

    // The minisign tool reads the same key and signature (Debian's `minisign`).
    let checked = Command::new("minisign")
        .args(["-V", "-p", s(&public), "-m", s(&rel.join("release.json"))])
        .output()
        .expect("minisign (scripts/setup-test-tools installs it)");
    assert!(checked.status.success(), "{}", output_text(&checked));
    assert!(
        output_text(&checked).contains(&format!("counter {counter}")),
        "{}",
        output_text(&checked)
    );

    let board_counter = dir.path().join("board-counter");
    let record = dir.path().join("verification.json");
    let verify = |board: &str, accept: bool| {
        let mut args = vec!["verify", s(&rel), "--keys", s(&keys), "--board", board];
        args.extend(["--counter-file", s(&board_counter)]);
        if accept {
            args.extend(["--accept", "--record", s(&record)]);
        }
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let said = ok(&verify("pi5", true));
    assert!(
        said.contains(&format!("key {id}")) && said.contains("model conv-test"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(&board_counter).unwrap().trim(),
        counter.to_string(),
        "the accepted counter is recorded"
    );
    // How it was verified, for the board's /metrics (segcam::provenance).
    let recorded: segcam::provenance::Provenance =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(
        (
            recorded.verification.as_str(),
            recorded.key_id.as_deref(),
            recorded.counter
        ),
        ("signed", Some(id.as_str()), Some(counter))
    );
    // The same release again is not newer than what the board accepted.
    refused(&verify("pi5", false), "is not above");
    std::fs::remove_file(&board_counter).unwrap();
    refused(&verify("rpi3", false), "not for this board (rpi3)");

    // A signed counter older than the last accepted one, in a freshly signed release.
    std::fs::write(&board_counter, format!("{}\n", counter + 10)).unwrap();
    ok(&["sign", s(&rel), "--key", s(&key), "--board", "pi5"]);
    refused(&verify("pi5", false), "is not above");
    let after = std::fs::read_to_string(key.with_extension("counter")).unwrap();
    assert!(
        after.trim().parse::<u64>().unwrap() > counter,
        "the key's counter moved on"
    );
    std::fs::remove_file(&board_counter).unwrap();
    let args = verify("pi5", false);
    ok(&args);

    // One flipped byte in the model after signing.
    let model = rel.join("model.onnx");
    let mut bytes = std::fs::read(&model).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&model, &bytes).unwrap();
    refused(&args, "model.onnx: changed after signing");
    bytes[middle] ^= 1;
    std::fs::write(&model, &bytes).unwrap();
    ok(&args);

    // A file slipped in after signing; the manifest edited (the signature breaks).
    std::fs::write(rel.join("extra.sh"), b"#!/bin/sh\n").unwrap();
    refused(&args, "extra.sh: not in the signed manifest");
    std::fs::remove_file(rel.join("extra.sh")).unwrap();
    let manifest_path = rel.join("release.json");
    let text = std::fs::read_to_string(&manifest_path).unwrap();
    std::fs::write(&manifest_path, text.replace("pi5", "pi4")).unwrap();
    refused(&args, "signature does not match");
    std::fs::write(&manifest_path, text).unwrap();
    ok(&args);

    // Signed with a key the board does not trust; no signature at all.
    let other = dir.path().join("other/release.key");
    let said = ok(&["keygen", "--key", s(&other)]);
    let other_id = said.lines().find_map(|l| l.strip_prefix("key ")).unwrap();
    ok(&["sign", s(&rel), "--key", s(&other), "--board", "pi5"]);
    refused(
        &args,
        &format!("signed with key {other_id}, which this board does not trust"),
    );
    std::fs::remove_file(rel.join("release.json.minisig")).unwrap();
    refused(&args, "unsigned");
}
