//! `seg-host synth`: write scenes of the built-in generator ([`segcam::scene`]) as a
//! VOC-layout dataset, with label files exactly like VOC's (8-bit palette PNGs holding
//! VOC class indices) and a `labelmap.txt` that maps their colours to the six scene
//! classes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::codecs::jpeg::JpegEncoder;
use image::GrayImage;
use segcam::classes::voc_palette;
use segcam::scene::{self, scene_classes, voc_index};

use crate::atomic;

/// JPEG quality of the written images (VOC's own JPEGs are of about this quality).
pub const JPEG_QUALITY: u8 = 90;

#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub out: PathBuf,
    pub count: usize,
    pub seed: u64,
    pub height: u32,
    pub width: u32,
    /// Share of the images that go to `val` (the last ids).
    pub val_fraction: f64,
}

impl SynthOptions {
    /// 200 images of 240×320, a fifth of them for validation, seed 0.
    pub fn new(out: PathBuf) -> Self {
        Self {
            out,
            count: 200,
            seed: 0,
            height: 240,
            width: 320,
            val_fraction: 0.2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthSummary {
    pub train: usize,
    pub val: usize,
}

/// The id of image `i`.
pub fn image_id(i: usize) -> String {
    format!("synth_{i:06}")
}

/// Written first into a folder synth fills, so that one it was stopped in is its own.
const MARKER: &str = ".segcam-synth";

/// Refuse to write into a folder that holds anything but an earlier synthetic
/// dataset: its split lists and labelmap would be replaced, and a user's data mixed
/// with generated scenes. A dataset synth wrote (its marker, or every listed id one
/// of its own) is written again, as `just demo` does.
fn refuse_other_data(out: &Path) -> Result<()> {
    let Ok(mut entries) = fs::read_dir(out) else {
        return Ok(()); // not there yet (or not a folder: creating it says so)
    };
    if entries.next().is_none() {
        return Ok(());
    }
    let lists = out.join("ImageSets/Segmentation");
    let ours = |name: &str| {
        fs::read_to_string(lists.join(name)).is_ok_and(|text| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .all(|id| {
                    id.strip_prefix("synth_")
                        .is_some_and(|n| n.len() == 6 && n.bytes().all(|b| b.is_ascii_digit()))
                })
        })
    };
    if !(out.join(MARKER).is_file() || ours("train.txt") && ours("val.txt")) {
        bail!(
            "{}: not empty, and not a dataset synth wrote; choose a new folder for the synthetic dataset",
            out.display()
        );
    }
    Ok(())
}

/// (train, val) sizes: val is ⌈count · val_fraction⌉, at least 1 when there are two
/// or more images, and never all of them (training needs one image).
pub fn split_sizes(count: usize, val_fraction: f64) -> (usize, usize) {
    if count < 2 {
        return (count, 0);
    }
    // The epsilon keeps 10 × 0.3 = 3.0000000000000004 from rounding up to 4.
    let val = (count as f64 * val_fraction - 1e-9).ceil().max(0.0) as usize;
    let val = val.clamp(1, count - 1);
    (count - val, val)
}

/// Write `opts.count` scenes of family `opts.seed` under `opts.out`: `JPEGImages/`,
/// `SegmentationClass/`, `ImageSets/Segmentation/{train,val}.txt` and `labelmap.txt`.
/// Deterministic per seed; every file appears whole (written aside, then renamed);
/// the split lists are written last, so they never name a missing image.
/// `on_image(i)` is called after image `i` is on disk.
pub fn write_dataset(opts: &SynthOptions, on_image: &dyn Fn(usize)) -> Result<SynthSummary> {
    if opts.count == 0 {
        bail!("synth: --count must be at least 1");
    }
    if opts.height == 0 || opts.width == 0 {
        bail!(
            "synth: image size {}×{} (height×width) must be at least 1×1",
            opts.height,
            opts.width
        );
    }
    if !(0.0..=1.0).contains(&opts.val_fraction) {
        bail!(
            "synth: validation fraction {} must be in 0..=1",
            opts.val_fraction
        );
    }
    refuse_other_data(&opts.out)?;
    fs::create_dir_all(&opts.out)
        .with_context(|| format!("{}: cannot create folder", opts.out.display()))?;
    atomic::write(
        &opts.out.join(MARKER),
        b"a dataset of generated scenes: seg-host synth\n",
    )?;
    let images = opts.out.join("JPEGImages");
    let labels = opts.out.join("SegmentationClass");
    let lists = opts.out.join("ImageSets/Segmentation");
    for dir in [&images, &labels, &lists] {
        fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create folder", dir.display()))?;
    }
    let palette: Vec<u8> = voc_palette().concat();
    let mut ids = Vec::with_capacity(opts.count);
    for i in 0..opts.count {
        let id = image_id(i);
        let scene = scene::render(opts.seed, i as u64, opts.width, opts.height);
        atomic::write_with(&images.join(format!("{id}.jpg")), |w| {
            JpegEncoder::new_with_quality(w, JPEG_QUALITY).encode_image(&scene.image)?;
            Ok(())
        })?;
        atomic::write_with(&labels.join(format!("{id}.png")), |w| {
            write_voc_label(w, &scene.labels, &palette)
        })?;
        ids.push(id);
        on_image(i);
    }
    let (train, val) = split_sizes(opts.count, opts.val_fraction);
    let listing = |ids: &[String]| ids.iter().map(|id| format!("{id}\n")).collect::<String>();
    write_text(&lists.join("train.txt"), &listing(&ids[..train]))?;
    write_text(&lists.join("val.txt"), &listing(&ids[train..]))?;
    write_text(
        &opts.out.join("labelmap.txt"),
        &scene_classes().to_labelmap(),
    )?;
    Ok(SynthSummary { train, val })
}

/// A label map of compact scene classes as VOC writes it: 8-bit palette PNG, pixel
/// values = VOC class indices (void stays 255), the full 256-colour VOC palette.
fn write_voc_label(w: &mut dyn Write, labels: &GrayImage, palette: &[u8]) -> Result<()> {
    let mut encoder = png::Encoder::new(w, labels.width(), labels.height());
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_palette(palette);
    let data: Vec<u8> = labels.as_raw().iter().map(|&c| voc_index(c)).collect();
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&data)?;
    writer.finish()?;
    Ok(())
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    atomic::write(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{read_label, BadFiles, VocDataset};
    use std::cell::RefCell;
    use std::fs::File;

    fn options(out: &Path, count: usize, seed: u64) -> SynthOptions {
        SynthOptions {
            out: out.to_owned(),
            count,
            seed,
            height: 48,
            width: 64,
            val_fraction: 0.25,
        }
    }

    fn all_files(root: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        files.sort();
        files
    }

    #[test]
    fn writes_the_voc_layout_with_splits_and_labelmap() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("synth");
        let seen = RefCell::new(Vec::new());
        let summary = write_dataset(&options(&out, 6, 1), &|i| seen.borrow_mut().push(i)).unwrap();
        assert_eq!(summary, SynthSummary { train: 4, val: 2 });
        assert_eq!(*seen.borrow(), (0..6).collect::<Vec<_>>());
        let list = |split: &str| {
            fs::read_to_string(out.join(format!("ImageSets/Segmentation/{split}.txt"))).unwrap()
        };
        assert_eq!(
            list("train"),
            "synth_000000\nsynth_000001\nsynth_000002\nsynth_000003\n"
        );
        assert_eq!(list("val"), "synth_000004\nsynth_000005\n");
        for i in 0..6 {
            assert!(out
                .join(format!("JPEGImages/{}.jpg", image_id(i)))
                .is_file());
            assert!(out
                .join(format!("SegmentationClass/{}.png", image_id(i)))
                .is_file());
        }
        let labelmap = fs::read_to_string(out.join("labelmap.txt")).unwrap();
        assert_eq!(labelmap, scene_classes().to_labelmap());
        let stray: Vec<_> = all_files(&out)
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(stray.is_empty(), "temporary files left: {stray:?}");
        assert_eq!(all_files(&out).len(), 6 * 2 + 4, "with its marker");
    }

    #[test]
    fn labels_are_indexed_pngs_with_the_voc_palette_and_voc_indices() {
        let dir = tempfile::tempdir().unwrap();
        write_dataset(&options(dir.path(), 3, 2), &|_| {}).unwrap();
        for i in 0..3 {
            let path = dir
                .path()
                .join(format!("SegmentationClass/{}.png", image_id(i)));
            let mut decoder =
                png::Decoder::new(std::io::BufReader::new(File::open(&path).unwrap()));
            decoder.set_transformations(png::Transformations::IDENTITY);
            let mut reader = decoder.read_info().unwrap();
            let mut buf = vec![0; reader.output_buffer_size().unwrap()];
            let frame = reader.next_frame(&mut buf).unwrap();
            assert_eq!(frame.color_type, png::ColorType::Indexed);
            assert_eq!(frame.bit_depth, png::BitDepth::Eight);
            assert_eq!((frame.width, frame.height), (64, 48));
            let palette = reader.info().palette.as_deref().unwrap().to_vec();
            assert_eq!(palette.len(), 256 * 3);
            assert_eq!(palette[15 * 3..16 * 3], [192, 128, 128]);
            assert_eq!(palette[255 * 3..], [224, 224, 192]);
            // Pixel values are VOC indices of the very scene the generator renders.
            let scene = scene::render(2, i as u64, 64, 48);
            let expected: Vec<u8> = scene.labels.iter().map(|&c| voc_index(c)).collect();
            assert_eq!(&buf[..frame.buffer_size()], &expected[..]);
            assert!(expected
                .iter()
                .all(|v| [0, 3, 5, 7, 15, 20, 255].contains(v)));
        }
    }

    #[test]
    fn dataset_reader_maps_files_back_to_the_scene_classes() {
        let dir = tempfile::tempdir().unwrap();
        write_dataset(&options(dir.path(), 4, 3), &|_| {}).unwrap();
        let ds = VocDataset::open(dir.path(), "train", None, BadFiles::Fail).unwrap();
        assert_eq!(ds.classes, scene_classes());
        assert_eq!(ds.samples.len(), 3);
        for i in 0..ds.samples.len() {
            let (image, labels) = ds.load(i).unwrap();
            let scene = scene::render(3, i as u64, 64, 48);
            assert_eq!(labels, scene.labels);
            // JPEG at quality 90: close to the rendered pixels, not equal.
            let diff: u64 = image
                .iter()
                .zip(scene.image.iter())
                .map(|(a, b)| a.abs_diff(*b) as u64)
                .sum();
            let mean = diff as f64 / image.len() as f64;
            assert!(mean < 6.0, "image {i}: mean abs difference {mean:.2}");
        }
        let val = ds.samples.len();
        let label = dir
            .path()
            .join(format!("SegmentationClass/{}.png", image_id(val)));
        assert_eq!(
            read_label(&label, &scene_classes()).unwrap(),
            scene::render(3, val as u64, 64, 48).labels
        );
    }

    #[test]
    fn same_seed_writes_identical_files() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        write_dataset(&options(&a, 3, 7), &|_| {}).unwrap();
        write_dataset(&options(&b, 3, 7), &|_| {}).unwrap();
        write_dataset(&options(&c, 3, 8), &|_| {}).unwrap();
        let files = all_files(&a);
        assert_eq!(files.len(), 3 * 2 + 4);
        for f in &files {
            let rel = f.strip_prefix(&a).unwrap();
            assert_eq!(
                fs::read(f).unwrap(),
                fs::read(b.join(rel)).unwrap(),
                "{} differs between runs",
                rel.display()
            );
        }
        let first = "JPEGImages/synth_000000.jpg";
        assert_ne!(
            fs::read(a.join(first)).unwrap(),
            fs::read(c.join(first)).unwrap()
        );
    }

    #[test]
    fn split_sizes_follow_the_fraction() {
        assert_eq!(split_sizes(10, 0.3), (7, 3));
        assert_eq!(split_sizes(100, 0.1), (90, 10));
        assert_eq!(split_sizes(7, 0.2), (5, 2));
        assert_eq!(split_sizes(2, 0.0), (1, 1));
        assert_eq!(split_sizes(5, 1.0), (1, 4));
        assert_eq!(split_sizes(1, 0.5), (1, 0));
    }

    #[test]
    fn bad_options_are_refused_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = options(dir.path(), 0, 1);
        assert!(write_dataset(&o, &|_| {})
            .unwrap_err()
            .to_string()
            .contains("count"));
        o.count = 2;
        o.val_fraction = f64::NAN;
        assert!(write_dataset(&o, &|_| {})
            .unwrap_err()
            .to_string()
            .contains("fraction"));
        o.val_fraction = 0.5;
        o.height = 0;
        assert!(write_dataset(&o, &|_| {})
            .unwrap_err()
            .to_string()
            .contains("size"));
        o.height = 48;
        // A synthetic dataset is written again over itself, even one stopped before
        // its split lists were written.
        write_dataset(&o, &|_| {}).unwrap();
        fs::remove_dir_all(dir.path().join("ImageSets")).unwrap();
        write_dataset(&o, &|_| {}).unwrap();
        // A plain file where the image folder should be.
        fs::remove_dir_all(dir.path().join("JPEGImages")).unwrap();
        fs::write(dir.path().join("JPEGImages"), b"not a folder").unwrap();
        let msg = format!("{:#}", write_dataset(&o, &|_| {}).unwrap_err());
        assert!(msg.contains("JPEGImages"), "{msg}");
        // A user's dataset is not written over.
        let theirs = dir.path().join("voc");
        fs::create_dir_all(theirs.join("ImageSets/Segmentation")).unwrap();
        let list = theirs.join("ImageSets/Segmentation/train.txt");
        fs::write(&list, "2007_000032\n").unwrap();
        o.out = theirs.clone();
        let msg = format!("{:#}", write_dataset(&o, &|_| {}).unwrap_err());
        assert!(msg.contains("voc") && msg.contains("not empty"), "{msg}");
        assert_eq!(fs::read_to_string(&list).unwrap(), "2007_000032\n");
        assert!(!theirs.join("JPEGImages").exists());
    }
}
