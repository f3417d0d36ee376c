//! torchvision's ImageNet weights, converted once from its `.pth` to `.safetensors` by
//! `scripts/convert-weights` (what `just fetch-weights` runs), load into the body by
//! torchvision's names; `--freeze-backbone` then trains the head only.

mod common;

use std::path::Path;
use std::process::Command;

use seg_host::checkpoint::read_tensors;
use seg_host::model::{is_head, Fcn};
use seg_host::train::pixel_loss;
use seg_host::weights::load_body;
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// `scripts/convert-weights ARGS`, with the reference Python.
fn convert_weights(args: &[&Path]) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/convert-weights");
    Command::new(script)
        .args(args)
        .env("SEGCAM_PYTHON", common::python())
        .output()
        .expect("scripts/convert-weights runs")
}

#[test]
fn torchvision_weights_converted_from_pth_load_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_python(&[
        common::reference_script("torchvision_weights.py").as_str(),
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.contains("122 tensors"), "{out}");
    // What torchvision's state dict holds, written by safetensors' own Python.
    let expected = read_tensors(&dir.path().join("resnet18.safetensors")).unwrap();

    let pth = dir.path().join("resnet18.pth");
    let converted = dir.path().join("converted.safetensors");
    let run = convert_weights(&[&pth, &converted]);
    let said =
        String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success() && said.contains("122 tensors"),
        "{said}"
    );

    let mut vs = nn::VarStore::new(Device::Cpu);
    let _net = Fcn::new(&vs.root(), 21);
    let head_before = vs.variables()["final_conv.weight"].copy();
    let loaded = load_body(&mut vs, &converted).unwrap();
    assert_eq!(loaded, 100, "every body tensor, no head");
    let vars = vs.variables();
    for (name, var) in &vars {
        if !is_head(name) {
            assert!(
                var.equal(&expected[name]),
                "{name} differs from torchvision's"
            );
        }
    }
    assert!(
        vars["final_conv.weight"].equal(&head_before),
        "the head keeps its start"
    );

    // The .pth itself is refused with the command that converts it.
    let msg = format!("{:#}", load_body(&mut vs, &pth).unwrap_err());
    assert!(
        msg.contains("resnet18.pth") && msg.contains("just convert-weights"),
        "{msg}"
    );
    // Not a weights file: the converter says so and writes nothing.
    let junk = dir.path().join("junk.pth");
    std::fs::write(&junk, b"not a pickle").unwrap();
    let bad_out = dir.path().join("junk.safetensors");
    let run = convert_weights(&[&junk, &bad_out]);
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && said.contains("junk.pth"), "{said}");
    assert!(
        !bad_out.exists()
            && std::fs::read_dir(dir.path())
                .unwrap()
                .all(|e| { !e.unwrap().file_name().to_string_lossy().contains(".tmp-") })
    );
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
        msg.contains("weights.bin") && msg.contains(".safetensors"),
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
