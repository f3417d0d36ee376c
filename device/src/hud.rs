//! The heads-up display drawn into each output frame: a top-left box with FPS,
//! inference time and the model name, a legend of the classes present below it, and a
//! "NO SIGNAL" banner when the source has stopped. Text and shapes go through
//! `embedded-graphics` (its `DrawTarget` for an `RgbImage` is [`Canvas`]); the dark
//! backdrops are blended here, since a `DrawTarget` only paints opaque pixels.

use std::convert::Infallible;

use embedded_graphics::mono_font::ascii::{FONT_10X20, FONT_6X10, FONT_9X15, FONT_9X15_BOLD};
use embedded_graphics::mono_font::{MonoFont, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};
use image::RgbImage;

use crate::classes::PresentClass;
use crate::overlay::div255;

/// An `embedded-graphics` draw target over an `RgbImage`; pixels outside are dropped.
pub struct Canvas<'a> {
    image: &'a mut RgbImage,
}

impl<'a> Canvas<'a> {
    pub fn new(image: &'a mut RgbImage) -> Self {
        Self { image }
    }

    /// Darken `area` towards black: `pixel · (255 − alpha) / 255` (clipped to the image).
    pub fn shade(&mut self, area: &Rectangle, alpha: u8) {
        let area = area.intersection(&self.bounding_box());
        let Some(bottom_right) = area.bottom_right() else {
            return;
        };
        // In 16 bits, as the overlay blends: the loop vectorises.
        let keep = 255 - alpha as u16;
        let width = self.image.width() as usize;
        let (x0, x1) = (area.top_left.x as usize, bottom_right.x as usize);
        let raw: &mut [u8] = self.image;
        for y in area.top_left.y as usize..=bottom_right.y as usize {
            let row = &mut raw[(y * width + x0) * 3..(y * width + x1 + 1) * 3];
            for v in row {
                *v = div255(*v as u16 * keep);
            }
        }
    }
}

impl OriginDimensions for Canvas<'_> {
    fn size(&self) -> Size {
        Size::new(self.image.width(), self.image.height())
    }
}

impl DrawTarget for Canvas<'_> {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let (w, h) = self.image.dimensions();
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as u32) < w && (p.y as u32) < h {
                self.image
                    .put_pixel(p.x as u32, p.y as u32, image::Rgb([c.r(), c.g(), c.b()]));
            }
        }
        Ok(())
    }

    fn fill_solid(&mut self, area: &Rectangle, color: Self::Color) -> Result<(), Self::Error> {
        let area = area.intersection(&self.bounding_box());
        let Some(bottom_right) = area.bottom_right() else {
            return Ok(());
        };
        let width = self.image.width() as usize;
        let rgb = [color.r(), color.g(), color.b()];
        let (x0, x1) = (area.top_left.x as usize, bottom_right.x as usize);
        let raw: &mut [u8] = self.image;
        for y in area.top_left.y as usize..=bottom_right.y as usize {
            for px in raw[(y * width + x0) * 3..(y * width + x1 + 1) * 3].chunks_exact_mut(3) {
                px.copy_from_slice(&rgb);
            }
        }
        Ok(())
    }
}

/// What the HUD reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HudInfo<'a> {
    pub fps: f32,
    pub inference_ms: f32,
    pub model: &'a str,
    /// Draw the "NO SIGNAL" banner across the middle.
    pub no_signal: bool,
}

/// Fonts, spacing and backdrop darkness of the HUD.
#[derive(Clone, Copy)]
pub struct HudStyle {
    pub font: &'static MonoFont<'static>,
    /// The larger font of the "NO SIGNAL" banner.
    pub banner_font: &'static MonoFont<'static>,
    /// Distance of the boxes from the frame's edges and from each other.
    pub margin: u32,
    /// Space between a box's border and its text.
    pub padding: u32,
    /// How much the backdrop darkens the frame (0–255).
    pub shade: u8,
    pub text: Rgb888,
}

impl std::fmt::Debug for HudStyle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HudStyle")
            .field("font", &self.font.character_size)
            .field("margin", &self.margin)
            .field("padding", &self.padding)
            .field("shade", &self.shade)
            .finish()
    }
}

impl HudStyle {
    /// A style readable at this frame height: 6×10 text below 360 rows, 9×15 up to
    /// 900, 10×20 above.
    pub fn for_height(height: u32) -> Self {
        let (font, banner_font, margin, padding) = match height {
            0..360 => (&FONT_6X10, &FONT_9X15_BOLD, 4, 3),
            360..900 => (&FONT_9X15, &FONT_10X20, 8, 5),
            _ => (&FONT_10X20, &FONT_10X20, 12, 6),
        };
        Self {
            font,
            banner_font,
            margin,
            padding,
            shade: 150,
            text: Rgb888::WHITE,
        }
    }

    fn line_height(&self) -> u32 {
        self.font.character_size.height + 2
    }

    fn char_width(&self) -> u32 {
        self.font.character_size.width + self.font.character_spacing
    }
}

/// Where the HUD drew, for callers that place other things and for tests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HudLayout {
    pub stats: Option<Rectangle>,
    pub legend: Option<Rectangle>,
    /// The colour swatch of each legend entry, by class index.
    pub swatches: Vec<(u8, Rectangle)>,
    pub banner: Option<Rectangle>,
}

/// Draw the HUD into `image` with a style chosen for its height.
pub fn draw(image: &mut RgbImage, info: &HudInfo, legend: &[PresentClass]) -> HudLayout {
    let style = HudStyle::for_height(image.height());
    draw_with(image, &style, info, legend)
}

/// Draw the HUD into `image` with `style`.
pub fn draw_with(
    image: &mut RgbImage,
    style: &HudStyle,
    info: &HudInfo,
    legend: &[PresentClass],
) -> HudLayout {
    let mut canvas = Canvas::new(image);
    let size = canvas.size();
    let max_chars = (size
        .width
        .saturating_sub(2 * (style.margin + style.padding))
        / style.char_width()) as usize;
    let mut layout = HudLayout::default();
    if max_chars < 4 {
        return layout; // too small to say anything legible
    }

    let lines = [
        format!("{:.1} FPS", info.fps),
        format!("inference {:.1} ms", info.inference_ms),
        clip(info.model, max_chars),
    ];
    let origin = Point::new(style.margin as i32, style.margin as i32);
    let stats = text_box(&mut canvas, style, origin, &lines, 0);
    layout.stats = Some(stats);

    if !legend.is_empty() {
        // The swatch takes two character cells: a square and a gap.
        let label_chars = max_chars.saturating_sub(2);
        let rows_fit = (size
            .height
            .saturating_sub(stats.size.height + 3 * style.margin)
            .saturating_sub(2 * style.padding)
            / style.line_height()) as usize;
        let (shown, more) = if legend.len() > rows_fit {
            (
                rows_fit.saturating_sub(1),
                legend.len() - rows_fit.saturating_sub(1),
            )
        } else {
            (legend.len(), 0)
        };
        // Names padded to one width, so the percentages form a column.
        const SHARE_CHARS: usize = 5; // " 100%"
        let names: Vec<String> = legend[..shown]
            .iter()
            .map(|c| clip(&c.name, label_chars.saturating_sub(SHARE_CHARS).max(1)))
            .collect();
        let name_width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        let mut labels: Vec<String> = names
            .iter()
            .zip(&legend[..shown])
            .map(|(name, c)| format!("{name:<name_width$} {:>3.0}%", c.fraction * 100.0))
            .collect();
        if more > 0 {
            labels.push(format!("+{more} more"));
        }
        if !labels.is_empty() {
            let top = stats.top_left.y + stats.size.height as i32 + style.margin as i32;
            let at = Point::new(style.margin as i32, top);
            let indent = 2 * style.char_width();
            let rect = text_box(&mut canvas, style, at, &labels, indent);
            layout.legend = Some(rect);
            let side = style.font.character_size.height.saturating_sub(4).max(4);
            for (row, class) in legend[..shown].iter().enumerate() {
                let y = rect.top_left.y
                    + (style.padding + row as u32 * style.line_height()) as i32
                    + (style.line_height() as i32 - side as i32) / 2;
                let x = rect.top_left.x + style.padding as i32;
                let swatch = Rectangle::new(Point::new(x, y), Size::new(side, side));
                // A light frame keeps dark class colours visible on the dark backdrop.
                let _ = swatch
                    .into_styled(PrimitiveStyle::with_fill(Rgb888::new(200, 200, 200)))
                    .draw(&mut canvas);
                let inner = swatch.offset(-1);
                let [r, g, b] = class.colour;
                let _ = canvas.fill_solid(&inner, Rgb888::new(r, g, b));
                layout.swatches.push((class.index, inner));
            }
        }
    }

    if info.no_signal {
        let text = "NO SIGNAL";
        let big = HudStyle {
            font: style.banner_font,
            padding: 2 * style.padding,
            ..*style
        };
        let fits = text.len() as u32 * big.char_width() + 2 * big.padding <= size.width;
        let style = if fits { &big } else { style };
        let w = text.len() as u32 * style.char_width() + 2 * style.padding;
        let h = style.line_height() + 2 * style.padding;
        let at = Point::new(
            (size.width.saturating_sub(w) / 2) as i32,
            (size.height.saturating_sub(h) / 2) as i32,
        );
        layout.banner = Some(text_box(&mut canvas, style, at, &[text.to_string()], 0));
    }
    layout
}

/// A shaded box at `at` holding `lines` (each indented by `indent` pixels); returns it.
fn text_box(
    canvas: &mut Canvas,
    style: &HudStyle,
    at: Point,
    lines: &[String],
    indent: u32,
) -> Rectangle {
    let widest = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32;
    let width = indent + widest * style.char_width() + 2 * style.padding;
    let height = lines.len() as u32 * style.line_height() + 2 * style.padding;
    let rect = Rectangle::new(at, Size::new(width, height));
    canvas.shade(&rect, style.shade);
    let text_style = MonoTextStyle::new(style.font, style.text);
    for (i, line) in lines.iter().enumerate() {
        let p = at
            + Point::new(
                (style.padding + indent) as i32,
                (style.padding + i as u32 * style.line_height() + 1) as i32,
            );
        let _ = Text::with_baseline(line, p, text_style, Baseline::Top).draw(canvas);
    }
    rect
}

/// `text` cut to `max` characters, marking the cut with "..".
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let kept: String = text.chars().take(max.saturating_sub(2)).collect();
        format!("{kept}..")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    const GREY: [u8; 3] = [120, 120, 120];

    fn class(index: u8, name: &str, colour: [u8; 3], fraction: f32) -> PresentClass {
        PresentClass {
            index,
            name: name.into(),
            colour,
            pixels: 1,
            fraction,
        }
    }

    fn inside(r: &Rectangle, x: u32, y: u32) -> bool {
        r.contains(Point::new(x as i32, y as i32))
    }

    #[test]
    fn stats_text_is_white_on_a_darkened_box_and_nothing_else_changes() {
        let mut image = RgbImage::from_pixel(640, 480, Rgb(GREY));
        let info = HudInfo {
            fps: 29.97,
            inference_ms: 12.5,
            model: "fcn-resnet18-voc",
            no_signal: false,
        };
        let layout = draw(&mut image, &info, &[]);
        let stats = layout.stats.expect("stats box");
        let style = HudStyle::for_height(480);
        assert_eq!(stats.top_left, Point::new(8, 8));
        // Three lines tall; as wide as the longest line ("inference 12.5 ms", 17 chars).
        assert_eq!(
            stats.size.height,
            3 * style.line_height() + 2 * style.padding
        );
        assert_eq!(stats.size.width, 17 * 9 + 2 * style.padding);
        assert!(layout.legend.is_none());
        // The white pixels are exactly the glyphs of the three lines, drawn on their own
        // with the font; every other pixel of the box is the darkened frame.
        let mut glyphs = RgbImage::new(640, 480);
        let text_style = MonoTextStyle::new(style.font, Rgb888::WHITE);
        for (i, line) in ["30.0 FPS", "inference 12.5 ms", "fcn-resnet18-voc"]
            .iter()
            .enumerate()
        {
            let y = 8 + style.padding + i as u32 * style.line_height() + 1;
            let at = Point::new((8 + style.padding) as i32, y as i32);
            Text::with_baseline(line, at, text_style, Baseline::Top)
                .draw(&mut Canvas::new(&mut glyphs))
                .unwrap();
        }
        let darkened = ((120 * (255 - 150) + 127) / 255) as u8;
        let mut text_pixels = 0;
        for (x, y, p) in image.enumerate_pixels() {
            if !inside(&stats, x, y) {
                continue;
            }
            if glyphs.get_pixel(x, y).0 == [255; 3] {
                text_pixels += 1;
                assert_eq!(p.0, [255; 3], "({x}, {y}) should be a glyph's");
            } else {
                assert_eq!(p.0, [darkened; 3], "({x}, {y}) should be backdrop");
            }
        }
        assert!(text_pixels > 100, "{text_pixels} glyph pixels");
        for (x, y, p) in image.enumerate_pixels() {
            if !inside(&stats, x, y) {
                assert_eq!(p.0, GREY, "({x}, {y}) outside the HUD changed");
            }
        }
    }

    #[test]
    fn legend_shows_a_swatch_in_each_present_class_colour() {
        let mut image = RgbImage::from_pixel(640, 480, Rgb(GREY));
        let legend = [
            class(0, "background", [0, 0, 0], 0.6),
            class(7, "car", [128, 128, 128], 0.3),
            class(15, "person", [192, 128, 128], 0.1),
        ];
        let layout = draw(&mut image, &HudInfo::default(), &legend);
        let rect = layout.legend.expect("legend box");
        let stats = layout.stats.unwrap();
        assert!(rect.top_left.y >= stats.top_left.y + stats.size.height as i32);
        assert_eq!(layout.swatches.len(), 3);
        for ((index, swatch), class) in layout.swatches.iter().zip(&legend) {
            assert_eq!(*index, class.index);
            assert!(swatch.size.width >= 4 && swatch.size.height >= 4);
            for p in swatch.points() {
                assert!(inside(&rect, p.x as u32, p.y as u32));
                assert_eq!(image.get_pixel(p.x as u32, p.y as u32).0, class.colour);
            }
        }
        // Swatches stack downwards without overlapping.
        let ys: Vec<i32> = layout.swatches.iter().map(|(_, r)| r.top_left.y).collect();
        assert!(ys.windows(2).all(|w| w[1] >= w[0] + 10), "{ys:?}");
        // Text of the legend is drawn right of the swatches.
        let (_, first) = layout.swatches[0];
        let text_x = first.top_left.x as u32 + first.size.width + 2;
        let white = (text_x..(rect.top_left.x as u32 + rect.size.width))
            .flat_map(|x| {
                (first.top_left.y as u32..first.top_left.y as u32 + 12).map(move |y| (x, y))
            })
            .filter(|&(x, y)| image.get_pixel(x, y).0 == [255; 3])
            .count();
        assert!(white > 20, "{white}");
    }

    #[test]
    fn long_names_are_clipped_and_overflowing_legends_summarised() {
        let mut image = RgbImage::from_pixel(120, 100, Rgb(GREY));
        let legend: Vec<PresentClass> = (0..20)
            .map(|i| class(i, &format!("class number {i}"), [i * 10, 0, 0], 0.05))
            .collect();
        let info = HudInfo {
            model: "a-model-name-much-longer-than-the-frame-is-wide",
            ..HudInfo::default()
        };
        let layout = draw(&mut image, &info, &legend);
        for r in [layout.stats.unwrap(), layout.legend.unwrap()] {
            assert!(r.top_left.x + r.size.width as i32 <= 120, "{r:?}");
            assert!(r.top_left.y + r.size.height as i32 <= 100, "{r:?}");
        }
        assert!(layout.swatches.len() < 20);
    }

    #[test]
    fn no_signal_banner_sits_in_the_middle() {
        let mut image = RgbImage::from_pixel(320, 240, Rgb(GREY));
        let info = HudInfo {
            no_signal: true,
            ..HudInfo::default()
        };
        let banner = draw(&mut image, &info, &[]).banner.expect("banner");
        let centre = banner.center();
        assert!(
            (centre.x - 160).abs() <= 2 && (centre.y - 120).abs() <= 2,
            "{centre:?}"
        );
        assert!(banner
            .points()
            .any(|p| image.get_pixel(p.x as u32, p.y as u32).0 == [255; 3]));
    }

    #[test]
    fn shade_rounds_every_value_and_alpha_to_nearest() {
        let row: Vec<u8> = (0..=255).flat_map(|v| [v, v, v]).collect();
        for alpha in 0..=255u8 {
            let mut image = RgbImage::from_raw(256, 1, row.clone()).unwrap();
            Canvas::new(&mut image).shade(&Rectangle::new(Point::zero(), Size::new(256, 1)), alpha);
            for (v, px) in image.pixels().enumerate() {
                let exact = ((v as u32 * (255 - alpha as u32) + 127) / 255) as u8;
                assert_eq!(px.0, [exact; 3], "value {v}, alpha {alpha}");
            }
        }
    }

    #[test]
    fn canvas_clips_drawing_outside_the_image() {
        let mut image = RgbImage::new(10, 10);
        let mut canvas = Canvas::new(&mut image);
        let big = Rectangle::new(Point::new(-5, -5), Size::new(30, 8));
        canvas.fill_solid(&big, Rgb888::new(1, 2, 3)).unwrap();
        canvas
            .draw_iter([
                Pixel(Point::new(-1, 4), Rgb888::RED),
                Pixel(Point::new(4, 20), Rgb888::RED),
            ])
            .unwrap();
        canvas.shade(&Rectangle::new(Point::new(8, 8), Size::new(10, 10)), 255);
        assert_eq!(image.get_pixel(0, 0).0, [1, 2, 3]);
        assert_eq!(image.get_pixel(9, 2).0, [1, 2, 3]);
        assert_eq!(image.get_pixel(0, 3).0, [0, 0, 0]);
    }
}
