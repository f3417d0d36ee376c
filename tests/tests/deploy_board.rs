//! `just deploy` end to end against an emulated aarch64 board (board/vivid-board
//! running board/ssh-board): an SSH server on a forwarded port, the vivid camera, and
//! `systemctl`/`journalctl` stand-ins over a small supervisor, since systemd does not
//! run there. The board's seg-cam is the static
//! aarch64 build (`just build-board`); the models are tiny generated ones.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use segcam::scene::scene_classes;
use segcam::testing::{board_binary, card, workspace, write_model};

mod boards;
use boards::{
    bytes_sent, golden_of_other_classes, keygen, tamper_with_model, text, workstation_seg_cam,
};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A booted board, powered off (qemu killed) when dropped.
struct Board {
    qemu: Child,
    dir: tempfile::TempDir,
    ssh_config: PathBuf,
    http_port: u16,
}

impl Board {
    fn boot() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().join("share");
        std::fs::create_dir(&share).unwrap();
        let fetched = Command::new(workspace().join("board/fetch-ssh"))
            .output()
            .unwrap();
        assert!(fetched.status.success(), "{}", text(&fetched));
        let cache = std::env::var_os("SEGCAM_CACHE").map_or_else(
            || PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/segcam"),
            PathBuf::from,
        );
        let copied = Command::new("cp")
            .arg("-a")
            .arg(cache.join("board/ssh-root"))
            .arg(share.join("ssh-root"))
            .status()
            .unwrap();
        assert!(copied.success());

        let key = dir.path().join("id_ed25519");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success());
        std::fs::copy(key.with_extension("pub"), share.join("authorized_keys")).unwrap();
        let (ssh_port, http_port) = (free_port(), free_port());
        let ssh_config = dir.path().join("ssh_config");
        std::fs::write(
            &ssh_config,
            format!(
                "Host board admin\n  HostName 127.0.0.1\n  Port {ssh_port}\n  \
                 IdentityFile {}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  \
                 UserKnownHostsFile /dev/null\n  LogLevel ERROR\n\
                 Host board\n  User deploy\nHost admin\n  User root\n",
                key.display()
            ),
        )
        .unwrap();

        let qemu = Command::new(workspace().join("board/vivid-board"))
            .arg(&share)
            .arg(workspace().join("board/ssh-board"))
            .env("BOARD_FORWARD", format!("{ssh_port}:22 {http_port}:8080"))
            .env("BOARD_TIMEOUT", "1200")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let board = Self {
            qemu,
            dir,
            ssh_config,
            http_port,
        };
        let start = Instant::now();
        while !board.ssh("true").status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "the board's SSH server did not come up: {}",
                board.console()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
        board
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("share/console.log")).unwrap_or_default()
    }

    /// A command on the board as root (the test's own checks).
    fn ssh(&self, command: &str) -> Output {
        self.ssh_as("admin", command)
    }

    /// A command as `host`'s account: `board` is the deploy account, `admin` root.
    fn ssh_as(&self, host: &str, command: &str) -> Output {
        Command::new("ssh")
            .arg("-F")
            .arg(&self.ssh_config)
            .args(["-o", "ConnectTimeout=5", host, command])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Run a board command that must succeed; its stdout, trimmed.
    fn run(&self, command: &str) -> String {
        let out = self.ssh(command);
        assert!(out.status.success(), "{command}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn current(&self) -> String {
        self.run("basename $(readlink /var/lib/segcam-releases/current)")
    }

    fn service_pid(&self) -> String {
        self.run("cat /run/seg-cam.pid")
    }

    /// `deploy/deploy ARGS` against this board, as the user would run it.
    fn deploy_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(workspace().join("deploy/deploy"));
        command
            .args(args)
            .env(
                "SEGCAM_SSH",
                format!("ssh -F {}", self.ssh_config.display()),
            )
            .env("SEGCAM_HEALTH_TIMEOUT", "60")
            // A short soak keeps the test short; step 12 uses the default.
            .env("SEGCAM_SOAK", "5")
            .env("SEGCAM_BOARD_BIN", board_binary())
            .env("SEGCAM_VERIFIER_BIN", board_binary())
            .env("SEGCAM_SEG_CAM", workstation_seg_cam())
            // No release key of this machine's account: signing is step 14's.
            .env("XDG_CONFIG_HOME", "/nonexistent/segcam-test")
            .env_remove("SEGCAM_RELEASE_KEY")
            .stdin(Stdio::null());
        command
    }

    fn deploy(&self, args: &[&str]) -> Output {
        self.deploy_command(args).output().unwrap()
    }

    /// `deploy board=board model=MODEL config=CONFIG`, not yet run.
    fn release_command(&self, model: &str, config: &str) -> Command {
        let (model, config) = (format!("model={model}"), format!("config={config}"));
        self.deploy_command(&["deploy", "board=board", &model, &config])
    }

    fn deploy_release(&self, model: &str, config: &str) -> Output {
        self.release_command(model, config).output().unwrap()
    }

    /// GET a path of the board's seg-cam through the forwarded port.
    fn get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The board refuses Host names it does not know (DNS rebinding): an address.
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let code = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, body.to_string())
    }

    fn stats(&self) -> serde_json::Value {
        let (code, body) = self.get("/stats.json");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        kill_group(&self.qemu);
        let _ = self.qemu.wait();
    }
}

/// SIGKILL to a child started as the leader of its own process group, and to
/// everything it started (ssh, tar; the board script, its timeout and qemu).
fn kill_group(child: &Child) {
    let group = i32::try_from(child.id()).expect("a pid");
    assert!(group > 1, "not a process group: {group}");
    // SAFETY: a plain system call on a group this test created.
    unsafe { libc::kill(-group, libc::SIGKILL) };
}

/// A release's settings: vivid at 320×180, the page on the board's port 8080.
fn config(dir: &Path, name: &str, rate: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "input = \"v4l2:///dev/video0\"\nwidth = 320\nheight = 180\nrate = {rate}\n\
             http = \"0.0.0.0:8080\"\nthreads = 1\n"
        ),
    )
    .unwrap();
    path
}

fn release_id(output: &Output) -> String {
    let all = text(output);
    all.split("deploy: release ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no release id in: {all}"))
        .to_string()
}

#[test]
fn deploy_rolls_out_verifies_and_rolls_back_on_an_emulated_board() {
    let files = tempfile::tempdir().unwrap();
    let model = write_model(
        files.path(),
        "tiny.onnx",
        &card(scene_classes(), 24, 32, false),
    );
    let broken = files.path().join("broken.onnx");
    std::fs::write(&broken, b"this is not an ONNX model").unwrap();
    let (first, second, third) = (
        config(files.path(), "a.toml", 30),
        config(files.path(), "b.toml", 25),
        config(files.path(), "c.toml", 15),
    );
    let (model, first, second, third, broken) = (
        model.to_str().unwrap(),
        first.to_str().unwrap(),
        second.to_str().unwrap(),
        third.to_str().unwrap(),
        broken.to_str().unwrap(),
    );
    let board = Board::boot();
    let out = board.deploy(&["status", "board=board"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nothing deployed"), "{}", text(&out));

    eprintln!("deploy test: step 0");
    // 0. An unprovisioned board is refused a deploy; `provision` (as root) installs
    // the helper, the verifier, the unit, the (here: no) keys, the board kind, root's
    // release storage and the sudoers rules; the deploy account owns only the uploads.
    let out = board.deploy_release(model, first);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("just provision"), "{}", text(&out));
    let out = board.deploy(&["provision", "board=admin", "user=deploy"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("this board takes unsigned releases"),
        "{}",
        text(&out)
    );
    assert_eq!(
        board.run("stat -c '%U %a' /usr/local/sbin/segcam-root /usr/local/lib/segcam/seg-cam /usr/local/lib/segcam/seg-cam.service /etc/sudoers.d/segcam /etc/segcam/keys /etc/segcam/board /var/lib/segcam-releases /opt/segcam"),
        "root 755\nroot 755\nroot 644\nroot 440\nroot 755\nroot 644\nroot 755\ndeploy 755"
    );
    assert_eq!(board.run("cat /etc/segcam/board"), "aarch64-linux");
    assert_eq!(
        board.run("cat /etc/sudoers.d/segcam"),
        "deploy ALL=(root) NOPASSWD: /usr/local/sbin/segcam-root accept *\n\
         deploy ALL=(root) NOPASSWD: /usr/local/sbin/segcam-root switch *\n\
         deploy ALL=(root) NOPASSWD: /usr/local/sbin/segcam-root prune"
    );

    eprintln!("deploy test: step 1");
    // 1. A first release: uploaded, verified, started, healthy, capturing.
    let out = board.deploy_release(model, first);
    assert!(out.status.success(), "{}\n{}", text(&out), board.console());
    let a = release_id(&out);
    assert_eq!(board.current(), a);
    let unit = std::fs::read_to_string(workspace().join("deploy/seg-cam.service")).unwrap();
    assert_eq!(
        board.run("cat /etc/systemd/system/seg-cam.service"),
        unit.trim(),
        "the unit is installed"
    );
    // What runs is root's verified copy; the board says how it was verified.
    assert_eq!(
        board.run(&format!(
            "cat /var/lib/segcam-releases/{a}/verification.json"
        )),
        r#"{"verification":"unsigned"}"#
    );
    // The deploy account reaches root through the helper's verbs and nothing else:
    // sudo refuses other commands and the helper's other verb; the helper refuses a
    // release it has not verified; root's files, the verified copy included, stay root's.
    for command in [
        "sudo -n /usr/local/sbin/segcam-root install-unit",
        "sudo -n /bin/sh -c id",
        "sudo -n /usr/local/sbin/segcam-root switch 0123456789ab",
        "sudo -n /usr/local/sbin/segcam-root accept ../../etc",
        "touch /etc/systemd/system/seg-cam.service",
        "touch /usr/local/sbin/segcam-root",
        "touch /usr/local/lib/segcam/seg-cam /etc/segcam/keys/mine.pub",
        "touch /var/lib/segcam-releases/current/model.onnx",
        "ln -sfn /tmp /var/lib/segcam-releases/current",
    ] {
        let out = board.ssh_as("board", command);
        assert!(!out.status.success(), "{command}: {}", text(&out));
    }
    assert_eq!(board.current(), a);
    // A unit written into an upload is never installed.
    let out = board.ssh_as(
        "board",
        &format!("printf '[Service]\\nUser=root\\n' > /opt/segcam/releases/{a}/seg-cam.service"),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(board.get("/healthz").0, 200);
    let stats = board.stats();
    assert_eq!(
        (stats["width"].as_u64(), stats["height"].as_u64()),
        (Some(320), Some(180))
    );
    assert_eq!(stats["no_signal"], false, "{stats}");
    let frames = stats["frames"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        board.stats()["frames"].as_u64().unwrap() > frames,
        "vivid's frames keep coming"
    );

    eprintln!("deploy test: step 2");
    // 2. The same release again changes nothing: no upload, no restart.
    let pid = board.service_pid();
    let out = board.deploy_release(model, first);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(release_id(&out), a, "same files, same release");
    let said = text(&out);
    assert!(
        said.contains("not uploading") && said.contains("nothing changed"),
        "{said}"
    );
    assert_eq!(board.service_pid(), pid, "seg-cam was not restarted");

    eprintln!("deploy test: step 3");
    // 3. A deploy killed mid-upload leaves the running release alone. (The board
    // forgets the files it holds, so that the whole binary is sent again: an upload
    // long enough to be interrupted.)
    board.run("rm -rf /opt/segcam/objects");
    let mut interrupted = board
        .release_command(model, second)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !board
        .run("ls -a /opt/segcam/releases")
        .contains(".incoming-")
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the upload never started"
        );
        assert!(
            interrupted.try_wait().unwrap().is_none(),
            "the deploy ended before the upload was seen"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    kill_group(&interrupted);
    let _ = interrupted.wait();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(board.current(), a, "the interrupted release is not current");
    assert_eq!(board.service_pid(), pid, "seg-cam was not touched");
    assert_eq!(board.get("/healthz").0, 200);

    eprintln!("deploy test: step 4");
    // 4. The next deploy of it completes, cleaning up the partial upload.
    let out = board.deploy_release(model, second);
    assert!(out.status.success(), "{}", text(&out));
    let b = release_id(&out);
    assert_eq!(board.current(), b);
    let listing = board.run("ls -a /opt/segcam/releases");
    assert!(!listing.contains(".incoming-"), "{listing}");
    assert_eq!(board.get("/healthz").0, 200);

    eprintln!("deploy test: step 5");
    // 5. Rollback goes back to the release before.
    let out = board.deploy(&["rollback", "board=board"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(board.current(), a);
    assert_eq!(board.get("/healthz").0, 200);

    eprintln!("deploy test: step 6");
    // 6. A release whose model does not load is rolled back automatically (without a
    // golden set: the workstation cannot make one of a model that does not load).
    let out = board
        .release_command(broken, first)
        .arg("golden=off")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a broken release must fail: {}",
        text(&out)
    );
    let said = text(&out);
    assert!(said.contains("rolled back"), "{said}");
    assert!(
        said.contains("model.onnx"),
        "the board's log names the model: {said}"
    );
    assert_eq!(board.current(), a, "{said}");
    assert_eq!(board.get("/healthz").0, 200);

    eprintln!("deploy test: step 7");
    // 7. status and logs.
    let out = board.deploy(&["status", "board=board"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains(&format!("release:  {a}")), "{said}");
    // Its golden set (the test scene through the workstation's engine) passed on the
    // board before the switch.
    assert!(said.contains("golden:   passed: 4 frames"), "{said}");
    assert!(
        said.contains("running (pid") && said.contains("frames/s"),
        "{said}"
    );
    let out = board.deploy(&["logs", "board=board", "lines=50"]);
    assert!(out.status.success());
    assert!(
        text(&out).contains("serving http://0.0.0.0:8080/"),
        "{}",
        text(&out)
    );

    eprintln!("deploy test: step 8");
    // 8. Only the newest releases are kept (and always current and previous).
    let out = board
        .release_command(model, third)
        .env("SEGCAM_KEEP", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Content-addressed: the binary, the model and the board script are on the board
    // already; only the new config, the release notes and the manifest travel.
    let said = text(&out);
    let sent = bytes_sent(&said);
    let binary = std::fs::metadata(board_binary()).unwrap().len();
    assert!(
        sent < binary / 10,
        "sent {sent} bytes, the binary is {binary}: {said}"
    );
    assert!(said.contains("already on the board"), "{said}");
    let d = release_id(&out);
    // Each kept release's binary is one file on the board, linked by content.
    let links = board.run(&format!("stat -c %h /opt/segcam/releases/{d}/seg-cam"));
    assert!(links.parse::<u32>().unwrap() >= 2, "{links}");
    let mut kept: Vec<String> = board
        .run("ls /opt/segcam/releases")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    kept.sort();
    let mut want = vec![a.clone(), d.clone()];
    want.sort();
    assert_eq!(kept, want, "kept: the new current and its previous");

    eprintln!("deploy test: step 9");
    // 9. Two deploys at once: the board's lock takes them one after the other; both
    // succeed, one of them is current, nothing half-done is left.
    let (e, f) = (
        config(files.path(), "e.toml", 20),
        config(files.path(), "f.toml", 12),
    );
    let mut both: Vec<Child> = [&e, &f]
        .iter()
        .map(|c| {
            board
                .release_command(model, c.to_str().unwrap())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = both
        .drain(..)
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for out in &outs {
        assert!(out.status.success(), "{}", text(out));
    }
    let ids: Vec<String> = outs.iter().map(release_id).collect();
    assert!(ids.contains(&board.current()), "{ids:?}");
    let listing = board.run("ls -a /opt/segcam");
    assert!(!listing.contains(".lock"), "{listing}");
    let listing = board.run("ls -a /opt/segcam/releases");
    assert!(!listing.contains(".incoming-"), "{listing}");
    assert_eq!(board.get("/healthz").0, 200);

    eprintln!("deploy test: step 10");
    // 10. A workstation with umask 077: the service still reads its release.
    let g = config(files.path(), "g.toml", 18);
    let mut command = board.release_command(model, g.to_str().unwrap());
    // SAFETY: umask is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let g_id = release_id(&out);
    assert_eq!(board.current(), g_id);
    assert_eq!(
        board.run(&format!(
            "stat -c %a /opt/segcam/releases/{g_id}/model.onnx"
        )),
        "644"
    );
    assert_eq!(board.get("/healthz").0, 200);

    eprintln!("deploy test: step 11");
    // 11. A deploy killed once its (broken) release is switched in: the activation
    // goes on on the board without it, fails the health check and rolls back.
    let mut killed = board
        .release_command(broken, first)
        .arg("golden=off")
        .env("SEGCAM_HEALTH_TIMEOUT", "15")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while board.current() == g_id {
        assert!(start.elapsed() < Duration::from_secs(120), "never switched");
        assert!(
            killed.try_wait().unwrap().is_none(),
            "ended before the switch"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    kill_group(&killed);
    let _ = killed.wait();
    let start = Instant::now();
    loop {
        let last = board.run("cat /opt/segcam/last-activation 2>/dev/null || true");
        if last.contains("rolled-back-to") {
            assert!(last.contains(&format!("rolled-back-to-{g_id}")), "{last}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "no rollback: {last}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(board.current(), g_id);
    assert_eq!(board.get("/healthz").0, 200);
    let out = board.deploy(&["status", "board=board"]);
    assert!(text(&out).contains("last activation:"), "{}", text(&out));

    eprintln!("deploy test: step 12");
    // 12. A release that passes its first health check and then stops (after 60
    // frames here) is caught by the soak period and rolled back.
    let stops = files.path().join("stops.toml");
    std::fs::write(
        &stops,
        std::fs::read_to_string(&g).unwrap() + "frames = 60\n",
    )
    .unwrap();
    let out = board
        .release_command(model, stops.to_str().unwrap())
        .env("SEGCAM_SOAK", "20")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("rolled back"), "{}", text(&out));
    assert_eq!(board.current(), g_id);
    assert_eq!(board.get("/healthz").0, 200);

    eprintln!("deploy test: step 13");
    // 13. A release that fails the fleet's golden set (made from a model of other
    // classes here) is refused on the board before the switch: nothing restarts.
    let golden = golden_of_other_classes(files.path(), first);
    let pid = board.service_pid();
    let out = board
        .release_command(model, first)
        .arg(format!("golden={}", golden.display()))
        .output()
        .unwrap();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("failed its golden set") && said.contains("below 99.00%"),
        "{said}"
    );
    assert!(
        said.contains("refused by the board before the switch"),
        "{said}"
    );
    assert_eq!(board.current(), g_id);
    assert_eq!(board.service_pid(), pid, "seg-cam was not restarted");
    assert!(board
        .run("cat /opt/segcam/last-activation")
        .contains("refused-golden-set"));

    signed_releases(&board, model, first, files.path());

    // After all of that, root ran only the helper's verbs for the deploy account, and
    // the unit is still provision's. (Root's own sudo calls, provision's `sudo -l`,
    // are root's business.)
    let log = board.run("cat /var/log/sudo.log");
    let allowed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" allowed ") && !l.contains(" allowed root: "))
        .collect();
    assert!(allowed.len() >= 8, "{log}");
    let verb = |line: &&str| {
        let Some((_, call)) = line.split_once("allowed deploy: /usr/local/sbin/segcam-root ")
        else {
            return false;
        };
        match call.split_once(' ') {
            // (the helper itself refuses an id that is not hexadecimal: step 1)
            Some(("accept" | "switch", _)) => true,
            None => call == "prune",
            _ => false,
        }
    };
    assert!(allowed.iter().all(verb), "{log}");
    assert_eq!(
        board.run("cat /etc/systemd/system/seg-cam.service"),
        unit.trim()
    );
}

#[test]
fn bad_input_is_refused_before_anything_reaches_a_board() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(workspace().join("deploy/deploy"))
        .args(["deploy", "board=nowhere", "model=/nonexistent/model.onnx"])
        .env("SEGCAM_BOARD_BIN", board_binary())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("/nonexistent/model.onnx"),
        "{}",
        text(&out)
    );

    let off = dir.path().join("off.toml");
    std::fs::write(&off, "http = \"off\"\n").unwrap();
    let out = Command::new(workspace().join("deploy/deploy"))
        .args([
            "deploy",
            "board=nowhere",
            &format!("config={}", off.display()),
        ])
        .env("SEGCAM_BOARD_BIN", board_binary())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("off.toml") && said.contains("healthz"),
        "{said}"
    );

    // Nothing reaches ssh or the board's shell unchecked.
    for (args, env, complaint) in [
        (
            vec!["status", "board=-oProxyCommand=touch /tmp/owned"],
            None,
            "board=",
        ),
        (vec!["status", "board=a b"], None, "board="),
        (
            vec!["logs", "board=nowhere", "lines=5;reboot"],
            None,
            "lines=",
        ),
        (
            vec!["status", "board=nowhere"],
            Some(("SEGCAM_ROOT", "/opt/x;reboot")),
            "SEGCAM_ROOT",
        ),
        (
            vec!["status", "board=nowhere"],
            Some(("SEGCAM_SOAK", "5 x")),
            "SEGCAM_SOAK",
        ),
    ] {
        let mut command = Command::new(workspace().join("deploy/deploy"));
        command.args(&args).env("SEGCAM_SSH", "false");
        if let Some((k, v)) = env {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let said = text(&out);
        assert!(said.contains(complaint), "{args:?}: {said}");
    }
}

/// A config that names onnxruntime gets the glibc build with PyPI's aarch64 library
/// beside it, both in the manifest; any other gets the static tract build alone.
#[test]
fn the_release_carries_the_engine_the_config_names() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "m.onnx", &card(scene_classes(), 24, 32, false));
    let bundle = |name: &str, config_text: &str| -> (PathBuf, String) {
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, config_text).unwrap();
        let out_dir = dir.path().join(name);
        let out = Command::new(workspace().join("deploy/deploy"))
            .args([
                "bundle",
                out_dir.to_str().unwrap(),
                &format!("model={}", model.display()),
                &format!("config={}", config.display()),
            ])
            .env("SEGCAM_SEG_CAM", workstation_seg_cam())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let check = Command::new("sha256sum")
            .args(["-c", "MANIFEST.sha256"])
            .current_dir(&out_dir)
            .output()
            .unwrap();
        assert!(check.status.success(), "{}", text(&check));
        let manifest = std::fs::read_to_string(out_dir.join("MANIFEST.sha256")).unwrap();
        (out_dir, manifest)
    };
    let elf_interpreter = |path: &Path| {
        let out = Command::new("file").arg(path).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let (ort, manifest) = bundle("ort", "engine = \"onnxruntime\"\nhttp = \"0.0.0.0:8080\"\n");
    assert!(manifest.contains("libonnxruntime.so"), "{manifest}");
    let lib = elf_interpreter(&ort.join("libonnxruntime.so"));
    assert!(
        lib.contains("aarch64") && lib.contains("shared object"),
        "{lib}"
    );
    let bin = elf_interpreter(&ort.join("seg-cam"));
    assert!(
        bin.contains("aarch64") && bin.contains("dynamically linked"),
        "{bin}"
    );
    assert!(std::fs::read_to_string(ort.join("release.txt"))
        .unwrap()
        .contains("engine: onnxruntime"));

    let (tract, manifest) = bundle("tract", "http = \"0.0.0.0:8080\"\n");
    assert!(!manifest.contains("libonnxruntime"), "{manifest}");
    assert!(!tract.join("libonnxruntime.so").exists());
    let bin = elf_interpreter(&tract.join("seg-cam"));
    assert!(
        bin.contains("aarch64") && bin.contains("statically linked"),
        "{bin}"
    );

    // Unsigned without a key (one is looked for at ~/.config/segcam/release.key):
    // said, and no manifest.
    assert!(!tract.join("release.json").exists());
    // Signed with one: release.json lists every file, and the workstation's seg-cam
    // verifies it as a board would.
    let seg_cam = workstation_seg_cam();
    let (key, _) = keygen(dir.path(), "keys/release.key");
    let signed = dir.path().join("signed");
    let config = dir.path().join("tract.toml");
    let out = Command::new(workspace().join("deploy/deploy"))
        .args([
            "bundle",
            signed.to_str().unwrap(),
            &format!("model={}", model.display()),
            &format!("config={}", config.display()),
            &format!("key={}", key.display()),
            "boards=pi5,orin",
        ])
        .env("SEGCAM_SEG_CAM", &seg_cam)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(signed.join("release.json")).unwrap()).unwrap();
    let names: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let mut expected = vec!["MANIFEST.sha256".to_string()];
    for i in 0..4 {
        expected.extend([
            format!("golden-{i:02}.classes.png"),
            format!("golden-{i:02}.png"),
        ]);
    }
    expected.extend(
        [
            "golden.json",
            "model.onnx",
            "release.txt",
            "seg-cam",
            "seg-cam.toml",
            "segcam-board",
        ]
        .map(String::from),
    );
    assert_eq!(names, expected);
    // The golden set is in the checksums the board checks after upload too.
    let sums = std::fs::read_to_string(signed.join("MANIFEST.sha256")).unwrap();
    assert!(
        sums.contains("golden.json") && sums.contains("golden-03.classes.png"),
        "{sums}"
    );
    assert_eq!(manifest["boards"], serde_json::json!(["pi5", "orin"]));
    let keys = dir.path().join("keys");
    let verified = Command::new(&seg_cam)
        .args(["release", "verify", signed.to_str().unwrap(), "--keys"])
        .arg(&keys)
        .args(["--board", "orin"])
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", text(&verified));

    // An existing folder is never written into.
    let out = Command::new(workspace().join("deploy/deploy"))
        .args(["bundle", tract.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains("already exists"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    // verify insists that ExecStart's program exists: point it at a stand-in.
    let dir = tempfile::tempdir().unwrap();
    let current = dir.path().join("current");
    std::fs::create_dir(&current).unwrap();
    std::fs::copy("/bin/true", current.join("seg-cam")).unwrap();
    let unit = std::fs::read_to_string(workspace().join("deploy/seg-cam.service")).unwrap();
    let check = |text: &str| {
        let path = dir.path().join("seg-cam.service");
        std::fs::write(
            &path,
            text.replace(
                "/var/lib/segcam-releases/current",
                current.to_str().unwrap(),
            ),
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian's systemd package)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, complaints) = check(&unit);
    assert!(ok && complaints.is_empty(), "{complaints}");
    assert!(unit.contains("Restart=on-failure"));
    // systemd hears from seg-cam (READY=1, the watchdog) and bounds and sandboxes it.
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "MemoryMax=",
        "ProtectSystem=strict",
        "DevicePolicy=closed",
        "StateDirectory=segcam",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "{line} missing");
    }
    // The check itself notices a mistake.
    let (_, complaints) = check(&unit.replace("Restart=", "Restrt="));
    assert!(complaints.contains("Restrt"), "{complaints}");
}

/// Step 14, signed releases: with a key provisioned (again: keys rotate that way) the board
/// runs only what that key signed, for its kind, with a newer counter, every file as
/// signed: root checks its own copy with provisioning's seg-cam before anything
/// switches, and says which rule failed. A rollback goes only to a release a trusted key
/// signed (its older counter is no bar). The deploy's own upload path and a hand-made upload (what anyone with the
/// deploy account could do) are refused alike.
fn signed_releases(board: &Board, model: &str, config: &str, dir: &Path) {
    eprintln!("deploy test: step 14");
    let (key, key_id) = keygen(dir, "release.key");
    let (stranger, _) = keygen(dir, "stranger.key");
    let out = board.deploy(&[
        "provision",
        "board=admin",
        "user=deploy",
        &format!("keys={}", key.with_extension("pub").display()),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("1 trusted release key"),
        "{}",
        text(&out)
    );
    // A config of its own for each release (same model and binary: new ids).
    let variant = |tag: &str| {
        let path = dir.join(format!("{tag}.toml"));
        let base = std::fs::read_to_string(config).unwrap();
        std::fs::write(&path, format!("{base}\n# {tag}\n")).unwrap();
        path.display().to_string()
    };
    let (running, pid) = (board.current(), board.service_pid());
    let refused = |out: &Output, reason: &str| {
        let said = text(out);
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(said.contains(reason), "{said}");
        assert!(said.contains("failed the board's verification"), "{said}");
        assert_eq!(board.current(), running, "{said}");
        assert_eq!(
            board.service_pid(),
            pid,
            "seg-cam was not restarted: {said}"
        );
    };

    let out = board.deploy_release(model, &variant("unsigned"));
    refused(&out, "unsigned: no release.json.minisig");
    let out = board
        .release_command(model, &variant("stranger"))
        .arg(format!("key={}", stranger.display()))
        .output()
        .unwrap();
    refused(&out, "which this board does not trust");
    let out = board
        .release_command(model, &variant("other-board"))
        .arg(format!("key={}", key.display()))
        .arg("boards=riscv64-linux")
        .output()
        .unwrap();
    refused(&out, "not for this board (aarch64-linux)");
    assert!(board
        .run("cat /opt/segcam/last-activation")
        .contains("refused-verification"));

    let out = board
        .release_command(model, &variant("signed"))
        .arg(format!("key={}", key.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let signed = release_id(&out);
    assert_eq!(board.current(), signed);
    // Root keeps one copy of a binary its verified releases share (linked by content).
    let links = board.run(&format!(
        "stat -c %h /var/lib/segcam-releases/{signed}/seg-cam"
    ));
    assert!(links.parse::<u32>().unwrap() >= 2, "{links}");
    let out = board.deploy(&["status", "board=board"]);
    assert!(
        text(&out).contains(&format!("verified: signed by key {key_id} (counter ")),
        "{}",
        text(&out)
    );
    let (code, metrics) = board.get("/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains(&format!(
            "segcam_release_info{{release=\"{signed}\",verification=\"signed\",key_id=\"{key_id}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("segcam_release_counter "), "{metrics}");

    // Hand-made uploads by the deploy account: a signed release whose model changed
    // after signing (its MANIFEST.sha256 made to match), and one signed again with an
    // older counter than the board accepted.
    let bundle = dir.join("bundle");
    let out = board
        .deploy_command(&[
            "bundle",
            bundle.to_str().unwrap(),
            &format!("model={model}"),
            &format!("config={}", variant("bundle")),
            &format!("key={}", key.display()),
            "golden=off",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let (pid, running) = (board.service_pid(), board.current());
    let hand_made = |id: &str, folder: &Path| {
        let tar = Command::new("tar")
            .arg("-C")
            .arg(folder)
            .args(["-cf", "-", "."])
            .output()
            .unwrap();
        assert!(tar.status.success());
        let archive = dir.join(format!("{id}.tar"));
        std::fs::write(&archive, tar.stdout).unwrap();
        let out = Command::new("ssh")
            .arg("-F")
            .arg(&board.ssh_config)
            .arg("board")
            .arg(format!(
                "mkdir /opt/segcam/releases/{id} && tar -xf - -C /opt/segcam/releases/{id} && \
                 SEGCAM_SOAK=1 sh /var/lib/segcam-releases/current/segcam-board activate {id}"
            ))
            .stdin(std::fs::File::open(&archive).unwrap())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(5), "{}", text(&out));
        assert_eq!(board.current(), running);
        assert_eq!(board.service_pid(), pid);
        assert!(!board.run("ls /var/lib/segcam-releases/").contains(id));
        text(&out)
    };
    let tampered = dir.join("tampered");
    assert!(Command::new("cp")
        .arg("-r")
        .arg(&bundle)
        .arg(&tampered)
        .status()
        .unwrap()
        .success());
    tamper_with_model(&tampered);
    let said = hand_made("00000000000a", &tampered);
    // the first file found changed: MANIFEST.sha256 (listed and signed too)
    assert!(said.contains(": changed after signing"), "{said}");

    let out = Command::new(workstation_seg_cam())
        .args(["release", "sign"])
        .arg(&bundle)
        .arg("--key")
        .arg(&key)
        .args(["--board", "aarch64-linux", "--counter", "1000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let said = hand_made("00000000000b", &bundle);
    assert!(said.contains("counter 1000 is not above"), "{said}");

    // Back to the unsigned release accepted before the key was provisioned: refused,
    // as the board now runs only what a key it trusts signed; the signed one runs on.
    let out = board.deploy(&["rollback", "board=board"]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("no longer verifies"), "{said}");
    assert_eq!(board.current(), signed);
    // Back to a release signed before: its older counter is no bar.
    let out = board
        .release_command(model, &variant("signed-again"))
        .arg(format!("key={}", key.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(board.current(), signed);
    let out = board.deploy(&["rollback", "board=board"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(board.current(), signed);
}
