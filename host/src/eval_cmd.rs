//! `seg-host eval`: evaluate a checkpoint on a dataset split and print the figures.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use tch::nn;

use crate::checkpoint::{self, Expect};
use crate::dataset::{BadFiles, VocDataset};
use crate::loader::LoaderConfig;
use crate::model::Fcn;
use crate::{evaluate, plots, train};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A checkpoint written by `seg-host train` (`.safetensors` with its `.json`).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Dataset folder in VOC layout.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "val")]
    pub split: String,
    /// Centre crop as HxW [default: the checkpoint's training crop].
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
}

pub fn run(a: &EvalArgs) -> Result<()> {
    let info = checkpoint::read_info(&a.checkpoint)?;
    let device = train::parse_device(&a.device)?;
    let bad = if a.skip_bad {
        BadFiles::Skip
    } else {
        BadFiles::Fail
    };
    let (h, w) = a.crop.unwrap_or((info.crop[0], info.crop[1]));
    let mut ds = VocDataset::open(&a.data, &a.split, Some(info.classes.clone()), bad)?;
    ds.keep_at_least(h, w, bad)?;
    let mut vs = nn::VarStore::new(device);
    let net = Fcn::new(&vs.root(), info.classes.len() as i64);
    checkpoint::copy_into(
        &mut vs,
        &checkpoint::read_tensors(&a.checkpoint)?,
        Expect::All,
        &a.checkpoint,
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
    let images = ds.samples.len();
    let eval = evaluate::evaluate(&net, Arc::new(ds), &cfg, device, 4)?;
    let m = &eval.matrix;
    println!(
        "{images} images ({h}×{w} centre crops) of {}/{}",
        a.data.display(),
        a.split
    );
    println!("pixel accuracy {:.4}", m.pixel_accuracy());
    println!("mean IoU       {:.4}", m.mean_iou());
    println!("{:<16} {:>8}", "class", "IoU");
    for (name, iou) in info.classes.names.iter().zip(m.class_iou()) {
        let iou = iou.map_or("-".to_string(), |v| format!("{v:.4}"));
        println!("{name:<16} {iou:>8}");
    }
    std::fs::create_dir_all(&a.out)?;
    let summary = serde_json::json!({
        "checkpoint": a.checkpoint, "data": a.data, "split": a.split, "images": images,
        "pixel_accuracy": m.pixel_accuracy(), "mean_iou": m.mean_iou(),
        "class_iou": info.classes.names.iter().zip(m.class_iou()).collect::<Vec<_>>(),
        "confusion": m.rows(),
    });
    checkpoint::write_json_atomic(&a.out.join("eval.json"), &summary)?;
    plots::confusion_png(&m.rows(), &info.classes.names, &a.out.join("confusion.png"))?;
    if !eval.grid.is_empty() {
        plots::prediction_grid(&eval.grid, &a.out.join("predictions.png"))?;
    }
    println!(
        "eval.json, confusion.png and predictions.png in {}",
        a.out.display()
    );
    Ok(())
}
