//! `seg-cam check --golden DIR`: run the golden set through this board's engine, as the
//! config sets it up, and say whether the class maps agree with the workstation's and
//! the latency is within budget; `--make` writes the set on the workstation.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use image::RgbImage;

use segcam::decode::{open_image, DecodeLimits};
use segcam::engine::Engine;
use segcam::golden::{self, Requirements};
use segcam::live::Config;

use crate::whole::write_whole;

/// Exit status when the set fails its check (1 is any other error).
pub const FAILED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "seg-cam check",
    about = "Check this board against a golden set (frames and the workstation's class maps), with no camera: agreement per frame and p90 latency",
    after_help = "Examples:\n  \
        seg-cam check --golden RELEASE_DIR --config RELEASE_DIR/seg-cam.toml --model RELEASE_DIR/model.onnx\n  \
        seg-cam check --golden RELEASE_DIR --make --model models/fcn.int8.onnx --from data/VOCdevkit/VOC2012/JPEGImages\n\n\
        The config's engine, threads, resize, golden-agreement (default 0.99) and latency-budget-ms apply.\n\
        Exit status 3 when the check fails."
)]
pub struct CheckCli {
    /// The golden set's folder (golden.json and its frames; a release folder holds one).
    #[arg(long, value_name = "DIR")]
    golden: PathBuf,
    /// Make the set instead: frames through this machine's engine, into DIR.
    #[arg(long)]
    make: bool,
    /// The settings file (seg-cam.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The model [default: the config's].
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// The engine: auto, tract or onnxruntime [default: the config's].
    #[arg(long, value_name = "ENGINE")]
    engine: Option<String>,
    /// With --make: frames from the images of this folder (e.g. the val split's), sorted
    /// by name [default: the test scene at the config's width × height].
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,
    /// With --make: how many frames.
    #[arg(long, default_value_t = 6)]
    frames: usize,
    /// Timed runs of each frame for the latency.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

pub fn main(cli: CheckCli) -> anyhow::Result<ExitCode> {
    let mut overrides = toml::Table::new();
    if let Some(model) = &cli.model {
        let Some(text) = model.to_str() else {
            bail!(
                "--model {}: not UTF-8; seg-cam's settings take UTF-8 paths (rename the file)",
                model.to_string_lossy()
            );
        };
        overrides.insert("model".into(), text.into());
    }
    if let Some(engine) = &cli.engine {
        overrides.insert("engine".into(), engine.clone().into());
    }
    let config = match &cli.config {
        Some(path) => Config::load_over(toml::Table::new(), path, overrides)?,
        None => Config::merge(None, overrides)?,
    };
    let engine = Engine::open(&config.model, &config.engine_options())?;
    if cli.make {
        return make(&cli, &config, &engine);
    }
    let required = Requirements {
        agreement: config.golden_agreement,
        budget_ms: config.latency_budget_ms,
        runs: cli.runs,
    };
    if let Some(path) = &cli.json {
        // A report written into the set could replace its index or a frame.
        if inside(path, &cli.golden) {
            bail!(
                "--json {}: inside the golden set {}; write the report elsewhere",
                path.display(),
                cli.golden.display()
            );
        }
    }
    let report = golden::check(&engine, &cli.golden, &required)?;
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(&report)? + "\n";
        write_whole(path, json.as_bytes())?;
    }
    println!("golden set {}: {}", cli.golden.display(), report.summary());
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAILED)
    })
}

/// Whether `path` is `dir` or lies in it (as far as what exists can tell).
fn inside(path: &Path, dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name();
    parent
        .canonicalize()
        .map(|p| name.map_or(p.clone(), |n| p.join(n)))
        .is_ok_and(|p| p.starts_with(&dir))
}

fn make(cli: &CheckCli, config: &Config, engine: &Engine) -> anyhow::Result<ExitCode> {
    if cli.frames == 0 || cli.frames > golden::MAX_FRAMES {
        bail!(
            "--frames {}: a golden set holds 1 to {} frames",
            cli.frames,
            golden::MAX_FRAMES
        );
    }
    if let Some(from) = &cli.from {
        // the set's own frames would be read back as inputs
        let folder = |p: &Path| p.canonicalize().ok();
        if folder(from).is_some() && folder(from) == folder(&cli.golden) {
            bail!(
                "--from {} and --golden {}: the golden set needs its own folder, apart from the images it is made of",
                from.display(),
                cli.golden.display()
            );
        }
    }
    let frames = match &cli.from {
        Some(dir) => images_in(dir, cli.frames, &config.source_options().decode)?,
        None => (0..cli.frames as u64)
            .map(|k| segcam::scene::render(1, k, config.width, config.height).image)
            .collect(),
    };
    std::fs::create_dir_all(&cli.golden)
        .with_context(|| format!("{}: cannot create", cli.golden.display()))?;
    let set = golden::make(engine, config.resize, &frames, &cli.golden)?;
    println!(
        "golden set {}: {} frames of {} through {} ({:?})",
        cli.golden.display(),
        set.frames.len(),
        set.model,
        set.engine,
        set.resize
    );
    Ok(ExitCode::SUCCESS)
}

/// The first `count` images of `dir`, by name.
fn images_in(dir: &Path, count: usize, limits: &DecodeLimits) -> anyhow::Result<Vec<RgbImage>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot read", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    paths.sort();
    paths.truncate(count);
    if paths.is_empty() {
        bail!("{}: no .jpg or .png image in it", dir.display());
    }
    paths
        .iter()
        .map(|p| Ok(open_image(p, limits)?.to_rgb8()))
        .collect()
}
