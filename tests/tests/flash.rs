//! `just flash` (scripts/flash) on files standing in for cards: what it writes reads
//! back as the image, and what it must refuse it refuses before writing a byte.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/flash")
}

/// An image of `len` bytes (not all zero) with its `.sha256` beside it, as `just image`
/// writes them.
fn image(dir: &Path, name: &str, len: usize) -> PathBuf {
    let path = dir.join(name);
    let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(&path, bytes).unwrap();
    let sums = Command::new("sha256sum")
        .arg(name)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(sums.status.success());
    std::fs::write(dir.join(format!("{name}.sha256")), sums.stdout).unwrap();
    path
}

fn card(dir: &Path, name: &str, len: u64) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().set_len(len).unwrap();
    path
}

fn flash(image: &Path, device: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(script());
    command.arg(image).arg(device).stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn refused(out: &Output, says: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "not refused: {err}");
    assert!(err.contains(says), "expected '{says}' in: {err}");
}

fn zeros(path: &Path) -> bool {
    std::fs::read(path).unwrap().iter().all(|&b| b == 0)
}

#[test]
fn writes_the_image_and_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img", 3 << 20);
    let target = card(dir.path(), "card.bin", 8 << 20);
    let out = flash(&img, &target, &[("FLASH_YES", "1")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("checked"));
    let written = std::fs::read(&target).unwrap();
    assert_eq!(written.len(), 8 << 20, "the card keeps its size");
    assert_eq!(&written[..3 << 20], &std::fs::read(&img).unwrap()[..]);
}

#[test]
fn refuses_before_writing_a_byte() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img", 1 << 20);
    let target = card(dir.path(), "card.bin", 4 << 20);

    // Without yes=1 and no terminal to ask on.
    refused(&flash(&img, &target, &[]), "without a terminal");
    // Larger than the limit, unless forced.
    refused(
        &flash(&img, &target, &[("FLASH_YES", "1"), ("FLASH_MAX", "2M")]),
        "larger than 2M",
    );
    // Smaller than the image.
    let tiny = card(dir.path(), "tiny.bin", 1 << 19);
    refused(
        &flash(&img, &tiny, &[("FLASH_YES", "1")]),
        "smaller than the image",
    );
    // A changed image.
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&img, bytes).unwrap();
    refused(
        &flash(&img, &target, &[("FLASH_YES", "1")]),
        "damaged or changed",
    );
    // No checksum beside it.
    std::fs::remove_file(dir.path().join("a.img.sha256")).unwrap();
    refused(
        &flash(&img, &target, &[("FLASH_YES", "1")]),
        "a.img.sha256: missing",
    );
    assert!(zeros(&target) && zeros(&tiny), "nothing was written");

    let forced = image(dir.path(), "b.img", 1 << 20);
    let out = flash(
        &forced,
        &target,
        &[
            ("FLASH_YES", "1"),
            ("FLASH_MAX", "2M"),
            ("FLASH_FORCE", "1"),
        ],
    );
    assert!(out.status.success(), "force=1 writes past the limit");
}

#[test]
fn refuses_the_running_systems_disk() {
    // The block device / is mounted from; without yes=1 nothing could be written even
    // if the check were wrong, since there is no terminal to ask on.
    let root = Command::new("findmnt")
        .args(["-nvo", "SOURCE", "/"])
        .output()
        .unwrap();
    let root = String::from_utf8_lossy(&root.stdout).trim().to_string();
    if !root.starts_with("/dev/") || !Path::new(&root).exists() {
        return; // a container's overlay root: no disk to refuse
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img", 1 << 20);
    let out = flash(&img, Path::new(&root), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("mounted") || err.contains("running system's disk"),
        "{root}: {err}"
    );
}

/// `sh -c SCRIPT` in a mount namespace of its own (as root there), so the mounts the
/// test makes are gone with it; None where this machine allows no such namespace.
fn in_mount_namespace(script: &str, args: &[&Path]) -> Option<Output> {
    let probe = Command::new("unshare")
        .args(["--map-root-user", "--mount", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        return None;
    }
    let mut command = Command::new("unshare");
    command
        .args(["--map-root-user", "--mount", "sh", "-c", script, "sh"])
        .args(args)
        .env("FLASH_YES", "1")
        .stdin(Stdio::null());
    Some(command.output().unwrap())
}

#[test]
fn refuses_a_mounted_card() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img", 1 << 20);
    let target = card(dir.path(), "card.bin", 4 << 20);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // the card mounted itself (as fuse2fs or udisks show it: the file is the source)
    let Some(out) = in_mount_namespace(
        r#"mount -t tmpfs "$2" "$3" && exec "$4" "$1" "$2""#,
        &[&img, &target, &mnt, &script()],
    ) else {
        panic!("unshare --map-root-user --mount: no mount namespace here");
    };
    refused(&out, "mounted; unmount it first");
    assert!(zeros(&target), "nothing was written");
    // the same card, once nothing is mounted from it, is written
    let out = flash(&img, &target, &[("FLASH_YES", "1")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // mounted through a loop device (needs root for losetup: CI runs as root)
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root && Path::new("/dev/loop-control").exists() {
        let fs = card(dir.path(), "fs.bin", 8 << 20);
        let made = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&fs)
            .status()
            .unwrap();
        assert!(made.success());
        let out = Command::new("unshare")
            .args(["--mount", "sh", "-c"])
            .arg(r#"mount -o loop "$2" "$3" && "$4" "$1" "$2"; rc=$?; umount "$3"; exit $rc"#)
            .args([
                "sh".as_ref(),
                img.as_os_str(),
                fs.as_os_str(),
                mnt.as_os_str(),
            ])
            .arg(script())
            .env("FLASH_YES", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        refused(&out, "mounted through /dev/loop");
        let after = std::fs::read(&fs).unwrap();
        assert_ne!(
            &after[..1 << 20],
            &std::fs::read(&img).unwrap()[..],
            "not written"
        );
    }
}
