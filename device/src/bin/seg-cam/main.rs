//! `seg-cam`: live semantic segmentation on a board. Parses flags and the config
//! file into one [`Config`], installs SIGINT/SIGTERM handling, and runs
//! [`segcam::live::run`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use serde::Serialize;

use segcam::live::Config;
use segcam::overlay::Visualize;
use segcam::resize::{Filter, ResizePolicy};
use segcam::source::PixelFormat;

mod card;
mod check;
mod release;
mod whole;

/// Flags: each setting is optional here so that only those given override the
/// config file; the defaults live in `Config` (shown at the end of `--help`).
#[derive(Debug, Parser, Serialize)]
#[command(
    name = "seg-cam",
    version,
    about = "Live semantic segmentation: a camera, images or a test scene through an exported model, \
             shown as a live web page, on a framebuffer, or written to files"
)]
#[serde(rename_all = "kebab-case")]
struct Cli {
    /// Input: v4l2:///dev/video0 (or /dev/videoN), test://, an image, a folder, or a glob.
    input: Option<String>,
    /// Outputs, as jetson-inference names them: http://ADDR (the live page), fb:///dev/fbN or
    /// display://N (a framebuffer), file://DIR (JPEG frames). Given any, the live page is
    /// served only if one of them, --http or the config file asks for it.
    #[arg(value_name = "OUTPUT")]
    #[serde(skip)]
    outputs: Vec<String>,
    /// Read settings from a TOML file (keys as the flags' names; flags win).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Print the V4L2 cameras with their formats, sizes and rates, then exit.
    #[arg(long)]
    #[serde(skip)]
    list_cameras: bool,
    /// The exported ONNX model (its card gives classes, input size, normalisation).
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// Inference threads (0: every core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// The engine: auto (the one the model's card names, if this build has it), tract or onnxruntime.
    #[arg(long, value_name = "ENGINE")]
    engine: Option<segcam::engine::EngineChoice>,
    /// Where onnxruntime runs the model: cpu, cuda or tensorrt (needs a library built with it).
    #[arg(long, value_name = "PROVIDER")]
    provider: Option<segcam::engine::Provider>,
    /// The onnxruntime library (default: ORT_DYLIB_PATH, beside seg-cam, the segcam venv).
    #[arg(long, value_name = "FILE")]
    onnxruntime_lib: Option<PathBuf>,
    /// Also run each frame in this engine (tract, onnxruntime) and report the pixels that agree (`agreement` in --stats).
    #[arg(long, value_name = "ENGINE")]
    compare_engine: Option<segcam::card::EngineKind>,
    /// Requested capture width (cameras take the nearest size they offer).
    #[arg(long, visible_alias = "input-width", value_name = "PIXELS")]
    width: Option<u32>,
    /// Requested capture height.
    #[arg(long, visible_alias = "input-height", value_name = "PIXELS")]
    height: Option<u32>,
    /// Requested frames per second.
    #[arg(long, visible_alias = "input-rate", value_name = "FPS")]
    rate: Option<f32>,
    /// Only this camera pixel format (by name, or by fourcc such as YUYV or MJPG).
    #[arg(long, value_name = "FORMAT", ignore_case = true)]
    pixel_format: Option<PixelFormat>,
    /// Set a camera control before streaming, as v4l2-ctl names it (--list-cameras shows them); repeatable
    /// (config: camera-controls = ["NAME=VALUE", …]).
    #[arg(
        long = "camera-controls",
        visible_alias = "camera-control",
        value_name = "NAME=VALUE"
    )]
    camera_controls: Option<Vec<String>>,
    /// Start image inputs again at their end (--input-loop=-1 as in jetson-inference; 0 or false: once).
    #[arg(long = "loop", visible_alias = "input-loop", num_args = 0..=1, default_missing_value = "true",
          value_name = "BOOL", value_parser = parse_loop, allow_negative_numbers = true)]
    #[serde(rename = "loop")]
    looping: Option<bool>,
    /// Fitting frames to the model's input: stretch, crop or letterbox.
    #[arg(long, value_name = "POLICY")]
    resize: Option<ResizePolicy>,
    /// Class map to frame resolution: point (blocky, exact) or linear (smooth).
    #[arg(long, visible_alias = "filter-mode", value_name = "MODE")]
    filter: Option<Filter>,
    /// overlay, mask or side-by-side.
    #[arg(long, value_name = "MODE")]
    visualize: Option<Visualize>,
    /// Weight of the class colours over the frame, 0–255.
    #[arg(long, value_name = "0-255")]
    alpha: Option<u8>,
    /// A class (name or index) left unpainted and out of the legend.
    #[arg(long, value_name = "CLASS")]
    ignore_class: Option<String>,
    /// Address of the live page and stream, or "off".
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// A token every HTTP request but /healthz must carry (prefer --http-token-file: ps shows flags).
    #[arg(long, value_name = "TOKEN")]
    http_token: Option<String>,
    /// A file whose first line is the HTTP token.
    #[arg(long, value_name = "FILE")]
    http_token_file: Option<PathBuf>,
    /// Host names the page may be reached by besides addresses, localhost and this board's name (DNS-rebinding check; "*": any).
    #[arg(long, value_delimiter = ',', value_name = "NAME,…")]
    http_allowed_hosts: Option<Vec<String>>,
    /// The largest image file or camera frame decoded, in pixels.
    #[arg(long, value_name = "PIXELS")]
    decode_max_pixels: Option<u64>,
    /// The largest image file decoded, in bytes.
    #[arg(long, value_name = "BYTES")]
    decode_max_bytes: Option<u64>,
    /// Show frames on a Linux framebuffer, e.g. fb:///dev/fb0.
    #[arg(long, value_name = "URI")]
    fb: Option<String>,
    /// Write each output frame to this folder (frame-000001.jpg, …).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Write each frame's class ids to this folder (mask-000001.png, 8-bit PNG).
    #[arg(long, value_name = "DIR")]
    save_masks: Option<PathBuf>,
    /// Print one JSON line of statistics per frame on stdout.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    stats: Option<bool>,
    /// Stop after this many frames.
    #[arg(long, value_name = "N")]
    frames: Option<u64>,
    /// JPEG quality of the stream, snapshots and --out frames, 1–100.
    #[arg(long, value_name = "1-100")]
    jpeg_quality: Option<u8>,
    /// Frames over which /metrics reports class shares and the drift score.
    #[arg(long, value_name = "FRAMES")]
    drift_window: Option<usize>,
    /// seg-cam check --golden: the least share of a frame's pixels that must agree, 0–1.
    #[arg(long, value_name = "SHARE")]
    golden_agreement: Option<f64>,
    /// seg-cam check --golden: the most a frame's p90 latency may be, in ms.
    #[arg(long, value_name = "MS")]
    latency_budget_ms: Option<f64>,
}

impl Cli {
    /// Parse the command line, with the defaults listed at the end of `--help`.
    fn parse_args() -> Self {
        let defaults = toml::to_string(&Config::default()).expect("the defaults serialise");
        let command = Cli::command().after_help(format!(
            "Examples:\n  \
             seg-cam /dev/video0 http://0.0.0.0:8080          camera to the live page on every interface\n  \
             seg-cam v4l2:///dev/video0 display://0            camera to the first framebuffer\n  \
             seg-cam 'images/*.jpg' file://runs/out --save-masks runs/masks   pictures to files\n  \
             seg-cam test:// --model models/fcn.int8.onnx --stats   the test scene, statistics on stdout\n\n\
             Which engine and model are fastest here: seg-cam bench --model A.onnx [--model B.onnx …] \
             (seg-cam bench --help). Signed releases: seg-cam release --help. A release's golden set: seg-cam check --help. A model made elsewhere: seg-cam card --help.\n\nDefaults (a --config file takes the same keys):\n\n{defaults}"
        ));
        let matches = command.get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The settings given on the command line, as a TOML table keyed like the file
    /// (serialised straight to TOML, so that `nan` and `inf` reach the checks a file's
    /// values get; a number TOML cannot hold is an error naming its flag).
    fn overrides(&self) -> segcam::Result<toml::Table> {
        match toml::Value::try_from(self) {
            Ok(toml::Value::Table(table)) => Ok(table),
            Ok(_) => unreachable!("a struct serialises as a table"),
            Err(e) => {
                let flag = serde_json::to_value(self).ok().and_then(|flags| {
                    flags.as_object().and_then(|map| {
                        map.iter()
                            .find(|(_, v)| !v.is_null() && toml::Value::try_from(v).is_err())
                            .map(|(key, value)| (format!("--{key} {value}"), value.is_u64()))
                    })
                });
                Err(segcam::Error::Invalid(match flag {
                    Some((flag, true)) => format!("{flag}: {e} (numbers stop at {})", i64::MAX),
                    Some((flag, false)) => format!("{flag}: {e}"),
                    // A path TOML cannot hold: name the argument, as well as it prints.
                    None => match std::env::args_os().find(|a| a.to_str().is_none()) {
                        Some(arg) => format!(
                            "{}: not UTF-8; seg-cam's settings take UTF-8 paths (rename the file, or link it under a UTF-8 name)",
                            arg.to_string_lossy()
                        ),
                        None => format!("the flags: {e}"),
                    },
                }))
            }
        }
    }

    /// The flags and OUTPUT arguments as settings: (under the config file, over it).
    /// Named OUTPUTs turn the default page off, unless the file or a flag serves it; an
    /// OUTPUT and a flag that set the same thing differently are an error.
    fn settings(&self) -> segcam::Result<(toml::Table, toml::Table)> {
        let mut table = segcam::live::uri::settings(&self.outputs)?;
        let flags = self.overrides()?;
        for (key, value) in &flags {
            let same = |output: &toml::Value| match (key.as_str(), value.as_str()) {
                // --fb /dev/fb0 and fb:///dev/fb0 name one device.
                ("fb", Some(flag)) => flag
                    .parse::<segcam::live::uri::OutputUri>()
                    .is_ok_and(|uri| &uri.value() == output),
                _ => output == value,
            };
            if table.get(key).is_some_and(|output| !same(output)) {
                return Err(segcam::Error::Invalid(format!(
                    "--{key} {value} and the output that sets {key} to {} disagree; give one",
                    table[key]
                )));
            }
        }
        let mut under_file = toml::Table::new();
        if !self.outputs.is_empty() && !table.contains_key("http") {
            under_file.insert("http".into(), segcam::live::config::HTTP_OFF.into());
        }
        for (key, value) in flags {
            // Where an OUTPUT says the same, its spelling stays.
            table.entry(key).or_insert(value);
        }
        Ok((under_file, table))
    }

    fn config(&self) -> segcam::Result<Config> {
        let (base, settings) = self.settings()?;
        match &self.config {
            Some(path) => Config::load_over(base, path, settings),
            None => Config::merge_over(base, None, settings),
        }
    }
}

/// `seg-cam bench`: time every engine × model × thread count here and name the fastest.
#[derive(Debug, Parser)]
#[command(
    name = "seg-cam bench",
    about = "Time every engine × model × thread count this machine can run, on the same input, and say which is fastest",
    after_help = "Example:\n  seg-cam bench --model models/fcn.onnx --model models/fcn.int8.onnx --threads 1,2"
)]
struct BenchCli {
    /// A model to time (repeat for several).
    #[arg(long = "model", value_name = "FILE", required = true)]
    models: Vec<PathBuf>,
    /// Thread counts to try, comma-separated [default: every core].
    #[arg(long, value_delimiter = ',', value_name = "N,…")]
    threads: Vec<usize>,
    /// Only these engines (tract, onnxruntime) [default: every one available].
    #[arg(long = "engine", value_delimiter = ',', value_name = "ENGINE,…")]
    engines: Vec<segcam::card::EngineKind>,
    /// Untimed runs before timing.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed runs of each combination (at least 3; fewer than this when --seconds runs out).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Seconds of timed runs for one combination.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Where onnxruntime runs: cpu, cuda or tensorrt.
    #[arg(long, default_value_t = segcam::engine::Provider::default())]
    provider: segcam::engine::Provider,
    /// The onnxruntime library (default: ORT_DYLIB_PATH, beside seg-cam, the segcam venv).
    #[arg(long, value_name = "FILE")]
    onnxruntime_lib: Option<PathBuf>,
    /// Also write the results as JSON (with the pick) to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn bench(cli: BenchCli) -> anyhow::Result<()> {
    let threads = if cli.threads.is_empty() {
        vec![std::thread::available_parallelism().map_or(1, |n| n.get())]
    } else {
        cli.threads
    };
    if threads.contains(&0) {
        anyhow::bail!("--threads: 0 is not a thread count");
    }
    let options = segcam::bench::BenchOptions {
        models: cli.models,
        threads,
        engines: cli.engines,
        warmup: cli.warmup,
        runs: cli.runs,
        budget: std::time::Duration::from_secs_f64(cli.seconds.max(0.0)),
        engine: segcam::engine::EngineOptions {
            engine: segcam::engine::EngineChoice::Auto,
            threads: 1,
            provider: cli.provider,
            onnxruntime_lib: cli.onnxruntime_lib,
        },
    };
    let report = segcam::bench::run(&options, &mut |what| tracing::info!("timing {what}"))?;
    print!("{}", report.table());
    if let Some(path) = cli.json {
        let json = serde_json::json!({ "report": &report, "pick": report.pick() });
        whole::write_whole(
            &path,
            (serde_json::to_string_pretty(&json)? + "\n").as_bytes(),
        )?;
    }
    Ok(())
}

/// A panic in a pipeline stage ends the run with an error through the stage's guard;
/// should the other stages not wind down (a camera read that never returns), exit
/// anyway after a grace period, so that systemd restarts a whole process.
fn exit_soon_after_a_stage_panics() {
    const GRACE: std::time::Duration = std::time::Duration::from_secs(5);
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        let stage = std::thread::current().name().map(str::to_string);
        if matches!(stage.as_deref(), Some("capture" | "inference" | "output")) {
            let _ = std::thread::Builder::new().spawn(|| {
                std::thread::sleep(GRACE);
                eprintln!("seg-cam: a stage panicked and the pipeline did not stop; exiting");
                std::process::exit(70);
            });
        }
    }));
}

fn main() -> ExitCode {
    exit_soon_after_a_stage_panics();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // Subcommands before the live run's flags (an input may be any word).
    let sub = |name: &str| {
        std::iter::once(format!("seg-cam {name}").into()).chain(std::env::args_os().skip(2))
    };
    let result = match std::env::args_os().nth(1) {
        Some(a) if a == "bench" => {
            bench(BenchCli::parse_from(sub("bench"))).map(|()| ExitCode::SUCCESS)
        }
        Some(a) if a == "release" => release::main(release::ReleaseCli::parse_from(sub("release"))),
        Some(a) if a == "check" => check::main(check::CheckCli::parse_from(sub("check"))),
        Some(a) if a == "card" => card::main(card::CardCli::parse_from(sub("card"))),
        _ => run(Cli::parse_args()).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("seg-cam: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.list_cameras {
        print!("{}", list_cameras());
        return Ok(());
    }
    let config = cli.config()?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while stopping exits at once, should a stage hang.
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .context("installing the signal handler")?;
        signal_hook::flag::register(signal, stop.clone())
            .context("installing the signal handler")?;
    }
    let summary = segcam::live::run(&config, stop)?;
    tracing::info!(
        "stopped after {} frames ({} dropped, {} corrupt)",
        summary.frames,
        summary.dropped,
        summary.corrupt
    );
    Ok(())
}

/// `--loop`/`--input-loop`: true, false, or jetson-inference's counts (-1: for ever,
/// 0: once); seg-cam loops for ever or not at all.
fn parse_loop(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "-1" => Ok(true),
        "false" | "0" => Ok(false),
        n if n.parse::<u64>().is_ok() => Err(format!(
            "'{text}': seg-cam loops an input for ever (-1 or true) or not at all (0 or false), not N times"
        )),
        _ => Err(format!("'{text}': expected true, false, -1 or 0")),
    }
}

#[cfg(feature = "v4l2")]
fn list_cameras() -> String {
    segcam::source::v4l2::list_cameras()
}

#[cfg(not(feature = "v4l2"))]
fn list_cameras() -> String {
    "this seg-cam was built without V4L2 support (feature 'v4l2')\n".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_has_a_flag_and_every_flag_a_setting() {
        let value = serde_json::to_value(Config::default()).unwrap();
        let keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        let command = Cli::command();
        let flags: Vec<String> = command
            .get_arguments()
            .filter(|a| {
                !matches!(
                    a.get_id().as_str(),
                    "config" | "list_cameras" | "outputs" | "help" | "version"
                )
            })
            .map(|a| a.get_long().map_or(a.get_id().to_string(), str::to_string))
            .collect();
        let mut a = keys.clone();
        let mut b = flags.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "config keys vs flags");
    }

    #[test]
    fn flags_override_the_file_and_only_given_flags_count() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cam.toml");
        std::fs::write(
            &file,
            "input = \"test://\"\nalpha = 90\nstats = true\nframes = 7\nfilter = \"point\"\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "seg-cam",
            "--config",
            file.to_str().unwrap(),
            "--alpha",
            "200",
            "--stats=false",
            "--resize",
            "crop",
            "--loop",
            "--pixel-format",
            "MJPG",
        ])
        .unwrap();
        let config = cli.config().unwrap();
        assert_eq!(config.input, "test://", "from the file");
        assert_eq!(config.frames, Some(7), "from the file");
        assert_eq!(config.filter, Filter::Point, "from the file");
        assert_eq!(config.alpha, 200, "the flag wins");
        assert!(!config.stats, "a flag can turn a file's setting off");
        assert_eq!(config.resize, ResizePolicy::Crop);
        assert!(config.looping);
        assert_eq!(config.pixel_format, Some(PixelFormat::Mjpeg));
        assert_eq!(config.http, Config::default().http, "default");

        let cli = Cli::try_parse_from(["seg-cam", "--config", "/nonexistent/cam.toml"]).unwrap();
        let msg = cli.config().unwrap_err().to_string();
        assert!(msg.contains("/nonexistent/cam.toml"), "{msg}");
        assert!(Cli::try_parse_from(["seg-cam", "--resize", "squash"]).is_err());
    }

    #[test]
    fn outputs_as_jetson_inference_names_them() {
        let config = |args: &[&str]| Cli::try_parse_from(args).unwrap().config();
        let c = config(&["seg-cam", "test://", "display://1", "file:///tmp/frames"]).unwrap();
        assert_eq!(c.fb.as_deref(), Some("fb:///dev/fb1"));
        assert_eq!(c.out, Some(PathBuf::from("/tmp/frames")));
        assert_eq!(
            c.http,
            segcam::live::config::HTTP_OFF,
            "outputs given: no page unless asked"
        );
        let c = config(&["seg-cam", "test://", "http://:9000", "fb:///dev/fb0"]).unwrap();
        assert_eq!(c.http, "0.0.0.0:9000");
        let c = config(&["seg-cam", "test://", "file://x", "--http", "127.0.0.1:9001"]).unwrap();
        assert_eq!(c.http, "127.0.0.1:9001", "--http adds the page");
        let c = config(&["seg-cam", "test://"]).unwrap();
        assert_eq!(
            c.http,
            Config::default().http,
            "no outputs: the default page"
        );
        let c = config(&["seg-cam", "test://", "--fb", "/dev/fb0", "display://0"]).unwrap();
        assert_eq!(
            c.fb.as_deref(),
            Some("fb:///dev/fb0"),
            "one device, two spellings"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cam.toml");
        std::fs::write(&file, "http = \"0.0.0.0:8081\"\n").unwrap();
        let c = config(&[
            "seg-cam",
            "--config",
            file.to_str().unwrap(),
            "test://",
            "file://x",
        ])
        .unwrap();
        assert_eq!(c.http, "0.0.0.0:8081", "the file's page stays");
        let msg = config(&["seg-cam", "test://", "file://a", "--out", "b"])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("--out") && msg.contains("disagree"), "{msg}");
        let msg = config(&["seg-cam", "test://", "rtp://1.2.3.4:5000"])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("rtp://"), "{msg}");
    }

    #[test]
    fn jetson_inference_flag_names_are_aliases() {
        let c = Cli::try_parse_from([
            "seg-cam",
            "test://",
            "--input-width=320",
            "--input-height=240",
            "--input-rate=15",
            "--input-loop=-1",
            "--filter-mode=linear",
        ])
        .unwrap()
        .config()
        .unwrap();
        assert_eq!((c.width, c.height, c.rate), (320, 240, 15.0));
        assert!(c.looping);
        assert_eq!(c.filter, Filter::Linear);
        let c = Cli::try_parse_from(["seg-cam", "test://", "--input-loop", "0"])
            .unwrap()
            .config()
            .unwrap();
        assert!(!c.looping);
        let c = Cli::try_parse_from(["seg-cam", "test://", "--input-loop", "-1"]).unwrap();
        assert!(c.config().unwrap().looping);
        assert!(Cli::try_parse_from(["seg-cam", "test://", "--input-loop=3"]).is_err());
    }

    #[test]
    fn every_flag_has_help_text() {
        for mut command in [Cli::command(), BenchCli::command()] {
            command.build();
            for arg in command.get_arguments() {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                assert!(
                    !help.trim().is_empty(),
                    "{} --{} has no help text",
                    command.get_name(),
                    arg.get_id()
                );
            }
        }
    }
}
