//! Outputs named the way jetson-inference names them (`seg-cam INPUT OUTPUT…`): each
//! URI stands for one setting of [`Config`](super::Config).

use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};

/// One output of `seg-cam INPUT OUTPUT…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputUri {
    /// `http://ADDR`: the live page and MJPEG stream (`http`); `http://:PORT` or
    /// `http://@:PORT` listens on every interface.
    Http(String),
    /// `fb:///dev/fbN`, a bare `/dev/fbN`, or `display://N` (framebuffer N): the
    /// framebuffer (`fb`), always in the `fb://` form.
    Framebuffer(String),
    /// `file://DIR` or a bare folder: each output frame as a JPEG there (`out`).
    Folder(PathBuf),
}

const EXPECTED: &str =
    "expected http://ADDR, fb:///dev/fbN, display://N or file://DIR (a folder of JPEG frames)";

impl FromStr for OutputUri {
    type Err = Error;

    fn from_str(uri: &str) -> Result<Self> {
        let bad = |why: &str| Error::Invalid(format!("output '{uri}': {why}"));
        if let Some(addr) = uri.strip_prefix("http://") {
            let addr = addr.trim_end_matches('/');
            let addr = addr.strip_prefix('@').unwrap_or(addr);
            return match addr {
                _ if addr.contains('/') => {
                    Err(bad("an HTTP output is an address (HOST:PORT), not a path"))
                }
                "" => Ok(Self::Http(crate::http::DEFAULT_ADDR.into())),
                _ if addr.starts_with(':') => Ok(Self::Http(format!("0.0.0.0{addr}"))),
                _ => Ok(Self::Http(addr.into())),
            };
        }
        if uri.starts_with("fb://") {
            return Ok(Self::Framebuffer(uri.into()));
        }
        if uri.starts_with("/dev/fb") {
            return Ok(Self::Framebuffer(format!("fb://{uri}")));
        }
        if let Some(n) = uri.strip_prefix("display://") {
            let n = if n.is_empty() { "0" } else { n };
            return match n.parse::<u32>() {
                Ok(n) => Ok(Self::Framebuffer(format!("fb:///dev/fb{n}"))),
                Err(_) => Err(bad(
                    "expected display://N, N a display (framebuffer) number",
                )),
            };
        }
        if let Some(dir) = uri.strip_prefix("file://") {
            return folder(dir).map_err(|why| bad(&why));
        }
        if let Some((scheme, _)) = uri.split_once("://") {
            return Err(bad(&format!(
                "seg-cam does not write {scheme}:// outputs; {EXPECTED}"
            )));
        }
        folder(uri).map_err(|why| bad(&why))
    }
}

/// A folder output; a file name (a video or one picture) is refused, as seg-cam writes
/// numbered frames.
fn folder(path: &str) -> std::result::Result<OutputUri, String> {
    if path.is_empty() {
        return Err(format!("no folder given; {EXPECTED}"));
    }
    let looks_like_a_file = std::path::Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| {
            [
                "mp4", "mkv", "avi", "h264", "h265", "jpg", "jpeg", "png", "bmp",
            ]
            .contains(&e.to_ascii_lowercase().as_str())
        });
    if looks_like_a_file {
        return Err("seg-cam writes numbered JPEG frames into a folder (frame-000001.jpg, …): name the folder".into());
    }
    Ok(OutputUri::Folder(PathBuf::from(path)))
}

impl OutputUri {
    /// The config key this output sets.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Http(_) => "http",
            Self::Framebuffer(_) => "fb",
            Self::Folder(_) => "out",
        }
    }

    /// The value of that key.
    pub fn value(&self) -> toml::Value {
        match self {
            Self::Http(addr) => addr.clone().into(),
            Self::Framebuffer(uri) => uri.clone().into(),
            Self::Folder(dir) => dir.to_string_lossy().into_owned().into(),
        }
    }
}

/// The settings `outputs` stand for, keyed like the config file. Two outputs of one
/// kind (two folders, two pages) are an error.
pub fn settings(outputs: &[String]) -> Result<toml::Table> {
    let mut table = toml::Table::new();
    for uri in outputs {
        let output: OutputUri = uri.parse()?;
        if let Some(old) = table.insert(output.key().into(), output.value()) {
            return Err(Error::Invalid(format!(
                "outputs: {old} and '{uri}' are both a '{}' output; seg-cam has one of each",
                output.key()
            )));
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(uri: &str) -> Result<OutputUri> {
        uri.parse()
    }

    #[test]
    fn jetson_style_uris_map_to_settings() {
        assert_eq!(
            parse("http://0.0.0.0:9000").unwrap(),
            OutputUri::Http("0.0.0.0:9000".into())
        );
        assert_eq!(
            parse("http://@:8554/").unwrap(),
            OutputUri::Http("0.0.0.0:8554".into())
        );
        assert_eq!(
            parse("http://").unwrap(),
            OutputUri::Http(crate::http::DEFAULT_ADDR.into())
        );
        assert_eq!(
            parse("fb:///dev/fb1").unwrap(),
            OutputUri::Framebuffer("fb:///dev/fb1".into())
        );
        assert_eq!(
            parse("/dev/fb1").unwrap(),
            OutputUri::Framebuffer("fb:///dev/fb1".into())
        );
        assert_eq!(
            parse("display://").unwrap(),
            OutputUri::Framebuffer("fb:///dev/fb0".into())
        );
        assert_eq!(
            parse("display://2").unwrap(),
            OutputUri::Framebuffer("fb:///dev/fb2".into())
        );
        assert_eq!(
            parse("file:///tmp/frames").unwrap(),
            OutputUri::Folder("/tmp/frames".into())
        );
        assert_eq!(
            parse("frames/").unwrap(),
            OutputUri::Folder("frames/".into())
        );
    }

    #[test]
    fn what_seg_cam_cannot_write_is_refused_by_name() {
        for (uri, says) in [
            ("rtp://192.168.1.2:1234", "rtp://"),
            ("webrtc://@:8554/out", "webrtc://"),
            ("out.mp4", "folder"),
            ("file://shot.jpg", "folder"),
            ("display://left", "display://N"),
            ("http://host:80/stream", "HOST:PORT"),
            ("http://@:8554/out", "HOST:PORT"),
            ("http://:8080/stream", "HOST:PORT"),
        ] {
            let msg = parse(uri).unwrap_err().to_string();
            assert!(msg.contains(uri) && msg.contains(says), "{uri}: {msg}");
        }
    }

    #[test]
    fn one_output_of_each_kind() {
        let table = settings(&["display://1".into(), "file://x".into()]).unwrap();
        assert_eq!(table["fb"].as_str(), Some("fb:///dev/fb1"));
        assert_eq!(table["out"].as_str(), Some("x"));
        assert!(!table.contains_key("http"));
        let msg = settings(&["file://a".into(), "b/".into()])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("'out'") && msg.contains("b/"), "{msg}");
    }
}
