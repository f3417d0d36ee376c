//! State the pipeline's threads share: the stop request, whether the source
//! delivers ("no signal"), counters, and the error that ended the run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Notes {
    source: String,
    /// Why the source is away (while there is no signal).
    problem: Option<String>,
    /// What ended the run, when something did.
    error: Option<String>,
}

#[derive(Debug, Default)]
pub struct Status {
    /// Set by SIGINT/SIGTERM, `--frames`, or an error.
    stop: Arc<AtomicBool>,
    no_signal: AtomicBool,
    /// Frames skipped because they did not decode.
    pub corrupt: AtomicU64,
    notes: Mutex<Notes>,
}

impl Status {
    /// Status whose stop flag is `stop` (shared with signal handlers).
    pub fn with_stop_flag(stop: Arc<AtomicBool>) -> Self {
        Self {
            stop,
            ..Self::default()
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub fn no_signal(&self) -> bool {
        self.no_signal.load(Ordering::SeqCst)
    }

    /// The source delivers (again).
    pub fn signal_up(&self, source: &str) {
        let was_lost = self.no_signal.swap(false, Ordering::SeqCst);
        let mut notes = self.notes();
        notes.source = source.to_string();
        notes.problem = None;
        if was_lost {
            tracing::info!("signal back: {source}");
        } else {
            tracing::info!("input: {source}");
        }
    }

    /// The source is away; `why` is logged when it changes.
    pub fn signal_lost(&self, why: &str) {
        self.no_signal.store(true, Ordering::SeqCst);
        let mut notes = self.notes();
        if notes.problem.as_deref() != Some(why) {
            tracing::warn!("no signal: {why}; retrying");
            notes.problem = Some(why.to_string());
        }
    }

    /// End the run with `error`.
    pub fn fail(&self, error: String) {
        let mut notes = self.notes();
        notes.error.get_or_insert(error);
        drop(notes);
        self.stop();
    }

    pub fn error(&self) -> Option<String> {
        self.notes().error.clone()
    }

    pub fn source(&self) -> String {
        self.notes().source.clone()
    }

    pub fn last_problem(&self) -> Option<String> {
        self.notes().problem.clone()
    }

    fn notes(&self) -> MutexGuard<'_, Notes> {
        self.notes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_state_and_the_first_error_are_kept() {
        let flag = Arc::new(AtomicBool::new(false));
        let status = Status::with_stop_flag(flag.clone());
        status.signal_lost("/dev/video0: cannot open");
        assert!(status.no_signal());
        assert_eq!(status.last_problem().unwrap(), "/dev/video0: cannot open");
        status.signal_up("/dev/video0 YUYV 640×480");
        assert!(!status.no_signal());
        assert_eq!(status.last_problem(), None);
        assert_eq!(status.source(), "/dev/video0 YUYV 640×480");
        assert!(!status.stopping());
        status.fail("first".into());
        status.fail("second".into());
        assert_eq!(status.error().unwrap(), "first");
        assert!(
            flag.load(Ordering::SeqCst),
            "failing stops, through the shared flag"
        );
    }
}
