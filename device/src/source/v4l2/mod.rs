//! V4L2 cameras: negotiate a format near the requested size and rate among those the
//! camera offers and seg-cam converts, set the camera's controls, stream through mmap
//! buffers (single- or multi-planar), convert each frame to RGB with the driver's
//! strides and colorimetry. `seg-cam --list-cameras` prints what [`list_cameras`] finds.

pub mod controls;
pub mod device;
pub mod negotiate;
pub mod sys;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use device::{Dequeued, Device, Sizes, Stream};
use negotiate::{choose, snap, Offer, Request};

use super::colorimetry::Colorimetry;
use super::pixfmt::{FourCc, PixelFormat, Plane};
use super::{Next, Source, SourceOptions};
use crate::error::{Error, Result};

/// Buffers the driver fills in turn: enough to ride out a slow frame, few enough that
/// a frame is never old.
const BUFFERS: u32 = 4;

/// A camera that sends nothing for this long is taken as lost.
const FRAME_TIMEOUT: Duration = Duration::from_secs(2);

fn io_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Invalid(format!("{}: {what}: {e}", path.display()))
}

/// What a device offers, as negotiation sees it: every size of every format seg-cam
/// converts; a size range contributes the requested size snapped into it.
fn offers(device: &Device, want: (u32, u32)) -> Vec<Offer> {
    let mut out = Vec::new();
    for (fourcc, _) in device.formats() {
        let Some(format) = PixelFormat::from_fourcc(fourcc) else {
            continue;
        };
        let sizes = match device.sizes(fourcc) {
            Sizes::Discrete(sizes) => sizes,
            Sizes::Range { min, max, step } => vec![(
                snap(want.0, min.0, max.0, step.0),
                snap(want.1, min.1, max.1, step.1),
            )],
        };
        for (width, height) in sizes {
            out.push(Offer {
                format,
                fourcc,
                width,
                height,
                rates: device.rates(fourcc, width, height),
            });
        }
    }
    out
}

/// A streaming camera.
pub struct Camera {
    path: PathBuf,
    stream: Stream,
    format: PixelFormat,
    fourcc: FourCc,
    width: u32,
    height: u32,
    /// `bytesperline` and `sizeimage` of each plane buffer.
    strides: Vec<usize>,
    sizes: Vec<usize>,
    colorimetry: Colorimetry,
    rate: Option<f32>,
}

/// The capabilities of the device node (not of the whole physical device).
fn node_caps(cap: &sys::Capability) -> u32 {
    if cap.capabilities & sys::CAP_DEVICE_CAPS != 0 {
        cap.device_caps
    } else {
        cap.capabilities
    }
}

/// The capture API a node offers: single-planar where it can (every USB camera),
/// else multi-planar (`Some(true)`); `None` when it captures no video.
fn capture_api(caps: u32) -> Option<bool> {
    if caps & sys::CAP_VIDEO_CAPTURE != 0 {
        Some(false)
    } else if caps & sys::CAP_VIDEO_CAPTURE_MPLANE != 0 {
        Some(true)
    } else {
        None
    }
}

/// Open `path` with the capture API it offers; `None` when it captures no video.
fn open_capture(path: &Path) -> std::io::Result<Option<(Device, sys::Capability)>> {
    let device = Device::open(path)?;
    let cap = device.capability()?;
    Ok(capture_api(node_caps(&cap)).map(|multiplanar| (device.multiplanar(multiplanar), cap)))
}

impl Camera {
    pub fn open(path: &Path, options: &SourceOptions) -> Result<Self> {
        let device = Device::open(path).map_err(|e| io_error(path, "cannot open", e))?;
        let cap = device
            .capability()
            .map_err(|e| io_error(path, "not a V4L2 device", e))?;
        let caps = node_caps(&cap);
        let streaming = caps & sys::CAP_STREAMING != 0;
        let Some(multiplanar) = capture_api(caps).filter(|_| streaming) else {
            return Err(Error::Invalid(format!(
                "{} ({}): not a streaming video capture device",
                path.display(),
                sys::c_text(&cap.card)
            )));
        };
        let device = device.multiplanar(multiplanar);
        // Before the format: some controls (colorimetry, for one) change it.
        controls::apply(&device, &options.camera_controls)?;
        let request = Request {
            width: options.width,
            height: options.height,
            rate: options.rate,
            format: options.pixel_format,
        };
        let offered = offers(&device, (options.width, options.height));
        let choice = match choose(&offered, &request) {
            Some(c) => c,
            None => {
                let formats: Vec<String> = device
                    .formats()
                    .iter()
                    .map(|(f, d)| format!("{f} ({d})"))
                    .collect();
                let wanted = options
                    .pixel_format
                    .map_or("a format seg-cam converts".to_string(), |f| f.to_string());
                return Err(Error::Invalid(format!(
                    "{}: offers {}, none of them {wanted}",
                    path.display(),
                    if formats.is_empty() {
                        "no capture formats".to_string()
                    } else {
                        formats.join(", ")
                    }
                )));
            }
        };
        let set = device
            .set_format(choice.fourcc, choice.width, choice.height)
            .map_err(|e| io_error(path, &format!("cannot set {}", choice.fourcc), e))?;
        let fourcc = set.fourcc;
        let format = PixelFormat::from_fourcc(fourcc).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: asked for {}, the driver set {fourcc}, which seg-cam does not convert",
                path.display(),
                choice.fourcc
            ))
        })?;
        // Not every driver lets the rate be set; the stream then runs at its own.
        let wanted_rate = choice.rate.unwrap_or(options.rate);
        let rate = device.set_rate(wanted_rate).ok().flatten();
        let stream = device
            .stream(BUFFERS)
            .map_err(|e| io_error(path, "cannot start streaming", e))?;
        Ok(Self {
            path: path.to_owned(),
            stream,
            format,
            fourcc,
            width: set.width,
            height: set.height,
            colorimetry: Colorimetry::from_v4l2(set.colorspace, set.ycbcr_enc, set.quantization),
            strides: set.strides,
            sizes: set.sizes,
            rate,
        })
    }
}

impl Source for Camera {
    fn next(&mut self) -> Result<Next> {
        let (format, w, h, colorimetry) = (self.format, self.width, self.height, self.colorimetry);
        let (strides, sizes) = (&self.strides, &self.sizes);
        let got = self
            .stream
            .next(FRAME_TIMEOUT, |buffers, flags| {
                if flags & sys::BUF_FLAG_ERROR != 0 {
                    let bytes: usize = buffers.iter().map(|b| b.len()).sum();
                    return Next::Corrupt(format!("the driver flagged a {bytes} byte frame"));
                }
                let padded = match (buffers, strides.as_slice(), sizes.as_slice()) {
                    ([data], [stride], [size]) => format.padded_planes(data, *stride, h, *size),
                    _ => None,
                };
                let planes: Vec<Plane> = padded.unwrap_or_else(|| {
                    buffers
                        .iter()
                        .zip(strides.iter().chain(std::iter::repeat(&0)))
                        .map(|(&data, &stride)| Plane { data, stride })
                        .collect()
                });
                match format.convert(&planes, w, h, colorimetry) {
                    Ok(frame) => Next::Frame(frame),
                    Err(e) => Next::Corrupt(e.to_string()),
                }
            })
            .map_err(|e| io_error(&self.path, "capture failed", e))?;
        match got {
            Dequeued::Frame(next) => Ok(next),
            Dequeued::Timeout => Err(Error::Invalid(format!(
                "{}: no frame for {} s",
                self.path.display(),
                FRAME_TIMEOUT.as_secs()
            ))),
        }
    }

    fn describe(&self) -> String {
        let rate = self
            .rate
            .map_or(String::new(), |r| format!(" @ {r:.1} fps"));
        // YCbCr formats say how they are decoded; RGB, grey and JPEG need no matrix.
        let colour = match self.format {
            PixelFormat::Rgb24 | PixelFormat::Bgr24 | PixelFormat::Grey | PixelFormat::Mjpeg => {
                String::new()
            }
            _ => format!(", {}", self.colorimetry),
        };
        format!(
            "{} {} {}×{}{rate}{colour}",
            self.stream.device().path().display(),
            self.fourcc,
            self.width,
            self.height
        )
    }

    fn is_live(&self) -> bool {
        true
    }
}

/// The `/dev/video*` nodes, in numeric order.
fn video_nodes() -> Vec<PathBuf> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("video")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}

/// A report of every capture device: driver, card, formats (marking those seg-cam
/// cannot convert), sizes and rates.
pub fn list_cameras() -> String {
    let mut out = String::new();
    let nodes = video_nodes();
    let mut found = 0;
    for path in &nodes {
        let _ = describe_device(path, &mut out).map(|shown| found += usize::from(shown));
    }
    if found == 0 {
        let _ = writeln!(
            out,
            "no V4L2 capture devices found ({} /dev/video* nodes looked at)",
            nodes.len()
        );
    }
    out
}

/// Append one device's report; `Ok(false)` when it is not a capture device.
fn describe_device(path: &Path, out: &mut String) -> std::io::Result<bool> {
    let Some((device, cap)) = open_capture(path)? else {
        return Ok(false);
    };
    let api = if device.is_multiplanar() {
        ", multi-planar"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "{}: {} (driver {}, bus {}{api})",
        path.display(),
        sys::c_text(&cap.card),
        sys::c_text(&cap.driver),
        sys::c_text(&cap.bus_info)
    );
    for (fourcc, description) in device.formats() {
        let note = match PixelFormat::from_fourcc(fourcc) {
            Some(f) => format!("seg-cam: {f}"),
            None => "not supported by seg-cam".into(),
        };
        let _ = writeln!(out, "  {fourcc} {description} [{note}]");
        let rates = |w, h| {
            let r: Vec<String> = device
                .rates(fourcc, w, h)
                .iter()
                .map(|r| {
                    format!("{r:.4}")
                        .trim_end_matches('0')
                        .trim_end_matches('.')
                        .to_string()
                })
                .collect();
            if r.is_empty() {
                String::new()
            } else {
                format!(" @ {} fps", r.join(", "))
            }
        };
        match device.sizes(fourcc) {
            Sizes::Discrete(sizes) => {
                for (w, h) in sizes {
                    let _ = writeln!(out, "    {w}×{h}{}", rates(w, h));
                }
            }
            Sizes::Range { min, max, step } => {
                let _ = writeln!(
                    out,
                    "    {}×{} to {}×{} in steps of {}×{}{}",
                    min.0,
                    min.1,
                    max.0,
                    max.1,
                    step.0,
                    step.1,
                    rates(max.0, max.1)
                );
            }
        }
    }
    controls::describe(&device, out);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_camera_is_named_in_the_error() {
        let err = Camera::open(Path::new("/dev/video97"), &SourceOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("/dev/video97") && err.contains("cannot open"),
            "{err}"
        );
    }

    #[test]
    fn a_plain_file_is_not_a_camera() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = Camera::open(file.path(), &SourceOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a V4L2 device"), "{err}");
    }

    #[test]
    fn listing_without_cameras_says_so() {
        let text = list_cameras();
        if video_nodes().is_empty() {
            assert!(text.contains("no V4L2 capture devices"), "{text}");
        } else {
            assert!(!text.is_empty());
        }
    }
}
