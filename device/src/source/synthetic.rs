//! `test://`: the moving generated scene (background, bird, bottle, car, person,
//! tvmonitor — the demo model's classes), paced at the requested rate like a camera.

use std::time::{Duration, Instant};

use super::{Next, Source, SourceOptions};
use crate::error::Result;
use crate::scene;

/// A scene family with several classes in view from the start.
pub const DEFAULT_SEED: u64 = 21;

#[derive(Debug)]
pub struct TestScene {
    seed: u64,
    width: u32,
    height: u32,
    period: Duration,
    index: u64,
    start: Option<Instant>,
}

impl TestScene {
    pub fn new(seed: u64, options: &SourceOptions) -> Self {
        Self {
            seed,
            width: options.width.max(1),
            height: options.height.max(1),
            period: Duration::from_secs_f64(1.0 / options.rate.clamp(0.1, 1000.0) as f64),
            index: 0,
            start: None,
        }
    }
}

impl Source for TestScene {
    fn next(&mut self) -> Result<Next> {
        // Frame k shows scene time k periods, so frames are the same on every run; the
        // wall clock only paces them. Like a camera, the scene never bursts to catch up:
        // ticks missed while the pipeline was busy are frames it would have dropped, and
        // rendering them back to back would only take the cores inference needs.
        let start = *self.start.get_or_insert_with(Instant::now);
        let ticks_past = start.elapsed().as_secs_f64() / self.period.as_secs_f64();
        self.index = self.index.max(ticks_past.floor() as u64);
        let due = start + self.period.mul_f64(self.index as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t = self.period.as_secs_f64() * self.index as f64;
        self.index += 1;
        Ok(Next::Frame(
            scene::render_frame(self.seed, t, self.width, self.height).image,
        ))
    }

    fn describe(&self) -> String {
        format!(
            "test://{} {}×{} @ {:.0}",
            self.seed,
            self.width,
            self.height,
            1.0 / self.period.as_secs_f64()
        )
    }

    fn is_live(&self) -> bool {
        true
    }

    fn on_demand(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_move_are_paced_and_have_the_requested_size() {
        let options = SourceOptions {
            width: 64,
            height: 48,
            rate: 50.0,
            ..SourceOptions::default()
        };
        let mut source = TestScene::new(DEFAULT_SEED, &options);
        let start = Instant::now();
        let frames: Vec<_> = (0..4)
            .map(|_| match source.next().unwrap() {
                Next::Frame(f) => f,
                other => panic!("{other:?}"),
            })
            .collect();
        // Three periods of 20 ms between the first and the fourth frame.
        assert!(
            start.elapsed() >= Duration::from_millis(59),
            "{:?}",
            start.elapsed()
        );
        assert!(frames.iter().all(|f| f.dimensions() == (64, 48)));
        assert_ne!(frames[0], frames[3], "the scene moves");
        // Deterministic: a second source gives the same first frame.
        let mut again = TestScene::new(DEFAULT_SEED, &options);
        let Next::Frame(first) = again.next().unwrap() else {
            panic!()
        };
        assert_eq!(first, frames[0]);
        assert!(source.is_live());
        assert!(source.describe().contains("64×48"));
    }

    #[test]
    fn a_slow_consumer_gets_the_latest_tick_not_a_burst_of_old_ones() {
        let options = SourceOptions {
            width: 16,
            height: 12,
            rate: 50.0,
            ..SourceOptions::default()
        };
        let mut source = TestScene::new(DEFAULT_SEED, &options);
        let _ = source.next().unwrap();
        // Busy for five periods and more: those ticks are gone, as from a camera.
        std::thread::sleep(Duration::from_millis(110));
        let _ = source.next().unwrap();
        assert!(source.index >= 6, "skipped to tick {}", source.index);
        // The next frame comes at its own tick, not at once to catch up.
        let tick = source.index;
        let _ = source.next().unwrap();
        let due = source.start.unwrap() + Duration::from_millis(20 * tick);
        assert!(Instant::now() >= due, "frame of tick {tick} came early");
    }
}
