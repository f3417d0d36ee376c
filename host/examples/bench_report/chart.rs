//! The benchmark's figure: one panel of horizontal bars per measure, each bar
//! its median with a p10–p90 whisker and the value written after it.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use seg_host::plots::{bold, font, render_png, slots, Canvas, MUTED, TAB10, TEXT};

/// One bar: a median with its spread (p10–p90).
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

const WIDTH: u32 = 1200;
const TITLE: u32 = 64;
const ROW: u32 = 40;
/// A panel's caption, x axis and air.
const PANEL: u32 = 84;

/// The panels one under the other, under `title`.
pub fn plot_bars(title: &str, panels: &[BarPanel], path: &Path) -> anyhow::Result<()> {
    let heights: Vec<u32> = panels
        .iter()
        .map(|p| PANEL + ROW * p.bars.len() as u32)
        .collect();
    let size = (WIDTH, TITLE + heights.iter().sum::<u32>());
    render_png(size, path, |root| {
        let (top, mut rest) = root.split_vertically(TITLE);
        let centre = Pos::new(HPos::Center, VPos::Center);
        let at = (WIDTH as i32 / 2, TITLE as i32 / 2);
        top.draw(&Text::new(title, at, bold(24.0).pos(centre)))?;
        for (panel, height) in panels.iter().zip(heights) {
            let (area, below) = rest.split_vertically(height);
            draw_panel(&area, panel)?;
            rest = below;
        }
        Ok(())
    })
}

fn draw_panel(area: &Canvas<'_>, panel: &BarPanel) -> anyhow::Result<()> {
    let k = panel.bars.len();
    let top = panel
        .bars
        .iter()
        .map(|b| b.high.max(b.median))
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE);
    // Bar i (counted from the top) spans two units of the y axis, labelled at
    // their middle.
    let y = slots(k, 0..k as i32);
    let slot = |i: usize| 2 * (k - 1 - i) as i32;
    let label = |s: &i32| panel.bars[k - 1 - (*s as usize - 1) / 2].label.clone();
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, bold(19.0))
        .margin(8)
        .margin_right(40)
        .x_label_area_size(28)
        .y_label_area_size(320)
        // Room after the longest bar for its value.
        .build_cartesian_2d(0.0..top * 1.2, y)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(230, 230, 230))
        .x_labels(8)
        .y_label_formatter(&label)
        .y_label_style(font(16.0))
        .x_label_style(font(13.0).color(&MUTED))
        .axis_style(RGBColor(120, 120, 120))
        .draw()?;
    chart.draw_series(panel.bars.iter().enumerate().map(|(i, b)| {
        let colour = TAB10[i % TAB10.len()];
        let mut bar = Rectangle::new([(0.0, slot(i)), (b.median, slot(i) + 2)], colour.filled());
        bar.set_margin(8, 8, 0, 0);
        bar
    }))?;
    let whiskers = panel
        .bars
        .iter()
        .enumerate()
        .filter(|(_, b)| b.high > b.low);
    chart.draw_series(whiskers.map(|(i, b)| {
        let style = TEXT.filled().stroke_width(2);
        ErrorBar::new_horizontal(slot(i) + 1, b.low, b.median, b.high, style, 10)
    }))?;
    chart.draw_series(panel.bars.iter().enumerate().map(|(i, b)| {
        let value = format!("{} {}", significant(b.median), panel.unit);
        let style = font(16.0)
            .color(&MUTED)
            .pos(Pos::new(HPos::Left, VPos::Center));
        EmptyElement::at((b.median.max(b.high), slot(i) + 1)) + Text::new(value, (10, 0), style)
    }))?;
    Ok(())
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
        let panels = [
            BarPanel {
                title: "ms".into(),
                unit: "ms".into(),
                bars: vec![bar("fast", 50.0), bar("slow", 100.0)],
            },
            BarPanel {
                title: "alone".into(),
                unit: "img/s".into(),
                bars: vec![bar("only", 3.0)],
            },
        ];
        plot_bars("bench", &panels, &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (WIDTH, TITLE + 2 * PANEL + 3 * ROW));
        // The longest run of a colour along a row, and the rows holding it.
        let run = |colour: RGBColor, rows: std::ops::Range<u32>| {
            let RGBColor(r, g, b) = colour;
            rows.map(|y| {
                (0..img.width())
                    .filter(|&x| img.get_pixel(x, y).0 == [r, g, b])
                    .count()
            })
            .max()
            .unwrap() as f64
        };
        let first = TITLE..TITLE + PANEL + 2 * ROW;
        let (fast, slow) = (run(TAB10[0], first.clone()), run(TAB10[1], first));
        assert!(slow > 300.0, "{slow}");
        assert!((fast / slow - 0.5).abs() < 0.02, "{fast} vs {slow}");
        // A lone bar fills its panel's scale like the longest of any panel, in
        // its own panel (below the first).
        let alone = run(TAB10[0], TITLE + PANEL + 2 * ROW..img.height());
        assert!((alone / slow - 1.0).abs() < 0.02, "{alone} vs {slow}");
    }
}
