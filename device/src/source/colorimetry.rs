//! How a camera's YCbCr codes map to RGB: the matrix (BT.601, BT.709, BT.2020,
//! SMPTE 240M) and the range (limited: Y 16–235, full: 0–255), as the V4L2 driver
//! reports them in its format (`colorspace`, `ycbcr_enc`, `quantization`, with the
//! kernel's rules for "default"). Webcams are BT.601 limited; HD capture chips and SoC
//! ISPs often BT.709, and JPEG-style sensors full range: decoding with the wrong one
//! shifts every colour the model sees.

use std::fmt;

/// The YCbCr matrix: which weights of R, G and B make the luma.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Matrix {
    #[default]
    Bt601,
    Bt709,
    Bt2020,
    Smpte240m,
}

/// The code range of Y and Cb/Cr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Range {
    /// Y 16–235, Cb/Cr 16–240 (video).
    #[default]
    Limited,
    /// Y and Cb/Cr 0–255 (JPEG).
    Full,
}

/// A matrix and a range: what a YUV frame needs to become RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Colorimetry {
    pub matrix: Matrix,
    pub range: Range,
}

// The kernel's enum values (linux/videodev2.h).
const COLORSPACE_SMPTE240M: u32 = 2;
const COLORSPACE_REC709: u32 = 3;
const COLORSPACE_JPEG: u32 = 7;
const COLORSPACE_BT2020: u32 = 10;
const COLORSPACE_DCI_P3: u32 = 12;
const YCBCR_ENC_DEFAULT: u32 = 0;
const YCBCR_ENC_709: u32 = 2;
const YCBCR_ENC_XV709: u32 = 4;
const YCBCR_ENC_BT2020: u32 = 6;
const YCBCR_ENC_BT2020_CONST_LUM: u32 = 7;
const YCBCR_ENC_SMPTE240M: u32 = 8;
const QUANTIZATION_FULL_RANGE: u32 = 1;
const QUANTIZATION_LIM_RANGE: u32 = 2;

impl Colorimetry {
    pub const BT601_LIMITED: Self = Self {
        matrix: Matrix::Bt601,
        range: Range::Limited,
    };

    /// From a V4L2 format's fields; "default" values resolve as the kernel's
    /// `V4L2_MAP_YCBCR_ENC_DEFAULT` and `V4L2_MAP_QUANTIZATION_DEFAULT` say.
    pub fn from_v4l2(colorspace: u32, ycbcr_enc: u32, quantization: u32) -> Self {
        let enc = if ycbcr_enc == YCBCR_ENC_DEFAULT {
            match colorspace {
                COLORSPACE_REC709 | COLORSPACE_DCI_P3 => YCBCR_ENC_709,
                COLORSPACE_BT2020 => YCBCR_ENC_BT2020,
                COLORSPACE_SMPTE240M => YCBCR_ENC_SMPTE240M,
                _ => 1, // BT.601
            }
        } else {
            ycbcr_enc
        };
        let matrix = match enc {
            YCBCR_ENC_709 | YCBCR_ENC_XV709 => Matrix::Bt709,
            // The constant-luminance form is rare; its matrix is the closest we do.
            YCBCR_ENC_BT2020 | YCBCR_ENC_BT2020_CONST_LUM => Matrix::Bt2020,
            YCBCR_ENC_SMPTE240M => Matrix::Smpte240m,
            _ => Matrix::Bt601, // 601, xvYCC 601, sYCC and unknown values
        };
        let range = match quantization {
            QUANTIZATION_FULL_RANGE => Range::Full,
            QUANTIZATION_LIM_RANGE => Range::Limited,
            _ if colorspace == COLORSPACE_JPEG => Range::Full,
            _ => Range::Limited,
        };
        Self { matrix, range }
    }

    /// The fixed-point converter for this colorimetry.
    pub fn converter(self) -> YuvToRgb {
        let (kr, kb) = match self.matrix {
            Matrix::Bt601 => (0.299, 0.114),
            Matrix::Bt709 => (0.2126, 0.0722),
            Matrix::Bt2020 => (0.2627, 0.0593),
            Matrix::Smpte240m => (0.212, 0.087),
        };
        let kg = 1.0 - kr - kb;
        let (luma_scale, chroma_scale, y_offset) = match self.range {
            Range::Limited => (255.0 / 219.0, 255.0 / 224.0, 16),
            Range::Full => (1.0, 1.0, 0),
        };
        let fixed = |x: f64| (x * 256.0).round() as i32;
        YuvToRgb {
            y_mul: fixed(luma_scale),
            y_offset,
            rv: fixed(2.0 * (1.0 - kr) * chroma_scale),
            gu: fixed(2.0 * kb * (1.0 - kb) / kg * chroma_scale),
            gv: fixed(2.0 * kr * (1.0 - kr) / kg * chroma_scale),
            bu: fixed(2.0 * (1.0 - kb) * chroma_scale),
        }
    }
}

impl fmt::Display for Colorimetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let matrix = match self.matrix {
            Matrix::Bt601 => "BT.601",
            Matrix::Bt709 => "BT.709",
            Matrix::Bt2020 => "BT.2020",
            Matrix::Smpte240m => "SMPTE 240M",
        };
        let range = match self.range {
            Range::Limited => "limited",
            Range::Full => "full",
        };
        write!(f, "{matrix} {range} range")
    }
}

/// YCbCr to RGB in fixed point (×256), for one colorimetry.
#[derive(Debug, Clone, Copy)]
pub struct YuvToRgb {
    y_mul: i32,
    y_offset: i32,
    rv: i32,
    gu: i32,
    gv: i32,
    bu: i32,
}

impl YuvToRgb {
    #[inline(always)]
    pub fn rgb(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let c = self.y_mul * (y as i32 - self.y_offset);
        let d = u as i32 - 128;
        let e = v as i32 - 128;
        let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
        [
            clamp(c + self.rv * e),
            clamp(c - self.gu * d - self.gv * e),
            clamp(c + self.bu * d),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encode RGB as YCbCr in floating point, the way a camera would.
    fn encode(c: Colorimetry, [r, g, b]: [f64; 3]) -> [u8; 3] {
        let (kr, kb) = match c.matrix {
            Matrix::Bt601 => (0.299, 0.114),
            Matrix::Bt709 => (0.2126, 0.0722),
            Matrix::Bt2020 => (0.2627, 0.0593),
            Matrix::Smpte240m => (0.212, 0.087),
        };
        let y = kr * r + (1.0 - kr - kb) * g + kb * b;
        let pb = (b - y) / (2.0 * (1.0 - kb));
        let pr = (r - y) / (2.0 * (1.0 - kr));
        let q = |x: f64| x.round().clamp(0.0, 255.0) as u8;
        match c.range {
            Range::Limited => [
                q(16.0 + 219.0 * y / 255.0),
                q(128.0 + 224.0 * pb / 255.0),
                q(128.0 + 224.0 * pr / 255.0),
            ],
            Range::Full => [q(y), q(128.0 + pb), q(128.0 + pr)],
        }
    }

    const ALL: [Colorimetry; 8] = {
        let m = [
            Matrix::Bt601,
            Matrix::Bt709,
            Matrix::Bt2020,
            Matrix::Smpte240m,
        ];
        let mut out = [Colorimetry::BT601_LIMITED; 8];
        let mut i = 0;
        while i < 8 {
            out[i] = Colorimetry {
                matrix: m[i / 2],
                range: if i % 2 == 0 {
                    Range::Limited
                } else {
                    Range::Full
                },
            };
            i += 1;
        }
        out
    };

    #[test]
    fn every_colorimetry_decodes_what_it_encodes() {
        let colours = [
            [0.0, 0.0, 0.0],
            [255.0, 255.0, 255.0],
            [191.0, 191.0, 0.0],
            [0.0, 191.0, 191.0],
            [191.0, 0.0, 191.0],
            [255.0, 0.0, 0.0],
            [0.0, 255.0, 0.0],
            [0.0, 0.0, 255.0],
            [90.0, 140.0, 30.0],
        ];
        for c in ALL {
            let convert = c.converter();
            for colour in colours {
                let [y, u, v] = encode(c, colour);
                let got = convert.rgb(y, u, v);
                for (g, w) in got.iter().zip(colour) {
                    assert!(
                        (*g as f64 - w).abs() <= 3.0,
                        "{c}: {colour:?} → {:?} → {got:?}",
                        [y, u, v]
                    );
                }
            }
        }
    }

    #[test]
    fn the_wrong_colorimetry_shifts_colours() {
        // What decoding BT.709 full-range yellow as BT.601 limited does: the reason
        // the driver's fields matter.
        let yellow = [191.0, 191.0, 0.0];
        let hd = Colorimetry {
            matrix: Matrix::Bt709,
            range: Range::Full,
        };
        let [y, u, v] = encode(hd, yellow);
        let right = hd.converter().rgb(y, u, v);
        let wrong = Colorimetry::BT601_LIMITED.converter().rgb(y, u, v);
        let worst = right
            .iter()
            .zip(wrong)
            .map(|(a, b)| a.abs_diff(b))
            .max()
            .unwrap();
        assert!(worst > 15, "{right:?} vs {wrong:?}");
    }

    #[test]
    fn the_kernel_defaults_resolve_like_the_kernel() {
        let c = Colorimetry::from_v4l2;
        // sRGB / SMPTE 170M cameras with every field "default": BT.601 limited.
        assert_eq!(c(8, 0, 0), Colorimetry::BT601_LIMITED);
        assert_eq!(c(1, 0, 0), Colorimetry::BT601_LIMITED);
        assert_eq!(c(3, 0, 0).matrix, Matrix::Bt709);
        assert_eq!(c(3, 0, 0).range, Range::Limited);
        assert_eq!(c(7, 0, 0).range, Range::Full, "JPEG colorspace");
        assert_eq!(c(10, 0, 0).matrix, Matrix::Bt2020);
        assert_eq!(c(2, 0, 0).matrix, Matrix::Smpte240m);
        // Explicit fields win over the colorspace.
        assert_eq!(
            c(8, 2, 1),
            Colorimetry {
                matrix: Matrix::Bt709,
                range: Range::Full
            }
        );
        assert_eq!(c(3, 1, 2), Colorimetry::BT601_LIMITED);
        assert_eq!(c(7, 0, 2).range, Range::Limited);
        assert_eq!(c(3, 0, 0).to_string(), "BT.709 limited range");
    }
}
