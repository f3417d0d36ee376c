//! The render/output stage: overlay and HUD, then every configured output — the HTTP
//! page, the framebuffer, an image sequence, raw class-id masks, JSON-lines stats.
//! While the source is away it keeps the page alive with a "no signal" picture.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::imageops::{self, FilterType};
use image::RgbImage;
use serde::Serialize;

use super::infer::{Inferred, POLL};
use super::status::Status;
use super::watchdog;
use crate::classes::{ClassList, PresentClass};
use crate::drift::{ClassWindow, DriftStats};
use crate::error::{Error, Result};
use crate::framebuffer::Framebuffer;
use crate::http::{Published, Stats};
use crate::hud::{self, HudInfo};
use crate::jpeg::{JpegEncoder, MAX_SIDE};
use crate::overlay::{Overlay, OverlayOptions};
use crate::provenance::Provenance;
use crate::queue::{DropQueue, Pop};
use crate::resize::resample_labels;

/// How often the "no signal" picture is refreshed.
const NO_SIGNAL_EVERY: Duration = Duration::from_millis(500);
/// Without stream clients, `/snapshot.jpg` is refreshed this often (not every frame).
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// What the stage draws and when it stops.
#[derive(Debug, Clone)]
pub struct Settings {
    pub overlay: OverlayOptions,
    pub classes: ClassList,
    /// The name the HUD and the stats show.
    pub model: String,
    pub frames: Option<u64>,
    pub jpeg_quality: u8,
    /// The size of the "no signal" picture before any frame was seen.
    pub blank_size: (u32, u32),
    /// Frames the class shares of `/metrics` are taken over.
    pub drift_window: usize,
    /// The training set's class shares (the model card's), for the drift score.
    pub class_distribution: Option<Vec<f64>>,
    /// How the board verified the release this model came from.
    pub release: Option<Provenance>,
}

/// Where frames go.
#[derive(Default)]
pub struct Sinks {
    pub http: Option<Arc<Published>>,
    pub fb: Option<Framebuffer>,
    pub out: Option<PathBuf>,
    pub masks: Option<PathBuf>,
    pub stats: Option<Box<dyn Write + Send>>,
}

/// Counts at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub frames: u64,
    pub dropped: u64,
    pub corrupt: u64,
    /// Frames processed but not written as JPEG (no output could take them).
    pub skipped: u64,
}

/// One `--stats` line per output frame.
#[derive(Serialize)]
struct FrameLine<'a> {
    event: &'static str,
    /// Output frames so far (1, 2, …); matches the numbers in file names.
    frame: u64,
    /// Capture sequence number (gaps are dropped frames).
    seq: u64,
    /// The input file the frame came from (image files and folders).
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    time_ms: f64,
    fps: f32,
    inference_ms: f32,
    /// Of which fitting the frame to the model's input (resize, letterbox).
    preprocess_ms: f32,
    /// With --compare-engine: the share of pixels both engines classify the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    agreement: Option<f32>,
    /// Capture to output.
    latency_ms: f32,
    /// Drawing the overlay, HUD and legend onto the frame.
    overlay_ms: f32,
    /// Encoding the picture as JPEG (null when no output needed one this frame).
    jpeg_ms: Option<f32>,
    dropped: u64,
    corrupt: u64,
    skipped: u64,
    width: u32,
    height: u32,
    /// Every class present with its share of the frame (the ignored class too).
    classes: &'a [PresentClass],
}

/// A `--stats` line when the source goes away or comes back.
#[derive(Serialize)]
struct SignalLine<'a> {
    event: &'static str,
    time_ms: f64,
    detail: &'a str,
}

struct Stage<'a> {
    settings: Settings,
    sinks: Sinks,
    overlay: Overlay,
    status: &'a Status,
    dropped: &'a (dyn Fn() -> u64 + Sync),
    start: Instant,
    frames: u64,
    fps: f32,
    last_output: Option<Instant>,
    last_frame: Option<RgbImage>,
    last_snapshot: Option<Instant>,
    last_no_signal: Option<Instant>,
    reported_no_signal: bool,
    skipped: u64,
    drift: ClassWindow,
    /// The composed picture's buffer, reused from frame to frame.
    picture: RgbImage,
    jpeg: JpegEncoder,
}

/// Run until the queue closes, a stop is requested or `frames` are done (which
/// requests the stop); closes the queue.
pub fn run(
    settings: Settings,
    sinks: Sinks,
    queue: &DropQueue<Inferred>,
    dropped: &(dyn Fn() -> u64 + Sync),
    status: &Status,
) -> Result<Summary> {
    let overlay = Overlay::new(&settings.classes, settings.overlay);
    let drift = ClassWindow::new(settings.classes.len(), settings.drift_window);
    let jpeg = JpegEncoder::new();
    tracing::info!("JPEG: {}", jpeg.describe());
    let mut stage = Stage {
        settings,
        sinks,
        overlay,
        status,
        dropped,
        start: Instant::now(),
        frames: 0,
        fps: 0.0,
        last_output: None,
        last_frame: None,
        last_snapshot: None,
        last_no_signal: None,
        reported_no_signal: false,
        skipped: 0,
        drift,
        picture: RgbImage::new(0, 0),
        jpeg,
    };
    let result = stage.run(queue);
    queue.close();
    if let Err(e) = &result {
        status.fail(e.to_string());
    }
    result.map(|()| stage.summary())
}

impl Stage<'_> {
    fn run(&mut self, queue: &DropQueue<Inferred>) -> Result<()> {
        while !self.status.stopping() {
            match queue.pop(POLL) {
                Pop::Item(inferred) => {
                    self.signal_report(false)?;
                    self.frame(inferred)?;
                    // Frames move: the pipeline is alive, end to end.
                    watchdog::alive();
                    super::fault::maybe_fail("output", self.frames);
                    if self.settings.frames.is_some_and(|n| self.frames >= n) {
                        self.status.stop();
                    }
                }
                Pop::Empty if self.status.no_signal() => {
                    self.no_signal()?;
                    // Waiting for the camera, knowingly: alive too.
                    watchdog::alive();
                }
                Pop::Empty => self.idle(),
                Pop::Closed => break,
            }
        }
        if let Some(out) = &mut self.sinks.stats {
            out.flush().map_err(|e| Error::io(Path::new("stdout"), e))?;
        }
        Ok(())
    }

    fn drift_stats(&self) -> DriftStats {
        let trained = self.settings.class_distribution.as_deref();
        self.drift.stats(&self.settings.classes, trained)
    }

    fn summary(&self) -> Summary {
        Summary {
            frames: self.frames,
            dropped: (self.dropped)(),
            corrupt: self.status.corrupt.load(Ordering::Relaxed),
            skipped: self.skipped,
        }
    }

    /// No frame came: keep the counters on the page and in `/healthz` current (a
    /// source whose every frame is corrupt shows up here).
    fn idle(&mut self) {
        let Some(published) = &self.sinks.http else {
            return;
        };
        let mut stats = published.stats();
        let corrupt = self.status.corrupt.load(Ordering::Relaxed);
        let dropped = (self.dropped)();
        if (stats.corrupt_frames, stats.dropped_frames) != (corrupt, dropped) {
            stats.corrupt_frames = corrupt;
            stats.dropped_frames = dropped;
            published.set_stats(stats);
        }
    }

    /// The picture as JPEG; a picture JPEG cannot hold is scaled down to fit, and one
    /// that still fails is skipped and counted (one odd frame never ends a run).
    fn encode(&mut self, picture: &RgbImage, n: u64) -> Option<Vec<u8>> {
        let (w, h) = picture.dimensions();
        let longest = w.max(h);
        let fitted;
        let picture = if longest > MAX_SIDE {
            let scale = MAX_SIDE as f64 / longest as f64;
            let fit = |side: u32| ((side as f64 * scale).round() as u32).clamp(1, MAX_SIDE);
            fitted = imageops::resize(picture, fit(w), fit(h), FilterType::Triangle);
            &fitted
        } else {
            picture
        };
        match self.jpeg.encode(picture, self.settings.jpeg_quality) {
            Ok(jpeg) => Some(jpeg),
            Err(e) => {
                self.skipped += 1;
                tracing::warn!(
                    "frame {n}: {e}; not written as JPEG ({} so far)",
                    self.skipped
                );
                None
            }
        }
    }

    fn frame(&mut self, inferred: Inferred) -> Result<()> {
        let Inferred {
            frame,
            map,
            inference_ms,
            preprocess_ms,
            agreement,
        } = inferred;
        let now = Instant::now();
        if let Some(last) = self.last_output {
            // A short moving average: steady on the page, quick to follow changes.
            let instant = 1.0 / now.duration_since(last).as_secs_f32().max(1e-6);
            self.fps = if self.fps == 0.0 {
                instant
            } else {
                0.9 * self.fps + 0.1 * instant
            };
        }
        self.last_output = Some(now);
        self.frames += 1;
        let n = self.frames;

        let drawing = Instant::now();
        // The last frame's buffer: no fresh pages to fault in and clear every frame.
        let mut picture = std::mem::take(&mut self.picture);
        let counts = self.overlay.render_into(&frame.image, &map, &mut picture)?;
        self.drift.push(&counts);
        let legend = self.overlay.legend(&self.settings.classes, &counts);
        let info = HudInfo {
            fps: self.fps,
            inference_ms,
            model: &self.settings.model,
            no_signal: false,
        };
        hud::draw(&mut picture, &info, &legend);
        let overlay_ms = drawing.elapsed().as_secs_f32() * 1000.0;
        let (width, height) = frame.image.dimensions();
        // Encoding costs; without viewers the snapshot only needs to be recent.
        let publish = self.sinks.http.as_ref().is_some_and(|p| {
            p.clients() > 0
                || self
                    .last_snapshot
                    .is_none_or(|t| t.elapsed() >= SNAPSHOT_EVERY)
        });
        // One encoding per frame, for whichever outputs want it.
        let (jpeg, jpeg_ms) = if publish || self.sinks.out.is_some() {
            let encoding = Instant::now();
            let jpeg = self.encode(&picture, n);
            (jpeg, Some(encoding.elapsed().as_secs_f32() * 1000.0))
        } else {
            (None, None)
        };

        if let Some(dir) = &self.sinks.masks {
            let filter = self.settings.overlay.filter;
            let ids = resample_labels(&map, width, height, filter);
            let name = format!("mask-{n:06}.png");
            let mut png = Vec::new();
            ids.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .map_err(|e| image_error(&dir.join(&name), e))?;
            write_whole(dir, &name, &png)?;
        }
        if let (Some(dir), Some(jpeg)) = (&self.sinks.out, &jpeg) {
            write_whole(dir, &format!("frame-{n:06}.jpg"), jpeg)?;
        }
        if let Some(fb) = &mut self.sinks.fb {
            show(fb, &picture)?;
        }
        let dropped = (self.dropped)();
        let corrupt = self.status.corrupt.load(Ordering::Relaxed);
        if let Some(published) = &self.sinks.http {
            let stats = Stats {
                frames: n,
                fps: self.fps,
                inference_ms,
                dropped_frames: dropped,
                corrupt_frames: corrupt,
                skipped_frames: self.skipped,
                model: self.settings.model.clone(),
                width,
                height,
                classes_present: legend.clone(),
                no_signal: false,
                problem: None,
                drift: self.drift_stats(),
                release: self.settings.release.clone(),
            };
            if let (true, Some(jpeg)) = (publish, jpeg) {
                published.publish(jpeg, stats);
                self.last_snapshot = Some(Instant::now());
            } else {
                published.set_stats(stats);
            }
        }
        if self.sinks.stats.is_some() {
            // Every class present, the ignored one too: the stats are a histogram.
            let present = counts.present(&self.settings.classes);
            let line = FrameLine {
                event: "frame",
                frame: n,
                seq: frame.seq,
                source: frame.name.as_deref(),
                time_ms: self.start.elapsed().as_secs_f64() * 1000.0,
                fps: self.fps,
                inference_ms,
                preprocess_ms,
                agreement,
                latency_ms: frame.captured.elapsed().as_secs_f32() * 1000.0,
                overlay_ms,
                jpeg_ms,
                dropped,
                corrupt,
                skipped: self.skipped,
                width,
                height,
                classes: &present,
            };
            self.stats_line(&line)?;
        }
        self.last_frame = Some(frame.image);
        self.picture = picture;
        Ok(())
    }

    /// Keep the outputs alive while the source is away: the last frame (or a blank
    /// one) under a "NO SIGNAL" banner, a few times a second.
    fn no_signal(&mut self) -> Result<()> {
        self.signal_report(true)?;
        if self
            .last_no_signal
            .is_some_and(|t| t.elapsed() < NO_SIGNAL_EVERY)
        {
            return Ok(());
        }
        self.last_no_signal = Some(Instant::now());
        self.last_output = None;
        self.fps = 0.0;
        let (w, h) = self.settings.blank_size;
        let mut picture = self
            .last_frame
            .clone()
            .unwrap_or_else(|| RgbImage::new(w, h));
        let info = HudInfo {
            fps: 0.0,
            inference_ms: 0.0,
            model: &self.settings.model,
            no_signal: true,
        };
        hud::draw(&mut picture, &info, &[]);
        if let Some(fb) = &mut self.sinks.fb {
            show(fb, &picture)?;
        }
        let jpeg = match self.sinks.http {
            Some(_) => self.encode(&picture, self.frames),
            None => None,
        };
        if let Some(published) = &self.sinks.http {
            let stats = Stats {
                frames: self.frames,
                dropped_frames: (self.dropped)(),
                corrupt_frames: self.status.corrupt.load(Ordering::Relaxed),
                skipped_frames: self.skipped,
                model: self.settings.model.clone(),
                width: picture.width(),
                height: picture.height(),
                no_signal: true,
                problem: self.status.last_problem(),
                drift: self.drift_stats(),
                release: self.settings.release.clone(),
                ..Stats::default()
            };
            match jpeg {
                Some(jpeg) => published.publish(jpeg, stats),
                None => published.set_stats(stats),
            }
        }
        Ok(())
    }

    /// A `--stats` line when the signal state changes.
    fn signal_report(&mut self, lost: bool) -> Result<()> {
        if lost == self.reported_no_signal {
            return Ok(());
        }
        self.reported_no_signal = lost;
        if self.sinks.stats.is_none() {
            return Ok(());
        }
        let detail = if lost {
            self.status.last_problem().unwrap_or_default()
        } else {
            self.status.source()
        };
        let line = SignalLine {
            event: if lost { "no_signal" } else { "signal" },
            time_ms: self.start.elapsed().as_secs_f64() * 1000.0,
            detail: &detail,
        };
        self.stats_line(&line)
    }

    fn stats_line(&mut self, line: &impl Serialize) -> Result<()> {
        let out = self.sinks.stats.as_mut().expect("checked by the caller");
        let text = serde_json::to_string(line).expect("stats serialise");
        writeln!(out, "{text}")
            .and_then(|()| out.flush())
            .map_err(|e| Error::io(Path::new("stdout"), e))
    }
}

/// Show `picture` on the framebuffer, scaled down to fit it when larger.
fn show(fb: &mut Framebuffer, picture: &RgbImage) -> Result<()> {
    let (fw, fh) = fb.size();
    let (pw, ph) = picture.dimensions();
    if pw <= fw && ph <= fh {
        return fb.show(picture);
    }
    let scale = (fw as f32 / pw as f32).min(fh as f32 / ph as f32);
    let w = ((pw as f32 * scale).round() as u32).clamp(1, fw);
    let h = ((ph as f32 * scale).round() as u32).clamp(1, fh);
    fb.show(&imageops::resize(picture, w, h, FilterType::Triangle))
}

/// Write `name` in `dir` under a temporary name first: a reader watching the folder, or
/// a run killed mid-write, never sees half a file under the frame's name.
fn write_whole(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let temporary = dir.join(format!(".{name}.part"));
    std::fs::write(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            Error::io(&path, e)
        })
}

fn image_error(path: &Path, e: image::ImageError) -> Error {
    match e {
        image::ImageError::IoError(source) => Error::io(path, source),
        other => Error::Invalid(format!("{}: {other}", path.display())),
    }
}
