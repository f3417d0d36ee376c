//! JPEG encoding of output frames (the MJPEG stream, snapshots, file outputs): with
//! libjpeg-turbo where its library opens ([`turbo`]; Debian's package libturbojpeg0),
//! else with `jpeg-encoder` (pure Rust, SIMD colour conversion and DCT where the CPU has
//! AVX2). Per 640×480 overlay frame at quality 80, measured side by side here: 0.6 ms,
//! 1.6 ms, and 6.5 ms for image's encoder. Both write baseline 4:2:0.

mod turbo;

use std::cell::RefCell;

use image::RgbImage;
use jpeg_encoder::{ColorType, Encoder};

use crate::error::{Error, Result};

/// The longest side a baseline JPEG can have.
pub const MAX_SIDE: u32 = u16::MAX as u32;

/// A quality that keeps class borders crisp at about 50 KB per 640×480 frame.
pub const DEFAULT_QUALITY: u8 = 80;

/// An encoder for a stream of frames: keeps libjpeg-turbo's compressor and its output
/// buffer (sized for the worst case, about 1 MB at 640×480) between frames.
#[derive(Debug)]
pub struct JpegEncoder {
    /// libjpeg-turbo, or why it is not used.
    turbo: std::result::Result<turbo::Compressor, String>,
    buffer: Vec<u8>,
}

impl Default for JpegEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl JpegEncoder {
    /// libjpeg-turbo when its library opens, else jpeg-encoder.
    pub fn new() -> Self {
        Self {
            turbo: turbo::Compressor::new(),
            buffer: Vec::new(),
        }
    }

    /// jpeg-encoder, whatever is installed.
    pub fn pure_rust() -> Self {
        Self {
            turbo: Err("asked for jpeg-encoder".into()),
            buffer: Vec::new(),
        }
    }

    /// Whether frames go through libjpeg-turbo.
    pub fn is_turbo(&self) -> bool {
        self.turbo.is_ok()
    }

    /// Which encoder this is, and for jpeg-encoder why libjpeg-turbo is not used.
    pub fn describe(&self) -> String {
        match &self.turbo {
            Ok(c) => format!("libjpeg-turbo, {}", c.origin()),
            Err(why) => format!("jpeg-encoder (no libjpeg-turbo: {why})"),
        }
    }

    /// `image` as a baseline JPEG of `quality` (1–100), encoded in the kept buffer and
    /// handed out at its own size.
    pub fn encode(&mut self, image: &RgbImage, quality: u8) -> Result<Vec<u8>> {
        let mut buffer = std::mem::take(&mut self.buffer);
        let result = self
            .encode_into(image, quality, &mut buffer)
            .map(|()| buffer.clone());
        self.buffer = buffer;
        result
    }

    /// `image` as a baseline JPEG of `quality` (1–100), replacing the contents of `out`
    /// (reusing its allocation).
    pub fn encode_into(&mut self, image: &RgbImage, quality: u8, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        let (width, height) = image.dimensions();
        let fail = |why: String| {
            Error::Invalid(format!(
                "JPEG encoding of a {width}×{height} frame failed: {why}"
            ))
        };
        let (Ok(w), Ok(h)) = (u16::try_from(width), u16::try_from(height)) else {
            return Err(fail("JPEG sides are at most 65535 pixels".into()));
        };
        if w == 0 || h == 0 {
            return Err(fail("the frame is empty".into()));
        }
        let quality = quality.clamp(1, 100);
        // An image's buffer may hold more than its pixels.
        let rgb = &image.as_raw()[..3 * width as usize * height as usize];
        // libjpeg refuses sides over 65500 (its JPEG_MAX_DIMENSION); jpeg-encoder takes
        // those, and any frame libjpeg-turbo turns down for a reason of its own.
        let mut turbo_failed = None;
        if let Some(turbo) = self
            .turbo
            .as_mut()
            .ok()
            .filter(|_| w.max(h) <= TURBO_MAX_SIDE)
        {
            match turbo.compress_rgb(rgb, w, h, quality, out) {
                Ok(()) => return Ok(()),
                Err(e) => turbo_failed = Some(e),
            }
        }
        let rust = Encoder::new(&mut *out, quality).encode(rgb, w, h, ColorType::Rgb);
        rust.map_err(|e| match turbo_failed {
            Some(t) => fail(format!("libjpeg-turbo: {t}; jpeg-encoder: {e}")),
            None => fail(e.to_string()),
        })
    }
}

/// The longest side libjpeg-turbo writes.
const TURBO_MAX_SIDE: u16 = 65_500;

thread_local! {
    /// One encoder per thread for [`encode_jpeg`]'s callers.
    static ENCODER: RefCell<JpegEncoder> = RefCell::new(JpegEncoder::new());
}

/// `image` as a baseline JPEG of `quality` (1–100), with this thread's [`JpegEncoder`].
pub fn encode_jpeg(image: &RgbImage, quality: u8) -> Result<Vec<u8>> {
    ENCODER.with_borrow_mut(|e| e.encode(image, quality))
}

/// Which encoder [`encode_jpeg`] uses on this thread (see [`JpegEncoder::describe`]).
pub fn encoder_in_use() -> String {
    ENCODER.with_borrow(JpegEncoder::describe)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean absolute difference per byte.
    fn mean_abs(a: &RgbImage, b: &RgbImage) -> f64 {
        let sum: u64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(&x, &y)| x.abs_diff(y) as u64)
            .sum();
        sum as f64 / a.as_raw().len() as f64
    }

    fn decode(bytes: &[u8]) -> RgbImage {
        assert_eq!(bytes[..2], [0xff, 0xd8]);
        image::load_from_memory(bytes).unwrap().to_rgb8()
    }

    #[test]
    fn encodes_a_decodable_jpeg_of_the_same_size() {
        let scene = crate::scene::render_frame(1, 0.0, 64, 48);
        let bytes = encode_jpeg(&scene.image, DEFAULT_QUALITY).unwrap();
        assert_eq!(decode(&bytes).dimensions(), (64, 48));
        let err = encode_jpeg(&RgbImage::new(0, 0), 80);
        assert!(err.is_err());
    }

    /// The test machines have libjpeg-turbo (scripts/setup-test-tools installs
    /// libturbojpeg0): both encoders are exercised, and must give the same picture.
    #[test]
    fn libjpeg_turbo_and_jpeg_encoder_give_the_same_picture() {
        let mut turbo = JpegEncoder::new();
        assert!(
            turbo.is_turbo(),
            "{} — install libturbojpeg0 (scripts/setup-test-tools does)",
            turbo.describe()
        );
        assert!(turbo.describe().starts_with("libjpeg-turbo"));
        let mut rust = JpegEncoder::pure_rust();
        assert!(!rust.is_turbo());
        // Odd sizes: partial MCUs at the right and bottom edges.
        for (w, h) in [(640, 480), (97, 61), (1, 1), (17, 2)] {
            let scene = crate::scene::render_frame(3, 1.0, w, h);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            turbo.encode_into(&scene.image, 80, &mut a).unwrap();
            rust.encode_into(&scene.image, 80, &mut b).unwrap();
            let (a, b) = (decode(&a), decode(&b));
            assert_eq!(a.dimensions(), (w, h));
            assert_eq!(b.dimensions(), (w, h));
            if w * h >= 64 {
                // Quality 80 stays within a few levels of the source, and the two
                // encoders within a level or two of each other.
                assert!(mean_abs(&a, &scene.image) < 6.0, "{w}×{h}");
                assert!(mean_abs(&b, &scene.image) < 6.0, "{w}×{h}");
                assert!(mean_abs(&a, &b) < 2.0, "{w}×{h}: {}", mean_abs(&a, &b));
            }
        }
        // Higher quality, closer picture and more bytes, from the same encoder.
        let scene = crate::scene::render_frame(3, 1.0, 160, 120);
        let (mut low, mut high) = (Vec::new(), Vec::new());
        turbo.encode_into(&scene.image, 20, &mut low).unwrap();
        turbo.encode_into(&scene.image, 95, &mut high).unwrap();
        assert!(high.len() > low.len());
        assert!(mean_abs(&decode(&high), &scene.image) < mean_abs(&decode(&low), &scene.image));
    }

    #[test]
    fn the_tallest_jpeg_is_written_past_libjpeg_turbos_limit() {
        // libjpeg stops at 65500 pixels a side; JPEG itself at 65535.
        for h in [65_500, 65_501, 65_535] {
            let image = RgbImage::from_pixel(4, h, image::Rgb([30, 200, 30]));
            let mut out = Vec::new();
            JpegEncoder::new()
                .encode_into(&image, 80, &mut out)
                .unwrap();
            let back = decode(&out);
            assert_eq!(back.dimensions(), (4, h));
            assert!(mean_abs(&back, &image) < 3.0);
        }
    }

    #[test]
    fn sizes_a_jpeg_cannot_hold_are_refused_by_both_encoders() {
        for mut encoder in [JpegEncoder::new(), JpegEncoder::pure_rust()] {
            let mut out = vec![1, 2, 3];
            for (w, h) in [(0, 0), (0, 5), (65536, 1)] {
                let err = encoder
                    .encode_into(&RgbImage::new(w, h), 80, &mut out)
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(&format!("{w}×{h}")), "{err}");
                assert!(out.is_empty(), "no stale bytes are left behind");
            }
        }
    }
}
