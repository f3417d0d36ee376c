//! `seg-host eval`: evaluate a checkpoint (with tch) or an exported model (with the
//! board's engine) on a dataset split and print the figures.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;
use segcam::{ClassList, Engine};
use tch::nn;

use crate::checkpoint::{self, Expect};
use crate::dataset::{BadFiles, VocDataset};
use crate::evaluate::Evaluation;
use crate::loader::LoaderConfig;
use crate::model::Fcn;
use crate::{atomic, engine_eval, evaluate, plots, train};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A checkpoint written by `seg-host train` (`.safetensors` with its `.json`).
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    pub checkpoint: Option<PathBuf>,
    /// An exported model (`.onnx` with its model card), run by the board's engine.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Dataset folder in VOC layout.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "val")]
    pub split: String,
    /// Centre crop as HxW [default: the checkpoint's training crop; a model's input size].
    #[arg(long, value_parser = crate::size::parse)]
    pub crop: Option<(u32, u32)>,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Where eval.json, confusion.png and predictions.png go.
    #[arg(long, default_value = "runs/eval")]
    pub out: PathBuf,
    #[arg(long)]
    pub skip_bad: bool,
    /// Engine threads for --model [default: the CPU count].
    #[arg(long)]
    pub threads: Option<usize>,
    /// The engine for --model: auto (the one its card names), tract or onnxruntime.
    #[arg(long, default_value = "auto")]
    pub engine: segcam::engine::EngineChoice,
    /// Where onnxruntime runs --model: cpu, cuda or tensorrt.
    #[arg(long, default_value = "cpu")]
    pub provider: segcam::engine::Provider,
    /// The onnxruntime library [default: ORT_DYLIB_PATH, beside seg-host, the segcam venv].
    #[arg(long, value_name = "FILE")]
    pub onnxruntime_lib: Option<PathBuf>,
}

pub fn run(a: &EvalArgs) -> Result<()> {
    let bad = if a.skip_bad {
        BadFiles::Skip
    } else {
        BadFiles::Fail
    };
    match (&a.checkpoint, &a.model) {
        (Some(checkpoint), None) => run_checkpoint(a, checkpoint, bad),
        (None, Some(model)) => run_model(a, model, bad),
        _ => bail!("give either --checkpoint or --model"),
    }
}

/// An exported model through the board's engine, at its input size.
fn run_model(a: &EvalArgs, model: &Path, bad: BadFiles) -> Result<()> {
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let engine = Engine::open(
        model,
        &segcam::engine::EngineOptions {
            engine: a.engine,
            threads,
            provider: a.provider,
            onnxruntime_lib: a.onnxruntime_lib.clone(),
        },
    )?;
    tracing::info!(
        "{} in {} ({threads} threads)",
        model.display(),
        engine.kind()
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
    let images = ds.samples.len();
    let eval = engine_eval::evaluate(&engine, &ds, bad, 4)?;
    report(a, ("model", model), &card.classes, images, (h, w), &eval)
}

fn run_checkpoint(a: &EvalArgs, path: &Path, bad: BadFiles) -> Result<()> {
    let info = checkpoint::read_info(path)?;
    let device = train::parse_device(&a.device)?;
    let (h, w) = a.crop.unwrap_or((info.crop[0], info.crop[1]));
    let mut ds = VocDataset::open(&a.data, &a.split, Some(info.classes.clone()), bad)?;
    ds.keep_at_least(h, w, bad)?;
    let mut vs = nn::VarStore::new(device);
    let net = Fcn::new(&vs.root(), info.classes.len() as i64);
    checkpoint::copy_into(&mut vs, &checkpoint::read_tensors(path)?, Expect::All, path)?;
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
    let images = ds.samples.len();
    let eval = evaluate::evaluate(&net, Arc::new(ds), &cfg, device, 4)?;
    report(
        a,
        ("checkpoint", path),
        &info.classes,
        images,
        (h, w),
        &eval,
    )
}

/// Print the figures; write eval.json, confusion.png and predictions.png.
fn report(
    a: &EvalArgs,
    (kind, source): (&str, &Path),
    classes: &ClassList,
    images: usize,
    (h, w): (u32, u32),
    eval: &Evaluation,
) -> Result<()> {
    let m = &eval.matrix;
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
    std::fs::create_dir_all(&a.out)?;
    let summary = serde_json::json!({
        kind: source, "data": a.data, "split": a.split, "images": images,
        "pixel_accuracy": m.pixel_accuracy(), "mean_iou": m.mean_iou(),
        "class_iou": classes.names.iter().zip(m.class_iou()).collect::<Vec<_>>(),
        "confusion": m.rows(),
    });
    atomic::write_json(&a.out.join("eval.json"), &summary)?;
    plots::confusion_png(&m.rows(), &classes.names, &a.out.join("confusion.png"))?;
    if !eval.grid.is_empty() {
        plots::prediction_grid(&eval.grid, &a.out.join("predictions.png"))?;
    }
    println!(
        "eval.json, confusion.png and predictions.png in {}",
        a.out.display()
    );
    Ok(())
}
