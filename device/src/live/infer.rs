//! The inference stage: fit each frame to the model's input under the resize policy,
//! classify it, and bring the class map back over the frame.

use std::time::{Duration, Instant};

use image::{GrayImage, RgbImage};

use super::capture::Frame;
use super::status::Status;
use crate::engine::Engine;
use crate::queue::{DropQueue, Pop};
use crate::resize::{Fit, ResizePolicy};

/// A frame with its class map.
#[derive(Debug, Clone)]
pub struct Inferred {
    pub frame: Frame,
    /// Class ids covering exactly the frame, at about the model's resolution (void
    /// where the model did not look).
    pub map: GrayImage,
    /// Fitting, normalising, running the model and its argmax.
    pub inference_ms: f32,
    /// Of which fitting the frame to the model's input.
    pub preprocess_ms: f32,
    /// Share of the model's pixels the comparison engine classifies the same.
    pub agreement: Option<f32>,
}

/// How often a stage with nothing to do looks at the stop flag.
pub const POLL: Duration = Duration::from_millis(100);

/// Run until the input queue closes or a stop is requested; closes both queues.
pub fn run(
    engine: &Engine,
    compare: Option<&Engine>,
    policy: ResizePolicy,
    input: &DropQueue<Frame>,
    output: &DropQueue<Inferred>,
    status: &Status,
) {
    let mut cached: Option<Fit> = None;
    // The model's input, reused from frame to frame.
    let mut input_image = RgbImage::new(0, 0);
    let normalization = engine.card().normalization;
    while !status.stopping() {
        let frame = match input.pop(POLL) {
            Pop::Item(frame) => frame,
            Pop::Empty => continue,
            Pop::Closed => break,
        };
        // Sizes can change (a reopened camera, a folder of mixed images).
        let dims = frame.image.dimensions();
        let fit = match cached {
            Some(f) if f.frame == dims => f,
            _ => *cached.insert(Fit::new(policy, dims, engine.input_size())),
        };
        let start = Instant::now();
        fit.prepare_into(&frame.image, &normalization, &mut input_image);
        let preprocess_ms = start.elapsed().as_secs_f32() * 1000.0;
        let class_map = match engine.classify(&input_image) {
            Ok(map) => map,
            Err(e) => {
                status.fail(e.to_string());
                break;
            }
        };
        let inference_ms = start.elapsed().as_secs_f32() * 1000.0;
        super::fault::maybe_fail("inference", frame.seq + 1);
        let agreement = match compare.map(|c| c.classify(&input_image)) {
            None => None,
            Some(Ok(other)) => {
                let same = class_map
                    .iter()
                    .zip(other.iter())
                    .filter(|(a, b)| a == b)
                    .count();
                Some(same as f32 / class_map.len().max(1) as f32)
            }
            Some(Err(e)) => {
                status.fail(e.to_string());
                break;
            }
        };
        let inferred = Inferred {
            map: fit.map_over_frame(&class_map),
            frame,
            inference_ms,
            preprocess_ms,
            agreement,
        };
        if inferred.frame.live {
            output.push(inferred);
        } else if !output.push_wait(inferred) {
            break;
        }
    }
    input.close();
    output.close();
}
