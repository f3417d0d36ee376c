//! The FCN of Long, Shelhamer and Darrell as d2l builds it: a ResNet-18 body with
//! torchvision's layout and parameter names (so torchvision's ImageNet weights load
//! unchanged), a 1×1 convolution to class scores, and a 32× transposed convolution
//! initialised as bilinear interpolation.

use tch::nn::{self, ConvConfig, ModuleT};
use tch::{Kind, Tensor};

/// The output stride of the body: inputs must be multiples of it.
pub const STRIDE: i64 = 32;

/// The network's input (an export size, a crop) must be a whole number of output strides.
pub fn check_size(height: u32, width: u32) -> anyhow::Result<()> {
    let s = STRIDE as u32;
    let max = segcam::card::MAX_SIDE;
    if height > max || width > max {
        anyhow::bail!(
            "size {height}×{width} (height×width): a side may be at most {max} (the model card's limit)"
        );
    }
    if height == 0 || width == 0 || !height.is_multiple_of(s) || !width.is_multiple_of(s) {
        let near = |v: u32| (v / s).max(1) * s;
        anyhow::bail!(
            "size {height}×{width} (height×width): both must be positive multiples of {s}, the network's output stride (e.g. {}×{})",
            near(height),
            near(width)
        );
    }
    Ok(())
}

/// Channels out of the ResNet-18 body.
pub const BODY_CHANNELS: i64 = 512;
/// Names of the head's layers (d2l's names).
pub const FINAL_CONV: &str = "final_conv";
pub const TRANSPOSE_CONV: &str = "transpose_conv";

/// The network. Built inside a `VarStore` whose variable names are the checkpoint's.
#[derive(Debug)]
pub struct Fcn {
    body: Body,
    final_conv: nn::Conv2D,
    transpose_conv: nn::ConvTranspose2D,
    classes: i64,
    frozen_body: bool,
}

impl Fcn {
    pub fn new(root: &nn::Path, classes: i64) -> Self {
        let body = Body::new(root);
        let final_conv = nn::conv2d(
            root / FINAL_CONV,
            BODY_CHANNELS,
            classes,
            1,
            torch_default_conv(),
        );
        let transpose_conv = nn::conv_transpose2d(
            root / TRANSPOSE_CONV,
            classes,
            classes,
            2 * STRIDE,
            nn::ConvTransposeConfig {
                stride: STRIDE,
                padding: STRIDE / 2,
                ws_init: nn::Init::Const(0.0),
                bs_init: nn::Init::Const(0.0),
                ..Default::default()
            },
        );
        tch::no_grad(|| {
            let mut ws = transpose_conv.ws.shallow_clone();
            ws.copy_(&bilinear_kernel(classes, classes, 2 * STRIDE).to_device(ws.device()));
        });
        Self {
            body,
            final_conv,
            transpose_conv,
            classes,
            frozen_body: false,
        }
    }

    pub fn classes(&self) -> i64 {
        self.classes
    }

    /// Train the head only: the body's batch norms then also keep their statistics.
    pub fn freeze_body(&mut self, vs: &nn::VarStore) {
        for (name, mut var) in vs.variables() {
            if !is_head(&name) {
                let _ = var.requires_grad_(false);
            }
        }
        self.frozen_body = true;
    }
}

/// Whether a parameter name belongs to the head (the part trained with a frozen body).
pub fn is_head(name: &str) -> bool {
    name.starts_with(FINAL_CONV) || name.starts_with(TRANSPOSE_CONV)
}

impl ModuleT for Fcn {
    /// `xs`: N×3×H×W normalised images, H and W multiples of 32 → N×C×H×W logits.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let features = self.body.forward_t(xs, train && !self.frozen_body);
        features.apply(&self.final_conv).apply(&self.transpose_conv)
    }
}

/// PyTorch's default `Conv2d` initialisation (Kaiming uniform with a = √5, bias
/// uniform in ±1/√fan_in), which d2l's head starts from.
fn torch_default_conv() -> ConvConfig {
    ConvConfig {
        ws_init: nn::Init::Kaiming {
            dist: nn::init::NormalOrUniform::Uniform,
            fan: nn::init::FanInOut::FanIn,
            non_linearity: nn::init::NonLinearity::ExplicitGain((1.0f64 / 3.0).sqrt()),
        },
        bs_init: nn::Init::Uniform {
            lo: -1.0 / (BODY_CHANNELS as f64).sqrt(),
            up: 1.0 / (BODY_CHANNELS as f64).sqrt(),
        },
        ..Default::default()
    }
}

/// The seed's `bilinear_kernel`: a transposed-convolution weight (in × out × k × k)
/// that performs bilinear upsampling channel by channel.
pub fn bilinear_kernel(in_channels: i64, out_channels: i64, kernel_size: i64) -> Tensor {
    let factor = (kernel_size + 1) / 2;
    let center = if kernel_size % 2 == 1 {
        (factor - 1) as f64
    } else {
        factor as f64 - 0.5
    };
    let og = Tensor::arange(kernel_size, (Kind::Float, tch::Device::Cpu));
    let ramp: Tensor = 1.0 - (og - center).abs() / factor as f64;
    let filt = ramp.reshape([-1, 1]) * ramp.reshape([1, -1]);
    let weight = Tensor::zeros(
        [in_channels, out_channels, kernel_size, kernel_size],
        (Kind::Float, tch::Device::Cpu),
    );
    for c in 0..in_channels.min(out_channels) {
        weight.get(c).get(c).copy_(&filt);
    }
    weight
}

/// torchvision's ResNet-18 without `avgpool` and `fc`: N×3×H×W → N×512×H/32×W/32.
#[derive(Debug)]
struct Body {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    layers: Vec<BasicBlock>,
}

impl Body {
    fn new(p: &nn::Path) -> Self {
        let conv1 = nn::conv2d(p / "conv1", 3, 64, 7, conv_cfg(2, 3));
        let bn1 = batch_norm(p / "bn1", 64);
        let mut layers = Vec::new();
        let mut in_c = 64;
        for (i, &(out_c, stride)) in [(64, 1), (128, 2), (256, 2), (512, 2)].iter().enumerate() {
            let layer = p / format!("layer{}", i + 1);
            layers.push(BasicBlock::new(&(&layer / "0"), in_c, out_c, stride));
            layers.push(BasicBlock::new(&(&layer / "1"), out_c, out_c, 1));
            in_c = out_c;
        }
        Self { conv1, bn1, layers }
    }
}

impl ModuleT for Body {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs
            .apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .relu()
            .max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for block in &self.layers {
            x = block.forward_t(&x, train);
        }
        x
    }
}

#[derive(Debug)]
struct BasicBlock {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl BasicBlock {
    fn new(p: &nn::Path, in_c: i64, out_c: i64, stride: i64) -> Self {
        let downsample = (stride != 1 || in_c != out_c).then(|| {
            let d = p / "downsample";
            (
                nn::conv2d(&d / "0", in_c, out_c, 1, conv_cfg(stride, 0)),
                batch_norm(&d / "1", out_c),
            )
        });
        Self {
            conv1: nn::conv2d(p / "conv1", in_c, out_c, 3, conv_cfg(stride, 1)),
            bn1: batch_norm(p / "bn1", out_c),
            conv2: nn::conv2d(p / "conv2", out_c, out_c, 3, conv_cfg(1, 1)),
            bn2: batch_norm(p / "bn2", out_c),
            downsample,
        }
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let y = xs
            .apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .relu()
            .apply(&self.conv2)
            .apply_t(&self.bn2, train);
        let shortcut = match &self.downsample {
            Some((conv, bn)) => xs.apply(conv).apply_t(bn, train),
            None => xs.shallow_clone(),
        };
        (y + shortcut).relu()
    }
}

/// torchvision's ResNet convolutions: no bias, Kaiming normal (fan out, ReLU).
fn conv_cfg(stride: i64, padding: i64) -> ConvConfig {
    ConvConfig {
        stride,
        padding,
        bias: false,
        ws_init: nn::Init::Kaiming {
            dist: nn::init::NormalOrUniform::Normal,
            fan: nn::init::FanInOut::FanOut,
            non_linearity: nn::init::NonLinearity::ReLU,
        },
        ..Default::default()
    }
}

/// torchvision's batch norm: weight 1, bias 0, eps 1e-5, momentum 0.1.
fn batch_norm(p: nn::Path, channels: i64) -> nn::BatchNorm {
    nn::batch_norm2d(
        p,
        channels,
        nn::BatchNormConfig {
            ws_init: nn::Init::Const(1.0),
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_multiples_of_the_stride() {
        assert!(check_size(320, 480).is_ok());
        let msg = check_size(300, 480).unwrap_err().to_string();
        assert!(
            msg.contains("300×480") && msg.contains("32") && msg.contains("288×480"),
            "{msg}"
        );
        assert!(check_size(0, 32).is_err());
    }

    #[test]
    fn bilinear_kernel_matches_the_seed_formula() {
        // k = 4: factor 2, centre 1.5, 1-D ramp [0.25, 0.75, 0.75, 0.25].
        let w = bilinear_kernel(2, 2, 4);
        assert_eq!(w.size(), [2, 2, 4, 4]);
        let ramp = [0.25f32, 0.75, 0.75, 0.25];
        for i in 0..4 {
            for j in 0..4 {
                let v = w.double_value(&[1, 1, i, j]) as f32;
                assert!((v - ramp[i as usize] * ramp[j as usize]).abs() < 1e-7);
            }
        }
        assert_eq!(
            w.get(0).get(1).abs().sum(Kind::Float).double_value(&[]),
            0.0
        );
    }

    #[test]
    fn output_has_the_input_size_and_torchvision_names() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let net = Fcn::new(&vs.root(), 5);
        let x = Tensor::randn([2, 3, 64, 96], (Kind::Float, tch::Device::Cpu));
        assert_eq!(net.forward_t(&x, false).size(), [2, 5, 64, 96]);
        let vars = vs.variables();
        for name in [
            "conv1.weight",
            "bn1.running_var",
            "layer1.0.conv1.weight",
            "layer2.0.downsample.0.weight",
            "layer4.1.bn2.bias",
            "final_conv.weight",
            "transpose_conv.weight",
        ] {
            assert!(vars.contains_key(name), "missing {name}");
        }
        // torchvision's resnet18: 122 tensors less fc (2) and num_batches_tracked (20).
        assert_eq!(vars.keys().filter(|k| !is_head(k)).count(), 100);
    }

    #[test]
    fn the_bilinear_start_upsamples_a_constant_map_to_a_constant() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let net = Fcn::new(&vs.root(), 3);
        let x = Tensor::ones([1, 3, 4, 4], (Kind::Float, tch::Device::Cpu));
        let up = x.apply(&net.transpose_conv);
        assert_eq!(up.size(), [1, 3, 128, 128]);
        // Away from the borders bilinear interpolation of a constant is that constant.
        let inner = up.narrow(2, 32, 64).narrow(3, 32, 64);
        assert!((inner - 1.0).abs().max().double_value(&[]) < 1e-5);
    }
}
