//! What the pipeline hands the server: the newest frame, its stats, and from them
//! whether the pipeline is healthy.
//!
//! [`Published::publish`] only swaps an `Arc` under a mutex and wakes the stream
//! threads; it never touches a socket, so a slow or vanished client cannot stall it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::classes::PresentClass;
use crate::drift::DriftStats;
use crate::provenance::Provenance;

/// What the pipeline reports with each frame.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Frames processed since start.
    pub frames: u64,
    pub fps: f32,
    /// Inference time of the latest frame.
    pub inference_ms: f32,
    /// Frames the pipeline dropped because it was busy.
    pub dropped_frames: u64,
    /// Frames skipped because they did not decode (corrupt MJPEG, unreadable files).
    #[serde(default)]
    pub corrupt_frames: u64,
    /// Frames processed but not written to an output that cannot take them (a frame
    /// too large for JPEG even when scaled down, say).
    #[serde(default)]
    pub skipped_frames: u64,
    pub model: String,
    pub width: u32,
    pub height: u32,
    pub classes_present: Vec<PresentClass>,
    /// The source delivers nothing (camera unplugged, stream ended).
    pub no_signal: bool,
    /// Why the source delivers nothing, while it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Class shares over the recent frames and their distance from the training set's.
    #[serde(default)]
    pub drift: DriftStats,
    /// How the board verified the release that runs (none outside a verified release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<Provenance>,
}

/// The pipeline's health as `/healthz` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// "ok" or "unhealthy".
    pub status: &'static str,
    /// Why it is unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub frames: u64,
    /// Milliseconds since the frame count last moved (null before the first frame).
    pub frame_age_ms: Option<u64>,
}

impl Health {
    pub fn is_ok(&self) -> bool {
        self.reason.is_none()
    }
}

#[derive(Debug, Default)]
pub(super) struct Latest {
    pub jpeg: Option<Arc<Vec<u8>>>,
    /// Pictures published so far: the sequence number of `jpeg`.
    pub seq: u64,
    pub stats: Stats,
    /// When `stats.frames` last moved.
    pub last_frame: Option<Instant>,
    /// A moving average of the time between frames (a slow board's model may take
    /// longer than the staleness limit per frame).
    interval: Option<Duration>,
    /// `stats.corrupt_frames` when the last frame came.
    corrupt_at_last_frame: u64,
}

impl Latest {
    fn update(&mut self, stats: Stats, now: Instant) {
        if stats.frames > self.stats.frames {
            if let Some(last) = self.last_frame {
                let gap = now.duration_since(last);
                self.interval = Some(match self.interval {
                    None => gap,
                    Some(avg) => avg.mul_f64(0.8) + gap.mul_f64(0.2),
                });
            }
            self.last_frame = Some(now);
            self.corrupt_at_last_frame = stats.corrupt_frames;
        }
        self.stats = stats;
    }
}

/// The newest frame and stats, shared between the pipeline and the HTTP threads.
#[derive(Debug, Default)]
pub struct Published {
    latest: Mutex<Latest>,
    fresh: Condvar,
    /// Connected `/stream.mjpg` clients.
    pub(super) clients: AtomicUsize,
}

impl Published {
    pub fn new() -> Self {
        Self::default()
    }

    /// Make `jpeg` the latest picture, take `stats`, and wake the stream clients.
    /// Never blocks on them.
    pub fn publish(&self, jpeg: Vec<u8>, stats: Stats) {
        let now = Instant::now();
        let mut latest = self.lock();
        latest.jpeg = Some(Arc::new(jpeg));
        latest.seq += 1;
        latest.update(stats, now);
        drop(latest);
        self.fresh.notify_all();
    }

    /// Take `stats` without a new picture (a frame nobody is watching, "no signal",
    /// counters that moved while no frame came).
    pub fn set_stats(&self, stats: Stats) {
        self.lock().update(stats, Instant::now());
    }

    /// The latest picture and its sequence number.
    pub fn latest(&self) -> Option<(u64, Arc<Vec<u8>>)> {
        let latest = self.lock();
        latest.jpeg.clone().map(|j| (latest.seq, j))
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// Connected stream clients (the pipeline may skip encoding when there are none).
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Healthy while frames move: the frame count went up within `stale_after` (or
    /// three typical frame intervals, if longer) and the source is there.
    pub fn health(&self, stale_after: Duration) -> Health {
        self.health_at(stale_after, Instant::now())
    }

    /// [`Published::health`] as seen at `now` (tests give their own clock).
    fn health_at(&self, stale_after: Duration, now: Instant) -> Health {
        let latest = self.lock();
        let stats = &latest.stats;
        let age = latest.last_frame.map(|t| now.saturating_duration_since(t));
        let window = latest
            .interval
            .map_or(stale_after, |i| stale_after.max(i * 3));
        let corrupt_since = stats
            .corrupt_frames
            .saturating_sub(latest.corrupt_at_last_frame);
        let reason = if stats.no_signal {
            Some(match &stats.problem {
                Some(why) => format!("no signal: {why}"),
                None => "no signal".to_string(),
            })
        } else {
            match age {
                Some(age) if age <= window => None,
                _ if corrupt_since > 0 => Some(format!(
                    "every frame for {:.1} s was corrupt ({corrupt_since} frames)",
                    age.unwrap_or(window).as_secs_f32()
                )),
                Some(age) => Some(format!("no frame for {:.1} s", age.as_secs_f32())),
                None => Some("no frame yet".to_string()),
            }
        };
        Health {
            status: if reason.is_none() { "ok" } else { "unhealthy" },
            reason,
            frames: stats.frames,
            frame_age_ms: age.map(|a| a.as_millis() as u64),
        }
    }

    /// Wait up to `timeout` for a picture newer than `seen`.
    pub(super) fn wait_newer(&self, seen: u64, timeout: Duration) -> Option<(u64, Arc<Vec<u8>>)> {
        let latest = self.lock();
        let (latest, _) = self
            .fresh
            .wait_timeout_while(latest, timeout, |l| l.seq <= seen)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match &latest.jpeg {
            Some(jpeg) if latest.seq > seen => Some((latest.seq, jpeg.clone())),
            _ => None,
        }
    }

    /// Wake every stream thread (the server is stopping).
    pub(super) fn wake_all(&self) {
        self.fresh.notify_all();
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Latest> {
        // A panicked holder leaves consistent data (plain assignments): keep serving.
        self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: u64, corrupt: u64) -> Stats {
        Stats {
            frames: n,
            corrupt_frames: corrupt,
            ..Stats::default()
        }
    }

    const STALE: Duration = Duration::from_millis(500);

    /// A clock of the test's own: `at(ms)` is `ms` after the test began, whatever the
    /// machine's load.
    fn clock() -> impl Fn(u64) -> Instant {
        let t0 = Instant::now();
        move |ms| t0 + Duration::from_millis(ms)
    }

    #[test]
    fn healthy_only_while_the_frame_count_moves() {
        let at = clock();
        let p = Published::new();
        let h = p.health_at(STALE, at(0));
        assert_eq!(h.reason.as_deref(), Some("no frame yet"));
        assert_eq!(h.status, "unhealthy");
        p.lock().update(frames(1, 0), at(0));
        assert!(
            p.health_at(STALE, at(500)).is_ok(),
            "a frame without a picture counts"
        );
        let h = p.health_at(STALE, at(1200));
        assert_eq!(h.reason.as_deref(), Some("no frame for 1.2 s"));
        assert_eq!((h.frames, h.frame_age_ms), (1, Some(1200)));
        // The same count again (stats refreshed, no new frame) stays stale.
        p.lock().update(frames(1, 0), at(1300));
        assert!(!p.health_at(STALE, at(1300)).is_ok());
        p.lock().update(frames(2, 0), at(1400));
        assert!(p.health_at(STALE, at(1400)).is_ok());
        // What the server calls: the real clock, a frame just now.
        p.publish(vec![1], frames(3, 0));
        assert!(p.health(Duration::from_secs(3600)).is_ok());
    }

    #[test]
    fn all_corrupt_and_no_signal_say_so() {
        let at = clock();
        let p = Published::new();
        p.lock().update(frames(0, 5), at(0));
        let reason = p.health_at(STALE, at(0)).reason.unwrap();
        assert!(
            reason.contains("corrupt") && reason.contains("5 frames"),
            "{reason}"
        );
        p.lock().update(frames(1, 5), at(100));
        assert!(p.health_at(STALE, at(100)).is_ok());
        p.lock().update(frames(1, 9), at(200));
        assert!(
            p.health_at(STALE, at(200)).is_ok(),
            "good frames still recent"
        );
        let reason = p.health_at(STALE, at(1100)).reason.unwrap();
        assert_eq!(reason, "every frame for 1.0 s was corrupt (4 frames)");

        p.lock().update(
            Stats {
                frames: 3,
                no_signal: true,
                problem: Some("/dev/video0: cannot open".into()),
                ..Stats::default()
            },
            at(1200),
        );
        let reason = p.health_at(STALE, at(1200)).reason.unwrap();
        assert_eq!(reason, "no signal: /dev/video0: cannot open");
    }

    #[test]
    fn a_slow_model_widens_the_window() {
        let at = clock();
        let p = Published::new();
        // A frame every 200 ms against a 10 ms limit: the window is 3 intervals.
        let limit = Duration::from_millis(10);
        for n in 1..=4 {
            p.lock().update(frames(n, 0), at(200 * n));
        }
        assert!(
            p.health_at(limit, at(1000)).is_ok(),
            "one interval after the last frame"
        );
        assert!(
            p.health_at(limit, at(1390)).is_ok(),
            "just under three intervals"
        );
        assert!(!p.health_at(limit, at(1410)).is_ok(), "just over three");
    }
}
