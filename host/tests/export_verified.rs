//! Export verified three ways, on an FCN with random weights (seeded) and random
//! batch-norm statistics, so that folding is really exercised:
//!   (a) the board's engine (tract) on the written file agrees with tch within 1e-3,
//!       and export refuses to write when it does not;
//!   (b) `onnx.checker` and onnxruntime accept the file and agree with tch within 1e-3;
//!   (c) the engine's class map equals tch's argmax on at least 99.9% of pixels.
//! Plus the ways a file or checkpoint can be wrong, each refused by name with no output
//! file left behind.

mod common;

use common::fixtures::{
    class_list, images, info, listing, max_abs, onnxruntime_logits, random_checkpoint, refused,
};

use std::path::Path;

use seg_host::checkpoint;
use seg_host::eval::{EvalOptions, EvalSource};
use seg_host::export::{self, verify, ExportOptions, Upsampler};
use segcam::engine::{argmax, EngineChoice, EngineOptions};
use segcam::onnx_card;
use segcam::Engine;
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-3;

#[test]
fn exported_models_agree_with_tch_tract_and_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, _vs, net) = random_checkpoint(dir.path(), &class_list(6), 7);
    let (h, w) = (320u32, 480u32);
    let pictures = images(2, w, h);
    let inputs = verify::normalised(&pictures, &segcam::IMAGENET);
    let reference = verify::tch_logits(&net, &inputs, w, h);
    let classes = 6;

    for upsampler in [Upsampler::DepthToSpace, Upsampler::Convtranspose] {
        let out = dir.path().join(format!("{upsampler:?}.onnx"));
        let mut opts = ExportOptions::new(ckpt.clone(), out.clone());
        opts.upsampler = upsampler;
        opts.threads = 2;
        let report = export::export(&opts).unwrap();
        assert!(report.agreement.max_abs_diff as f64 <= TOLERANCE);
        let card = onnx_card::read_card(&out).unwrap();
        assert_eq!(card, report.card);
        assert_eq!((card.input_height, card.input_width), (h, w));
        let trained = card.training_validation.unwrap();
        assert_eq!((trained.pixel_accuracy, trained.images), (0.61, 7));
        assert!(card.export_validation.is_none());

        // (a) The written file through both engines, on images export did not see.
        let mut logits = Vec::new();
        for choice in [EngineChoice::Tract, EngineChoice::Onnxruntime] {
            let engine = Engine::open(&out, &EngineOptions::tract(2).with_engine(choice)).unwrap();
            assert_eq!(engine.kind().name(), choice.name());
            for (x, want) in inputs.iter().zip(&reference) {
                let segcam::engine::Output::Logits(got) = engine.run(x).unwrap() else {
                    panic!("logits expected");
                };
                let diff = max_abs(&got, want);
                let scale = max_abs(want, &vec![0.0; want.len()]);
                eprintln!(
                    "{upsampler:?}: {choice} vs tch max abs diff {diff:.2e} (logits up to {scale:.2})"
                );
                assert!(diff <= TOLERANCE, "{upsampler:?}: {choice} vs tch {diff}");
                assert!(scale > 0.5, "logits too small to test anything: {scale}");
                if choice == EngineChoice::Tract {
                    logits.push(got);
                }
            }

            // (c) Class maps: ≥ 99.9% of pixels agree with tch's argmax.
            let (mut same, mut total) = (0, 0);
            for (picture, want) in pictures.iter().zip(&reference) {
                let ours = engine.classify(picture).unwrap();
                let theirs = argmax(want, classes, w, h);
                same += ours
                    .as_raw()
                    .iter()
                    .zip(theirs.as_raw())
                    .filter(|(a, b)| a == b)
                    .count();
                total += ours.as_raw().len();
                let used = theirs
                    .as_raw()
                    .iter()
                    .collect::<std::collections::HashSet<_>>()
                    .len();
                assert!(used > 1, "a one-class map tests nothing");
            }
            let agreement = same as f64 / total as f64;
            assert!(
                agreement >= 0.999,
                "{upsampler:?}: {choice} class maps agree with tch on {agreement}"
            );
        }

        // (b) onnx.checker and onnxruntime.
        let ort = onnxruntime_logits(&out, dir.path(), &inputs, h, w);
        let diff = max_abs(&ort, &reference.concat());
        eprintln!("{upsampler:?}: onnxruntime vs tch max abs diff {diff:.2e}");
        assert!(
            diff <= TOLERANCE,
            "{upsampler:?}: onnxruntime vs tch {diff}"
        );
        assert!(max_abs(&ort, &logits.concat()) <= TOLERANCE);
    }
    // Only the two models, the checkpoint and the test's own files: no temporaries.
    assert!(listing(dir.path()).iter().all(|n| !n.ends_with(".tmp")));
}

#[test]
fn export_refuses_to_write_what_it_cannot_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, _vs, _net) = random_checkpoint(dir.path(), &class_list(3), 1);
    let out = dir.path().join("m.onnx");
    std::fs::write(&out, b"an earlier export").unwrap();
    let before = listing(dir.path());
    let mut opts = ExportOptions::new(ckpt, out.clone());
    (opts.height, opts.width, opts.samples) = (64, 96, 1);
    // No two engines agree to zero: the check must fail and nothing may be written.
    opts.tolerance = 0.0;
    let msg = format!("{:#}", export::export(&opts).unwrap_err());
    assert!(
        msg.contains("m.onnx") && msg.contains("not written") && msg.contains("tolerance"),
        "{msg}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"an earlier export");
    assert_eq!(listing(dir.path()), before);
}

#[test]
fn export_validation_and_eval_go_through_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (h, w) = (64u32, 96u32);
    seg_host::synth::write_dataset(
        &seg_host::synth::SynthOptions {
            out: data.clone(),
            count: 6,
            seed: 3,
            height: 72,
            width: 100,
            val_fraction: 0.5,
        },
        &|_| {},
    )
    .unwrap();
    let class_list = seg_host::dataset::VocDataset::classes_in(&data).unwrap();
    let classes = class_list.len();
    let (ckpt, _vs, _net) = random_checkpoint(dir.path(), &class_list, 2);
    let out = dir.path().join("m.onnx");
    let mut opts = ExportOptions::new(ckpt, out.clone());
    (opts.height, opts.width) = (h, w);
    opts.data = Some(data.clone());
    let report = export::export(&opts).unwrap();
    let figures = report
        .card
        .export_validation
        .expect("export validation figures");
    assert_eq!(figures.images, 3);
    assert!((0.0..=1.0).contains(&figures.pixel_accuracy));
    assert_eq!(onnx_card::read_card(&out).unwrap(), report.card);

    let eval_out = dir.path().join("eval");
    let mut args = EvalOptions::new(EvalSource::Model(out.clone()), data);
    args.device = "cpu".into();
    args.out = eval_out.clone();
    args.engine.threads = 1;
    // The export's figures were measured in tract: the same engine reads them back exactly.
    args.engine.engine = EngineChoice::Tract;
    seg_host::eval::run(&args).unwrap();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval_out.join("eval.json")).unwrap())
            .unwrap();
    assert_eq!(summary["images"], 3);
    assert!((summary["pixel_accuracy"].as_f64().unwrap() - figures.pixel_accuracy).abs() < 1e-12);
    assert!((summary["mean_iou"].as_f64().unwrap() - figures.mean_iou).abs() < 1e-12);
    assert_eq!(summary["class_iou"].as_array().unwrap().len(), classes);
    assert!(eval_out.join("confusion.png").is_file());
    assert!(eval_out.join("predictions.png").is_file());

    let mut wrong = args;
    wrong.crop = Some((32, 32));
    let msg = format!("{:#}", seg_host::eval::run(&wrong).unwrap_err());
    assert!(msg.contains("m.onnx") && msg.contains("64×96"), "{msg}");
}

#[test]
fn bad_models_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, _vs, _net) = random_checkpoint(dir.path(), &class_list(3), 4);
    let good = dir.path().join("good.onnx");
    let mut opts = ExportOptions::new(ckpt, good.clone());
    (opts.height, opts.width, opts.samples) = (64, 64, 1);
    export::export(&opts).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let load = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        Engine::load(&path, 1).map_err(anyhow::Error::from)
    };

    refused(
        load("truncated.onnx", &bytes[..bytes.len() / 2]),
        &["truncated.onnx", "not an ONNX model"],
    );
    refused(
        load("empty.onnx", b""),
        &["empty.onnx", "not an ONNX model"],
    );
    refused(
        load("picture.onnx", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
        &["picture.onnx", "not an ONNX model"],
    );
    refused(
        load("text.onnx", b"hello, I am not a model\n"),
        &["text.onnx", "not an ONNX model"],
    );
    refused(
        Engine::load(&dir.path().join("missing.onnx"), 1).map_err(anyhow::Error::from),
        &["missing.onnx"],
    );

    let model = onnx_card::decode(&bytes).unwrap();
    let card = onnx_card::card_of(&model).unwrap();
    let with = |f: &dyn Fn(&mut onnx_card::pb::ModelProto)| {
        let mut m = model.clone();
        f(&mut m);
        onnx_card::encode(&m)
    };
    refused(
        load("no_card.onnx", &with(&|m| m.metadata_props.clear())),
        &["no_card.onnx", "no segcam model card", "segcam.model_card"],
    );
    refused(
        load(
            "v99.onnx",
            &with(&|m| {
                let mut v: serde_json::Value = serde_json::from_str(&card.to_json()).unwrap();
                v["format_version"] = 99.into();
                m.metadata_props[0].value = v.to_string();
            }),
        ),
        &["v99.onnx", "version 99"],
    );
    refused(
        load(
            "bad_json.onnx",
            &with(&|m| m.metadata_props[0].value = "{\"format".into()),
        ),
        &["bad_json.onnx", "not JSON"],
    );
    refused(
        load(
            "five.onnx",
            &with(&|m| {
                let mut c = card.clone();
                c.classes = class_list(5);
                onnx_card::set_card(m, &c);
            }),
        ),
        &["five.onnx", "5 classes", "3 channels"],
    );
    refused(
        load(
            "size.onnx",
            &with(&|m| {
                let mut c = card.clone();
                c.input_height = 96;
                onnx_card::set_card(m, &c);
            }),
        ),
        &["size.onnx", "1×3×96×64", "[1, 3, 64, 64]"],
    );

    // The same files through `seg-host eval --model`.
    let args = |model: &str| {
        let mut args = EvalOptions::new(
            EvalSource::Model(dir.path().join(model)),
            dir.path().join("no-data"),
        );
        args.out = dir.path().join("eval");
        args.engine.threads = 1;
        args
    };
    refused(
        seg_host::eval::run(&args("truncated.onnx")),
        &["truncated.onnx", "not an ONNX"],
    );
    refused(
        seg_host::eval::run(&args("no_card.onnx")),
        &["no_card.onnx", "model card"],
    );
    assert!(!dir.path().join("eval").exists());
}

#[test]
fn bad_checkpoints_and_sizes_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, vs, _net) = random_checkpoint(dir.path(), &class_list(3), 5);
    let export_to = |ckpt: &Path, out: &str, h: u32, w: u32| {
        let mut opts = ExportOptions::new(ckpt.to_owned(), dir.path().join(out));
        (opts.height, opts.width, opts.samples) = (h, w, 1);
        export::export(&opts)
    };
    let before = listing(dir.path());

    refused(
        export_to(&ckpt, "a.onnx", 300, 480),
        &["300×480", "multiples of 32", "288×480"],
    );
    refused(
        export_to(&ckpt, "a.onnx", 320, 100),
        &["320×100", "multiples of 32"],
    );

    // Another architecture by its description.
    let unet = dir.path().join("unet.safetensors");
    let mut other = info(&class_list(3));
    other.architecture = "unet".into();
    checkpoint::save(&vs, &other, &unet).unwrap();
    refused(
        export_to(&unet, "a.onnx", 64, 64),
        &["unet.json", "architecture 'unet'", "fcn-resnet18"],
    );

    // Another network's weights under our description.
    let alien = dir.path().join("alien.safetensors");
    let t = Tensor::zeros([4, 4], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&[("encoder.weight", t)], &alien).unwrap();
    seg_host::atomic::write_json(&checkpoint::info_path(&alien), &info(&class_list(3))).unwrap();
    refused(
        export_to(&alien, "a.onnx", 64, 64),
        &["alien.safetensors", "not an FCN-ResNet18"],
    );

    // A head for 5 classes described as 3.
    let (five, _, _) = {
        let sub = dir.path().join("five");
        std::fs::create_dir(&sub).unwrap();
        random_checkpoint(&sub, &class_list(5), 6)
    };
    seg_host::atomic::write_json(&checkpoint::info_path(&five), &info(&class_list(3))).unwrap();
    refused(
        export_to(&five, "a.onnx", 64, 64),
        &["fcn.safetensors", "a different number of classes"],
    );

    // Not a checkpoint at all.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"junk").unwrap();
    seg_host::atomic::write_json(&checkpoint::info_path(&junk), &info(&class_list(3))).unwrap();
    refused(export_to(&junk, "a.onnx", 64, 64), &["junk.safetensors"]);

    let after: Vec<String> = listing(dir.path())
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    let expected = [
        "alien.json",
        "alien.safetensors",
        "five",
        "junk.json",
        "junk.safetensors",
        "unet.json",
        "unet.safetensors",
    ];
    assert_eq!(after, expected, "only the test's own inputs are new");
}
