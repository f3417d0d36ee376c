//! Frames onto a Linux framebuffer (`fb:///dev/fb0`): RGB888 pictures packed into the
//! device's pixel layout (RGB565 or XRGB8888, little-endian as the kernel stores them)
//! and written to the device file. The geometry comes from sysfs
//! (`/sys/class/graphics/fbN/{virtual_size,bits_per_pixel,stride}`), so no ioctl is
//! needed.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::error::{Error, Result};

/// A framebuffer pixel layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// 16 bits: `rrrrrggg gggbbbbb`, stored low byte first.
    Rgb565,
    /// 32 bits: bytes B, G, R, X (X written as 0xff, in case it is read as alpha).
    Xrgb8888,
}

impl PixelFormat {
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            Self::Rgb565 => 2,
            Self::Xrgb8888 => 4,
        }
    }

    /// The layout of a framebuffer with this many bits per pixel.
    pub fn from_bits_per_pixel(bits: u32) -> Option<Self> {
        match bits {
            16 => Some(Self::Rgb565),
            32 => Some(Self::Xrgb8888),
            _ => None,
        }
    }

    /// One pixel in this layout (the first `bytes_per_pixel` bytes are meaningful).
    #[inline(always)]
    pub fn pack(self, [r, g, b]: [u8; 3]) -> [u8; 4] {
        match self {
            Self::Rgb565 => {
                let v = ((r as u16 >> 3) << 11) | ((g as u16 >> 2) << 5) | (b as u16 >> 3);
                let [lo, hi] = v.to_le_bytes();
                [lo, hi, 0, 0]
            }
            Self::Xrgb8888 => [b, g, r, 0xff],
        }
    }
}

/// Copy `image` into `out` (rows `stride` bytes apart, top-left corner at byte 0),
/// converting to `format`. Fails when a row or the rows do not fit.
pub fn blit(image: &RgbImage, format: PixelFormat, stride: usize, out: &mut [u8]) -> Result<()> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let row_bytes = w * format.bytes_per_pixel();
    if h == 0 || w == 0 {
        return Ok(());
    }
    if stride < row_bytes || out.len() < stride * (h - 1) + row_bytes {
        return Err(Error::Invalid(format!(
            "framebuffer blit: a {w}×{h} {format:?} picture needs rows of {row_bytes} bytes \
             and {} bytes in all; found stride {stride} and {} bytes",
            stride * (h - 1) + row_bytes,
            out.len()
        )));
    }
    blit_rect(image, (0, 0, w, h), format, stride, out, 0);
    Ok(())
}

/// Copy the `(x, y, w, h)` part of `image` into `out` starting at byte `offset`.
/// The caller has checked that it fits.
fn blit_rect(
    image: &RgbImage,
    (x, y, w, h): (usize, usize, usize, usize),
    format: PixelFormat,
    stride: usize,
    out: &mut [u8],
    offset: usize,
) {
    let src_stride = image.width() as usize * 3;
    let bpp = format.bytes_per_pixel();
    for row in 0..h {
        let src = &image.as_raw()[(y + row) * src_stride + x * 3..][..w * 3];
        let dst = &mut out[offset + row * stride..][..w * bpp];
        // One loop per layout so each inner loop is branch-free.
        match format {
            PixelFormat::Rgb565 => {
                for (d, s) in dst.chunks_exact_mut(2).zip(src.chunks_exact(3)) {
                    d.copy_from_slice(&format.pack([s[0], s[1], s[2]])[..2]);
                }
            }
            PixelFormat::Xrgb8888 => {
                for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(3)) {
                    d.copy_from_slice(&[s[2], s[1], s[0], 0xff]);
                }
            }
        }
    }
}

/// An open framebuffer device with a back buffer of its full size.
#[derive(Debug)]
pub struct Framebuffer {
    path: PathBuf,
    file: File,
    width: u32,
    height: u32,
    stride: usize,
    format: PixelFormat,
    back: Vec<u8>,
}

impl Framebuffer {
    /// Open `fb:///dev/fb0` (or a bare `/dev/fb0`), reading its geometry from sysfs.
    pub fn open(uri: &str) -> Result<Self> {
        let device = Path::new(uri.strip_prefix("fb://").unwrap_or(uri));
        let name = device.file_name().ok_or_else(|| {
            Error::Invalid(format!("framebuffer '{uri}': expected fb:///dev/fbN"))
        })?;
        let sysfs = Path::new("/sys/class/graphics").join(name);
        Self::open_with_sysfs(device, &sysfs)
    }

    /// Open `device` with the geometry read from the sysfs folder `sysfs`.
    pub fn open_with_sysfs(device: &Path, sysfs: &Path) -> Result<Self> {
        let (width, height) = read_pair(&sysfs.join("virtual_size"))?;
        let bits_path = sysfs.join("bits_per_pixel");
        let bits: u32 = parse(&bits_path, read_text(&bits_path)?.trim())?;
        let format = PixelFormat::from_bits_per_pixel(bits).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: {bits} bits per pixel is not supported (expected 16 or 32)",
                bits_path.display()
            ))
        })?;
        // Older kernels have no `stride` file: rows are then packed.
        let stride_path = sysfs.join("stride");
        let stride = match std::fs::read_to_string(&stride_path) {
            Ok(text) => parse(&stride_path, text.trim())?,
            Err(_) => width as usize * format.bytes_per_pixel(),
        };
        if stride < width as usize * format.bytes_per_pixel() {
            return Err(Error::Invalid(format!(
                "{}: stride {stride} is shorter than a row of {width} pixels",
                stride_path.display()
            )));
        }
        let file = OpenOptions::new()
            .write(true)
            .open(device)
            .map_err(|source| Error::Io {
                path: device.to_owned(),
                cause: source,
            })?;
        Ok(Self {
            path: device.to_owned(),
            file,
            width,
            height,
            stride,
            format,
            back: vec![0; stride * height as usize],
        })
    }

    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    pub fn format(&self) -> PixelFormat {
        self.format
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Show `image` centred (cropped if larger, black around it if smaller).
    pub fn show(&mut self, image: &RgbImage) -> Result<()> {
        let (iw, ih) = (image.width() as usize, image.height() as usize);
        let (fw, fh) = (self.width as usize, self.height as usize);
        let (w, h) = (iw.min(fw), ih.min(fh));
        let (src_x, src_y) = ((iw - w) / 2, (ih - h) / 2);
        let (dst_x, dst_y) = ((fw - w) / 2, (fh - h) / 2);
        if (w, h) != (fw, fh) {
            self.back.fill(0);
        }
        let offset = dst_y * self.stride + dst_x * self.format.bytes_per_pixel();
        blit_rect(
            image,
            (src_x, src_y, w, h),
            self.format,
            self.stride,
            &mut self.back,
            offset,
        );
        self.flush()
    }

    /// Write the back buffer to the device.
    pub fn flush(&mut self) -> Result<()> {
        let io = |source| Error::Io {
            path: self.path.clone(),
            cause: source,
        };
        self.file.seek(SeekFrom::Start(0)).map_err(io)?;
        self.file.write_all(&self.back).map_err(io)?;
        Ok(())
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        cause: source,
    })
}

fn parse<T: std::str::FromStr>(path: &Path, text: &str) -> Result<T> {
    text.parse().map_err(|_| {
        Error::Invalid(format!(
            "{}: expected a number, found '{text}'",
            path.display()
        ))
    })
}

/// A sysfs `"1920,1080"` pair.
fn read_pair(path: &Path) -> Result<(u32, u32)> {
    let text = read_text(path)?;
    let (a, b) = text.trim().split_once(',').ok_or_else(|| {
        Error::Invalid(format!(
            "{}: expected 'width,height', found '{}'",
            path.display(),
            text.trim()
        ))
    })?;
    Ok((parse(path, a.trim())?, parse(path, b.trim())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn rgb565_packs_high_bits_low_byte_first() {
        let f = PixelFormat::Rgb565;
        assert_eq!(f.pack([255, 255, 255])[..2], [0xff, 0xff]);
        assert_eq!(f.pack([255, 0, 0])[..2], [0x00, 0xf8]);
        assert_eq!(f.pack([0, 255, 0])[..2], [0xe0, 0x07]);
        assert_eq!(f.pack([0, 0, 255])[..2], [0x1f, 0x00]);
        // 0x12 → 2, 0x34 → 13, 0x56 → 10: 00010 001101 01010 = 0x11aa.
        assert_eq!(f.pack([0x12, 0x34, 0x56])[..2], [0xaa, 0x11]);
    }

    #[test]
    fn xrgb8888_is_bgrx_in_memory() {
        assert_eq!(PixelFormat::Xrgb8888.pack([1, 2, 3]), [3, 2, 1, 0xff]);
    }

    #[test]
    fn blit_honours_the_stride_and_leaves_padding_alone() {
        let image = RgbImage::from_fn(2, 2, |x, y| Rgb([x as u8 * 100, y as u8 * 200, 7]));
        let mut out = vec![0xaa; 12 * 2];
        blit(&image, PixelFormat::Xrgb8888, 12, &mut out).unwrap();
        assert_eq!(
            out,
            [
                7, 0, 0, 0xff, 7, 0, 100, 0xff, 0xaa, 0xaa, 0xaa, 0xaa, //
                7, 200, 0, 0xff, 7, 200, 100, 0xff, 0xaa, 0xaa, 0xaa, 0xaa,
            ]
        );
        let mut out = vec![0xaa; 6 * 2];
        blit(&image, PixelFormat::Rgb565, 6, &mut out).unwrap();
        let p = |rgb| {
            let [lo, hi, _, _] = PixelFormat::Rgb565.pack(rgb);
            [lo, hi]
        };
        assert_eq!(out[0..2], p([0, 0, 7]));
        assert_eq!(out[2..4], p([100, 0, 7]));
        assert_eq!(out[4..6], [0xaa, 0xaa]);
        assert_eq!(out[6..8], p([0, 200, 7]));
        assert_eq!(out[8..10], p([100, 200, 7]));
    }

    #[test]
    fn blit_refuses_buffers_that_are_too_small() {
        let image = RgbImage::new(4, 3);
        let err = blit(&image, PixelFormat::Rgb565, 6, &mut [0; 100]).unwrap_err();
        assert!(err.to_string().contains("stride 6"), "{err}");
        assert!(blit(&image, PixelFormat::Rgb565, 8, &mut [0; 23]).is_err());
        assert!(blit(&image, PixelFormat::Rgb565, 8, &mut [0; 24]).is_ok());
    }

    fn fake_sysfs(tag: &str, size: &str, bits: &str, stride: Option<&str>) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("segcam-fb-{tag}-{}", std::process::id()));
        let sys = dir.join("fb9");
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::write(sys.join("virtual_size"), size).unwrap();
        std::fs::write(sys.join("bits_per_pixel"), bits).unwrap();
        match stride {
            Some(s) => std::fs::write(sys.join("stride"), s).unwrap(),
            None => {
                let _ = std::fs::remove_file(sys.join("stride"));
            }
        }
        let device = dir.join("fb9.dev");
        std::fs::write(&device, b"").unwrap();
        (device, sys)
    }

    #[test]
    fn open_reads_sysfs_and_show_centres_the_picture() {
        let (device, sys) = fake_sysfs("ok", "4,3\n", "32\n", Some("20\n"));
        let mut fb = Framebuffer::open_with_sysfs(&device, &sys).unwrap();
        assert_eq!(fb.size(), (4, 3));
        assert_eq!(fb.format(), PixelFormat::Xrgb8888);
        assert_eq!(fb.stride(), 20);
        fb.show(&RgbImage::from_pixel(2, 1, Rgb([10, 20, 30])))
            .unwrap();
        let written = std::fs::read(&device).unwrap();
        assert_eq!(written.len(), 60);
        // Centred: row 1, columns 1 and 2.
        assert_eq!(
            written[20 + 4..20 + 12],
            [30, 20, 10, 0xff, 30, 20, 10, 0xff]
        );
        assert!(written[..20].iter().all(|&b| b == 0));
        // A larger picture is cropped around its centre.
        let big = RgbImage::from_fn(6, 5, |x, y| Rgb([x as u8, y as u8, 0]));
        fb.show(&big).unwrap();
        let written = std::fs::read(&device).unwrap();
        assert_eq!(written[..4], [0, 1, 1, 0xff]);
    }

    #[test]
    fn open_without_stride_packs_rows_and_refuses_odd_depths() {
        let (device, sys) = fake_sysfs("nostride", "8,2", "16", None);
        let fb = Framebuffer::open_with_sysfs(&device, &sys).unwrap();
        assert_eq!((fb.format(), fb.stride()), (PixelFormat::Rgb565, 16));
        let (device, sys) = fake_sysfs("bpp24", "8,2", "24", None);
        let err = Framebuffer::open_with_sysfs(&device, &sys)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bits_per_pixel") && err.contains("24"),
            "{err}"
        );
        let (device, sys) = fake_sysfs("badsize", "8x2", "16", None);
        let err = Framebuffer::open_with_sysfs(&device, &sys)
            .unwrap_err()
            .to_string();
        assert!(err.contains("virtual_size") && err.contains("8x2"), "{err}");
        let err = Framebuffer::open("fb:///nonexistent/fb7")
            .unwrap_err()
            .to_string();
        assert!(err.contains("fb7"), "{err}");
    }
}
