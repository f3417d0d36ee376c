//! `seg-host eval`: evaluate a checkpoint (with tch) or an exported model (with the
//! board's engine) on a dataset split, print the figures and write them to a folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use segcam::engine::{EngineChoice, EngineOptions, Provider};
use segcam::{ClassList, Engine};
use tch::nn;

use super::{engine, network, Evaluation};
use crate::checkpoint::{self, Expect};
use crate::dataset::{BadFiles, VocDataset};
use crate::loader::LoaderConfig;
use crate::model::Fcn;
use crate::{atomic, plots, torch_device};

/// What is evaluated.
#[derive(Debug, Clone)]
pub enum EvalSource {
    /// A checkpoint written by `seg-host train`, run in tch.
    Checkpoint(PathBuf),
    /// An exported model (`.onnx` with its card), run by the board's engine.
    Model(PathBuf),
}

/// Every setting of `seg-host eval`.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub source: EvalSource,
    /// The dataset folder (VOC layout).
    pub data: PathBuf,
    pub split: String,
    /// Centre crop (height, width); `None`: a checkpoint's training crop, a model's input.
    pub crop: Option<(u32, u32)>,
    /// Batch size of a checkpoint's evaluation.
    pub batch: usize,
    /// The torch device of a checkpoint's evaluation: auto, cpu, cuda or cuda:N.
    pub device: String,
    /// Where eval.json, confusion.png and predictions.png go.
    pub out: PathBuf,
    pub skip_bad: bool,
    /// The engine, its threads, provider and library for a model.
    pub engine: EngineOptions,
}

impl EvalOptions {
    pub fn new(source: EvalSource, data: PathBuf) -> Self {
        Self {
            source,
            data,
            split: "val".into(),
            crop: None,
            batch: 8,
            device: "auto".into(),
            out: PathBuf::from("runs/eval"),
            skip_bad: false,
            engine: EngineOptions {
                engine: EngineChoice::Auto,
                threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
                provider: Provider::Cpu,
                onnxruntime_lib: None,
            },
        }
    }
}

/// Evaluate as `a` says: print the figures, write them to `a.out`.
pub fn run(a: &EvalOptions) -> Result<()> {
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    // Before the work, so that an --out that cannot be a folder costs nothing.
    if a.out.exists() && !a.out.is_dir() {
        bail!(
            "{}: not a folder; --out names the folder for eval.json and the plots",
            a.out.display()
        );
    }
    let bad = BadFiles::skip_if(a.skip_bad);
    match &a.source {
        EvalSource::Checkpoint(checkpoint) => run_checkpoint(a, checkpoint, bad),
        EvalSource::Model(model) => run_model(a, model, bad),
    }
}

/// An exported model through the board's engine, at its input size.
fn run_model(a: &EvalOptions, model: &Path, bad: BadFiles) -> Result<()> {
    let engine = Engine::open(model, &a.engine)?;
    tracing::info!(
        "{} in {} ({} threads)",
        model.display(),
        engine.kind(),
        a.engine.threads
    );
    let card = engine.card();
    let (h, w) = (card.input_height, card.input_width);
    if let Some(crop) = a.crop.filter(|&c| c != (h, w)) {
        bail!(
            "{}: the model takes {h}×{w} inputs, --crop asks for {}×{}",
            model.display(),
            crop.0,
            crop.1
        );
    }
    let mut ds = VocDataset::open(&a.data, &a.split, Some(card.classes.clone()), bad)?;
    ds.keep_at_least(h, w, bad)?;
    let eval = engine::evaluate(&engine, &ds, bad, 4)?;
    report(a, ("model", model), &card.classes, (h, w), &eval)
}

fn run_checkpoint(a: &EvalOptions, path: &Path, bad: BadFiles) -> Result<()> {
    let info = checkpoint::read_info(path)?;
    let device = torch_device::parse(&a.device)?;
    let (h, w) = a.crop.unwrap_or((info.crop[0], info.crop[1]));
    crate::model::check_size(h, w).context("--crop")?;
    let mut ds = VocDataset::open(&a.data, &a.split, Some(info.classes.clone()), bad)?;
    ds.keep_at_least(h, w, bad)?;
    let mut vs = nn::VarStore::new(device);
    let net = Fcn::new(&vs.root(), info.classes.len() as i64);
    checkpoint::copy_into(
        &mut vs,
        &checkpoint::read_weights(path, &info)?,
        Expect::All,
        path,
    )?;
    let cfg = LoaderConfig {
        batch: a.batch,
        crop: (h, w),
        random: false,
        flip: false,
        drop_last: false,
        workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        prefetch: 4,
        seed: 0,
        bad,
        norm: info.normalization,
    };
    let eval = network::evaluate(&net, Arc::new(ds), &cfg, device, 4)?;
    report(a, ("checkpoint", path), &info.classes, (h, w), &eval)
}

/// Print the figures; write eval.json, confusion.png and predictions.png.
fn report(
    a: &EvalOptions,
    (kind, source): (&str, &Path),
    classes: &ClassList,
    (h, w): (u32, u32),
    eval: &Evaluation,
) -> Result<()> {
    let (m, images) = (&eval.matrix, eval.images);
    println!(
        "{images} images ({h}×{w} centre crops) of {}/{}",
        a.data.display(),
        a.split
    );
    println!("pixel accuracy {:.4}", m.pixel_accuracy());
    println!("mean IoU       {:.4}", m.mean_iou());
    println!("{:<16} {:>8}", "class", "IoU");
    for (name, iou) in classes.names.iter().zip(m.class_iou()) {
        let iou = iou.map_or("-".to_string(), |v| format!("{v:.4}"));
        println!("{name:<16} {iou:>8}");
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("{}: cannot create the output folder", a.out.display()))?;
    let summary = serde_json::json!({
        kind: source, "data": a.data, "split": a.split, "images": images,
        "pixel_accuracy": m.pixel_accuracy(), "mean_iou": m.mean_iou(),
        "class_iou": classes.names.iter().zip(m.class_iou()).collect::<Vec<_>>(),
        "confusion": m.rows(),
    });
    atomic::write_json(&a.out.join("eval.json"), &summary)?;
    plots::confusion_png(&m.rows(), &classes.names, &a.out.join("confusion.png"))?;
    let written = if eval.grid.is_empty() {
        "eval.json and confusion.png"
    } else {
        plots::prediction_grid(&eval.grid, &a.out.join("predictions.png"))?;
        "eval.json, confusion.png and predictions.png"
    };
    println!("{written} in {}", a.out.display());
    Ok(())
}
