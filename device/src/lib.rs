//! segcam: live semantic segmentation on edge boards.
//!
//! This crate owns the **model contract** shared by the workstation (`seg-host`) and
//! the board (`seg-cam`): the class list and palette, the preprocessing, the metrics,
//! and the generated test scene; with the `live` feature, the pipeline of `seg-cam`.

pub mod bench;
pub mod card;
pub mod classes;
pub mod cpu;
pub mod decode;
pub mod engine;
pub mod error;
#[cfg(feature = "framebuffer")]
pub mod framebuffer;
#[cfg(feature = "http")]
pub mod http;
pub mod hud;
pub mod jpeg;
#[cfg(feature = "live")]
pub mod live;
pub mod metrics;
pub mod onnx_card;
pub mod overlay;
pub mod preprocess;
pub mod queue;
pub mod resize;
pub mod scene;
#[cfg(feature = "live")]
pub mod source;
#[doc(hidden)]
pub mod testing;

pub use card::ModelCard;
pub use classes::ClassList;
pub use engine::Engine;
pub use error::{Error, Result};
pub use metrics::ConfusionMatrix;
pub use preprocess::{Normalization, IMAGENET};
