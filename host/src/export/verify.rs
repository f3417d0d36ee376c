//! Sample inputs for checking an exported file, and the comparison of the board's
//! engine with tch's forward pass on them.

use anyhow::{Context, Result};
use image::RgbImage;
use segcam::decode::{open_image, DecodeLimits};
use segcam::engine::Output;
use segcam::preprocess::Rect;
use segcam::{Engine, Normalization};
use tch::nn::ModuleT;
use tch::{Kind, Tensor};

use crate::dataset::{BadFiles, VocDataset};
use crate::model::Fcn;

/// `count` images at `width × height`: centre crops of the dataset's first images
/// large enough, else (or to fill up) scenes from the project's generator.
pub fn sample_images(
    ds: Option<&VocDataset>,
    count: usize,
    width: u32,
    height: u32,
    bad: BadFiles,
) -> Result<Vec<RgbImage>> {
    let mut images = Vec::with_capacity(count);
    if let Some(ds) = ds {
        for s in &ds.samples {
            if images.len() == count {
                break;
            }
            // The image only: its label plays no part in the comparison.
            let image = match open_image(&s.image, &DecodeLimits::default()) {
                Ok(image) => image.to_rgb8(),
                Err(e) if bad == BadFiles::Skip => {
                    tracing::warn!("skipping: {e}");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let window = Rect::centre(image.width(), image.height(), width, height)
                .expect("the dataset keeps images at least the export size");
            images.push(window.crop(&image));
        }
    }
    for k in images.len()..count {
        images.push(segcam::scene::render(0x5e9, k as u64, width, height).image);
    }
    Ok(images)
}

/// The images as normalised planar inputs, one `Vec` each.
pub fn normalised(images: &[RgbImage], norm: &Normalization) -> Vec<Vec<f32>> {
    images
        .iter()
        .map(|im| {
            let mut chw = vec![0.0; 3 * (im.width() * im.height()) as usize];
            norm.to_chw(im, &mut chw);
            chw
        })
        .collect()
}

/// tch's logits (evaluation mode, CPU) for each input, C×H×W planar.
pub fn tch_logits(net: &Fcn, inputs: &[Vec<f32>], width: u32, height: u32) -> Vec<Vec<f32>> {
    inputs
        .iter()
        .map(|chw| {
            let x = Tensor::from_slice(chw).view([1, 3, height as i64, width as i64]);
            let y = tch::no_grad(|| net.forward_t(&x, false));
            Vec::try_from(y.to_kind(Kind::Float).flatten(0, -1)).expect("f32 logits")
        })
        .collect()
}

/// How far the engine's run of an exported file is from the reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agreement {
    /// Largest absolute difference of any logit.
    pub max_abs_diff: f32,
    /// Largest absolute reference logit, for scale.
    pub max_abs_logit: f32,
    /// Fraction of pixels whose class (argmax) is the same.
    pub class_agreement: f64,
}

/// Run `engine` on `inputs` and compare with `reference` logits.
pub fn compare(engine: &Engine, inputs: &[Vec<f32>], reference: &[Vec<f32>]) -> Result<Agreement> {
    let (w, h) = engine.input_size();
    let classes = engine.card().classes.len();
    let (mut max_abs_diff, mut max_abs_logit) = (0f32, 0f32);
    let (mut same, mut pixels) = (0usize, 0usize);
    for (chw, want) in inputs.iter().zip(reference) {
        let Output::Logits(got) = engine.run(chw)? else {
            anyhow::bail!(
                "{}: the exported model gives a class map, logits are needed to verify it",
                engine.path().display()
            );
        };
        anyhow::ensure!(
            got.len() == want.len(),
            "{}: {} logits, tch gives {}",
            engine.path().display(),
            got.len(),
            want.len()
        );
        for (a, b) in got.iter().zip(want) {
            max_abs_diff = max_abs_diff.max((a - b).abs());
            max_abs_logit = max_abs_logit.max(b.abs());
        }
        let ours = segcam::engine::argmax(&got, classes, w, h);
        let theirs = segcam::engine::argmax(want, classes, w, h);
        same += ours
            .as_raw()
            .iter()
            .zip(theirs.as_raw())
            .filter(|(a, b)| a == b)
            .count();
        pixels += ours.as_raw().len();
    }
    Ok(Agreement {
        max_abs_diff,
        max_abs_logit,
        class_agreement: same as f64 / pixels.max(1) as f64,
    })
}

/// NaN never compares greater; treat it as a failure explicitly.
pub fn within(agreement: &Agreement, tolerance: f32) -> bool {
    agreement.max_abs_diff.is_finite() && agreement.max_abs_diff <= tolerance
}

/// Load an exported file's engine, naming the file if it fails.
pub fn load(path: &std::path::Path, threads: usize) -> Result<Engine> {
    Engine::load(path, threads)
        .with_context(|| format!("the board's engine cannot load {}", path.display()))
}
