//! Preprocessing, defined once: the host's training and evaluation and the board's
//! engine all turn pixels into network input through these functions.

use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Per-channel normalisation applied after scaling pixels to 0..1: `(x - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// ImageNet's statistics, which torchvision's pretrained ResNet-18 expects.
pub const IMAGENET: Normalization = Normalization {
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
};

impl Normalization {
    /// Write `image` (RGB, HWC, u8) as normalised planar CHW floats into `out`, which
    /// must hold `3 * width * height` values.
    pub fn to_chw(&self, image: &RgbImage, out: &mut [f32]) {
        let plane = (image.width() * image.height()) as usize;
        assert_eq!(out.len(), 3 * plane, "output buffer size");
        let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * self.std[c]));
        let shift: [f32; 3] = std::array::from_fn(|c| self.mean[c] / self.std[c]);
        let (red, rest) = out.split_at_mut(plane);
        let (green, blue) = rest.split_at_mut(plane);
        let planes = [red, green, blue];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { to_planes_avx2(image.as_raw(), scale, shift, planes) };
        }
        to_planes(image.as_raw(), scale, shift, planes)
    }
}

/// [`to_planes`] built for AVX2, which x86-64's baseline lacks (no FMA: the products
/// and sums round as they do everywhere else, host and board alike).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn to_planes_avx2(rgb: &[u8], scale: [f32; 3], shift: [f32; 3], planes: [&mut [f32]; 3]) {
    to_planes(rgb, scale, shift, planes)
}

#[inline(always)]
fn to_planes(rgb: &[u8], scale: [f32; 3], shift: [f32; 3], [red, green, blue]: [&mut [f32]; 3]) {
    let planes = red.iter_mut().zip(green).zip(blue);
    for (((r, g), b), px) in planes.zip(rgb.chunks_exact(3)) {
        *r = px[0] as f32 * scale[0] - shift[0];
        *g = px[1] as f32 * scale[1] - shift[1];
        *b = px[2] as f32 * scale[2] - shift[2];
    }
}

/// A rectangle inside an image, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    /// A uniformly random `width × height` window inside a `full_w × full_h` image, or
    /// `None` when the image is smaller than the window.
    pub fn random<R: Rng>(
        rng: &mut R,
        full_w: u32,
        full_h: u32,
        width: u32,
        height: u32,
    ) -> Option<Self> {
        if full_w < width || full_h < height {
            return None;
        }
        Some(Self {
            x: rng.random_range(0..=full_w - width),
            y: rng.random_range(0..=full_h - height),
            width,
            height,
        })
    }

    /// The centred `width × height` window, or `None` when the image is smaller.
    pub fn centre(full_w: u32, full_h: u32, width: u32, height: u32) -> Option<Self> {
        if full_w < width || full_h < height {
            return None;
        }
        Some(Self {
            x: (full_w - width) / 2,
            y: (full_h - height) / 2,
            width,
            height,
        })
    }

    /// Copy this window out of an image (RGB or label map alike), clamped to the image:
    /// the pixels of image's `crop_imm`, row by row (its `to_image` goes pixel by pixel).
    pub fn crop<P: image::Pixel + 'static>(&self, image: &Buffer<P>) -> Buffer<P> {
        let (iw, ih) = image.dimensions();
        let (x, y) = (self.x.min(iw), self.y.min(ih));
        let (width, height) = (self.width.min(iw - x), self.height.min(ih - y));
        let channels = P::CHANNEL_COUNT as usize;
        let (from, len) = (x as usize * channels, width as usize * channels);
        let mut out = Vec::with_capacity(len * height as usize);
        if len > 0 {
            let rows = image.chunks_exact(iw as usize * channels).skip(y as usize);
            for row in rows.take(height as usize) {
                out.extend_from_slice(&row[from..from + len]);
            }
        }
        Buffer::from_raw(width, height, out).expect("the window's rows")
    }

    /// Copy `from`, of this window's size, into this window of `into`, row by row.
    pub fn paste<P: image::Pixel + 'static>(&self, from: &Buffer<P>, into: &mut Buffer<P>) {
        let end = |at: u32, len: u32| at as u64 + len as u64;
        assert!(
            from.dimensions() == (self.width, self.height)
                && end(self.x, self.width) <= into.width() as u64
                && end(self.y, self.height) <= into.height() as u64,
            "{}×{} pasted at {self:?} into {}×{}",
            from.width(),
            from.height(),
            into.width(),
            into.height()
        );
        let channels = P::CHANNEL_COUNT as usize;
        let (at, len) = (self.x as usize * channels, self.width as usize * channels);
        if len == 0 {
            return;
        }
        let stride = into.width() as usize * channels;
        let rows = into.chunks_exact_mut(stride).skip(self.y as usize);
        // `take`: an image's buffer may hold more than its rows.
        let from_rows = from.chunks_exact(len).take(self.height as usize);
        for (to, row) in rows.zip(from_rows) {
            to[at..at + len].copy_from_slice(row);
        }
    }
}

/// An image in memory, of any pixel type.
type Buffer<P> = image::ImageBuffer<P, Vec<<P as image::Pixel>::Subpixel>>;

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn normalisation_is_planar_and_uses_mean_and_std() {
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, image::Rgb([255, 0, 0]));
        img.put_pixel(1, 0, image::Rgb([0, 255, 0]));
        let mut out = vec![0.0; 6];
        IMAGENET.to_chw(&img, &mut out);
        let expect = |v: f32, c: usize| (v - IMAGENET.mean[c]) / IMAGENET.std[c];
        let want = [
            expect(1.0, 0),
            expect(0.0, 0),
            expect(0.0, 1),
            expect(1.0, 1),
            expect(0.0, 2),
            expect(0.0, 2),
        ];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{out:?} vs {want:?}");
        }
    }

    #[test]
    fn crops_and_pastes_are_image_s_own_row_by_row() {
        let rgb = RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8, y as u8, (x * y) as u8]));
        let gray = image::GrayImage::from_fn(7, 5, |x, y| image::Luma([(10 * y + x) as u8]));
        let rect = |x, y, width, height| Rect {
            x,
            y,
            width,
            height,
        };
        // Inside, on the edges, past them (clamped), empty.
        for r in [
            rect(0, 0, 7, 5),
            rect(2, 1, 3, 4),
            rect(6, 4, 1, 1),
            rect(5, 3, 4, 4),
            rect(9, 1, 2, 2),
            rect(1, 1, 0, 3),
        ] {
            let want = image::imageops::crop_imm(&rgb, r.x, r.y, r.width, r.height).to_image();
            assert_eq!(r.crop(&rgb), want, "{r:?}");
            let want = image::imageops::crop_imm(&gray, r.x, r.y, r.width, r.height).to_image();
            assert_eq!(r.crop(&gray), want, "{r:?}");
        }
        for r in [
            rect(0, 0, 7, 5),
            rect(2, 1, 3, 4),
            rect(6, 4, 1, 1),
            rect(3, 2, 0, 2),
        ] {
            let top = RgbImage::from_pixel(r.width, r.height, image::Rgb([200, 100, 50]));
            let (mut ours, mut want) = (rgb.clone(), rgb.clone());
            r.paste(&top, &mut ours);
            image::imageops::replace(&mut want, &top, r.x as i64, r.y as i64);
            assert_eq!(ours, want, "{r:?}");
        }
    }

    #[test]
    fn random_windows_stay_inside_and_small_images_are_refused() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..100 {
            let r = Rect::random(&mut rng, 500, 375, 480, 320).unwrap();
            assert!(r.x + r.width <= 500 && r.y + r.height <= 375);
        }
        assert_eq!(Rect::random(&mut rng, 300, 375, 480, 320), None);
        assert_eq!(
            Rect::centre(500, 375, 480, 320),
            Some(Rect {
                x: 10,
                y: 27,
                width: 480,
                height: 320
            })
        );
    }
}
