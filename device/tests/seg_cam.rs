//! The `seg-cam` binary end to end, with a tiny 1×1-convolution model written to a
//! temporary folder (the real demo model is not needed).

mod chromium;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use image::{GrayImage, Rgb, RgbImage};
use segcam::scene::scene_classes;
use segcam::testing::{card, write_model};

const SEG_CAM: &str = env!("CARGO_BIN_EXE_seg-cam");
const DEADLINE: Duration = Duration::from_secs(20);

/// The scene's 6 classes, 24×32 input.
fn model(dir: &Path) -> PathBuf {
    write_model(dir, "tiny.onnx", &card(scene_classes(), 24, 32, false))
}

fn seg_cam(args: &[&str]) -> Output {
    Command::new(SEG_CAM)
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run seg-cam")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    text(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn read_mask(path: &Path) -> GrayImage {
    match image::open(path).unwrap() {
        image::DynamicImage::ImageLuma8(g) => g,
        other => panic!(
            "{}: {:?}, expected 8-bit grey",
            path.display(),
            other.color()
        ),
    }
}

#[test]
fn test_scene_for_five_frames_writes_five_masks_and_five_stats_lines() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let masks = dir.path().join("masks");
    let out = seg_cam(&[
        "test://",
        "--model",
        model.to_str().unwrap(),
        "--frames",
        "5",
        "--save-masks",
        masks.to_str().unwrap(),
        "--stats",
        "--http",
        "off",
        "--width",
        "96",
        "--height",
        "64",
        "--rate",
        "100",
        "--threads",
        "1",
        "--ignore-class",
        "background",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut names: Vec<String> = std::fs::read_dir(&masks)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let want: Vec<String> = (1..=5).map(|i| format!("mask-{i:06}.png")).collect();
    assert_eq!(names, want);
    let classes = scene_classes().len() as u8;
    let mut seen = std::collections::BTreeSet::new();
    for name in &names {
        let mask = read_mask(&masks.join(name));
        assert_eq!(
            mask.dimensions(),
            (96, 64),
            "{name}: the frame's resolution"
        );
        for p in mask.pixels() {
            assert!(p.0[0] < classes, "{name}: class id {}", p.0[0]);
            seen.insert(p.0[0]);
        }
    }
    assert!(
        seen.len() >= 2,
        "the scene gives more than one class: {seen:?}"
    );

    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 5, "{}", text(&out.stdout));
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["event"], "frame");
        assert_eq!(line["frame"], i as u64 + 1);
        assert_eq!(
            (line["width"].as_u64(), line["height"].as_u64()),
            (Some(96), Some(64))
        );
        // Fitting is part of inference, and both happen within the frame's latency.
        let ms = |key: &str| {
            line[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{key}: {line}"))
        };
        assert!(
            ms("preprocess_ms") > 0.0
                && ms("preprocess_ms") <= ms("inference_ms")
                && ms("inference_ms") <= ms("latency_ms"),
            "{line}"
        );
        let fractions: f64 = line["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                assert!(c["index"].as_u64().unwrap() < classes as u64);
                c["fraction"].as_f64().unwrap()
            })
            .sum();
        assert!(
            (fractions - 1.0).abs() < 1e-3,
            "letterbox: every pixel has a class"
        );
    }
}

/// Both engines give the same masks; an onnxruntime that is not there is named with
/// every place looked at, and `seg-cam bench` times both and names the fastest.
#[cfg(feature = "onnxruntime")]
#[test]
fn engines_agree_a_missing_onnxruntime_is_explained_and_bench_picks() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let model = model.to_str().unwrap();
    // Files, not the live scene: a live source may drop different frames in each run.
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    for i in 0..3 {
        let scene = segcam::scene::render(11, i, 64, 48).image;
        scene.save(frames.join(format!("f{i}.png"))).unwrap();
    }
    let mut masks = Vec::new();
    for engine in ["tract", "onnxruntime"] {
        let out = dir.path().join(engine);
        let run = seg_cam(&[
            frames.to_str().unwrap(),
            "--model",
            model,
            "--engine",
            engine,
            "--http",
            "off",
            "--save-masks",
            out.to_str().unwrap(),
        ]);
        let log = text(&run.stderr);
        assert!(run.status.success(), "{engine}: {log}");
        assert!(log.contains(&format!("in {engine} (")), "{engine}: {log}");
        masks.push(
            (1..=3)
                .map(|i| read_mask(&out.join(format!("mask-{i:06}.png"))))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(masks[0], masks[1], "tract and onnxruntime masks");

    let run = seg_cam(&[
        "test://",
        "--model",
        model,
        "--engine",
        "onnxruntime",
        "--onnxruntime-lib",
        "/nonexistent/libonnxruntime.so",
        "--frames",
        "1",
        "--http",
        "off",
    ]);
    let log = text(&run.stderr);
    assert!(!run.status.success());
    assert!(
        log.contains("/nonexistent/libonnxruntime.so")
            && log.contains("--onnxruntime-lib")
            && log.contains("--engine tract"),
        "{log}"
    );

    let json = dir.path().join("bench.json");
    let run = seg_cam(&[
        "bench",
        "--model",
        model,
        "--threads",
        "1,2",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    let table = text(&run.stdout);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(
        table.contains("features:") && table.contains("fastest here:"),
        "{table}"
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = report["report"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "2 engines × 2 thread counts: {rows:?}");
    let fastest = rows
        .iter()
        .map(|r| r["median_ms"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(report["pick"]["median_ms"].as_f64(), Some(fastest));
}

#[test]
fn a_bad_model_file_exits_non_zero_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken-model.onnx");
    std::fs::write(&bad, b"this is not a protobuf, just text").unwrap();
    let out = seg_cam(&["test://", "--model", bad.to_str().unwrap(), "--http", "off"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("broken-model.onnx") && err.contains("not an ONNX model"),
        "{err}"
    );

    let missing = dir.path().join("missing.onnx");
    let out = seg_cam(&[
        "test://",
        "--model",
        missing.to_str().unwrap(),
        "--http",
        "off",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("missing.onnx") && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn numbers_out_of_range_on_the_command_line_are_errors_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let model = model.to_str().unwrap();
    // Past what a TOML integer holds (the flags become the config file's table).
    for (flag, value) in [
        ("--frames", "18446744073709551615"),
        ("--decode-max-bytes", "9223372036854775808"),
    ] {
        let out = seg_cam(&["test://", "--model", model, "--http", "off", flag, value]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{flag} {value}: no panic, an error"
        );
        let err = text(&out.stderr);
        assert!(err.contains(&format!("{flag} {value}")), "{err}");
    }
    // Not a number of frames per second: refused as the same key in a file is, not
    // dropped for the default.
    for value in ["nan", "inf"] {
        let out = seg_cam(&[
            "test://", "--model", model, "--http", "off", "--rate", value,
        ]);
        assert_eq!(out.status.code(), Some(1), "--rate {value}");
        let err = text(&out.stderr).to_lowercase();
        assert!(err.contains("rate") && err.contains(value), "{err}");
    }
}

#[test]
fn a_taken_port_for_the_page_is_an_error_that_says_how_to_move_or_drop_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = seg_cam(&[
        "test://",
        "--model",
        model.to_str().unwrap(),
        "--http",
        &addr,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&addr) && err.contains("--http off"), "{err}");
}

#[test]
fn a_folder_is_processed_image_by_image_skipping_and_counting_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    std::fs::write(images.join("0-broken.png"), "not a png").unwrap();
    for (i, (w, h)) in [(80, 40), (40, 80), (64, 48)].into_iter().enumerate() {
        let img = RgbImage::from_fn(w, h, |x, _| Rgb([(x * 3) as u8, 100, 200]));
        img.save(images.join(format!("{}-shot.png", i + 1)))
            .unwrap();
    }
    let (frames, masks) = (dir.path().join("frames"), dir.path().join("masks"));
    let out = seg_cam(&[
        images.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--out",
        frames.to_str().unwrap(),
        "--save-masks",
        masks.to_str().unwrap(),
        "--resize",
        "crop",
        "--visualize",
        "side-by-side",
        "--stats",
        "--http",
        "off",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 3, "every image, none dropped");
    assert_eq!(lines[2]["corrupt"], 1);
    assert_eq!(lines[2]["dropped"], 0);
    for (i, (w, h)) in [(80, 40), (40, 80), (64, 48)].into_iter().enumerate() {
        let n = i + 1;
        let mask = read_mask(&masks.join(format!("mask-{n:06}.png")));
        assert_eq!(mask.dimensions(), (w, h));
        let frame = image::open(frames.join(format!("frame-{n:06}.jpg"))).unwrap();
        assert_eq!((frame.width(), frame.height()), (2 * w, h), "side by side");
        // Each output names its input: the broken file shifts no one's name.
        let source = images.join(format!("{n}-shot.png"));
        assert_eq!(lines[i]["source"], source.display().to_string());
    }
    // Crop: a 2:1 image seen through a 4:3 input leaves its sides void (255).
    let wide = read_mask(&masks.join("mask-000001.png"));
    assert_eq!(wide.get_pixel(0, 20).0[0], 255);
    assert!(wide.get_pixel(40, 20).0[0] < 6);

    // A second run into the same folders is told that it replaces the first's frames.
    let again = seg_cam(&[
        images.join("1-shot.png").to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--out",
        frames.to_str().unwrap(),
        "--save-masks",
        masks.to_str().unwrap(),
        "--http",
        "off",
    ]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let log = text(&again.stderr);
    assert!(log.contains("already holds 3 frame-* files"), "{log}");
    assert!(log.contains("already holds 3 mask-* files"), "{log}");
}

/// A running seg-cam whose stderr is read on a thread (for the HTTP address).
struct Running {
    child: Child,
    stderr: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// The test scene at 64×48 and 20 frames/s through `model`, served on a free
    /// port, with `env` (the fault hook, systemd's variables).
    fn small_scene(model: &Path, env: &[(&str, &str)]) -> Self {
        let args = [
            "test://",
            "--model",
            model.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
            "--width",
            "64",
            "--height",
            "48",
            "--rate",
            "20",
            "--threads",
            "1",
        ];
        Self::start_with_env(&args, env)
    }

    fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(SEG_CAM)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, stderr) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stderr,
            log: Vec::new(),
        }
    }

    /// The test scene at WIDTH×HEIGHT and RATE through `model`, served on a free port.
    fn test_scene(model: &Path, width: u32, height: u32, rate: u32) -> Self {
        let (w, h, r) = (width.to_string(), height.to_string(), rate.to_string());
        let model = model.to_str().unwrap();
        Self::start(&[
            "test://",
            "--model",
            model,
            "--http",
            "127.0.0.1:0",
            "--width",
            &w,
            "--height",
            &h,
            "--rate",
            &r,
            "--threads",
            "1",
        ])
    }

    /// The address after "serving http://".
    fn address(&mut self) -> String {
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(100)) {
                self.log.push(line.clone());
                if let Some(rest) = line.split("serving http://").nth(1) {
                    return rest.split('/').next().unwrap().to_string();
                }
            }
        }
        panic!("no address in {:?}", self.log);
    }

    /// Wait for the process to end by itself; its status and everything it logged.
    fn wait_exit(mut self) -> (std::process::ExitStatus, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < DEADLINE, "still running: {:?}", self.log);
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(500)) {
            self.log.push(line);
        }
        (status, self.log.join("\n"))
    }

    /// Send `signal` and wait for a clean exit; returns stdout.
    fn stop_with(mut self, signal: &str) -> String {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(killed.success());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit {status:?}: {:?}", self.log);
                break;
            }
            assert!(start.elapsed() < DEADLINE, "did not stop on {signal}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        stdout
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path`: status code and body.
fn get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = text(&raw[..split]);
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, raw[split + 4..].to_vec())
}

fn stats(addr: &str) -> serde_json::Value {
    serde_json::from_slice(&get(addr, "/stats.json").1).unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < DEADLINE, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_page_serves_live_frames_and_sigint_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // A card whose training set was all background: the drift score is then the share
    // of the other classes.
    let mut card = card(scene_classes(), 24, 32, false);
    let mut trained = vec![0.0; card.classes.len()];
    trained[0] = 1.0;
    card.class_distribution = Some(trained);
    let model = write_model(dir.path(), "tiny.onnx", &card);
    let mut run = Running::test_scene(&model, 96, 64, 30);
    let addr = run.address();
    wait_for("frames", || {
        stats(&addr)["frames"].as_u64().unwrap_or(0) >= 3
    });
    let s = stats(&addr);
    assert_eq!(s["no_signal"], false);
    assert_eq!(s["model"], "conv-test");
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(96), Some(64))
    );
    let (code, jpeg) = get(&addr, "/snapshot.jpg");
    assert_eq!(code, 200);
    let snapshot = image::load_from_memory(&jpeg).unwrap();
    assert_eq!((snapshot.width(), snapshot.height()), (96, 64));
    let (code, page) = get(&addr, "/");
    assert_eq!(code, 200);
    assert!(text(&page).contains("/stream.mjpg"));
    let (_, metrics) = get(&addr, "/metrics");
    let metrics = text(&metrics);
    assert!(metrics.contains("segcam_frames_total"));
    for class in &card.classes.names {
        assert!(
            metrics.contains(&format!("segcam_class_share{{class=\"{class}\"}} ")),
            "{metrics}"
        );
    }
    assert!(metrics.contains("\nsegcam_drift_score "), "{metrics}");
    let drift = &s["drift"];
    assert!(drift["frames"].as_u64().unwrap() >= 3, "{drift}");
    let shares: Vec<f64> = drift["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["share"].as_f64().unwrap())
        .collect();
    assert_eq!(shares.len(), card.classes.len());
    assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-3, "{drift}");
    let score = drift["score"].as_f64().unwrap();
    assert!((score - (1.0 - shares[0])).abs() < 1e-3, "{drift}");
    run.stop_with("-INT");
}

#[test]
fn a_missing_camera_shows_no_signal_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let mut run = Running::start(&[
        "v4l2:///dev/video97",
        "--model",
        model.to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
        "--stats",
        "--width",
        "64",
        "--height",
        "48",
    ]);
    let addr = run.address();
    wait_for("no signal", || stats(&addr)["no_signal"] == true);
    // A deploy's health check must see that no camera delivers.
    let (code, body) = get(&addr, "/healthz");
    assert_eq!(code, 503);
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let reason = health["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("no signal") && reason.contains("/dev/video97"),
        "{reason}"
    );
    // The page's picture is the "no signal" frame.
    let (code, jpeg) = get(&addr, "/snapshot.jpg");
    assert_eq!(code, 200);
    let snapshot = image::load_from_memory(&jpeg).unwrap();
    assert_eq!((snapshot.width(), snapshot.height()), (64, 48));
    let stdout = run.stop_with("-TERM");
    let first = json_lines(stdout.as_bytes()).remove(0);
    assert_eq!(first["event"], "no_signal");
    assert!(
        first["detail"].as_str().unwrap().contains("/dev/video97"),
        "{first}"
    );
}

/// What the page shows, measured inside the browser: the stream image drawn into a
/// canvas (size, brightness spread, a hash), then again 1.5 s later, with the
/// stats panel's text each time.
const LOOK_AT_THE_PAGE: &str = r##"(async () => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const $ = (id) => document.getElementById(id);
  for (let i = 0; i < 150 && !$("stream"); i++) await sleep(100);
  const img = $("stream");
  for (let i = 0; i < 150 && !(img.naturalWidth > 0 && $("fps").textContent !== "–"); i++) await sleep(100);
  const look = () => {
    const c = document.createElement("canvas");
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const g = c.getContext("2d");
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let sum = 0, squares = 0, hash = 0;
    for (let i = 0; i < d.length; i += 4) {
      const v = d[i] + d[i + 1] + d[i + 2];
      sum += v; squares += v * v; hash = (hash * 31 + v) >>> 0;
    }
    const n = d.length / 4, mean = sum / n;
    return { width: c.width, height: c.height, spread: Math.sqrt(squares / n - mean * mean), hash,
             frames: Number($("frames").textContent), fps: Number($("fps").textContent) };
  };
  const first = look();
  await sleep(1500);
  const second = look();
  return { first, second, model: $("model").textContent, status: $("status").textContent,
           legend: [...document.querySelectorAll("#legend li")].map((li) => li.textContent) };
})()"##;

#[test]
fn the_page_in_headless_chromium_shows_changing_frames_and_live_stats() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let mut run = Running::test_scene(&model, 160, 120, 15);
    let addr = run.address();
    let mut browser = chromium::Chromium::start();
    let page = browser.open(&format!("http://{addr}/"));
    let seen = browser.evaluate(&page, LOOK_AT_THE_PAGE);
    let (first, second) = (&seen["first"], &seen["second"]);
    for look in [first, second] {
        assert_eq!(
            (look["width"].as_u64(), look["height"].as_u64()),
            (Some(160), Some(120)),
            "the stream shows frames at the camera's size: {seen}"
        );
        assert!(
            look["spread"].as_f64().unwrap() > 10.0,
            "a frame with content, not a blank one: {seen}"
        );
        assert!(look["fps"].as_f64().unwrap() > 0.0, "{seen}");
    }
    assert_ne!(first["hash"], second["hash"], "the picture moves: {seen}");
    assert!(
        second["frames"].as_u64() > first["frames"].as_u64(),
        "the frame count updates: {seen}"
    );
    assert_eq!(seen["model"], "conv-test");
    assert_eq!(seen["status"], "live");
    let legend = seen["legend"].as_array().unwrap();
    assert!(
        !legend.is_empty() && legend.iter().all(|l| l.as_str().unwrap().contains('%')),
        "the legend lists classes with their share: {seen}"
    );
    drop(browser);
    run.stop_with("-INT");
}

#[test]
fn a_stage_that_panics_ends_the_process_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    for stage in ["capture", "inference", "output"] {
        let fault = format!("{stage}:3:panic");
        let run = Running::small_scene(&model, &[("SEGCAM_TEST_FAULT", &fault)]);
        let (status, log) = run.wait_exit();
        assert!(!status.success(), "{stage}: exit {status:?}");
        assert!(
            log.contains(&format!("the {stage} stage panicked")),
            "{stage}: {log}"
        );
    }
}

#[test]
fn systemd_hears_ready_and_watchdog_kicks_until_a_stage_hangs() {
    use std::os::unix::net::UnixDatagram;
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    // Everything seg-cam tells systemd, with when it arrived.
    let heard: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    {
        let heard = heard.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n) = socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                heard.lock().unwrap().push((Instant::now(), message));
            }
        });
    }
    let mut run = Running::small_scene(
        &model,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            // A kick every 100 ms while frames move.
            ("WATCHDOG_USEC", "200000"),
            ("SEGCAM_TEST_FAULT", "inference:40:hang"),
        ],
    );
    let addr = run.address();
    let kicks =
        |heard: &[(Instant, String)]| heard.iter().filter(|(_, m)| m == "WATCHDOG=1\n").count();
    wait_for("watchdog kicks", || kicks(&heard.lock().unwrap()) >= 3);
    assert_eq!(heard.lock().unwrap()[0].1, "READY=1\n");

    // Inference hangs at frame 40 (2 s at 20 frames/s): no frame moves, /healthz
    // turns 503 once frames are 5 s stale, and the watchdog hears nothing after the
    // last frame (its kicks stop within a period, 200 ms).
    wait_for("/healthz to fail", || get(&addr, "/healthz").0 == 503);
    let failed = Instant::now();
    let (_, body) = get(&addr, "/healthz");
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        health["reason"]
            .as_str()
            .unwrap()
            .starts_with("no frame for"),
        "{health}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let heard = heard.lock().unwrap();
    let last_kick = heard
        .iter()
        .rev()
        .find(|(_, m)| m == "WATCHDOG=1\n")
        .unwrap()
        .0;
    assert!(
        last_kick + Duration::from_secs(3) < failed,
        "kicked {:?} before /healthz failed: the watchdog was kicked by a hung pipeline",
        failed - last_kick
    );
    assert!(kicks(&heard) >= 3);
}

#[test]
fn healthz_turns_red_when_every_frame_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let mut run = Running::small_scene(
        &model,
        // From the 10th frame on, every frame the camera gives is corrupt.
        &[("SEGCAM_TEST_FAULT", "capture:10:corrupt")],
    );
    let addr = run.address();
    // Healthy once frames move (before: "no frame yet"), then red for the right reason.
    wait_for("frames", || get(&addr, "/healthz").0 == 200);
    let mut health = serde_json::Value::Null;
    wait_for("/healthz to fail", || {
        let (code, body) = get(&addr, "/healthz");
        health = serde_json::from_slice(&body).unwrap();
        code == 503
    });
    let reason = health["reason"].as_str().unwrap();
    assert!(reason.contains("was corrupt"), "{health}");
    assert!(stats(&addr)["corrupt_frames"].as_u64().unwrap() > 20);
}

#[test]
fn out_of_file_descriptors_the_server_keeps_running_and_recovers() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let mut command = Command::new(SEG_CAM);
    command
        .args([
            "test://",
            "--model",
            model.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
            "--width",
            "64",
            "--height",
            "48",
            "--threads",
            "1",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 48,
                rlim_max: 48,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let (tx, stderr) = mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut run = Running {
        child,
        stderr,
        log: Vec::new(),
    };
    let addr = run.address();
    wait_for("frames", || get(&addr, "/healthz").0 == 200);
    // More idle sockets than the process has descriptors.
    let crowd: Vec<TcpStream> = (0..80)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    drop(crowd);
    // Once the crowd is gone (or timed out), the server answers again.
    wait_for("/healthz again", || {
        TcpStream::connect(&addr).is_ok() && get(&addr, "/healthz").0 == 200
    });
    while let Ok(line) = run.stderr.recv_timeout(Duration::from_millis(300)) {
        run.log.push(line);
    }
    // Whether accept() itself or the dup after it ran out, the log says so at most once
    // (no line per failed accept), and a warning is followed by the recovery.
    let count = |what: &str| run.log.iter().filter(|l| l.contains(what)).count();
    let warned = count("cannot accept connections");
    let again = count("accepting connections again");
    assert!(warned <= 1 && again == warned, "{:?}", run.log);
    assert!(
        run.child.try_wait().unwrap().is_none(),
        "seg-cam is still running"
    );
}

#[test]
fn a_folder_where_no_image_decodes_is_an_error_even_looping() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let shots = dir.path().join("shots");
    std::fs::create_dir(&shots).unwrap();
    for name in ["a.png", "b.jpg"] {
        std::fs::write(shots.join(name), "not an image").unwrap();
    }
    let out = seg_cam(&[
        shots.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--loop",
        "--http",
        "off",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("none of its 2 images"), "{err}");
}

#[test]
fn outputs_are_never_written_among_the_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let shots = dir.path().join("shots");
    std::fs::create_dir(&shots).unwrap();
    let scene = segcam::scene::render(1, 0, 64, 48).image;
    for name in ["a.png", "frame-000002.png"] {
        scene.save(shots.join(name)).unwrap();
    }
    let before = std::fs::read(shots.join("frame-000002.png")).unwrap();
    for flag in ["--out", "--save-masks"] {
        let out = seg_cam(&[
            shots.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            flag,
            shots.to_str().unwrap(),
            "--http",
            "off",
        ]);
        assert!(!out.status.success(), "{flag} into the input folder ran");
        let err = text(&out.stderr);
        assert!(
            err.contains("holds the input") && err.contains("shots"),
            "{flag}: {err}"
        );
    }
    let mut names: Vec<_> = std::fs::read_dir(&shots)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["a.png", "frame-000002.png"], "nothing added");
    assert_eq!(
        std::fs::read(shots.join("frame-000002.png")).unwrap(),
        before
    );

    // Elsewhere, the frames appear whole and no temporary is left.
    let elsewhere = dir.path().join("out");
    let out = seg_cam(&[
        shots.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--out",
        elsewhere.to_str().unwrap(),
        "--save-masks",
        elsewhere.to_str().unwrap(),
        "--http",
        "off",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut names: Vec<String> = std::fs::read_dir(&elsewhere)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "frame-000001.jpg",
            "frame-000002.jpg",
            "mask-000001.png",
            "mask-000002.png"
        ]
    );
    assert_eq!(
        read_mask(&elsewhere.join("mask-000001.png")).dimensions(),
        (64, 48)
    );
}

#[test]
fn a_pipe_or_a_device_is_neither_read_as_a_model_nor_as_images() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let fifo = dir.path().join("fifo.png");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let out = seg_cam(&[
        fifo.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--http",
        "off",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("fifo.png") && err.contains("not a regular file"),
        "{err}"
    );
    let out = seg_cam(&[
        "test://",
        "--model",
        "/dev/zero",
        "--frames",
        "1",
        "--http",
        "off",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("/dev/zero") && err.contains("not a regular file"),
        "{err}"
    );
}

#[test]
fn a_golden_check_never_writes_into_its_set() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let golden = dir.path().join("golden");
    let m = model.to_str().unwrap();
    let g = golden.to_str().unwrap();
    let out = seg_cam(&[
        "check", "--make", "--golden", g, "--model", m, "--frames", "2",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let index = std::fs::read(golden.join("golden.json")).unwrap();
    let json = golden.join("golden.json");
    let out = seg_cam(&[
        "check",
        "--golden",
        g,
        "--model",
        m,
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("inside the golden set"), "{err}");
    assert_eq!(std::fs::read(&json).unwrap(), index, "the index is intact");
    // made from the set's own frames: refused
    let out = seg_cam(&["check", "--make", "--golden", g, "--model", m, "--from", g]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("its own folder"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(&json).unwrap(), index, "the index is intact");
    // a report beside the set is written
    let report = dir.path().join("report.json");
    let out = seg_cam(&[
        "check",
        "--golden",
        g,
        "--model",
        m,
        "--json",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["passed"], true, "{report}");
}

#[test]
fn a_model_made_elsewhere_gets_a_card_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    // a graph with no card, as torch.onnx.export writes one: 6 classes, 24×32
    let theirs = dir.path().join("theirs.onnx");
    let bytes = segcam::onnx_card::encode(&segcam::testing::conv_model(6, 24, 32, false));
    std::fs::write(&theirs, &bytes).unwrap();
    let t = theirs.to_str().unwrap();
    let out = seg_cam(&["card", "--model", t]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("no segcam model card") && err.contains("--out"),
        "{err}"
    );

    let labels = dir.path().join("classes.txt");
    std::fs::write(&labels, "sky\nroad\ncar\nperson\ntree\n").unwrap();
    let ours = dir.path().join("ours.onnx");
    let o = ours.to_str().unwrap();
    let l = labels.to_str().unwrap();
    let out = seg_cam(&["card", "--model", t, "--labels", l, "--out", o]);
    assert!(!out.status.success(), "5 names for 6 channels");
    assert!(
        text(&out.stderr).contains("6 channels"),
        "{}",
        text(&out.stderr)
    );
    assert!(!ours.exists());

    std::fs::write(&labels, "sky\nroad\ncar\nperson\ntree\nsign\n").unwrap();
    let out = seg_cam(&["card", "--model", t, "--labels", l, "--out", o]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(&theirs).unwrap(),
        bytes,
        "the model given is untouched"
    );
    let card = segcam::onnx_card::read_card(&ours).unwrap();
    assert_eq!(card.classes.len(), 6);
    assert_eq!((card.input_height, card.input_width), (24, 32));
    let shown = seg_cam(&["card", "--model", o]);
    assert!(shown.status.success());
    assert!(
        text(&shown.stdout).contains("\"person\""),
        "{}",
        text(&shown.stdout)
    );

    for again in [o, t] {
        let out = seg_cam(&["card", "--model", t, "--labels", l, "--out", again]);
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("exists"),
            "{}",
            text(&out.stderr)
        );
    }
    assert_eq!(
        std::fs::read(&theirs).unwrap(),
        bytes,
        "the model given is untouched"
    );

    let masks = dir.path().join("masks");
    let run = seg_cam(&[
        "test://",
        "--model",
        o,
        "--frames",
        "1",
        "--save-masks",
        masks.to_str().unwrap(),
        "--http",
        "off",
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(masks.join("mask-000001.png").is_file());
}

/// The peak resident memory of a running process, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

#[test]
fn odd_and_huge_images_neither_end_the_run_nor_its_memory() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let shots = dir.path().join("shots");
    std::fs::create_dir(&shots).unwrap();
    RgbImage::from_pixel(64, 48, Rgb([200, 30, 30]))
        .save(shots.join("a.png"))
        .unwrap();
    // Taller than a JPEG can be: written scaled down.
    RgbImage::from_pixel(4, 70_000, Rgb([30, 200, 30]))
        .save(shots.join("b.png"))
        .unwrap();
    // A few hundred KB that would decode to 432 MB: refused from its header.
    {
        let file = std::fs::File::create(shots.join("c.png")).unwrap();
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), 12_000, 12_000);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_compression(png::Compression::Balanced);
        let mut rows = encoder
            .write_header()
            .unwrap()
            .into_stream_writer()
            .unwrap();
        for _ in 0..12_000 {
            rows.write_all(&[0u8; 36_000]).unwrap();
        }
        rows.finish().unwrap();
    }
    RgbImage::from_pixel(64, 48, Rgb([30, 30, 200]))
        .save(shots.join("d.png"))
        .unwrap();
    let out_dir = dir.path().join("out");
    let mut run = Running::start(&[
        shots.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--loop",
        "--stats",
        "--http",
        "127.0.0.1:0",
        "--threads",
        "1",
    ]);
    let addr = run.address();
    // Three passes over the folder: 9 frames written, 3 huge files refused.
    wait_for("three passes", || {
        std::fs::read_dir(&out_dir).map_or(0, |d| d.count()) >= 9
    });
    let peak = peak_rss_mib(run.child.id());
    assert!(peak < 300, "seg-cam peaked at {peak} MiB");
    let tall = image::open(out_dir.join("frame-000002.jpg")).unwrap();
    assert_eq!(
        (tall.width(), tall.height()),
        (4, 65_535),
        "scaled to fit JPEG"
    );
    let s = stats(&addr);
    assert!(s["corrupt_frames"].as_u64().unwrap() >= 3, "{s}");
    assert_eq!(get(&addr, "/healthz").0, 200, "frames move");
    let stdout = run.stop_with("-INT");
    let lines = json_lines(stdout.as_bytes());
    assert!(lines.len() >= 9);
    assert!(
        lines.iter().all(|l| l["skipped"] == 0),
        "nothing had to be skipped"
    );
}
