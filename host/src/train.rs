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
use crate::{atomic, progress, report, torch_device, weights};

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
    /// The run's figures (see `report`): a folder holding it holds a run.
    pub metrics: PathBuf,
}

impl RunFiles {
    pub fn new(out: &Path) -> Self {
        Self {
            last: out.join("last.safetensors"),
            best: out.join("best.safetensors"),
            metrics: out.join("metrics.json"),
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
    if !(cfg.weight_decay.is_finite() && cfg.weight_decay >= 0.0) {
        bail!("weight decay {}: expected a number ≥ 0", cfg.weight_decay);
    }
    if !(0.0..1.0).contains(&cfg.momentum) {
        bail!("momentum {}: expected a number in [0, 1)", cfg.momentum);
    }
    Ok(())
}

/// Train as `cfg` says; with `resume`, continue from the run folder's last checkpoint.
/// `given` names the settings given on the command line (`TrainConfig`'s field names):
/// a resumed run takes those of this machine from it (see [`settle_settings`]).
pub fn train(
    cfg: TrainConfig,
    resume: bool,
    overwrite: bool,
    given: &[&str],
) -> Result<TrainSummary> {
    let files = RunFiles::new(&cfg.out);
    let (cfg, previous) = settle_settings(cfg, &files, resume, overwrite, given)?;
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("{}: cannot create the run folder", cfg.out.display()))?;
    atomic::remove_stale(&cfg.out)?;
    let device = torch_device::parse(&cfg.device)?;
    let data = Data::open(&cfg, device)?;
    if let Some(info) = previous.as_ref().filter(|i| i.classes != data.classes) {
        bail!(
            "{}: its classes ({}) are not those the run in {} trained ({}); resume on data with the same classes and colours, or start a new run",
            cfg.data.display(),
            data.classes.names.join(", "),
            cfg.out.display(),
            info.classes.names.join(", ")
        );
    }
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
        let record = fit.record(epoch + 1, &eval, started);
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

/// Settings that say where this machine finds things and how it runs, not how the
/// network is trained: a resumed run takes them from the command that resumes it.
const MACHINE_SETTINGS: [&str; 5] = ["data", "device", "workers", "skip_bad", "grid"];

/// The settings the run goes on with, and the checkpoint it resumes: an earlier run's
/// own recipe (only a longer schedule may be asked for) in the folder it was found in,
/// with this command's [`MACHINE_SETTINGS`] where given; or `cfg` for a new run.
fn settle_settings(
    cfg: TrainConfig,
    files: &RunFiles,
    resume: bool,
    overwrite: bool,
    given: &[&str],
) -> Result<(TrainConfig, Option<CheckpointInfo>)> {
    validate(&cfg)?;
    let earlier = [&files.last, &files.best, &files.metrics]
        .into_iter()
        .find(|f| f.exists());
    let previous = match (earlier, resume) {
        (Some(_), true) if files.last.exists() => Some(checkpoint::read_info(&files.last)?),
        (Some(_), true) if overwrite => None,
        (Some(found), true) => bail!(
            "{}: an earlier run's file is there but not its last checkpoint ({}), so it cannot be resumed; pass --overwrite to start again, or choose another --out",
            found.display(),
            files.last.display()
        ),
        (Some(found), false) if !overwrite => bail!(
            "{}: an earlier run is there; pass --resume to continue it, --overwrite to start again, or choose another --out",
            found.display()
        ),
        (None, true) => {
            tracing::warn!(
                "nothing to resume in {}: starting a new run",
                cfg.out.display()
            );
            None
        }
        _ => None,
    };
    let Some(info) = previous else {
        return Ok((cfg, None));
    };
    let asked = serde_json::to_value(&cfg)?;
    let mut settled = info.config.clone();
    for &name in given {
        if MACHINE_SETTINGS.contains(&name) {
            settled[name] = asked[name].clone();
        } else if !["out", "epochs"].contains(&name) && settled[name] != asked[name] {
            tracing::warn!(
                "--{} is ignored with --resume: the run goes on with its own {}",
                name.replace('_', "-"),
                settled[name]
            );
        }
    }
    let mut settled: TrainConfig =
        serde_json::from_value(settled).context("the checkpoint's training settings")?;
    settled.epochs = cfg.epochs.max(settled.epochs);
    // Wherever the run folder is now (moved, copied), it is the one resumed.
    settled.out = cfg.out;
    let cfg = settled;
    validate(&cfg)?;
    Ok((cfg, Some(info)))
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
            let tensors = checkpoint::read_weights(&files.last, info)?;
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
    fn record(&self, epoch: usize, eval: &Evaluation, started: Instant) -> EpochRecord {
        EpochRecord {
            epoch,
            lr: self.lr,
            train_loss: self.loss_sum / self.images.max(1) as f64,
            train_pixel_acc: ratio(self.correct, self.labelled),
            images_per_sec: self.images as f64 / self.seconds,
            val_pixel_acc: eval.matrix.pixel_accuracy(),
            val_miou: eval.matrix.mean_iou(),
            val_class_iou: eval.matrix.class_iou(),
            val_images: eval.images,
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

fn ratio(a: i64, b: i64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run folder `out` whose last checkpoint's description holds `cfg`.
    fn earlier_run(out: &Path, cfg: &TrainConfig) {
        std::fs::create_dir_all(out).unwrap();
        let info = CheckpointInfo {
            format_version: checkpoint::FORMAT_VERSION,
            architecture: checkpoint::ARCHITECTURE.into(),
            classes: segcam::ClassList::voc(),
            normalization: segcam::IMAGENET,
            crop: cfg.crop,
            epoch: 1,
            step: 10,
            history: vec![],
            config: serde_json::to_value(cfg).unwrap(),
            class_distribution: None,
        };
        let files = RunFiles::new(out);
        std::fs::write(&files.last, b"weights").unwrap();
        let json = serde_json::to_string(&info).unwrap();
        std::fs::write(checkpoint::info_path(&files.last), json).unwrap();
    }

    #[test]
    fn a_resumed_run_keeps_its_recipe_in_the_folder_it_is_found_in() {
        let dir = tempfile::tempdir().unwrap();
        let first = TrainConfig {
            data: "old/data".into(),
            out: dir.path().join("run"),
            lr: 0.5,
            epochs: 3,
            crop: [64, 96],
            device: "cpu".into(),
            ..TrainConfig::default()
        };
        // The folder was moved; the command names the new place and new data.
        let moved = dir.path().join("moved");
        earlier_run(&moved, &first);
        let asked = TrainConfig {
            data: "new/data".into(),
            out: moved.clone(),
            lr: 0.1,
            epochs: 5,
            workers: 1,
            ..TrainConfig::default()
        };
        let given = ["data", "out", "lr", "epochs"];
        let files = RunFiles::new(&moved);
        let (cfg, info) = settle_settings(asked.clone(), &files, true, false, &given).unwrap();
        assert_eq!(info.unwrap().step, 10);
        assert_eq!(
            cfg.out, moved,
            "the folder resumed, not the one it was trained in"
        );
        assert_eq!(cfg.data, PathBuf::from("new/data"), "--data given");
        assert_eq!(cfg.lr, 0.5, "the recipe stays the run's own");
        assert_eq!((cfg.epochs, cfg.crop), (5, [64, 96]));
        assert_eq!(cfg.device, "cpu", "not given: the run's own");
        // Without --data the run's own data.
        let (cfg, _) = settle_settings(asked, &files, true, false, &["out"]).unwrap();
        assert_eq!(cfg.data, PathBuf::from("old/data"));
    }

    #[test]
    fn a_folder_with_any_earlier_run_file_is_not_trained_over_unasked() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            out: dir.path().to_owned(),
            crop: [64, 96],
            ..TrainConfig::default()
        };
        let files = RunFiles::new(&cfg.out);
        for kept in [&files.best, &files.metrics] {
            std::fs::write(kept, b"earlier").unwrap();
            let msg = settle_settings(cfg.clone(), &files, false, false, &[])
                .unwrap_err()
                .to_string();
            assert!(msg.contains("--overwrite"), "{msg}");
            // Nothing to resume from without the last checkpoint.
            let msg = settle_settings(cfg.clone(), &files, true, false, &[])
                .unwrap_err()
                .to_string();
            assert!(msg.contains("cannot be resumed"), "{msg}");
            assert!(settle_settings(cfg.clone(), &files, false, true, &[]).is_ok());
            // --resume --overwrite: nothing to resume, and overwriting was asked for.
            let (_, info) = settle_settings(cfg.clone(), &files, true, true, &[]).unwrap();
            assert!(info.is_none());
            std::fs::remove_file(kept).unwrap();
        }
        assert!(settle_settings(cfg, &files, false, false, &[]).is_ok());
    }
}
