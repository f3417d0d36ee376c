//! The calibration images: a VOC-layout dataset's split, or any folder of images.
//! Each is scaled to cover the model's input and centre-cropped to it, as a camera
//! frame would be.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::imageops::FilterType;
use image::RgbImage;
use segcam::decode::{open_image, DecodeLimits};
use segcam::preprocess::Rect;
use segcam::ClassList;

use crate::dataset::{BadFiles, VocDataset};

// The formats the workspace builds `image` with.
const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Whether `root` is a VOC-layout dataset with a `split` list.
pub fn has_split(root: &Path, split: &str) -> bool {
    root.join("ImageSets/Segmentation")
        .join(format!("{split}.txt"))
        .is_file()
}

pub struct CalibrationImages {
    paths: Vec<PathBuf>,
    bad: BadFiles,
}

impl CalibrationImages {
    /// Up to `count` images spread evenly over the split (or the folder, sorted by name).
    pub fn open(
        root: &Path,
        split: &str,
        count: usize,
        classes: &ClassList,
        bad: BadFiles,
    ) -> Result<Self> {
        let all = if has_split(root, split) {
            VocDataset::open(root, split, Some(classes.clone()), bad)?
                .samples
                .into_iter()
                .map(|s| s.image)
                .collect()
        } else {
            image_files(root)?
        };
        if all.is_empty() {
            bail!(
                "{}: no calibration images (neither a VOC-layout '{split}' split nor .jpg/.jpeg/.png files)",
                root.display()
            );
        }
        let n = count.min(all.len());
        let paths = (0..n).map(|i| all[i * all.len() / n].clone()).collect();
        Ok(Self { paths, bad })
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Each image fitted to `width × height`; unreadable ones fail, or are left out
    /// with [`BadFiles::Skip`].
    pub fn iter(&self, width: u32, height: u32) -> impl Iterator<Item = Result<RgbImage>> + '_ {
        self.paths.iter().filter_map(
            move |path| match open_image(path, &DecodeLimits::default()) {
                Ok(im) => Some(Ok(cover(&im.to_rgb8(), width, height))),
                Err(e) if self.bad == BadFiles::Skip => {
                    tracing::warn!("skipping: {e}");
                    None
                }
                Err(e) => Some(Err(e.into())),
            },
        )
    }
}

fn image_files(root: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(root)
        .with_context(|| format!("{}: cannot read the calibration folder", root.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Scale `image` (keeping its aspect ratio) until it covers `width × height`, then take
/// the centre.
pub fn cover(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let scale = (width as f64 / image.width() as f64).max(height as f64 / image.height() as f64);
    let scaled = if scale > 1.0 {
        let sw = ((image.width() as f64 * scale).ceil() as u32).max(width);
        let sh = ((image.height() as f64 * scale).ceil() as u32).max(height);
        image::imageops::resize(image, sw, sh, FilterType::Triangle)
    } else {
        image.clone()
    };
    Rect::centre(scaled.width(), scaled.height(), width, height)
        .expect("the scaled image covers the window")
        .crop(&scaled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_images_are_scaled_up_and_large_ones_cropped() {
        let small = RgbImage::from_pixel(10, 20, image::Rgb([9, 9, 9]));
        assert_eq!(cover(&small, 32, 32).dimensions(), (32, 32));
        let large = RgbImage::from_fn(100, 50, |x, _| image::Rgb([x as u8, 0, 0]));
        let c = cover(&large, 20, 10);
        assert_eq!(c.dimensions(), (20, 10));
        assert_eq!(c.get_pixel(0, 0)[0], 40, "the centre, unscaled");
    }

    #[test]
    fn a_folder_without_images_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let msg =
            CalibrationImages::open(dir.path(), "train", 4, &ClassList::voc(), BadFiles::Fail)
                .err()
                .unwrap()
                .to_string();
        assert!(
            msg.contains(&dir.path().display().to_string())
                && msg.contains("no calibration images"),
            "{msg}"
        );
        let missing = dir.path().join("nope");
        let msg = CalibrationImages::open(&missing, "train", 4, &ClassList::voc(), BadFiles::Fail)
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("nope"), "{msg}");
    }

    #[test]
    fn images_are_spread_over_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..10 {
            RgbImage::new(4, 4)
                .save(dir.path().join(format!("{i:02}.png")))
                .unwrap();
        }
        let set =
            CalibrationImages::open(dir.path(), "train", 3, &ClassList::voc(), BadFiles::Fail)
                .unwrap();
        let names: Vec<_> = set
            .paths
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["00.png", "03.png", "06.png"]);
        assert_eq!(set.iter(8, 8).count(), 3);
    }
}
