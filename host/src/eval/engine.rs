//! Evaluation of an exported model through the board's engine (tract): each image's
//! centre crop at the model's input size, classified exactly as `seg-cam` would.

use anyhow::{Context, Result};
use segcam::preprocess::Rect;
use segcam::{ConfusionMatrix, Engine};

use super::Evaluation;
use crate::dataset::{BadFiles, VocDataset};
use crate::progress;

/// Run `engine` over every sample of `ds` (which must hold only images at least the
/// model's input size; see [`VocDataset::keep_at_least`]). The first `grid` samples
/// come back as pictures. With [`BadFiles::Skip`] unreadable samples are left out.
pub fn evaluate(
    engine: &Engine,
    ds: &VocDataset,
    bad: BadFiles,
    grid: usize,
) -> Result<Evaluation> {
    let (w, h) = engine.input_size();
    let classes = &engine.card().classes;
    let mut matrix = ConfusionMatrix::new(classes.len());
    let mut pictures = Vec::new();
    let (mut images, mut skipped) = (0, 0);
    let bar = progress::bar(ds.samples.len() as u64, "evaluate");
    for i in 0..ds.samples.len() {
        let (image, label) = match ds.load(i) {
            Ok(pair) => pair,
            Err(e) if bad == BadFiles::Skip => {
                tracing::warn!("skipping {}: {e:#}", ds.samples[i].id);
                skipped += 1;
                bar.inc(1);
                continue;
            }
            Err(e) => return Err(e),
        };
        let window = Rect::centre(image.width(), image.height(), w, h).with_context(|| {
            format!(
                "{}: {}×{} is smaller than the model's input {w}×{h}",
                ds.samples[i].image.display(),
                image.width(),
                image.height()
            )
        })?;
        let (image, label) = (window.crop(&image), window.crop(&label));
        let predicted = engine.classify(&image)?;
        matrix.add(label.as_raw(), predicted.as_raw());
        images += 1;
        if pictures.len() < grid {
            pictures.push([
                image,
                classes.colourize(&predicted),
                classes.colourize(&label),
            ]);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Evaluation::of(ds, matrix, pictures, images, skipped)
}
