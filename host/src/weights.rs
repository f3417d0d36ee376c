//! ImageNet weights for the body: torchvision's own `resnet18-f37072fd.pth`
//! (read directly, no Python needed) or the same tensors as `.safetensors`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::checkpoint::{self, Expect};
use crate::pth;

/// Read a weights file into named tensors, whatever its format.
pub fn read_weights(path: &Path) -> Result<HashMap<String, Tensor>> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => checkpoint::read_tensors(path),
        Some("pth" | "pt") => {
            let mut out = HashMap::new();
            for t in pth::read_pth(path)? {
                let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
                // Only floating-point tensors are weights; counters are not needed.
                if let Some(values) = t.to_f32() {
                    out.insert(t.name, Tensor::from_slice(&values).view(shape.as_slice()));
                }
            }
            Ok(out)
        }
        _ => bail!(
            "{}: unknown weights format; expected .pth (torchvision) or .safetensors",
            path.display()
        ),
    }
}

/// Load ImageNet weights into the body; the head keeps its initialisation.
pub fn load_body(vs: &mut VarStore, path: &Path) -> Result<usize> {
    let tensors = read_weights(path)
        .with_context(|| format!("loading ImageNet weights from {}", path.display()))?;
    let tensors = tensors
        .into_iter()
        .map(|(k, v)| (k, v.to_kind(Kind::Float)))
        .collect();
    checkpoint::copy_into(vs, &tensors, Expect::Body, path)
}
