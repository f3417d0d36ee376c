//! Class maps drawn over frames: the class map (model resolution) is brought to the
//! frame's size, either nearest-neighbour (`Point`, the nearest class as
//! [`resample_labels`](crate::resize::resample_labels) picks it) or by blending the
//! class colours bilinearly (`Linear`, as jetson-inference's `--filter-mode=linear`),
//! and composed as an overlay, a bare mask, or frame and mask side by side.
//!
//! Blending is `out = (alpha·colour + (255 − alpha)·pixel) / 255`, rounded to nearest.
//! Each label value's premultiplied colour is tabulated once, so a frame costs a few
//! multiply-adds per pixel and no allocation once the output buffer exists. A row is
//! blended in spans of one tint (inside regions) with only border pixels looked up one
//! by one, and rows that read the same class-map rows reuse the last row's spans.

use image::{GrayImage, RgbImage};
use serde::{Deserialize, Serialize};

use crate::classes::{ClassCounts, ClassList, PresentClass, VOID, VOID_COLOUR};
use crate::error::{Error, Result};
use crate::resize::{nearest, Filter};

/// jetson-inference's default blending weight of the class colour (0–255).
pub const DEFAULT_ALPHA: u8 = 150;

/// What the composed picture shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Visualize {
    /// Class colours blended over the frame.
    #[default]
    Overlay,
    /// Class colours only (void in the void colour, the ignored class black).
    Mask,
    /// The frame on the left, the mask on the right (twice the frame's width).
    SideBySide,
}

/// The settings of an [`Overlay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OverlayOptions {
    pub filter: Filter,
    pub visualize: Visualize,
    /// Weight of the class colour over the frame: 0 shows the frame, 255 the colour.
    pub alpha: u8,
    /// A class left unblended in overlays (and black in masks), e.g. background.
    pub ignore_class: Option<u8>,
}

impl Default for OverlayOptions {
    fn default() -> Self {
        Self {
            filter: Filter::default(),
            visualize: Visualize::default(),
            alpha: DEFAULT_ALPHA,
            ignore_class: None,
        }
    }
}

/// What blending one label value does: `out = (premul + keep·pixel) / 255`, with
/// `premul = alpha·colour` per channel and `keep = 255 − alpha`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Tint {
    /// `alpha·colour` ≤ 255·255: 16 bits.
    premul: [u16; 3],
    keep: u16,
}

impl Tint {
    fn new(colour: [u8; 3], alpha: u8) -> Self {
        let a = alpha as u16;
        Self {
            premul: colour.map(|c| a * c as u16),
            keep: 255 - a,
        }
    }
}

/// Bilinear weights in 1/128ths: 7 bits keep four-tap sums of 255·255 values in u32.
const FRAC_BITS: u32 = 7;
const ONE: u32 = 1 << FRAC_BITS;

/// For each output coordinate: the two source coordinates and the weight of the second.
#[derive(Debug, Clone, Copy)]
struct Tap {
    lo: u32,
    hi: u32,
    w: u32,
}

/// Source coordinates for each output coordinate (centres aligned, as image resizers do).
fn taps(src: u32, dst: u32, filter: Filter) -> Vec<Tap> {
    if filter == Filter::Point {
        return nearest(src, dst)
            .into_iter()
            .map(|s| Tap { lo: s, hi: s, w: 0 })
            .collect();
    }
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let u = ((d as f64 + 0.5) * scale - 0.5).clamp(0.0, (src - 1) as f64);
            let lo = u.floor() as u32;
            let w = ((u - lo as f64) * ONE as f64).round() as u32;
            let (lo, w) = if w == ONE { (lo + 1, 0) } else { (lo, w) };
            let lo = lo.min(src - 1);
            Tap {
                lo,
                hi: (lo + 1).min(src - 1),
                w,
            }
        })
        .collect()
}

/// Output columns that read the same two class-map columns: where those columns' labels
/// agree (inside regions, nearly everywhere) the whole group takes one tint.
#[derive(Debug, Clone, Copy)]
struct ColumnGroup {
    start: usize,
    end: usize,
    lo: usize,
    hi: usize,
}

/// The column taps' runs of equal source columns (taps rise with the output column).
fn column_groups(columns: &[Tap]) -> Vec<ColumnGroup> {
    let mut groups: Vec<ColumnGroup> = Vec::new();
    for (x, tap) in columns.iter().enumerate() {
        let (lo, hi) = (tap.lo as usize, tap.hi as usize);
        match groups.last_mut() {
            Some(g) if (g.lo, g.hi) == (lo, hi) => g.end = x + 1,
            _ => groups.push(ColumnGroup {
                start: x,
                end: x + 1,
                lo,
                hi,
            }),
        }
    }
    groups
}

/// The taps of one (class-map size, frame size, filter): the column taps with their
/// groups, and the row taps.
#[derive(Debug, Clone)]
struct Grid {
    key: ((u32, u32), (u32, u32), Filter),
    columns: Vec<Tap>,
    groups: Vec<ColumnGroup>,
    rows: Vec<Tap>,
}

/// Draws class maps over frames; keeps its colour tables and taps between frames, so
/// reuse one `Overlay` for a stream.
#[derive(Debug, Clone)]
pub struct Overlay {
    options: OverlayOptions,
    /// Tints over the frame (overlay) and over black (mask), per label value.
    over_frame: Box<[Tint; 256]>,
    over_black: Box<[Tint; 256]>,
    grid: Option<Grid>,
    /// The current output row's spans (kept between rows and frames).
    row: RowPlan,
}

/// A stretch of an output row under one label's tint, or (`None`) along a border,
/// where the tint changes pixel by pixel and is kept in [`RowPlan`]'s per-channel
/// vectors.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    label: Option<u8>,
}

/// One output row as spans: a span of one tint is blended with that tint repeated,
/// which the compiler turns into SIMD, and only border pixels are looked up one by one.
#[derive(Debug, Clone, Default)]
struct RowPlan {
    spans: Vec<Span>,
    /// Per channel of the row, set only inside spans without a tint of their own.
    premul: Vec<u16>,
    keep: Vec<u16>,
}

impl Overlay {
    pub fn new(classes: &ClassList, options: OverlayOptions) -> Self {
        let mut over_frame = Box::new([Tint::new([0; 3], 0); 256]);
        let mut over_black = Box::new([Tint::new([0; 3], 0); 256]);
        for label in 0..=255u8 {
            let known = (label as usize) < classes.len() && label != VOID;
            let ignored = options.ignore_class == Some(label);
            // Overlays leave void, unknown and ignored pixels as they are.
            if known && !ignored {
                over_frame[label as usize] = Tint::new(classes.colour_of(label), options.alpha);
            }
            over_black[label as usize] = if ignored {
                Tint::new([0; 3], 255)
            } else if known {
                Tint::new(classes.colour_of(label), 255)
            } else {
                Tint::new(VOID_COLOUR, 255)
            };
        }
        Self {
            options,
            over_frame,
            over_black,
            grid: None,
            row: RowPlan::default(),
        }
    }

    pub fn options(&self) -> &OverlayOptions {
        &self.options
    }

    /// The size of the picture [`Overlay::render`] makes from a `width × height` frame.
    pub fn output_size(&self, width: u32, height: u32) -> (u32, u32) {
        match self.options.visualize {
            Visualize::SideBySide => (width * 2, height),
            Visualize::Overlay | Visualize::Mask => (width, height),
        }
    }

    /// Compose `frame` with `class_map`; returns the picture and the class counts.
    pub fn render(
        &mut self,
        frame: &RgbImage,
        class_map: &GrayImage,
    ) -> Result<(RgbImage, ClassCounts)> {
        let mut out = RgbImage::new(0, 0);
        let counts = self.render_into(frame, class_map, &mut out)?;
        Ok((out, counts))
    }

    /// Like [`Overlay::render`], into `out` (resized only when the size changes).
    pub fn render_into(
        &mut self,
        frame: &RgbImage,
        class_map: &GrayImage,
        out: &mut RgbImage,
    ) -> Result<ClassCounts> {
        let (fw, fh) = frame.dimensions();
        let (mw, mh) = class_map.dimensions();
        if fw == 0 || fh == 0 || mw == 0 || mh == 0 {
            return Err(Error::Invalid(format!(
                "overlay: frame {fw}×{fh} and class map {mw}×{mh} must both be non-empty"
            )));
        }
        let (ow, oh) = self.output_size(fw, fh);
        if out.dimensions() != (ow, oh) {
            *out = RgbImage::new(ow, oh);
        }
        let filter = self.options.filter;
        let key = ((mw, mh), (fw, fh), filter);
        if self.grid.as_ref().map(|g| g.key) != Some(key) {
            let columns = taps(mw, fw, filter);
            self.grid = Some(Grid {
                key,
                groups: column_groups(&columns),
                columns,
                rows: taps(mh, fh, filter),
            });
        }
        let grid = self.grid.as_ref().expect("set above");

        let frame_stride = fw as usize * 3;
        let out_stride = ow as usize * 3;
        let map = class_map.as_raw();
        let out_raw: &mut [u8] = out;
        let tints = match self.options.visualize {
            Visualize::Overlay => &self.over_frame,
            Visualize::Mask | Visualize::SideBySide => &self.over_black,
        };
        let mut planned = None;
        for (y, row_tap) in grid.rows.iter().enumerate() {
            let frame_row = &frame.as_raw()[y * frame_stride..][..frame_stride];
            let out_row = &mut out_raw[y * out_stride..][..out_stride];
            let map_lo = &map[row_tap.lo as usize * mw as usize..][..mw as usize];
            let map_hi = &map[row_tap.hi as usize * mw as usize..][..mw as usize];
            let src = MapRows {
                lo: map_lo,
                hi: map_hi,
                w: row_tap.w,
            };
            let row = &mut self.row;
            // A row's spans follow from its two class-map rows' labels, its border tints
            // also from the weight between them where those rows differ: rows reading the
            // same class-map rows (inside regions, along upright borders, each pair of
            // rows when scaling up) take the last row's spans, and tints if they can.
            let same_labels = planned
                .is_some_and(|(lo, hi, _): (&[u8], &[u8], u32)| lo == map_lo && hi == map_hi);
            let same_weight = planned.is_some_and(|(.., w)| w == row_tap.w) || map_lo == map_hi;
            if !same_labels {
                row.plan(&src, grid);
            }
            if !(same_labels && same_weight) {
                row.tint_borders(tints, &src, grid);
                planned = Some((map_lo, map_hi, row_tap.w));
            }
            match self.options.visualize {
                Visualize::Overlay => row.blend_over(tints, frame_row, out_row),
                Visualize::Mask => row.paint(tints, out_row),
                Visualize::SideBySide => {
                    let (left, right) = out_row.split_at_mut(frame_stride);
                    left.copy_from_slice(frame_row);
                    row.paint(tints, right);
                }
            }
        }
        Ok(ClassCounts::of(class_map))
    }

    /// The classes for a legend: those present, less the ignored class.
    pub fn legend(&self, classes: &ClassList, counts: &ClassCounts) -> Vec<PresentClass> {
        let mut present = counts.present(classes);
        present.retain(|p| Some(p.index) != self.options.ignore_class);
        present
    }
}

/// The two class-map rows an output row reads, and the weight of the lower one.
struct MapRows<'a> {
    lo: &'a [u8],
    hi: &'a [u8],
    w: u32,
}

impl RowPlan {
    /// The row's spans from the labels of the class-map rows `src`: a group whose four
    /// taps agree extends a span of its label (a byte compare, where a tint compare
    /// would take several), any other extends a border span.
    fn plan(&mut self, src: &MapRows, grid: &Grid) {
        self.spans.clear();
        // The open span is kept out of the vector: one compare per group, no vector access.
        let mut open: Option<Span> = None;
        for g in &grid.groups {
            let a = src.lo[g.lo];
            let label = (a == src.lo[g.hi] && a == src.hi[g.lo] && a == src.hi[g.hi]).then_some(a);
            match &mut open {
                Some(span) if span.label == label => span.end = g.end,
                _ => {
                    let next = Span {
                        start: g.start,
                        end: g.end,
                        label,
                    };
                    self.spans.extend(open.replace(next));
                }
            }
        }
        self.spans.extend(open);
    }

    /// The tints of the pixels in spans without one (borders): bilinear, so they also
    /// depend on the rows' weight `src.w`, which rows with the same spans need not share.
    fn tint_borders(&mut self, tints: &[Tint; 256], src: &MapRows, grid: &Grid) {
        let n = 3 * grid.columns.len();
        self.premul.resize(n, 0);
        self.keep.resize(n, 0);
        for span in self.spans.iter().filter(|s| s.label.is_none()) {
            for (x, tap) in grid.columns[span.start..span.end].iter().enumerate() {
                let (lo, hi) = (tap.lo as usize, tap.hi as usize);
                let quad = [
                    &tints[src.lo[lo] as usize],
                    &tints[src.lo[hi] as usize],
                    &tints[src.hi[lo] as usize],
                    &tints[src.hi[hi] as usize],
                ];
                let t = bilinear(quad, tap.w, src.w);
                let x = span.start + x;
                self.premul[3 * x..][..3].copy_from_slice(&t.premul);
                self.keep[3 * x..][..3].fill(t.keep);
            }
        }
    }

    /// `out = (premul + keep·pixel) / 255`, rounded, span by span.
    fn blend_over(&self, tints: &[Tint; 256], frame_row: &[u8], out_row: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { blend_row_avx2(self, tints, frame_row, out_row) };
        }
        blend_row(self, tints, frame_row, out_row)
    }

    /// The same over black pixels: the colour alone.
    fn paint(&self, tints: &[Tint; 256], out_row: &mut [u8]) {
        for span in &self.spans {
            let (i, j) = (3 * span.start, 3 * span.end);
            let out = &mut out_row[i..j];
            match span.label {
                Some(label) => {
                    let rgb = tints[label as usize].premul.map(div255);
                    for px in out.chunks_exact_mut(3) {
                        px.copy_from_slice(&rgb);
                    }
                }
                None => {
                    for (out, &premul) in out.iter_mut().zip(&self.premul[i..j]) {
                        *out = div255(premul);
                    }
                }
            }
        }
    }
}

/// [`blend_row`] built for AVX2: 16 channels a step where x86-64's baseline SSE2 does 8
/// (release builds target the baseline; aarch64's baseline has NEON already).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn blend_row_avx2(
    plan: &RowPlan,
    tints: &[Tint; 256],
    frame_row: &[u8],
    out_row: &mut [u8],
) {
    blend_row(plan, tints, frame_row, out_row)
}

#[inline(always)]
fn blend_row(plan: &RowPlan, tints: &[Tint; 256], frame_row: &[u8], out_row: &mut [u8]) {
    for span in &plan.spans {
        let (i, j) = (3 * span.start, 3 * span.end);
        let (frame, out) = (&frame_row[i..j], &mut out_row[i..j]);
        match span.label.map(|label| &tints[label as usize]) {
            // No colour (void, unknown, ignored, alpha 0): the frame as it is.
            Some(tint) if tint.keep == 255 => out.copy_from_slice(frame),
            Some(tint) => blend_one_tint(tint, frame, out),
            None => blend_over(&plan.premul[i..j], &plan.keep[i..j], frame, out),
        }
    }
}

/// [`blend_over`] with one tint for every pixel: the tint repeated over 16 pixels, 48
/// channels, a whole number of pixels and of SIMD vectors.
#[inline(always)]
fn blend_one_tint(tint: &Tint, frame: &[u8], out: &mut [u8]) {
    const STEP: usize = 48;
    let premul: [u16; STEP] = std::array::from_fn(|i| tint.premul[i % 3]);
    let keep = tint.keep;
    let mut outs = out.chunks_exact_mut(STEP);
    let mut frames = frame.chunks_exact(STEP);
    for (out, frame) in (&mut outs).zip(&mut frames) {
        for i in 0..STEP {
            out[i] = div255(premul[i] + keep * frame[i] as u16);
        }
    }
    // The rest starts on a pixel (48 is a multiple of 3), as the pattern does.
    let rest = outs.into_remainder().iter_mut().zip(frames.remainder());
    for ((out, &px), &premul) in rest.zip(&premul) {
        *out = div255(premul + keep * px as u16);
    }
}

/// `out = (premul + keep·pixel) / 255` in 16 bits: every tint keeps
/// `premul ≤ 255·(255 − keep)`, so the sum is at most 255·255.
#[inline(always)]
fn blend_over(premul: &[u16], keep: &[u16], frame_row: &[u8], out_row: &mut [u8]) {
    let n = premul.len();
    let lanes = out_row[..n].iter_mut().zip(&frame_row[..n]);
    for ((out, &px), (&premul, &keep)) in lanes.zip(premul.iter().zip(keep)) {
        *out = div255(premul + keep * px as u16);
    }
}

/// `v / 255` rounded to nearest for `v ≤ 255·255`, in 16 bits: shifts and adds, which
/// SIMD units have and a division by a constant does not vectorise to.
#[inline(always)]
pub(crate) fn div255(v: u16) -> u8 {
    let t = v + 128;
    ((t + (t >> 8)) >> 8) as u8
}

/// Tints `[top-left, top-right, bottom-left, bottom-right]` blended with weights `wx`,
/// `wy` of the right and bottom taps (in 1/128ths).
#[inline]
fn bilinear(t: [&Tint; 4], wx: u32, wy: u32) -> Tint {
    let lerp = |p: u32, q: u32| p * (ONE - wx) + q * wx;
    // A weighted mean of values ≤ 255·255 (weights summing to ONE²) stays ≤ 255·255.
    let mix = |f: &dyn Fn(&Tint) -> u16| {
        let top = lerp(f(t[0]) as u32, f(t[1]) as u32);
        let bottom = lerp(f(t[2]) as u32, f(t[3]) as u32);
        ((top * (ONE - wy) + bottom * wy + (1 << (2 * FRAC_BITS - 1))) >> (2 * FRAC_BITS)) as u16
    };
    let keep = mix(&|t| t.keep);
    // Rounding each part on its own could put premul + keep·255 just above 255·255
    // (which the 16-bit blend needs to hold); the cap moves a value by under half a level.
    let cap = 255 * (255 - keep);
    Tint {
        premul: [
            mix(&|t| t.premul[0]).min(cap),
            mix(&|t| t.premul[1]).min(cap),
            mix(&|t| t.premul[2]).min(cap),
        ],
        keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resize::resample_labels;
    use image::{Luma, Rgb};

    fn two_classes() -> ClassList {
        ClassList::new(vec![
            ("background".into(), [0, 0, 0]),
            ("thing".into(), [200, 100, 50]),
            ("other".into(), [10, 250, 0]),
        ])
        .unwrap()
    }

    /// A 2×2 class map: background, thing / other, void.
    fn map_2x2() -> GrayImage {
        GrayImage::from_raw(2, 2, vec![0, 1, 2, VOID]).unwrap()
    }

    fn grey_frame(w: u32, h: u32) -> RgbImage {
        RgbImage::from_pixel(w, h, Rgb([100, 100, 100]))
    }

    fn options(filter: Filter, visualize: Visualize, alpha: u8) -> OverlayOptions {
        OverlayOptions {
            filter,
            visualize,
            alpha,
            ignore_class: None,
        }
    }

    fn expected(colour: [u8; 3], pixel: [u8; 3], alpha: u32) -> [u8; 3] {
        let mut out = [0; 3];
        for c in 0..3 {
            out[c] =
                ((alpha * colour[c] as u32 + (255 - alpha) * pixel[c] as u32 + 127) / 255) as u8;
        }
        out
    }

    #[test]
    fn div255_rounds_to_nearest_over_every_blend_value() {
        for v in 0..=255 * 255u16 {
            let exact = ((v as u32 + 127) / 255) as u8;
            assert_eq!(div255(v), exact, "{v}");
        }
    }

    /// Each output pixel computed on its own, with no row reused: what `render_into`
    /// must give whatever rows it takes from the row before.
    fn pixel_by_pixel(overlay: &Overlay, frame: &RgbImage, map: &GrayImage) -> RgbImage {
        let filter = overlay.options.filter;
        let columns = taps(map.width(), frame.width(), filter);
        let rows = taps(map.height(), frame.height(), filter);
        let tints = match overlay.options.visualize {
            Visualize::Overlay => &overlay.over_frame,
            _ => &overlay.over_black,
        };
        RgbImage::from_fn(frame.width(), frame.height(), |x, y| {
            let (c, r) = (columns[x as usize], rows[y as usize]);
            let label = |mx: u32, my: u32| &tints[map.get_pixel(mx, my).0[0] as usize];
            let quad = [
                label(c.lo, r.lo),
                label(c.hi, r.lo),
                label(c.lo, r.hi),
                label(c.hi, r.hi),
            ];
            let tint = if quad.iter().all(|t| *t == quad[0]) {
                *quad[0]
            } else {
                bilinear(quad, c.w, r.w)
            };
            let px = match overlay.options.visualize {
                Visualize::Overlay => frame.get_pixel(x, y).0,
                _ => [0; 3],
            };
            Rgb(std::array::from_fn(|i| {
                div255(tint.premul[i] + tint.keep * px[i] as u16)
            }))
        })
    }

    #[test]
    fn spans_and_rows_taken_from_the_row_before_match_each_pixel_computed_alone() {
        let classes = two_classes();
        // Rows repeated (the reuse), rows that differ in one place, and three classes.
        let rows: [[u8; 7]; 6] = [
            [0, 0, 1, 1, 2, 2, 2],
            [0, 0, 1, 1, 2, 2, 2],
            [0, 0, 1, 1, 2, 2, 2],
            [0, 1, 1, 1, 2, 2, 2],
            [2, 2, 2, 0, 0, 1, VOID],
            [2, 2, 2, 0, 0, 1, VOID],
        ];
        let map = GrayImage::from_fn(7, 6, |x, y| Luma([rows[y as usize][x as usize]]));
        // 31 wide: spans shorter than the 16-pixel steps of one tint; 203: longer ones.
        for (w, h) in [(31, 23), (203, 9)] {
            let frame = RgbImage::from_fn(w, h, |x, y| Rgb([(x * 8) as u8, (y * 11) as u8, 77]));
            for filter in [Filter::Linear, Filter::Point] {
                for visualize in [Visualize::Overlay, Visualize::Mask] {
                    let mut overlay = Overlay::new(&classes, options(filter, visualize, 150));
                    let (out, _) = overlay.render(&frame, &map).unwrap();
                    let want = pixel_by_pixel(&overlay, &frame, &map);
                    assert_eq!(out, want, "{w}×{h} {filter:?} {visualize:?}");
                }
            }
        }
    }

    #[test]
    fn interpolated_tints_stay_within_the_16_bit_blend() {
        // Pairs of colours and alphas a border can mix, at every horizontal weight.
        let colours = [[0, 0, 0], [255, 255, 255], [255, 0, 128], [1, 254, 7]];
        let alphas = [0u8, 1, 127, 150, 254, 255];
        let tints: Vec<Tint> = colours
            .iter()
            .flat_map(|&c| alphas.iter().map(move |&a| Tint::new(c, a)))
            .collect();
        for t0 in &tints {
            for t1 in &tints {
                for wx in 0..=ONE {
                    for wy in [0, 1, 37, 64, ONE - 1, ONE] {
                        let t = bilinear([t0, t1, t1, t0], wx, wy);
                        for p in t.premul {
                            assert!(p as u32 + t.keep as u32 * 255 <= 255 * 255, "{t:?}");
                        }
                        // And the blend itself (16-bit overflow panics in test builds).
                        let mut out = [0u8; 3];
                        blend_over(&t.premul, &[t.keep; 3], &[255, 0, 9], &mut out);
                    }
                }
            }
        }
    }

    #[test]
    fn point_overlay_blends_exact_colours_at_alpha_0_150_255() {
        let classes = two_classes();
        for alpha in [0u8, 150, 255] {
            let mut overlay =
                Overlay::new(&classes, options(Filter::Point, Visualize::Overlay, alpha));
            let (out, _) = overlay.render(&grey_frame(4, 4), &map_2x2()).unwrap();
            assert_eq!(out.dimensions(), (4, 4));
            let a = alpha as u32;
            // Each class cell covers a 2×2 block of the frame.
            for (x, y) in [(0, 0), (1, 1)] {
                assert_eq!(out.get_pixel(x, y).0, expected([0, 0, 0], [100; 3], a));
            }
            for (x, y) in [(2, 0), (3, 1)] {
                assert_eq!(out.get_pixel(x, y).0, expected([200, 100, 50], [100; 3], a));
            }
            assert_eq!(out.get_pixel(0, 2).0, expected([10, 250, 0], [100; 3], a));
            // Void stays the frame's pixel.
            assert_eq!(out.get_pixel(3, 3).0, [100, 100, 100]);
        }
        // Once by hand: red (150·200 + 105·100)/255 = 158.8, blue (150·50 + 105·100)/255 = 70.6.
        let mut overlay = Overlay::new(&classes, options(Filter::Point, Visualize::Overlay, 150));
        let (out, _) = overlay.render(&grey_frame(4, 4), &map_2x2()).unwrap();
        assert_eq!(out.get_pixel(2, 0).0, [159, 100, 71]);
    }

    #[test]
    fn alpha_255_is_the_colour_and_0_is_the_frame() {
        let classes = two_classes();
        let frame = RgbImage::from_fn(4, 4, |x, y| Rgb([x as u8 * 40, y as u8 * 30, 7]));
        let mut opaque = Overlay::new(&classes, options(Filter::Point, Visualize::Overlay, 255));
        let (out, _) = opaque.render(&frame, &map_2x2()).unwrap();
        assert_eq!(out.get_pixel(2, 1).0, [200, 100, 50]);
        let mut clear = Overlay::new(&classes, options(Filter::Point, Visualize::Overlay, 0));
        let (out, _) = clear.render(&frame, &map_2x2()).unwrap();
        assert_eq!(out, frame);
    }

    #[test]
    fn ignored_class_stays_unblended_and_black_in_masks() {
        let classes = two_classes();
        let mut opts = options(Filter::Point, Visualize::Overlay, 255);
        opts.ignore_class = Some(1);
        let (out, counts) = Overlay::new(&classes, opts)
            .render(&grey_frame(4, 4), &map_2x2())
            .unwrap();
        assert_eq!(
            out.get_pixel(2, 0).0,
            [100, 100, 100],
            "ignored class: frame"
        );
        assert_eq!(out.get_pixel(0, 2).0, [10, 250, 0], "others still coloured");
        opts.visualize = Visualize::Mask;
        let mut overlay = Overlay::new(&classes, opts);
        let (mask, _) = overlay.render(&grey_frame(4, 4), &map_2x2()).unwrap();
        assert_eq!(mask.get_pixel(2, 0).0, [0, 0, 0]);
        let legend: Vec<u8> = overlay
            .legend(&classes, &counts)
            .iter()
            .map(|p| p.index)
            .collect();
        assert_eq!(legend, vec![0, 2], "the ignored class leaves the legend");
    }

    #[test]
    fn mask_paints_classes_and_void_ignoring_the_frame() {
        let classes = two_classes();
        let mut overlay = Overlay::new(&classes, options(Filter::Point, Visualize::Mask, 150));
        let (out, _) = overlay.render(&grey_frame(4, 4), &map_2x2()).unwrap();
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(3, 0).0, [200, 100, 50]);
        assert_eq!(out.get_pixel(1, 3).0, [10, 250, 0]);
        assert_eq!(out.get_pixel(3, 3).0, VOID_COLOUR);
        // Point filtering at the map's own size is exactly colourize.
        let labels = map_2x2();
        let (same, _) = overlay.render(&grey_frame(2, 2), &labels).unwrap();
        assert_eq!(same, classes.colourize(&labels));
    }

    #[test]
    fn side_by_side_is_frame_then_mask() {
        let classes = two_classes();
        let frame = RgbImage::from_fn(6, 4, |x, y| Rgb([x as u8, y as u8, 99]));
        let mut overlay =
            Overlay::new(&classes, options(Filter::Point, Visualize::SideBySide, 150));
        assert_eq!(overlay.output_size(6, 4), (12, 4));
        let (out, _) = overlay.render(&frame, &map_2x2()).unwrap();
        assert_eq!(out.dimensions(), (12, 4));
        for y in 0..4 {
            for x in 0..6 {
                assert_eq!(out.get_pixel(x, y), frame.get_pixel(x, y));
            }
        }
        assert_eq!(out.get_pixel(6, 0).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(11, 0).0, [200, 100, 50]);
        assert_eq!(out.get_pixel(6, 3).0, [10, 250, 0]);
        assert_eq!(out.get_pixel(11, 3).0, VOID_COLOUR);
    }

    #[test]
    fn linear_filter_blends_across_borders_and_keeps_interiors_exact() {
        let classes = two_classes();
        // Left half background, right half "thing", upsampled 8×.
        let map = GrayImage::from_fn(4, 2, |x, _| Luma([if x < 2 { 0 } else { 1 }]));
        let mut overlay = Overlay::new(&classes, options(Filter::Linear, Visualize::Mask, 150));
        let (out, _) = overlay.render(&grey_frame(32, 16), &map).unwrap();
        assert_eq!(out.get_pixel(0, 8).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(31, 8).0, [200, 100, 50]);
        // Red rises monotonically across the border and takes intermediate values there.
        let reds: Vec<u8> = (0..32).map(|x| out.get_pixel(x, 8).0[0]).collect();
        assert!(reds.windows(2).all(|w| w[0] <= w[1]), "{reds:?}");
        assert!(reds.iter().any(|&r| r > 20 && r < 180), "{reds:?}");
        // Point filtering at the same size has only the two colours.
        let mut point = Overlay::new(&classes, options(Filter::Point, Visualize::Mask, 150));
        let (hard, _) = point.render(&grey_frame(32, 16), &map).unwrap();
        assert!(hard
            .pixels()
            .all(|p| p.0 == [0, 0, 0] || p.0 == [200, 100, 50]));
    }

    #[test]
    fn counts_are_of_the_class_map_not_the_frame() {
        let classes = two_classes();
        let map = GrayImage::from_raw(4, 1, vec![1, 1, VOID, 1]).unwrap();
        let mut overlay = Overlay::new(&classes, OverlayOptions::default());
        let (_, counts) = overlay.render(&grey_frame(8, 8), &map).unwrap();
        assert_eq!(counts, ClassCounts::of(&map));
        assert_eq!(counts.total(), 4);
    }

    #[test]
    fn point_mask_is_the_colourized_resampled_label_map() {
        // Sizes that do not divide: the overlay's nearest class is resample_labels'.
        let classes = two_classes();
        let map = GrayImage::from_fn(5, 3, |x, y| Luma([[0, 1, 2, VOID][(x + y) as usize % 4]]));
        let mut overlay = Overlay::new(&classes, options(Filter::Point, Visualize::Mask, 150));
        for (w, h) in [(7, 5), (13, 4), (3, 2), (5, 3)] {
            let (mask, _) = overlay.render(&grey_frame(w, h), &map).unwrap();
            let labels = resample_labels(&map, w, h, Filter::Point);
            assert_eq!(mask, classes.colourize(&labels), "{w}×{h}");
        }
    }

    #[test]
    fn empty_inputs_are_refused_and_sizes_can_change() {
        let classes = two_classes();
        let mut overlay = Overlay::new(&classes, OverlayOptions::default());
        let err = overlay
            .render(&grey_frame(0, 0), &map_2x2())
            .unwrap_err()
            .to_string();
        assert!(err.contains("0×0"), "{err}");
        assert!(overlay
            .render(&grey_frame(4, 4), &GrayImage::new(0, 3))
            .is_err());
        let mut out = RgbImage::new(0, 0);
        overlay
            .render_into(&grey_frame(5, 3), &map_2x2(), &mut out)
            .unwrap();
        assert_eq!(out.dimensions(), (5, 3));
        overlay
            .render_into(&grey_frame(7, 9), &map_2x2(), &mut out)
            .unwrap();
        assert_eq!(out.dimensions(), (7, 9));
    }

    #[test]
    fn labels_beyond_the_list_are_treated_as_void() {
        let classes = two_classes();
        let map = GrayImage::from_raw(2, 1, vec![1, 7]).unwrap();
        let mut overlay = Overlay::new(&classes, options(Filter::Point, Visualize::Overlay, 255));
        let (out, counts) = overlay.render(&grey_frame(2, 1), &map).unwrap();
        assert_eq!(out.get_pixel(1, 0).0, [100, 100, 100]);
        assert_eq!(counts.present(&classes).len(), 1);
    }
}
