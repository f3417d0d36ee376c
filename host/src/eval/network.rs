//! The network in tch on a dataset split: a confusion matrix (pixel accuracy,
//! per-class IoU, mIoU) and a few predictions to look at.

use std::sync::Arc;

use anyhow::Result;
use image::{GrayImage, RgbImage};
use segcam::preprocess::Rect;
use segcam::ConfusionMatrix;
use tch::nn::ModuleT;
use tch::{Kind, Tensor};

use super::Evaluation;
use crate::dataset::VocDataset;
use crate::loader::{self, LoaderConfig};
use crate::model::Fcn;
use crate::progress;

/// Correctly predicted and labelled (non-void) pixel counts of a batch.
pub fn correct_pixels(logits: &Tensor, labels: &Tensor) -> (i64, i64) {
    let labelled = labels.ne(255);
    let correct = logits
        .argmax(1, false)
        .eq_tensor(labels)
        .logical_and(&labelled);
    (
        correct.sum(Kind::Int64).int64_value(&[]),
        labelled.sum(Kind::Int64).int64_value(&[]),
    )
}

/// The confusion matrix of a batch, counted on the tensors' device.
pub fn confusion(logits: &Tensor, labels: &Tensor) -> ConfusionMatrix {
    let classes = logits.size()[1];
    let labelled = labels.ne(255);
    let truth = labels.masked_select(&labelled);
    let predicted = logits.argmax(1, false).masked_select(&labelled);
    let counts = (truth * classes + predicted).bincount::<Tensor>(None, classes * classes);
    let counts: Vec<i64> =
        Vec::try_from(counts.to_device(tch::Device::Cpu)).expect("bincount to i64");
    ConfusionMatrix::from_counts(
        classes as usize,
        counts.into_iter().map(|c| c as u64).collect(),
    )
}

/// Run `net` (in evaluation mode) over every batch of `ds`.
pub fn evaluate(
    net: &Fcn,
    ds: Arc<VocDataset>,
    cfg: &LoaderConfig,
    device: tch::Device,
    grid: usize,
) -> Result<Evaluation> {
    let mut matrix = ConfusionMatrix::new(net.classes() as usize);
    let mut pictures = Vec::new();
    let (mut images, mut skipped) = (0, 0);
    let batches = loader::batches(ds.clone(), cfg, 0);
    let bar = progress::bar(batches.len() as u64, "evaluate");
    for batch in batches {
        let batch = batch?;
        (images, skipped) = (images + batch.len, skipped + batch.skipped);
        if batch.len == 0 {
            bar.inc(1);
            continue;
        }
        let (xs, ys) = batch.to_tensors(device);
        let logits = tch::no_grad(|| net.forward_t(&xs, false));
        matrix.merge(&confusion(&logits, &ys));
        let predicted = logits
            .argmax(1, false)
            .to_kind(Kind::Uint8)
            .to_device(tch::Device::Cpu);
        for (k, &i) in batch
            .indices
            .iter()
            .enumerate()
            .take(grid.saturating_sub(pictures.len()))
        {
            pictures.push(picture_row(&ds, i, &predicted.get(k as i64), cfg.crop)?);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Evaluation::of(&ds, matrix, pictures, images, skipped)
}

/// Image, prediction and ground truth of sample `i`, as the loader cropped it.
fn picture_row(
    ds: &VocDataset,
    i: usize,
    predicted: &Tensor,
    (h, w): (u32, u32),
) -> Result<[RgbImage; 3]> {
    let (image, label) = ds.load(i)?;
    let window = Rect::centre(image.width(), image.height(), w, h).expect("filtered by size");
    let pred: Vec<u8> = Vec::try_from(predicted.flatten(0, -1)).expect("u8 prediction");
    let pred = GrayImage::from_raw(w, h, pred).expect("prediction size");
    Ok([
        window.crop(&image),
        ds.classes.colourize(&pred),
        ds.classes.colourize(&window.crop(&label)),
    ])
}
