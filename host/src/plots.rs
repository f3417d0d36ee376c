//! PNG figures written after training: learning curves, a d2l-style grid of
//! predictions and a confusion-matrix heat map.
//!
//! Nothing depends on system fonts or fontconfig: text is rasterised with
//! `ab_glyph` from Noto Sans bundled by the `ttf-noto-sans` crate. Curves use
//! `plotters`' bitmap backend for axes and lines; titles, captions and legends
//! are drawn by [`draw_label`] afterwards because plotters' ab_glyph text
//! snaps every glyph to whole pixels, which makes small text look uneven.
//! PNGs are encoded with the workspace's `image` crate (plotters' own encoder
//! would pull in a second `image` version).

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use anyhow::{anyhow, bail, ensure, Context};
use image::{Rgb, RgbImage};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::atomic;

/// One row per epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochPoint {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_acc: f64,
    pub val_miou: f64,
}

/// Gap in pixels between (and around) the tiles of [`prediction_grid`].
pub const GRID_GAP: u32 = 4;
/// Height in pixels of the column header of [`prediction_grid`].
pub const GRID_HEADER: u32 = 28;
/// Width and height of the learning-curve figure.
pub const CURVES_SIZE: (u32, u32) = (1200, 500);

const TEXT: [u8; 3] = [33, 33, 33];
const MUTED: [u8; 3] = [90, 90, 90];
const GRID_LINE: RGBColor = RGBColor(225, 225, 225);
const FRAME: [u8; 3] = [120, 120, 120];
// matplotlib's tab10, familiar from most training plots.
const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const RED: RGBColor = RGBColor(214, 39, 40);

/// plotters' chart defaults ask for "sans-serif", so the font goes there.
const PLOTTERS_FAMILY: &str = "sans-serif";

struct Fonts {
    regular: FontRef<'static>,
    bold: FontRef<'static>,
}

/// Parses the bundled fonts once per process and registers the regular one
/// with plotters (which keeps a global table) for tick labels.
fn fonts() -> anyhow::Result<&'static Fonts> {
    static FONTS: OnceLock<Result<Fonts, String>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            let parse = |bytes: &'static [u8], what: &str| {
                FontRef::try_from_slice(bytes).map_err(|e| format!("bundled {what}: {e}"))
            };
            let fonts = Fonts {
                regular: parse(ttf_noto_sans::REGULAR, "Noto Sans Regular")?,
                bold: parse(ttf_noto_sans::BOLD, "Noto Sans Bold")?,
            };
            plotters::style::register_font(
                PLOTTERS_FAMILY,
                FontStyle::Normal,
                ttf_noto_sans::REGULAR,
            )
            .map_err(|_| "plotters rejected the bundled font".to_string())?;
            Ok(fonts)
        })
        .as_ref()
        .map_err(|e| anyhow!("loading fonts: {e}"))
}

#[derive(Clone, Copy, PartialEq)]
enum Weight {
    Regular,
    Bold,
}

/// Where the anchor point sits on the text: start/middle/end of the advance
/// horizontally; top of the ascender, middle of the capitals (looks centred
/// whatever the letters) or bottom of the descender vertically.
#[derive(Clone, Copy)]
enum Anchor {
    Start,
    Middle,
    End,
}

/// A line of text to draw on a finished bitmap.
struct Label {
    text: String,
    pos: (f32, f32),
    size: f32,
    weight: Weight,
    color: [u8; 3],
    h: Anchor,
    v: Anchor,
    /// Rotated a quarter turn anticlockwise (reads bottom to top).
    vertical: bool,
}

impl Label {
    /// Centred on `pos`, regular weight, body colour.
    fn new(text: impl Into<String>, pos: (i32, i32), size: f32) -> Self {
        Label {
            text: text.into(),
            pos: (pos.0 as f32, pos.1 as f32),
            size,
            weight: Weight::Regular,
            color: TEXT,
            h: Anchor::Middle,
            v: Anchor::Middle,
            vertical: false,
        }
    }
    fn bold(mut self) -> Self {
        self.weight = Weight::Bold;
        self
    }
    fn color(mut self, color: [u8; 3]) -> Self {
        self.color = color;
        self
    }
    fn anchor(mut self, h: Anchor, v: Anchor) -> Self {
        self.h = h;
        self.v = v;
        self
    }
    fn vertical(mut self) -> Self {
        self.vertical = true;
        self
    }
}

fn font_for(fonts: &Fonts, weight: Weight) -> &FontRef<'static> {
    match weight {
        Weight::Regular => &fonts.regular,
        Weight::Bold => &fonts.bold,
    }
}

/// Advance width of `text` in pixels.
fn text_width(fonts: &Fonts, text: &str, size: f32, weight: Weight) -> f32 {
    let font = font_for(fonts, weight).as_scaled(PxScale::from(size));
    let mut width = 0.0;
    let mut prev = None;
    for ch in text.chars() {
        let id = font.glyph_id(ch);
        if let Some(p) = prev {
            width += font.kern(p, id);
        }
        width += font.h_advance(id);
        prev = Some(id);
    }
    width
}

/// Rasterises `label` onto `img` with sub-pixel glyph positions, blending
/// coverage into what is already there. Pixels outside the image are dropped.
fn draw_label(img: &mut RgbImage, fonts: &Fonts, label: &Label) {
    let font = font_for(fonts, label.weight);
    let scale = PxScale::from(label.size);
    let scaled = font.as_scaled(scale);
    let width = text_width(fonts, &label.text, label.size, label.weight);
    let cap = font
        .outline_glyph(scaled.scaled_glyph('H'))
        .map_or(label.size * 0.5, |g| -g.px_bounds().min.y);
    // Offsets from the anchor to the start of the baseline, in text space.
    let dx = match label.h {
        Anchor::Start => 0.0,
        Anchor::Middle => -width / 2.0,
        Anchor::End => -width,
    };
    let dy = match label.v {
        Anchor::Start => scaled.ascent(),
        Anchor::Middle => cap / 2.0,
        Anchor::End => scaled.descent(),
    };
    // Horizontal text is laid out at its final position so ab_glyph keeps the
    // fractional offsets; vertical text is laid out around the origin and
    // each pixel is turned a quarter about the anchor.
    let origin = if label.vertical {
        (dx, dy)
    } else {
        (label.pos.0 + dx, label.pos.1 + dy)
    };
    let (w, h) = (img.width() as i64, img.height() as i64);
    let mut caret = origin.0;
    let mut prev = None;
    for ch in label.text.chars() {
        let id = scaled.glyph_id(ch);
        if let Some(p) = prev {
            caret += scaled.kern(p, id);
        }
        prev = Some(id);
        let glyph = id.with_scale_and_position(scale, point(caret, origin.1));
        caret += scaled.h_advance(id);
        let Some(outline) = font.outline_glyph(glyph) else {
            continue;
        };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, coverage| {
            let lx = bounds.min.x as i64 + gx as i64;
            let ly = bounds.min.y as i64 + gy as i64;
            let (x, y) = if label.vertical {
                (label.pos.0 as i64 + ly, label.pos.1 as i64 - lx)
            } else {
                (lx, ly)
            };
            if x < 0 || y < 0 || x >= w || y >= h {
                return;
            }
            let a = coverage.clamp(0.0, 1.0);
            let px = img.get_pixel_mut(x as u32, y as u32);
            for (dst, src) in px.0.iter_mut().zip(label.color) {
                *dst = (*dst as f32 * (1.0 - a) + src as f32 * a).round() as u8;
            }
        });
    }
}

fn fill_rect(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, color: [u8; 3]) {
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            img.put_pixel(xx, yy, Rgb(color));
        }
    }
}

/// One-pixel outline of the rectangle `(x, y, w, h)`.
fn frame_rect(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, color: [u8; 3]) {
    fill_rect(img, x, y, w, 1, color);
    fill_rect(img, x, y + h - 1, w, 1, color);
    fill_rect(img, x, y, 1, h, color);
    fill_rect(img, x + w - 1, y, 1, h, color);
}

/// plotters' errors are generic over the backend; flatten them to text.
fn draw_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e}")
}

/// Encodes `img` as PNG and writes it to `path` atomically.
fn write_png_atomic(img: &RgbImage, path: &Path) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .with_context(|| format!("encoding PNG for {}", path.display()))?;
    atomic::write(path, &bytes)
}

/// The smallest 1, 2 or 5 times a power of ten that splits `span` into at
/// most `max_intervals` intervals.
fn nice_step(span: f64, max_intervals: f64) -> f64 {
    let rough = (span / max_intervals).max(f64::MIN_POSITIVE);
    let base = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * base)
        .find(|&step| span / step <= max_intervals + 1e-9)
        .unwrap_or(10.0 * base)
}

/// Decimals needed to print multiples of `step` exactly.
fn decimals_for(step: f64) -> usize {
    (-step.log10().floor()).max(0.0) as usize
}

/// Whole epochs for the x axis, at most ~10 of them, so labels never show
/// fractions.
fn epoch_ticks(lo: usize, hi: usize) -> Vec<f64> {
    let step = (nice_step((hi - lo) as f64, 10.0) as usize).max(1);
    let first = lo.div_ceil(step) * step;
    (first..=hi).step_by(step).map(|e| e as f64).collect()
}

/// Linear f64 axis with ticks chosen here. plotters' own f64 axis picks
/// fractional epochs (0.5, 1.5) and its `with_key_points` wrapper loses the
/// formatter the mesh needs, so this small axis type does both.
#[derive(Clone)]
struct TickAxis {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl TickAxis {
    /// `lo..hi` widened to whole steps, ticks on every step.
    fn nice(lo: f64, hi: f64, max_intervals: f64) -> (Self, usize) {
        let hi = if hi > lo { hi } else { lo + 1.0 };
        let step = nice_step(hi - lo, max_intervals);
        let (a, b) = ((lo / step).floor() as i64, (hi / step).ceil() as i64);
        let ticks = (a..=b).map(|k| k as f64 * step).collect();
        let axis = TickAxis {
            range: a as f64 * step..b as f64 * step,
            ticks,
        };
        (axis, decimals_for(step))
    }
}

impl Ranged for TickAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let t = (value - self.range.start) / (self.range.end - self.range.start);
        limit.0 + (t * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Bold grid lines only: light ones in between would be noise.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

struct Series {
    name: &'static str,
    color: RGBColor,
    data: Vec<(f64, f64)>,
}

/// One chart panel: everything plotters draws goes to `root`; text is queued
/// in `labels` (absolute pixel positions) for [`draw_label`].
struct Panel<'a> {
    caption: &'a str,
    y_desc: &'a str,
    y_axis: TickAxis,
    y_decimals: usize,
    series: &'a [Series],
    legend_at_top: bool,
}

fn draw_panel(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    x_axis: TickAxis,
    marker: u32,
    panel: &Panel<'_>,
    fonts: &Fonts,
    labels: &mut Vec<Label>,
) -> anyhow::Result<()> {
    let y_decimals = panel.y_decimals;
    let mut chart = ChartBuilder::on(area)
        .margin_top(40)
        .margin_left(12)
        .margin_right(24)
        .margin_bottom(8)
        .x_label_area_size(52)
        .y_label_area_size(72)
        .build_cartesian_2d(x_axis, panel.y_axis.clone())
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.y_decimals$}"))
        .label_style(
            (PLOTTERS_FAMILY, 14)
                .into_font()
                .color(&RGBColor(90, 90, 90)),
        )
        .bold_line_style(GRID_LINE)
        .axis_style(RGBColor(FRAME[0], FRAME[1], FRAME[2]))
        .draw()
        .map_err(draw_err)?;
    for s in panel.series {
        chart
            .draw_series(LineSeries::new(s.data.clone(), s.color.stroke_width(2)))
            .map_err(draw_err)?;
        if marker > 0 {
            chart
                .draw_series(
                    s.data
                        .iter()
                        .map(|&p| Circle::new(p, marker, s.color.filled())),
                )
                .map_err(draw_err)?;
        }
    }

    let (xr, yr) = chart.plotting_area().get_pixel_range();
    let mid_x = (xr.start + xr.end) / 2;
    labels.push(Label::new(panel.caption, (mid_x, yr.start - 20), 17.0));
    labels.push(Label::new("epoch", (mid_x, yr.end + 38), 15.0));
    // The axis title sits just left of the widest tick label.
    let tick_w = panel
        .y_axis
        .ticks
        .iter()
        .map(|t| text_width(fonts, &format!("{t:.y_decimals$}"), 14.0, Weight::Regular))
        .fold(0.0, f32::max)
        .ceil() as i32;
    let y_desc_x = xr.start - 14 - tick_w - 14;
    labels.push(Label::new(panel.y_desc, (y_desc_x, (yr.start + yr.end) / 2), 15.0).vertical());

    // Legend: a framed box in a corner the curves tend to leave free.
    let size = 14.0;
    let text_w = panel
        .series
        .iter()
        .map(|s| text_width(fonts, s.name, size, Weight::Regular))
        .fold(0.0, f32::max)
        .ceil() as i32;
    let row_h = 22;
    let (box_w, box_h) = (
        12 + 26 + 8 + text_w + 12,
        8 + row_h * panel.series.len() as i32,
    );
    let bx = xr.end - 12 - box_w;
    let by = if panel.legend_at_top {
        yr.start + 12
    } else {
        yr.end - 12 - box_h
    };
    root.draw(&Rectangle::new(
        [(bx, by), (bx + box_w, by + box_h)],
        WHITE.mix(0.9).filled(),
    ))
    .map_err(draw_err)?;
    root.draw(&Rectangle::new(
        [(bx, by), (bx + box_w, by + box_h)],
        RGBColor(200, 200, 200).stroke_width(1),
    ))
    .map_err(draw_err)?;
    for (i, s) in panel.series.iter().enumerate() {
        let cy = by + 4 + row_h * i as i32 + row_h / 2;
        root.draw(&PathElement::new(
            [(bx + 12, cy), (bx + 38, cy)],
            s.color.stroke_width(2),
        ))
        .map_err(draw_err)?;
        if marker > 0 {
            root.draw(&Circle::new((bx + 25, cy), marker, s.color.filled()))
                .map_err(draw_err)?;
        }
        labels.push(Label::new(s.name, (bx + 46, cy), size).anchor(Anchor::Start, Anchor::Middle));
    }
    Ok(())
}

/// Training loss (left) and train/val pixel accuracy and val mIoU (right),
/// one point per epoch, in a [`CURVES_SIZE`] image. Non-finite values (a
/// diverged loss, a skipped validation) are left out rather than failing the
/// whole figure.
pub fn plot_curves(points: &[EpochPoint], path: &Path) -> anyhow::Result<()> {
    let img = render_curves(points).with_context(|| format!("plotting {}", path.display()))?;
    write_png_atomic(&img, path)
}

fn render_curves(points: &[EpochPoint]) -> anyhow::Result<RgbImage> {
    ensure!(!points.is_empty(), "no epochs to plot");
    let fonts = fonts()?;
    let mut points = points.to_vec();
    points.sort_by_key(|p| p.epoch);
    let (lo, hi) = (points[0].epoch, points[points.len() - 1].epoch);
    // Half an epoch (or 2 % of the span) of air so edge markers are not cut.
    let pad = (((hi - lo) as f64) * 0.02).max(0.5);
    let x_axis = TickAxis {
        range: (lo as f64 - pad)..(hi as f64 + pad),
        ticks: epoch_ticks(lo, hi),
    };
    // Markers help to read short runs and are the only mark for one epoch.
    let marker = match points.len() {
        1 => 5,
        2..=40 => 3,
        _ => 0,
    };

    let finite = |f: fn(&EpochPoint) -> f64| -> Vec<(f64, f64)> {
        points
            .iter()
            .map(|p| (p.epoch as f64, f(p)))
            .filter(|(_, v)| v.is_finite())
            .collect()
    };
    let loss = [Series {
        name: "train loss",
        color: RED,
        data: finite(|p| p.train_loss),
    }];
    let max_loss = loss[0].data.iter().map(|&(_, v)| v).fold(0.0, f64::max);
    let min_loss = loss[0].data.iter().map(|&(_, v)| v).fold(0.0, f64::min);
    let (loss_axis, loss_decimals) = TickAxis::nice(min_loss, max_loss, 8.0);
    let metrics = [
        Series {
            name: "train pixel acc",
            color: BLUE,
            data: finite(|p| p.train_acc),
        },
        Series {
            name: "val pixel acc",
            color: ORANGE,
            data: finite(|p| p.val_acc),
        },
        Series {
            name: "val mIoU",
            color: GREEN,
            data: finite(|p| p.val_miou),
        },
    ];
    let (metric_axis, metric_decimals) = TickAxis::nice(0.0, 1.0, 10.0);

    let epochs = match points.len() {
        1 => "1 epoch".to_string(),
        n => format!("{n} epochs"),
    };
    let best = points
        .iter()
        .filter(|p| p.val_miou.is_finite())
        .max_by(|a, b| a.val_miou.total_cmp(&b.val_miou));
    let title = match best {
        Some(b) => format!(
            "Training curves: {epochs}, best val mIoU {:.3} at epoch {}",
            b.val_miou, b.epoch
        ),
        None => format!("Training curves: {epochs}"),
    };

    let (width, height) = CURVES_SIZE;
    let mut labels = vec![Label::new(title, (width as i32 / 2, 24), 21.0).bold()];
    let mut buf = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        let body = root.margin(44, 0, 0, 0);
        let halves = body.split_evenly((1, 2));
        let panels = [
            Panel {
                caption: "Training loss",
                y_desc: "loss",
                y_axis: loss_axis,
                y_decimals: loss_decimals,
                series: &loss,
                // Loss falls to the lower right; the upper right is free.
                legend_at_top: true,
            },
            Panel {
                caption: "Pixel accuracy and mIoU",
                y_desc: "fraction (0 to 1)",
                y_axis: metric_axis,
                y_decimals: metric_decimals,
                series: &metrics,
                // Accuracy climbs to the upper right; the lower right is free.
                legend_at_top: false,
            },
        ];
        for (area, panel) in halves.iter().zip(&panels) {
            draw_panel(
                &root,
                area,
                x_axis.clone(),
                marker,
                panel,
                fonts,
                &mut labels,
            )?;
        }
        root.present().map_err(draw_err)?;
    }
    let mut img = RgbImage::from_raw(width, height, buf).context("canvas has the wrong size")?;
    for label in &labels {
        draw_label(&mut img, fonts, label);
    }
    Ok(img)
}

/// The d2l figure: one row per example, columns image | prediction | ground
/// truth, under a header naming the columns.
///
/// The three images of a row must have equal sizes; rows may differ (columns
/// are as wide as the widest row, tiles sit at the top left of their cell).
/// Tile `(r, c)` starts at `x = GRID_GAP + c * (col_w + GRID_GAP)`,
/// `y = GRID_HEADER + sum over earlier rows of (h + GRID_GAP)`, so the image
/// is `GRID_GAP + 3 * (col_w + GRID_GAP)` wide and
/// `GRID_HEADER + sum of (h + GRID_GAP)` high.
pub fn prediction_grid(rows: &[[RgbImage; 3]], path: &Path) -> anyhow::Result<()> {
    let img = render_grid(rows).with_context(|| format!("drawing grid {}", path.display()))?;
    write_png_atomic(&img, path)
}

fn render_grid(rows: &[[RgbImage; 3]]) -> anyhow::Result<RgbImage> {
    ensure!(!rows.is_empty(), "no rows to draw");
    for (i, row) in rows.iter().enumerate() {
        let dims = row[0].dimensions();
        ensure!(dims.0 > 0 && dims.1 > 0, "row {i}: empty image");
        for (c, tile) in row.iter().enumerate().skip(1) {
            ensure!(
                tile.dimensions() == dims,
                "row {i}: tile {c} is {:?} but the image is {dims:?}",
                tile.dimensions()
            );
        }
    }
    let fonts = fonts()?;
    let col_w = rows.iter().map(|r| r[0].width()).max().unwrap_or(0);
    let width = GRID_GAP + 3 * (col_w + GRID_GAP);
    let height = GRID_HEADER + rows.iter().map(|r| r[0].height() + GRID_GAP).sum::<u32>();
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));

    // Header first; tiles are copied afterwards so text can never touch them.
    let (names, size) = header_labels(fonts, col_w);
    for (c, name) in names.iter().enumerate() {
        let x = GRID_GAP + c as u32 * (col_w + GRID_GAP) + col_w / 2;
        let label = Label::new(*name, (x as i32, (GRID_HEADER as i32 - 2) / 2), size).bold();
        draw_label(&mut canvas, fonts, &label);
    }
    let mut y = GRID_HEADER;
    for row in rows {
        for (c, tile) in row.iter().enumerate() {
            let x = GRID_GAP + c as u32 * (col_w + GRID_GAP);
            image::imageops::replace(&mut canvas, tile, x.into(), y.into());
        }
        y += row[0].height() + GRID_GAP;
    }
    Ok(canvas)
}

/// Column names and a font size at which the widest fits a column; narrow
/// tiles get abbreviations rather than overlapping text.
fn header_labels(fonts: &Fonts, col_w: u32) -> ([&'static str; 3], f32) {
    let choices = [
        (["image", "prediction", "ground truth"], 11),
        (["img", "pred", "gt"], 7),
    ];
    for (names, min_size) in choices {
        for size in (min_size..=16).rev() {
            let size = size as f32;
            let widest = names
                .iter()
                .map(|n| text_width(fonts, n, size, Weight::Bold))
                .fold(0.0, f32::max);
            if widest + 4.0 <= col_w as f32 {
                return (names, size);
            }
        }
    }
    (["", "", ""], 7.0)
}

/// matplotlib's "Blues" colour map at `t` in 0..=1.
fn blues(t: f64) -> [u8; 3] {
    const STOPS: [[u8; 3]; 9] = [
        [247, 251, 255],
        [222, 235, 247],
        [198, 219, 239],
        [158, 202, 225],
        [107, 174, 214],
        [66, 146, 198],
        [33, 113, 181],
        [8, 81, 156],
        [8, 48, 107],
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    [0, 1, 2].map(|k| (a[k] as f64 + (b[k] as f64 - a[k] as f64) * f).round() as u8)
}

/// Confusion matrix heat map: row = ground truth, column = prediction, each
/// row normalised to sum to 1. Rows with no ground-truth pixels are grey.
/// Cell values are printed for up to 25 classes.
pub fn confusion_png(
    matrix: &[Vec<u64>],
    class_names: &[String],
    path: &Path,
) -> anyhow::Result<()> {
    let img = render_confusion(matrix, class_names)
        .with_context(|| format!("drawing confusion matrix {}", path.display()))?;
    write_png_atomic(&img, path)
}

fn render_confusion(matrix: &[Vec<u64>], class_names: &[String]) -> anyhow::Result<RgbImage> {
    let n = matrix.len();
    ensure!(n > 0, "empty confusion matrix");
    for (i, row) in matrix.iter().enumerate() {
        ensure!(
            row.len() == n,
            "row {i} has {} entries, expected {n}",
            row.len()
        );
    }
    if class_names.len() != n {
        bail!("{} class names for a {n}x{n} matrix", class_names.len());
    }
    let fonts = fonts()?;

    let normalised: Vec<Option<Vec<f64>>> = matrix
        .iter()
        .map(|row| {
            let total: u64 = row.iter().sum();
            (total > 0).then(|| row.iter().map(|&c| c as f64 / total as f64).collect())
        })
        .collect();

    let cell = (640 / n as u32).clamp(14, 72);
    let show_values = n <= 25;
    let value_size = (cell as f32 * 0.34).clamp(8.0, 16.0);
    let label_size = (cell as f32 * 0.75).clamp(9.0, 15.0);
    let label_w = class_names
        .iter()
        .map(|s| text_width(fonts, s, label_size, Weight::Regular))
        .fold(0.0, f32::max)
        .ceil() as u32;
    // Column names turn vertical when any would be wider than its cell.
    let rotate = label_w + 4 > cell;

    let title = "Confusion matrix (rows normalised)";
    let title_size = 20.0;
    let (title_h, axis_band, gap) = (48, 32, 8);
    let left = axis_band + label_w + gap;
    let grid = cell * n as u32;
    let bottom =
        gap + if rotate {
            label_w
        } else {
            label_size as u32 + 6
        } + axis_band
            + 8;
    let (bar_gap, bar_w) = (24, 18);
    let bar_text = text_width(fonts, "1.0", 13.0, Weight::Regular).ceil() as u32;
    let right = bar_gap + bar_w + 6 + bar_text + 16;
    // Keep the title inside the picture even for a tiny matrix.
    let title_w = text_width(fonts, title, title_size, Weight::Bold).ceil() as u32 + 24;
    let width = (left + grid + right).max(title_w);
    let height = title_h + grid + bottom;
    let (x0, y0) = (left, title_h);
    let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));

    let mut labels = vec![Label::new(title, (width as i32 / 2, 24), title_size).bold()];
    for (r, row) in normalised.iter().enumerate() {
        for c in 0..n {
            let (x, y) = (x0 + c as u32 * cell, y0 + r as u32 * cell);
            let Some(values) = row else {
                fill_rect(&mut img, x, y, cell, cell, [215, 215, 215]);
                continue;
            };
            let v = values[c];
            fill_rect(&mut img, x, y, cell, cell, blues(v));
            if show_values {
                // Exact zeros stay quiet so the real confusions stand out.
                let text = if matrix[r][c] == 0 {
                    "0".to_string()
                } else {
                    format!("{v:.2}")
                };
                let color = if v > 0.5 { [255, 255, 255] } else { TEXT };
                let centre = ((x + cell / 2) as i32, (y + cell / 2) as i32);
                labels.push(Label::new(text, centre, value_size).color(color));
            }
        }
    }
    // Thin white lines between cells read better than dark borders.
    for k in 1..n as u32 {
        fill_rect(&mut img, x0 + k * cell, y0, 1, grid, [255, 255, 255]);
        fill_rect(&mut img, x0, y0 + k * cell, grid, 1, [255, 255, 255]);
    }
    frame_rect(&mut img, x0 - 1, y0 - 1, grid + 2, grid + 2, FRAME);

    for (i, name) in class_names.iter().enumerate() {
        let mid = (i as u32 * cell + cell / 2) as i32;
        labels.push(
            Label::new(
                name.as_str(),
                (x0 as i32 - gap as i32, y0 as i32 + mid),
                label_size,
            )
            .anchor(Anchor::End, Anchor::Middle),
        );
        let below = (y0 + grid + gap) as i32;
        let column = Label::new(name.as_str(), (x0 as i32 + mid, below), label_size);
        labels.push(if rotate {
            // Reads upwards, ending just under its column.
            column.anchor(Anchor::End, Anchor::Middle).vertical()
        } else {
            column.anchor(Anchor::Middle, Anchor::Start)
        });
    }
    let axis_size = 16.0;
    let x_title_y = (height - 8 - axis_band / 2) as i32;
    labels.push(Label::new(
        "prediction",
        ((x0 + grid / 2) as i32, x_title_y),
        axis_size,
    ));
    labels.push(
        Label::new(
            "ground truth",
            ((axis_band / 2) as i32, (y0 + grid / 2) as i32),
            axis_size,
        )
        .vertical(),
    );

    // Colour bar: 1 at the top, 0 at the bottom.
    let bx = x0 + grid + bar_gap;
    for k in 0..grid {
        let t = 1.0 - k as f64 / (grid - 1).max(1) as f64;
        fill_rect(&mut img, bx, y0 + k, bar_w, 1, blues(t));
    }
    frame_rect(&mut img, bx - 1, y0 - 1, bar_w + 2, grid + 2, FRAME);
    for (t, text) in [(0.0, "0.0"), (0.5, "0.5"), (1.0, "1.0")] {
        let y = y0 as i32 + ((1.0 - t) * (grid - 1) as f64).round() as i32;
        fill_rect(&mut img, bx + bar_w, y as u32, 4, 1, FRAME);
        labels.push(
            Label::new(text, ((bx + bar_w + 7) as i32, y), 13.0)
                .color(MUTED)
                .anchor(Anchor::Start, Anchor::Middle),
        );
    }

    for label in &labels {
        draw_label(&mut img, fonts, label);
    }
    Ok(img)
}

/// One bar of [`plot_bars`]: a median with its spread (p10–p90).
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub median: f64,
    pub low: f64,
    pub high: f64,
}

/// A titled group of bars sharing one scale and unit.
#[derive(Debug, Clone, PartialEq)]
pub struct BarPanel {
    pub title: String,
    pub unit: String,
    pub bars: Vec<Bar>,
}

const BARS_WIDTH: u32 = 1200;
const BAR_ROW: u32 = 40;
const PANEL_HEAD: u32 = 56;
const BAR_LABELS: u32 = 330;

/// Horizontal bar charts, one panel under the other, each bar its median with a
/// whisker for its spread and the value written after it (the benchmark's figure).
pub fn plot_bars(title: &str, panels: &[BarPanel], path: &Path) -> anyhow::Result<()> {
    let fonts = fonts()?;
    let height = 70
        + panels
            .iter()
            .map(|p| PANEL_HEAD + BAR_ROW * p.bars.len() as u32 + 20)
            .sum::<u32>();
    let mut img = RgbImage::from_pixel(BARS_WIDTH, height, Rgb([255, 255, 255]));
    draw_label(
        &mut img,
        fonts,
        &Label::new(title, (BARS_WIDTH as i32 / 2, 34), 24.0).bold(),
    );
    let colours = [BLUE, ORANGE, GREEN, RED];
    let area = BARS_WIDTH - BAR_LABELS - 150;
    let mut y = 70;
    for panel in panels {
        draw_label(
            &mut img,
            fonts,
            &Label::new(&panel.title, (24, y as i32 + 20), 19.0)
                .bold()
                .anchor(Anchor::Start, Anchor::Middle),
        );
        y += PANEL_HEAD;
        let top = panel
            .bars
            .iter()
            .map(|b| b.high.max(b.median))
            .fold(0.0f64, f64::max)
            .max(f64::MIN_POSITIVE);
        let scale = |v: f64| ((v / top).clamp(0.0, 1.0) * area as f64).round() as u32;
        for (i, bar) in panel.bars.iter().enumerate() {
            let mid = y + BAR_ROW / 2;
            draw_label(
                &mut img,
                fonts,
                &Label::new(&bar.label, (BAR_LABELS as i32 - 12, mid as i32), 16.0)
                    .anchor(Anchor::End, Anchor::Middle),
            );
            let RGBColor(r, g, b) = colours[i % colours.len()];
            let width = scale(bar.median).max(1);
            fill_rect(&mut img, BAR_LABELS, y + 8, width, BAR_ROW - 16, [r, g, b]);
            let (low, high) = (scale(bar.low), scale(bar.high));
            if high > low {
                fill_rect(&mut img, BAR_LABELS + low, mid - 1, high - low, 2, TEXT);
                fill_rect(&mut img, BAR_LABELS + low, mid - 7, 1, 14, TEXT);
                fill_rect(&mut img, BAR_LABELS + high - 1, mid - 7, 1, 14, TEXT);
            }
            let value = format!("{} {}", significant(bar.median), panel.unit);
            draw_label(
                &mut img,
                fonts,
                &Label::new(
                    value,
                    ((BAR_LABELS + width.max(high) + 10) as i32, mid as i32),
                    16.0,
                )
                .color(MUTED)
                .anchor(Anchor::Start, Anchor::Middle),
            );
            y += BAR_ROW;
        }
        y += 20;
    }
    write_png_atomic(&img, path)
}

/// Three significant figures, the way a table of timings reads.
fn significant(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::fs;

    fn distinct_colours(img: &RgbImage) -> usize {
        img.pixels().map(|p| p.0).collect::<HashSet<_>>().len()
    }

    fn load(path: &Path) -> RgbImage {
        image::open(path).expect("PNG decodes").to_rgb8()
    }

    fn no_temp_files_left(dir: &Path) {
        let names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    fn epochs(n: usize) -> Vec<EpochPoint> {
        (1..=n)
            .map(|e| {
                let t = e as f64 / n as f64;
                EpochPoint {
                    epoch: e,
                    train_loss: 2.0 * (-2.0 * t).exp() + 0.1,
                    train_acc: 0.5 + 0.45 * t,
                    val_acc: 0.45 + 0.4 * t,
                    val_miou: 0.1 + 0.5 * t,
                }
            })
            .collect()
    }

    #[test]
    fn curves_for_one_and_ten_epochs() {
        let dir = tempfile::tempdir().unwrap();
        for n in [1, 10] {
            let path = dir.path().join(format!("curves{n}.png"));
            plot_curves(&epochs(n), &path).unwrap();
            let img = load(&path);
            assert_eq!(img.dimensions(), CURVES_SIZE);
            assert!(distinct_colours(&img) > 50, "n={n}: looks blank");
            // Every series colour shows up (lines or markers).
            for colour in [RED, BLUE, ORANGE, GREEN] {
                let rgb = [colour.0, colour.1, colour.2];
                assert!(img.pixels().any(|p| p.0 == rgb), "n={n}: no {rgb:?}");
            }
        }
        no_temp_files_left(dir.path());
    }

    #[test]
    fn curves_skip_non_finite_values_and_reject_empty_input() {
        let dir = tempfile::tempdir().unwrap();
        let mut points = epochs(5);
        points[3].train_loss = f64::NAN;
        points[4].val_miou = f64::INFINITY;
        let path = dir.path().join("nan.png");
        plot_curves(&points, &path).unwrap();
        assert_eq!(load(&path).dimensions(), CURVES_SIZE);

        let empty = dir.path().join("empty.png");
        let err = plot_curves(&[], &empty).unwrap_err();
        assert!(format!("{err:#}").contains("empty.png"), "{err:#}");
        assert!(!empty.exists());
    }

    #[test]
    fn ticks_are_round_and_few() {
        assert_eq!(epoch_ticks(3, 3), vec![3.0]);
        assert_eq!(
            epoch_ticks(1, 10),
            (1..=10).map(f64::from).collect::<Vec<_>>()
        );
        let t = epoch_ticks(0, 137);
        assert!((5..=11).contains(&t.len()), "{t:?}");
        assert!(t.iter().all(|v| v.fract() == 0.0));

        let (axis, decimals) = TickAxis::nice(0.0, 1.62, 8.0);
        assert_eq!(decimals, 1);
        assert!(axis.range.start == 0.0 && axis.range.end >= 1.62);
        assert!(axis.ticks.len() <= 9, "{:?}", axis.ticks);
        let (_, decimals) = TickAxis::nice(0.0, 0.031, 8.0);
        assert_eq!(decimals, 3);
    }

    fn pattern(w: u32, h: u32, seed: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([
                (x * 7 + seed * 31) as u8,
                (y * 5 + seed * 17) as u8,
                ((x ^ y) + seed) as u8,
            ])
        })
    }

    #[test]
    fn grid_layout_and_tile_pixels() {
        let (w, h) = (96, 64);
        let rows: Vec<[RgbImage; 3]> = (0..3)
            .map(|r| [0, 1, 2].map(|c| pattern(w, h, r * 3 + c)))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grid.png");
        prediction_grid(&rows, &path).unwrap();
        let img = load(&path);
        assert_eq!(img.width(), 3 * w + 4 * GRID_GAP);
        assert_eq!(img.height(), GRID_HEADER + 3 * (h + GRID_GAP));
        assert!(distinct_colours(&img) > 200);
        for (r, row) in rows.iter().enumerate() {
            for (c, tile) in row.iter().enumerate() {
                let x0 = GRID_GAP + c as u32 * (w + GRID_GAP);
                let y0 = GRID_HEADER + r as u32 * (h + GRID_GAP);
                for (x, y, p) in tile.enumerate_pixels() {
                    assert_eq!(
                        img.get_pixel(x0 + x, y0 + y),
                        p,
                        "row {r} col {c} ({x},{y})"
                    );
                }
            }
        }
        // Each column's header carries text: dark pixels above its tile.
        for c in 0..3 {
            let x0 = GRID_GAP + c * (w + GRID_GAP);
            let dark = (x0..x0 + w)
                .flat_map(|x| (0..GRID_HEADER).map(move |y| (x, y)))
                .filter(|&(x, y)| img.get_pixel(x, y).0[0] < 100)
                .count();
            assert!(dark > 20, "column {c} header has {dark} dark pixels");
        }
        no_temp_files_left(dir.path());
    }

    #[test]
    fn grid_rejects_mismatched_tiles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.png");
        let rows = [[pattern(8, 8, 0), pattern(8, 9, 1), pattern(8, 8, 2)]];
        let err = prediction_grid(&rows, &path).unwrap_err();
        assert!(format!("{err:#}").contains("bad.png"), "{err:#}");
        assert!(!path.exists());
    }

    #[test]
    fn confusion_three_classes() {
        let matrix = vec![vec![90, 5, 5], vec![10, 80, 10], vec![0, 30, 70]];
        let names: Vec<String> = ["background", "person", "car"].map(String::from).into();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confusion.png");
        confusion_png(&matrix, &names, &path).unwrap();
        let img = load(&path);
        assert!(
            img.width() > 300 && img.height() > 300,
            "{:?}",
            img.dimensions()
        );
        assert!(distinct_colours(&img) > 50);
        // Cells are filled by their row-normalised value: 0.9, 0.8 and 0.7 on
        // the diagonal, 0.3 for (car -> person).
        for v in [0.9, 0.8, 0.7, 0.3] {
            let c = blues(v);
            let count = img.pixels().filter(|p| p.0 == c).count();
            assert!(count > 100, "{v}: {count} pixels of {c:?}");
        }
        no_temp_files_left(dir.path());
    }

    #[test]
    fn confusion_rejects_bad_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        let names: Vec<String> = vec!["a".into(), "b".into()];
        assert!(confusion_png(&[vec![1, 2], vec![3]], &names, &path).is_err());
        assert!(confusion_png(&[vec![1]], &names, &path).is_err());
        assert!(!path.exists());
    }

    #[test]
    fn failed_rename_leaves_no_temp_file_and_overwrite_works() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the PNG should go makes the final rename fail.
        let blocked = dir.path().join("blocked.png");
        fs::create_dir(&blocked).unwrap();
        let err = prediction_grid(
            &[[pattern(8, 8, 0), pattern(8, 8, 1), pattern(8, 8, 2)]],
            &blocked,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("blocked.png"), "{err:#}");
        no_temp_files_left(dir.path());

        let path = dir.path().join("twice.png");
        plot_curves(&epochs(2), &path).unwrap();
        plot_curves(&epochs(3), &path).unwrap();
        assert_eq!(load(&path).dimensions(), CURVES_SIZE);
        no_temp_files_left(dir.path());
    }

    #[test]
    fn write_to_missing_folder_names_the_path() {
        let path = Path::new("/nonexistent-segcam-dir/x.png");
        let err = confusion_png(&[vec![1]], &["a".into()], path).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent-segcam-dir/x.png"),
            "{err:#}"
        );
    }

    #[test]
    fn bar_chart_draws_each_bar_to_scale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bars.png");
        let bar = |label: &str, median: f64| Bar {
            label: label.into(),
            median,
            low: median * 0.9,
            high: median * 1.1,
        };
        let panels = [BarPanel {
            title: "ms".into(),
            unit: "ms".into(),
            bars: vec![bar("fast", 50.0), bar("slow", 100.0)],
        }];
        plot_bars("bench", &panels, &path).unwrap();
        let img = load(&path);
        no_temp_files_left(dir.path());
        // The length of each bar's colour along its row is proportional to its median.
        let run = |colour: RGBColor| {
            let RGBColor(r, g, b) = colour;
            (0..img.height())
                .map(|y| {
                    (0..img.width())
                        .filter(|&x| img.get_pixel(x, y).0 == [r, g, b])
                        .count()
                })
                .max()
                .unwrap() as f64
        };
        let (fast, slow) = (run(BLUE), run(ORANGE));
        assert!(slow > 300.0, "{slow}");
        assert!((fast / slow - 0.5).abs() < 0.02, "{fast} vs {slow}");
    }
}
