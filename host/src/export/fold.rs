//! Batch norm folded into the convolution before it: in evaluation mode
//! `bn(conv(x)) = conv'(x)` with `w' = w·γ/√(var+ε)` per output channel and
//! `b' = β − mean·γ/√(var+ε)` (plus the conv's own bias, scaled, if it has one).

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

/// PyTorch's (and tch's) batch norm epsilon.
pub const BN_EPS: f64 = 1e-5;

/// A convolution's weight and bias, f32 on the CPU.
#[derive(Debug)]
pub struct ConvParams {
    pub weight: Tensor,
    pub bias: Tensor,
}

/// The convolution `conv` (a parameter prefix such as `layer1.0.conv1`) with the
/// batch norm `bn` folded in, or with its own bias (zeros if none) when `bn` is `None`.
pub fn conv_params(
    tensors: &HashMap<String, Tensor>,
    conv: &str,
    bn: Option<&str>,
) -> Result<ConvParams> {
    let get = |name: String| {
        tensors
            .get(&name)
            .map(|t| t.to_device(tch::Device::Cpu).to_kind(Kind::Double))
            .with_context(|| format!("the weights have no '{name}'"))
    };
    let weight = get(format!("{conv}.weight"))?;
    let out_channels = weight.size()[0];
    let bias = match tensors.contains_key(&format!("{conv}.bias")) {
        true => get(format!("{conv}.bias"))?,
        false => Tensor::zeros([out_channels], (Kind::Double, tch::Device::Cpu)),
    };
    let (weight, bias) = match bn {
        None => (weight, bias),
        Some(bn) => {
            let [gamma, beta, mean, var] =
                ["weight", "bias", "running_mean", "running_var"].map(|p| get(format!("{bn}.{p}")));
            let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
            if gamma.size() != [out_channels] {
                bail!(
                    "'{bn}' normalises {:?} channels, '{conv}' has {out_channels}",
                    gamma.size()
                );
            }
            let scale = gamma / (var + BN_EPS).sqrt();
            let weight = &weight * scale.view([-1, 1, 1, 1]);
            let bias = beta + (bias - mean) * &scale;
            (weight, bias)
        }
    };
    Ok(ConvParams {
        weight: weight.to_kind(Kind::Float),
        bias: bias.to_kind(Kind::Float),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn;

    #[test]
    fn a_folded_conv_equals_conv_then_batch_norm_in_eval_mode() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let conv = nn::conv2d(
            vs.root() / "c",
            4,
            6,
            3,
            nn::ConvConfig {
                stride: 2,
                padding: 1,
                bias: false,
                ..Default::default()
            },
        );
        let bn = nn::batch_norm2d(vs.root() / "bn", 6, Default::default());
        tch::no_grad(|| {
            let vars = vs.variables();
            for (name, lo, hi) in [
                ("bn.weight", 0.5, 1.5),
                ("bn.bias", -0.5, 0.5),
                ("bn.running_mean", -1.0, 1.0),
                ("bn.running_var", 0.2, 3.0),
            ] {
                let mut v = vars[name].shallow_clone();
                let _ = v.uniform_(lo, hi);
            }
        });
        let x = Tensor::randn([2, 4, 9, 7], (Kind::Float, tch::Device::Cpu));
        let want = tch::no_grad(|| x.apply(&conv).apply_t(&bn, false));
        let p = conv_params(&vs.variables(), "c", Some("bn")).unwrap();
        let got = x.conv2d(&p.weight, Some(&p.bias), [2, 2], [1, 1], [1, 1], 1);
        let diff = (got - want).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "max diff {diff}");
    }

    #[test]
    fn missing_parameters_are_named() {
        let msg = conv_params(&HashMap::new(), "layer9.0.conv1", None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("layer9.0.conv1.weight"), "{msg}");
    }
}
