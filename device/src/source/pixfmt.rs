//! Camera pixel formats and their conversion to RGB: one table from the V4L2 FourCC
//! to a format. A frame arrives as one or more planes (one buffer for packed and
//! single-planar formats, one per plane for the multi-planar API), each with the
//! driver's bytes per row; YCbCr is decoded with the driver's colorimetry. MJPEG
//! frames are decoded as JPEG (a frame that does not decode is reported so the
//! pipeline can skip and count it).

use std::fmt;
use std::str::FromStr;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::colorimetry::{Colorimetry, YuvToRgb};
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
    /// 4:2:0, a Y plane then one plane of interleaved Cb, Cr.
    Nv12,
    /// As NV12 with Cr before Cb.
    Nv21,
    /// 4:2:0, Y, Cb and Cr planes (I420).
    Yuv420,
    /// 4:2:0, Y, Cr and Cb planes (YV12).
    Yvu420,
    Rgb24,
    Bgr24,
    Mjpeg,
    Grey,
}

/// format, FourCC, name on the command line. A format has several FourCCs where the
/// kernel names its multi-planar layout apart (NV12 in one buffer, NM12 in two).
const TABLE: [(PixelFormat, FourCc, &str); 15] = [
    (PixelFormat::Yuyv, FourCc::new(b"YUYV"), "yuyv"),
    (PixelFormat::Uyvy, FourCc::new(b"UYVY"), "uyvy"),
    (PixelFormat::Nv12, FourCc::new(b"NV12"), "nv12"),
    (PixelFormat::Nv12, FourCc::new(b"NM12"), "nv12"),
    (PixelFormat::Nv21, FourCc::new(b"NV21"), "nv21"),
    (PixelFormat::Nv21, FourCc::new(b"NM21"), "nv21"),
    (PixelFormat::Yuv420, FourCc::new(b"YU12"), "yuv420"),
    (PixelFormat::Yuv420, FourCc::new(b"YM12"), "yuv420"),
    (PixelFormat::Yvu420, FourCc::new(b"YV12"), "yvu420"),
    (PixelFormat::Yvu420, FourCc::new(b"YM21"), "yvu420"),
    (PixelFormat::Rgb24, FourCc::new(b"RGB3"), "rgb24"),
    (PixelFormat::Bgr24, FourCc::new(b"BGR3"), "bgr24"),
    (PixelFormat::Mjpeg, FourCc::new(b"MJPG"), "mjpeg"),
    // Some cameras call their motion JPEG "JPEG"; it converts the same way.
    (PixelFormat::Mjpeg, FourCc::new(b"JPEG"), "mjpeg"),
    (PixelFormat::Grey, FourCc::new(b"GREY"), "grey"),
];

/// The FourCCs whose planes come in separate buffers (the multi-planar API only).
const SEPARATE_PLANES: [FourCc; 4] = [
    FourCc::new(b"NM12"),
    FourCc::new(b"NM21"),
    FourCc::new(b"YM12"),
    FourCc::new(b"YM21"),
];

impl FourCc {
    /// Whether each plane of a frame has its own buffer. Drivers then need no large
    /// contiguous allocation for a frame, which the SoC ISPs that offer it prefer.
    pub fn separate_planes(self) -> bool {
        SEPARATE_PLANES.contains(&self)
    }
}

/// One plane of a frame as the driver filled it: its bytes and the bytes from one row
/// to the next (`bytesperline`; 0 means rows without padding).
#[derive(Debug, Clone, Copy)]
pub struct Plane<'a> {
    pub data: &'a [u8],
    pub stride: usize,
}

impl PixelFormat {
    pub const ALL: [PixelFormat; 10] = [
        Self::Yuyv,
        Self::Uyvy,
        Self::Nv12,
        Self::Nv21,
        Self::Yuv420,
        Self::Yvu420,
        Self::Rgb24,
        Self::Bgr24,
        Self::Mjpeg,
        Self::Grey,
    ];

    /// The format of a V4L2 FourCC, if seg-cam converts it.
    pub fn from_fourcc(code: FourCc) -> Option<Self> {
        TABLE.iter().find(|e| e.1 == code).map(|e| e.0)
    }

    /// The main (single-buffer) FourCC of this format.
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

    /// The bytes of one row of the first plane without padding (0 for compressed
    /// formats).
    pub fn min_stride(self, width: u32) -> usize {
        let w = width as usize;
        match self {
            Self::Yuyv | Self::Uyvy => 2 * w.div_ceil(2) * 2,
            Self::Nv12 | Self::Nv21 | Self::Yuv420 | Self::Yvu420 | Self::Grey => w,
            Self::Rgb24 | Self::Bgr24 => 3 * w,
            Self::Mjpeg => 0,
        }
    }

    /// Convert one frame held in one buffer, `stride` bytes per row of its first plane
    /// (0: no padding), BT.601 limited range: what webcams send.
    pub fn to_rgb(self, data: &[u8], width: u32, height: u32, stride: usize) -> Result<RgbImage> {
        self.convert(
            &[Plane { data, stride }],
            width,
            height,
            Colorimetry::BT601_LIMITED,
        )
    }

    /// Convert one frame: its planes as the driver gave them (one buffer, or one per
    /// plane), decoded with `colorimetry`. A stride too small for the width, an empty
    /// size or too few bytes is an error: guessing would misread the frame.
    pub fn convert(
        self,
        planes: &[Plane],
        width: u32,
        height: u32,
        colorimetry: Colorimetry,
    ) -> Result<RgbImage> {
        if width == 0 || height == 0 {
            return Err(Error::Invalid(format!(
                "{self} frame of {width}×{height}: an empty size"
            )));
        }
        let Some(&first) = planes.first() else {
            return Err(Error::Invalid(format!("{self} frame without planes")));
        };
        let (w, h) = (width as usize, height as usize);
        let yuv = colorimetry.converter();
        let one = |what| self.only_plane(planes, w, what);
        match self {
            Self::Yuyv => packed_422(one("YUYV")?, w, h, [0, 1, 2, 3], &yuv, "YUYV"),
            Self::Uyvy => packed_422(one("UYVY")?, w, h, [1, 0, 3, 2], &yuv, "UYVY"),
            Self::Rgb24 => packed_rgb(one("RGB3")?, w, h, [0, 1, 2], "RGB3"),
            Self::Bgr24 => packed_rgb(one("BGR3")?, w, h, [2, 1, 0], "BGR3"),
            Self::Grey => grey(one("GREY")?, w, h),
            Self::Mjpeg => mjpeg(first.data),
            Self::Nv12 | Self::Nv21 | Self::Yuv420 | Self::Yvu420 => {
                let (luma, chroma) = self.planes_420(planes, w, h)?;
                yuv420(luma, chroma, w, h, &yuv, self.name())
            }
        }
    }

    /// The planes of a one-buffer 4:2:0 frame whose driver pads the Y plane to more
    /// rows than the picture has (hardware that aligns heights to 16 or 32); the
    /// driver's `sizeimage`, 1.5 × stride × padded rows, says how many. `None` when
    /// there is no such padding (chroma right after `height` rows, the usual layout).
    pub fn padded_planes(
        self,
        data: &[u8],
        stride: usize,
        height: u32,
        sizeimage: usize,
    ) -> Option<Vec<Plane<'_>>> {
        let interleaved = match self {
            Self::Nv12 | Self::Nv21 => true,
            Self::Yuv420 | Self::Yvu420 => false,
            _ => return None,
        };
        if stride == 0 || !stride.is_multiple_of(2) || !sizeimage.is_multiple_of(3 * stride) {
            return None;
        }
        let rows = 2 * sizeimage / (3 * stride);
        if rows <= height as usize {
            return None;
        }
        let part = |from: usize, to: usize| data.get(from..to.min(data.len())).unwrap_or_default();
        let luma = stride * rows;
        let y = Plane {
            data: part(0, luma),
            stride,
        };
        Some(if interleaved {
            vec![
                y,
                Plane {
                    data: part(luma, sizeimage),
                    stride,
                },
            ]
        } else {
            let chroma = (stride / 2) * (rows / 2);
            vec![
                y,
                Plane {
                    data: part(luma, luma + chroma),
                    stride: stride / 2,
                },
                Plane {
                    data: part(luma + chroma, sizeimage),
                    stride: stride / 2,
                },
            ]
        })
    }

    /// The one plane of a packed format, its stride checked.
    fn only_plane<'a>(self, planes: &[Plane<'a>], w: usize, what: &str) -> Result<Plane<'a>> {
        match planes {
            [plane] => checked_stride(*plane, self.min_stride(w as u32), what, "row"),
            _ => Err(Error::Invalid(format!(
                "{what} frame in {} planes, expected one",
                planes.len()
            ))),
        }
    }

    /// The Y plane and the chroma of a 4:2:0 frame, from one buffer (the planes one
    /// after the other, as V4L2's single-planar layout puts them) or from one buffer
    /// per plane.
    fn planes_420<'a>(
        self,
        planes: &[Plane<'a>],
        w: usize,
        h: usize,
    ) -> Result<(Plane<'a>, Chroma<'a>)> {
        let what = self.name();
        let interleaved = matches!(self, Self::Nv12 | Self::Nv21);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let chroma_row = if interleaved { 2 * cw } else { cw };
        // The bytes a chroma row's samples span (the interleaved Cr view starts one in).
        let span = if interleaved { 2 * cw - 1 } else { cw };
        let luma = checked_stride(planes[0], w, what, "Y row")?;
        let (first, second) = match (planes.len(), interleaved) {
            (1, _) => {
                // Chroma follows the Y plane; its stride is the Y stride (interleaved)
                // or half of it (separate Cb, Cr planes), as the kernel documents, and
                // never less than a chroma row (an odd width's last CbCr pair).
                let rest = luma.data.get(luma.stride * h..).unwrap_or_default();
                let stride = if interleaved {
                    luma.stride
                } else {
                    luma.stride.div_ceil(2)
                }
                .max(chroma_row);
                let first = Plane { data: rest, stride };
                let second = if interleaved {
                    first
                } else {
                    let after = rest.get(stride * ch..).unwrap_or_default();
                    Plane {
                        data: after,
                        stride,
                    }
                };
                (first, second)
            }
            (2, true) => {
                let p = checked_stride(planes[1], chroma_row, what, "CbCr row")?;
                (p, p)
            }
            (3, false) => (
                checked_stride(planes[1], chroma_row, what, "chroma row")?,
                checked_stride(planes[2], chroma_row, what, "chroma row")?,
            ),
            (n, _) => {
                return Err(Error::Invalid(format!(
                    "{what} frame in {n} planes, expected 1 or {}",
                    if interleaved { 2 } else { 3 }
                )))
            }
        };
        let chroma = if interleaved {
            // Cb and Cr alternate in one plane: each starts at its own byte.
            let (cb, cr) = if self == Self::Nv12 { (0, 1) } else { (1, 0) };
            Chroma {
                cb: shifted(first, cb),
                cr: shifted(first, cr),
                step: 2,
                row: span,
            }
        } else {
            let (cb, cr) = if self == Self::Yuv420 {
                (first, second)
            } else {
                (second, first)
            };
            Chroma {
                cb,
                cr,
                step: 1,
                row: span,
            }
        };
        Ok((luma, chroma))
    }

    fn entry(self) -> &'static (PixelFormat, FourCc, &'static str) {
        TABLE
            .iter()
            .find(|e| e.0 == self)
            .expect("every format is in the table")
    }
}

/// A plane with its stride resolved (0: the minimum) and checked against `min`.
fn checked_stride<'a>(plane: Plane<'a>, min: usize, what: &str, row: &str) -> Result<Plane<'a>> {
    if plane.stride != 0 && plane.stride < min {
        return Err(Error::Invalid(format!(
            "{what} frame: {} bytes per {row}, fewer than the {min} it needs",
            plane.stride
        )));
    }
    Ok(Plane {
        data: plane.data,
        stride: plane.stride.max(min),
    })
}

/// The plane from byte `offset` on (empty when it is shorter).
fn shifted(plane: Plane, offset: usize) -> Plane {
    Plane {
        data: plane.data.get(offset..).unwrap_or_default(),
        stride: plane.stride,
    }
}

/// Where a 4:2:0 frame's Cb and Cr samples are: sample `i` of chroma row `r` is
/// `cb.data[r * cb.stride + i * step]` (and the same for Cr).
struct Chroma<'a> {
    cb: Plane<'a>,
    cr: Plane<'a>,
    step: usize,
    /// The bytes one row's samples span from the start of the row.
    row: usize,
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

/// On the command line: the name (`yuyv`) or the fourcc (`YUYV`), listed by `--help`.
#[cfg(feature = "clap")]
impl clap::ValueEnum for PixelFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let aliases = TABLE
            .iter()
            .filter(|e| e.0 == *self)
            .flat_map(|e| [e.1.to_string(), e.2.to_string()])
            .filter(|a| a != self.name());
        Some(clap::builder::PossibleValue::new(self.name()).aliases(aliases))
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
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

/// A plane of `height` rows `stride` apart; the last row need not be padded.
fn rows_need(stride: usize, row: usize, height: usize) -> usize {
    if height == 0 {
        0
    } else {
        stride * (height - 1) + row
    }
}

/// Packed 4:2:2 with the byte positions of Y0, U, Y1 and V in each 4-byte group.
fn packed_422(
    plane: Plane,
    w: usize,
    h: usize,
    [y0, u, y1, v]: [usize; 4],
    yuv: &YuvToRgb,
    what: &str,
) -> Result<RgbImage> {
    let row_bytes = PixelFormat::Yuyv.min_stride(w as u32);
    check_size(plane.data, rows_need(plane.stride, row_bytes, h), what)?;
    let mut out = RgbImage::new(w as u32, h as u32);
    for (y, dst) in out.chunks_exact_mut(w * 3).enumerate() {
        let src = &plane.data[y * plane.stride..][..row_bytes];
        for (x, px) in dst.chunks_exact_mut(3).enumerate() {
            let group = &src[(x / 2) * 4..][..4];
            let luma = if x % 2 == 0 { group[y0] } else { group[y1] };
            px.copy_from_slice(&yuv.rgb(luma, group[u], group[v]));
        }
    }
    Ok(out)
}

/// Full-resolution Y, Cb and Cr at half resolution in both directions (odd sizes
/// round the chroma up).
fn yuv420(
    luma: Plane,
    chroma: Chroma,
    w: usize,
    h: usize,
    yuv: &YuvToRgb,
    what: &str,
) -> Result<RgbImage> {
    check_size(luma.data, rows_need(luma.stride, w, h), what)?;
    let ch = h.div_ceil(2);
    for plane in [&chroma.cb, &chroma.cr] {
        if plane.data.len() < rows_need(plane.stride, chroma.row, ch) {
            return Err(Error::Invalid(format!(
                "{what} frame of {w}×{h}: the chroma plane is shorter than {ch} rows {} bytes apart",
                plane.stride
            )));
        }
    }
    let mut out = RgbImage::new(w as u32, h as u32);
    for (y, dst) in out.chunks_exact_mut(w * 3).enumerate() {
        let ys = &luma.data[y * luma.stride..][..w];
        let cb = &chroma.cb.data[(y / 2) * chroma.cb.stride..];
        let cr = &chroma.cr.data[(y / 2) * chroma.cr.stride..];
        for (x, px) in dst.chunks_exact_mut(3).enumerate() {
            let c = (x / 2) * chroma.step;
            px.copy_from_slice(&yuv.rgb(ys[x], cb[c], cr[c]));
        }
    }
    Ok(out)
}

/// 3 bytes per pixel in `order` (the positions of R, G, B).
fn packed_rgb(
    plane: Plane,
    w: usize,
    h: usize,
    [r, g, b]: [usize; 3],
    what: &str,
) -> Result<RgbImage> {
    let row_bytes = 3 * w;
    check_size(plane.data, rows_need(plane.stride, row_bytes, h), what)?;
    let mut out = RgbImage::new(w as u32, h as u32);
    for (y, dst) in out.chunks_exact_mut(row_bytes).enumerate() {
        let src = &plane.data[y * plane.stride..][..row_bytes];
        for (px, s) in dst.chunks_exact_mut(3).zip(src.chunks_exact(3)) {
            px.copy_from_slice(&[s[r], s[g], s[b]]);
        }
    }
    Ok(out)
}

fn grey(plane: Plane, w: usize, h: usize) -> Result<RgbImage> {
    check_size(plane.data, rows_need(plane.stride, w, h), "GREY")?;
    let mut out = RgbImage::new(w as u32, h as u32);
    for (y, dst) in out.chunks_exact_mut(w * 3).enumerate() {
        for (px, &v) in dst
            .chunks_exact_mut(3)
            .zip(&plane.data[y * plane.stride..][..w])
        {
            px.copy_from_slice(&[v, v, v]);
        }
    }
    Ok(out)
}

/// A JPEG frame; its own header gives the size (a camera may differ from what it
/// negotiated), so the negotiated size is not enforced.
fn mjpeg(data: &[u8]) -> Result<RgbImage> {
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
    use crate::source::colorimetry::{Matrix, Range};

    fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
        Colorimetry::BT601_LIMITED.converter().rgb(y, u, v)
    }

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

    /// A w×h 4:2:0 picture whose chroma differs per 2×2 block: Y = 16 + 3x + 5y,
    /// Cb = 60 + 7·bx + 11·by, Cr = 200 − 5·bx − 3·by (bx, by: the block).
    fn picture_420(w: usize, h: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let luma = (0..h)
            .flat_map(|y| (0..w).map(move |x| (16 + 3 * x + 5 * y) as u8))
            .collect();
        let cb = (0..ch)
            .flat_map(|by| (0..cw).map(move |bx| (60 + 7 * bx + 11 * by) as u8))
            .collect();
        let cr = (0..ch)
            .flat_map(|by| (0..cw).map(move |bx| (200 - 5 * bx - 3 * by) as u8))
            .collect();
        (luma, cb, cr)
    }

    /// Rows of `row` bytes from `data`, each padded to `stride`.
    fn padded(data: &[u8], row: usize, stride: usize) -> Vec<u8> {
        data.chunks(row)
            .flat_map(|r| {
                let mut r = r.to_vec();
                r.resize(stride, 0xee);
                r
            })
            .collect()
    }

    fn interleave(first: &[u8], second: &[u8]) -> Vec<u8> {
        first
            .iter()
            .zip(second)
            .flat_map(|(&a, &b)| [a, b])
            .collect()
    }

    #[test]
    fn every_420_layout_of_an_odd_sized_frame_gives_the_same_picture() {
        let (w, h) = (7usize, 5usize);
        let cw = 4;
        let (luma, cb, cr) = picture_420(w, h);
        let c = Colorimetry {
            matrix: Matrix::Bt709,
            range: Range::Full,
        };
        let yuv = c.converter();
        let want = |x: usize, y: usize| {
            let i = (y / 2) * cw + x / 2;
            yuv.rgb(luma[y * w + x], cb[i], cr[i])
        };
        let ys = 9; // padded Y rows
        let y_plane = padded(&luma, w, ys);
        // Single buffer layouts: chroma after Y, NV at the Y stride, planar at half of it.
        let nv12 = [y_plane.clone(), padded(&interleave(&cb, &cr), 2 * cw, ys)].concat();
        let nv21 = [y_plane.clone(), padded(&interleave(&cr, &cb), 2 * cw, ys)].concat();
        let half = ys.div_ceil(2);
        let yu12 = [
            y_plane.clone(),
            padded(&cb, cw, half),
            padded(&cr, cw, half),
        ]
        .concat();
        let yv12 = [
            y_plane.clone(),
            padded(&cr, cw, half),
            padded(&cb, cw, half),
        ]
        .concat();
        let one = |data: &[u8]| vec![data.to_vec()];
        // Multi-planar: one buffer per plane, each with its own stride.
        let nm12 = vec![y_plane.clone(), padded(&interleave(&cb, &cr), 2 * cw, 10)];
        let ym12 = vec![y_plane.clone(), padded(&cb, cw, 6), padded(&cr, cw, 5)];
        let ym21 = vec![y_plane.clone(), padded(&cr, cw, 5), padded(&cb, cw, 6)];
        let cases = [
            (PixelFormat::Nv12, one(&nv12), vec![ys]),
            (PixelFormat::Nv21, one(&nv21), vec![ys]),
            (PixelFormat::Yuv420, one(&yu12), vec![ys]),
            (PixelFormat::Yvu420, one(&yv12), vec![ys]),
            (PixelFormat::Nv12, nm12, vec![ys, 10]),
            (PixelFormat::Yuv420, ym12, vec![ys, 6, 5]),
            (PixelFormat::Yvu420, ym21, vec![ys, 5, 6]),
        ];
        for (format, buffers, strides) in cases {
            let planes: Vec<Plane> = buffers
                .iter()
                .zip(&strides)
                .map(|(data, &stride)| Plane { data, stride })
                .collect();
            let img = format.convert(&planes, w as u32, h as u32, c).unwrap();
            for y in 0..h {
                for x in 0..w {
                    assert_eq!(
                        img.get_pixel(x as u32, y as u32).0,
                        want(x, y),
                        "{format} in {} planes at {x},{y}",
                        planes.len()
                    );
                }
            }
            // The last row need not be padded; one byte less than that is an error.
            let last_row = if matches!(format, PixelFormat::Nv12 | PixelFormat::Nv21) {
                2 * cw
            } else {
                cw
            };
            let last_stride = match planes.len() {
                1 if last_row == cw => half,
                1 => ys,
                _ => *strides.last().unwrap(),
            };
            let unpadded = buffers.last().unwrap().len() - (last_stride - last_row);
            for (cut, ok) in [(unpadded, true), (unpadded - 1, false)] {
                let mut short = buffers.clone();
                short.last_mut().unwrap().truncate(cut);
                let planes: Vec<Plane> = short
                    .iter()
                    .zip(&strides)
                    .map(|(data, &stride)| Plane { data, stride })
                    .collect();
                let got = format.convert(&planes, w as u32, h as u32, c);
                assert_eq!(
                    got.is_ok(),
                    ok,
                    "{format}, {} planes, {cut} bytes",
                    planes.len()
                );
            }
        }
    }

    #[test]
    fn a_y_plane_padded_to_more_rows_is_found_from_sizeimage() {
        // 4×2 NV12 whose driver pads the Y plane to 4 rows (sizeimage 4·4·1.5 = 24).
        let red = [81u8, 90, 240];
        let mut data = vec![red[0]; 8];
        data.extend([0; 8]); // the padding rows
        data.extend([red[1], red[2], red[1], red[2]]);
        data.extend([0; 4]); // chroma of the padding rows
        let planes = PixelFormat::Nv12.padded_planes(&data, 4, 2, 24).unwrap();
        let img = PixelFormat::Nv12
            .convert(&planes, 4, 2, Colorimetry::BT601_LIMITED)
            .unwrap();
        assert!(img
            .pixels()
            .all(|p| p.0 == yuv_to_rgb(red[0], red[1], red[2])));
        // Read as unpadded, the padding would be taken for chroma.
        let wrong = PixelFormat::Nv12.to_rgb(&data, 4, 2, 4).unwrap();
        assert_ne!(wrong.get_pixel(0, 0).0, img.get_pixel(0, 0).0);
        // No padding, another format, or a size that is not 1.5 × rows: nothing to do.
        assert!(PixelFormat::Nv12.padded_planes(&data, 4, 2, 12).is_none());
        assert!(PixelFormat::Yuyv.padded_planes(&data, 8, 2, 24).is_none());
        assert!(PixelFormat::Nv12.padded_planes(&data, 4, 2, 25).is_none());
        // Planar: Cb and Cr at half the stride, each of the padded rows / 2.
        let planes = PixelFormat::Yuv420.padded_planes(&data, 4, 2, 24).unwrap();
        assert_eq!(
            planes
                .iter()
                .map(|p| (p.data.len(), p.stride))
                .collect::<Vec<_>>(),
            [(16, 4), (4, 2), (4, 2)]
        );
    }

    #[test]
    fn planar_frames_refuse_wrong_plane_counts_and_short_strides() {
        let y = [16u8; 16];
        let uv = [128u8; 8];
        let plane = |data, stride| Plane { data, stride };
        let two = [plane(&y[..], 4), plane(&uv[..], 4)];
        let err = PixelFormat::Yuv420
            .convert(&two, 4, 4, Colorimetry::BT601_LIMITED)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 planes"), "{err}");
        let err = PixelFormat::Yuyv
            .convert(&two, 4, 4, Colorimetry::BT601_LIMITED)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected one"), "{err}");
        let narrow = [plane(&y[..], 4), plane(&uv[..], 3)];
        let err = PixelFormat::Nv12
            .convert(&narrow, 4, 4, Colorimetry::BT601_LIMITED)
            .unwrap_err()
            .to_string();
        assert!(err.contains("3 bytes per CbCr row"), "{err}");
        let grey = PixelFormat::Nv12
            .convert(
                &[plane(&y[..], 4), plane(&uv[..], 0)],
                4,
                4,
                Colorimetry::BT601_LIMITED,
            )
            .unwrap();
        assert_eq!(grey.get_pixel(3, 3).0, [0, 0, 0]);
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
