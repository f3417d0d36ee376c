//! The training loop: d2l's recipe by default (SGD, lr 0.001, weight decay 1e-3,
//! 5 epochs, batch 32, 320×480 random crops), evaluated on the validation split after
//! every epoch, checkpointed atomically, resumable.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use segcam::ClassList;
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Kind, Reduction, Tensor};

use crate::checkpoint::{self, CheckpointInfo, EpochRecord, Expect};
use crate::dataset::{BadFiles, VocDataset};
use crate::eval::{network, Evaluation};
use crate::loader::{self, LoaderConfig};
use crate::model::{Fcn, STRIDE};
use crate::{progress, report, torch_device, weights};

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
pub fn train(cfg: TrainConfig, resume: bool, overwrite: bool) -> Result<TrainSummary> {
    let files = RunFiles::new(&cfg.out);
    let (cfg, previous) = settle_settings(cfg, &files, resume, overwrite)?;
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("{}: cannot create the run folder", cfg.out.display()))?;
    remove_stale_temporaries(&cfg.out)?;
    let device = torch_device::parse(&cfg.device)?;
    let data = Data::open(&cfg, device)?;
    let mut state = State::new(&cfg, device, &data, previous.as_ref(), &files)?;
    let mut best = state
        .history
        .iter()
        .map(|r| r.val_miou)
        .fold(f64::NEG_INFINITY, f64::max);
    for epoch in state.epochs_done..cfg.epochs {
        let started = Instant::now();
        let fit = train_epoch(&cfg, &data, &mut state, epoch, device)?;
        let eval = network::evaluate(
            &state.net,
            data.val.clone(),
            &data.val_loader,
            device,
            cfg.grid,
        )?;
        let record = fit.record(epoch + 1, &eval, data.val.samples.len(), started);
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
        state.history.push(record.clone());
        let info = state.checkpoint_info(&cfg, &data, epoch + 1)?;
        checkpoint::save(&state.vs, &info, &files.last)?;
        if record.val_miou > best {
            best = record.val_miou;
            checkpoint::save(&state.vs, &info, &files.best)?;
        }
        report::write_run_report(&cfg.out, &state.history, &eval, &data.classes)?;
    }
    Ok(TrainSummary {
        history: state.history,
        best_miou: best,
        out: cfg.out,
    })
}

/// The settings the run goes on with, and the checkpoint it resumes: an earlier run's
/// own settings (only a longer schedule may be asked for), or `cfg` for a new run.
fn settle_settings(
    mut cfg: TrainConfig,
    files: &RunFiles,
    resume: bool,
    overwrite: bool,
) -> Result<(TrainConfig, Option<CheckpointInfo>)> {
    validate(&cfg)?;
    let previous = match (files.last.exists(), resume) {
        (true, true) => Some(checkpoint::read_info(&files.last)?),
        (true, false) if !overwrite => bail!(
            "{}: a checkpoint from an earlier run is there; pass --resume to continue it, --overwrite to start again, or choose another --out",
            files.last.display()
        ),
        (false, true) => {
            tracing::warn!(
                "nothing to resume in {}: starting a new run",
                cfg.out.display()
            );
            None
        }
        _ => None,
    };
    if let Some(info) = &previous {
        let epochs = cfg.epochs;
        cfg = serde_json::from_value(info.config.clone())
            .context("the checkpoint's training settings")?;
        cfg.epochs = epochs.max(cfg.epochs);
        validate(&cfg)?;
    }
    Ok((cfg, previous))
}

/// The two splits, their class list and how batches are cut from them.
struct Data {
    train: Arc<VocDataset>,
    val: Arc<VocDataset>,
    classes: ClassList,
    /// The training labels' class shares, for the card (the board's drift score).
    class_distribution: Vec<f64>,
    train_loader: LoaderConfig,
    val_loader: LoaderConfig,
}

impl Data {
    /// Open both splits, leave out images smaller than the crop, and refuse a split
    /// too small to train or validate on.
    fn open(cfg: &TrainConfig, device: tch::Device) -> Result<Self> {
        let bad = BadFiles::skip_if(cfg.skip_bad);
        let classes = match &cfg.classes {
            Some(path) => Some(ClassList::read_labelmap(path)?),
            None => None,
        };
        let [h, w] = cfg.crop;
        let mut train = VocDataset::open(&cfg.data, &cfg.train_split, classes, bad)?;
        let mut val =
            VocDataset::open(&cfg.data, &cfg.val_split, Some(train.classes.clone()), bad)?;
        train.keep_at_least(h, w, bad)?;
        val.keep_at_least(h, w, bad)?;
        tracing::info!(
            "read {} training and {} validation images ({} and {} smaller than {h}×{w} left out, {} unreadable skipped); {} classes; device {device:?}",
            train.samples.len(),
            val.samples.len(),
            train.dropped_small,
            val.dropped_small,
            train.dropped_bad + val.dropped_bad,
            train.classes.len()
        );
        if train.samples.len() < cfg.batch {
            bail!(
                "{}: {} training images of at least {h}×{w}, fewer than one batch of {}",
                cfg.data.display(),
                train.samples.len(),
                cfg.batch
            );
        }
        if val.samples.is_empty() {
            bail!(
                "{}: no validation image is at least {h}×{w}",
                cfg.data.display()
            );
        }
        let class_distribution = train.class_distribution(bad)?;
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
        Ok(Self {
            classes: train.classes.clone(),
            class_distribution,
            train: Arc::new(train),
            val: Arc::new(val),
            train_loader,
            val_loader,
        })
    }
}

/// The network, its optimiser, and how far the run has come.
struct State {
    vs: nn::VarStore,
    net: Fcn,
    opt: nn::Optimizer,
    epochs_done: usize,
    step: u64,
    history: Vec<EpochRecord>,
}

impl State {
    /// A new network (with ImageNet weights for the body when asked), or the resumed
    /// run's, and its SGD optimiser.
    fn new(
        cfg: &TrainConfig,
        device: tch::Device,
        data: &Data,
        previous: Option<&CheckpointInfo>,
        files: &RunFiles,
    ) -> Result<Self> {
        tch::manual_seed(cfg.seed as i64);
        let mut vs = nn::VarStore::new(device);
        let mut net = Fcn::new(&vs.root(), data.classes.len() as i64);
        let (mut epochs_done, mut step, mut history) = (0, 0, Vec::new());
        if let Some(info) = previous {
            let tensors = checkpoint::read_tensors(&files.last)?;
            checkpoint::copy_into(&mut vs, &tensors, Expect::All, &files.last)?;
            (epochs_done, step, history) = (info.epoch, info.step, info.history.clone());
            tracing::info!(
                "resuming {} after epoch {epochs_done}",
                files.last.display()
            );
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
        let opt = nn::Sgd {
            momentum: cfg.momentum,
            dampening: 0.0,
            wd: cfg.weight_decay,
            nesterov: false,
        }
        .build(&vs, cfg.lr)?;
        Ok(Self {
            vs,
            net,
            opt,
            epochs_done,
            step,
            history,
        })
    }

    /// What the checkpoint after `epoch` records beside the tensors.
    fn checkpoint_info(
        &self,
        cfg: &TrainConfig,
        data: &Data,
        epoch: usize,
    ) -> Result<CheckpointInfo> {
        Ok(CheckpointInfo {
            format_version: checkpoint::FORMAT_VERSION,
            architecture: checkpoint::ARCHITECTURE.into(),
            classes: data.classes.clone(),
            normalization: segcam::IMAGENET,
            crop: cfg.crop,
            epoch,
            step: self.step,
            history: self.history.clone(),
            config: serde_json::to_value(cfg)?,
            class_distribution: Some(data.class_distribution.clone()),
        })
    }
}

/// What one epoch of training measured.
struct EpochFit {
    loss_sum: f64,
    images: usize,
    correct: i64,
    labelled: i64,
    lr: f64,
    seconds: f64,
}

impl EpochFit {
    /// The epoch's record, with the validation figures of `eval`.
    fn record(
        &self,
        epoch: usize,
        eval: &Evaluation,
        val_images: usize,
        started: Instant,
    ) -> EpochRecord {
        EpochRecord {
            epoch,
            lr: self.lr,
            train_loss: self.loss_sum / self.images.max(1) as f64,
            train_pixel_acc: ratio(self.correct, self.labelled),
            images_per_sec: self.images as f64 / self.seconds,
            val_pixel_acc: eval.matrix.pixel_accuracy(),
            val_miou: eval.matrix.mean_iou(),
            val_class_iou: eval.matrix.class_iou(),
            val_images,
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

/// One pass over the training split (`epoch` counts from 0), stopping at a loss that
/// is no longer finite.
fn train_epoch(
    cfg: &TrainConfig,
    data: &Data,
    state: &mut State,
    epoch: usize,
    device: tch::Device,
) -> Result<EpochFit> {
    let started = Instant::now();
    let steps_per_epoch = loader::batch_count(data.train.samples.len(), &data.train_loader) as u64;
    let total_steps = steps_per_epoch * cfg.epochs as u64;
    let bar = progress::bar(
        steps_per_epoch,
        &format!("epoch {}/{}", epoch + 1, cfg.epochs),
    );
    let mut fit = EpochFit {
        loss_sum: 0.0,
        images: 0,
        correct: 0,
        labelled: 0,
        lr: cfg.lr,
        seconds: 0.0,
    };
    for batch in loader::batches(data.train.clone(), &data.train_loader, epoch as u64) {
        let batch = batch?;
        if batch.len == 0 {
            continue;
        }
        if cfg.poly {
            let left = (1.0 - state.step as f64 / total_steps as f64).max(0.0);
            fit.lr = cfg.lr * left.powf(0.9);
            state.opt.set_lr(fit.lr);
        }
        let (xs, ys) = batch.to_tensors(device);
        let logits = state.net.forward_t(&xs, true);
        let loss = pixel_loss(&logits, &ys);
        state.opt.backward_step(&loss);
        state.step += 1;
        let loss = loss.double_value(&[]);
        if !loss.is_finite() {
            bail!(
                "the loss became {loss} at epoch {} step {} (lr {}): training diverged; lower --lr, or check the labels",
                epoch + 1,
                state.step,
                fit.lr
            );
        }
        let (c, l) = tch::no_grad(|| network::correct_pixels(&logits, &ys));
        fit.loss_sum += loss;
        fit.images += batch.len;
        fit.correct += c;
        fit.labelled += l;
        let rate = fit.images as f64 / started.elapsed().as_secs_f64();
        bar.set_message(format!(
            "loss {:.3} acc {:.3} {rate:.1} img/s",
            fit.loss_sum / fit.images as f64,
            ratio(fit.correct, fit.labelled)
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    fit.seconds = started.elapsed().as_secs_f64();
    Ok(fit)
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

fn ratio(a: i64, b: i64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}
