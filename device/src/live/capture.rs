//! The capture stage: pull frames from the source into the first queue, reopening a
//! lost camera with growing pauses (and reporting "no signal" meanwhile), and
//! skipping and counting frames that do not decode.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use image::RgbImage;

use super::status::Status;
use crate::error::Result;
use crate::queue::DropQueue;
use crate::source::{Next, Source};

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub image: RgbImage,
    /// Capture order, from 0 (frames dropped later leave gaps downstream).
    pub seq: u64,
    pub captured: Instant,
    /// From a live source: later stages may drop it rather than wait.
    pub live: bool,
    /// Where it came from, when the source names its frames (an image file).
    pub name: Option<String>,
}

/// Pauses between attempts to reopen a source: doubling from `first` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(250),
            max: Duration::from_secs(4),
        }
    }
}

/// Opens a source (again).
pub type OpenFn<'a> = Box<dyn FnMut() -> Result<Box<dyn Source>> + Send + 'a>;
/// Waits out a pause between attempts.
pub type WaitFn<'a> = Box<dyn FnMut(Duration, &Status) + Send + 'a>;

/// How the capture stage opens (and reopens) its source.
pub struct Opener<'a> {
    pub open: OpenFn<'a>,
    /// Whether a failure to open or a lost source is retried (cameras) or ends the
    /// run with an error (files).
    pub retry: bool,
    pub backoff: Backoff,
    /// Waits out a pause (tests record pauses instead of sleeping).
    pub wait: WaitFn<'a>,
}

impl<'a> Opener<'a> {
    pub fn new(open: impl FnMut() -> Result<Box<dyn Source>> + Send + 'a, retry: bool) -> Self {
        Self {
            open: Box::new(open),
            retry,
            backoff: Backoff::default(),
            wait: Box::new(sleep_unless_stopped),
        }
    }
}

/// Run until the source ends, fails for good, or `status` says stop; closes `queue`.
/// A source given in `first` is used before `open` is called.
pub fn run(
    first: Option<Box<dyn Source>>,
    mut opener: Opener,
    queue: &DropQueue<Frame>,
    status: &Status,
) {
    let mut source = first;
    if let Some(s) = &source {
        status.signal_up(&s.describe());
    }
    let mut pause = opener.backoff.first;
    let mut seq = 0u64;
    while !status.stopping() && !queue.is_closed() {
        let Some(current) = source.as_mut() else {
            match (opener.open)() {
                Ok(s) => {
                    status.signal_up(&s.describe());
                    pause = opener.backoff.first;
                    source = Some(s);
                }
                Err(e) if opener.retry => {
                    status.signal_lost(&e.to_string());
                    (opener.wait)(pause, status);
                    pause = (pause * 2).min(opener.backoff.max);
                }
                Err(e) => {
                    status.fail(e.to_string());
                    break;
                }
            }
            continue;
        };
        // A generated frame is made only when it can be used (a camera's arrive anyway).
        if current.on_demand() && !queue.wait_for_room(ROOM_POLL) {
            continue;
        }
        let next = match current.next() {
            Ok(Next::Frame(_)) if super::fault::corrupts("capture", seq + 1) => {
                seq += 1;
                Ok(Next::Corrupt("SEGCAM_TEST_FAULT: a corrupt frame".into()))
            }
            other => other,
        };
        match next {
            Ok(Next::Frame(image)) => {
                let live = current.is_live();
                let frame = Frame {
                    image,
                    seq,
                    captured: Instant::now(),
                    live,
                    name: current.frame_name(),
                };
                seq += 1;
                super::fault::maybe_fail("capture", seq);
                if live {
                    queue.push(frame);
                } else if !queue.push_wait(frame) {
                    break;
                }
            }
            Ok(Next::Corrupt(why)) => {
                status.corrupt.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("skipped a corrupt frame: {why}");
            }
            Ok(Next::End) => break,
            Err(e) if opener.retry => {
                // Drop the dead source first: a camera must be closed to reopen it.
                source = None;
                status.signal_lost(&e.to_string());
                (opener.wait)(pause, status);
            }
            Err(e) => {
                status.fail(e.to_string());
                break;
            }
        }
    }
    queue.close();
}

/// How often capture, waiting for room for an on-demand frame, looks at the stop flag.
const ROOM_POLL: Duration = Duration::from_millis(100);

/// Sleep `total`, in short steps so that a stop request is seen quickly.
fn sleep_unless_stopped(total: Duration, status: &Status) {
    let end = Instant::now() + total;
    while !status.stopping() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::queue::Pop;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    /// A source that plays a script, then reports itself lost.
    struct Scripted {
        steps: VecDeque<Next>,
        live: bool,
    }

    impl Source for Scripted {
        fn next(&mut self) -> Result<Next> {
            self.steps
                .pop_front()
                .ok_or_else(|| Error::Invalid("unplugged".into()))
        }
        fn describe(&self) -> String {
            "scripted".into()
        }
        fn is_live(&self) -> bool {
            self.live
        }
    }

    fn frame(v: u8) -> Next {
        Next::Frame(RgbImage::from_pixel(2, 2, image::Rgb([v, v, v])))
    }

    const FAST: Backoff = Backoff {
        first: Duration::from_millis(5),
        max: Duration::from_millis(20),
    };

    /// An opener that records its pauses instead of sleeping.
    fn opener<'a>(
        open: impl FnMut() -> Result<Box<dyn Source>> + Send + 'a,
        retry: bool,
        pauses: Arc<Mutex<Vec<u64>>>,
    ) -> Opener<'a> {
        Opener {
            open: Box::new(open),
            retry,
            backoff: FAST,
            wait: Box::new(move |d, _| pauses.lock().unwrap().push(d.as_millis() as u64)),
        }
    }

    #[test]
    fn a_lost_camera_is_reopened_with_backoff_and_no_signal_meanwhile() {
        let queue = DropQueue::new(64);
        let status = Arc::new(Status::default());
        let pauses = Arc::new(Mutex::new(Vec::new()));
        // Open attempts: fail, fail, a source of 2 frames and a corrupt one (then
        // lost); fail; a source of 1 frame (then lost); fail and stop.
        let signal_seen = Arc::new(Mutex::new(Vec::new()));
        let open = {
            let signal_seen = signal_seen.clone();
            let status = status.clone();
            let mut n = 0;
            move || {
                signal_seen.lock().unwrap().push(status.no_signal());
                n += 1;
                let steps: VecDeque<Next> = match n {
                    3 => [frame(1), frame(2), Next::Corrupt("bad jpeg".into())].into(),
                    5 => [frame(3)].into(),
                    6 => {
                        status.stop();
                        return Err(Error::Invalid("gone".into()));
                    }
                    _ => return Err(Error::Invalid("/dev/video9: cannot open".into())),
                };
                Ok(Box::new(Scripted { steps, live: true }) as Box<dyn Source>)
            }
        };
        run(None, opener(open, true, pauses.clone()), &queue, &status);

        let mut got = Vec::new();
        while let Pop::Item(f) = queue.pop(Duration::ZERO) {
            got.push((f.seq, f.image.get_pixel(0, 0).0[0]));
        }
        assert_eq!(got, [(0, 1), (1, 2), (2, 3)], "frames from both openings");
        assert_eq!(status.corrupt.load(Ordering::Relaxed), 1);
        assert!(queue.is_closed());
        // Pauses double after each failure and restart once a source opened.
        assert_eq!(*pauses.lock().unwrap(), [5, 10, 5, 5, 5, 5]);
        // "No signal" before every attempt that follows a failure or a loss.
        assert_eq!(
            *signal_seen.lock().unwrap(),
            [false, true, true, true, true, true]
        );
        assert!(status.no_signal());
        assert!(status.error().is_none(), "a camera is never a fatal error");
    }

    #[test]
    fn pauses_grow_to_the_maximum_while_the_camera_stays_away() {
        let queue = DropQueue::new(1);
        let status = Arc::new(Status::default());
        let pauses = Arc::new(Mutex::new(Vec::new()));
        let open = {
            let (status, pauses) = (status.clone(), pauses.clone());
            move || {
                if pauses.lock().unwrap().len() == 5 {
                    status.stop();
                }
                Err(Error::Invalid("/dev/video9: cannot open".into()))
            }
        };
        run(None, opener(open, true, pauses.clone()), &queue, &status);
        assert_eq!(*pauses.lock().unwrap(), [5, 10, 20, 20, 20, 20]);
        assert!(status.last_problem().unwrap().contains("/dev/video9"));
    }

    #[test]
    fn a_file_source_that_fails_to_open_ends_the_run_with_its_error() {
        let queue = DropQueue::new(2);
        let status = Status::default();
        let pauses = Arc::new(Mutex::new(Vec::new()));
        let open = || Err(Error::Invalid("shots/*.png: no images found".into()));
        run(None, opener(open, false, pauses.clone()), &queue, &status);
        assert!(status.error().unwrap().contains("shots/*.png"));
        assert!(queue.is_closed());
        assert!(pauses.lock().unwrap().is_empty(), "no retry");
    }

    /// The capture stage on its own thread, from `source` into a queue of one frame.
    fn capture_into_one_slot(
        source: impl Source + 'static,
    ) -> (
        Arc<DropQueue<Frame>>,
        Arc<Status>,
        std::thread::JoinHandle<()>,
    ) {
        let queue = Arc::new(DropQueue::new(1));
        let status = Arc::new(Status::default());
        let first: Box<dyn Source> = Box::new(source);
        let producer = {
            let (queue, status) = (queue.clone(), status.clone());
            std::thread::spawn(move || {
                let open = || unreachable!("the first source is used");
                let pauses = Arc::new(Mutex::new(Vec::new()));
                run(Some(first), opener(open, false, pauses), &queue, &status)
            })
        };
        (queue, status, producer)
    }

    #[test]
    fn finite_sources_wait_for_room_and_lose_nothing() {
        let steps: VecDeque<Next> = (0..20).map(frame).chain([Next::End]).collect();
        let (queue, status, producer) = capture_into_one_slot(Scripted { steps, live: false });
        let mut got = Vec::new();
        loop {
            match queue.pop(Duration::from_secs(5)) {
                Pop::Item(f) => got.push(f.image.get_pixel(0, 0).0[0]),
                Pop::Closed => break,
                Pop::Empty => panic!("stalled"),
            }
        }
        producer.join().unwrap();
        assert_eq!(got, (0..20).collect::<Vec<u8>>());
        assert_eq!(queue.dropped(), 0);
        assert!(!status.no_signal());
    }

    /// A generated source that counts the frames it was asked for.
    struct Generated(Arc<std::sync::atomic::AtomicU32>);

    impl Source for Generated {
        fn next(&mut self) -> Result<Next> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            Ok(frame(n as u8))
        }
        fn describe(&self) -> String {
            "generated".into()
        }
        fn is_live(&self) -> bool {
            true
        }
        fn on_demand(&self) -> bool {
            true
        }
    }

    #[test]
    fn an_on_demand_source_makes_a_frame_only_when_there_is_room() {
        let made = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (queue, _status, producer) = capture_into_one_slot(Generated(made.clone()));
        let made_wait = |n: u32| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while made.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < deadline, "no frame {n}");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        made_wait(1);
        // Nobody took the first frame: a camera's would keep coming, none is made.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(made.load(Ordering::SeqCst), 1);
        assert_eq!(queue.dropped(), 0);
        for want in 0..3u8 {
            match queue.pop(Duration::from_secs(5)) {
                Pop::Item(f) => assert_eq!(f.image.get_pixel(0, 0).0[0], want),
                other => panic!("{other:?}"),
            }
            made_wait(want as u32 + 2);
        }
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(made.load(Ordering::SeqCst), 4, "one waiting frame, no more");
        queue.close();
        producer.join().unwrap();
        assert_eq!(queue.dropped(), 0);
    }
}
