//! `seg-cam bench`: every engine × model × thread count this machine can run, timed on
//! the same input side by side, and the fastest named. Measured, not guessed: which
//! engine and precision win depends on the CPU (VNNI, SDOT) and the library at hand.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::card::{EngineKind, Precision};
use crate::engine::{self, Engine, EngineChoice, EngineOptions};
use crate::error::Result;

/// What to time.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub models: Vec<PathBuf>,
    /// Thread counts to try.
    pub threads: Vec<usize>,
    /// Engines to try (empty: every one available).
    pub engines: Vec<EngineKind>,
    pub warmup: usize,
    /// Timed runs of each combination (fewer when `budget` runs out first, at least 3).
    pub runs: usize,
    /// Time for one combination's timed runs.
    pub budget: Duration,
    /// onnxruntime's library, provider: as for seg-cam.
    pub engine: EngineOptions,
}

/// One timed combination.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub model: PathBuf,
    pub precision: Precision,
    pub engine: EngineKind,
    pub threads: usize,
    pub runs: usize,
    pub median_ms: f64,
    pub p90_ms: f64,
    /// Every timed run, in order.
    pub runs_ms: Vec<f64>,
}

/// A combination that could not run, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub model: PathBuf,
    pub engine: EngineKind,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub cpu: String,
    pub features: Vec<&'static str>,
    /// The engines with their versions (or why not available).
    pub engines: Vec<(EngineKind, String)>,
    pub rows: Vec<Row>,
    pub skipped: Vec<Skipped>,
}

impl Report {
    /// The fastest combination (lowest median; fewer threads on a tie).
    pub fn pick(&self) -> Option<&Row> {
        self.rows.iter().min_by(|a, b| {
            a.median_ms
                .total_cmp(&b.median_ms)
                .then(a.threads.cmp(&b.threads))
        })
    }

    /// The table a person reads.
    pub fn table(&self) -> String {
        let mut out = format!(
            "cpu: {}\nfeatures: {}\n",
            self.cpu,
            if self.features.is_empty() {
                "(none detected)".to_string()
            } else {
                self.features.join(" ")
            }
        );
        for (kind, version) in &self.engines {
            out += &format!("{kind}: {version}\n");
        }
        out += &format!(
            "\n{:<36} {:>9} {:>12} {:>7} {:>10} {:>8} {:>5}\n",
            "model", "precision", "engine", "threads", "median ms", "p90 ms", "runs"
        );
        let pick = self.pick().map(|p| (p.model.clone(), p.engine, p.threads));
        for r in &self.rows {
            let star = if pick.as_ref() == Some(&(r.model.clone(), r.engine, r.threads)) {
                " ← fastest"
            } else {
                ""
            };
            out += &format!(
                "{:<36} {:>9} {:>12} {:>7} {:>10.1} {:>8.1} {:>5}{star}\n",
                shorten(&r.model.display().to_string(), 36),
                format!("{:?}", r.precision).to_lowercase(),
                r.engine.name(),
                r.threads,
                r.median_ms,
                r.p90_ms,
                r.runs
            );
        }
        for s in &self.skipped {
            out += &format!(
                "skipped {} in {}: {}\n",
                s.model.display(),
                s.engine,
                s.reason
            );
        }
        if let Some(p) = self.pick() {
            out += &format!(
                "\nfastest here: {} with --engine {} --threads {} ({:.1} ms, {:.1} frames/s of inference)\n",
                p.model.display(),
                p.engine,
                p.threads,
                p.median_ms,
                1000.0 / p.median_ms
            );
        }
        out
    }
}

fn shorten(s: &str, n: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= n {
        s.to_string()
    } else {
        format!(
            "…{}",
            chars[chars.len() - (n - 1)..].iter().collect::<String>()
        )
    }
}

/// Time every combination. A model that fails to load in one engine is listed as
/// skipped, not fatal; a model that loads in none is an error.
pub fn run(options: &BenchOptions, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    let available = engine::available(&options.engine);
    let engines: Vec<EngineKind> = available
        .iter()
        .filter(|(k, v)| v.is_ok() && (options.engines.is_empty() || options.engines.contains(k)))
        .map(|(k, _)| *k)
        .collect();
    let mut report = Report {
        cpu: crate::cpu::name(),
        features: crate::cpu::features(),
        engines: available
            .iter()
            .map(|(k, v)| {
                (
                    *k,
                    v.clone()
                        .unwrap_or_else(|why| format!("not available: {why}")),
                )
            })
            .collect(),
        rows: Vec::new(),
        skipped: Vec::new(),
    };
    for model in &options.models {
        let mut loaded_somewhere = false;
        let mut first_error = None;
        for &kind in &engines {
            for &threads in &options.threads {
                let engine_options = EngineOptions {
                    engine: match kind {
                        EngineKind::Tract => EngineChoice::Tract,
                        EngineKind::Onnxruntime => EngineChoice::Onnxruntime,
                    },
                    threads,
                    ..options.engine.clone()
                };
                let engine = match Engine::open(model, &engine_options) {
                    Ok(e) => e,
                    Err(e) => {
                        report.skipped.push(Skipped {
                            model: model.clone(),
                            engine: kind,
                            reason: e.to_string(),
                        });
                        first_error.get_or_insert(e);
                        break;
                    }
                };
                loaded_somewhere = true;
                progress(&format!("{} in {kind}, {threads} threads", model.display()));
                report.rows.push(time(&engine, options)?);
            }
        }
        if let (false, Some(e)) = (loaded_somewhere, first_error) {
            return Err(e);
        }
    }
    Ok(report)
}

/// Warm up, then time runs on one generated scene at the model's input size.
fn time(engine: &Engine, options: &BenchOptions) -> Result<Row> {
    let (w, h) = engine.input_size();
    let image = crate::scene::render(0xbe1c, 0, w, h).image;
    let mut chw = vec![0.0; 3 * (w * h) as usize];
    engine.card().normalization.to_chw(&image, &mut chw);
    for _ in 0..options.warmup {
        engine.run_in_place(&chw)?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < options.runs.max(1) && (times.len() < 3 || start.elapsed() < options.budget)
    {
        let t = Instant::now();
        engine.run_in_place(&chw)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let runs_ms = times.clone();
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok(Row {
        model: engine.path().to_owned(),
        precision: engine.card().precision,
        engine: engine.kind(),
        threads: engine.threads(),
        runs: times.len(),
        median_ms: at(0.5),
        p90_ms: at(0.9),
        runs_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, engine: EngineKind, threads: usize, median_ms: f64) -> Row {
        Row {
            model: model.into(),
            precision: Precision::F32,
            engine,
            threads,
            runs: 5,
            median_ms,
            p90_ms: median_ms * 1.1,
            runs_ms: vec![median_ms; 5],
        }
    }

    #[test]
    fn the_pick_is_the_lowest_median_and_fewer_threads_on_a_tie() {
        let mut report = Report {
            cpu: "test".into(),
            features: vec!["avx2"],
            engines: vec![],
            rows: vec![
                row("a.onnx", EngineKind::Tract, 2, 50.0),
                row("b.onnx", EngineKind::Onnxruntime, 2, 20.0),
                row("b.onnx", EngineKind::Onnxruntime, 1, 20.0),
                row("a.onnx", EngineKind::Onnxruntime, 1, 30.0),
            ],
            skipped: vec![],
        };
        let p = report.pick().unwrap();
        assert_eq!(
            (p.model.to_str().unwrap(), p.engine, p.threads),
            ("b.onnx", EngineKind::Onnxruntime, 1)
        );
        let table = report.table();
        assert!(table.contains("features: avx2"), "{table}");
        assert_eq!(table.matches("← fastest").count(), 1, "{table}");
        assert!(
            table.contains("fastest here: b.onnx with --engine onnxruntime --threads 1"),
            "{table}"
        );
        report.rows.clear();
        assert!(report.pick().is_none());
    }
}
