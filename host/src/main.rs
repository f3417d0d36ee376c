//! `seg-host`: parse the command line, then call one library function per subcommand.
//! Every default shown by `--help` is read from the library's own defaults
//! (`TrainConfig::default()`, `ExportOptions::new`, …), so the two cannot drift.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use seg_host::atomic;
use seg_host::eval::{EvalOptions, EvalSource};
use seg_host::export::{self, ExportOptions, Upsampler};
use seg_host::quantize::{self, QuantizeOptions};
use seg_host::synth::{self, SynthOptions};
use seg_host::train::{self, TrainConfig};
use seg_host::{eval, info, progress, size};
use segcam::card::QuantFormat;
use segcam::engine::{EngineChoice, EngineOptions, Provider};

#[derive(Parser)]
#[command(
    name = "seg-host",
    version,
    about = "Train, evaluate, export and quantize segcam's FCN (ResNet-18 body) on a workstation",
    after_help = "Examples:\n  \
        seg-host synth --out data/synth\n  \
        seg-host train --data data/VOCdevkit/VOC2012 --pretrained models/resnet18.safetensors --out runs/voc\n  \
        seg-host export --checkpoint runs/voc/best.safetensors --data data/VOCdevkit/VOC2012 --out models/fcn.onnx\n  \
        seg-host quantize --model models/fcn.onnx --calib data/VOCdevkit/VOC2012 --out models/fcn.int8.onnx\n  \
        seg-host eval --model models/fcn.int8.onnx --data data/VOCdevkit/VOC2012"
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
    Eval(EvalArgs),
    /// Export a checkpoint as ONNX with its model card, verified through the board's engine.
    Export(ExportArgs),
    /// Quantize an exported model to int8 (static, calibrated), refused if it loses accuracy.
    Quantize(QuantizeArgs),
}

fn synth_defaults() -> SynthOptions {
    SynthOptions::new(PathBuf::new())
}

fn eval_defaults() -> EvalOptions {
    EvalOptions::new(EvalSource::Model(PathBuf::new()), PathBuf::new())
}

fn export_defaults() -> ExportOptions {
    ExportOptions::new(PathBuf::new(), PathBuf::new())
}

fn quantize_defaults() -> QuantizeOptions {
    QuantizeOptions::new(PathBuf::new(), PathBuf::new(), PathBuf::new())
}

#[derive(Args)]
#[command(after_help = "Example:\n  seg-host synth --out data/synth --count 400 --size 320x480")]
struct SynthArgs {
    /// Output folder (created).
    #[arg(long)]
    out: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = synth_defaults().count)]
    count: usize,
    /// Seeds the scenes: the same seed writes the same files.
    #[arg(long, default_value_t = synth_defaults().seed)]
    seed: u64,
    /// Image size as HEIGHTxWIDTH.
    #[arg(long, value_name = "HxW", value_parser = size::parse,
          default_value = size::show((synth_defaults().height, synth_defaults().width)))]
    size: (u32, u32),
    /// Fraction of the images listed in val.txt.
    #[arg(long, default_value_t = synth_defaults().val_fraction)]
    val_fraction: f64,
}

/// Flags override the `--config` file, which overrides the defaults (d2l's recipe).
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    seg-host train --data data/VOCdevkit/VOC2012 --pretrained models/resnet18.safetensors --out runs/voc\n  \
    seg-host train --config runs/voc.toml --epochs 20 --resume --out runs/voc\n  \
    seg-host train --config runs/voc.toml --flip=false   (a flag turns off a setting of the file)")]
struct TrainArgs {
    /// A TOML file with any of the settings below (snake_case names, e.g. `weight_decay = 1e-4`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Start again in an --out that holds an earlier run's checkpoints.
    #[arg(long)]
    overwrite: bool,
    /// Dataset folder in VOC layout.
    #[arg(long, value_name = "DIR", default_value_os_t = TrainConfig::default().data)]
    data: PathBuf,
    /// Run folder for checkpoints, metrics and plots.
    #[arg(long, value_name = "DIR", default_value_os_t = TrainConfig::default().out)]
    out: PathBuf,
    /// A labelmap.txt with the class names and colours [default: the dataset's, else VOC's].
    #[arg(long, value_name = "FILE")]
    classes: Option<PathBuf>,
    /// Split list for training, in ImageSets/Segmentation.
    #[arg(long, default_value_t = TrainConfig::default().train_split)]
    train_split: String,
    /// Split list for validation after each epoch.
    #[arg(long, default_value_t = TrainConfig::default().val_split)]
    val_split: String,
    /// Passes over the training split.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    epochs: usize,
    /// Images per optimiser step.
    #[arg(long, default_value_t = TrainConfig::default().batch)]
    batch: usize,
    /// SGD learning rate (d2l's, for a loss summed over the batch).
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    lr: f64,
    /// SGD weight decay.
    #[arg(long, default_value_t = TrainConfig::default().weight_decay)]
    weight_decay: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = TrainConfig::default().momentum)]
    momentum: f64,
    /// Poly learning-rate decay (power 0.9), stepped per iteration.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          action = ArgAction::Set, default_value_t = TrainConfig::default().poly)]
    poly: bool,
    /// Random horizontal flips.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          action = ArgAction::Set, default_value_t = TrainConfig::default().flip)]
    flip: bool,
    /// Random crop as HEIGHTxWIDTH, multiples of 32.
    #[arg(long, value_name = "HxW", value_parser = size::parse,
          default_value = size::show((TrainConfig::default().crop[0], TrainConfig::default().crop[1])))]
    crop: (u32, u32),
    /// ImageNet weights for the body, .safetensors (`just fetch-weights` converts torchvision's .pth).
    #[arg(long, value_name = "FILE")]
    pretrained: Option<PathBuf>,
    /// Train the head only.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          action = ArgAction::Set, default_value_t = TrainConfig::default().freeze_backbone)]
    freeze_backbone: bool,
    /// Data-loading threads (the CPU count, at most 8).
    #[arg(long, default_value_t = TrainConfig::default().workers)]
    workers: usize,
    /// Seeds the initialisation, shuffling and crops.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    /// Where tch trains: auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value_t = TrainConfig::default().device)]
    device: String,
    /// Skip and count missing or corrupt samples instead of stopping.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          action = ArgAction::Set, default_value_t = TrainConfig::default().skip_bad)]
    skip_bad: bool,
    /// Validation images in the prediction grid.
    #[arg(long, default_value_t = TrainConfig::default().grid)]
    grid: usize,
    /// libtorch threads [default: libtorch's choice].
    #[arg(long, value_name = "N")]
    threads: Option<i32>,
}

impl TrainArgs {
    /// The defaults, overlaid by the `--config` file, overlaid by the flags given on
    /// the command line (`given` tells those from defaults).
    fn config(&self, given: &ArgMatches) -> Result<TrainConfig> {
        let mut cfg = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("{}: cannot read", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("{}: not a valid training config", path.display()))?
            }
            None => TrainConfig::default(),
        };
        let on_command_line = |id: &str| given.value_source(id) == Some(ValueSource::CommandLine);
        macro_rules! set {
            ($($field:ident),*) => {
                $(if on_command_line(stringify!($field)) { cfg.$field = self.$field.clone(); })*
            };
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
            poly,
            flip,
            freeze_backbone,
            workers,
            seed,
            device,
            skip_bad,
            grid
        );
        if self.classes.is_some() {
            cfg.classes = self.classes.clone();
        }
        if self.pretrained.is_some() {
            cfg.pretrained = self.pretrained.clone();
        }
        if on_command_line("crop") {
            cfg.crop = [self.crop.0, self.crop.1];
        }
        Ok(cfg)
    }
}

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    seg-host eval --checkpoint runs/voc/best.safetensors --data data/VOCdevkit/VOC2012\n  \
    seg-host eval --model models/fcn.int8.onnx --data data/VOCdevkit/VOC2012 --engine onnxruntime")]
struct EvalArgs {
    /// A checkpoint written by `seg-host train` (`.safetensors` with its `.json`), run in tch.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "model",
        conflicts_with = "model"
    )]
    checkpoint: Option<PathBuf>,
    /// An exported model (`.onnx` with its model card), run by the board's engine.
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// Dataset folder in VOC layout.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// The split list to evaluate, in ImageSets/Segmentation.
    #[arg(long, default_value_t = eval_defaults().split)]
    split: String,
    /// Centre crop as HEIGHTxWIDTH [default: the checkpoint's training crop; a model's input size].
    #[arg(long, value_name = "HxW", value_parser = size::parse)]
    crop: Option<(u32, u32)>,
    /// Images per batch for --checkpoint.
    #[arg(long, default_value_t = eval_defaults().batch)]
    batch: usize,
    /// Where tch runs --checkpoint: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value_t = eval_defaults().device)]
    device: String,
    /// Where eval.json, confusion.png and predictions.png go.
    #[arg(long, value_name = "DIR", default_value_os_t = eval_defaults().out)]
    out: PathBuf,
    /// Skip and count missing or corrupt samples instead of stopping.
    #[arg(long)]
    skip_bad: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

/// How `eval --model` runs the model.
#[derive(Args)]
struct EngineArgs {
    /// Engine threads (the CPU count).
    #[arg(long, value_name = "N", default_value_t = eval_defaults().engine.threads)]
    threads: usize,
    /// The engine for --model: auto (the one its card names), tract or onnxruntime.
    #[arg(long, default_value_t = eval_defaults().engine.engine)]
    engine: EngineChoice,
    /// Where onnxruntime runs --model.
    #[arg(long, default_value_t = eval_defaults().engine.provider)]
    provider: Provider,
    /// The onnxruntime library [default: ORT_DYLIB_PATH, beside seg-host, the segcam venv].
    #[arg(long, value_name = "FILE")]
    onnxruntime_lib: Option<PathBuf>,
}

impl EvalArgs {
    fn options(self) -> EvalOptions {
        let source = match (self.checkpoint, self.model) {
            (Some(checkpoint), _) => EvalSource::Checkpoint(checkpoint),
            (None, Some(model)) => EvalSource::Model(model),
            (None, None) => unreachable!("clap requires --checkpoint or --model"),
        };
        let mut opts = EvalOptions::new(source, self.data);
        opts.split = self.split;
        opts.crop = self.crop;
        opts.batch = self.batch;
        opts.device = self.device;
        opts.out = self.out;
        opts.skip_bad = self.skip_bad;
        opts.engine = EngineOptions {
            engine: self.engine.engine,
            threads: self.engine.threads,
            provider: self.engine.provider,
            onnxruntime_lib: self.engine.onnxruntime_lib,
        };
        opts
    }
}

#[derive(Args)]
#[command(after_help = "Example:\n  \
    seg-host export --checkpoint runs/voc/best.safetensors --data data/VOCdevkit/VOC2012 --out models/fcn.onnx")]
struct ExportArgs {
    /// A checkpoint written by `seg-host train` (`.safetensors` with its `.json`).
    #[arg(long, value_name = "FILE")]
    checkpoint: PathBuf,
    /// The ONNX file to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Input height, a multiple of 32.
    #[arg(long, default_value_t = export_defaults().height)]
    height: u32,
    /// Input width, a multiple of 32.
    #[arg(long, default_value_t = export_defaults().width)]
    width: u32,
    /// How the 32× upsampling is written (the same numbers either way).
    #[arg(long, value_enum, default_value_t = export_defaults().upsampler)]
    upsampler: Upsampler,
    /// A VOC-layout dataset: sample images for the check, and validation figures for the card.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// The split of --data whose figures go into the card.
    #[arg(long, default_value_t = export_defaults().split)]
    split: String,
    /// Skip and count missing or corrupt samples instead of stopping.
    #[arg(long)]
    skip_bad: bool,
    /// Sample images compared between the engine and tch.
    #[arg(long, default_value_t = export_defaults().samples)]
    samples: usize,
    /// Engine threads (the CPU count).
    #[arg(long, value_name = "N", default_value_t = export_defaults().threads)]
    threads: usize,
}

/// Static post-training int8 quantization of an exported model, gated on accuracy.
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    seg-host quantize --model models/fcn.onnx --calib data/VOCdevkit/VOC2012 --out models/fcn.int8.onnx\n  \
    seg-host quantize --model models/fcn.onnx --calib data/VOCdevkit/VOC2012 --engine tract --out models/fcn.qlinear.onnx")]
struct QuantizeArgs {
    /// The f32 model written by `seg-host export`.
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// Calibration images: a VOC-layout dataset (its --calib-split) or a folder of images.
    #[arg(long, value_name = "DIR")]
    calib: PathBuf,
    /// The split of a VOC-layout --calib the calibration images come from.
    #[arg(long, default_value_t = quantize_defaults().calib_split)]
    calib_split: String,
    /// How many calibration images (spread over the split).
    #[arg(long, default_value_t = quantize_defaults().images)]
    images: usize,
    /// minmax, percentile (99.99) or percentile:P.
    #[arg(long, value_parser = quantize::Method::parse, default_value_t = quantize_defaults().method)]
    calibration: quantize::Method,
    /// The int8 model to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Labelled VOC-layout data for the accuracy gate [default: --calib when it has the split].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// The split of the accuracy gate.
    #[arg(long, default_value_t = quantize_defaults().split)]
    split: String,
    /// The int8 form: qdq (onnxruntime's integer kernels) or qlinear (tract's) [default: the form --engine runs fastest].
    #[arg(long, value_enum)]
    format: Option<QuantFormat>,
    /// The engine the model is made for, gated and timed in: auto (onnxruntime when its library is found), tract or onnxruntime.
    #[arg(long, default_value_t = quantize_defaults().engine)]
    engine: EngineChoice,
    /// The onnxruntime library [default: ORT_DYLIB_PATH, beside seg-host, the segcam venv].
    #[arg(long, value_name = "FILE")]
    onnxruntime_lib: Option<PathBuf>,
    /// qlinear weight scales: auto (per tensor where it costs little, so tract requantises in its kernel), per-channel or per-tensor.
    #[arg(long, value_enum, default_value_t = quantize_defaults().weights)]
    weights: quantize::WeightsChoice,
    /// Largest IoU loss of any one class, in points, before the gate refuses the model.
    #[arg(long, default_value_t = quantize_defaults().max_class_drop)]
    max_class_drop: f64,
    /// Write the int8 model even if it fails the accuracy gate.
    #[arg(long)]
    force: bool,
    /// Skip and count missing or corrupt samples instead of stopping.
    #[arg(long)]
    skip_bad: bool,
    /// Engine threads for calibration, the gate and the timing (the CPU count).
    #[arg(long, value_name = "N", default_value_t = quantize_defaults().threads)]
    threads: usize,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Err(e) = atomic::remove_pending_on_signal() {
        tracing::warn!("{e:#}: a Ctrl-C may leave unfinished files");
    }
    match run(cli, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seg-host: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, matches: &ArgMatches) -> Result<()> {
    match cli.command {
        Command::Info => {
            print!("{}", info::SystemInfo::gather());
            Ok(())
        }
        Command::Synth(a) => synth(a),
        Command::Train(a) => {
            let given = matches
                .subcommand_matches("train")
                .expect("the train subcommand");
            if let Some(n) = a.threads {
                tch::set_num_threads(n);
            }
            let on_command_line: Vec<&str> = given
                .ids()
                .map(|id| id.as_str())
                .filter(|&id| given.value_source(id) == Some(ValueSource::CommandLine))
                .collect();
            let summary = train::train(a.config(given)?, a.resume, a.overwrite, &on_command_line)?;
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
        Command::Eval(a) => eval::run(&a.options()),
        Command::Quantize(a) => quantize(a),
        Command::Export(a) => export(a),
    }
}

fn synth(a: SynthArgs) -> Result<()> {
    let mut opts = SynthOptions::new(a.out);
    opts.count = a.count;
    opts.seed = a.seed;
    (opts.height, opts.width) = a.size;
    opts.val_fraction = a.val_fraction;
    let bar = progress::bar(a.count as u64, "synth");
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

fn export(a: ExportArgs) -> Result<()> {
    let mut opts = ExportOptions::new(a.checkpoint, a.out);
    opts.height = a.height;
    opts.width = a.width;
    opts.upsampler = a.upsampler;
    opts.data = a.data;
    opts.split = a.split;
    opts.skip_bad = a.skip_bad;
    opts.samples = a.samples;
    opts.threads = a.threads;
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

fn quantize(a: QuantizeArgs) -> Result<()> {
    let mut opts = QuantizeOptions::new(a.model, a.calib, a.out);
    opts.calib_split = a.calib_split;
    opts.images = a.images;
    opts.method = a.calibration;
    opts.data = a.data;
    opts.split = a.split;
    opts.force = a.force;
    opts.skip_bad = a.skip_bad;
    opts.format = a.format;
    opts.engine = a.engine;
    opts.onnxruntime_lib = a.onnxruntime_lib;
    opts.weights = a.weights;
    opts.max_class_drop = a.max_class_drop;
    opts.threads = a.threads;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn train_config(args: &[&str]) -> Result<TrainConfig> {
        let matches = Cli::command().try_get_matches_from(args)?;
        let Command::Train(a) = Cli::from_arg_matches(&matches)?.command else {
            panic!("not train")
        };
        a.config(matches.subcommand_matches("train").unwrap())
    }

    #[test]
    fn train_flags_override_the_file_and_the_file_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("run.toml");
        std::fs::write(&file, "epochs = 9\nflip = true\npoly = true\nlr = 0.01\n").unwrap();
        let file = file.to_str().unwrap();
        let cfg = train_config(&[
            "seg-host",
            "train",
            "--config",
            file,
            "--flip=false",
            "--lr",
            "0.02",
        ])
        .unwrap();
        assert_eq!(cfg.epochs, 9, "from the file");
        assert!(cfg.poly, "from the file, no flag given");
        assert!(!cfg.flip, "a flag switches off the file's boolean");
        assert_eq!(cfg.lr, 0.02, "the flag wins");
        assert_eq!(cfg.batch, TrainConfig::default().batch, "the default");
        let cfg = train_config(&["seg-host", "train", "--flip", "--crop", "64x96"]).unwrap();
        assert!(cfg.flip);
        assert_eq!(cfg.crop, [64, 96]);
        assert!(train_config(&["seg-host", "train", "--flip=maybe"]).is_err());
    }

    #[test]
    fn every_flag_has_help_and_defaults_come_from_the_library() {
        let mut command = Cli::command();
        command.build();
        for sub in command.get_subcommands() {
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                assert!(
                    arg.get_help()
                        .is_some_and(|h| !h.to_string().trim().is_empty()),
                    "seg-host {} --{id} has no help text",
                    sub.get_name()
                );
            }
        }
        let train = command.find_subcommand("train").unwrap();
        let default = |id: &str| {
            let arg = train.get_arguments().find(|a| a.get_id() == id).unwrap();
            arg.get_default_values()[0].to_string_lossy().into_owned()
        };
        let d = TrainConfig::default();
        assert_eq!(default("epochs"), d.epochs.to_string());
        assert_eq!(default("lr"), d.lr.to_string());
        assert_eq!(default("crop"), format!("{}x{}", d.crop[0], d.crop[1]));
    }

    #[test]
    fn enum_flags_list_their_values_and_refuse_typos() {
        let err = Cli::command()
            .try_get_matches_from([
                "seg-host",
                "export",
                "--checkpoint",
                "c",
                "--out",
                "o",
                "--upsampler",
                "depth-to-spac",
            ])
            .unwrap_err()
            .to_string();
        assert!(err.contains("depth-to-space"), "{err}");
        let err = Cli::command()
            .try_get_matches_from([
                "seg-host", "eval", "--model", "m", "--data", "d", "--engine", "tract2",
            ])
            .unwrap_err()
            .to_string();
        assert!(err.contains("tract"), "{err}");
    }
}
