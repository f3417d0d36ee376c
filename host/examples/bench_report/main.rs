//! The report of `just bench`: reads what bench/run measured and writes
//! `bench/results.md`, `bench/results.json` and `bench/results.png`.
//!
//!     bench_report WORK_DIR OUT_DIR
//!
//! WORK_DIR holds `inference.jsonl` (one line per timed round: engine, precision,
//! threads, runs_ms), `pipeline.json` (bench/pipeline.py) and `train-speed.json`
//! (bench/train-speed).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Value};

mod chart;
use chart::{plot_bars, Bar, BarPanel};

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

/// Median and p10/p90 of a sample.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (median, at(0.1), at(0.9))
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
    };
    let flags = field("flags")
        .or_else(|| field("Features"))
        .unwrap_or_default();
    let features: Vec<&str> = [
        "avx2",
        "fma",
        "avx512f",
        "avx512_vnni",
        "avx_vnni",
        "asimd",
        "asimddp",
        "i8mm",
    ]
    .into_iter()
    .filter(|f| flags.split_whitespace().any(|x| x == *f))
    .collect();
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0 / 1024.0);
    json!({
        "cpu": field("model name").unwrap_or_else(|| std::env::consts::ARCH.into()),
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "features": features,
        "memory_gib": memory_gib.map(|g| (g * 10.0).round() / 10.0),
        "arch": std::env::consts::ARCH,
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [work, out] = args.as_slice() else {
        bail!("usage: bench_report WORK_DIR OUT_DIR");
    };

    // Inference: the rounds of each engine and precision pooled.
    let lines = std::fs::read_to_string(work.join("inference.jsonl"))
        .with_context(|| format!("reading {}", work.join("inference.jsonl").display()))?;
    let mut runs: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut meta = Value::Null;
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).context("inference.jsonl")?;
        let key = (
            v["engine"].as_str().unwrap_or("?").to_string(),
            v["precision"].as_str().unwrap_or("?").to_string(),
        );
        let ms = v["runs_ms"]
            .as_array()
            .context("runs_ms")?
            .iter()
            .filter_map(Value::as_f64);
        runs.entry(key).or_default().extend(ms);
        meta = v;
    }
    let median_of = |engine: &str, precision: &str| {
        runs.get(&(engine.to_string(), precision.to_string()))
            .map(|r| spread(r).0)
    };
    let mut inference = Vec::new();
    for ((engine, precision), ms) in &runs {
        let (median, p10, p90) = spread(ms);
        inference.push(
            json!({"engine": engine, "precision": precision, "runs": ms.len(),
            "median_ms": median, "p10_ms": p10, "p90_ms": p90}),
        );
    }
    // The best of segcam's rows whose precision matches.
    let best = |matches: &dyn Fn(&str) -> bool| {
        runs.iter()
            .filter(|((e, p), _)| e.starts_with("segcam") && matches(p))
            .map(|((e, p), r)| (spread(r).0, format!("{e}, {p}")))
            .min_by(|a, b| a.0.total_cmp(&b.0))
    };
    let ratio_of = |ours: Option<(f64, String)>, theirs: Option<f64>, label: &str| {
        ours.zip(theirs).map(|((o, which), t)| {
            json!({"ratio": o / t, "ours": which, "ours_ms": o, "peer_ms": t, "label": label})
        })
    };
    let per_engine = |engine: &str, int8: &str| {
        let key = format!("segcam ({engine})");
        median_of(&key, int8)
            .zip(median_of(&key, "f32"))
            .map(|(i, f)| json!({"ratio": i / f, "int8_ms": i, "f32_ms": f, "label": format!("segcam int8 / f32 in {engine}")}))
    };
    let ratios = json!({
        "best_f32_over_onnxruntime_f32": ratio_of(best(&|p| p == "f32"), median_of("onnxruntime (Python)", "f32"),
            "segcam best f32 / onnxruntime f32"),
        // Both files in the same runtime (seg-cam's onnxruntime), so that the ratio is
        // about the quantizers, not the thread pools' settings.
        "best_int8_over_onnxruntime_quantizer_int8": ratio_of(
            best(&|p| p.starts_with("int8") && p != "int8 ort-quantizer"),
            median_of("segcam (onnxruntime)", "int8 ort-quantizer"),
            "segcam best int8 / onnxruntime-quantizer int8, same runtime"),
        "onnxruntime_quantizer_int8_in_segcam_over_python": ratio_of(
            best(&|p| p == "int8 ort-quantizer"),
            median_of("onnxruntime (Python)", "int8 ort-quantizer"),
            "onnxruntime-quantizer int8: segcam's onnxruntime / onnxruntime's Python API"),
        "tract_int8_over_f32": per_engine("tract", "int8 qlinear"),
        "onnxruntime_int8_over_f32": per_engine("onnxruntime", "int8 qdq"),
    });
    let pipeline = read_json(&work.join("pipeline.json"))?;
    let train = read_json(&work.join("train-speed.json"))?;
    let machine = machine();
    let results = json!({
        "machine": machine,
        "input": format!("{}x{}", meta["height"], meta["width"]),
        "threads": meta["threads"],
        "versions": {"tract": "0.23.9", "onnxruntime": meta["onnxruntime"], "torch": train["torch"]},
        "inference": inference,
        "ratios": ratios,
        "pipeline": pipeline,
        "training": train,
    });
    std::fs::create_dir_all(out)?;
    seg_host::atomic::write(
        &out.join("results.json"),
        (serde_json::to_string_pretty(&results)? + "\n").as_bytes(),
    )?;

    // The markdown table (also pasted into the README).
    let mut md = String::new();
    let features = machine["features"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    writeln!(md, "# Benchmark\n")?;
    writeln!(
        md,
        "Measured side by side in one `just bench` run on {} ({} cores; {}; {} GiB). \
         Medians with p10–p90 over every timed run; lower ms is better.\n",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        if features.is_empty() {
            "no listed SIMD features".into()
        } else {
            features
        },
        machine["memory_gib"]
    )?;
    writeln!(
        md,
        "## Inference, {} input, {} threads, the demo model\n",
        results["input"].as_str().unwrap_or("?"),
        meta["threads"]
    )?;
    writeln!(
        md,
        "| engine | precision | median ms | p10–p90 ms | runs |\n|---|---|---:|---:|---:|"
    )?;
    for r in &inference {
        writeln!(
            md,
            "| {} | {} | {:.1} | {:.1}–{:.1} | {} |",
            r["engine"].as_str().unwrap_or("?"),
            r["precision"].as_str().unwrap_or("?"),
            r["median_ms"].as_f64().unwrap_or(f64::NAN),
            r["p10_ms"].as_f64().unwrap_or(f64::NAN),
            r["p90_ms"].as_f64().unwrap_or(f64::NAN),
            r["runs"]
        )?;
    }
    writeln!(
        md,
        "\n| ratio (time, lower is better) | value | segcam row |\n|---|---:|---|"
    )?;
    for r in ratios
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter(|r| !r.is_null())
    {
        writeln!(
            md,
            "| {} | **{:.2}×** | {} |",
            r["label"].as_str().unwrap_or("?"),
            r["ratio"].as_f64().unwrap_or(f64::NAN),
            r["ours"].as_str().unwrap_or("")
        )?;
    }
    writeln!(
        md,
        "\nThe model is ≈ 5.9 GMAC per 320×480 frame. `int8 qlinear` is `seg-host quantize --engine tract` \
         (QLinearConv), `int8 qdq` is `seg-host quantize --engine onnxruntime`, `int8 ort-quantizer` is \
         onnxruntime's own `quantize_static` on the same f32 model and calibration images. seg-cam \
         runs onnxruntime with its intra-op threads spinning within a run, as onnxruntime's \
         default, and stopping at its end (the pipeline's other threads need the cores between \
         frames); `seg-cam bench` times each run up to its output, read in place."
    )?;
    let p = &pipeline;
    writeln!(md, "\n## seg-cam pipeline\n")?;
    writeln!(
        md,
        "`seg-cam` on `{}`, {} s, a viewer on the MJPEG stream: \
         **{:.2} frames/s** against 1/inference = {:.2} (ratio {:.2}); overlay {:.1} ms and JPEG {:.1} ms \
         per frame (medians; JPEG by {}); resident memory {:.0} → {:.0} MiB.",
        p["input"].as_str().unwrap_or("?"),
        p["seconds"],
        p["pipeline_fps"].as_f64().unwrap_or(f64::NAN),
        1000.0 / p["inference_ms"]["median"].as_f64().unwrap_or(f64::NAN),
        p["fps_over_inference_ceiling"].as_f64().unwrap_or(f64::NAN),
        p["overlay_ms"]["median"].as_f64().unwrap_or(f64::NAN),
        p["jpeg_ms"]["median"].as_f64().unwrap_or(f64::NAN),
        p["jpeg_encoder"].as_str().unwrap_or("?"),
        p["rss_mib"]["first"].as_f64().unwrap_or(f64::NAN),
        p["rss_mib"]["last"].as_f64().unwrap_or(f64::NAN),
    )?;
    if let Some(r) = p["inference_over_bench"].as_f64() {
        writeln!(
            md,
            "\nModel and engine: `{}` in {} (`seg-cam bench`'s pick). The inference stage (fit, normalise, run, \
             argmax) takes {:.2}× the bare run `seg-cam bench` measured ({:.1} ms); frames/s × that time = {:.2}.",
            p["model"].as_str().unwrap_or("?"),
            p["engine"].as_str().unwrap_or("?"),
            r,
            p["bench_ms"].as_f64().unwrap_or(f64::NAN),
            p["fps_over_bench_ceiling"].as_f64().unwrap_or(f64::NAN)
        )?;
    }
    if let Some(share) = p["non_inference_share"].as_f64() {
        let cpu = p["cpu_ms_per_frame"].as_object();
        let threads: Vec<String> = cpu
            .into_iter()
            .flatten()
            .filter_map(|(name, ms)| Some(format!("{name} {:.1}", ms.as_f64()?)))
            .collect();
        writeln!(
            md,
            "\nNot inference, per frame: fitting the frame to the input ({:.1} ms) and the CPU of the \
             capture, output (overlay, HUD, JPEG) and HTTP threads: {:.1} ms, **{:.0} %** of the {}'s \
             time and {:.0} % of the CPU inference takes per frame ({:.1} ms). CPU ms per frame by \
             thread: {}.",
            p["preprocess_ms"]["median"].as_f64().unwrap_or(0.0),
            p["non_inference_ms"].as_f64().unwrap_or(f64::NAN),
            100.0 * share,
            p["non_inference_against"].as_str().unwrap_or("bare model"),
            100.0 * p["non_inference_cpu_share"].as_f64().unwrap_or(f64::NAN),
            p["inference_cpu_ms"].as_f64().unwrap_or(f64::NAN),
            threads.join(", ")
        )?;
    }
    writeln!(
        md,
        "\n## Training, {} crops, batch {}, {}\n",
        train["crop"].as_str().unwrap_or("?"),
        train["batch"],
        train["device"].as_str().unwrap_or("cpu")
    )?;
    let ours: Vec<f64> = train["seg_host_images_per_sec"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let theirs: Vec<f64> = train["pytorch_images_per_sec"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    if ours.is_empty() || theirs.is_empty() {
        bail!(
            "{}: no training figures",
            work.join("train-speed.json").display()
        );
    }
    writeln!(
        md,
        "| trainer | images/s (median) | rounds |\n|---|---:|---|"
    )?;
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        md,
        "| `seg-host train` (tch) | {:.2} | {} |",
        spread(&ours).0,
        list(&ours)
    )?;
    writeln!(
        md,
        "| PyTorch Python | {:.2} | {} |",
        spread(&theirs).0,
        list(&theirs)
    )?;
    writeln!(
        md,
        "\nseg-host / PyTorch: **{:.2}×** the images per second. CUDA: {}.",
        spread(&ours).0 / spread(&theirs).0,
        train["cuda"]
            .as_str()
            .unwrap_or("not present on this machine")
    )?;
    writeln!(md, "\n![benchmark](results.png)")?;
    seg_host::atomic::write(&out.join("results.md"), md.as_bytes())?;

    let bars = |rows: &[Value]| -> Vec<Bar> {
        rows.iter()
            .map(|r| Bar {
                label: format!(
                    "{} {}",
                    r["engine"].as_str().unwrap_or("?"),
                    r["precision"].as_str().unwrap_or("?")
                ),
                median: r["median_ms"].as_f64().unwrap_or(0.0),
                low: r["p10_ms"].as_f64().unwrap_or(0.0),
                high: r["p90_ms"].as_f64().unwrap_or(0.0),
            })
            .collect()
    };
    let (f32_rows, int8_rows): (Vec<Value>, Vec<Value>) = inference
        .iter()
        .cloned()
        .partition(|r| r["precision"] == "f32");
    let training_bar = |label: &str, v: &[f64]| {
        let (m, lo, hi) = spread(v);
        Bar {
            label: label.into(),
            median: m,
            low: lo,
            high: hi,
        }
    };
    let panels = vec![
        BarPanel {
            title: format!(
                "Inference f32, {} input (ms, lower is better)",
                results["input"].as_str().unwrap_or("?")
            ),
            unit: "ms".into(),
            bars: bars(&f32_rows),
        },
        BarPanel {
            title: "Inference int8 (ms, lower is better)".into(),
            unit: "ms".into(),
            bars: bars(&int8_rows),
        },
        BarPanel {
            title: "Training, CPU (images/s, higher is better)".into(),
            unit: "img/s".into(),
            bars: vec![
                training_bar("seg-host train", &ours),
                training_bar("PyTorch Python", &theirs),
            ],
        },
    ];
    plot_bars(
        &format!(
            "segcam benchmark — {}",
            machine["cpu"].as_str().unwrap_or("?")
        ),
        &panels,
        &out.join("results.png"),
    )?;
    println!(
        "wrote {}, results.json, results.png",
        out.join("results.md").display()
    );
    Ok(())
}
