//! seg-host: train, evaluate and export segcam's FCN on a workstation (tch/libtorch).
//! The binary only parses arguments; each subcommand is one call into this library.

pub mod atomic;
pub mod checkpoint;
pub mod dataset;
pub mod eval;
pub mod export;
pub mod info;
pub mod loader;
pub mod model;
pub mod plots;
pub mod progress;
pub mod quantize;
pub mod report;
pub mod size;
pub mod synth;
pub mod torch_device;
pub mod train;
pub mod weights;
