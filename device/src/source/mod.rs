//! Frame sources, named by jetson-inference-style URIs:
//!
//! | URI | source |
//! |---|---|
//! | `v4l2:///dev/video0`, `/dev/video0` | a V4L2 camera (format negotiated, mmap streaming) |
//! | `test://`, `test://SEED` | the moving generated scene of the demo model's classes |
//! | `file://PATH`, `PATH` | an image, a folder of images, or a glob (`shots/*.png`) |
//!
//! Cameras and the test scene are *live*: they go on at their own pace, and the
//! pipeline drops frames it is too slow for. Files are *finite*: every image is
//! processed, and the source ends unless it loops.

pub mod colorimetry;
pub mod files;
pub mod pixfmt;
pub mod synthetic;
#[cfg(feature = "v4l2")]
pub mod v4l2;

use std::path::PathBuf;

use image::RgbImage;

use crate::decode::DecodeLimits;
use crate::error::{Error, Result};
pub use pixfmt::PixelFormat;

/// What a source gave when asked for the next frame.
#[derive(Debug)]
pub enum Next {
    Frame(RgbImage),
    /// A frame that could not be decoded (a corrupt MJPEG frame, an unreadable image
    /// file): skipped and counted, the source goes on.
    Corrupt(String),
    /// A finite source has no more frames.
    End,
}

/// A source of RGB frames. An `Err` from [`Source::next`] means the source is lost
/// (a camera unplugged): the pipeline reopens it.
pub trait Source: Send {
    fn next(&mut self) -> Result<Next>;
    /// What the source is, for logs and the page ("/dev/video0 YUYV 640×480 @ 30").
    fn describe(&self) -> String;
    /// Live sources run at their own pace; finite ones wait for the pipeline.
    fn is_live(&self) -> bool;
    /// A live source that makes each frame when asked (the generated scene) rather
    /// than receiving it (a camera): the capture stage asks only once the pipeline has
    /// room, so no CPU goes to frames that would be dropped unseen.
    fn on_demand(&self) -> bool {
        false
    }
    /// The name of the frame [`Source::next`] just gave where it has one (an image
    /// file's path), so that outputs can be traced back to their input.
    fn frame_name(&self) -> Option<String> {
        None
    }
    /// The files this source reads, where it reads files (so that outputs never land
    /// among them).
    fn files(&self) -> &[PathBuf] {
        &[]
    }
}

/// Settings that sources take from the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceOptions {
    /// Requested frame size (cameras pick the nearest they offer; the test scene
    /// renders at exactly this size).
    pub width: u32,
    pub height: u32,
    /// Requested frames per second (cameras; the test scene's pace).
    pub rate: f32,
    /// Only this camera pixel format, when given.
    pub pixel_format: Option<PixelFormat>,
    /// Camera controls to set before streaming.
    pub camera_controls: Vec<CameraControl>,
    /// Start image sources again at their end.
    pub looping: bool,
    /// How large an image file may be (pixels and bytes).
    pub decode: DecodeLimits,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            width: 640,
            height: 480,
            rate: 30.0,
            pixel_format: None,
            camera_controls: Vec::new(),
            looping: false,
            decode: DecodeLimits::default(),
        }
    }
}

/// A camera control to set before streaming, `NAME=VALUE` (`v4l2-ctl`'s names:
/// `exposure_time_absolute=200`, `power_line_frequency=50_hz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraControl {
    pub name: String,
    pub value: String,
}

impl std::str::FromStr for CameraControl {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() && !value.trim().is_empty() => {
                Ok(Self {
                    name: name.trim().to_string(),
                    value: value.trim().to_string(),
                })
            }
            _ => Err(Error::Invalid(format!(
                "camera control '{s}': expected NAME=VALUE, e.g. exposure_time_absolute=200"
            ))),
        }
    }
}

/// A parsed input URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Test { seed: u64 },
    Camera(PathBuf),
    Files(String),
}

/// Turns the rest of a URI after its scheme into an [`Input`].
type SchemeParser = fn(&str) -> Result<Input>;

/// Scheme prefixes and their parsers.
const SCHEMES: [(&str, SchemeParser); 3] = [
    ("test://", parse_test),
    ("v4l2://", |rest| Ok(Input::Camera(PathBuf::from(rest)))),
    ("file://", |rest| Ok(Input::Files(rest.to_string()))),
];

fn parse_test(rest: &str) -> Result<Input> {
    if rest.is_empty() {
        return Ok(Input::Test {
            seed: synthetic::DEFAULT_SEED,
        });
    }
    rest.parse().map(|seed| Input::Test { seed }).map_err(|_| {
        Error::Invalid(format!(
            "input 'test://{rest}': expected test:// or test://SEED (a number)"
        ))
    })
}

impl Input {
    pub fn parse(uri: &str) -> Result<Self> {
        for (scheme, parse) in SCHEMES {
            if let Some(rest) = uri.strip_prefix(scheme) {
                return parse(rest);
            }
        }
        if let Some((scheme, _)) = uri.split_once("://") {
            let known: Vec<&str> = SCHEMES.iter().map(|s| s.0).collect();
            return Err(Error::Invalid(format!(
                "input '{uri}': unknown scheme '{scheme}://' (known: {}, or a path)",
                known.join(", ")
            )));
        }
        if uri.starts_with("/dev/video") {
            return Ok(Input::Camera(PathBuf::from(uri)));
        }
        Ok(Input::Files(uri.to_string()))
    }

    /// Whether failing to open is worth retrying (a camera may be plugged in later).
    pub fn retry_on_failure(&self) -> bool {
        matches!(self, Input::Camera(_))
    }

    /// Open the source.
    pub fn open(&self, options: &SourceOptions) -> Result<Box<dyn Source>> {
        match self {
            Input::Test { seed } => Ok(Box::new(synthetic::TestScene::new(*seed, options))),
            Input::Files(pattern) => Ok(Box::new(files::Images::open(
                pattern,
                options.looping,
                options.decode,
            )?)),
            #[cfg(feature = "v4l2")]
            Input::Camera(path) => Ok(Box::new(v4l2::Camera::open(path, options)?)),
            #[cfg(not(feature = "v4l2"))]
            Input::Camera(path) => Err(Error::Invalid(format!(
                "{}: this seg-cam was built without V4L2 support (feature 'v4l2')",
                path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_map_to_sources() {
        assert_eq!(
            Input::parse("v4l2:///dev/video2").unwrap(),
            Input::Camera("/dev/video2".into())
        );
        assert_eq!(
            Input::parse("/dev/video0").unwrap(),
            Input::Camera("/dev/video0".into())
        );
        assert_eq!(
            Input::parse("test://").unwrap(),
            Input::Test {
                seed: synthetic::DEFAULT_SEED
            }
        );
        assert_eq!(Input::parse("test://7").unwrap(), Input::Test { seed: 7 });
        assert_eq!(
            Input::parse("shots/*.png").unwrap(),
            Input::Files("shots/*.png".into())
        );
        assert_eq!(
            Input::parse("file:///data/a.jpg").unwrap(),
            Input::Files("/data/a.jpg".into())
        );
        let msg = Input::parse("rtsp://cam/1").unwrap_err().to_string();
        assert!(msg.contains("rtsp://") && msg.contains("v4l2://"), "{msg}");
        assert!(Input::parse("test://x").is_err());
        assert!(Input::parse("/dev/video0").unwrap().retry_on_failure());
        assert!(!Input::parse("test://").unwrap().retry_on_failure());
    }
}
