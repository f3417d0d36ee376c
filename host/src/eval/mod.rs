//! Evaluation on a dataset split: of the network in tch ([`network`]), of an exported
//! model through the board's engine ([`engine`]), and the `seg-host eval` command
//! that runs either and writes the figures ([`command`]).

pub mod command;
pub mod engine;
pub mod network;

use image::RgbImage;
use segcam::ConfusionMatrix;

pub use command::{run, EvalOptions, EvalSource};

/// The figures of one evaluation and the first few predictions as pictures
/// (image | prediction | ground truth).
pub struct Evaluation {
    pub matrix: ConfusionMatrix,
    pub grid: Vec<[RgbImage; 3]>,
}
