//! `just image` end to end (scripts/build-image, as the recipe runs it). The
//! generic-efi image boots in qemu and passes board/image-check: /healthz through a
//! forwarded port, frames moving, the root grown to the disk, ssh with the baked key,
//! `just status` and `just deploy` of a second release. The rpi image cannot boot
//! here: its structure is checked (partition table, the Pi's boot files, config.txt
//! and cmdline.txt pointing at what is there, the root file system they name).
//! The images are the full ones users get; the second reuses the first's Debian tree
//! (BASE_CACHE=1). The tiny model keeps the emulated board's frames quick. Root (or
//! sudo without a password) is needed: mmdebstrap's root mode.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use segcam::scene::scene_classes;
use segcam::testing::{board_binary, card, workspace, write_model};

/// One image build at a time: each keeps both cores busy for minutes.
static BUILDS: Mutex<()> = Mutex::new(());

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    let said = text(&output);
    assert!(output.status.success(), "{command:?} failed:\n{said}");
    said
}

/// An ssh key pair in `dir`: (private key, public key).
fn ssh_key(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "image-test", "-f"])
        .arg(&key));
    (key.clone(), key.with_extension("pub"))
}

/// Build the `board` image of the tiny model into `dir/out`; its path.
fn build(dir: &Path, board: &str, public_key: &Path) -> PathBuf {
    let model = write_model(dir, "tiny.onnx", &card(scene_classes(), 24, 32, false));
    let out = dir.join("out");
    let mut command = if is_root() {
        Command::new(workspace().join("scripts/build-image"))
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", "--preserve-env"])
            .arg(workspace().join("scripts/build-image"));
        sudo
    };
    command
        .arg(board_binary())
        .arg(&model)
        .arg(workspace().join("deploy/seg-cam.toml"))
        .arg(public_key)
        .arg(&out)
        .env("BOARD", board)
        // the rpi image reuses the generic one's Debian tree (the same for both)
        .env("BASE_CACHE", "1");
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "build-image failed:\n{}",
        text(&output)
    );
    // the image's path is the one line on standard output
    let image = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    assert!(
        image.is_file(),
        "no image at {}:\n{}",
        image.display(),
        text(&output)
    );
    image
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// What `just image` writes beside every image: checksum, bmap, manifest, contents.
fn check_outputs(image: &Path, board: &str) {
    let sums = std::fs::read_to_string(format!("{}.sha256", image.display())).unwrap();
    let want = sums.split_whitespace().next().unwrap();
    let have = run(Command::new("sha256sum").arg(image));
    assert!(have.starts_with(want), "{image:?}: {have} vs {sums}");

    let stem = image.with_extension("");
    let bmap = std::fs::read_to_string(stem.with_extension("bmap")).unwrap();
    let size = std::fs::metadata(image).unwrap().len();
    assert!(
        bmap.contains(&format!("<ImageSize> {size} </ImageSize>")),
        "{bmap}"
    );
    let manifest = std::fs::read_to_string(stem.with_extension("manifest.txt")).unwrap();
    for line in [
        format!("board: {board}"),
        "deploy-user: segcam".into(),
        "  linux-image-arm64 ".into(),
        "  openssh-server ".into(),
        "\"name\": \"conv-test\"".into(),
    ] {
        assert!(manifest.contains(&line), "no '{line}' in the manifest");
    }
    let contents = std::fs::read_to_string(stem.with_extension("contents.txt")).unwrap();
    assert!(
        contents
            .lines()
            .any(|l| l.contains(" root/opt/segcam/releases/") && l.contains("/seg-cam ")),
        "no seg-cam release in the contents list"
    );
}

/// The `board` image, built (one build at a time) with a fresh key and its outputs
/// checked: (the build lock, held for the whole test; its folder, the private key,
/// the image).
fn built(board: &str) -> (MutexGuard<'static, ()>, tempfile::TempDir, PathBuf, PathBuf) {
    let one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (key, public_key) = ssh_key(dir.path());
    let image = build(dir.path(), board, &public_key);
    check_outputs(&image, board);
    (one, dir, key, image)
}

#[test]
fn generic_efi_image_boots_and_takes_a_second_release() {
    let (_one, _dir, key, image) = built("generic-efi");

    let said = run(Command::new(workspace().join("board/image-check"))
        .arg(&image)
        .arg(&key)
        .env("BOARD_BIN", board_binary()));
    for pass in [
        "PASS /healthz 200",
        "PASS frames move",
        "PASS ssh segcam@",
        "PASS root file system grew",
        "PASS provisioning",
        "PASS just status",
        "PASS just deploy",
        "ALL PASS",
    ] {
        assert!(said.contains(pass), "no '{pass}' in:\n{said}");
    }
}

/// `debugfs -R REQUEST` on an ext4 file system in a file.
fn debugfs(fs: &Path, request: &str) -> String {
    run(Command::new("debugfs").args(["-R", request]).arg(fs))
}

#[test]
fn rpi_image_has_the_pis_boot_partition_and_root() {
    let (_one, dir, _, image) = built("rpi");

    // MBR: the Pi's boot ROM reads a FAT partition (type 0c) first, then the root (83)
    let table: serde_json::Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("--json").arg(&image))).unwrap();
    let table = &table["partitiontable"];
    assert_eq!(table["label"], "dos");
    let disk_id = table["id"]
        .as_str()
        .unwrap()
        .trim_start_matches("0x")
        .to_string();
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["type"], "c");
    assert_eq!(parts[0]["bootable"], true);
    assert_eq!(parts[1]["type"], "83");
    let sector = |p: &serde_json::Value, k: &str| p[k].as_u64().unwrap() * 512;

    // the boot partition: firmware, device trees of the Pi 4 and 5, kernel, initrd
    let fat = format!("{}@@{}", image.display(), sector(&parts[0], "start"));
    let listing = run(Command::new("mdir").args(["-b", "-i", &fat, "::/"]));
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.trim_start_matches("::/").trim_end_matches('/'))
        .collect();
    for want in [
        "start4.elf",
        "fixup4.dat",
        "bcm2711-rpi-4-b.dtb",
        "bcm2712-rpi-5-b.dtb",
        "config.txt",
        "cmdline.txt",
    ] {
        assert!(names.contains(&want), "no {want} in {names:?}");
    }
    let read = |name: &str| run(Command::new("mtype").args(["-i", &fat, &format!("::/{name}")]));
    let config = read("config.txt");
    let setting = |key: &str| {
        config
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in config.txt:\n{config}"))
            .trim()
            .to_string()
    };
    assert_eq!(setting("arm_64bit="), "1");
    let kernel = setting("kernel=");
    let initrd = setting("initramfs ")
        .trim_end_matches("followkernel")
        .trim()
        .to_string();
    assert!(
        names.contains(&kernel.as_str()),
        "config.txt's {kernel}: not on the card"
    );
    assert!(
        names.contains(&initrd.as_str()),
        "config.txt's {initrd}: not on the card"
    );
    let cmdline = read("cmdline.txt");
    let root = format!("root=PARTUUID={disk_id}-02");
    assert!(
        cmdline.split_whitespace().any(|w| w == root),
        "{root} not in {cmdline}"
    );

    // the root file system: the kernel's modules, the boot partition in fstab, seg-cam's
    // release and unit
    let rootfs = dir.path().join("root.ext4");
    run(Command::new("dd")
        .arg(format!("if={}", image.display()))
        .arg(format!("of={}", rootfs.display()))
        .args(["bs=512", "conv=sparse", "status=none"])
        .arg(format!("skip={}", sector(&parts[1], "start") / 512))
        .arg(format!("count={}", sector(&parts[1], "size") / 512)));
    let version = kernel.trim_start_matches("vmlinuz-");
    assert!(
        debugfs(&rootfs, &format!("ls /lib/modules/{version}")).contains("modules.dep"),
        "no /lib/modules/{version}"
    );
    let fstab = debugfs(&rootfs, "cat /etc/fstab");
    assert!(
        fstab.contains(&format!("PARTUUID={disk_id}-01 /boot/firmware vfat")),
        "{fstab}"
    );
    assert!(
        fstab.contains(&format!("PARTUUID={disk_id}-02 / ext4")),
        "{fstab}"
    );
    // current: root's verified copy of the release (the upload stays in /opt/segcam)
    let current = debugfs(&rootfs, "stat /var/lib/segcam-releases/current");
    let release = current
        .split("Fast link dest: \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("/var/lib/segcam-releases/current is no link: {current}"));
    let files = debugfs(&rootfs, &format!("ls /var/lib/segcam-releases/{release}"));
    let upload = debugfs(&rootfs, &format!("ls /opt/segcam/releases/{release}"));
    assert!(
        upload.contains("model.onnx"),
        "no upload of {release}: {upload}"
    );
    for file in ["seg-cam", "model.onnx", "seg-cam.toml", "verification.json"] {
        assert!(files.contains(file), "no {file} in {release}: {files}");
    }
    let wants = debugfs(&rootfs, "ls /etc/systemd/system/multi-user.target.wants");
    assert!(wants.contains("seg-cam.service"), "{wants}");
}
