//! How a frame of any size becomes the model's fixed input, and how the class map
//! comes back over the frame. The policy is always explicit, so the aspect ratio is
//! never distorted without being asked for:
//!
//! - `stretch`: the whole frame scaled to the input (distorts when aspects differ);
//! - `crop`: the largest centred window of the input's aspect, scaled (the edges of the
//!   frame go unseen and come back as void);
//! - `letterbox`: the whole frame scaled to fit, centred, the bands filled with the
//!   normalisation mean (which normalises to zero: neutral input for the network).
//!
//! Class maps go back to a frame's resolution through [`resample_labels`] (and the
//! overlay's `Point` filter picks the same nearest class, from [`nearest`]).

use image::imageops::{self, FilterType};
use image::{GrayImage, Luma, RgbImage};
use serde::{Deserialize, Serialize};

use crate::classes::VOID;
use crate::preprocess::{Normalization, Rect};

/// How frames are fitted to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum ResizePolicy {
    Stretch,
    Crop,
    #[default]
    Letterbox,
}

/// How a class map is brought to a frame's resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Filter {
    /// Nearest class: hard, blocky borders; exact class colours.
    Point,
    /// Bilinear: smooth borders (the overlay blends the four nearest class colours, as
    /// jetson-inference's `--filter-mode=linear`; label maps take the heaviest label).
    #[default]
    Linear,
}

/// The geometry of one frame size fitted to one input size: the part of the frame
/// the model sees (`source`) lands on `target` inside the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    pub frame: (u32, u32),
    pub input: (u32, u32),
    pub source: Rect,
    pub target: Rect,
}

fn whole(w: u32, h: u32) -> Rect {
    Rect {
        x: 0,
        y: 0,
        width: w,
        height: h,
    }
}

/// `value · num / den` rounded, kept within `1..=max`.
fn scaled(value: u32, num: u32, den: u32, max: u32) -> u32 {
    let v = (value as u64 * num as u64 + den as u64 / 2) / den.max(1) as u64;
    (v as u32).clamp(1, max.max(1))
}

impl Fit {
    /// Fit a `frame` (w, h) to an `input` (w, h) under `policy`.
    pub fn new(policy: ResizePolicy, frame: (u32, u32), input: (u32, u32)) -> Self {
        let (fw, fh) = (frame.0.max(1), frame.1.max(1));
        let (iw, ih) = (input.0.max(1), input.1.max(1));
        // Compare aspects exactly: fw/fh > iw/ih ⇔ fw·ih > iw·fh.
        let frame_wider = fw as u64 * ih as u64 > iw as u64 * fh as u64;
        let (source, target) = match policy {
            ResizePolicy::Stretch => (whole(fw, fh), whole(iw, ih)),
            ResizePolicy::Crop => {
                let (w, h) = if frame_wider {
                    (scaled(fh, iw, ih, fw), fh)
                } else {
                    (fw, scaled(fw, ih, iw, fh))
                };
                let source = Rect::centre(fw, fh, w, h).expect("window inside the frame");
                (source, whole(iw, ih))
            }
            ResizePolicy::Letterbox => {
                let (w, h) = if frame_wider {
                    (iw, scaled(fh, iw, fw, ih))
                } else {
                    (scaled(fw, ih, fh, iw), ih)
                };
                let target = Rect::centre(iw, ih, w, h).expect("window inside the input");
                (whole(fw, fh), target)
            }
        };
        Self {
            frame: (fw, fh),
            input: (iw, ih),
            source,
            target,
        }
    }

    /// The model's input image for `frame` (which must have this fit's frame size).
    pub fn prepare(&self, frame: &RgbImage, normalization: &Normalization) -> RgbImage {
        let mut input = RgbImage::new(0, 0);
        self.prepare_into(frame, normalization, &mut input);
        input
    }

    /// Like [`Fit::prepare`], into `input`, whose buffer is reused when it has the input's
    /// size (a crop still copies its window), and a letterbox is scaled straight into
    /// its place with only the bands around it painted.
    pub fn prepare_into(
        &self,
        frame: &RgbImage,
        normalization: &Normalization,
        input: &mut RgbImage,
    ) {
        debug_assert_eq!(frame.dimensions(), self.frame);
        let window = if self.source == whole(frame.width(), frame.height()) {
            None
        } else {
            Some(self.source.crop(frame))
        };
        let seen = window.as_ref().unwrap_or(frame);
        let (iw, ih) = self.input;
        if input.dimensions() != (iw, ih) {
            *input = RgbImage::new(iw, ih);
        }
        let t = self.target;
        if t != whole(iw, ih) {
            let mean = normalization
                .mean
                .map(|m| (m * 255.0).round().clamp(0.0, 255.0) as u8);
            paint_around(input, t, mean);
        }
        if seen.dimensions() == (t.width, t.height) {
            t.paste(seen, input);
        } else {
            scale_into(seen, input, t);
        }
    }

    /// The class map (at input size) as a map covering exactly the frame, at about the
    /// input's resolution: letterbox bands cut off, the unseen edges of a crop void.
    /// The overlay then brings it to the frame's resolution with its filter.
    pub fn map_over_frame(&self, class_map: &GrayImage) -> GrayImage {
        debug_assert_eq!(class_map.dimensions(), self.input);
        let (fw, fh) = self.frame;
        let (s, t) = (self.source, self.target);
        if s == whole(fw, fh) {
            return if t == whole(self.input.0, self.input.1) {
                class_map.clone()
            } else {
                t.crop(class_map)
            };
        }
        // A crop: the map covers `source`; grow it by the same scale to the whole frame.
        let w = scaled(fw, t.width, s.width, u32::MAX);
        let h = scaled(fh, t.height, s.height, u32::MAX);
        let x = (s.x as u64 * t.width as u64 / s.width as u64) as i64;
        let y = (s.y as u64 * t.height as u64 / s.height as u64) as i64;
        let mut out = GrayImage::from_pixel(w, h, Luma([VOID]));
        imageops::replace(&mut out, class_map, x, y);
        out
    }
}

/// Class ids resampled to `width × height`. `Point` takes the nearest label; `Linear`
/// takes, among the four nearest, the label with the largest bilinear weight, which
/// rounds the blocky staircase of an upsampled map without inventing labels.
pub fn resample_labels(map: &GrayImage, width: u32, height: u32, filter: Filter) -> GrayImage {
    let (mw, mh) = map.dimensions();
    if mw == 0 || mh == 0 {
        return GrayImage::from_pixel(width, height, Luma([VOID]));
    }
    let raw = map.as_raw();
    let at = |x: u32, y: u32| raw[(y * mw + x) as usize];
    if filter == Filter::Point {
        let xs = nearest(mw, width);
        let ys = nearest(mh, height);
        return GrayImage::from_fn(width, height, |x, y| {
            Luma([at(xs[x as usize], ys[y as usize])])
        });
    }
    let xs = taps(mw, width);
    let ys = taps(mh, height);
    GrayImage::from_fn(width, height, |x, y| {
        let (x0, x1, wx) = xs[x as usize];
        let (y0, y1, wy) = ys[y as usize];
        let corners = [
            (at(x0, y0), (1.0 - wx) * (1.0 - wy)),
            (at(x1, y0), wx * (1.0 - wy)),
            (at(x0, y1), (1.0 - wx) * wy),
            (at(x1, y1), wx * wy),
        ];
        let weight = |l: u8| {
            corners
                .iter()
                .filter(|c| c.0 == l)
                .map(|c| c.1)
                .sum::<f32>()
        };
        // Ties go to the earlier corner (top-left first).
        let mut best = corners[0].0;
        let mut best_w = weight(best);
        for &(l, _) in &corners[1..] {
            let w = weight(l);
            if w > best_w {
                (best, best_w) = (l, w);
            }
        }
        Luma([best])
    })
}

/// For each of `to` output coordinates, the nearest of `from` source coordinates,
/// centres aligned (as image resizers do); a centre exactly between two goes to the
/// second. Exact: output `i`'s centre is source `(2i + 1)·from / (2·to) − ½`, so the
/// nearest is `⌊(2i + 1)·from / (2·to)⌋`. `from` must not be 0.
pub fn nearest(from: u32, to: u32) -> Vec<u32> {
    let (from, to2) = (u64::from(from), 2 * u64::from(to));
    (0..u64::from(to))
        .map(|i| ((2 * i + 1) * from / to2).min(from - 1) as u32)
        .collect()
}

/// For each output coordinate, the two source coordinates around its centre and the
/// weight of the second.
fn taps(from: u32, to: u32) -> Vec<(u32, u32, f32)> {
    let scale = from as f32 / to.max(1) as f32;
    (0..to)
        .map(|i| {
            let s = ((i as f32 + 0.5) * scale - 0.5).clamp(0.0, (from - 1) as f32);
            let lo = s.floor() as u32;
            let hi = (lo + 1).min(from - 1);
            (lo, hi, s - lo as f32)
        })
        .collect()
}

/// `image` resampled to `width`×`height` with a bilinear (triangle) filter, as image's
/// `resize` does, through fast_image_resize's SIMD kernels.
pub fn scale(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let mut out = RgbImage::new(width, height);
    scale_into(image, &mut out, whole(width, height));
    out
}

thread_local! {
    /// A resizer per thread: it keeps its intermediate buffer from frame to frame.
    static RESIZER: std::cell::RefCell<fast_image_resize::Resizer> =
        std::cell::RefCell::new(fast_image_resize::Resizer::new());
}

/// `image` resampled as [`scale`] does into the rectangle `at` of `out` (seg-cam's
/// `preprocess_ms`: 0.6–0.9 ms for 640×480 into a 320×480 letterbox; image's own
/// resize took 2.6 ms into 224×288).
fn scale_into(image: &RgbImage, out: &mut RgbImage, at: Rect) {
    use fast_image_resize::images::{CroppedImageMut, Image, ImageRef};
    use fast_image_resize::{PixelType, ResizeAlg, ResizeOptions};
    let bilinear = ResizeAlg::Convolution(fast_image_resize::FilterType::Bilinear);
    let (ow, oh) = out.dimensions();
    let done = match (
        ImageRef::new(
            image.width(),
            image.height(),
            image.as_raw(),
            PixelType::U8x3,
        ),
        Image::from_slice_u8(ow, oh, out, PixelType::U8x3),
    ) {
        (Ok(src), Ok(mut dst)) => {
            match CroppedImageMut::new(&mut dst, at.x, at.y, at.width, at.height) {
                Ok(mut place) => RESIZER.with_borrow_mut(|r| {
                    r.resize(&src, &mut place, &ResizeOptions::new().resize_alg(bilinear))
                        .is_ok()
                }),
                Err(_) => false,
            }
        }
        _ => false,
    };
    if !done {
        // Fit never asks for an empty size; stay correct regardless.
        let scaled = imageops::resize(image, at.width, at.height, FilterType::Triangle);
        at.paste(&scaled, out);
    }
}

/// Paint everything of `image` outside `keep` in `colour` (a letterbox's bands).
fn paint_around(image: &mut RgbImage, keep: Rect, colour: [u8; 3]) {
    let width = image.width() as usize;
    let (left, right) = (keep.x as usize * 3, (keep.x + keep.width) as usize * 3);
    let rows = keep.y as usize..(keep.y + keep.height) as usize;
    let paint = |bytes: &mut [u8]| {
        for px in bytes.chunks_exact_mut(3) {
            px.copy_from_slice(&colour);
        }
    };
    for (y, row) in image.chunks_exact_mut(width * 3).enumerate() {
        if rows.contains(&y) {
            paint(&mut row[..left]);
            paint(&mut row[right..]);
        } else {
            paint(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IMAGENET;
    use image::Rgb;

    fn rect(x: u32, y: u32, width: u32, height: u32) -> Rect {
        Rect {
            x,
            y,
            width,
            height,
        }
    }

    #[test]
    fn geometry_of_each_policy() {
        // A 4:3 frame into a 9:7 (288×224) input.
        let stretch = Fit::new(ResizePolicy::Stretch, (640, 480), (288, 224));
        assert_eq!(stretch.source, rect(0, 0, 640, 480));
        assert_eq!(stretch.target, rect(0, 0, 288, 224));
        // 640×480 is wider than 9:7? 640·224 = 143360 > 288·480 = 138240: yes.
        let crop = Fit::new(ResizePolicy::Crop, (640, 480), (288, 224));
        assert_eq!(crop.source, rect(11, 0, 617, 480), "480·288/224 = 617.1");
        assert_eq!(crop.target, rect(0, 0, 288, 224));
        let letterbox = Fit::new(ResizePolicy::Letterbox, (640, 480), (288, 224));
        assert_eq!(letterbox.source, rect(0, 0, 640, 480));
        assert_eq!(letterbox.target, rect(0, 4, 288, 216), "480·288/640 = 216");
        // A tall frame: bands left and right.
        let tall = Fit::new(ResizePolicy::Letterbox, (100, 400), (200, 200));
        assert_eq!(tall.target, rect(75, 0, 50, 200));
        let tall = Fit::new(ResizePolicy::Crop, (100, 400), (200, 200));
        assert_eq!(tall.source, rect(0, 150, 100, 100));
    }

    #[test]
    fn letterbox_keeps_the_aspect_and_pads_with_the_mean() {
        // Left half red, right half blue: the border must stay in the middle column.
        let frame = RgbImage::from_fn(64, 32, |x, _| {
            if x < 32 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        let fit = Fit::new(ResizePolicy::Letterbox, (64, 32), (32, 32));
        let input = fit.prepare(&frame, &IMAGENET);
        assert_eq!(input.dimensions(), (32, 32));
        let mean = [124, 116, 104]; // 0.485, 0.456, 0.406 × 255, rounded
        assert_eq!(input.get_pixel(16, 2).0, mean, "top band");
        assert_eq!(input.get_pixel(16, 29).0, mean, "bottom band");
        assert_eq!(input.get_pixel(2, 16).0, [255, 0, 0]);
        assert_eq!(input.get_pixel(29, 16).0, [0, 0, 255]);
        // Normalising the band gives zeros.
        let mut chw = vec![0.0; 3 * 32 * 32];
        IMAGENET.to_chw(&input, &mut chw);
        assert!(chw[0].abs() < 0.01 && chw[1024].abs() < 0.01 && chw[2048].abs() < 0.01);
        // Stretch fills the input; the border is still in the middle, but squeezed.
        let stretched =
            Fit::new(ResizePolicy::Stretch, (64, 32), (32, 32)).prepare(&frame, &IMAGENET);
        assert_eq!(stretched.get_pixel(24, 0).0, [0, 0, 255], "no band");
    }

    #[test]
    fn crop_sees_the_centre_only() {
        // Three vertical bands; a square crop of the 3:1 frame sees the middle one only.
        let frame = RgbImage::from_fn(90, 30, |x, _| Rgb([(x / 30) as u8 * 100, 0, 0]));
        let fit = Fit::new(ResizePolicy::Crop, (90, 30), (10, 10));
        let input = fit.prepare(&frame, &IMAGENET);
        assert!(input.pixels().all(|p| p.0 == [100, 0, 0]));
    }

    #[test]
    fn class_maps_come_back_over_the_frame() {
        let map = GrayImage::from_fn(8, 8, |x, y| Luma([(x / 4 + 2 * (y / 4)) as u8]));
        // Letterbox: a 2:1 frame uses rows 2..6 of the input; the bands are cut off.
        let fit = Fit::new(ResizePolicy::Letterbox, (16, 8), (8, 8));
        assert_eq!(fit.target, rect(0, 2, 8, 4));
        let back = fit.map_over_frame(&map);
        assert_eq!(back.dimensions(), (8, 4));
        assert_eq!(back.as_raw()[..8], [0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(back.as_raw()[24..], [2, 2, 2, 2, 3, 3, 3, 3]);
        // Crop: the map covers the middle 8×8 of a 16×8 frame; the sides are void.
        let fit = Fit::new(ResizePolicy::Crop, (16, 8), (8, 8));
        assert_eq!(fit.source, rect(4, 0, 8, 8));
        let back = fit.map_over_frame(&map);
        assert_eq!(back.dimensions(), (16, 8));
        assert_eq!(
            back.as_raw()[..16],
            [VOID, VOID, VOID, VOID, 0, 0, 0, 0, 1, 1, 1, 1, VOID, VOID, VOID, VOID]
        );
        // Stretch: unchanged.
        let fit = Fit::new(ResizePolicy::Stretch, (16, 8), (8, 8));
        assert_eq!(fit.map_over_frame(&map), map);
        // At frame resolution the crop's map lines up with the frame's pixels.
        let full = resample_labels(&fit_crop_map(&map), 16, 8, Filter::Point);
        assert_eq!(full.get_pixel(3, 0).0[0], VOID);
        assert_eq!(full.get_pixel(4, 0).0[0], 0);
        assert_eq!(full.get_pixel(8, 7).0[0], 3);
    }

    fn fit_crop_map(map: &GrayImage) -> GrayImage {
        Fit::new(ResizePolicy::Crop, (16, 8), (8, 8)).map_over_frame(map)
    }

    #[test]
    fn point_and_linear_label_upsampling() {
        // One labelled cell in a 2×2 map, upsampled 4×.
        let map = GrayImage::from_raw(2, 2, vec![1, 0, 0, 0]).unwrap();
        let point = resample_labels(&map, 8, 8, Filter::Point);
        let linear = resample_labels(&map, 8, 8, Filter::Linear);
        // Point: a 4×4 square of 1s.
        for y in 0..8 {
            for x in 0..8 {
                let want = u8::from(x < 4 && y < 4);
                assert_eq!(point.get_pixel(x, y).0[0], want, "point ({x}, {y})");
            }
        }
        // Linear: the square's inner corner is rounded off, its outer edges kept.
        assert_eq!(linear.get_pixel(0, 0).0[0], 1);
        assert_eq!(linear.get_pixel(3, 0).0[0], 1);
        assert_eq!(linear.get_pixel(0, 3).0[0], 1);
        assert_eq!(linear.get_pixel(3, 3).0[0], 0, "corner rounded");
        assert!(linear.pixels().all(|p| p.0[0] <= 1), "no new labels");
        // At the same size both are the identity.
        assert_eq!(resample_labels(&map, 2, 2, Filter::Linear), map);
        assert_eq!(resample_labels(&map, 2, 2, Filter::Point), map);
    }

    #[test]
    fn point_picks_the_nearest_class() {
        // A 2×2 map (background, thing / other, void) at 4×4: each cell a 2×2 block.
        let map = GrayImage::from_raw(2, 2, vec![0, 1, 2, VOID]).unwrap();
        let out = resample_labels(&map, 4, 4, Filter::Point);
        assert_eq!(out.as_raw()[..4], [0, 0, 1, 1]);
        assert_eq!(out.as_raw()[12..], [2, 2, VOID, VOID]);
        // Downsampling: a centre exactly between two source pixels takes the second.
        assert_eq!(nearest(2, 1), [1]);
        assert_eq!(nearest(4, 3), [0, 2, 3]);
        assert_eq!(nearest(3, 2), [0, 2]);
        // Against the definition, for every pair of small sizes: the source centre
        // nearest to the output centre, in units of 1/(2·from·to) to stay exact.
        for from in 1..40u32 {
            for to in 1..40u32 {
                for (i, &s) in nearest(from, to).iter().enumerate() {
                    let want = (2 * i as i64 + 1) * from as i64;
                    let off = |s: i64| (want - (2 * s + 1) * to as i64).abs();
                    let s = s as i64;
                    assert!(s < from as i64, "{from}→{to} [{i}] = {s}");
                    if s > 0 {
                        assert!(off(s) <= off(s - 1), "{from}→{to} [{i}] = {s}");
                    }
                    if s + 1 < from as i64 {
                        assert!(off(s) < off(s + 1), "{from}→{to} [{i}] = {s}");
                    }
                }
            }
        }
    }
}
