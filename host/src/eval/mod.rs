//! Evaluation on a dataset split: of the network in tch ([`network`]), of an exported
//! model through the board's engine ([`engine`]), and the `seg-host eval` command
//! that runs either and writes the figures ([`command`]).

pub mod command;
pub mod engine;
pub mod network;

use anyhow::{bail, Result};
use image::RgbImage;
use segcam::ConfusionMatrix;

use crate::dataset::VocDataset;

pub use command::{run, EvalOptions, EvalSource};

/// The figures of one evaluation and the first few predictions as pictures
/// (image | prediction | ground truth).
pub struct Evaluation {
    pub matrix: ConfusionMatrix,
    pub grid: Vec<[RgbImage; 3]>,
    /// Images actually evaluated (unreadable ones skipped under `--skip-bad` are not).
    pub images: usize,
}

impl Evaluation {
    /// The evaluation of `images` images of `ds`, refused when there is none: its
    /// figures would be zeros that read like a result (and pass a gate comparing two).
    fn of(
        ds: &VocDataset,
        matrix: ConfusionMatrix,
        grid: Vec<[RgbImage; 3]>,
        images: usize,
        skipped: usize,
    ) -> Result<Self> {
        if images == 0 {
            bail!(
                "{}: no image of the '{}' split could be evaluated ({} too small for the input left out, {} unreadable and skipped)",
                ds.root.display(),
                ds.split,
                ds.dropped_small,
                ds.dropped_bad + skipped
            );
        }
        Ok(Self {
            matrix,
            grid,
            images,
        })
    }
}
