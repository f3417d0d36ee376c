//! `test://`: the moving generated scene (background, bird, bottle, car, person,
//! tvmonitor — the demo model's classes), paced at the requested rate like a camera.
//!
//! A camera's frame costs the pipeline next to nothing (it arrives by DMA), while
//! drawing a textured 640×480 scene takes 15–25 ms of CPU, which on a small board would
//! be taken from inference and make the pipeline look slower than it is with a camera.
//! So the camera stands still (the background is drawn once, [`scene::LiveScene`]), the
//! objects move to a new place [`MOTION_RATE`] times a second (frames between repeat
//! the picture, as a fast camera filming a slow scene sees it), and the motion is a clip
//! of [`CLIP_SECONDS`] played forwards and backwards, each picture drawn the first time
//! it is shown: once each has been shown, a frame costs one copy.

use std::time::{Duration, Instant};

use image::RgbImage;

use super::{Next, Source, SourceOptions};
use crate::error::Result;
use crate::scene;

/// A scene family with several classes in view from the start.
pub const DEFAULT_SEED: u64 = 21;

/// Pictures drawn per second of scene time (objects move 25–75 px a second at 640 wide).
pub const MOTION_RATE: f64 = 15.0;

/// The length of the clip, forwards (30 pictures, 26 MiB at 640×480)…
pub const CLIP_SECONDS: f64 = 2.0;

/// …or fewer pictures for large frames, to hold at most this many bytes (2 at least).
/// The still background [`scene::LiveScene`] keeps comes on top: 15 bytes a pixel.
const CLIP_BYTES: usize = 32 << 20;

#[derive(Debug)]
pub struct TestScene {
    seed: u64,
    width: u32,
    height: u32,
    period: Duration,
    index: u64,
    start: Option<Instant>,
    /// Drawn at the first frame, so that opening the source costs nothing.
    scene: Option<scene::LiveScene>,
    /// The clip's pictures, each drawn when first shown.
    clip: Vec<Option<RgbImage>>,
}

impl TestScene {
    pub fn new(seed: u64, options: &SourceOptions) -> Self {
        let (width, height) = (options.width.max(1), options.height.max(1));
        Self {
            seed,
            width,
            height,
            period: Duration::from_secs_f64(1.0 / options.rate.clamp(0.1, 1000.0) as f64),
            index: 0,
            start: None,
            scene: None,
            clip: vec![None; clip_len(width, height)],
        }
    }
}

/// Pictures in the clip for frames of `width` × `height`.
fn clip_len(width: u32, height: u32) -> usize {
    let bytes = (width as usize * height as usize * 3).max(1);
    ((MOTION_RATE * CLIP_SECONDS) as usize)
        .min(CLIP_BYTES / bytes)
        .max(2)
}

/// The clip's picture at `step` of a back-and-forth play of `len` pictures:
/// 0, 1, …, len − 1, len − 2, …, 1, 0, 1, …
fn ping_pong(step: u64, len: usize) -> usize {
    let period = 2 * (len as u64 - 1);
    let k = step % period;
    (if k < len as u64 { k } else { period - k }) as usize
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
        let shown = ping_pong((t * MOTION_RATE).floor() as u64, self.clip.len());
        let (seed, width, height) = (self.seed, self.width, self.height);
        let picture = self.clip[shown].get_or_insert_with(|| {
            let scene = self
                .scene
                .get_or_insert_with(|| scene::LiveScene::new(seed, width, height));
            scene.frame(shown as f64 / MOTION_RATE)
        });
        Ok(Next::Frame(picture.clone()))
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
        let frames: Vec<_> = (0..5)
            .map(|_| match source.next().unwrap() {
                Next::Frame(f) => f,
                other => panic!("{other:?}"),
            })
            .collect();
        // Four periods of 20 ms between the first and the fifth frame.
        assert!(
            start.elapsed() >= Duration::from_millis(79),
            "{:?}",
            start.elapsed()
        );
        assert!(frames.iter().all(|f| f.dimensions() == (64, 48)));
        // 80 ms of scene time: the objects moved (at MOTION_RATE), the first two
        // frames (20 ms apart) show one picture.
        assert_ne!(frames[0], frames[4], "the scene moves");
        assert_eq!(frames[0], frames[1], "one picture per 1/MOTION_RATE s");
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
    fn the_clip_plays_forwards_and_backwards_and_fits_its_bytes() {
        let order: Vec<usize> = (0..9).map(|step| ping_pong(step, 4)).collect();
        assert_eq!(order, [0, 1, 2, 3, 2, 1, 0, 1, 2]);
        assert_eq!(ping_pong(7, 2), 1);
        let at = |width, height| {
            let options = SourceOptions {
                width,
                height,
                ..SourceOptions::default()
            };
            TestScene::new(DEFAULT_SEED, &options).clip.len()
        };
        assert_eq!(at(640, 480), 30);
        assert_eq!(at(1920, 1080), CLIP_BYTES / (1920 * 1080 * 3));
        assert_eq!(at(7680, 4320), 2);
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
