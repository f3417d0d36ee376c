//! segcam: live semantic segmentation on edge boards.
//!
//! This crate owns the **model contract** shared by the workstation (`seg-host`) and
//! the board (`seg-cam`): the class list and palette, the preprocessing, the metrics,
//! and the generated test scene, with the engines that run a model and the benchmark.
//! That much builds with no features. `render` adds what draws and encodes frames
//! (fitting, label resampling, overlay, HUD, JPEG); `http` and `framebuffer` the
//! outputs; `clap` value enums for command lines; `live` the pipeline of `seg-cam`
//! (with all of those); `testing` the helpers of the tests.

pub mod adopt;
pub mod bench;
pub mod card;
pub mod classes;
pub mod cpu;
pub mod decode;
pub mod drift;
pub mod engine;
pub mod error;
#[cfg(feature = "framebuffer")]
pub mod framebuffer;
#[cfg(feature = "live")]
pub mod golden;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "render")]
pub mod hud;
#[cfg(feature = "render")]
pub mod jpeg;
#[cfg(feature = "live")]
pub mod live;
pub mod metrics;
pub mod onnx_card;
#[cfg(feature = "render")]
pub mod overlay;
pub mod preprocess;
pub mod provenance;
#[cfg(feature = "live")]
pub mod queue;
#[cfg(feature = "release")]
pub mod release;
#[cfg(feature = "render")]
pub mod resize;
pub mod scene;
#[cfg(feature = "live")]
pub mod source;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use card::ModelCard;
pub use classes::ClassList;
pub use engine::Engine;
pub use error::{Error, Result};
pub use metrics::ConfusionMatrix;
pub use preprocess::{Normalization, IMAGENET};
