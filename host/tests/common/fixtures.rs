//! Models and data for the export and quantization tests: a seeded random FCN saved
//! as a checkpoint, scene images, and assertions on refusals.

use std::path::{Path, PathBuf};

use image::RgbImage;
use seg_host::checkpoint::{self, CheckpointInfo, EpochRecord};
use seg_host::model::Fcn;
use segcam::ClassList;
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

pub fn class_list(classes: usize) -> ClassList {
    ClassList::new(
        (0..classes)
            .map(|i| (format!("c{i}"), segcam::classes::voc_colour(i as u8)))
            .collect(),
    )
    .unwrap()
}

pub fn info(classes: &ClassList) -> CheckpointInfo {
    CheckpointInfo {
        format_version: checkpoint::FORMAT_VERSION,
        architecture: checkpoint::ARCHITECTURE.into(),
        classes: classes.clone(),
        normalization: segcam::IMAGENET,
        crop: [64, 96],
        epoch: 1,
        step: 10,
        history: vec![EpochRecord {
            epoch: 1,
            lr: 1e-3,
            train_loss: 1.0,
            train_pixel_acc: 0.5,
            images_per_sec: 1.0,
            val_pixel_acc: 0.61,
            val_miou: 0.25,
            val_class_iou: vec![],
            val_images: 7,
            seconds: 1.0,
        }],
        config: serde_json::Value::Null,
        class_distribution: None,
    }
}

/// A seeded random FCN saved as a checkpoint: random batch-norm affine parameters,
/// running statistics gathered from a few random batches (so activations stay at a
/// realistic scale), and a perturbed upsampler (so it is not the bilinear start).
pub fn random_checkpoint(
    dir: &Path,
    classes: &ClassList,
    seed: i64,
) -> (PathBuf, nn::VarStore, Fcn) {
    // tch's generator is global: tests of one binary run on parallel threads, so the
    // seeding and every draw happen under one lock, or the seed would not fix the model.
    static DRAWING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = DRAWING.lock().unwrap_or_else(|p| p.into_inner());
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Fcn::new(&vs.root(), classes.len() as i64);
    let opts = (Kind::Float, Device::Cpu);
    tch::no_grad(|| {
        // By name: the store's map has no order, and the seed must give the same model.
        let mut variables: Vec<_> = vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, mut v) in variables {
            if name.ends_with("bn1.weight")
                || name.ends_with("bn2.weight")
                || name.ends_with(".1.weight")
            {
                let _ = v.uniform_(0.5, 1.5);
            } else if name.contains("bn") && name.ends_with(".bias")
                || name.ends_with("downsample.1.bias")
            {
                let _ = v.uniform_(-0.3, 0.3);
            } else if name == "transpose_conv.weight" {
                v.copy_(&(&v + Tensor::randn(v.size(), opts) * 0.01));
            } else if name == "transpose_conv.bias" {
                let _ = v.uniform_(-0.1, 0.1);
            }
        }
        for _ in 0..10 {
            let _ = net.forward_t(&Tensor::randn([2, 3, 64, 64], opts), true);
        }
    });
    // Make sure folding has something to fold.
    let var = &vs.variables()["layer2.0.bn1.running_var"];
    assert!((var - 1.0).abs().max().double_value(&[]) > 0.05);
    let path = dir.join("fcn.safetensors");
    checkpoint::save(&vs, &info(classes), &path).unwrap();
    (path, vs, net)
}

pub fn images(count: usize, width: u32, height: u32) -> Vec<RgbImage> {
    (0..count)
        .map(|k| segcam::scene::render(11, k as u64, width, height).image)
        .collect()
}

pub fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max)
}

/// Files in `dir`, sorted by name.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Assert that `result` failed with a message containing each of `words`.
pub fn refused<T: std::fmt::Debug>(result: anyhow::Result<T>, words: &[&str]) {
    let msg = format!("{:#}", result.unwrap_err());
    for w in words {
        assert!(msg.contains(w), "'{w}' not in: {msg}");
    }
}

/// onnxruntime's logits for `inputs` (each 3×h×w, normalised) through
/// `reference/check_onnx.py`, which first checks the file with `onnx.checker`, its
/// opset and its card. Works in `dir`.
pub fn onnxruntime_logits(
    model: &Path,
    dir: &Path,
    inputs: &[Vec<f32>],
    h: u32,
    w: u32,
) -> Vec<f32> {
    let x = Tensor::from_slice(&inputs.concat()).view([inputs.len() as i64, 3, h as i64, w as i64]);
    Tensor::write_safetensors(&[("x", x)], dir.join("inputs.safetensors")).unwrap();
    let said = super::run_python(&[
        super::reference_script("check_onnx.py").as_str(),
        model.to_str().unwrap(),
        dir.to_str().unwrap(),
    ]);
    eprintln!("{said}");
    let ort = Tensor::read_safetensors(dir.join("onnxruntime.safetensors")).unwrap();
    Vec::try_from(ort[0].1.flatten(0, -1)).unwrap()
}
