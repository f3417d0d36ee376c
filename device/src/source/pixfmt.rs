//! Camera pixel formats and their conversion to RGB: one table from the V4L2 FourCC
//! to a converter. YUV uses BT.601 with limited range (Y 16–235), what webcams
//! deliver; MJPEG frames are decoded as JPEG (a frame that does not decode is
//! reported so the pipeline can skip and count it).

use std::fmt;
use std::str::FromStr;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::decode::DecodeLimits;
use crate::error::{Error, Result};

/// A V4L2 pixel format code: four ASCII bytes, little-endian in a `u32`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourCc(pub u32);

impl FourCc {
    pub const fn new(code: &[u8; 4]) -> Self {
        Self(u32::from_le_bytes(*code))
    }

    pub fn bytes(self) -> [u8; 4] {
        self.0.to_le_bytes()
    }
}

impl fmt::Display for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.bytes() {
            let c = if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            };
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FourCc({self})")
    }
}

/// The pixel formats seg-cam converts, in the order it prefers them when a camera
/// offers several at the same size and rate: uncompressed colour first (no decoding
/// cost, no artefacts), MJPEG next, grey last (the model wants colour).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    Yuyv,
    Uyvy,
    Nv12,
    Rgb24,
    Bgr24,
    Mjpeg,
    Grey,
}

type Converter = fn(&[u8], u32, u32, usize) -> Result<RgbImage>;

/// format, FourCC, name on the command line, converter.
const TABLE: [(PixelFormat, FourCc, &str, Converter); 8] = [
    (PixelFormat::Yuyv, FourCc::new(b"YUYV"), "yuyv", yuyv),
    (PixelFormat::Uyvy, FourCc::new(b"UYVY"), "uyvy", uyvy),
    (PixelFormat::Nv12, FourCc::new(b"NV12"), "nv12", nv12),
    (PixelFormat::Rgb24, FourCc::new(b"RGB3"), "rgb24", rgb24),
    (PixelFormat::Bgr24, FourCc::new(b"BGR3"), "bgr24", bgr24),
    (PixelFormat::Mjpeg, FourCc::new(b"MJPG"), "mjpeg", mjpeg),
    // Some cameras call their motion JPEG "JPEG"; it converts the same way.
    (PixelFormat::Mjpeg, FourCc::new(b"JPEG"), "mjpeg", mjpeg),
    (PixelFormat::Grey, FourCc::new(b"GREY"), "grey", grey),
];

impl PixelFormat {
    pub const ALL: [PixelFormat; 7] = [
        Self::Yuyv,
        Self::Uyvy,
        Self::Nv12,
        Self::Rgb24,
        Self::Bgr24,
        Self::Mjpeg,
        Self::Grey,
    ];

    /// The format of a V4L2 FourCC, if seg-cam converts it.
    pub fn from_fourcc(code: FourCc) -> Option<Self> {
        TABLE.iter().find(|e| e.1 == code).map(|e| e.0)
    }

    /// The main FourCC of this format.
    pub fn fourcc(self) -> FourCc {
        self.entry().1
    }

    pub fn name(self) -> &'static str {
        self.entry().2
    }

    /// Rank in the preference order (lower is preferred).
    pub fn preference(self) -> usize {
        Self::ALL.iter().position(|&f| f == self).expect("listed")
    }

    /// The bytes of one row without padding (0 for compressed formats).
    pub fn min_stride(self, width: u32) -> usize {
        let w = width as usize;
        match self {
            Self::Yuyv | Self::Uyvy => 2 * w.div_ceil(2) * 2,
            Self::Nv12 | Self::Grey => w,
            Self::Rgb24 | Self::Bgr24 => 3 * w,
            Self::Mjpeg => 0,
        }
    }

    /// Convert one frame: `stride` bytes per row (of the luma plane for NV12), as the
    /// driver's `bytesperline` says; 0 means rows without padding. A stride too small
    /// for the width, or an empty size, is an error: guessing would misread the frame.
    pub fn to_rgb(self, data: &[u8], width: u32, height: u32, stride: usize) -> Result<RgbImage> {
        if width == 0 || height == 0 {
            return Err(Error::Invalid(format!(
                "{self} frame of {width}×{height}: an empty size"
            )));
        }
        let min = self.min_stride(width);
        if stride != 0 && stride < min {
            return Err(Error::Invalid(format!(
                "{self} frame of {width}×{height}: {stride} bytes per row, fewer than the {min} it needs"
            )));
        }
        (self.entry().3)(data, width, height, stride.max(min))
    }

    fn entry(self) -> &'static (PixelFormat, FourCc, &'static str, Converter) {
        TABLE
            .iter()
            .find(|e| e.0 == self)
            .expect("every format is in the table")
    }
}

impl FromStr for PixelFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        TABLE
            .iter()
            .find(|e| e.2 == lower || e.1.to_string().eq_ignore_ascii_case(s))
            .map(|e| e.0)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|f| f.name()).collect();
                Error::Invalid(format!(
                    "pixel format '{s}': expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// BT.601 limited-range YCbCr to RGB, in fixed point (×256).
#[inline(always)]
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 298 * (y as i32 - 16);
    let d = u as i32 - 128;
    let e = v as i32 - 128;
    let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
    [
        clamp(c + 409 * e),
        clamp(c - 100 * d - 208 * e),
        clamp(c + 516 * d),
    ]
}

fn check_size(data: &[u8], need: usize, what: &str) -> Result<()> {
    if data.len() < need {
        return Err(Error::Invalid(format!(
            "{what} frame of {} bytes, expected at least {need}",
            data.len()
        )));
    }
    Ok(())
}

/// A frame of `height` rows `stride` apart; the last row need not be padded.
fn rows_need(stride: usize, row: usize, height: u32) -> usize {
    if height == 0 {
        0
    } else {
        stride * (height as usize - 1) + row
    }
}

/// Packed 4:2:2 with the byte positions of Y0, U, Y1 and V in each 4-byte group.
fn packed_422(
    data: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    [y0, u, y1, v]: [usize; 4],
    what: &str,
) -> Result<RgbImage> {
    let row_bytes = PixelFormat::Yuyv.min_stride(width);
    check_size(data, rows_need(stride, row_bytes, height), what)?;
    let mut out = RgbImage::new(width, height);
    let w = width as usize;
    for (y, dst) in out.chunks_exact_mut(w * 3).enumerate() {
        let src = &data[y * stride..][..row_bytes];
        for (x, px) in dst.chunks_exact_mut(3).enumerate() {
            let group = &src[(x / 2) * 4..][..4];
            let luma = if x % 2 == 0 { group[y0] } else { group[y1] };
            px.copy_from_slice(&yuv_to_rgb(luma, group[u], group[v]));
        }
    }
    Ok(out)
}

fn yuyv(data: &[u8], width: u32, height: u32, stride: usize) -> Result<RgbImage> {
    packed_422(data, width, height, stride, [0, 1, 2, 3], "YUYV")
}

fn uyvy(data: &[u8], width: u32, height: u32, stride: usize) -> Result<RgbImage> {
    packed_422(data, width, height, stride, [1, 0, 3, 2], "UYVY")
}

/// A full-resolution Y plane, then one plane of interleaved U, V at half resolution
/// in both directions (same stride).
fn nv12(data: &[u8], width: u32, height: u32, stride: usize) -> Result<RgbImage> {
    let w = width as usize;
    let chroma_w = 2 * w.div_ceil(2);
    let chroma_rows = height.div_ceil(2);
    let luma_size = stride * height as usize;
    check_size(
        data,
        luma_size + rows_need(stride, chroma_w, chroma_rows),
        "NV12",
    )?;
    let (luma, chroma) = data.split_at(luma_size);
    let mut out = RgbImage::new(width, height);
    for (y, dst) in out.chunks_exact_mut(w * 3).enumerate() {
        let ys = &luma[y * stride..][..w];
        let uv = &chroma[(y / 2) * stride..][..chroma_w];
        for (x, px) in dst.chunks_exact_mut(3).enumerate() {
            let pair = &uv[(x / 2) * 2..][..2];
            px.copy_from_slice(&yuv_to_rgb(ys[x], pair[0], pair[1]));
        }
    }
    Ok(out)
}

/// 3 bytes per pixel in `order` (the positions of R, G, B).
fn packed_rgb(
    data: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    [r, g, b]: [usize; 3],
    what: &str,
) -> Result<RgbImage> {
    let row_bytes = 3 * width as usize;
    check_size(data, rows_need(stride, row_bytes, height), what)?;
    let mut out = RgbImage::new(width, height);
    for (y, dst) in out.chunks_exact_mut(row_bytes.max(1)).enumerate() {
        let src = &data[y * stride..][..row_bytes];
        for (px, s) in dst.chunks_exact_mut(3).zip(src.chunks_exact(3)) {
            px.copy_from_slice(&[s[r], s[g], s[b]]);
        }
    }
    Ok(out)
}

fn rgb24(data: &[u8], width: u32, height: u32, stride: usize) -> Result<RgbImage> {
    packed_rgb(data, width, height, stride, [0, 1, 2], "RGB3")
}

fn bgr24(data: &[u8], width: u32, height: u32, stride: usize) -> Result<RgbImage> {
    packed_rgb(data, width, height, stride, [2, 1, 0], "BGR3")
}

fn grey(data: &[u8], width: u32, height: u32, stride: usize) -> Result<RgbImage> {
    let w = width as usize;
    check_size(data, rows_need(stride, w, height), "GREY")?;
    let mut out = RgbImage::new(width, height);
    for (y, dst) in out.chunks_exact_mut((w * 3).max(1)).enumerate() {
        for (px, &v) in dst.chunks_exact_mut(3).zip(&data[y * stride..][..w]) {
            px.copy_from_slice(&[v, v, v]);
        }
    }
    Ok(out)
}

/// A JPEG frame; its own header gives the size (a camera may differ from what it
/// negotiated), so `width` and `height` are not enforced.
fn mjpeg(data: &[u8], _width: u32, _height: u32, _stride: usize) -> Result<RgbImage> {
    // Frames end at the JPEG end marker; a buffer may carry padding after it.
    if data.len() < 4 || data[..2] != [0xff, 0xd8] {
        return Err(Error::Invalid(format!(
            "MJPEG frame of {} bytes does not start with a JPEG marker",
            data.len()
        )));
    }
    // A camera's frame is never near the default limits; a frame claiming more is corrupt.
    crate::decode::decode_bytes(data, image::ImageFormat::Jpeg, &DecodeLimits::default())
        .map(|img| img.to_rgb8())
        .map_err(|e| Error::Invalid(format!("MJPEG frame of {} bytes: {e}", data.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Limited-range BT.601 codes of some colours (Y, Cb, Cr).
    const BLACK: [u8; 3] = [16, 128, 128];
    const WHITE: [u8; 3] = [235, 128, 128];
    const RED: [u8; 3] = [81, 90, 240];
    const GREEN: [u8; 3] = [145, 54, 34];
    const BLUE: [u8; 3] = [41, 240, 110];

    #[test]
    fn bt601_limited_range_reference_colours() {
        assert_eq!(yuv_to_rgb(BLACK[0], BLACK[1], BLACK[2]), [0, 0, 0]);
        assert_eq!(yuv_to_rgb(WHITE[0], WHITE[1], WHITE[2]), [255, 255, 255]);
        let near =
            |got: [u8; 3], want: [u8; 3]| got.iter().zip(want).all(|(&g, w)| g.abs_diff(w) <= 2);
        let red = yuv_to_rgb(RED[0], RED[1], RED[2]);
        assert!(near(red, [255, 0, 0]), "{red:?}");
        let green = yuv_to_rgb(GREEN[0], GREEN[1], GREEN[2]);
        assert!(near(green, [0, 255, 0]), "{green:?}");
        let blue = yuv_to_rgb(BLUE[0], BLUE[1], BLUE[2]);
        assert!(near(blue, [0, 0, 255]), "{blue:?}");
        // Mid grey: Y 126 → (126 − 16)·298/256 = 128.
        assert_eq!(yuv_to_rgb(126, 128, 128), [128, 128, 128]);
    }

    #[test]
    fn yuyv_and_uyvy_share_chroma_between_pixel_pairs() {
        // 4×2: row 0 = black, white | white, black (one chroma pair each);
        // row 1 = red, red | blue, blue; a 2-byte pad at the end of each row.
        let groups = [
            [
                [BLACK[0], 128, WHITE[0], 128],
                [WHITE[0], 128, BLACK[0], 128],
            ],
            [
                [RED[0], RED[1], RED[0], RED[2]],
                [BLUE[0], BLUE[1], BLUE[0], BLUE[2]],
            ],
        ];
        let mut yuyv = Vec::new();
        let mut uyvy = Vec::new();
        for row in groups {
            for [y0, u, y1, v] in row {
                yuyv.extend([y0, u, y1, v]);
                uyvy.extend([u, y0, v, y1]);
            }
            yuyv.extend([0, 0]);
            uyvy.extend([0, 0]);
        }
        for (format, data) in [(PixelFormat::Yuyv, yuyv), (PixelFormat::Uyvy, uyvy)] {
            let img = format.to_rgb(&data, 4, 2, 10).unwrap();
            let px = |x, y| img.get_pixel(x, y).0;
            assert_eq!(px(0, 0), [0, 0, 0], "{format}");
            assert_eq!(px(1, 0), [255, 255, 255], "{format}");
            assert_eq!(px(2, 0), [255, 255, 255], "{format}");
            assert_eq!(px(3, 0), [0, 0, 0], "{format}");
            assert_eq!(px(0, 1), yuv_to_rgb(RED[0], RED[1], RED[2]), "{format}");
            assert_eq!(px(1, 1), px(0, 1), "{format}");
            assert_eq!(px(3, 1), yuv_to_rgb(BLUE[0], BLUE[1], BLUE[2]), "{format}");
            let short = format
                .to_rgb(&data[..15], 4, 2, 10)
                .unwrap_err()
                .to_string();
            assert!(short.contains("15 bytes"), "{short}");
        }
    }

    #[test]
    fn nv12_reads_quarter_resolution_chroma_after_the_luma_plane() {
        // 4×2: left 2×2 block red, right 2×2 block blue.
        let mut data = vec![
            RED[0], RED[0], BLUE[0], BLUE[0], RED[0], RED[0], BLUE[0], BLUE[0],
        ];
        data.extend([RED[1], RED[2], BLUE[1], BLUE[2]]);
        let img = PixelFormat::Nv12.to_rgb(&data, 4, 2, 4).unwrap();
        let red = yuv_to_rgb(RED[0], RED[1], RED[2]);
        let blue = yuv_to_rgb(BLUE[0], BLUE[1], BLUE[2]);
        for y in 0..2 {
            assert_eq!(img.get_pixel(0, y).0, red);
            assert_eq!(img.get_pixel(1, y).0, red);
            assert_eq!(img.get_pixel(2, y).0, blue);
            assert_eq!(img.get_pixel(3, y).0, blue);
        }
        assert!(PixelFormat::Nv12.to_rgb(&data[..11], 4, 2, 4).is_err());
    }

    #[test]
    fn rgb3_bgr3_and_grey_honour_the_stride() {
        // 2×2 with one pad byte per row.
        let rgb = [1, 2, 3, 4, 5, 6, 0, 7, 8, 9, 10, 11, 12, 0];
        let img = PixelFormat::Rgb24.to_rgb(&rgb, 2, 2, 7).unwrap();
        assert_eq!(img.as_raw(), &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let img = PixelFormat::Bgr24.to_rgb(&rgb, 2, 2, 7).unwrap();
        assert_eq!(img.as_raw(), &[3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10]);
        let grey = [10, 20, 99, 30, 40, 99];
        let img = PixelFormat::Grey.to_rgb(&grey, 2, 2, 3).unwrap();
        assert_eq!(
            img.as_raw(),
            &[10, 10, 10, 20, 20, 20, 30, 30, 30, 40, 40, 40]
        );
    }

    #[test]
    fn mjpeg_decodes_and_corrupt_frames_are_errors() {
        let colour = [200, 40, 90];
        let frame = RgbImage::from_pixel(32, 16, image::Rgb(colour));
        let jpeg = crate::jpeg::encode_jpeg(&frame, 95).unwrap();
        let mut padded = jpeg.clone();
        padded.extend([0; 64]); // buffers are larger than the frame
        let img = PixelFormat::Mjpeg.to_rgb(&padded, 32, 16, 0).unwrap();
        assert_eq!(img.dimensions(), (32, 16));
        let px = img.get_pixel(10, 8).0;
        assert!(
            px.iter().zip(colour).all(|(&a, b)| a.abs_diff(b) <= 4),
            "{px:?}"
        );

        let truncated = PixelFormat::Mjpeg.to_rgb(&jpeg[..jpeg.len() / 3], 32, 16, 0);
        assert!(truncated.is_err());
        let garbage = PixelFormat::Mjpeg
            .to_rgb(&[0x12; 500], 32, 16, 0)
            .unwrap_err();
        assert!(garbage.to_string().contains("JPEG marker"), "{garbage}");
    }

    #[test]
    fn fourccs_and_names_round_trip() {
        assert_eq!(
            PixelFormat::Yuyv.fourcc().0,
            0x5659_5559,
            "the kernel's value"
        );
        assert_eq!(PixelFormat::Mjpeg.fourcc().0, 0x4750_4a4d);
        for f in PixelFormat::ALL {
            assert_eq!(PixelFormat::from_fourcc(f.fourcc()), Some(f));
            assert_eq!(f.name().parse::<PixelFormat>().unwrap(), f);
        }
        assert_eq!(
            PixelFormat::from_fourcc(FourCc::new(b"JPEG")),
            Some(PixelFormat::Mjpeg)
        );
        assert_eq!("RGB3".parse::<PixelFormat>().unwrap(), PixelFormat::Rgb24);
        assert_eq!(PixelFormat::from_fourcc(FourCc::new(b"H264")), None);
        assert_eq!(FourCc::new(b"H264").to_string(), "H264");
        assert!("h264".parse::<PixelFormat>().is_err());
    }
}
