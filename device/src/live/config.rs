//! Every setting of `seg-cam`, with its default: one home for each. A TOML file
//! (`--config`) gives any of them under the same names as the flags; flags win.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::card::EngineKind;
use crate::decode::DecodeLimits;
use crate::engine::{EngineChoice, EngineOptions, Provider};
use crate::error::{Error, Result};
use crate::http::HttpOptions;
use crate::overlay::{Visualize, DEFAULT_ALPHA};
use crate::resize::{Filter, ResizePolicy};
use crate::source::{CameraControl, PixelFormat, SourceOptions};

/// The model `seg-cam` runs unless told otherwise.
pub const DEFAULT_MODEL: &str = "models/demo.int8.onnx";
/// The value of `http` that turns the server off.
pub const HTTP_OFF: &str = "off";
/// Bounds of the capture settings (no camera offers more).
const MAX_SIDE: u32 = 16384;
const MAX_RATE: f32 = 1000.0;
const MAX_THREADS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// `v4l2:///dev/video0`, `/dev/videoN`, `test://`, an image, a folder or a glob.
    pub input: String,
    /// The exported model (its card says the classes, input size and normalisation).
    pub model: PathBuf,
    /// Inference threads; 0 uses every core.
    pub threads: usize,
    /// The engine: auto (the one the model's card names), tract or onnxruntime.
    pub engine: EngineChoice,
    /// Where onnxruntime runs the model: cpu, cuda or tensorrt.
    pub provider: Provider,
    /// The onnxruntime library (else ORT_DYLIB_PATH, beside seg-cam, the segcam venv).
    pub onnxruntime_lib: Option<PathBuf>,
    /// Also run every frame through this engine and report the share of pixels whose
    /// class agrees (`agreement` in the stats): checks an engine on this board's camera.
    pub compare_engine: Option<EngineKind>,
    /// Requested capture size and rate (cameras take the nearest they offer).
    pub width: u32,
    pub height: u32,
    pub rate: f32,
    /// Only this camera pixel format (yuyv, uyvy, nv12, nv21, yuv420, yvu420, rgb24,
    /// bgr24, mjpeg, grey).
    pub pixel_format: Option<PixelFormat>,
    /// Camera controls set before streaming, "NAME=VALUE" with v4l2-ctl's names
    /// (`seg-cam --list-cameras` shows them), e.g. ["power_line_frequency=50_hz"].
    pub camera_controls: Vec<String>,
    /// Start image inputs again at their end.
    #[serde(rename = "loop")]
    pub looping: bool,
    /// How frames are fitted to the model's input: stretch, crop or letterbox.
    pub resize: ResizePolicy,
    /// How the class map is brought to the frame's resolution: point or linear.
    pub filter: Filter,
    /// overlay, mask or side-by-side.
    pub visualize: Visualize,
    /// Weight of the class colours over the frame, 0–255.
    pub alpha: u8,
    /// A class (name or index) left unpainted and out of the legend, e.g. background.
    pub ignore_class: Option<String>,
    /// Address of the HTTP page and stream, or "off".
    pub http: String,
    /// A token every HTTP request but `/healthz` must carry (`Authorization: Bearer`
    /// or `?token=`); better given as `http-token-file`, which `ps` does not show.
    pub http_token: Option<String>,
    /// A file holding the HTTP token (its first line).
    pub http_token_file: Option<PathBuf>,
    /// Host names clients may reach the server by, besides its addresses, `localhost`
    /// and this machine's name (a check against DNS rebinding; "*" turns it off).
    pub http_allowed_hosts: Vec<String>,
    /// The largest image file or frame decoded, in pixels (width × height).
    pub decode_max_pixels: u64,
    /// The largest image file or frame decoded, in bytes.
    pub decode_max_bytes: u64,
    /// A framebuffer to show frames on, e.g. fb:///dev/fb0.
    pub fb: Option<String>,
    /// A folder to write each output frame to (frame-000001.jpg, …).
    pub out: Option<PathBuf>,
    /// A folder to write each frame's class ids to (mask-000001.png, 8-bit, at the
    /// frame's resolution; 255 where the model did not look).
    pub save_masks: Option<PathBuf>,
    /// Print one JSON line of statistics per frame on stdout.
    pub stats: bool,
    /// Stop after this many frames.
    pub frames: Option<u64>,
    /// JPEG quality of the stream, snapshots and `out` frames, 1–100.
    pub jpeg_quality: u8,
    /// Frames over which `/metrics` reports each class's pixel share and the drift
    /// score (their distance from the training set's shares).
    pub drift_window: usize,
    /// `seg-cam check --golden`: the least share of each golden frame's pixels whose
    /// class must agree with the workstation's, 0–1.
    pub golden_agreement: f64,
    /// `seg-cam check --golden`: the most the 90th percentile of a frame's latency may
    /// be on this board, in milliseconds (none: not checked).
    pub latency_budget_ms: Option<f64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            input: "v4l2:///dev/video0".into(),
            model: PathBuf::from(DEFAULT_MODEL),
            threads: 0,
            engine: EngineChoice::default(),
            provider: Provider::default(),
            onnxruntime_lib: None,
            compare_engine: None,
            width: 640,
            height: 480,
            rate: 30.0,
            pixel_format: None,
            camera_controls: Vec::new(),
            looping: false,
            resize: ResizePolicy::default(),
            filter: Filter::default(),
            visualize: Visualize::default(),
            alpha: DEFAULT_ALPHA,
            ignore_class: None,
            http: crate::http::DEFAULT_ADDR.into(),
            http_token: None,
            http_token_file: None,
            http_allowed_hosts: Vec::new(),
            decode_max_pixels: DecodeLimits::default().max_pixels,
            decode_max_bytes: DecodeLimits::default().max_bytes,
            fb: None,
            out: None,
            save_masks: None,
            stats: false,
            frames: None,
            jpeg_quality: crate::jpeg::DEFAULT_QUALITY,
            drift_window: crate::drift::DEFAULT_WINDOW,
            golden_agreement: 0.99,
            latency_budget_ms: None,
        }
    }
}

impl Config {
    /// Settings from a TOML file's text overlaid by `overrides` (the flags given, as a
    /// TOML table with the same keys). `file` names the file in errors.
    pub fn merge(file: Option<(&Path, &str)>, overrides: toml::Table) -> Result<Self> {
        Self::merge_over(toml::Table::new(), file, overrides)
    }

    /// As [`merge`](Self::merge), with `base` under the file: settings that replace a
    /// default but give way to the file (seg-cam's page turned off when OUTPUTs are named).
    pub fn merge_over(
        base: toml::Table,
        file: Option<(&Path, &str)>,
        overrides: toml::Table,
    ) -> Result<Self> {
        let mut table = base;
        if let Some((path, text)) = file {
            table.extend(
                text.parse::<toml::Table>().map_err(|e| {
                    Error::Invalid(format!("{}: not valid TOML: {e}", path.display()))
                })?,
            );
        }
        table.extend(overrides);
        let name = file.map_or("the flags".to_string(), |(p, _)| p.display().to_string());
        let config: Config = table.try_into().map_err(|e: toml::de::Error| {
            // Display names the key (`in \`alpha\``), message() alone does not.
            let said = e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            Error::Invalid(format!("{name}: {said}"))
        })?;
        config
            .check()
            .map_err(|e| Error::Invalid(format!("{name}: {e}")))?;
        Ok(config)
    }

    /// Read `path` over `base` and overlay `overrides` (see [`merge_over`](Self::merge_over)).
    pub fn load_over(base: toml::Table, path: &Path, overrides: toml::Table) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            cause: source,
        })?;
        Self::merge_over(base, Some((path, &text)), overrides)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if !(1..=MAX_SIDE).contains(&self.width) || !(1..=MAX_SIDE).contains(&self.height) {
            return Err(format!(
                "size {}×{}: each side must be 1–{MAX_SIDE}",
                self.width, self.height
            ));
        }
        if !(self.rate > 0.0 && self.rate <= MAX_RATE) {
            return Err(format!(
                "rate {}: expected frames per second in (0, {MAX_RATE}]",
                self.rate
            ));
        }
        if self.threads > MAX_THREADS {
            return Err(format!(
                "threads {}: expected 0 (every core) to {MAX_THREADS}",
                self.threads
            ));
        }
        if self.decode_max_pixels == 0 || self.decode_max_bytes == 0 {
            return Err("decode-max-pixels and decode-max-bytes must be positive".into());
        }
        if self.http_token.is_some() && self.http_token_file.is_some() {
            return Err("http-token and http-token-file: give one, not both".into());
        }
        if self
            .http_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err("http-token is empty".into());
        }
        if !(1..=100_000).contains(&self.drift_window) {
            return Err(format!(
                "drift-window {}: expected 1–100000 frames",
                self.drift_window
            ));
        }
        if !(0.0..=1.0).contains(&self.golden_agreement) {
            return Err(format!(
                "golden-agreement {}: expected a share from 0 to 1 (0.99: 99% of pixels)",
                self.golden_agreement
            ));
        }
        if let Some(ms) = self
            .latency_budget_ms
            .filter(|ms| !(ms.is_finite() && *ms > 0.0))
        {
            return Err(format!(
                "latency-budget-ms {ms}: expected a positive number of milliseconds"
            ));
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return Err(format!(
                "jpeg-quality {}: expected 1–100",
                self.jpeg_quality
            ));
        }
        for control in &self.camera_controls {
            control
                .parse::<CameraControl>()
                .map_err(|e| e.to_string())?;
        }
        if self.frames == Some(0) {
            return Err("frames 0: expected at least 1 (or leave it out)".into());
        }
        Ok(())
    }

    pub fn source_options(&self) -> SourceOptions {
        SourceOptions {
            width: self.width,
            height: self.height,
            rate: self.rate,
            pixel_format: self.pixel_format,
            // Checked by `check`.
            camera_controls: self
                .camera_controls
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
            looping: self.looping,
            decode: DecodeLimits {
                max_pixels: self.decode_max_pixels,
                max_bytes: self.decode_max_bytes,
            },
        }
    }

    /// The HTTP server's settings; reads the token file, whose errors name it.
    pub fn http_options(&self) -> Result<HttpOptions> {
        let token = match (&self.http_token, &self.http_token_file) {
            (Some(token), _) => Some(token.trim().to_string()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
                    path: path.clone(),
                    cause: source,
                })?;
                let token = text.lines().next().unwrap_or_default().trim().to_string();
                if token.is_empty() {
                    return Err(Error::Invalid(format!(
                        "{}: the HTTP token file is empty",
                        path.display()
                    )));
                }
                Some(token)
            }
            (None, None) => None,
        };
        Ok(HttpOptions {
            token,
            allowed_hosts: self.http_allowed_hosts.clone(),
            ..HttpOptions::default()
        })
    }

    pub fn http_enabled(&self) -> bool {
        !self.http.eq_ignore_ascii_case(HTTP_OFF)
    }

    /// The engine, threads, provider and library the model runs with.
    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            engine: self.engine,
            threads: self.engine_threads(),
            provider: self.provider,
            onnxruntime_lib: self.onnxruntime_lib.clone(),
        }
    }

    /// Threads for the engine: `threads`, or every core when 0.
    pub fn engine_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let file =
            "input = \"test://\"\nalpha = 80\nresize = \"crop\"\nsave-masks = \"m\"\nloop = true\n";
        let flags = table("alpha = 200\nvisualize = \"side-by-side\"");
        let c = Config::merge(Some((Path::new("seg.toml"), file)), flags).unwrap();
        assert_eq!(c.input, "test://");
        assert_eq!(c.alpha, 200, "the flag wins");
        assert_eq!(c.resize, ResizePolicy::Crop);
        assert_eq!(c.visualize, Visualize::SideBySide);
        assert_eq!(c.save_masks, Some(PathBuf::from("m")));
        assert!(c.looping);
        assert_eq!(
            c.model,
            PathBuf::from(DEFAULT_MODEL),
            "defaults fill the rest"
        );
        assert_eq!(c.http, "127.0.0.1:8080");
    }

    #[test]
    fn mistakes_in_the_file_name_it_and_the_key() {
        let err = |text: &str| {
            Config::merge(Some((Path::new("cam.toml"), text)), toml::Table::new())
                .unwrap_err()
                .to_string()
        };
        let msg = err("alhpa = 3");
        assert!(msg.contains("cam.toml") && msg.contains("alhpa"), "{msg}");
        let msg = err("resize = \"squash\"");
        assert!(msg.contains("cam.toml") && msg.contains("squash"), "{msg}");
        let msg = err("alpha = 300");
        assert!(msg.contains("cam.toml") && msg.contains("300"), "{msg}");
        let msg = err("alpha = \"high\"");
        assert!(msg.contains("cam.toml") && msg.contains("`alpha`"), "{msg}");
        let msg = err("width = 0");
        assert!(msg.contains("cam.toml") && msg.contains("0×480"), "{msg}");
        let msg = err("width = 100000");
        assert!(msg.contains("cam.toml") && msg.contains("100000"), "{msg}");
        let msg = err("threads = 5000");
        assert!(msg.contains("threads 5000"), "{msg}");
        let msg = err("rate = -3");
        assert!(msg.contains("rate -3"), "{msg}");
        let msg = err("http-token = \"a\"\nhttp-token-file = \"t\"");
        assert!(msg.contains("not both"), "{msg}");
        let msg = err("decode-max-pixels = 0");
        assert!(msg.contains("decode-max-pixels"), "{msg}");
        let msg = err("[broken");
        assert!(msg.contains("cam.toml") && msg.contains("TOML"), "{msg}");
    }

    #[test]
    fn the_defaults_round_trip_through_toml() {
        let text = toml::to_string(&Config::default()).unwrap();
        let back = Config::merge(Some((Path::new("d.toml"), &text)), toml::Table::new()).unwrap();
        assert_eq!(back, Config::default());
        assert!(Config::default().http_enabled());
        let off = Config::merge(None, table("http = \"off\"")).unwrap();
        assert!(!off.http_enabled());
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(Config::default().engine_threads(), cores, "0: every core");
        let three = Config::merge(None, table("threads = 3")).unwrap();
        assert_eq!(three.engine_threads(), 3);
    }

    #[test]
    fn the_http_token_comes_from_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  s3cret \nignored\n").unwrap();
        let c = Config {
            http_token_file: Some(file.clone()),
            http_allowed_hosts: vec!["cam.lan".into()],
            ..Config::default()
        };
        let options = c.http_options().unwrap();
        assert_eq!(options.token.as_deref(), Some("s3cret"));
        assert_eq!(options.allowed_hosts, ["cam.lan"]);
        std::fs::write(&file, "\n").unwrap();
        let msg = c.http_options().unwrap_err().to_string();
        assert!(
            msg.contains("token") && msg.contains(file.to_str().unwrap()),
            "{msg}"
        );
        let c = Config {
            http_token_file: Some(dir.path().join("missing")),
            ..Config::default()
        };
        assert!(c
            .http_options()
            .unwrap_err()
            .to_string()
            .contains("missing"));
        assert_eq!(
            Config::default().http_options().unwrap(),
            HttpOptions::default()
        );
    }
}
