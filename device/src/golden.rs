//! The golden set: a few frames with the class maps the workstation's engine made of
//! them, carried by a release so that a board can check, before the release goes live,
//! that its own engine, threads and CPU still segment the same (and fast enough).
//!
//! A set is flat files in one folder (a release folder holds plain files only):
//! `golden.json` names each frame (`golden-NN.png`, lossless, so the board sees the
//! workstation's pixels) and its class map (`golden-NN.classes.png`, 8-bit class ids
//! at the model's input resolution).

use std::path::Path;
use std::time::Instant;

use image::{GrayImage, RgbImage};
use serde::{Deserialize, Serialize};

use crate::card::EngineKind;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::resize::{Fit, ResizePolicy};

/// The set's index file.
pub const INDEX: &str = "golden.json";
const FORMAT_VERSION: u32 = 1;
/// The most frames a set may list.
pub const MAX_FRAMES: usize = 1000;

/// What `golden.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenSet {
    pub format_version: u32,
    /// The model card's name and the engine that made the class maps.
    pub model: String,
    pub engine: EngineKind,
    /// How frames were fitted to the model's input (the check fits them the same way).
    pub resize: ResizePolicy,
    pub frames: Vec<GoldenFrame>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenFrame {
    pub image: String,
    pub classes: String,
}

/// What the check requires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Requirements {
    /// The least share of a frame's pixels whose class must agree (0–1).
    pub agreement: f64,
    /// The most the 90th percentile of a frame's latency (fitting, model, argmax) may be.
    pub budget_ms: Option<f64>,
    /// Timed runs of each frame (after one untimed pass over the set).
    pub runs: usize,
}

/// One frame's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameResult {
    pub image: String,
    /// Share of the class map's pixels whose class is the golden one.
    pub agreement: f64,
}

/// The check's outcome: kept with the release and shown by `just status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub passed: bool,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub frames: Vec<FrameResult>,
    /// The least agreement of any frame, and the least required.
    pub min_agreement: f64,
    pub required_agreement: f64,
    pub p90_ms: f64,
    pub budget_ms: Option<f64>,
    pub engine: EngineKind,
    pub threads: usize,
}

impl Report {
    /// One line: "passed: …" or "failed: REASON (…)".
    pub fn summary(&self) -> String {
        let figures = format!(
            "{} frames, agreement ≥ {:.2}% (required {:.2}%), p90 {:.1} ms{}, {} with {} threads",
            self.frames.len(),
            100.0 * self.min_agreement,
            100.0 * self.required_agreement,
            self.p90_ms,
            self.budget_ms
                .map_or(String::new(), |b| format!(" (budget {b} ms)")),
            self.engine,
            self.threads
        );
        match &self.reason {
            None => format!("passed: {figures}"),
            Some(why) => format!("failed: {why} ({figures})"),
        }
    }
}

/// Write the golden set of `frames` into `dir` (which must exist): each fitted to
/// `engine`'s input under `resize` and classified. Existing set files are replaced.
pub fn make(
    engine: &Engine,
    resize: ResizePolicy,
    frames: &[RgbImage],
    dir: &Path,
) -> Result<GoldenSet> {
    if frames.is_empty() {
        return Err(Error::Invalid(
            "a golden set needs at least one frame".into(),
        ));
    }
    let mut set = GoldenSet {
        format_version: FORMAT_VERSION,
        model: engine.card().name.clone(),
        engine: engine.kind(),
        resize,
        frames: Vec::new(),
    };
    for (i, frame) in frames.iter().enumerate() {
        let classes = classify(engine, resize, frame)?;
        let entry = GoldenFrame {
            image: format!("golden-{i:02}.png"),
            classes: format!("golden-{i:02}.classes.png"),
        };
        save(frame, &dir.join(&entry.image))?;
        save(&classes, &dir.join(&entry.classes))?;
        set.frames.push(entry);
    }
    let json = serde_json::to_string_pretty(&set).expect("a golden set serialises");
    let index = dir.join(INDEX);
    std::fs::write(&index, json + "\n").map_err(|e| Error::io(&index, e))?;
    Ok(set)
}

/// Read the set in `dir`, checking that every name stays inside it.
pub fn read(dir: &Path) -> Result<GoldenSet> {
    let index = dir.join(INDEX);
    let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
    let bad = |why: String| Error::Invalid(format!("{}: {why}", index.display()));
    let set: GoldenSet = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if set.format_version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {}; this seg-cam reads {FORMAT_VERSION}",
            set.format_version
        )));
    }
    if set.frames.is_empty() {
        return Err(bad("no frames".into()));
    }
    // Every frame is decoded before the timed runs: keep that bounded.
    if set.frames.len() > MAX_FRAMES {
        return Err(bad(format!(
            "{} frames; a golden set holds at most {MAX_FRAMES}",
            set.frames.len()
        )));
    }
    for name in set.frames.iter().flat_map(|f| [&f.image, &f.classes]) {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(bad(format!("file name {name:?} is not a plain name")));
        }
    }
    Ok(set)
}

/// Run `engine` on the set in `dir` and judge it by `required`.
pub fn check(engine: &Engine, dir: &Path, required: &Requirements) -> Result<Report> {
    let set = read(dir)?;
    let mut inputs = Vec::new();
    for f in &set.frames {
        let image = open(&dir.join(&f.image))?.to_rgb8();
        let path = dir.join(&f.classes);
        // Class indices, one byte each: converting colour or 16 bits to grey would
        // turn a wrong file into a low agreement instead of an error.
        let image::DynamicImage::ImageLuma8(golden) = open(&path)? else {
            return Err(Error::Invalid(format!(
                "{}: not a class map (want an 8-bit greyscale PNG of class indices)",
                path.display()
            )));
        };
        inputs.push((f, image, golden, path));
    }
    let mut frames = Vec::new();
    for (f, image, golden, path) in &inputs {
        let classes = classify(engine, set.resize, image)?;
        if classes.dimensions() != golden.dimensions() {
            return Err(Error::Invalid(format!(
                "{}: {}×{} class map, but the model's is {}×{} (a set made for another model?)",
                path.display(),
                golden.width(),
                golden.height(),
                classes.width(),
                classes.height()
            )));
        }
        let same = classes
            .iter()
            .zip(golden.iter())
            .filter(|(a, b)| a == b)
            .count();
        frames.push(FrameResult {
            image: f.image.clone(),
            agreement: same as f64 / classes.len().max(1) as f64,
        });
    }
    let mut times = Vec::new();
    for _ in 0..required.runs.max(1) {
        for (_, image, _, _) in &inputs {
            let start = Instant::now();
            classify(engine, set.resize, image)?;
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let p90_ms = percentile(&mut times, 0.9);
    let (worst, min_agreement) = frames
        .iter()
        .map(|f| (f.image.as_str(), f.agreement))
        .fold(("", f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
    let reason = if min_agreement < required.agreement {
        Some(format!(
            "{worst}: {:.2}% of pixels agree with the workstation's class map, below {:.2}%",
            100.0 * min_agreement,
            100.0 * required.agreement
        ))
    } else {
        required
            .budget_ms
            .filter(|&budget| p90_ms > budget)
            .map(|budget| format!("p90 latency {p90_ms:.1} ms is over the budget of {budget} ms"))
    };
    Ok(Report {
        passed: reason.is_none(),
        reason,
        frames,
        min_agreement,
        required_agreement: required.agreement,
        p90_ms,
        budget_ms: required.budget_ms,
        engine: engine.kind(),
        threads: engine.threads(),
    })
}

/// The nearest-rank percentile `q` (0–1) of `values` (sorted here).
fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = (q * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// The frame fitted to the model's input as the live pipeline does, classified.
fn classify(engine: &Engine, resize: ResizePolicy, frame: &RgbImage) -> Result<GrayImage> {
    let fit = Fit::new(resize, frame.dimensions(), engine.input_size());
    engine.classify(&fit.prepare(frame, &engine.card().normalization))
}

/// A set's picture, decoded within the usual limits (a release's files are input).
fn open(path: &Path) -> Result<image::DynamicImage> {
    crate::decode::open_image(path, &crate::decode::DecodeLimits::default())
}

fn save<P, C>(picture: &image::ImageBuffer<P, C>, path: &Path) -> Result<()>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    picture
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| Error::Invalid(format!("{}: cannot write: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::{render, scene_classes};
    use crate::testing::{card, write_model};

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.9), 9.0);
        assert_eq!(percentile(&mut [5.0], 0.9), 5.0);
        assert_eq!(percentile(&mut [], 0.9), 0.0);
    }

    #[test]
    fn a_set_passes_on_its_own_engine_and_fails_on_another_model() {
        let dir = tempfile::tempdir().unwrap();
        let model = write_model(dir.path(), "m.onnx", &card(scene_classes(), 24, 32, false));
        let engine = Engine::load(&model, 1).unwrap();
        let frames: Vec<RgbImage> = (0..3).map(|k| render(5, k, 64, 48).image).collect();
        let set_dir = dir.path().join("set");
        std::fs::create_dir(&set_dir).unwrap();
        let set = make(&engine, ResizePolicy::Letterbox, &frames, &set_dir).unwrap();
        assert_eq!(set.frames.len(), 3);
        assert_eq!(read(&set_dir).unwrap(), set);

        let required = Requirements {
            agreement: 0.99,
            budget_ms: None,
            runs: 2,
        };
        let report = check(&engine, &set_dir, &required).unwrap();
        assert!(report.passed, "{}", report.summary());
        assert_eq!(report.min_agreement, 1.0);
        assert!(report.p90_ms > 0.0);
        // A budget no engine meets.
        let strict = Requirements {
            budget_ms: Some(0.0),
            ..required
        };
        let report = check(&engine, &set_dir, &strict).unwrap();
        assert!(!report.passed);
        assert!(report.reason.unwrap().contains("over the budget"));

        // Another model of the same input size, with fewer classes: its maps differ.
        let all = scene_classes();
        let three = all.first(3);
        let other = card(three, 24, 32, false);
        let other = Engine::load(&write_model(dir.path(), "o.onnx", &other), 1).unwrap();
        let report = check(&other, &set_dir, &required).unwrap();
        assert!(!report.passed, "{}", report.summary());
        let reason = report.reason.clone().unwrap();
        assert!(
            reason.contains("golden-0") && reason.contains("below 99.00%"),
            "{reason}"
        );

        // A set for another input size is named, not judged.
        let small = card(scene_classes(), 16, 16, false);
        let small = Engine::load(&write_model(dir.path(), "s.onnx", &small), 1).unwrap();
        let msg = check(&small, &set_dir, &required).unwrap_err().to_string();
        assert!(
            msg.contains("golden-00.classes.png") && msg.contains("another model"),
            "{msg}"
        );

        // A name that would reach outside the folder.
        let mut bad = set.clone();
        bad.frames[0].image = "../etc/passwd".into();
        std::fs::write(set_dir.join(INDEX), serde_json::to_string(&bad).unwrap()).unwrap();
        let msg = read(&set_dir).unwrap_err().to_string();
        assert!(msg.contains("not a plain name"), "{msg}");

        // More frames than a set may hold.
        let mut many = set.clone();
        many.frames = vec![set.frames[0].clone(); MAX_FRAMES + 1];
        std::fs::write(set_dir.join(INDEX), serde_json::to_string(&many).unwrap()).unwrap();
        let msg = read(&set_dir).unwrap_err().to_string();
        assert!(msg.contains("at most"), "{msg}");

        // A class map saved in colour is a broken file, not a disagreement.
        std::fs::write(set_dir.join(INDEX), serde_json::to_string(&set).unwrap()).unwrap();
        let classes = set_dir.join(&set.frames[1].classes);
        let colour = open(&classes).unwrap().to_rgb8();
        colour.save(&classes).unwrap();
        let msg = check(&engine, &set_dir, &required).unwrap_err().to_string();
        assert!(
            msg.contains("golden-01.classes.png") && msg.contains("not a class map"),
            "{msg}"
        );
    }
}
