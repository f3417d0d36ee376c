//! torchvision's ImageNet weights load into the body from `.pth` (torchvision's own
//! format) and `.safetensors` alike; `--freeze-backbone` then trains the head only.

mod common;

use seg_host::checkpoint::read_tensors;
use seg_host::model::{is_head, Fcn};
use seg_host::train::pixel_loss;
use seg_host::weights::load_body;
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

#[test]
fn torchvision_weights_load_from_pth_and_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_python(&[
        common::reference_script("torchvision_weights.py").as_str(),
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.contains("122 tensors"), "{out}");
    let expected = read_tensors(&dir.path().join("resnet18.safetensors")).unwrap();
    for file in ["resnet18.pth", "resnet18.safetensors"] {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let _net = Fcn::new(&vs.root(), 21);
        let head_before = vs.variables()["final_conv.weight"].copy();
        let loaded = load_body(&mut vs, &dir.path().join(file)).unwrap();
        assert_eq!(loaded, 100, "{file}: every body tensor, no head");
        let vars = vs.variables();
        for (name, var) in &vars {
            if is_head(name) {
                continue;
            }
            assert!(
                var.equal(&expected[name]),
                "{file}: {name} differs from torchvision's"
            );
        }
        assert!(
            vars["final_conv.weight"].equal(&head_before),
            "the head keeps its start"
        );
    }
}

#[test]
fn weights_of_another_network_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.safetensors");
    Tensor::write_safetensors(
        &[(
            "encoder.0.weight",
            Tensor::zeros([4, 3], (Kind::Float, Device::Cpu)),
        )],
        &path,
    )
    .unwrap();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let _net = Fcn::new(&vs.root(), 21);
    let msg = format!("{:#}", load_body(&mut vs, &path).unwrap_err());
    assert!(
        msg.contains("other.safetensors") && msg.contains("missing"),
        "{msg}"
    );
    let msg = format!(
        "{:#}",
        load_body(&mut vs, &dir.path().join("weights.bin")).unwrap_err()
    );
    assert!(
        msg.contains(".pth") && msg.contains(".safetensors"),
        "{msg}"
    );
}

#[test]
fn a_frozen_backbone_trains_the_head_only() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut net = Fcn::new(&vs.root(), 3);
    net.freeze_body(&vs);
    let before: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.copy()))
        .collect();
    let mut opt = nn::Sgd {
        momentum: 0.9,
        dampening: 0.0,
        wd: 1e-3,
        nesterov: false,
    }
    .build(&vs, 0.1)
    .unwrap();
    let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(3, [2, 64, 64], (Kind::Int64, Device::Cpu));
    opt.backward_step(&pixel_loss(&net.forward_t(&x, true), &y));
    let after = vs.variables();
    for (name, old) in before {
        let moved = !after[&name].equal(&old);
        assert_eq!(moved, is_head(&name), "{name}: moved = {moved}");
    }
}
