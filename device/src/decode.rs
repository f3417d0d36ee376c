//! Decoding images that come from outside (files, camera frames, datasets) within
//! limits: a small file can declare a huge picture (a 12000×12000 PNG of a few hundred
//! KB decodes to 432 MB), so the size is checked from the header before any pixel
//! buffer exists, and the decoder is held to the same budget.

use std::io::{Cursor, Read};
use std::path::Path;

use image::{DynamicImage, ImageFormat, ImageReader};

use crate::error::{Error, Result};

/// How large an image may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DecodeLimits {
    /// Width × height.
    pub max_pixels: u64,
    /// The encoded size: the file, or the camera frame.
    pub max_bytes: u64,
}

impl Default for DecodeLimits {
    /// 50 megapixels (an 8K frame, a large still) and 64 MiB.
    fn default() -> Self {
        Self {
            max_pixels: 50_000_000,
            max_bytes: 64 << 20,
        }
    }
}

impl DecodeLimits {
    /// Whether a `width × height` picture is within the limits; the error says by how much not.
    pub fn check_size(&self, width: u32, height: u32) -> std::result::Result<(), String> {
        let pixels = u64::from(width) * u64::from(height);
        if width == 0 || height == 0 {
            return Err(format!("{width}×{height}: an empty picture"));
        }
        if pixels > self.max_pixels {
            return Err(format!(
                "{width}×{height} is {:.1} megapixels, over the decode limit of {:.1}",
                pixels as f64 / 1e6,
                self.max_pixels as f64 / 1e6
            ));
        }
        Ok(())
    }

    fn check_bytes(&self, bytes: u64) -> std::result::Result<(), String> {
        if bytes > self.max_bytes {
            return Err(format!(
                "{bytes} bytes, over the decode limit of {}",
                self.max_bytes
            ));
        }
        Ok(())
    }

    /// What the decoder may allocate: the pixels at up to 16 bits × 4 channels.
    fn image_limits(&self) -> image::Limits {
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(self.max_pixels.saturating_mul(8));
        limits
    }
}

/// Decode the image file at `path` within `limits`; the error names the file.
pub fn open_image(path: &Path, limits: &DecodeLimits) -> Result<DynamicImage> {
    let invalid = |why: String| Error::Invalid(format!("{}: {why}", path.display()));
    let io = |source| Error::Io {
        path: path.to_owned(),
        cause: source,
    };
    let bytes = std::fs::metadata(path).map_err(io)?.len();
    limits.check_bytes(bytes).map_err(invalid)?;
    // Read once (never more than the limit, should the file grow meanwhile): the
    // header, the completeness check and the pixels all look at these bytes.
    let mut data = Vec::with_capacity(bytes.min(limits.max_bytes) as usize + 1);
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(limits.max_bytes.saturating_add(1))
                .read_to_end(&mut data)
        })
        .map_err(io)?;
    limits.check_bytes(data.len() as u64).map_err(invalid)?;
    jpeg_is_whole(&data).map_err(invalid)?;
    // The content decides; the extension only where the content has no signature.
    let format = image::guess_format(&data).or_else(|_| ImageFormat::from_path(path));
    decode(&data, format.ok(), limits).map_err(invalid)
}

/// Decode an image held in memory (a camera frame) within `limits`.
pub fn decode_bytes(
    data: &[u8],
    format: ImageFormat,
    limits: &DecodeLimits,
) -> std::result::Result<DynamicImage, String> {
    limits.check_bytes(data.len() as u64)?;
    decode(data, Some(format), limits)
}

/// Read the size from the header, then decode the pixels if it is within the limits.
fn decode(
    data: &[u8],
    format: Option<ImageFormat>,
    limits: &DecodeLimits,
) -> std::result::Result<DynamicImage, String> {
    let reader = || {
        let mut r = ImageReader::new(Cursor::new(data));
        if let Some(format) = format {
            r.set_format(format);
        }
        r
    };
    let (width, height) = reader().into_dimensions().map_err(|e| e.to_string())?;
    limits.check_size(width, height)?;
    let mut pixels = reader();
    pixels.limits(limits.image_limits());
    pixels.decode().map_err(|e| e.to_string())
}

/// A JPEG file cut short (a half-copied file) decodes without complaint, the missing
/// part filled in flat: refuse one whose data ends before its end-of-image marker.
/// The segments are walked from the start (a thumbnail inside APP1 is skipped whole,
/// and what follows the marker, such as a motion photo's video, is not looked at); a
/// structure this walk does not follow is left to the decoder. Camera frames are not
/// held to this: some cameras end theirs without the marker.
fn jpeg_is_whole(data: &[u8]) -> std::result::Result<(), String> {
    let cut = || {
        Err(format!(
            "a truncated JPEG: its data ends before its end-of-image marker ({} bytes)",
            data.len()
        ))
    };
    if !data.starts_with(&[0xff, 0xd8]) {
        return Ok(());
    }
    let mut at = 2;
    loop {
        match data.get(at) {
            None => return cut(),
            Some(0xff) => {}
            Some(_) => return Ok(()),
        }
        // Fill bytes may repeat 0xFF before a marker.
        while data.get(at) == Some(&0xff) {
            at += 1;
        }
        let Some(&marker) = data.get(at) else {
            return cut();
        };
        at += 1;
        match marker {
            0xd9 => return Ok(()),
            // Markers without a length: restarts, TEM.
            0x01 | 0xd0..=0xd7 => continue,
            _ => {}
        }
        let Some(length) = data.get(at..at + 2) else {
            return cut();
        };
        let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
        if length < 2 {
            return Ok(());
        }
        at += length;
        if at > data.len() {
            return cut();
        }
        if marker == 0xda {
            // Entropy-coded data: a 0xFF in it is followed by 0x00 (a stuffed byte) or
            // a restart marker; anything else begins the next marker.
            loop {
                let Some(ff) = data[at..].iter().position(|&b| b == 0xff) else {
                    return cut();
                };
                at += ff;
                match data.get(at + 1) {
                    None => return cut(),
                    Some(0x00 | 0xd0..=0xd7) => at += 2,
                    Some(_) => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    /// A PNG whose header says 12000×12000: one row of zeros repeated compresses to
    /// a few hundred KB but decodes to 432 MB.
    fn huge_png(path: &Path) {
        let file = std::fs::File::create(path).unwrap();
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), 12_000, 12_000);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_compression(png::Compression::Balanced);
        let mut writer = encoder
            .write_header()
            .unwrap()
            .into_stream_writer()
            .unwrap();
        let row = vec![0u8; 12_000 * 3];
        for _ in 0..12_000 {
            std::io::Write::write_all(&mut writer, &row).unwrap();
        }
        writer.finish().unwrap();
    }

    #[test]
    fn a_small_file_with_a_huge_picture_is_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.png");
        huge_png(&path);
        assert!(std::fs::metadata(&path).unwrap().len() < 2 << 20);
        let msg = open_image(&path, &DecodeLimits::default())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("huge.png") && msg.contains("12000×12000"),
            "{msg}"
        );
        assert!(msg.contains("144.0 megapixels"), "{msg}");
    }

    #[test]
    fn limits_on_pixels_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        RgbImage::from_pixel(40, 30, Rgb([1, 2, 3]))
            .save(&path)
            .unwrap();
        let img = open_image(&path, &DecodeLimits::default()).unwrap();
        assert_eq!((img.width(), img.height()), (40, 30));
        let tight = DecodeLimits {
            max_pixels: 1199,
            ..DecodeLimits::default()
        };
        assert!(open_image(&path, &tight).is_err());
        let few_bytes = DecodeLimits {
            max_bytes: 10,
            ..DecodeLimits::default()
        };
        let msg = open_image(&path, &few_bytes).unwrap_err().to_string();
        assert!(msg.contains("a.png") && msg.contains("bytes"), "{msg}");

        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80)
            .encode_image(&RgbImage::new(16, 8))
            .unwrap();
        assert!(decode_bytes(&jpeg, ImageFormat::Jpeg, &DecodeLimits::default()).is_ok());
        assert!(decode_bytes(&jpeg, ImageFormat::Jpeg, &tight).is_ok());
        let tiny = DecodeLimits {
            max_pixels: 100,
            ..DecodeLimits::default()
        };
        assert!(decode_bytes(&jpeg, ImageFormat::Jpeg, &tiny).is_err());
        assert!(decode_bytes(b"\xff\xd8 junk", ImageFormat::Jpeg, &tiny).is_err());
        let missing = open_image(&dir.path().join("nope.png"), &DecodeLimits::default());
        assert!(missing.unwrap_err().to_string().contains("nope.png"));
    }

    #[test]
    fn a_jpeg_file_cut_short_is_refused_and_data_after_its_end_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let picture = RgbImage::from_fn(64, 48, |x, y| Rgb([(x * 4) as u8, (y * 5) as u8, 90]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&picture)
            .unwrap();
        let limits = DecodeLimits::default();
        let mut padded = jpeg.clone();
        padded.extend([0u8; 64]);
        // Data after the end (a motion photo's video) may hold any bytes, markers too.
        let mut trailer = jpeg.clone();
        trailer.extend([
            0xff, 0xd9, 0x12, 0xff, 0xda, 0x00, 0x08, 0xff, 0xd8, 0xff, 0xc0,
        ]);
        // An APP1 segment holding a whole JPEG of its own (an EXIF thumbnail).
        let mut thumbnail = vec![0xff, 0xd8, 0xff, 0xe1];
        thumbnail.extend(((jpeg.len() + 2) as u16).to_be_bytes());
        thumbnail.extend(&jpeg);
        thumbnail.extend(&jpeg[2..]);
        for (name, bytes) in [
            ("plain", &jpeg),
            ("padded", &padded),
            ("trailer", &trailer),
            ("thumbnail", &thumbnail),
        ] {
            assert_eq!(jpeg_is_whole(bytes), Ok(()), "{name}");
        }
        assert!(decode_bytes(&padded, ImageFormat::Jpeg, &limits).is_ok());
        // The main picture cut short behind a whole thumbnail is still cut short.
        assert!(jpeg_is_whole(&thumbnail[..thumbnail.len() - jpeg.len() / 2]).is_err());
        // Cut inside the scan data, and just before the end marker's last byte.
        for cut in [jpeg.len() / 2, jpeg.len() - 1] {
            let err = jpeg_is_whole(&jpeg[..cut]).unwrap_err();
            assert!(err.contains("truncated JPEG"), "{err}");
            // A file: named, whatever its extension says.
            let path = dir.path().join(format!("cut-{cut}.png"));
            std::fs::write(&path, &jpeg[..cut]).unwrap();
            let msg = open_image(&path, &limits).unwrap_err().to_string();
            assert!(
                msg.contains(&format!("cut-{cut}.png")) && msg.contains("truncated JPEG"),
                "{msg}"
            );
        }
        let path = dir.path().join("whole.jpg");
        std::fs::write(&path, &jpeg).unwrap();
        assert_eq!(
            open_image(&path, &limits).unwrap().to_rgb8().dimensions(),
            (64, 48)
        );
    }
}
