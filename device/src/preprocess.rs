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
        for (i, px) in image.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = px.0[c] as f32 * scale[c] - shift[c];
            }
        }
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

    /// Copy this window out of an image (RGB or label map alike).
    pub fn crop<P: image::Pixel + 'static>(
        &self,
        image: &image::ImageBuffer<P, Vec<P::Subpixel>>,
    ) -> image::ImageBuffer<P, Vec<P::Subpixel>> {
        image::imageops::crop_imm(image, self.x, self.y, self.width, self.height).to_image()
    }
}

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
