//! The board's engine: an exported ONNX model run by a backend. `Engine` is the one
//! place that reads the model card, checks it against the graph, takes preprocessed
//! input and turns outputs into class maps; below it a backend runs the graph:
//! [`tract`] (pure Rust, every build, the static board binary) or [`onnxruntime`]
//! (feature `onnxruntime`, its library opened at run time, CPU/CUDA/TensorRT).

pub(crate) mod check;
#[cfg(feature = "onnxruntime")]
pub mod onnxruntime;
pub mod tract;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use image::{GrayImage, RgbImage};
use serde::{Deserialize, Serialize};

use crate::card::{EngineKind, ModelCard};
use crate::error::{Error, Result};
use crate::onnx_card::{self, model_error};

pub use self::tract::run_options;

/// What one run of the model gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// C×H×W class scores, planar (channel-major), as [`crate::card::OutputKind::Logits`] models give.
    Logits(Vec<f32>),
    /// H×W class indices, as [`crate::card::OutputKind::ClassMap`] models (ArgMax in the graph) give.
    ClassMap(GrayImage),
}

/// A backend's output tensor, read where the backend left it: its shape and values.
#[derive(Debug)]
enum Raw<'a> {
    Scores(Vec<usize>, &'a [f32]),
    Classes(Vec<usize>, Cow<'a, [i64]>),
}

impl Raw<'_> {
    #[cfg_attr(not(feature = "onnxruntime"), allow(dead_code))]
    fn shape(&self) -> &[usize] {
        match self {
            Raw::Scores(s, _) | Raw::Classes(s, _) => s,
        }
    }
}

/// Which engine to run a model with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// The engine the model's card names when this build has it, else the other; a
    /// card that names none: onnxruntime when its library is found, else tract.
    #[default]
    Auto,
    Tract,
    #[cfg_attr(feature = "clap", value(alias = "ort"))]
    Onnxruntime,
}

impl EngineChoice {
    pub fn name(self) -> &'static str {
        match self {
            EngineChoice::Auto => "auto",
            EngineChoice::Tract => "tract",
            EngineChoice::Onnxruntime => "onnxruntime",
        }
    }
}

impl std::fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for EngineChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(EngineChoice::Auto),
            "tract" => Ok(EngineChoice::Tract),
            "onnxruntime" | "ort" => Ok(EngineChoice::Onnxruntime),
            _ => Err(format!("engine '{s}': expected auto, tract or onnxruntime")),
        }
    }
}

/// Where onnxruntime runs the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    #[default]
    Cpu,
    Cuda,
    #[cfg_attr(feature = "clap", value(alias = "trt"))]
    Tensorrt,
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::Tensorrt => "tensorrt",
        })
    }
}

impl std::str::FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Provider::Cpu),
            "cuda" => Ok(Provider::Cuda),
            "tensorrt" | "trt" => Ok(Provider::Tensorrt),
            _ => Err(format!("provider '{s}': expected cpu, cuda or tensorrt")),
        }
    }
}

/// How to run a model: the engine, its threads and, for onnxruntime, the provider and
/// the library.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOptions {
    pub engine: EngineChoice,
    /// Inference threads; ≤ 1 runs on one thread.
    pub threads: usize,
    pub provider: Provider,
    /// The onnxruntime library (else ORT_DYLIB_PATH, beside the binary, the venv).
    pub onnxruntime_lib: Option<PathBuf>,
}

impl EngineOptions {
    /// tract with `threads`: the board's default engine.
    pub fn tract(threads: usize) -> Self {
        Self {
            engine: EngineChoice::Tract,
            threads,
            provider: Provider::Cpu,
            onnxruntime_lib: None,
        }
    }

    pub fn with_engine(mut self, engine: EngineChoice) -> Self {
        self.engine = engine;
        self
    }
}

/// The engines this build can run, with the reason one cannot (no feature, no library).
pub fn available(
    options: &EngineOptions,
) -> Vec<(EngineKind, std::result::Result<String, String>)> {
    EngineKind::ALL
        .iter()
        .map(|&kind| (kind, backend_version(kind, options)))
        .collect()
}

/// The version of `kind`'s backend as this process would use it, or why it cannot.
pub fn backend_version(
    kind: EngineKind,
    options: &EngineOptions,
) -> std::result::Result<String, String> {
    match kind {
        EngineKind::Tract => Ok(format!("tract {}", tract::VERSION)),
        #[cfg(feature = "onnxruntime")]
        EngineKind::Onnxruntime => onnxruntime::load_library(options.onnxruntime_lib.as_deref())
            .map(|(path, version)| format!("onnxruntime {version} ({})", path.display())),
        #[cfg(not(feature = "onnxruntime"))]
        EngineKind::Onnxruntime => {
            let _ = options;
            Err("this seg-cam is built without the onnxruntime engine (cargo feature `onnxruntime`)".into())
        }
    }
}

/// The engine `choice` means for a model with `card`. `auto` follows the card and falls
/// back (with a warning) to the engine this machine has.
pub fn resolve(
    choice: EngineChoice,
    card: &ModelCard,
    options: &EngineOptions,
) -> Result<EngineKind> {
    match choice {
        EngineChoice::Tract => Ok(EngineKind::Tract),
        EngineChoice::Onnxruntime => {
            backend_version(EngineKind::Onnxruntime, options).map_err(Error::Invalid)?;
            Ok(EngineKind::Onnxruntime)
        }
        EngineChoice::Auto => {
            let ort = backend_version(EngineKind::Onnxruntime, options);
            match (card.made_for(), ort) {
                (Some(EngineKind::Onnxruntime), Err(why)) => {
                    tracing::warn!(
                        "the model '{}' was made for onnxruntime, which is not available ({why}); running it with tract, slower",
                        card.name
                    );
                    Ok(EngineKind::Tract)
                }
                (Some(kind), _) => Ok(kind),
                (None, Ok(_)) => Ok(EngineKind::Onnxruntime),
                (None, Err(_)) => Ok(EngineKind::Tract),
            }
        }
    }
}

#[derive(Debug)]
enum Backend {
    Tract(tract::Tract),
    #[cfg(feature = "onnxruntime")]
    Onnxruntime(onnxruntime::Onnxruntime),
}

/// A loaded, checked model with its card, ready to run.
#[derive(Debug)]
pub struct Engine {
    path: PathBuf,
    card: ModelCard,
    kind: EngineKind,
    threads: usize,
    backend: Backend,
    /// [`Engine::classify`]'s input buffer, kept between frames: a fresh 1.8 MB buffer
    /// (320×480) is cleared and faulted in on every frame.
    chw: Mutex<Vec<f32>>,
}

impl Engine {
    /// Load `path` into tract with `threads` (≤ 1: the calling thread; more: a private
    /// pool): the board's default engine.
    pub fn load(path: &Path, threads: usize) -> Result<Self> {
        Self::open(path, &EngineOptions::tract(threads))
    }

    /// Load `path`, check its card against the graph, and prepare it in the engine
    /// `options` name, fixed to the card's input size.
    pub fn open(path: &Path, options: &EngineOptions) -> Result<Self> {
        let bytes = onnx_card::read_model(path)?;
        let proto = onnx_card::decode(&bytes).map_err(|m| model_error(path, m))?;
        let fail = |message: String| model_error(path, message);
        let card = onnx_card::card_of(&proto).map_err(fail)?;
        let graph = proto.graph.as_ref().expect("decode checks the graph");
        check::check_declared_io(graph, &card).map_err(fail)?;
        // An int8 form runs fast in one engine only: the other would run it in f32 with
        // extra conversions (tract on QDQ) or untested kernels. Say so rather than be slow.
        let asked = match options.engine {
            EngineChoice::Auto => None,
            EngineChoice::Tract => Some(EngineKind::Tract),
            EngineChoice::Onnxruntime => Some(EngineKind::Onnxruntime),
        };
        if let (Some(made_for), Some(asked)) = (card.made_for(), asked) {
            if made_for != asked {
                let form = card.quantization.as_ref().map_or(String::new(), |q| {
                    format!(" ({} int8 form)", q.format.name())
                });
                return Err(fail(format!(
                    "the model was made for {made_for}{form}, not {asked}: run it with --engine {made_for} (or auto), or quantize the f32 model for {asked} (seg-host quantize --engine {asked})"
                )));
            }
        }
        let kind = resolve(options.engine, &card, options)?;
        if kind == EngineKind::Tract && options.provider != Provider::Cpu {
            return Err(fail(format!(
                "provider {}: tract runs on the CPU only; use --engine onnxruntime",
                options.provider
            )));
        }
        let threads = options.threads.max(1);
        let backend = match kind {
            EngineKind::Tract => {
                Backend::Tract(tract::Tract::load(&proto, &card, threads).map_err(fail)?)
            }
            #[cfg(feature = "onnxruntime")]
            EngineKind::Onnxruntime => {
                if card.output_kind == crate::card::OutputKind::ClassMap {
                    check::argmax_scores(graph, &card).map_err(fail)?;
                }
                Backend::Onnxruntime(
                    onnxruntime::Onnxruntime::load(
                        &bytes,
                        &card,
                        threads,
                        options.provider,
                        options.onnxruntime_lib.as_deref(),
                    )
                    .map_err(fail)?,
                )
            }
            #[cfg(not(feature = "onnxruntime"))]
            EngineKind::Onnxruntime => unreachable!("resolve refuses onnxruntime in this build"),
        };
        Ok(Self {
            path: path.to_owned(),
            card,
            kind,
            threads,
            backend,
            chw: Mutex::new(Vec::new()),
        })
    }

    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The backend this model runs in.
    pub fn kind(&self) -> EngineKind {
        self.kind
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The input size the model was fixed to, as (width, height).
    pub fn input_size(&self) -> (u32, u32) {
        (self.card.input_width, self.card.input_height)
    }

    /// Run on one normalised image, planar CHW (3 × height × width values).
    pub fn run(&self, chw: &[f32]) -> Result<Output> {
        let (w, h) = self.input_size();
        let classes = self.card.classes.len();
        self.run_with(chw, |raw| match raw {
            Raw::Scores(_, scores) => Ok(Output::Logits(scores.to_vec())),
            Raw::Classes(_, indices) => class_map(&indices, classes, w, h).map(Output::ClassMap),
        })?
        .map_err(|m| model_error(&self.path, m))
    }

    /// Run and leave the output where the engine put it (class maps of another integer
    /// type than i64 are widened first): the model's own time, what `seg-cam bench`
    /// measures (as onnxruntime's `run_with_ort_values` does).
    pub fn run_in_place(&self, chw: &[f32]) -> Result<()> {
        self.run_with(chw, |_| ())
    }

    /// The class map of an image already at the model's input size.
    pub fn classify(&self, image: &RgbImage) -> Result<GrayImage> {
        let (w, h) = self.input_size();
        if image.dimensions() != (w, h) {
            return Err(Error::Invalid(format!(
                "{}: the model takes {w}×{h} images, got {}×{}",
                self.path.display(),
                image.width(),
                image.height()
            )));
        }
        // Taken out for the run, so that threads sharing an engine never wait on it.
        let mut chw = std::mem::take(&mut *self.chw.lock().unwrap_or_else(|e| e.into_inner()));
        chw.resize(3 * (w * h) as usize, 0.0);
        self.card.normalization.to_chw(image, &mut chw);
        let classes = self.card.classes.len();
        // The argmax reads the scores in place: a copy of them costs as much again.
        let map = self.run_with(&chw, |raw| match raw {
            Raw::Scores(_, scores) => Ok(argmax(scores, classes, w, h)),
            Raw::Classes(_, indices) => class_map(&indices, classes, w, h),
        });
        *self.chw.lock().unwrap_or_else(|e| e.into_inner()) = chw;
        map?.map_err(|m| model_error(&self.path, m))
    }

    /// Run on `chw` and hand `read` the output while the backend still holds it.
    fn run_with<R>(&self, chw: &[f32], read: impl FnOnce(Raw<'_>) -> R) -> Result<R> {
        let (w, h) = self.input_size();
        let (w, h) = (w as usize, h as usize);
        if chw.len() != 3 * h * w {
            return Err(Error::Invalid(format!(
                "{}: input of {} values, the model takes 3×{h}×{w} = {}",
                self.path.display(),
                chw.len(),
                3 * h * w
            )));
        }
        match &self.backend {
            Backend::Tract(t) => t.run(chw, h, w, read),
            #[cfg(feature = "onnxruntime")]
            Backend::Onnxruntime(o) => o.run(chw, h, w, read),
        }
        .map_err(|m| model_error(&self.path, m))
    }
}

/// A class-index output as a map (the load checked its shape). An index outside the
/// card's classes means card and graph disagree (the load cannot always see the argmax's
/// width): an error, not pixels drawn and counted as some other class.
fn class_map(
    indices: &[i64],
    classes: usize,
    width: u32,
    height: u32,
) -> std::result::Result<GrayImage, String> {
    if let Some(&bad) = indices.iter().find(|&&c| c < 0 || c >= classes as i64) {
        return Err(format!(
            "the model's class map holds index {bad}, but its card lists {classes} classes (0 to {}): card and graph disagree",
            classes.saturating_sub(1)
        ));
    }
    let bytes = indices.iter().map(|&c| c as u8).collect();
    Ok(GrayImage::from_raw(width, height, bytes).expect("the output shape was checked at load"))
}

/// Per-pixel index of the largest of `classes` planar score planes; ties go to the
/// lower index, as PyTorch's `argmax` does.
pub fn argmax(scores: &[f32], classes: usize, width: u32, height: u32) -> GrayImage {
    // Blocks of pixels small enough to keep their running best in registers, and a
    // branch-free select the compiler vectorises: 0.6 ms against 4–10 ms for the
    // per-pixel branching loop (21 classes, 320×480, random scores, measured here).
    const BLOCK: usize = 64;
    let plane = (width * height) as usize;
    assert_eq!(scores.len(), classes * plane, "scores vs classes × pixels");
    let mut index = vec![0u8; plane];
    let whole = plane / BLOCK * BLOCK;
    for (start, out) in (0..whole).step_by(BLOCK).zip(index.chunks_exact_mut(BLOCK)) {
        let block = |c: usize| -> &[f32; BLOCK] {
            scores[c * plane + start..][..BLOCK]
                .try_into()
                .expect("a whole block")
        };
        let mut best = *block(0);
        let mut which = [0u32; BLOCK];
        for c in 1..classes {
            let row = block(c);
            for k in 0..BLOCK {
                let take = ((row[k] > best[k]) as u32).wrapping_neg();
                which[k] = (which[k] & !take) | (c as u32 & take);
                best[k] = f32::from_bits((best[k].to_bits() & !take) | (row[k].to_bits() & take));
            }
        }
        for (o, &c) in out.iter_mut().zip(&which) {
            *o = c as u8;
        }
    }
    for (k, o) in index.iter_mut().enumerate().skip(whole) {
        let mut best = scores[k];
        for c in 1..classes {
            let s = scores[c * plane + k];
            if s > best {
                best = s;
                *o = c as u8;
            }
        }
    }
    GrayImage::from_raw(width, height, index).expect("plane size")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::OutputKind;
    use crate::onnx_card::{encode, pb, set_card, test_card};
    use crate::testing::conv_model;

    fn write(dir: &Path, name: &str, model: &pb::ModelProto) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, encode(model)).unwrap();
        path
    }

    fn card_for(classes: usize, class_map: bool) -> ModelCard {
        let mut card = test_card(classes, 4, 6);
        card.output_name = if class_map { "classes" } else { "scores" }.into();
        if class_map {
            card.output_kind = OutputKind::ClassMap;
        }
        card
    }

    #[test]
    fn class_maps_with_indices_beyond_the_card_are_refused() {
        let map = class_map(&[0, 1, 4, 2], 5, 2, 2).unwrap();
        assert_eq!(map.as_raw(), &[0, 1, 4, 2]);
        for bad in [5, 20, -1] {
            let msg = class_map(&[0, bad, 1, 2], 5, 2, 2).unwrap_err();
            assert!(
                msg.contains(&format!("index {bad}")) && msg.contains("5 classes"),
                "{msg}"
            );
        }
    }

    #[test]
    fn argmax_is_the_first_largest_class_of_every_pixel() {
        // Few distinct values, so that ties are common; planes with and without a
        // partial last block; NaN never wins, as in the per-pixel comparison.
        let mut seed = 0x2545_f491_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for (classes, width, height) in
            [(1, 5, 3), (2, 8, 8), (3, 65, 1), (21, 20, 13), (40, 64, 3)]
        {
            let plane = width * height;
            let scores: Vec<f32> = (0..classes * plane)
                .map(|_| match next() % 9 {
                    0 => f32::NAN,
                    v => v as f32 - 4.0,
                })
                .collect();
            let map = argmax(&scores, classes, width as u32, height as u32);
            for p in 0..plane {
                let mut want = 0;
                for c in 1..classes {
                    if scores[c * plane + p] > scores[want * plane + p] {
                        want = c;
                    }
                }
                assert_eq!(
                    map.as_raw()[p] as usize,
                    want,
                    "pixel {p} of {classes}×{width}×{height}"
                );
            }
        }
    }

    #[test]
    fn logits_and_class_maps_agree_with_the_arithmetic() {
        let dir = tempfile::tempdir().unwrap();
        // Pixel p has channels (x, y, z): score of class c = c(x+y+z) - (y + 2z).
        let chw: Vec<f32> = (0..3 * 24).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let expect = |c: usize, p: usize| {
            (0..3)
                .map(|k| (c as f32 - k as f32) * chw[k * 24 + p])
                .sum::<f32>()
        };
        for class_map in [false, true] {
            let mut model = conv_model(3, 4, 6, class_map);
            set_card(&mut model, &card_for(3, class_map));
            let engine = Engine::load(&write(dir.path(), "m.onnx", &model), 2).unwrap();
            let out = engine.run(&chw).unwrap();
            let want: Vec<f32> = (0..3)
                .flat_map(|c| (0..24).map(move |p| (c, p)))
                .map(|(c, p)| expect(c, p))
                .collect();
            let map = match out {
                Output::Logits(scores) => {
                    for (a, b) in scores.iter().zip(&want) {
                        assert!((a - b).abs() < 1e-5, "{scores:?} vs {want:?}");
                    }
                    argmax(&scores, 3, 6, 4)
                }
                Output::ClassMap(map) => map,
            };
            assert_eq!(map, argmax(&want, 3, 6, 4), "class_map {class_map}");
        }
    }

    #[test]
    fn contradictions_between_card_and_graph_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = |model: &pb::ModelProto| {
            let path = write(dir.path(), "bad.onnx", model);
            let msg = Engine::load(&path, 1).unwrap_err().to_string();
            assert!(msg.contains("bad.onnx"), "{msg}");
            msg
        };
        let mut model = conv_model(3, 4, 6, false);
        let msg = err(&model);
        assert!(msg.contains("no segcam model card"), "{msg}");

        set_card(&mut model, &card_for(5, false));
        let msg = err(&model);
        assert!(
            msg.contains("5 classes") && msg.contains("3 channels"),
            "{msg}"
        );

        let mut card = card_for(3, false);
        card.input_width = 8;
        set_card(&mut model, &card);
        let msg = err(&model);
        assert!(
            msg.contains("1×3×4×8") && msg.contains("[1, 3, 4, 6]"),
            "{msg}"
        );

        let mut card = card_for(3, false);
        card.input_name = "pixels".into();
        set_card(&mut model, &card);
        assert!(err(&model).contains("'pixels'"));

        let mut class_map = conv_model(3, 4, 6, true);
        set_card(&mut class_map, &card_for(4, true));
        let msg = err(&class_map);
        assert!(
            msg.contains("4 classes") && msg.contains("3 channels"),
            "{msg}"
        );

        let mut card = card_for(3, true);
        card.output_name = "scores".into();
        set_card(&mut model, &card);
        let msg = err(&model);
        assert!(msg.contains("class map") && msg.contains("ArgMax"), "{msg}");

        model.metadata_props[0].value = model.metadata_props[0]
            .value
            .replace("\"format_version\":1", "\"format_version\":99");
        assert!(err(&model).contains("version 99"));
        model.metadata_props[0].value = "{not json".into();
        assert!(err(&model).contains("not JSON"));
    }

    #[test]
    fn inputs_of_the_wrong_size_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = conv_model(3, 4, 6, false);
        set_card(&mut model, &card_for(3, false));
        let engine = Engine::load(&write(dir.path(), "m.onnx", &model), 1).unwrap();
        let msg = engine.run(&[0.0; 10]).unwrap_err().to_string();
        assert!(msg.contains("3×4×6"), "{msg}");
        let msg = engine
            .classify(&RgbImage::new(5, 4))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("6×4") && msg.contains("5×4"), "{msg}");
        assert_eq!(
            engine.classify(&RgbImage::new(6, 4)).unwrap().dimensions(),
            (6, 4)
        );
    }

    #[cfg(feature = "onnxruntime")]
    #[test]
    fn onnxruntime_computes_what_tract_computes_and_checks_the_same_card() {
        let dir = tempfile::tempdir().unwrap();
        let chw: Vec<f32> = (0..3 * 24).map(|i| ((i * 5) % 13) as f32 - 6.0).collect();
        let ort = EngineOptions::tract(1).with_engine(EngineChoice::Onnxruntime);
        for class_map in [false, true] {
            let mut model = conv_model(3, 4, 6, class_map);
            set_card(&mut model, &card_for(3, class_map));
            let path = write(dir.path(), "m.onnx", &model);
            let a = Engine::load(&path, 1).unwrap();
            let b = Engine::open(&path, &ort).unwrap();
            assert_eq!(
                (a.kind(), b.kind()),
                (EngineKind::Tract, EngineKind::Onnxruntime)
            );
            match (a.run(&chw).unwrap(), b.run(&chw).unwrap()) {
                (Output::Logits(x), Output::Logits(y)) => {
                    assert!(
                        x.iter().zip(&y).all(|(p, q)| (p - q).abs() < 1e-5),
                        "{x:?} vs {y:?}"
                    );
                }
                (Output::ClassMap(x), Output::ClassMap(y)) => assert_eq!(x, y),
                other => panic!("the engines disagree on the output kind: {other:?}"),
            }
        }
        // The same contradiction, the same message, whichever engine.
        let mut model = conv_model(3, 4, 6, false);
        set_card(&mut model, &card_for(5, false));
        let path = write(dir.path(), "bad.onnx", &model);
        let msg = Engine::open(&path, &ort).unwrap_err().to_string();
        assert!(
            msg.contains("bad.onnx") && msg.contains("5 classes") && msg.contains("3 channels"),
            "{msg}"
        );
        // A provider the library lacks names itself and the library.
        let mut model = conv_model(3, 4, 6, false);
        set_card(&mut model, &card_for(3, false));
        let path = write(dir.path(), "m.onnx", &model);
        let mut cuda = ort.clone();
        cuda.provider = Provider::Tensorrt;
        if let Err(e) = Engine::open(&path, &cuda) {
            let msg = e.to_string();
            assert!(
                msg.contains("tensorrt") && msg.contains("libonnxruntime"),
                "{msg}"
            );
        }
        let msg = Engine::open(
            &path,
            &EngineOptions {
                provider: Provider::Cuda,
                ..EngineOptions::tract(1)
            },
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("tract runs on the CPU only"), "{msg}");
    }

    #[test]
    fn auto_follows_the_card_and_explicit_engines_must_match_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = conv_model(3, 4, 6, false);
        let mut card = card_for(3, false);
        card.engine = Some(EngineKind::Tract);
        set_card(&mut model, &card);
        let path = write(dir.path(), "t.onnx", &model);
        let auto = EngineOptions::tract(1).with_engine(EngineChoice::Auto);
        assert_eq!(
            Engine::open(&path, &auto).unwrap().kind(),
            EngineKind::Tract
        );
        let msg = Engine::open(&path, &auto.clone().with_engine(EngineChoice::Onnxruntime))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("t.onnx") && msg.contains("made for tract"),
            "{msg}"
        );
        assert_eq!("ort".parse::<EngineChoice>(), Ok(EngineChoice::Onnxruntime));
        assert!("tensorflow"
            .parse::<EngineChoice>()
            .unwrap_err()
            .contains("auto, tract or onnxruntime"));
    }
}
