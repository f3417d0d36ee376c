//! Image files as a source: one file, a folder (its PNG and JPEG files in name
//! order) or a glob pattern; optionally looping. Each file is decoded within the
//! decode limits; one that fails is skipped and counted, but a pass over the files in
//! which none decodes ends the source with an error (rather than looping over them
//! for ever, or ending as if all went well).

use std::path::{Path, PathBuf};

use super::{Next, Source};
use crate::decode::{open_image, DecodeLimits};
use crate::error::{Error, Result};

/// Extensions read from folders (the image formats this build decodes).
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

#[derive(Debug)]
pub struct Images {
    pattern: String,
    paths: Vec<PathBuf>,
    index: usize,
    looping: bool,
    limits: DecodeLimits,
    /// Whether a file of the current pass decoded, and the last failure.
    decoded_this_pass: bool,
    last_failure: Option<String>,
}

fn is_image(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

impl Images {
    /// The images `pattern` names; an error names the pattern when it names none.
    pub fn open(pattern: &str, looping: bool, limits: DecodeLimits) -> Result<Self> {
        let path = Path::new(pattern);
        let paths = if pattern.contains(['*', '?', '[']) {
            let entries = glob::glob(pattern)
                .map_err(|e| Error::Invalid(format!("input '{pattern}': bad glob: {e}")))?;
            let mut paths: Vec<PathBuf> = entries.flatten().filter(|p| p.is_file()).collect();
            paths.sort();
            paths
        } else if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| Error::Io {
                path: path.to_owned(),
                cause: source,
            })?;
            let mut paths: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| is_image(p))
                .collect();
            paths.sort();
            paths
        } else if path.is_file() {
            vec![path.to_owned()]
        } else if std::fs::symlink_metadata(path).is_ok() {
            // a FIFO, a device, a dangling or looping link: there, but not images
            return Err(Error::Invalid(format!(
                "input '{pattern}': not a regular file or folder (a pipe, a device or a broken link?)"
            )));
        } else {
            return Err(Error::Invalid(format!(
                "input '{pattern}': no such file or folder (expected an image, a folder, a glob, test:// or a camera)"
            )));
        };
        if paths.is_empty() {
            return Err(Error::Invalid(format!(
                "input '{pattern}': no images found (looked for .{})",
                EXTENSIONS.join(", .")
            )));
        }
        Ok(Self {
            pattern: pattern.to_string(),
            paths,
            index: 0,
            looping,
            limits,
            decoded_this_pass: false,
            last_failure: None,
        })
    }
}

impl Source for Images {
    fn next(&mut self) -> Result<Next> {
        if self.index >= self.paths.len() {
            if !self.decoded_this_pass {
                return Err(Error::Invalid(format!(
                    "input '{}': none of its {} images decodes (the last: {})",
                    self.pattern,
                    self.paths.len(),
                    self.last_failure.as_deref().unwrap_or("?")
                )));
            }
            if !self.looping {
                return Ok(Next::End);
            }
            self.index = 0;
            self.decoded_this_pass = false;
        }
        let path = &self.paths[self.index];
        self.index += 1;
        Ok(match open_image(path, &self.limits) {
            Ok(img) => {
                self.decoded_this_pass = true;
                Next::Frame(img.to_rgb8())
            }
            Err(e) => {
                let why = e.to_string();
                self.last_failure = Some(why.clone());
                Next::Corrupt(why)
            }
        })
    }

    fn describe(&self) -> String {
        format!("{} ({} images)", self.pattern, self.paths.len())
    }

    fn files(&self) -> &[PathBuf] {
        &self.paths
    }

    fn frame_name(&self) -> Option<String> {
        // The file `next` read last: asked only after it gave a frame.
        let last = self.index.checked_sub(1)?;
        self.paths.get(last).map(|p| p.display().to_string())
    }

    fn is_live(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn write_images(dir: &Path) {
        for (name, v) in [("b.png", 20u8), ("a.png", 10), ("c.jpg", 30)] {
            RgbImage::from_pixel(8, 6, Rgb([v, v, v]))
                .save(dir.join(name))
                .unwrap();
        }
        std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
        std::fs::write(dir.join("broken.png"), "not a png either").unwrap();
    }

    fn drain(source: &mut Images, max: usize) -> (Vec<u8>, usize, bool) {
        let (mut values, mut corrupt) = (Vec::new(), 0);
        for _ in 0..max {
            match source.next().unwrap() {
                Next::Frame(f) => values.push(f.get_pixel(0, 0).0[0]),
                Next::Corrupt(msg) => {
                    assert!(msg.contains("broken.png"), "{msg}");
                    corrupt += 1
                }
                Next::End => return (values, corrupt, true),
            }
        }
        (values, corrupt, false)
    }

    #[test]
    fn folders_are_read_in_name_order_and_bad_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        write_images(dir.path());
        let mut source =
            Images::open(dir.path().to_str().unwrap(), false, DecodeLimits::default()).unwrap();
        assert_eq!(source.files().len(), 4, "the .txt is left out");
        let (values, corrupt, ended) = drain(&mut source, 10);
        assert!(ended);
        assert_eq!(corrupt, 1);
        assert_eq!(values.len(), 3);
        assert_eq!(values[..2], [10, 20]);
        assert!(values[2].abs_diff(30) <= 2, "JPEG");
        assert!(!source.is_live());
    }

    #[test]
    fn globs_single_files_and_looping() {
        let dir = tempfile::tempdir().unwrap();
        write_images(dir.path());
        let pattern = format!("{}/[ab].png", dir.path().display());
        let mut source = Images::open(&pattern, true, DecodeLimits::default()).unwrap();
        let (values, _, ended) = drain(&mut source, 5);
        assert!(!ended, "looping never ends");
        assert_eq!(values, [10, 20, 10, 20, 10]);

        let single = dir.path().join("b.png");
        let mut source =
            Images::open(single.to_str().unwrap(), false, DecodeLimits::default()).unwrap();
        assert_eq!(drain(&mut source, 5).0, [20]);
    }

    #[test]
    fn nothing_to_read_is_an_error_naming_the_input() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().to_str().unwrap().to_string();
        let msg = Images::open(&empty, false, DecodeLimits::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains(&empty) && msg.contains("no images"), "{msg}");
        let missing = format!("{empty}/nope.png");
        let msg = Images::open(&missing, false, DecodeLimits::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("nope.png"), "{msg}");
        let msg = Images::open(&format!("{empty}/*.png"), false, DecodeLimits::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("no images"), "{msg}");
    }

    #[test]
    fn a_pass_where_nothing_decodes_is_an_error_looping_or_not() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.png", "b.jpg"] {
            std::fs::write(dir.path().join(name), "not an image").unwrap();
        }
        for looping in [false, true] {
            let mut source = Images::open(
                dir.path().to_str().unwrap(),
                looping,
                DecodeLimits::default(),
            )
            .unwrap();
            assert!(matches!(source.next().unwrap(), Next::Corrupt(_)));
            assert!(matches!(source.next().unwrap(), Next::Corrupt(_)));
            let msg = source.next().unwrap_err().to_string();
            assert!(
                msg.contains("none of its 2 images") && msg.contains("b.jpg"),
                "{msg}"
            );
        }
        // Too large to decode counts as not decoding.
        RgbImage::new(50, 50)
            .save(dir.path().join("c.png"))
            .unwrap();
        let tight = DecodeLimits {
            max_pixels: 100,
            ..DecodeLimits::default()
        };
        let mut source = Images::open(dir.path().to_str().unwrap(), true, tight).unwrap();
        let (values, corrupt, _) = drain_until_error(&mut source);
        assert_eq!((values, corrupt), (0, 3));
    }

    fn drain_until_error(source: &mut Images) -> (usize, usize, String) {
        let (mut frames, mut corrupt) = (0, 0);
        loop {
            match source.next() {
                Ok(Next::Frame(_)) => frames += 1,
                Ok(Next::Corrupt(_)) => corrupt += 1,
                Ok(Next::End) => return (frames, corrupt, String::new()),
                Err(e) => return (frames, corrupt, e.to_string()),
            }
        }
    }
}
