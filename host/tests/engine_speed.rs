//! How fast the board's engine runs the exported FCN (21 classes, 1×3×320×480) for
//! each way of writing the upsampler and the head, on 1 and 2 threads. A measurement,
//! not a test of speed: run it by hand and read the table.
//!
//!   scripts/torch-env cargo test -p seg-host --release --test engine_speed -- --ignored --nocapture

use std::time::Instant;

use seg_host::checkpoint::{CheckpointInfo, ARCHITECTURE, FORMAT_VERSION};
use seg_host::export::graph::{self, GraphSpec, Head, Upsampler};
use seg_host::model::Fcn;
use segcam::engine::{argmax, Output};
use segcam::{onnx_card, Engine};
use tch::nn;

const RUNS: usize = 7;

#[test]
#[ignore = "a measurement; run by hand"]
fn engine_speed_per_upsampler_head_and_threads() {
    let (h, w) = (320u32, 480u32);
    tch::manual_seed(0);
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let _net = Fcn::new(&vs.root(), 21);
    let info = CheckpointInfo {
        format_version: FORMAT_VERSION,
        architecture: ARCHITECTURE.into(),
        classes: segcam::ClassList::voc(),
        normalization: segcam::IMAGENET,
        crop: [h, w],
        epoch: 0,
        step: 0,
        history: vec![],
        config: serde_json::Value::Null,
    };
    let dir = tempfile::tempdir().unwrap();
    let image = segcam::scene::render(1, 0, w, h).image;
    let mut chw = vec![0.0; 3 * (w * h) as usize];
    segcam::IMAGENET.to_chw(&image, &mut chw);

    let mut reference: Option<(Vec<f32>, image::GrayImage)> = None;
    println!("| upsampler | head | threads | median ms | min ms |");
    println!("|---|---|---|---|---|");
    for upsampler in [Upsampler::Convtranspose, Upsampler::DepthToSpace] {
        for head in [Head::Logits, Head::ClassMap] {
            let spec = GraphSpec {
                height: h,
                width: w,
                classes: 21,
                upsampler,
                head,
            };
            let mut model = graph::build(&vs.variables(), &spec).unwrap();
            onnx_card::set_card(
                &mut model,
                &seg_host::export::card(&info, "speed".into(), &spec),
            );
            let path = dir.path().join(format!("{upsampler:?}-{head:?}.onnx"));
            std::fs::write(&path, onnx_card::encode(&model)).unwrap();
            for threads in [1, 2] {
                let engine = Engine::load(&path, threads).unwrap();
                let first = engine.run(&chw).unwrap();
                // Every variant computes the same thing.
                match (&first, &reference) {
                    (Output::Logits(l), None) => reference = Some((l.clone(), argmax(l, 21, w, h))),
                    (Output::Logits(l), Some((r, _))) => {
                        let d = l
                            .iter()
                            .zip(r)
                            .map(|(a, b)| (a - b).abs())
                            .fold(0.0, f32::max);
                        assert!(d < 1e-4, "{upsampler:?}: logits differ by {d}");
                    }
                    (Output::ClassMap(m), Some((_, r))) => {
                        let same = m
                            .as_raw()
                            .iter()
                            .zip(r.as_raw())
                            .filter(|(a, b)| a == b)
                            .count();
                        assert!(same as f64 >= 0.999 * m.as_raw().len() as f64);
                    }
                    (Output::ClassMap(_), None) => unreachable!("logits come first"),
                }
                let mut times: Vec<f64> = (0..RUNS)
                    .map(|_| {
                        let t = Instant::now();
                        let out = engine.run(&chw).unwrap();
                        // What a caller needs in the end: a class map.
                        if let Output::Logits(l) = out {
                            std::hint::black_box(argmax(&l, 21, w, h));
                        }
                        t.elapsed().as_secs_f64() * 1e3
                    })
                    .collect();
                times.sort_by(f64::total_cmp);
                println!(
                    "| {upsampler:?} | {head:?} | {threads} | {:.0} | {:.0} |",
                    times[RUNS / 2],
                    times[0]
                );
            }
        }
    }
}
