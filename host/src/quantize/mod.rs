//! `seg-host quantize`: an exported f32 model → static post-training int8, calibrated
//! on training images, checked on the validation split through the board's engine and
//! written (under a temporary name, then renamed) only if it kept its accuracy.

pub mod calibrate;
pub mod images;
pub mod rewrite;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use segcam::card::{Figures, Precision, Quantization};
use segcam::onnx_card::{self, pb};
use segcam::Engine;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::ops::einsum::EinSum;

use crate::dataset::{BadFiles, VocDataset};
use crate::engine_eval;
use crate::pending::Pending;
use crate::train::progress;

pub use calibrate::Method;

/// Largest pixel-accuracy loss (in points) the gate accepts.
pub const MAX_PIXEL_ACCURACY_DROP: f64 = 1.0;
/// Largest mIoU loss (in points) the gate accepts.
pub const MAX_MIOU_DROP: f64 = 2.0;

#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// An f32 model written by `seg-host export`.
    pub model: PathBuf,
    pub out: PathBuf,
    /// Calibration images: a VOC-layout dataset (its `calib_split`) or a folder of images.
    pub calib: PathBuf,
    pub calib_split: String,
    /// How many calibration images.
    pub images: usize,
    pub method: Method,
    /// The labelled VOC-layout dataset of the accuracy gate; `calib` when it is one.
    pub data: Option<PathBuf>,
    pub split: String,
    /// Write even when the gate fails (or there is no labelled data to gate on).
    pub force: bool,
    pub skip_bad: bool,
    pub threads: usize,
    /// Timed runs of each model for the speed comparison.
    pub timing_runs: usize,
}

impl QuantizeOptions {
    pub fn new(model: PathBuf, calib: PathBuf, out: PathBuf) -> Self {
        Self {
            model,
            out,
            calib,
            calib_split: "train".into(),
            images: 32,
            method: Method::Percentile(99.99),
            data: None,
            split: "val".into(),
            force: false,
            skip_bad: false,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            timing_runs: 5,
        }
    }
}

/// What was written, what it kept and what it gained.
#[derive(Debug, Clone)]
pub struct QuantizeReport {
    pub out: PathBuf,
    pub f32_bytes: usize,
    pub int8_bytes: usize,
    /// Convolutions tract runs with integer kernels, and in f32.
    pub integer_convs: usize,
    pub float_convs: usize,
    pub f32_validation: Option<Figures>,
    pub int8_validation: Option<Figures>,
    /// Median ms per image, same tract and threads.
    pub f32_ms: f64,
    pub int8_ms: f64,
    /// The gate failed and `--force` wrote the file anyway.
    pub forced: bool,
}

pub fn quantize(opts: &QuantizeOptions) -> Result<QuantizeReport> {
    if opts.images == 0 {
        bail!("--images must be at least 1");
    }
    let f32_engine = Engine::load(&opts.model, opts.threads)?;
    let f32_card = f32_engine.card().clone();
    if f32_card.precision != Precision::F32 {
        bail!(
            "{}: already {:?}; quantize an f32 model written by `seg-host export`",
            opts.model.display(),
            f32_card.precision
        );
    }
    let proto = onnx_card::decode_file(&opts.model)?;
    let (w, h) = f32_engine.input_size();
    let bad = if opts.skip_bad {
        BadFiles::Skip
    } else {
        BadFiles::Fail
    };
    // Fail on the gate's data before the long calibration.
    let gate_data = gate_dataset(opts, &f32_card.classes, h, w, bad)?;

    let graph = proto.graph.as_ref().context("the model has no graph")?;
    let convs = rewrite::plan(graph);
    let values = rewrite::calibrated_values(&convs);
    let observer = calibrate::Observer::new(
        &proto,
        &values,
        [1, 3, h as usize, w as usize],
        opts.threads,
    )?;
    let images = images::CalibrationImages::open(
        &opts.calib,
        &opts.calib_split,
        opts.images,
        &f32_card.classes,
        bad,
    )?;
    tracing::info!(
        "calibrating {} values of {} convolutions on {} images from {} ({})",
        values.len(),
        convs.len(),
        images.len(),
        opts.calib.display(),
        opts.method
    );
    let passes = if opts.method == Method::MinMax { 1 } else { 2 };
    let bar = progress((passes * images.len()) as u64, "calibrate");
    let norm = f32_card.normalization;
    let mut inputs = images.iter(w, h).map(|im| {
        im.map(|im| {
            let mut chw = vec![0.0; 3 * (w * h) as usize];
            norm.to_chw(&im, &mut chw);
            chw
        })
    });
    let params = calibrate::calibrate(&observer, &mut inputs, opts.method, &|| bar.inc(1))?;
    bar.finish_and_clear();
    drop(observer);

    let mut int8 = rewrite::rewrite(&proto, &convs, &params)?;
    let mut card = f32_card.clone();
    card.precision = Precision::Int8;
    card.export_validation = None;
    card.quantization = Some(Quantization {
        calibration: opts.method.to_string(),
        calibration_images: images.len(),
        f32_validation: None,
    });
    onnx_card::set_card(&mut int8, &card);
    let pending = Pending::beside(&opts.out)?;
    pending.write(&onnx_card::encode(&int8))?;
    let (integer_convs, float_convs) = integer_convolutions(&int8, h, w)?;
    let int8_engine = Engine::load(pending.path(), opts.threads)?;

    let mut forced = false;
    let (mut f32_validation, mut int8_validation) = (None, None);
    if let Some(ds) = &gate_data {
        let figures = |engine: &Engine| -> Result<Figures> {
            let m = engine_eval::evaluate(engine, ds, bad, 0)?.matrix;
            Ok(Figures {
                pixel_accuracy: m.pixel_accuracy(),
                mean_iou: m.mean_iou(),
                images: ds.samples.len(),
            })
        };
        let (a, b) = (figures(&f32_engine)?, figures(&int8_engine)?);
        let acc_drop = 100.0 * (a.pixel_accuracy - b.pixel_accuracy);
        let miou_drop = 100.0 * (a.mean_iou - b.mean_iou);
        if acc_drop > MAX_PIXEL_ACCURACY_DROP || miou_drop > MAX_MIOU_DROP {
            let message = format!(
                "int8 loses {acc_drop:.2} points of pixel accuracy ({:.4} → {:.4}; at most {MAX_PIXEL_ACCURACY_DROP}) and {miou_drop:.2} of mIoU ({:.4} → {:.4}; at most {MAX_MIOU_DROP}) on {} '{}' images",
                a.pixel_accuracy, b.pixel_accuracy, a.mean_iou, b.mean_iou, ds.samples.len(), opts.split
            );
            if !opts.force {
                bail!(
                    "{}: not written: {message}; try --calibration minmax or more --images, or --force to write it anyway",
                    opts.out.display()
                );
            }
            tracing::warn!("{message}; written anyway (--force)");
            forced = true;
        }
        f32_validation = Some(a);
        int8_validation = Some(b);
    } else if !opts.force {
        bail!(
            "{}: not written: the accuracy gate needs labelled images, and {} has no '{}' split; pass --data DIR (VOC layout) or --force to write without the check",
            opts.out.display(),
            opts.calib.display(),
            opts.split
        );
    }
    let (f32_ms, int8_ms) = time_both(&f32_engine, &int8_engine, opts.timing_runs)?;
    drop(int8_engine);

    card.export_validation = int8_validation;
    if let Some(q) = card.quantization.as_mut() {
        q.f32_validation = f32_validation;
    }
    onnx_card::set_card(&mut int8, &card);
    let bytes = onnx_card::encode(&int8);
    pending.write(&bytes)?;
    anyhow::ensure!(
        onnx_card::read_card(pending.path())? == card,
        "{}: the card did not read back",
        pending.path().display()
    );
    pending.persist(&opts.out)?;
    Ok(QuantizeReport {
        out: opts.out.clone(),
        f32_bytes: std::fs::metadata(&opts.model).map_or(0, |m| m.len() as usize),
        int8_bytes: bytes.len(),
        integer_convs,
        float_convs,
        f32_validation,
        int8_validation,
        f32_ms,
        int8_ms,
        forced,
    })
}

/// The labelled split the gate evaluates on, if any: `--data`, else the calibration
/// folder when it is a VOC-layout dataset with that split.
fn gate_dataset(
    opts: &QuantizeOptions,
    classes: &segcam::ClassList,
    h: u32,
    w: u32,
    bad: BadFiles,
) -> Result<Option<VocDataset>> {
    let root = match &opts.data {
        Some(root) => root.clone(),
        None if images::has_split(&opts.calib, &opts.split) => opts.calib.clone(),
        None => return Ok(None),
    };
    let mut ds = VocDataset::open(&root, &opts.split, Some(classes.clone()), bad)?;
    ds.keep_at_least(h, w, bad)?;
    if ds.samples.is_empty() {
        bail!(
            "{}: no '{}' image is at least the model's input {h}×{w} (height×width)",
            root.display(),
            opts.split
        );
    }
    Ok(Some(ds))
}

/// How many convolutions tract runs with integer kernels and how many in f32, as
/// tract itself compiles the graph.
pub fn integer_convolutions(model: &pb::ModelProto, h: u32, w: u32) -> Result<(usize, usize)> {
    let typed = tract_onnx::onnx()
        .model_for_proto_model(model)
        .and_then(|mut m| {
            m.set_input_fact(0, f32::fact([1, 3, h as usize, w as usize]).into())?;
            m.into_typed()?.into_decluttered()
        })
        .map_err(|e| anyhow::anyhow!("tract cannot read the int8 graph: {e:#}"))?;
    // tract turns 1×1 convolutions into matrix products (EinSum).
    let quantized: Vec<bool> = typed
        .nodes()
        .iter()
        .filter_map(|n| {
            n.op_as::<Conv>()
                .map(|c| c.q_params.is_some())
                .or_else(|| n.op_as::<EinSum>().map(|e| e.q_params.is_some()))
        })
        .collect();
    let integer = quantized.iter().filter(|q| **q).count();
    Ok((integer, quantized.len() - integer))
}

/// Median ms per run of each engine on the same input, runs interleaved so that both
/// see the same machine.
fn time_both(a: &Engine, b: &Engine, runs: usize) -> Result<(f64, f64)> {
    let (w, h) = a.input_size();
    let image = segcam::scene::render(0x71e, 0, w, h).image;
    let mut chw = vec![0.0; 3 * (w * h) as usize];
    a.card().normalization.to_chw(&image, &mut chw);
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    a.run(&chw)?;
    b.run(&chw)?;
    for _ in 0..runs.max(1) {
        for (engine, times) in [(a, &mut ta), (b, &mut tb)] {
            let start = Instant::now();
            engine.run(&chw)?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok((median(&mut ta), median(&mut tb)))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
