//! Checkpoints: the weights as safetensors (torchvision's names for the body, so the
//! file loads into `torchvision.models.resnet18`) beside a JSON file with what the
//! weights mean (classes, preprocessing) and how far training got. Both are written
//! to a temporary name and renamed, so a kill never leaves a half-written checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use segcam::{ClassList, Normalization};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Kind, Tensor};

use crate::atomic::Pending;
use crate::model::{FINAL_CONV, TRANSPOSE_CONV};

pub const ARCHITECTURE: &str = "fcn-resnet18";
pub const FORMAT_VERSION: u32 = 1;

/// What a checkpoint's weights mean and where training stood.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointInfo {
    pub format_version: u32,
    pub architecture: String,
    pub classes: ClassList,
    pub normalization: Normalization,
    /// Crop height and width the network was trained at.
    pub crop: [u32; 2],
    /// Epochs completed.
    pub epoch: usize,
    /// Optimiser steps taken.
    pub step: u64,
    /// Per-epoch figures so far (training loss and accuracy, validation metrics).
    pub history: Vec<EpochRecord>,
    /// The training configuration, so `--resume` continues with the same settings.
    pub config: serde_json::Value,
    /// Each class's share of the training labels' pixels (void left out): the model
    /// card carries it to the board, whose drift score compares what it sees with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_distribution: Option<Vec<f64>>,
}

/// The figures of one epoch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_pixel_acc: f64,
    pub images_per_sec: f64,
    pub val_pixel_acc: f64,
    pub val_miou: f64,
    pub val_class_iou: Vec<Option<f64>>,
    /// Validation images the figures are over (0 in runs from before it was recorded).
    #[serde(default)]
    pub val_images: usize,
    pub seconds: f64,
}

/// The JSON file that goes with a weights file (`x.safetensors` → `x.json`).
pub fn info_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

/// Write `weights` (a `.safetensors` path) and its JSON, each atomically, both
/// finished under temporary names before either is renamed; a kill between the two
/// renames is caught on reading ([`read_weights`] compares their steps).
pub fn save(vs: &VarStore, info: &CheckpointInfo, weights: &Path) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| (name, t.detach().to_device(tch::Device::Cpu)))
        .collect();
    // torchvision's batch norms carry a step counter; PyTorch's strict loading wants it.
    let tracked: Vec<String> = named
        .iter()
        .filter_map(|(n, _)| {
            n.strip_suffix(".running_mean")
                .map(|p| format!("{p}.num_batches_tracked"))
        })
        .collect();
    for name in tracked {
        named.push((name, Tensor::from(info.step as i64)));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let pending = Pending::beside(weights)?;
    Tensor::write_safetensors(&named, pending.path())
        .with_context(|| format!("{}: cannot write checkpoint", weights.display()))?;
    let json = Pending::beside(&info_path(weights))?;
    json.write(serde_json::to_string_pretty(info)?.as_bytes())?;
    pending.persist()?;
    json.persist()
}

/// Read a checkpoint's JSON, checking it describes our architecture and format.
pub fn read_info(weights: &Path) -> Result<CheckpointInfo> {
    let path = info_path(weights);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: cannot read the checkpoint's description (it goes beside {})",
            path.display(),
            weights.display()
        )
    })?;
    let info: CheckpointInfo = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a seg-host checkpoint description", path.display()))?;
    if info.architecture != ARCHITECTURE {
        bail!(
            "{}: architecture '{}', expected '{ARCHITECTURE}'",
            path.display(),
            info.architecture
        );
    }
    if info.format_version != FORMAT_VERSION {
        bail!(
            "{}: checkpoint format {}, this seg-host reads format {FORMAT_VERSION}",
            path.display(),
            info.format_version
        );
    }
    let [h, w] = info.crop;
    crate::model::check_size(h, w)
        .with_context(|| format!("{}: the training crop", path.display()))?;
    Ok(info)
}

/// The tensors of the checkpoint `weights` that `info` (its JSON) describes, refused
/// when they are not the same save: the batch norms' step counters must be the
/// description's step.
pub fn read_weights(weights: &Path, info: &CheckpointInfo) -> Result<HashMap<String, Tensor>> {
    let tensors = read_tensors(weights)?;
    let steps = tensors
        .iter()
        .filter(|(name, _)| name.ends_with(".num_batches_tracked"))
        .map(|(_, t)| t.int64_value(&[]));
    if let Some(step) = steps.into_iter().find(|&s| s != info.step as i64) {
        bail!(
            "{}: the weights are from step {step} but {} describes step {}: the two were not saved together (a run stopped while saving?). The run's other checkpoint (best.* or last.*) is whole: use it, or copy its .safetensors and .json over these two to resume from it",
            weights.display(),
            info_path(weights).display(),
            info.step
        );
    }
    Ok(tensors)
}

/// Read every tensor of a safetensors file by name.
pub fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let tensors = Tensor::read_safetensors(path)
        .with_context(|| format!("{}: not a readable safetensors file", path.display()))?;
    Ok(tensors.into_iter().collect())
}

/// Which variables of the store must be found in a weights file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Every variable (a checkpoint of this network).
    All,
    /// The body only (ImageNet weights for the backbone); the head keeps its start.
    Body,
}

/// Copy tensors into the store's variables by name, checking names and shapes.
/// Tensors the store has no variable for (`fc.*`, `num_batches_tracked`) are ignored.
pub fn copy_into(
    vs: &mut VarStore,
    tensors: &HashMap<String, Tensor>,
    expect: Expect,
    source: &Path,
) -> Result<usize> {
    let mut missing = Vec::new();
    let mut copied = 0;
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in vs.variables() {
            let is_head = name.starts_with(FINAL_CONV) || name.starts_with(TRANSPOSE_CONV);
            let Some(src) = tensors.get(&name) else {
                if expect == Expect::All || !is_head {
                    missing.push(name);
                }
                continue;
            };
            if src.size() != var.size() {
                bail!(
                    "{}: '{name}' has shape {:?}, expected {:?}{}",
                    source.display(),
                    src.size(),
                    var.size(),
                    if is_head {
                        " (a different number of classes?)"
                    } else {
                        ""
                    }
                );
            }
            var.copy_(&src.to_kind(Kind::Float).to_device(var.device()));
            copied += 1;
        }
        Ok(())
    })?;
    if !missing.is_empty() {
        missing.sort();
        bail!(
            "{}: not an FCN-ResNet18 ({}) weights file: {} tensors missing, e.g. {}",
            source.display(),
            if expect == Expect::All {
                "checkpoint"
            } else {
                "torchvision resnet18"
            },
            missing.len(),
            missing
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Fcn;

    fn info(step: u64) -> CheckpointInfo {
        CheckpointInfo {
            format_version: FORMAT_VERSION,
            architecture: ARCHITECTURE.into(),
            classes: ClassList::voc(),
            normalization: segcam::IMAGENET,
            crop: [64, 96],
            epoch: 1,
            step,
            history: vec![],
            config: serde_json::Value::Null,
            class_distribution: None,
        }
    }

    #[test]
    fn save_then_load_gives_the_same_weights_and_torchvision_counters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let vs = VarStore::new(tch::Device::Cpu);
        let _net = Fcn::new(&vs.root(), 21);
        save(&vs, &info(7), &path).unwrap();
        let tensors = read_tensors(&path).unwrap();
        assert_eq!(
            tensors["layer3.1.bn2.num_batches_tracked"].int64_value(&[]),
            7
        );
        assert_eq!(tensors.len(), vs.variables().len() + 20);

        let mut other = VarStore::new(tch::Device::Cpu);
        let _net2 = Fcn::new(&other.root(), 21);
        assert_eq!(
            copy_into(&mut other, &tensors, Expect::All, &path).unwrap(),
            vs.variables().len()
        );
        let (a, b) = (vs.variables(), other.variables());
        assert!(a["layer1.0.conv1.weight"].equal(&b["layer1.0.conv1.weight"]));
        assert_eq!(read_info(&path).unwrap().step, 7);
        assert_eq!(read_weights(&path, &info(7)).unwrap().len(), tensors.len());
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn weights_and_a_description_from_different_saves_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");
        let vs = VarStore::new(tch::Device::Cpu);
        let _net = Fcn::new(&vs.root(), 21);
        save(&vs, &info(7), &path).unwrap();
        // As a stop between the two renames leaves them: new weights, old description.
        let old = serde_json::to_string(&info(3)).unwrap();
        std::fs::write(info_path(&path), old).unwrap();
        let stale = read_info(&path).unwrap();
        let msg = read_weights(&path, &stale).unwrap_err().to_string();
        assert!(
            msg.contains("last.safetensors") && msg.contains("step 7") && msg.contains("step 3"),
            "{msg}"
        );
        // A description whose crop the network cannot take is refused on reading.
        let mut odd = info(7);
        odd.crop = [50, 70];
        std::fs::write(info_path(&path), serde_json::to_string(&odd).unwrap()).unwrap();
        let msg = format!("{:#}", read_info(&path).unwrap_err());
        assert!(msg.contains("last.json") && msg.contains("50×70"), "{msg}");
    }

    #[test]
    fn other_class_counts_and_architectures_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let vs = VarStore::new(tch::Device::Cpu);
        let _net = Fcn::new(&vs.root(), 21);
        save(&vs, &info(0), &path).unwrap();
        let tensors = read_tensors(&path).unwrap();
        let mut five = VarStore::new(tch::Device::Cpu);
        let _n = Fcn::new(&five.root(), 5);
        let msg = copy_into(&mut five, &tensors, Expect::All, &path)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("c.safetensors") && msg.contains("a different number of classes"),
            "{msg}"
        );

        let alien: HashMap<String, Tensor> = [(
            "encoder.weight".to_string(),
            Tensor::zeros([2], (Kind::Float, tch::Device::Cpu)),
        )]
        .into();
        let msg = copy_into(&mut five, &alien, Expect::Body, &path)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("not an FCN-ResNet18") && msg.contains("missing"),
            "{msg}"
        );
    }
}
