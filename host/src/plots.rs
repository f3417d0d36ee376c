//! PNG figures written after training: learning curves, a d2l-style grid of
//! predictions and a confusion-matrix heat map.
//!
//! plotters draws and lays out all of them: captions, axes, ticks, labels,
//! legends, the heat map's cells and colour bar, the grid's tiles. Ours is only
//! what plotters lacks here: Noto Sans (bundled by `ttf-noto-sans`) registered
//! as its font, since there are no system fonts; the glyphs' rasterising
//! ([`Bitmap`]); and the PNG, encoded with the workspace's `image` crate
//! (plotters' encoder would pull in a second `image` version) and written with
//! [`atomic::write`].

use std::io::Cursor;
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use anyhow::{anyhow, ensure, Context};
use image::RgbImage;
use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::types::RangedCoordi32;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind};

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
/// The font family the bundled Noto Sans is registered under (regular and bold).
pub const FONT: &str = "sans-serif";

/// Body text.
pub const TEXT: RGBColor = RGBColor(33, 33, 33);
/// Secondary text: values, tick labels.
pub const MUTED: RGBColor = RGBColor(90, 90, 90);
const FRAME: RGBColor = RGBColor(120, 120, 120);
const NO_DATA: RGBColor = RGBColor(215, 215, 215);
// matplotlib's tab10, familiar from most training plots.
/// matplotlib's tab10, first four: the series colours of every figure.
pub const TAB10: [RGBColor; 4] = [BLUE, ORANGE, GREEN, RED];
const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const RED: RGBColor = RGBColor(214, 39, 40);

/// The bundled fonts (regular, bold), parsed and registered with plotters (a
/// process-wide table, which its text layout reads) once.
fn fonts() -> anyhow::Result<&'static [FontRef<'static>; 2]> {
    static FONTS: OnceLock<Option<[FontRef<'static>; 2]>> = OnceLock::new();
    let load = |style, bytes| {
        plotters::style::register_font(FONT, style, bytes).ok()?;
        FontRef::try_from_slice(bytes).ok()
    };
    FONTS
        .get_or_init(|| {
            Some([
                load(FontStyle::Normal, ttf_noto_sans::REGULAR)?,
                load(FontStyle::Bold, ttf_noto_sans::BOLD)?,
            ])
        })
        .as_ref()
        .ok_or_else(|| anyhow!("the bundled Noto Sans does not load"))
}

/// plotters' bitmap backend with its glyphs rasterised here. plotters 0.3.7's
/// ab_glyph text drops each glyph's side bearing and snaps it to whole pixels,
/// so letters collide ("Trai ning l oss"); where text goes (its box, anchor and
/// rotation) stays plotters' layout.
pub struct Bitmap<'a>(BitMapBackend<'a>);

type Failed<'a> = DrawingErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>;

impl<'a> DrawingBackend for Bitmap<'a> {
    type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), Failed<'a>> {
        self.0.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), Failed<'a>> {
        self.0.present()
    }
    fn draw_pixel(&mut self, at: BackendCoord, colour: BackendColor) -> Result<(), Failed<'a>> {
        self.0.draw_pixel(at, colour)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        at: BackendCoord,
    ) -> Result<(), Failed<'a>> {
        let fonts = fonts().map_err(|e| DrawingErrorKind::FontError(e.into()))?;
        let ((x0, y0), (x1, y1)) = style
            .layout_box(text)
            .map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
        let (w, h, anchor) = (x1 - x0, y1 - y0, style.anchor());
        let dx = match anchor.h_pos {
            HPos::Left => 0,
            HPos::Center => -w / 2,
            HPos::Right => -w,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        };
        let font = &fonts[matches!(style.style(), FontStyle::Bold) as usize];
        let size = style.size() as f32;
        let scaled = font.as_scaled(size);
        // plotters' layout has the baseline half the size below the box's top.
        let (mut caret, base) = ((dx - x0) as f32, (dy - y0) as f32 + size / 2.0);
        let (mut prev, mut coverage) = (None, Vec::new());
        for ch in text.chars() {
            let id = scaled.glyph_id(ch);
            caret += prev.map_or(0.0, |p| scaled.kern(p, id));
            prev = Some(id);
            let glyph = id.with_scale_and_position(PxScale::from(size), point(caret, base));
            caret += scaled.h_advance(id);
            if let Some(outline) = font.outline_glyph(glyph) {
                let min = outline.px_bounds().min;
                let (mx, my) = (min.x as i32, min.y as i32);
                outline.draw(|x, y, c| coverage.push((mx + x as i32, my + y as i32, c)));
            }
        }
        let BackendColor { alpha, rgb } = style.color();
        for (x, y, c) in coverage {
            let (x, y) = style.transform().transform(x, y);
            let alpha = alpha * f64::from(c.clamp(0.0, 1.0));
            self.0
                .draw_pixel((at.0 + x, at.1 + y), BackendColor { alpha, rgb })?;
        }
        Ok(())
    }
}

/// The drawing surface of every figure.
pub type Canvas<'a> = DrawingArea<Bitmap<'a>, Shift>;

/// Body text of `size` pixels.
pub fn font(size: f64) -> TextStyle<'static> {
    text(size, FontStyle::Normal)
}

/// Bold text of `size` pixels.
pub fn bold(size: f64) -> TextStyle<'static> {
    text(size, FontStyle::Bold)
}

fn text(size: f64, style: FontStyle) -> TextStyle<'static> {
    // plotters looks the font up as the style is made; a failure shows when drawing.
    let _ = fonts();
    (FONT, size).into_font().style(style).color(&TEXT)
}

fn centred(style: TextStyle<'_>) -> TextStyle<'_> {
    style.pos(Pos::new(HPos::Center, VPos::Center))
}

/// Width and height of `text` as plotters lays it out.
fn text_size(text: &str, style: &TextStyle) -> anyhow::Result<(i32, i32)> {
    let (w, h) = style.font.box_size(text).context("measuring text")?;
    Ok((w as i32, h as i32))
}

/// Draws on a white canvas of `size` pixels.
fn render(
    size: (u32, u32),
    draw: impl FnOnce(&Canvas<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<RgbImage> {
    fonts()?;
    let mut buf = vec![255u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = Bitmap(BitMapBackend::with_buffer(&mut buf, size)).into_drawing_area();
        draw(&root)?;
        root.present()?;
    }
    RgbImage::from_raw(size.0, size.1, buf).context("canvas has the wrong size")
}

/// Writes the figure to `path` as a PNG, atomically, or says why it could not
/// be drawn.
fn save(img: anyhow::Result<RgbImage>, path: &Path) -> anyhow::Result<()> {
    let img = img.with_context(|| format!("drawing {}", path.display()))?;
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
        .with_context(|| format!("encoding PNG for {}", path.display()))?;
    atomic::write(path, &bytes)
}

/// Draws a figure of `size` pixels with plotters (fonts registered, white
/// background) and writes it to `path` as a PNG, atomically.
pub fn render_png(
    size: (u32, u32),
    path: &Path,
    draw: impl FnOnce(&Canvas<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    save(render(size, draw), path)
}

/// `n` slots two units wide on an i32 axis, slot `i` centred on `2 i + 1`,
/// ticked at the slots listed. plotters' segmented coordinates would do this
/// but misplace a lone slot (0.3.7 maps a one-value range to half the pixel
/// span, not its middle); this keeps plotters' mesh, labels and formatter.
pub fn slots(n: usize, ticks: impl IntoIterator<Item = i32>) -> WithKeyPoints<RangedCoordi32> {
    (0..2 * n as i32).with_key_points(ticks.into_iter().map(|i| 2 * i + 1).collect())
}

/// A curve: its legend, colour and finite (epoch, value) points.
type Series = (&'static str, RGBColor, Vec<(i32, f64)>);

/// Training loss (left) and train/val pixel accuracy and val mIoU (right),
/// one point per epoch, in a [`CURVES_SIZE`] image. Non-finite values (a
/// diverged loss, a skipped validation) are left out rather than failing the
/// whole figure.
pub fn plot_curves(points: &[EpochPoint], path: &Path) -> anyhow::Result<()> {
    save(render_curves(points), path)
}

fn render_curves(points: &[EpochPoint]) -> anyhow::Result<RgbImage> {
    ensure!(!points.is_empty(), "no epochs to plot");
    let mut points = points.to_vec();
    points.sort_by_key(|p| p.epoch);
    let series = |name, colour, value: fn(&EpochPoint) -> f64| -> Series {
        let data = points.iter().map(|p| (p.epoch as i32, value(p)));
        (name, colour, data.filter(|(_, v)| v.is_finite()).collect())
    };
    let loss = [series("train loss", RED, |p| p.train_loss)];
    let metrics = [
        series("train pixel acc", BLUE, |p| p.train_acc),
        series("val pixel acc", ORANGE, |p| p.val_acc),
        series("val mIoU", GREEN, |p| p.val_miou),
    ];
    let (low, high) =
        (loss[0].2.iter()).fold((0.0f64, 0.0f64), |(a, b), &(_, v)| (a.min(v), b.max(v)));
    let air = (high - low) * 0.05;
    let loss_range = match high > low {
        true => low - if low < 0.0 { air } else { 0.0 }..high + air,
        false => low..low + 1.0,
    };

    let epochs = match points.len() {
        1 => "1 epoch".to_string(),
        n => format!("{n} epochs"),
    };
    let best = (points.iter().filter(|p| p.val_miou.is_finite()))
        .max_by(|a, b| a.val_miou.total_cmp(&b.val_miou));
    let title = match best {
        Some(b) => format!(
            "Training curves: {epochs}, best val mIoU {:.3} at epoch {}",
            b.val_miou, b.epoch
        ),
        None => format!("Training curves: {epochs}"),
    };
    let span = (points[0].epoch, points[points.len() - 1].epoch);
    // Markers help to read short runs and are the only mark for one epoch.
    let marker = match points.len() {
        1 => 5,
        2..=40 => 3,
        _ => 0,
    };
    render(CURVES_SIZE, |root| {
        let body = root.titled(&title, bold(21.0))?;
        let halves = body.split_evenly((1, 2));
        // Loss falls to the lower right, accuracy climbs to the upper right.
        let (upper, lower) = (
            SeriesLabelPosition::UpperRight,
            SeriesLabelPosition::LowerRight,
        );
        let texts = ("Training loss", "loss");
        draw_panel(&halves[0], texts, loss_range, &loss, span, marker, upper)?;
        let texts = ("Pixel accuracy and mIoU", "fraction (0 to 1)");
        draw_panel(&halves[1], texts, 0.0..1.0, &metrics, span, marker, lower)
    })
}

fn draw_panel(
    area: &Canvas<'_>,
    (caption, y_desc): (&str, &str),
    y: Range<f64>,
    series: &[Series],
    (first, last): (usize, usize),
    marker: u32,
    legend: SeriesLabelPosition,
) -> anyhow::Result<()> {
    // One slot per epoch: half an epoch of air at each end, ticks on whole
    // epochs where plotters' integer axis would put them.
    let (lo, hi) = (first as i32, last as i32);
    let ticks = RangedCoordi32::from(lo..hi).key_points(10usize);
    let x = slots(last - first + 1, ticks.into_iter().map(|e| e - lo));
    let mut chart = ChartBuilder::on(area)
        .caption(caption, font(17.0))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|v| ((v - 1) / 2 + lo).to_string())
        .y_labels(10)
        .x_desc("epoch")
        .y_desc(y_desc)
        .label_style(font(14.0).color(&MUTED))
        .axis_desc_style(font(15.0))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(TRANSPARENT)
        .axis_style(FRAME)
        .draw()?;
    for &(name, colour, ref data) in series {
        let style = colour.filled().stroke_width(2);
        let line = data.iter().map(|&(e, v)| (2 * (e - lo) + 1, v));
        chart
            .draw_series(LineSeries::new(line, style).point_size(marker))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], style));
    }
    chart
        .configure_series_labels()
        .position(legend)
        .margin(12)
        .label_font(font(14.0))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(200, 200, 200))
        .draw()?;
    Ok(())
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
    save(render_grid(rows), path)
}

fn render_grid(rows: &[[RgbImage; 3]]) -> anyhow::Result<RgbImage> {
    ensure!(!rows.is_empty(), "no rows to draw");
    for (i, [image, tiles @ ..]) in rows.iter().enumerate() {
        let dims = image.dimensions();
        ensure!(dims.0 > 0 && dims.1 > 0, "row {i}: empty image");
        for (c, tile) in tiles.iter().enumerate() {
            let found = tile.dimensions();
            ensure!(
                found == dims,
                "row {i}: tile {} is {found:?} but the image is {dims:?}",
                c + 1
            );
        }
    }
    let col_w = rows.iter().map(|r| r[0].width()).max().unwrap_or(0);
    let width = GRID_GAP + 3 * (col_w + GRID_GAP);
    let height = GRID_HEADER + rows.iter().map(|r| r[0].height() + GRID_GAP).sum::<u32>();
    let (names, style) = header(col_w)?;
    let left = |c: usize| (GRID_GAP + c as u32 * (col_w + GRID_GAP)) as i32;
    render((width, height), |root| {
        // Header first; the tiles go over it, so text can never cover them.
        for (c, name) in names.iter().enumerate() {
            let at = (left(c) + col_w as i32 / 2, GRID_HEADER as i32 / 2);
            root.draw(&Text::new(*name, at, centred(style.clone())))?;
        }
        let mut y = GRID_HEADER as i32;
        for row in rows {
            for (c, tile) in row.iter().enumerate() {
                let bitmap =
                    BitMapElement::with_ref((left(c), y), tile.dimensions(), tile.as_raw());
                root.draw(&bitmap.context("tile buffer too short")?)?;
            }
            y += (row[0].height() + GRID_GAP) as i32;
        }
        Ok(())
    })
}

/// Column names and a bold style in which the widest fits a column; narrow
/// tiles get abbreviations rather than overlapping text.
fn header(col_w: u32) -> anyhow::Result<([&'static str; 3], TextStyle<'static>)> {
    let choices = [
        (["image", "prediction", "ground truth"], 11),
        (["img", "pred", "gt"], 7),
    ];
    for (names, min_size) in choices {
        for size in (min_size..=16).rev() {
            let style = bold(size.into());
            let mut widest = 0;
            for name in names {
                widest = widest.max(text_size(name, &style)?.0);
            }
            if widest + 4 <= col_w as i32 {
                return Ok((names, style));
            }
        }
    }
    Ok((["", "", ""], bold(7.0)))
}

/// matplotlib's "Blues" colour map at `t` in 0..=1 (plotters interpolates).
fn blues(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 9] = [
        (247, 251, 255),
        (222, 235, 247),
        (198, 219, 239),
        (158, 202, 225),
        (107, 174, 214),
        (66, 146, 198),
        (33, 113, 181),
        (8, 81, 156),
        (8, 48, 107),
    ];
    let t = if t.is_finite() { t } else { 0.0 };
    DerivedColorMap::new(&STOPS.map(|(r, g, b)| RGBColor(r, g, b))).get_color(t)
}

/// Confusion matrix heat map: row = ground truth, column = prediction, each
/// row normalised to sum to 1. Rows with no ground-truth pixels are grey.
/// Cell values are printed for up to 25 classes.
pub fn confusion_png(
    matrix: &[Vec<u64>],
    class_names: &[String],
    path: &Path,
) -> anyhow::Result<()> {
    save(
        render_confusion(matrix, class_names).map(|(img, _)| img),
        path,
    )
}

/// The pixel ranges (x, y) a chart's cells cover.
type Cells = (Range<i32>, Range<i32>);

/// The heat map and where its cells are.
fn render_confusion(
    matrix: &[Vec<u64>],
    class_names: &[String],
) -> anyhow::Result<(RgbImage, Cells)> {
    let n = matrix.len();
    ensure!(n > 0, "empty confusion matrix");
    for (i, row) in matrix.iter().enumerate() {
        ensure!(
            row.len() == n,
            "row {i} has {} entries, expected {n}",
            row.len()
        );
    }
    ensure!(
        class_names.len() == n,
        "{} class names for a {n}x{n} matrix",
        class_names.len()
    );
    let normalised: Vec<Option<Vec<f64>>> = (matrix.iter())
        .map(|row| {
            let total: u64 = row.iter().sum();
            (total > 0).then(|| row.iter().map(|&c| c as f64 / total as f64).collect())
        })
        .collect();

    let cell = (640 / n as i32).clamp(14, 72);
    let label = font((cell as f64 * 0.75).clamp(9.0, 15.0));
    let mut label_w = 0;
    for name in class_names {
        label_w = label_w.max(text_size(name, &label)?.0);
    }
    // Column names turn vertical when any would be wider than its cell.
    let rotate = label_w + 4 > cell;
    let title = "Confusion matrix (rows normalised)";
    let (title_h, margin, bar_w, desc) = (44, 10, 100, 30);
    // plotters puts labels twice the tick length (5) from the axis.
    let left = desc + label_w + 14;
    let bottom = desc
        + 14
        + if rotate {
            label_w
        } else {
            text_size("Hg", &label)?.1
        };
    let tight = left + cell * n as i32 + margin + bar_w;
    let width = tight.max(text_size(title, &bold(20.0))?.0 + 24);
    let height = title_h + margin + cell * n as i32 + bottom;

    let mut cells = (0..0, 0..0);
    let img = render((width as u32, height as u32), |root| {
        let (top, body) = root.split_vertically(title_h);
        top.draw(&Text::new(
            title,
            (width / 2, title_h / 2 + 4),
            centred(bold(20.0)),
        ))?;
        let (heat, bar) = body.split_horizontally(width - bar_w);
        let mut chart = ChartBuilder::on(&heat)
            .margin_top(margin)
            .margin_right(margin + width - tight)
            .x_label_area_size(bottom)
            .y_label_area_size(left)
            .build_cartesian_2d(slots(n, 0..n as i32), slots(n, 0..n as i32))?;
        // Row r is drawn in slot n - 1 - r, so the first class is at the top.
        let flip = |r: usize| 2 * (n - 1 - r) as i32;
        let column = |&s: &i32| class_names[(s - 1) as usize / 2].clone();
        let row = |&s: &i32| class_names[n - 1 - (s - 1) as usize / 2].clone();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_label_formatter(&|s| if rotate { String::new() } else { column(s) })
            .y_label_formatter(&row)
            .x_desc("prediction")
            .y_desc("ground truth")
            .label_style(label.clone())
            .axis_desc_style(font(16.0))
            .axis_style(FRAME)
            .draw()?;
        let square =
            |r: usize, c: usize| [(2 * c as i32, flip(r)), (2 * c as i32 + 2, flip(r) + 2)];
        let each = || (0..n).flat_map(|r| (0..n).map(move |c| (r, c)));
        chart.draw_series(each().map(|(r, c)| {
            let fill = normalised[r].as_ref().map_or(NO_DATA, |v| blues(v[c]));
            Rectangle::new(square(r, c), fill.filled())
        }))?;
        // Thin white lines between cells read better than dark borders.
        chart.draw_series(each().map(|(r, c)| Rectangle::new(square(r, c), WHITE)))?;
        let value = font((cell as f64 * 0.34).clamp(8.0, 16.0));
        chart.draw_series(each().filter(|_| n <= 25).filter_map(|(r, c)| {
            let v = normalised[r].as_ref()?[c];
            // Exact zeros stay quiet so the real confusions stand out.
            let text = if matrix[r][c] == 0 {
                "0".into()
            } else {
                format!("{v:.2}")
            };
            let style = centred(value.color(if v > 0.5 { &WHITE } else { &TEXT }));
            Some(Text::new(text, (2 * c as i32 + 1, flip(r) + 1), style))
        }))?;
        cells = chart.plotting_area().get_pixel_range();
        if rotate {
            // plotters' mesh centres a turned label on its tick, over the
            // cells; these read upwards, ending just under their column.
            let style = label
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Right, VPos::Center));
            for (c, name) in class_names.iter().enumerate() {
                let (x, _) = chart.backend_coord(&(2 * c as i32 + 1, 0));
                root.draw(&Text::new(
                    name.as_str(),
                    (x, cells.1.end + 10),
                    style.clone(),
                ))?;
            }
        }

        // Colour bar: 1 at the top, 0 at the bottom.
        let mut scale = ChartBuilder::on(&bar)
            .margin_top(margin)
            .margin_bottom(bottom)
            .margin_left(20)
            .margin_right(24)
            .right_y_label_area_size(40)
            .build_cartesian_2d(0..1, 0.0..1.0)?;
        scale
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            // plotters sizes ticks by the plot (5 %): nothing, this narrow.
            .set_all_tick_mark_size(5)
            .y_labels(3)
            .y_label_formatter(&|v| format!("{v:.1}"))
            .label_style(font(13.0).color(&MUTED))
            .axis_style(FRAME)
            .draw()?;
        let steps = (0..200).map(|k| (k as f64 / 200.0, (k + 1) as f64 / 200.0));
        scale.draw_series(
            steps.map(|(a, b)| Rectangle::new([(0, a), (1, b)], blues((a + b) / 2.0).filled())),
        )?;
        scale.draw_series([Rectangle::new([(0, 0.0), (1, 1.0)], FRAME)])?;
        Ok(())
    })?;
    Ok((img, cells))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::fs;

    fn distinct_colours(img: &RgbImage) -> usize {
        img.pixels().map(|p| p.0).collect::<HashSet<_>>().len()
    }

    fn rgb(c: RGBColor) -> [u8; 3] {
        [c.0, c.1, c.2]
    }

    /// Text pixels (body text is 33, tick labels 90; frames 120, grid lines
    /// and series colours have a channel above 110) in the box.
    fn ink(img: &RgbImage, x: Range<u32>, y: Range<u32>) -> usize {
        y.flat_map(|y| x.clone().map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&v| v < 110))
            .count()
    }

    /// Mean x of the pixels of `colour` in columns `x`.
    fn mean_x(img: &RgbImage, colour: RGBColor, x: Range<u32>) -> f64 {
        let xs: Vec<u32> = img
            .enumerate_pixels()
            .filter(|(px, _, p)| x.contains(px) && p.0 == rgb(colour))
            .map(|(px, _, _)| px)
            .collect();
        assert!(!xs.is_empty(), "no {colour:?} in {x:?}");
        xs.iter().map(|&v| v as f64).sum::<f64>() / xs.len() as f64
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

    /// Columns with ink when `text` is drawn at x = 10 in 100 px type.
    fn ink_columns(text: &str) -> Vec<i32> {
        let img = render((600, 160), |root| {
            Ok(root.draw(&Text::new(text, (10, 20), font(100.0)))?)
        })
        .unwrap();
        (0..600u32)
            .filter(|&x| ink(&img, x..x + 1, 0..160) > 0)
            .map(|x| x as i32)
            .collect()
    }

    #[test]
    fn glyphs_keep_their_side_bearings() {
        // Noto Sans' "l" starts 0.08 em (6 px here) right of its pen; plotters'
        // own text drops that, so "Training" collided ("Trai ning l oss").
        let l = ink_columns("l");
        assert!((14..20).contains(&l[0]), "ink of l starts at {}", l[0]);
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
                assert!(
                    img.pixels().any(|p| p.0 == rgb(colour)),
                    "n={n}: no {colour:?}"
                );
            }
        }
        no_temp_files_left(dir.path());
    }

    #[test]
    fn one_epoch_sits_in_the_middle_of_its_panel() {
        let img = render_curves(&epochs(1)).unwrap();
        // The loss marker (left panel, whose plot spans about 84..576) is
        // centred, not pushed to an edge; likewise the mIoU marker on the right.
        // Only columns clear of the legends (near the right edges) count.
        let loss = mean_x(&img, RED, 200..420);
        assert!((loss - 330.0).abs() < 12.0, "loss marker at x={loss}");
        let miou = mean_x(&img, GREEN, 800..1000);
        assert!((miou - 930.0).abs() < 12.0, "mIoU marker at x={miou}");
    }

    #[test]
    fn curves_have_title_captions_and_legends() {
        let img = render_curves(&epochs(10)).unwrap();
        let (w, _) = CURVES_SIZE;
        // Title: text across the middle of the top band.
        assert!(ink(&img, w / 3..2 * w / 3, 0..36) > 500);
        // Panel captions under it, one per half.
        assert!(ink(&img, 150..450, 36..70) > 50);
        assert!(ink(&img, 750..1050, 36..70) > 100);
        // Legends: upper right of the loss panel, lower right of the other,
        // and not in the opposite corners.
        assert!(ink(&img, 420..580, 70..160) > 25);
        assert!(ink(&img, 1000..1180, 320..440) > 100);
        assert_eq!(ink(&img, 420..580, 300..420), 0);
        assert_eq!(ink(&img, 1000..1180, 70..160), 0);
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

        // Nothing finite at all still draws (empty panels).
        let nothing: Vec<EpochPoint> = epochs(3)
            .into_iter()
            .map(|p| EpochPoint {
                train_loss: f64::NAN,
                val_miou: f64::NEG_INFINITY,
                ..p
            })
            .collect();
        let img = render_curves(&nothing).unwrap();
        // Red only in the legend's sample line (upper right), no curve.
        let red: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0 == rgb(RED))
            .map(|(x, y, _)| (x, y))
            .collect();
        assert!(!red.is_empty() && red.iter().all(|&(x, y)| x > 400 && y < 160));

        let empty = dir.path().join("empty.png");
        let err = plot_curves(&[], &empty).unwrap_err();
        assert!(format!("{err:#}").contains("empty.png"), "{err:#}");
        assert!(!empty.exists());
    }

    fn pattern(w: u32, h: u32, seed: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
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
        // Each column's header carries text: dark pixels above its tile, and
        // the widest name ("ground truth") the most.
        let header: Vec<usize> = (0..3)
            .map(|c| {
                let x0 = GRID_GAP + c * (w + GRID_GAP);
                ink(&img, x0..x0 + w, 0..GRID_HEADER)
            })
            .collect();
        assert!(header.iter().all(|&d| d > 20), "{header:?}");
        assert!(header[2] > header[0], "{header:?}");
        // The gaps stay white.
        assert!((0..img.height()).all(|y| img.get_pixel(1, y).0 == [255; 3]));
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
        // Cells are filled by their row-normalised value: 0.9, 0.8 and 0.7 on
        // the diagonal, 0.3 for (car -> person).
        for v in [0.9, 0.8, 0.7, 0.3] {
            let c = rgb(blues(v));
            let count = img.pixels().filter(|p| p.0 == c).count();
            assert!(count > 100, "{v}: {count} pixels of {c:?}");
        }
        no_temp_files_left(dir.path());
    }

    #[test]
    fn confusion_cells_sit_by_row_and_column() {
        // Rows are ground truth from the top, columns predictions from the left:
        // sky always right, road always right, car always taken for road, and no
        // pixels of dog at all.
        let matrix = vec![
            vec![5, 0, 0, 0],
            vec![0, 7, 0, 0],
            vec![0, 9, 0, 0],
            vec![0, 0, 0, 0],
        ];
        let names: Vec<String> = ["sky", "road", "car", "dog"].map(String::from).into();
        let (img, (xs, ys)) = render_confusion(&matrix, &names).unwrap();
        let (cw, ch) = ((xs.end - xs.start) / 4, (ys.end - ys.start) / 4);
        assert!((cw - ch).abs() <= 1 && cw >= 60, "{cw}x{ch}");
        // A quarter into each cell: clear of the value printed in its middle.
        let at = |r: i32, c: i32| {
            let (x, y) = (xs.start + c * cw + cw / 4, ys.start + r * ch + ch / 4);
            img.get_pixel(x as u32, y as u32).0
        };
        let (full, zero, grey) = (rgb(blues(1.0)), rgb(blues(0.0)), rgb(NO_DATA));
        assert_eq!([at(0, 0), at(1, 1), at(2, 1)], [full; 3]);
        assert_eq!([at(0, 1), at(1, 0), at(2, 2), at(0, 3)], [zero; 4]);
        assert_eq!([at(3, 0), at(3, 3)], [grey; 2]);
        // Class names to the left of the rows: dark text in the label area.
        let left = (xs.start - 40) as u32..xs.start as u32 - 4;
        for r in 0..4 {
            let band = (ys.start + r * ch) as u32..(ys.start + (r + 1) * ch) as u32;
            assert!(ink(&img, left.clone(), band) > 5, "row {r}");
        }
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
}
