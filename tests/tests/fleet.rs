//! A fleet on one machine: `just fleet-up 3` (three emulated aarch64 boards with the
//! vivid camera) and staged roll-outs through Ansible (`scripts/fleet deploy`, the
//! playbooks in fleet/): a signed release goes canary → rest; a release changed after
//! signing, one signed with an unknown key and one that fails its golden set are each
//! refused on the canary with the other boards untouched; a canary without its camera
//! stops the roll-out, and so does a later board, the board already updated then
//! rolled back; an unchanged binary is not uploaded again; `fleet-status` prints one
//! line per board.
//! The boards run a tiny model so that the software-emulated CPUs keep up.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use segcam::scene::scene_classes;
use segcam::testing::{board_binary, card, workspace, write_model};

mod boards;
use boards::{
    bytes_sent, golden_of_other_classes, keygen, tamper_with_model, text, workstation_seg_cam,
};

struct Fleet {
    dir: tempfile::TempDir,
}

impl Fleet {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn inventory(&self) -> PathBuf {
        self.path().join("fleet/inventory.ini")
    }

    /// `scripts/fleet ARGS` with this fleet's folder and the test's builds.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(workspace().join("scripts/fleet"));
        command
            .args(args)
            .env("SEGCAM_FLEET", self.path().join("fleet"))
            .env("SEGCAM_BOARD_BIN", board_binary())
            .env("SEGCAM_VERIFIER_BIN", board_binary())
            .env("SEGCAM_SEG_CAM", workstation_seg_cam())
            .env("SEGCAM_HEALTH_TIMEOUT", "15")
            .env("SEGCAM_SOAK", "2")
            // No release key of this machine's account: the test's own.
            .env("XDG_CONFIG_HOME", self.path().join("config"))
            .env_remove("SEGCAM_RELEASE_KEY")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn deploy(&self, settings: &[String]) -> Output {
        let inventory = format!("inventory={}", self.inventory().display());
        let mut args = vec!["deploy", inventory.as_str()];
        args.extend(settings.iter().map(String::as_str));
        self.run(&args)
    }

    /// A command on board N as root.
    fn on(&self, n: u32, command: &str) -> String {
        let out = Command::new("ssh")
            .arg("-F")
            .arg(self.path().join("fleet/ssh_config"))
            .args([
                "-o",
                "ConnectTimeout=5",
                &format!("board{n}-admin"),
                command,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{command}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn current(&self, n: u32) -> String {
        self.on(n, "basename $(readlink /var/lib/segcam-releases/current)")
    }

    fn currents(&self) -> Vec<String> {
        (1..=3).map(|n| self.current(n)).collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}

/// A release's settings: vivid at 320×180, the page on the board's port 8080; `tag`
/// makes a new release of the same model and binary.
fn config(dir: &Path, tag: &str) -> String {
    let path = dir.join(format!("{tag}.toml"));
    std::fs::write(
        &path,
        format!(
            "# {tag}\ninput = \"v4l2:///dev/video0\"\nwidth = 320\nheight = 180\nrate = 15\n\
             http = \"0.0.0.0:8080\"\nthreads = 1\n"
        ),
    )
    .unwrap();
    format!("config={}", path.display())
}

/// The release id `scripts/fleet deploy` announced.
fn release_of(out: &Output) -> String {
    let said = text(out);
    said.split("fleet: release ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no release id in: {said}"))
        .to_string()
}

/// The boards Ansible deployed to, in the order it reported them.
fn deployed_order(said: &str) -> Vec<String> {
    let mut order = Vec::new();
    for line in said.lines() {
        for state in ["changed: [", "ok: [", "fatal: ["] {
            if let Some(rest) = line.strip_prefix(state) {
                let host = rest.split([']', ' ']).next().unwrap().to_string();
                if !order.contains(&host) {
                    order.push(host);
                }
            }
        }
    }
    order
}

#[test]
fn a_fleet_rolls_out_in_stages_and_stops_at_the_first_refusal() {
    let fleet = Fleet {
        dir: tempfile::tempdir().unwrap(),
    };
    let files = fleet.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let model = write_model(&files, "tiny.onnx", &card(scene_classes(), 24, 32, false));
    let model = format!("model={}", model.display());
    let (key, key_id) = keygen(&files, "release.key");
    let (stranger, _) = keygen(&files, "stranger.key");
    let signed = format!("key={}", key.display());

    // Three boards, provisioned to trust the key.
    let out = fleet.run(&[
        "up",
        "3",
        &format!("keys={}", key.with_extension("pub").display()),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let inventory = std::fs::read_to_string(fleet.inventory()).unwrap();
    assert_eq!(inventory.matches("ansible_port=").count(), 3, "{inventory}");

    // 1. A signed release: canary first, then the rest; every board runs it.
    let out = fleet.deploy(&[model.clone(), config(&files, "one"), signed.clone()]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let one = release_of(&out);
    assert_eq!(fleet.currents(), vec![one.clone(); 3], "{said}");
    assert_eq!(
        deployed_order(&said),
        ["board1", "board2", "board3"],
        "{said}"
    );
    assert_eq!(
        said.matches("PLAY [Roll out").count(),
        3,
        "three stages: {said}"
    );

    // 2. Refused on the canary, the other boards untouched: a model changed after
    // signing (its MANIFEST.sha256 made to match), a key the boards do not trust, a
    // golden set the model fails (a reference made from a model of other classes).
    let bundle = files.join("tampered");
    let made = Command::new(workspace().join("deploy/deploy"))
        .args([
            "bundle",
            bundle.to_str().unwrap(),
            &model,
            &config(&files, "two"),
            &signed,
        ])
        .env("SEGCAM_BOARD_BIN", board_binary())
        .env("SEGCAM_SEG_CAM", workstation_seg_cam())
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    tamper_with_model(&bundle);
    let reference = config(&files, "reference");
    let golden = golden_of_other_classes(&files, reference.trim_start_matches("config="));

    for (settings, reason) in [
        (
            vec![format!("release={}", bundle.display())],
            "MANIFEST.sha256: changed after signing",
        ),
        (
            vec![
                model.clone(),
                config(&files, "three"),
                format!("key={}", stranger.display()),
            ],
            "which this board does not trust",
        ),
        (
            vec![
                model.clone(),
                config(&files, "four"),
                signed.clone(),
                format!("golden={}", golden.display()),
            ],
            "failed its golden set",
        ),
    ] {
        let out = fleet.deploy(&settings);
        let said = text(&out);
        assert!(!out.status.success(), "{said}");
        assert!(said.contains(reason), "{said}");
        assert_eq!(deployed_order(&said), ["board1"], "only the canary: {said}");
        assert!(said.contains("updated before it stopped: none"), "{said}");
        assert_eq!(fleet.currents(), vec![one.clone(); 3], "{said}");
    }

    // 3. The canary without its camera: it fails its health check and rolls itself
    // back; the roll-out stops there, nothing else to roll back.
    fleet.on(1, "mv /dev/video0 /dev/video0.gone");
    let out = fleet.deploy(&[model.clone(), config(&files, "camera"), signed.clone()]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("failed its health check"), "{said}");
    assert_eq!(deployed_order(&said), ["board1"], "only the canary: {said}");
    assert!(said.contains("updated before it stopped: none"), "{said}");
    assert_eq!(fleet.currents(), vec![one.clone(); 3], "{said}");
    fleet.on(1, "mv /dev/video0.gone /dev/video0");

    // 4. Board 2 loses its camera: the canary takes the release (sending only what
    // changed: not the binary), board 2 fails its health check and rolls itself back,
    // the roll-out stops before board 3, and the canary is rolled back.
    fleet.on(2, "mv /dev/video0 /dev/video0.gone");
    let out = fleet.deploy(&[model.clone(), config(&files, "five"), signed.clone()]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    let sent = bytes_sent(&said);
    let binary = std::fs::metadata(board_binary()).unwrap().len();
    assert!(
        sent < binary / 10,
        "sent {sent} bytes, the binary is {binary}: {said}"
    );
    assert_eq!(deployed_order(&said), ["board1", "board2"], "{said}");
    assert!(said.contains("updated before it stopped: board1"), "{said}");
    assert!(said.contains("rolling back board1"), "{said}");
    assert_eq!(fleet.currents(), vec![one.clone(); 3], "{said}");
    fleet.on(2, "mv /dev/video0.gone /dev/video0");

    // 5. One line per board: release, verification and key, golden set, frames/s,
    // uptime, restarts.
    let inventory = format!("inventory={}", fleet.inventory().display());
    let out = fleet.run(&["status", &inventory]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let lines: Vec<&str> = said.lines().filter(|l| l.starts_with("board")).collect();
    assert_eq!(lines.len(), 3, "{said}");
    for (n, line) in lines.iter().enumerate() {
        assert!(
            line.starts_with(&format!("board{}: release {one} | ", n + 1)),
            "{line}"
        );
        assert!(
            line.contains(&format!("signed by key {key_id} (counter ")),
            "{line}"
        );
        assert!(line.contains("golden passed: 4 frames"), "{line}");
        assert!(
            line.contains(" frames/s | up ") && line.contains("| restarts "),
            "{line}"
        );
    }
}
