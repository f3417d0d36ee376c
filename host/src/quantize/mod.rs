//! `seg-host quantize`: an exported f32 model → static post-training int8, calibrated
//! on training images, checked on the validation split through the engine it is made
//! for, and written (under a temporary name, then renamed) only if it kept its
//! accuracy, overall and for every class.
//!
//! Two int8 forms, one per engine (`--format`, default from `--engine`): `qdq`
//! (QuantizeLinear/DequantizeLinear around Conv, Add and MaxPool, uint8 activations,
//! int8 per-channel weights: onnxruntime's integer kernels) and `qlinear` (QLinearConv:
//! tract's integer kernels, per-tensor weights where they cost no accuracy, so that tract
//! requantises inside its matrix kernel).

pub mod calibrate;
pub mod images;
pub mod qdq;
pub mod rewrite;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use segcam::card::{EngineKind, Figures, Precision, QuantFormat, Quantization};
use segcam::engine::{EngineChoice, EngineOptions, Provider};
use segcam::onnx_card::{self, pb};
use segcam::{ConfusionMatrix, Engine};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::ops::einsum::EinSum;

use crate::atomic::{self, Pending};
use crate::dataset::{BadFiles, VocDataset};
use crate::eval;
use crate::progress;

pub use calibrate::Method;
pub use rewrite::{QParams, WeightScale};

/// Largest pixel-accuracy loss (in points) the gate accepts.
pub const MAX_PIXEL_ACCURACY_DROP: f64 = 1.0;
/// Largest mIoU loss (in points) the gate accepts.
pub const MAX_MIOU_DROP: f64 = 2.0;
/// Largest IoU loss (in points) of any one class the gate accepts by default.
pub const MAX_CLASS_DROP: f64 = 5.0;
/// Relative RMS error of a layer's per-tensor int8 weights above which `--weights
/// auto` keeps that layer per channel.
pub const PER_TENSOR_MAX_ERROR: f64 = 0.03;
/// How many of the last convolutions the gate may leave in f32 before giving up.
const MAX_FLOAT_FALLBACK: usize = 2;

/// How `qlinear` weights are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightsChoice {
    /// Per tensor where its error stays under [`PER_TENSOR_MAX_ERROR`], else per channel.
    Auto,
    PerChannel,
    PerTensor,
}

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
    /// The int8 form; `None`: the one `engine` runs fastest.
    pub format: Option<QuantFormat>,
    /// The engine the model is made for (auto: onnxruntime when its library is found).
    pub engine: EngineChoice,
    pub onnxruntime_lib: Option<PathBuf>,
    /// `qlinear` weight scales.
    pub weights: WeightsChoice,
    /// Largest IoU loss of one class, in points.
    pub max_class_drop: f64,
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
            // Measured on the demo model, both forms: minmax keeps 0.2 points more mIoU
            // than percentile:99.99 (and is what onnxruntime's quantize_static does).
            method: Method::MinMax,
            format: None,
            engine: EngineChoice::Auto,
            onnxruntime_lib: None,
            weights: WeightsChoice::Auto,
            max_class_drop: MAX_CLASS_DROP,
            data: None,
            split: "val".into(),
            force: false,
            skip_bad: false,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            timing_runs: 5,
        }
    }

    fn engine_options(&self, engine: EngineKind) -> EngineOptions {
        EngineOptions {
            engine: match engine {
                EngineKind::Tract => EngineChoice::Tract,
                EngineKind::Onnxruntime => EngineChoice::Onnxruntime,
            },
            threads: self.threads,
            provider: Provider::Cpu,
            onnxruntime_lib: self.onnxruntime_lib.clone(),
        }
    }
}

/// What was written, what it kept and what it gained.
#[derive(Debug, Clone)]
pub struct QuantizeReport {
    pub out: PathBuf,
    pub format: QuantFormat,
    /// The engine the gate and the timing ran in (the one the model is made for).
    pub engine: EngineKind,
    pub f32_bytes: usize,
    pub int8_bytes: usize,
    /// Convolutions tract runs with integer kernels, and in f32 (qlinear).
    pub integer_convs: usize,
    pub float_convs: usize,
    /// Convolutions with per-tensor weight scales.
    pub per_tensor_weights: usize,
    /// Convolutions the gate left in f32.
    pub float_layers: Vec<String>,
    pub f32_validation: Option<Figures>,
    pub int8_validation: Option<Figures>,
    /// Per-class IoU (class name, f32, int8) on the gate's split.
    pub class_iou: Vec<(String, Option<f64>, Option<f64>)>,
    /// Median ms per image, same engine and threads.
    pub f32_ms: f64,
    pub int8_ms: f64,
    /// The gate failed and `--force` wrote the file anyway.
    pub forced: bool,
}

/// The engine and format a quantisation is made for.
fn target(opts: &QuantizeOptions) -> Result<(EngineKind, QuantFormat)> {
    let probe = opts.engine_options(EngineKind::Onnxruntime);
    let ort = segcam::engine::backend_version(EngineKind::Onnxruntime, &probe);
    let engine = match (opts.engine, opts.format) {
        (EngineChoice::Tract, _) => EngineKind::Tract,
        (EngineChoice::Onnxruntime, _) => {
            ort.map_err(anyhow::Error::msg)?;
            EngineKind::Onnxruntime
        }
        (EngineChoice::Auto, Some(format)) => format.engine(),
        (EngineChoice::Auto, None) => match ort {
            Ok(_) => EngineKind::Onnxruntime,
            Err(why) => {
                tracing::warn!("{why}: quantizing for tract");
                EngineKind::Tract
            }
        },
    };
    Ok((
        engine,
        opts.format.unwrap_or(QuantFormat::for_engine(engine)),
    ))
}

pub fn quantize(opts: &QuantizeOptions) -> Result<QuantizeReport> {
    if opts.images == 0 {
        bail!("--images must be at least 1");
    }
    atomic::check_output(&opts.out, &[&opts.model])?;
    let (engine_kind, format) = target(opts)?;
    if format.engine() != engine_kind {
        tracing::warn!(
            "the {} form runs fastest in {}, not {engine_kind}: expect it to be slow there",
            format.name(),
            format.engine()
        );
    }
    let engine_options = opts.engine_options(engine_kind);
    let f32_engine = Engine::open(&opts.model, &engine_options)?;
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
    let bad = BadFiles::skip_if(opts.skip_bad);
    // Fail on the gate's data before the long calibration.
    let gate_data = gate_dataset(opts, &f32_card.classes, h, w, bad)?;
    let graph = proto.graph.as_ref().context("the model has no graph")?;

    // Calibrate every value either form may need, once.
    let mut values = rewrite::calibrated_values(&rewrite::plan(graph, &HashSet::new()));
    for v in qdq::plan(graph, &HashSet::new()).calibrated {
        if !values.contains(&v) {
            values.push(v);
        }
    }
    let (params, calibration_images) =
        calibrate_values(opts, &proto, &values, &f32_card, w, h, bad)?;
    let weights = weight_scales(graph, format, opts.weights)?;
    let per_tensor_weights = weights
        .values()
        .filter(|&&m| m == WeightScale::PerTensor)
        .count();
    let scale_of = |name: &str| {
        weights
            .get(name)
            .copied()
            .unwrap_or(WeightScale::PerChannel)
    };

    let f32_eval = gate_data
        .as_ref()
        .map(|ds| evaluate(&f32_engine, ds, bad))
        .transpose()?;
    let convs: Vec<String> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Conv")
        .map(|n| n.name.clone())
        .collect();
    atomic::create_parent(&opts.out)?;
    atomic::remove_stale_beside(&opts.out);
    let pending = Pending::beside(&opts.out)?;
    let mut keep_f32 = HashSet::new();
    let mut card = f32_card.clone();
    card.precision = Precision::Int8;
    card.export_validation = None;
    card.engine = Some(format.engine());
    let (int8, int8_engine, int8_eval, forced) = loop {
        let int8 = match format {
            QuantFormat::Qlinear => {
                let plan = rewrite::plan(graph, &keep_f32);
                rewrite::rewrite(&proto, &plan, &params, &scale_of)?
            }
            QuantFormat::Qdq => {
                let plan = qdq::plan(graph, &keep_f32);
                qdq::rewrite(&proto, &plan, &params, &scale_of)?
            }
        };
        let mut int8 = int8;
        card.quantization = Some(Quantization {
            calibration: opts.method.to_string(),
            calibration_images,
            f32_validation: None,
            format,
            per_tensor_weights,
            float_layers: convs
                .iter()
                .filter(|c| keep_f32.contains(*c))
                .cloned()
                .collect(),
        });
        onnx_card::set_card(&mut int8, &card);
        pending.write(&onnx_card::encode(&int8))?;
        let int8_engine = Engine::open(pending.path(), &engine_options)?;
        let (Some(ds), Some((a, _))) = (&gate_data, &f32_eval) else {
            if !opts.force {
                bail!(
                    "{}: not written: the accuracy gate needs labelled images, and {} has no '{}' split; pass --data DIR (VOC layout) or --force to write without the check",
                    opts.out.display(),
                    opts.calib.display(),
                    opts.split
                );
            }
            break (int8, int8_engine, None, false);
        };
        let b = evaluate(&int8_engine, ds, bad)?;
        let Some(message) = gate(a, &b.0, opts.max_class_drop, &f32_card.classes.names) else {
            break (int8, int8_engine, Some(b), false);
        };
        // Leave the last convolutions (the head and the upsampler, where int8 steps
        // show as flipped classes) in f32, one more each time; --force writes what was
        // asked for as it is.
        if !opts.force && keep_f32.len() < MAX_FLOAT_FALLBACK && keep_f32.len() < convs.len() {
            let next = convs[convs.len() - 1 - keep_f32.len()].clone();
            tracing::warn!("{message}; trying again with '{next}' in f32");
            keep_f32.insert(next);
            continue;
        }
        let message = format!("{message} on {} '{}' images", b.1, opts.split);
        if !opts.force {
            bail!(
                "{}: not written: {message}; try --calibration minmax, more --images or a higher --max-class-drop, or --force to write it anyway",
                opts.out.display()
            );
        }
        tracing::warn!("{message}; written anyway (--force)");
        break (int8, int8_engine, Some(b), true);
    };
    let mut int8 = int8;
    let (integer_convs, float_convs) = integer_convolutions(&int8, h, w).unwrap_or((0, 0));
    let (f32_ms, int8_ms) = time_both(&f32_engine, &int8_engine, opts.timing_runs)?;
    drop(int8_engine);

    let figures = |(e, images): &(ConfusionMatrix, usize)| Figures {
        pixel_accuracy: e.pixel_accuracy(),
        mean_iou: e.mean_iou(),
        images: *images,
    };
    let f32_validation = f32_eval.as_ref().map(figures);
    let int8_validation = int8_eval.as_ref().map(figures);
    let class_iou = match (&f32_eval, &int8_eval) {
        (Some((a, _)), Some((b, _))) => f32_card
            .classes
            .names
            .iter()
            .zip(a.class_iou().into_iter().zip(b.class_iou()))
            .map(|(n, (x, y))| (n.clone(), x, y))
            .collect(),
        _ => Vec::new(),
    };
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
    pending.persist()?;
    let float_layers = card
        .quantization
        .as_ref()
        .map(|q| q.float_layers.clone())
        .unwrap_or_default();
    Ok(QuantizeReport {
        out: opts.out.clone(),
        format,
        engine: engine_kind,
        f32_bytes: std::fs::metadata(&opts.model).map_or(0, |m| m.len() as usize),
        int8_bytes: bytes.len(),
        integer_convs,
        float_convs,
        per_tensor_weights,
        float_layers,
        f32_validation,
        int8_validation,
        class_iou,
        f32_ms,
        int8_ms,
        forced,
    })
}

/// The confusion matrix of `engine` on the gate's split.
fn evaluate(engine: &Engine, ds: &VocDataset, bad: BadFiles) -> Result<(ConfusionMatrix, usize)> {
    let eval = eval::engine::evaluate(engine, ds, bad, 0)?;
    Ok((eval.matrix, eval.images))
}

/// Why int8 (`b`) fails against f32 (`a`), or `None` if it passes: pixel accuracy,
/// mIoU, and each class's IoU.
pub fn gate(
    a: &ConfusionMatrix,
    b: &ConfusionMatrix,
    max_class_drop: f64,
    names: &[String],
) -> Option<String> {
    let mut failures = Vec::new();
    let acc_drop = 100.0 * (a.pixel_accuracy() - b.pixel_accuracy());
    if acc_drop > MAX_PIXEL_ACCURACY_DROP {
        failures.push(format!(
            "pixel accuracy drops {acc_drop:.2} points ({:.4} → {:.4}; at most {MAX_PIXEL_ACCURACY_DROP})",
            a.pixel_accuracy(),
            b.pixel_accuracy()
        ));
    }
    let miou_drop = 100.0 * (a.mean_iou() - b.mean_iou());
    if miou_drop > MAX_MIOU_DROP {
        failures.push(format!(
            "mIoU drops {miou_drop:.2} points ({:.4} → {:.4}; at most {MAX_MIOU_DROP})",
            a.mean_iou(),
            b.mean_iou()
        ));
    }
    for (i, (x, y)) in a.class_iou().into_iter().zip(b.class_iou()).enumerate() {
        let name = names.get(i).map_or("?", String::as_str);
        match (x, y) {
            (Some(x), Some(y)) if 100.0 * (x - y) > max_class_drop => failures.push(format!(
                "class '{name}' IoU drops {:.2} points ({x:.4} → {y:.4}; at most {max_class_drop})",
                100.0 * (x - y)
            )),
            (Some(x), None) if x > 0.0 => failures.push(format!(
                "class '{name}' disappears (IoU {x:.4} → never predicted nor present)"
            )),
            _ => {}
        }
    }
    (!failures.is_empty()).then(|| format!("int8 {}", failures.join(", ")))
}

/// Run the f32 model on the calibration images and derive every value's parameters.
fn calibrate_values(
    opts: &QuantizeOptions,
    proto: &pb::ModelProto,
    values: &[String],
    card: &segcam::ModelCard,
    w: u32,
    h: u32,
    bad: BadFiles,
) -> Result<(HashMap<String, QParams>, usize)> {
    let observer =
        calibrate::Observer::new(proto, values, [1, 3, h as usize, w as usize], opts.threads)?;
    let images = images::CalibrationImages::open(
        &opts.calib,
        &opts.calib_split,
        opts.images,
        &card.classes,
        bad,
    )?;
    tracing::info!(
        "calibrating {} values on {} images from {} ({})",
        values.len(),
        images.len(),
        opts.calib.display(),
        opts.method
    );
    let passes = if opts.method == Method::MinMax { 1 } else { 2 };
    let bar = progress::bar((passes * images.len()) as u64, "calibrate");
    let norm = card.normalization;
    let mut inputs = images.iter(w, h).map(|im| {
        im.map(|im| {
            let mut chw = vec![0.0; 3 * (w * h) as usize];
            norm.to_chw(&im, &mut chw);
            chw
        })
    });
    let params = calibrate::calibrate(&observer, &mut inputs, opts.method, &|| bar.inc(1))?;
    bar.finish_and_clear();
    Ok((params, images.len()))
}

/// Each convolution's weight scaling: per channel for `qdq` (onnxruntime's kernels take
/// it at no cost); for `qlinear` as `choice` says, `auto` choosing per tensor where its
/// error stays small.
fn weight_scales(
    graph: &pb::GraphProto,
    format: QuantFormat,
    choice: WeightsChoice,
) -> Result<HashMap<String, WeightScale>> {
    let initialisers: HashMap<&str, &pb::TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut out = HashMap::new();
    for node in graph.node.iter().filter(|n| n.op_type == "Conv") {
        let mode = match (format, choice) {
            (QuantFormat::Qdq, _) | (_, WeightsChoice::PerChannel) => WeightScale::PerChannel,
            (_, WeightsChoice::PerTensor) => WeightScale::PerTensor,
            (_, WeightsChoice::Auto) => {
                let Some(t) = node.input.get(1).and_then(|n| initialisers.get(n.as_str())) else {
                    continue;
                };
                let w = rewrite::f32_values(t)?;
                let channels = t.dims.first().copied().unwrap_or(1).max(1) as usize;
                if rewrite::weight_error(&w, channels, WeightScale::PerTensor)
                    <= PER_TENSOR_MAX_ERROR
                {
                    WeightScale::PerTensor
                } else {
                    WeightScale::PerChannel
                }
            }
        };
        out.insert(node.name.clone(), mode);
    }
    Ok(out)
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
