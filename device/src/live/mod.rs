//! The live pipeline behind `seg-cam`: capture, inference and render/output each on
//! their own thread, joined by bounded queues that drop the oldest frame when a live
//! source outruns the model (so latency stays about one frame and memory flat).
//!
//! ```text
//! source ─► capture ─[1]─► inference ─[1]─► render + outputs (HTTP, fb, files, stats)
//! ```

pub mod capture;
pub mod config;
mod fault;
pub mod infer;
pub mod output;
pub mod status;
pub mod uri;
pub mod watchdog;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use config::Config;
pub use output::Summary;

use crate::card::EngineKind;
use crate::classes::ClassList;
use crate::engine::{Engine, EngineChoice, EngineOptions, Provider};
use crate::error::{Error, Result};
use crate::framebuffer::Framebuffer;
use crate::http::{HttpServer, Published};
use crate::overlay::OverlayOptions;
use crate::provenance::Provenance;
use crate::queue::DropQueue;
use crate::source::Input;
use capture::{Frame, Opener};
use infer::Inferred;
use status::Status;

/// Frames each queue holds: one waiting frame per stage keeps latency at about a
/// frame while letting capture and inference overlap.
const QUEUE_DEPTH: usize = 1;

/// The class `ignore-class` names: a class name or an index.
pub fn resolve_class(name: &str, classes: &ClassList) -> Result<u8> {
    if let Some(i) = classes.names.iter().position(|n| n == name) {
        return Ok(i as u8);
    }
    match name.parse::<usize>() {
        Ok(i) if i < classes.len() => Ok(i as u8),
        _ => Err(Error::Invalid(format!(
            "ignore-class '{name}': the model's classes are {} (or an index 0–{})",
            classes.names.join(", "),
            classes.len().saturating_sub(1)
        ))),
    }
}

fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        cause: source,
    })
}

/// Refuse an output folder that holds input files: frame-000002.jpg written there could
/// replace an input not yet read, and later passes would read our own output.
fn refuse_among_inputs(dir: &Path, inputs: &[PathBuf]) -> Result<()> {
    let Ok(out) = dir.canonicalize() else {
        return Ok(());
    };
    let among = inputs.iter().find(|input| {
        let folder = match input.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        folder.canonicalize().is_ok_and(|d| d == out)
    });
    match among {
        Some(input) => Err(Error::Invalid(format!(
            "{}: the output folder holds the input {} (outputs would replace or join the inputs): write to another folder",
            dir.display(),
            input.display()
        ))),
        None => Ok(()),
    }
}

/// Frames are numbered from 1 in every run: say so when a folder already holds some
/// (they are replaced where the numbers meet, and any beyond this run's stay).
fn warn_of_earlier_frames(dir: &Path, prefix: &str) {
    let earlier = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .count()
        })
        .unwrap_or(0);
    if earlier > 0 {
        tracing::warn!(
            "{} already holds {earlier} {prefix}* files from an earlier run: this run's replace \
             those with the same numbers (give an empty folder to keep them apart)",
            dir.display()
        );
    }
}

/// Run the pipeline until the input ends, `frames` are done, or `stop` is set (by
/// SIGINT/SIGTERM). An error names the file or device that caused it.
pub fn run(config: &Config, stop: Arc<AtomicBool>) -> Result<Summary> {
    let engine = Engine::open(&config.model, &config.engine_options())?;
    let compare = config
        .compare_engine
        .map(|kind| {
            let options = EngineOptions {
                engine: match kind {
                    EngineKind::Tract => EngineChoice::Tract,
                    EngineKind::Onnxruntime => EngineChoice::Onnxruntime,
                },
                provider: Provider::Cpu,
                ..config.engine_options()
            };
            Engine::open(&config.model, &options)
        })
        .transpose()?;
    if let Some(c) = &compare {
        tracing::info!(
            "comparing every frame with {} (agreement in --stats)",
            c.kind()
        );
    }
    let card = engine.card();
    tracing::info!(
        "model {} ({:?}, {}×{} input, {} classes) from {} in {} ({} threads); resize {:?}",
        card.name,
        card.precision,
        card.input_width,
        card.input_height,
        card.classes.len(),
        config.model.display(),
        engine.kind(),
        engine.threads(),
        config.resize
    );
    let ignore_class = config
        .ignore_class
        .as_deref()
        .map(|name| resolve_class(name, &card.classes))
        .transpose()?;

    let input = Input::parse(&config.input)?;
    let options = config.source_options();
    // Files and the test scene open now, so a typo fails at once; a camera may be
    // plugged in later, so it is opened (and retried) by the capture thread.
    let first = if input.retry_on_failure() {
        None
    } else {
        Some(input.open(&options)?)
    };
    for (dir, prefix) in [(&config.out, "frame-"), (&config.save_masks, "mask-")] {
        if let Some(dir) = dir {
            create_dir(dir)?;
            if let Some(source) = &first {
                refuse_among_inputs(dir, source.files())?;
            }
            warn_of_earlier_frames(dir, prefix);
        }
    }
    let fb = config.fb.as_deref().map(Framebuffer::open).transpose()?;
    let published = Arc::new(Published::new());
    let server = if config.http_enabled() {
        let server =
            HttpServer::start_with(&config.http, published.clone(), config.http_options()?)
                .map_err(|e| match e {
                    // The usual cause: another seg-cam on the default port.
                    Error::Net { addr, cause } if cause.kind() == std::io::ErrorKind::AddrInUse => {
                        Error::Invalid(format!(
                            "the live page's address {addr} is taken ({cause}): another seg-cam? \
                         Serve it elsewhere with --http ADDR:PORT, or not at all with --http off"
                        ))
                    }
                    other => other,
                })?;
        tracing::info!("serving http://{}/", server.local_addr());
        Some(server)
    } else {
        None
    };

    let settings = output::Settings {
        overlay: OverlayOptions {
            filter: config.filter,
            visualize: config.visualize,
            alpha: config.alpha,
            ignore_class,
        },
        classes: card.classes.clone(),
        model: card.name.clone(),
        frames: config.frames,
        jpeg_quality: config.jpeg_quality,
        blank_size: (config.width, config.height),
        drift_window: config.drift_window,
        class_distribution: card.class_distribution.clone(),
        release: match Provenance::of_model(&config.model) {
            Ok(record) => record,
            Err(problem) => {
                tracing::warn!("the release's verification record is unreadable: {problem}");
                None
            }
        },
    };
    let sinks = output::Sinks {
        http: server.as_ref().map(|_| published.clone()),
        fb,
        out: config.out.clone(),
        masks: config.save_masks.clone(),
        stats: config
            .stats
            .then(|| Box::new(std::io::stdout()) as Box<dyn std::io::Write + Send>),
    };

    watchdog::start(stop.clone());
    let status = Status::with_stop_flag(stop);
    let captured = DropQueue::new(QUEUE_DEPTH);
    let inferred = DropQueue::new(QUEUE_DEPTH);
    let dropped = || captured.dropped() + inferred.dropped();
    let guard = |stage| StageGuard {
        stage,
        status: &status,
        captured: &captured,
        inferred: &inferred,
    };
    // The model is loaded and the outputs are open: tell systemd (Type=notify).
    watchdog::ready();
    let summary = std::thread::scope(|s| {
        let capture = std::thread::Builder::new()
            .name("capture".into())
            .spawn_scoped(s, || {
                let _guard = guard("capture");
                let opener = Opener::new(|| input.open(&options), input.retry_on_failure());
                capture::run(first, opener, &captured, &status)
            })
            .expect("spawn the capture thread");
        let inference = std::thread::Builder::new()
            .name("inference".into())
            .spawn_scoped(s, || {
                let _guard = guard("inference");
                infer::run(
                    &engine,
                    compare.as_ref(),
                    config.resize,
                    &captured,
                    &inferred,
                    &status,
                )
            })
            .expect("spawn the inference thread");
        let output = std::thread::Builder::new()
            .name("output".into())
            .spawn_scoped(s, || {
                let _guard = guard("output");
                output::run(settings, sinks, &inferred, &dropped, &status)
            })
            .expect("spawn the output thread");
        let summary = output.join();
        // The output is done: release the other stages (a live source never ends).
        status.stop();
        captured.close();
        inferred.close();
        let _ = inference.join();
        let _ = capture.join();
        summary
    });
    if let Some(server) = server {
        server.shutdown();
    }
    if let Some(error) = status.error() {
        return Err(Error::Invalid(error));
    }
    summary.map_err(|_| Error::Invalid("the output stage panicked".into()))?
}

/// Ends the run when its stage panics: records the error and closes both queues, so
/// that the other stages stop instead of waiting for a stage that is gone.
struct StageGuard<'a> {
    stage: &'static str,
    status: &'a Status,
    captured: &'a DropQueue<Frame>,
    inferred: &'a DropQueue<Inferred>,
}

impl Drop for StageGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.status.fail(format!(
                "the {} stage panicked (its message is above)",
                self.stage
            ));
            self.captured.close();
            self.inferred.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_class_by_name_or_index() {
        let classes = crate::scene::scene_classes();
        assert_eq!(resolve_class("background", &classes).unwrap(), 0);
        assert_eq!(resolve_class("car", &classes).unwrap(), 3);
        assert_eq!(resolve_class("5", &classes).unwrap(), 5);
        let msg = resolve_class("cat", &classes).unwrap_err().to_string();
        assert!(msg.contains("cat") && msg.contains("tvmonitor"), "{msg}");
        assert!(resolve_class("6", &classes).is_err());
    }
}
