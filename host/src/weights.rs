//! ImageNet weights for the body, as `.safetensors`: torchvision's
//! `resnet18-f37072fd.pth` converted once by `just fetch-weights` (any other `.pth` by
//! `just convert-weights FILE.pth`, with the venv the project installs).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Result};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::checkpoint::{self, Expect};

/// Read a `.safetensors` weights file into named tensors; a `.pth` gets the command
/// that converts it.
pub fn read_weights(path: &Path) -> Result<HashMap<String, Tensor>> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => checkpoint::read_tensors(path),
        Some("pth" | "pt") => bail!(
            "{}: a PyTorch pickle; convert it once with `just convert-weights {}` \
             (writes a .safetensors beside it) and pass that",
            path.display(),
            path.display()
        ),
        _ => bail!(
            "{}: unknown weights format; expected .safetensors",
            path.display()
        ),
    }
}

/// Load ImageNet weights into the body; the head keeps its initialisation.
pub fn load_body(vs: &mut VarStore, path: &Path) -> Result<usize> {
    let tensors = read_weights(path)?;
    let tensors = tensors
        .into_iter()
        .map(|(k, v)| (k, v.to_kind(Kind::Float)))
        .collect();
    checkpoint::copy_into(vs, &tensors, Expect::Body, path)
}
