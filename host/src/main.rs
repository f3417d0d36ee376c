//! `seg-host`: parse the command line, then call one library function per subcommand.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use seg_host::export::{self, ExportOptions, Upsampler};
use seg_host::quantize::{self, QuantizeOptions};
use seg_host::synth::{self, SynthOptions};
use seg_host::train::{self, TrainConfig};
use seg_host::{eval_cmd, info, size};
use segcam::card::QuantFormat;

#[derive(Parser)]
#[command(
    name = "seg-host",
    version,
    about = "Train, evaluate and export segcam's FCN (ResNet-18 body) on a workstation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// libtorch version, CUDA availability, GPUs and threads.
    Info,
    /// Write a synthetic VOC-layout dataset (for tests, the demo, and trying things out).
    Synth(SynthArgs),
    /// Train the FCN on a VOC-layout dataset (defaults: d2l's recipe).
    Train(Box<TrainArgs>),
    /// Evaluate a checkpoint or an exported model on a dataset split: pixel accuracy, mIoU, per-class IoU.
    Eval(eval_cmd::EvalArgs),
    /// Export a checkpoint as ONNX with its model card, verified through the board's engine.
    Export(ExportArgs),
    /// Quantize an exported model to int8 (static, calibrated), refused if it loses accuracy.
    Quantize(QuantizeArgs),
}

/// Static post-training int8 quantization of an exported model, gated on accuracy.
#[derive(Args)]
struct QuantizeArgs {
    /// The f32 model written by `seg-host export`.
    #[arg(long)]
    model: PathBuf,
    /// Calibration images: a VOC-layout dataset (its --calib-split) or a folder of images.
    #[arg(long)]
    calib: PathBuf,
    #[arg(long, default_value = "train")]
    calib_split: String,
    /// How many calibration images (spread over the split).
    #[arg(long, default_value_t = 32)]
    images: usize,
    /// minmax, percentile (99.99) or percentile:P.
    #[arg(long, default_value = "minmax", value_parser = quantize::Method::parse)]
    calibration: quantize::Method,
    #[arg(long)]
    out: PathBuf,
    /// Labelled VOC-layout data for the accuracy gate (default: --calib when it has the split).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value = "val")]
    split: String,
    /// The int8 form: qdq (onnxruntime's integer kernels) or qlinear (tract's) [default: the form --engine runs fastest].
    #[arg(long, value_parser = ["qdq", "qlinear"])]
    format: Option<String>,
    /// The engine the model is made for, gated and timed in: auto (onnxruntime when its library is found), tract or onnxruntime.
    #[arg(long, default_value = "auto")]
    engine: segcam::engine::EngineChoice,
    /// The onnxruntime library [default: ORT_DYLIB_PATH, beside seg-host, the segcam venv].
    #[arg(long, value_name = "FILE")]
    onnxruntime_lib: Option<PathBuf>,
    /// qlinear weight scales: auto (per tensor where it costs little, so tract requantises in its kernel), per-channel or per-tensor.
    #[arg(long, default_value = "auto")]
    weights: quantize::WeightsChoice,
    /// Largest IoU loss of any one class, in points, before the gate refuses the model.
    #[arg(long, default_value_t = quantize::MAX_CLASS_DROP)]
    max_class_drop: f64,
    /// Write the int8 model even if it fails the accuracy gate.
    #[arg(long)]
    force: bool,
    #[arg(long)]
    skip_bad: bool,
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args)]
struct ExportArgs {
    /// A checkpoint written by `seg-host train` (`.safetensors` with its `.json`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The ONNX file to write.
    #[arg(long)]
    out: PathBuf,
    /// Input height, a multiple of 32.
    #[arg(long, default_value_t = 320)]
    height: u32,
    /// Input width, a multiple of 32.
    #[arg(long, default_value_t = 480)]
    width: u32,
    /// How the 32× upsampling is written (the same numbers either way).
    #[arg(long, value_enum, default_value = "depth-to-space")]
    upsampler: Upsampler,
    /// A VOC-layout dataset: sample images for the check, and validation figures for the card.
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value = "val")]
    split: String,
    #[arg(long)]
    skip_bad: bool,
    /// Sample images compared between the engine and tch.
    #[arg(long, default_value_t = 3)]
    samples: usize,
    /// Engine threads [default: the CPU count].
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args)]
struct SynthArgs {
    /// Output folder (created).
    #[arg(long)]
    out: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 200)]
    count: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Image size as HxW.
    #[arg(long, default_value = "240x320", value_parser = size::parse)]
    size: (u32, u32),
    /// Fraction of the images listed in val.txt.
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f64,
}

/// Flags override the `--config` file, which overrides the defaults (d2l's recipe).
#[derive(Args)]
struct TrainArgs {
    /// A TOML file with any of the settings below (snake_case names, e.g. `weight_decay = 1e-4`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Start again in an --out that holds an earlier run's checkpoints.
    #[arg(long)]
    overwrite: bool,
    /// Dataset folder in VOC layout [default: data/VOCdevkit/VOC2012].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Run folder for checkpoints, metrics and plots [default: runs/train].
    #[arg(long)]
    out: Option<PathBuf>,
    /// A labelmap.txt with the class names and colours [default: the dataset's, else VOC's].
    #[arg(long)]
    classes: Option<PathBuf>,
    /// Split list for training, in ImageSets/Segmentation [default: train].
    #[arg(long)]
    train_split: Option<String>,
    /// Split list for validation after each epoch [default: val].
    #[arg(long)]
    val_split: Option<String>,
    /// [default: 5]
    #[arg(long)]
    epochs: Option<usize>,
    /// [default: 32]
    #[arg(long)]
    batch: Option<usize>,
    /// [default: 0.001]
    #[arg(long)]
    lr: Option<f64>,
    /// [default: 0.001]
    #[arg(long)]
    weight_decay: Option<f64>,
    /// [default: 0]
    #[arg(long)]
    momentum: Option<f64>,
    /// Poly learning-rate decay (power 0.9), stepped per iteration.
    #[arg(long)]
    poly: bool,
    /// Random horizontal flips.
    #[arg(long)]
    flip: bool,
    /// Random crop as HxW, multiples of 32 [default: 320x480].
    #[arg(long, value_parser = size::parse)]
    crop: Option<(u32, u32)>,
    /// ImageNet weights for the body, .safetensors (`just fetch-weights` converts torchvision's .pth).
    #[arg(long)]
    pretrained: Option<PathBuf>,
    /// Train the head only.
    #[arg(long)]
    freeze_backbone: bool,
    /// Data-loading threads [default: CPU count, at most 8].
    #[arg(long)]
    workers: Option<usize>,
    /// Seeds the initialisation, shuffling and crops [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// auto, cpu, cuda or cuda:N [default: auto].
    #[arg(long)]
    device: Option<String>,
    /// Skip and count missing or corrupt samples instead of stopping.
    #[arg(long)]
    skip_bad: bool,
    /// Validation images in the prediction grid [default: 4].
    #[arg(long)]
    grid: Option<usize>,
    /// libtorch threads [default: libtorch's choice].
    #[arg(long)]
    threads: Option<i32>,
}

impl TrainArgs {
    fn config(&self) -> Result<TrainConfig> {
        let mut cfg = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("{}: cannot read", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("{}: not a valid training config", path.display()))?
            }
            None => TrainConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = &self.$field { cfg.$field = v.clone(); })* };
        }
        set!(
            data,
            out,
            train_split,
            val_split,
            epochs,
            batch,
            lr,
            weight_decay,
            momentum,
            workers,
            seed,
            device,
            grid
        );
        if self.classes.is_some() {
            cfg.classes = self.classes.clone();
        }
        if self.pretrained.is_some() {
            cfg.pretrained = self.pretrained.clone();
        }
        if let Some((h, w)) = self.crop {
            cfg.crop = [h, w];
        }
        cfg.poly |= self.poly;
        cfg.flip |= self.flip;
        cfg.freeze_backbone |= self.freeze_backbone;
        cfg.skip_bad |= self.skip_bad;
        Ok(cfg)
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info => {
            print!("{}", info::SystemInfo::gather());
            Ok(())
        }
        Command::Synth(a) => {
            let opts = SynthOptions {
                out: a.out,
                count: a.count,
                seed: a.seed,
                height: a.size.0,
                width: a.size.1,
                val_fraction: a.val_fraction,
            };
            let bar = train::progress(a.count as u64, "synth");
            let summary = synth::write_dataset(&opts, &|_| bar.inc(1))?;
            bar.finish_and_clear();
            println!(
                "wrote {} training and {} validation images to {}",
                summary.train,
                summary.val,
                opts.out.display()
            );
            Ok(())
        }
        Command::Train(a) => {
            if let Some(n) = a.threads {
                tch::set_num_threads(n);
            }
            let summary = train::train(a.config()?, a.resume, a.overwrite)?;
            let last = summary.history.last().context("no epoch was run")?;
            println!(
                "trained {} epochs: val pixel accuracy {:.3}, mIoU {:.3} (best {:.3}); checkpoints, metrics.csv and plots in {}",
                last.epoch,
                last.val_pixel_acc,
                last.val_miou,
                summary.best_miou,
                summary.out.display()
            );
            Ok(())
        }
        Command::Eval(a) => eval_cmd::run(&a),
        Command::Quantize(a) => {
            let mut opts = QuantizeOptions::new(a.model, a.calib, a.out);
            opts.calib_split = a.calib_split;
            opts.images = a.images;
            opts.method = a.calibration;
            opts.data = a.data;
            opts.split = a.split;
            opts.force = a.force;
            opts.skip_bad = a.skip_bad;
            opts.format = a.format.as_deref().map(|f| match f {
                "qdq" => QuantFormat::Qdq,
                _ => QuantFormat::Qlinear,
            });
            opts.engine = a.engine;
            opts.onnxruntime_lib = a.onnxruntime_lib;
            opts.weights = a.weights;
            opts.max_class_drop = a.max_class_drop;
            if let Some(n) = a.threads {
                opts.threads = n;
            }
            let r = quantize::quantize(&opts)?;
            println!(
                "wrote {} ({:.1} MB, {:.2}× smaller than f32): {} form for {}{}{}",
                r.out.display(),
                r.int8_bytes as f64 / 1e6,
                r.f32_bytes as f64 / r.int8_bytes as f64,
                r.format.name(),
                r.engine,
                if r.format == QuantFormat::Qlinear {
                    format!(
                        "; tract runs {} of {} convolutions with integer kernels, {} with per-tensor weights",
                        r.integer_convs,
                        r.integer_convs + r.float_convs,
                        r.per_tensor_weights
                    )
                } else {
                    String::new()
                },
                if r.float_layers.is_empty() {
                    String::new()
                } else {
                    format!("; kept in f32: {}", r.float_layers.join(", "))
                }
            );
            println!(
                "speed, same {}, {} threads: f32 {:.1} ms, int8 {:.1} ms per image ({:.2}× the speed)",
                r.engine,
                opts.threads,
                r.f32_ms,
                r.int8_ms,
                r.f32_ms / r.int8_ms
            );
            if let (Some(a), Some(b)) = (r.f32_validation, r.int8_validation) {
                println!(
                    "'{}' ({} images): pixel accuracy f32 {:.4} → int8 {:.4}, mIoU {:.4} → {:.4}{}",
                    opts.split,
                    b.images,
                    a.pixel_accuracy,
                    b.pixel_accuracy,
                    a.mean_iou,
                    b.mean_iou,
                    if r.forced {
                        " (gate failed; written with --force)"
                    } else {
                        ""
                    }
                );
                println!("per-class IoU, f32 → int8:");
                let iou = |v: Option<f64>| v.map_or("   -  ".to_string(), |v| format!("{v:.4}"));
                for (name, a, b) in &r.class_iou {
                    let drop = match (a, b) {
                        (Some(a), Some(b)) => format!("{:+.2}", 100.0 * (b - a)),
                        _ => String::new(),
                    };
                    println!("  {name:<14} {} → {} {drop}", iou(*a), iou(*b));
                }
            }
            Ok(())
        }
        Command::Export(a) => {
            let mut opts = ExportOptions::new(a.checkpoint, a.out);
            opts.height = a.height;
            opts.width = a.width;
            opts.upsampler = a.upsampler;
            opts.data = a.data;
            opts.split = a.split;
            opts.skip_bad = a.skip_bad;
            opts.samples = a.samples;
            if let Some(n) = a.threads {
                opts.threads = n;
            }
            let r = export::export(&opts)?;
            println!(
                "wrote {} ({:.1} MB): {} classes, input {}×{}; engine vs tch on {} images: max abs diff {:.1e}, {:.3}% of pixels the same class",
                r.out.display(),
                r.bytes as f64 / 1e6,
                r.card.classes.len(),
                r.card.input_height,
                r.card.input_width,
                r.samples,
                r.agreement.max_abs_diff,
                100.0 * r.agreement.class_agreement
            );
            if let Some(f) = r.card.export_validation {
                println!(
                    "through the engine on {} '{}' images: pixel accuracy {:.4}, mIoU {:.4}",
                    f.images, opts.split, f.pixel_accuracy, f.mean_iou
                );
            }
            Ok(())
        }
    }
}
