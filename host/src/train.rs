//! The training loop: d2l's recipe by default (SGD, lr 0.001, weight decay 1e-3,
//! 5 epochs, batch 32, 320×480 random crops), evaluated on the validation split after
//! every epoch, checkpointed atomically, resumable.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Kind, Reduction, Tensor};

use crate::checkpoint::{self, CheckpointInfo, EpochRecord, Expect};
use crate::dataset::{BadFiles, VocDataset};
use crate::evaluate;
use crate::loader::{self, LoaderConfig};
use crate::model::{Fcn, STRIDE};
use crate::{report, weights};

/// Every setting of a training run. Defaults are d2l's recipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The dataset folder (VOC layout).
    pub data: PathBuf,
    /// The run folder: checkpoints, metrics and plots.
    pub out: PathBuf,
    pub train_split: String,
    pub val_split: String,
    /// A `labelmap.txt` to use instead of the dataset's own (or VOC's).
    pub classes: Option<PathBuf>,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    /// Decay the learning rate as (1 - step/steps)^0.9 after every step.
    pub poly: bool,
    /// Random horizontal flips.
    pub flip: bool,
    /// Crop height and width (multiples of 32).
    pub crop: [u32; 2],
    /// ImageNet weights for the body (`.safetensors`; see `weights`).
    pub pretrained: Option<PathBuf>,
    pub freeze_backbone: bool,
    pub workers: usize,
    pub seed: u64,
    /// `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Skip (and count) missing or corrupt samples instead of stopping.
    pub skip_bad: bool,
    /// Validation images shown in the prediction grid.
    pub grid: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            data: PathBuf::from("data/VOCdevkit/VOC2012"),
            out: PathBuf::from("runs/train"),
            train_split: "train".into(),
            val_split: "val".into(),
            classes: None,
            epochs: 5,
            batch: 32,
            lr: 0.001,
            weight_decay: 1e-3,
            momentum: 0.0,
            poly: false,
            flip: false,
            crop: [320, 480],
            pretrained: None,
            freeze_backbone: false,
            workers: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .min(8),
            seed: 0,
            device: "auto".into(),
            skip_bad: false,
            grid: 4,
        }
    }
}

/// Where the run's files go.
pub struct RunFiles {
    pub last: PathBuf,
    pub best: PathBuf,
}

impl RunFiles {
    pub fn new(out: &Path) -> Self {
        Self {
            last: out.join("last.safetensors"),
            best: out.join("best.safetensors"),
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct TrainSummary {
    pub history: Vec<EpochRecord>,
    pub best_miou: f64,
    pub out: PathBuf,
}

/// Pick the torch device from `auto`, `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(name: &str) -> Result<tch::Device> {
    Ok(match name {
        "auto" => tch::Device::cuda_if_available(),
        "cpu" => tch::Device::Cpu,
        "cuda" | "gpu" => require_cuda(0)?,
        other => match other.strip_prefix("cuda:").map(str::parse) {
            Some(Ok(n)) => require_cuda(n)?,
            _ => bail!("device '{other}': expected auto, cpu, cuda or cuda:N"),
        },
    })
}

fn require_cuda(n: usize) -> Result<tch::Device> {
    let count = tch::Cuda::device_count() as usize;
    if n >= count {
        bail!("CUDA device {n} asked for, but libtorch sees {count} CUDA device(s) (run `seg-host info`)");
    }
    Ok(tch::Device::Cuda(n))
}

/// d2l's loss: per-pixel cross-entropy (void ignored), averaged over each image's
/// labelled pixels and summed over the batch; lr 0.001 is tuned for that sum.
pub fn pixel_loss(logits: &Tensor, labels: &Tensor) -> Tensor {
    let per_pixel = logits.cross_entropy_loss::<Tensor>(labels, None, Reduction::None, 255, 0.0);
    let labelled = labels
        .ne(255)
        .sum_dim_intlist([1, 2].as_slice(), false, Kind::Float)
        .clamp_min(1.0);
    (per_pixel.sum_dim_intlist([1, 2].as_slice(), false, Kind::Float) / labelled).sum(Kind::Float)
}

/// Check the settings before any work starts.
fn validate(cfg: &TrainConfig) -> Result<()> {
    let [h, w] = cfg.crop;
    if h == 0 || w == 0 || h as i64 % STRIDE != 0 || w as i64 % STRIDE != 0 {
        bail!("crop {h}×{w}: height and width must be positive multiples of {STRIDE} (the FCN's output stride)");
    }
    if cfg.batch == 0 || cfg.epochs == 0 {
        bail!("batch and epochs must be at least 1");
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        bail!("learning rate {}: expected a positive number", cfg.lr);
    }
    Ok(())
}

/// Train as `cfg` says; with `resume`, continue from the run folder's last checkpoint.
pub fn train(mut cfg: TrainConfig, resume: bool, overwrite: bool) -> Result<TrainSummary> {
    validate(&cfg)?;
    let files = RunFiles::new(&cfg.out);
    let previous = if files.last.exists() {
        if resume {
            Some(checkpoint::read_info(&files.last)?)
        } else if !overwrite {
            bail!(
                "{}: a checkpoint from an earlier run is there; pass --resume to continue it, --overwrite to start again, or choose another --out",
                files.last.display()
            );
        } else {
            None
        }
    } else {
        if resume {
            tracing::warn!(
                "nothing to resume in {}: starting a new run",
                cfg.out.display()
            );
        }
        None
    };
    if let Some(info) = &previous {
        // Keep the run's own settings; only a longer schedule may be asked for.
        let epochs = cfg.epochs;
        cfg = serde_json::from_value(info.config.clone())
            .context("the checkpoint's training settings")?;
        cfg.epochs = epochs.max(cfg.epochs);
    }
    validate(&cfg)?;
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("{}: cannot create the run folder", cfg.out.display()))?;
    remove_stale_temporaries(&cfg.out)?;

    let device = parse_device(&cfg.device)?;
    let bad = if cfg.skip_bad {
        BadFiles::Skip
    } else {
        BadFiles::Fail
    };
    let classes = match &cfg.classes {
        Some(path) => Some(segcam::ClassList::read_labelmap(path)?),
        None => None,
    };
    let [h, w] = cfg.crop;
    let mut train_set = VocDataset::open(&cfg.data, &cfg.train_split, classes.clone(), bad)?;
    let mut val_set = VocDataset::open(
        &cfg.data,
        &cfg.val_split,
        Some(train_set.classes.clone()),
        bad,
    )?;
    train_set.keep_at_least(h, w, bad)?;
    val_set.keep_at_least(h, w, bad)?;
    tracing::info!(
        "read {} training and {} validation images ({} and {} smaller than {h}×{w} left out, {} unreadable skipped); {} classes; device {device:?}",
        train_set.samples.len(),
        val_set.samples.len(),
        train_set.dropped_small,
        val_set.dropped_small,
        train_set.dropped_bad + val_set.dropped_bad,
        train_set.classes.len()
    );
    if train_set.samples.len() < cfg.batch {
        bail!(
            "{}: {} training images of at least {h}×{w}, fewer than one batch of {}",
            cfg.data.display(),
            train_set.samples.len(),
            cfg.batch
        );
    }
    if val_set.samples.is_empty() {
        bail!(
            "{}: no validation image is at least {h}×{w}",
            cfg.data.display()
        );
    }
    let classes = train_set.classes.clone();

    tch::manual_seed(cfg.seed as i64);
    let mut vs = nn::VarStore::new(device);
    let mut net = Fcn::new(&vs.root(), classes.len() as i64);
    let (mut epoch0, mut step, mut history) = (0, 0u64, Vec::new());
    if let Some(info) = &previous {
        let tensors = checkpoint::read_tensors(&files.last)?;
        checkpoint::copy_into(&mut vs, &tensors, Expect::All, &files.last)?;
        (epoch0, step, history) = (info.epoch, info.step, info.history.clone());
        tracing::info!("resuming {} after epoch {epoch0}", files.last.display());
    } else if let Some(path) = &cfg.pretrained {
        let n = weights::load_body(&mut vs, path)?;
        tracing::info!(
            "loaded {n} ImageNet tensors for the body from {}",
            path.display()
        );
    }
    if cfg.freeze_backbone {
        net.freeze_body(&vs);
    }
    let mut opt = nn::Sgd {
        momentum: cfg.momentum,
        dampening: 0.0,
        wd: cfg.weight_decay,
        nesterov: false,
    }
    .build(&vs, cfg.lr)?;

    let train_set = Arc::new(train_set);
    let val_set = Arc::new(val_set);
    let train_loader = LoaderConfig {
        batch: cfg.batch,
        crop: (h, w),
        random: true,
        flip: cfg.flip,
        drop_last: true,
        workers: cfg.workers,
        prefetch: 2 * cfg.workers.max(1),
        seed: cfg.seed,
        bad,
        norm: segcam::IMAGENET,
    };
    let val_loader = LoaderConfig {
        random: false,
        drop_last: false,
        ..train_loader.clone()
    };
    let steps_per_epoch = loader::batch_count(train_set.samples.len(), &train_loader) as u64;
    let total_steps = steps_per_epoch * cfg.epochs as u64;
    let mut best = history
        .iter()
        .map(|r: &EpochRecord| r.val_miou)
        .fold(f64::NEG_INFINITY, f64::max);

    for epoch in epoch0..cfg.epochs {
        let started = Instant::now();
        let bar = progress(
            steps_per_epoch,
            &format!("epoch {}/{}", epoch + 1, cfg.epochs),
        );
        let (mut loss_sum, mut images, mut correct, mut labelled) = (0.0, 0usize, 0i64, 0i64);
        let mut lr = cfg.lr;
        for batch in loader::batches(train_set.clone(), &train_loader, epoch as u64) {
            let batch = batch?;
            if batch.len == 0 {
                continue;
            }
            if cfg.poly {
                lr = cfg.lr * (1.0 - step as f64 / total_steps as f64).max(0.0).powf(0.9);
                opt.set_lr(lr);
            }
            let (xs, ys) = to_tensors(&batch, device);
            let logits = net.forward_t(&xs, true);
            let loss = pixel_loss(&logits, &ys);
            opt.backward_step(&loss);
            step += 1;
            let loss = loss.double_value(&[]);
            if !loss.is_finite() {
                bail!(
                    "the loss became {loss} at epoch {} step {step} (lr {lr}): training diverged; lower --lr, or check the labels",
                    epoch + 1
                );
            }
            let (c, l) = tch::no_grad(|| evaluate::correct_pixels(&logits, &ys));
            loss_sum += loss;
            images += batch.len;
            correct += c;
            labelled += l;
            let rate = images as f64 / started.elapsed().as_secs_f64();
            bar.set_message(format!(
                "loss {:.3} acc {:.3} {rate:.1} img/s",
                loss_sum / images as f64,
                ratio(correct, labelled)
            ));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let train_secs = started.elapsed().as_secs_f64();
        let eval = evaluate::evaluate(&net, val_set.clone(), &val_loader, device, cfg.grid)?;
        let record = EpochRecord {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / images.max(1) as f64,
            train_pixel_acc: ratio(correct, labelled),
            images_per_sec: images as f64 / train_secs,
            val_pixel_acc: eval.matrix.pixel_accuracy(),
            val_miou: eval.matrix.mean_iou(),
            val_class_iou: eval.matrix.class_iou(),
            val_images: val_set.samples.len(),
            seconds: started.elapsed().as_secs_f64(),
        };
        tracing::info!(
            "epoch {}/{}: loss {:.3}, train acc {:.3}, val acc {:.3}, val mIoU {:.3}, {:.1} images/s",
            record.epoch,
            cfg.epochs,
            record.train_loss,
            record.train_pixel_acc,
            record.val_pixel_acc,
            record.val_miou,
            record.images_per_sec
        );
        history.push(record.clone());
        let info = CheckpointInfo {
            format_version: checkpoint::FORMAT_VERSION,
            architecture: checkpoint::ARCHITECTURE.into(),
            classes: classes.clone(),
            normalization: segcam::IMAGENET,
            crop: cfg.crop,
            epoch: epoch + 1,
            step,
            history: history.clone(),
            config: serde_json::to_value(&cfg)?,
        };
        checkpoint::save(&vs, &info, &files.last)?;
        if record.val_miou > best {
            best = record.val_miou;
            checkpoint::save(&vs, &info, &files.best)?;
        }
        report::write_run_report(&cfg.out, &history, &eval, &classes)?;
    }
    Ok(TrainSummary {
        history,
        best_miou: best,
        out: cfg.out,
    })
}

/// Delete the temporary files a killed run left mid-write (`*.tmp`): the finished
/// files they would have replaced are intact.
fn remove_stale_temporaries(out: &Path) -> Result<()> {
    for entry in
        std::fs::read_dir(out).with_context(|| format!("{}: cannot list", out.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tmp") && path.is_file() {
            std::fs::remove_file(&path)
                .with_context(|| format!("{}: cannot remove", path.display()))?;
        }
    }
    Ok(())
}

/// A batch as tensors on `device`: images N×3×H×W (f32) and labels N×H×W (i64).
pub fn to_tensors(batch: &loader::Batch, device: tch::Device) -> (Tensor, Tensor) {
    let (n, h, w) = (batch.len as i64, batch.height as i64, batch.width as i64);
    let xs = Tensor::from_slice(&batch.images)
        .view([n, 3, h, w])
        .to_device(device);
    let ys = Tensor::from_slice(&batch.labels)
        .view([n, h, w])
        .to_kind(Kind::Int64)
        .to_device(device);
    (xs, ys)
}

/// A progress bar that indicatif hides when stderr is not a terminal.
pub fn progress(len: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .expect("progress template")
        .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_owned());
    bar
}

fn ratio(a: i64, b: i64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}
