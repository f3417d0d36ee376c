//! Same maths as PyTorch: the reference FCN built in PyTorch + torchvision (the venv
//! that supplies libtorch) with identical weights, exchanged through safetensors.
//! Forward logits agree to 1e-4, parameters after one SGD step with weight decay to
//! 1e-5, and the checkpoint's body loads into torchvision's resnet18 strictly.

mod common;

use seg_host::checkpoint::{self, CheckpointInfo};
use seg_host::model::{bilinear_kernel, Fcn};
use seg_host::train::pixel_loss;
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

const CLASSES: i64 = 5;
const LR: f64 = 0.01;
const WD: f64 = 1e-3;
const MOMENTUM: f64 = 0.9;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a - b).abs().max().double_value(&[])
}

#[test]
fn tch_fcn_matches_pytorch_forward_and_one_sgd_step() {
    tch::manual_seed(3);
    let dir = tempfile::tempdir().unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Fcn::new(&vs.root(), CLASSES);
    // Non-trivial running statistics, so evaluation mode is really exercised.
    tch::no_grad(|| {
        for (name, mut v) in vs.variables() {
            if name.ends_with("running_mean") {
                v.copy_(&(Tensor::randn(v.size(), (Kind::Float, Device::Cpu)) * 0.1));
            } else if name.ends_with("running_var") {
                v.copy_(&(Tensor::rand(v.size(), (Kind::Float, Device::Cpu)) + 0.5));
            }
        }
    });
    let info = CheckpointInfo {
        format_version: checkpoint::FORMAT_VERSION,
        architecture: checkpoint::ARCHITECTURE.into(),
        classes: segcam::ClassList::new(
            (0..CLASSES)
                .map(|i| (format!("c{i}"), segcam::classes::voc_colour(i as u8)))
                .collect(),
        )
        .unwrap(),
        normalization: segcam::IMAGENET,
        crop: [64, 96],
        epoch: 0,
        step: 0,
        history: vec![],
        config: serde_json::Value::Null,
        class_distribution: None,
    };
    checkpoint::save(&vs, &info, &dir.path().join("checkpoint.safetensors")).unwrap();

    let x = Tensor::randn([2, 3, 64, 96], (Kind::Float, Device::Cpu));
    let labels = Tensor::randint(CLASSES, [2, 64, 96], (Kind::Int64, Device::Cpu));
    // A void band, as VOC has along object borders.
    let _ = labels.narrow(1, 10, 3).fill_(255);
    let scalar = |v: f64| Tensor::from_slice(&[v as f32]);
    Tensor::write_safetensors(
        &[
            ("x", x.shallow_clone()),
            ("labels", labels.shallow_clone()),
            ("lr", scalar(LR)),
            ("wd", scalar(WD)),
            ("momentum", scalar(MOMENTUM)),
        ],
        dir.path().join("inputs.safetensors"),
    )
    .unwrap();

    common::run_python(&[
        common::reference_script("fcn_reference.py").as_str(),
        dir.path().to_str().unwrap(),
    ]);
    let reference: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.path().join("reference.safetensors"))
            .unwrap()
            .into_iter()
            .collect();

    assert_eq!(
        max_abs_diff(
            &bilinear_kernel(CLASSES, CLASSES, 64),
            &reference["bilinear"]
        ),
        0.0
    );

    let logits = tch::no_grad(|| net.forward_t(&x, false));
    let diff = max_abs_diff(&logits, &reference["logits_eval"]);
    assert!(
        diff <= 1e-4,
        "eval-mode logits differ from PyTorch by {diff}"
    );
    assert!(
        logits.abs().max().double_value(&[]) > 1e-3,
        "logits are trivially small"
    );

    let mut opt = nn::Sgd {
        momentum: MOMENTUM,
        dampening: 0.0,
        wd: WD,
        nesterov: false,
    }
    .build(&vs, LR)
    .unwrap();
    let loss = pixel_loss(&net.forward_t(&x, true), &labels);
    let loss_diff = (loss.double_value(&[]) - reference["loss"].double_value(&[0])).abs();
    assert!(
        loss_diff <= 1e-4,
        "loss differs from PyTorch by {loss_diff}"
    );
    opt.backward_step(&loss);

    let after = vs.variables();
    let mut checked = 0;
    let mut worst = (0.0, String::new());
    for (name, ours) in &after {
        let theirs = &reference[&format!("after.{name}")];
        let d = max_abs_diff(ours, theirs);
        if d > worst.0 {
            worst = (d, name.clone());
        }
        checked += 1;
    }
    assert_eq!(checked, 104, "every parameter and statistic compared");
    eprintln!("max abs diff vs PyTorch: logits {diff:.2e}, loss {loss_diff:.2e}, after one step {:.2e} ({})", worst.0, worst.1);
    assert!(
        worst.0 <= 1e-5,
        "after one SGD step '{}' differs from PyTorch by {}",
        worst.1,
        worst.0
    );
    // The step really moved the weights (a no-op optimiser would pass the check above).
    let before = checkpoint::read_tensors(&dir.path().join("checkpoint.safetensors")).unwrap();
    assert!(max_abs_diff(&after["final_conv.weight"], &before["final_conv.weight"]) > 1e-6);
}
