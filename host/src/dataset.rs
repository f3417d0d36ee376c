//! A VOC-layout dataset: `JPEGImages/<id>.jpg`, `SegmentationClass/<id>.png` and
//! `ImageSets/Segmentation/<split>.txt`. Pascal VOC 2012 itself, the synthetic
//! generator's output, or a user's own data with its class list in `labelmap.txt`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::{GrayImage, RgbImage};
use segcam::classes::{ClassList, VOID};
use segcam::decode::DecodeLimits;

/// One image and its label file.
#[derive(Debug, Clone)]
pub struct Sample {
    pub id: String,
    pub image: PathBuf,
    pub label: PathBuf,
}

/// The samples of one split, with the class list their label colours map to.
#[derive(Debug, Clone)]
pub struct VocDataset {
    pub root: PathBuf,
    pub split: String,
    pub classes: ClassList,
    pub samples: Vec<Sample>,
    /// Samples left out by [`VocDataset::keep_at_least`] or as unreadable (`--skip-bad`).
    pub dropped_small: usize,
    pub dropped_bad: usize,
}

/// What to do with a missing or corrupt file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadFiles {
    Fail,
    Skip,
}

impl BadFiles {
    /// `Skip` when the user asked to skip bad samples (`--skip-bad`), else `Fail`.
    pub fn skip_if(skip: bool) -> Self {
        if skip {
            Self::Skip
        } else {
            Self::Fail
        }
    }
}

impl VocDataset {
    /// Open `root` (a `VOCdevkit/VOC2012` folder or any folder of that layout). The class
    /// list is `classes` if given, else `root/labelmap.txt` if present, else VOC's 21.
    pub fn open(
        root: &Path,
        split: &str,
        classes: Option<ClassList>,
        bad: BadFiles,
    ) -> Result<Self> {
        let list = root
            .join("ImageSets/Segmentation")
            .join(format!("{split}.txt"));
        let text = std::fs::read_to_string(&list).with_context(|| {
            format!(
                "{}: cannot read the '{split}' split list (expected a VOC layout: JPEGImages/, SegmentationClass/, ImageSets/Segmentation/{split}.txt)",
                list.display()
            )
        })?;
        let classes = match classes {
            Some(c) => c,
            None => Self::classes_in(root)?,
        };
        let mut ds = Self {
            root: root.to_owned(),
            split: split.to_owned(),
            classes,
            samples: Vec::new(),
            dropped_small: 0,
            dropped_bad: 0,
        };
        // A byte-order mark (Windows editors write one) is not part of the first id.
        let ids = text.strip_prefix('\u{feff}').unwrap_or(&text);
        for id in ids.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let sample = Sample {
                id: id.to_owned(),
                image: root.join("JPEGImages").join(format!("{id}.jpg")),
                label: root.join("SegmentationClass").join(format!("{id}.png")),
            };
            let missing = [&sample.image, &sample.label]
                .into_iter()
                .find(|p| !p.is_file())
                .cloned();
            match missing {
                None => ds.samples.push(sample),
                Some(missing) if bad == BadFiles::Skip => {
                    tracing::warn!("skipping {id}: {} is missing", missing.display());
                    ds.dropped_bad += 1;
                }
                Some(missing) => bail!(
                    "{}: missing (listed in {}); pass --skip-bad to leave such samples out",
                    missing.display(),
                    list.display()
                ),
            }
        }
        if ds.samples.is_empty() {
            bail!(
                "{}: the '{split}' split lists no usable samples",
                list.display()
            );
        }
        Ok(ds)
    }

    /// The class list a dataset folder declares: `labelmap.txt`, else Pascal VOC's.
    pub fn classes_in(root: &Path) -> Result<ClassList> {
        let labelmap = root.join("labelmap.txt");
        if labelmap.is_file() {
            Ok(ClassList::read_labelmap(&labelmap)?)
        } else {
            Ok(ClassList::voc())
        }
    }

    /// Keep samples whose images are at least `height × width` (read from the file
    /// headers), as d2l does for random crops; count the rest in `dropped_small`.
    pub fn keep_at_least(&mut self, height: u32, width: u32, bad: BadFiles) -> Result<()> {
        let mut kept = Vec::with_capacity(self.samples.len());
        for s in std::mem::take(&mut self.samples) {
            // By content, as decoding goes: a PNG saved as .jpg is still an image.
            let size = image::ImageReader::open(&s.image)
                .and_then(|r| r.with_guessed_format())
                .map_err(image::ImageError::IoError)
                .and_then(|r| r.into_dimensions());
            match size {
                Ok((w, h)) if w >= width && h >= height => kept.push(s),
                Ok(_) => self.dropped_small += 1,
                Err(e) if bad == BadFiles::Skip => {
                    tracing::warn!("skipping {}: {e}", s.image.display());
                    self.dropped_bad += 1;
                }
                Err(e) => bail!(
                    "{}: unreadable image header: {e}; pass --skip-bad to leave it out",
                    s.image.display()
                ),
            }
        }
        self.samples = kept;
        Ok(())
    }

    /// Each class's share of the labels' pixels over the split (void and labels beyond
    /// the class list left out): the distribution the board's drift score compares
    /// with. Reads only the label files; with `Skip`, an unreadable one is left out.
    pub fn class_distribution(&self, bad: BadFiles) -> Result<Vec<f64>> {
        let bar = crate::progress::bar(self.samples.len() as u64, "class shares");
        let mut counts = vec![0u64; self.classes.len()];
        for s in &self.samples {
            match read_label(&s.label, &self.classes) {
                Ok(label) => {
                    for &v in label.as_raw() {
                        if let Some(c) = counts.get_mut(v as usize) {
                            *c += 1;
                        }
                    }
                }
                Err(e) if bad == BadFiles::Skip => tracing::warn!("skipping {e:#}"),
                Err(e) => return Err(e),
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            bail!(
                "{}: the '{}' split's labels hold no pixel of any class (all void?)",
                self.root.display(),
                self.split
            );
        }
        Ok(counts.iter().map(|&c| c as f64 / total as f64).collect())
    }

    /// Decode sample `i`: the RGB image and its label map (class indices, 255 = void).
    pub fn load(&self, i: usize) -> Result<(RgbImage, GrayImage)> {
        let s = &self.samples[i];
        // Its errors name the file and what is wrong with it.
        let image = segcam::decode::open_image(&s.image, &DecodeLimits::default())?.to_rgb8();
        let label = read_label(&s.label, &self.classes)?;
        if image.dimensions() != label.dimensions() {
            bail!(
                "{}: label is {}×{} but its image {} is {}×{}",
                s.label.display(),
                label.width(),
                label.height(),
                s.image.display(),
                image.width(),
                image.height()
            );
        }
        Ok((image, label))
    }
}

/// Read a label PNG as class indices. Palette and RGB(A) PNGs are mapped colour →
/// class through the class list (VOC's void colour → 255); 8-bit grey PNGs hold the
/// indices themselves.
pub fn read_label(path: &Path, classes: &ClassList) -> Result<GrayImage> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("{}: cannot open label", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    // Keep palette indices as they are: we map the palette ourselves.
    decoder.set_transformations(png::Transformations::IDENTITY);
    let corrupt =
        |e: &dyn std::fmt::Display| anyhow::anyhow!("{}: corrupt label PNG: {e}", path.display());
    let mut reader = decoder.read_info().map_err(|e| corrupt(&e))?;
    // The header's size, before a buffer of that size exists.
    let (width, height) = (reader.info().width, reader.info().height);
    DecodeLimits::default()
        .check_size(width, height)
        .map_err(|why| corrupt(&why))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| corrupt(&"image too large"))?;
    let mut buf = vec![0; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| corrupt(&e))?;
    let (w, h) = (frame.width, frame.height);
    let mut data = &buf[..frame.buffer_size()];
    let unpacked;
    let packed = matches!(
        frame.color_type,
        png::ColorType::Indexed | png::ColorType::Grayscale
    ) && (frame.bit_depth as u8) < 8;
    if packed {
        // Small palettes are often saved at 1, 2 or 4 bits (PIL does): a byte each.
        unpacked = unpack(data, frame.bit_depth as u8, w, frame.line_size);
        data = &unpacked;
    } else if frame.bit_depth != png::BitDepth::Eight {
        bail!(
            "{}: label PNG has bit depth {:?}, expected 8 (or 1, 2, 4 for palette and grey)",
            path.display(),
            frame.bit_depth
        );
    }
    let lookup = classes.colour_lookup();
    let unknown = |colour: [u8; 3]| {
        anyhow::anyhow!(
            "{}: colour {colour:?} is not in the class list ({} classes: {}); give the dataset a labelmap.txt",
            path.display(),
            classes.len(),
            classes.names.join(", ")
        )
    };
    let pixels: Vec<u8> = match frame.color_type {
        png::ColorType::Indexed => {
            let palette = reader.info().palette.as_deref().unwrap_or_default();
            // Per palette index: its class, or None if its colour is not a class colour.
            let table: Vec<Option<u8>> = palette
                .chunks_exact(3)
                .map(|c| lookup.get(&[c[0], c[1], c[2]]).copied())
                .collect();
            data.iter()
                .map(|&i| match table.get(i as usize) {
                    Some(Some(class)) => Ok(*class),
                    Some(None) => Err(unknown(palette_colour(palette, i))),
                    None => Err(anyhow::anyhow!(
                        "{}: pixel uses palette index {i} beyond the palette",
                        path.display()
                    )),
                })
                .collect::<Result<_>>()?
        }
        png::ColorType::Grayscale => {
            if let Some(&bad) = data
                .iter()
                .find(|&&v| v != VOID && v as usize >= classes.len())
            {
                bail!(
                    "{}: grey label value {bad} is not a class index (0..{}) or 255",
                    path.display(),
                    classes.len()
                );
            }
            data.to_vec()
        }
        png::ColorType::Rgb | png::ColorType::Rgba => {
            let step = if frame.color_type == png::ColorType::Rgb {
                3
            } else {
                4
            };
            data.chunks_exact(step)
                .map(|c| {
                    let colour = [c[0], c[1], c[2]];
                    lookup.get(&colour).copied().ok_or_else(|| unknown(colour))
                })
                .collect::<Result<_>>()?
        }
        other => bail!(
            "{}: label PNG colour type {other:?}; expected palette, grey or RGB",
            path.display()
        ),
    };
    Ok(GrayImage::from_raw(w, h, pixels).expect("label buffer size"))
}

/// The pixels of a 1-, 2- or 4-bit PNG image, one byte each: rows of `line_size`
/// bytes, each pixel `bits` wide, the first in the high bits.
fn unpack(data: &[u8], bits: u8, width: u32, line_size: usize) -> Vec<u8> {
    let per_byte = 8 / bits as usize;
    let mask = (1u8 << bits) - 1;
    data.chunks(line_size.max(1))
        .flat_map(|row| {
            (0..width as usize).map(move |x| {
                let shift = 8 - bits as usize * (x % per_byte + 1);
                (row[x / per_byte] >> shift) & mask
            })
        })
        .collect()
}

fn palette_colour(palette: &[u8], i: u8) -> [u8; 3] {
    let j = 3 * i as usize;
    [palette[j], palette[j + 1], palette[j + 2]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(
        path: &Path,
        w: u32,
        h: u32,
        colour: png::ColorType,
        palette: Option<Vec<u8>>,
        data: &[u8],
    ) {
        let file = std::fs::File::create(path).unwrap();
        let mut enc = png::Encoder::new(file, w, h);
        enc.set_color(colour);
        enc.set_depth(png::BitDepth::Eight);
        if let Some(p) = palette {
            enc.set_palette(p);
        }
        enc.write_header().unwrap().write_image_data(data).unwrap();
    }

    #[test]
    fn class_distribution_counts_label_pixels_without_void() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(
            root.join("labelmap.txt"),
            "a:0,0,0::\nb:128,0,0::\nc:0,128,0::\n",
        )
        .unwrap();
        // Grey labels hold the indices (255 is void).
        let labels: [&[u8]; 2] = [&[0, 0, 1, VOID], &[1, 1, VOID, 0]];
        for (i, label) in labels.iter().enumerate() {
            let id = format!("s{i}");
            std::fs::write(root.join(format!("JPEGImages/{id}.jpg")), b"").unwrap();
            let path = root.join(format!("SegmentationClass/{id}.png"));
            write_png(&path, 4, 1, png::ColorType::Grayscale, None, label);
        }
        std::fs::write(root.join("ImageSets/Segmentation/train.txt"), "s0\ns1\n").unwrap();
        let ds = VocDataset::open(root, "train", None, BadFiles::Fail).unwrap();
        let shares = ds.class_distribution(BadFiles::Fail).unwrap();
        assert_eq!(shares, vec![3.0 / 6.0, 3.0 / 6.0, 0.0]);

        // A corrupt label is named, or left out when asked.
        std::fs::write(root.join("SegmentationClass/s1.png"), b"not a png").unwrap();
        let msg = format!("{:#}", ds.class_distribution(BadFiles::Fail).unwrap_err());
        assert!(msg.contains("s1.png"), "{msg}");
        let shares = ds.class_distribution(BadFiles::Skip).unwrap();
        assert_eq!(shares, vec![2.0 / 3.0, 1.0 / 3.0, 0.0]);
    }

    #[test]
    fn palette_rgb_and_grey_labels_map_to_classes() {
        let dir = tempfile::tempdir().unwrap();
        let voc = ClassList::voc();
        let palette: Vec<u8> = segcam::classes::voc_palette().concat();
        let p = dir.path().join("pal.png");
        write_png(
            &p,
            3,
            1,
            png::ColorType::Indexed,
            Some(palette),
            &[0, 15, 255],
        );
        assert_eq!(read_label(&p, &voc).unwrap().into_raw(), vec![0, 15, 255]);

        let p = dir.path().join("rgb.png");
        write_png(
            &p,
            2,
            1,
            png::ColorType::Rgb,
            None,
            &[192, 128, 128, 224, 224, 192],
        );
        assert_eq!(read_label(&p, &voc).unwrap().into_raw(), vec![15, 255]);

        let p = dir.path().join("grey.png");
        write_png(&p, 2, 1, png::ColorType::Grayscale, None, &[3, 255]);
        assert_eq!(read_label(&p, &voc).unwrap().into_raw(), vec![3, 255]);
    }

    #[test]
    fn labels_of_fewer_bits_than_8_are_unpacked() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, w, h, colour, bits, palette: Option<Vec<u8>>, data: &[u8]| {
            let path = dir.path().join(name);
            let mut enc = png::Encoder::new(std::fs::File::create(&path).unwrap(), w, h);
            enc.set_color(colour);
            enc.set_depth(bits);
            if let Some(p) = palette {
                enc.set_palette(p);
            }
            enc.write_header().unwrap().write_image_data(data).unwrap();
            path
        };
        let voc = ClassList::voc();
        let palette: Vec<u8> = segcam::classes::voc_palette()[..4].concat();
        // 2 bits: 5 pixels a row take 2 bytes, the last padded.
        let p = write(
            "pal2.png",
            5,
            2,
            png::ColorType::Indexed,
            png::BitDepth::Two,
            Some(palette),
            &[0b0001_1011, 0b0100_0000, 0b1111_0000, 0b1000_0000],
        );
        let want = vec![0, 1, 2, 3, 1, 3, 3, 0, 0, 2];
        assert_eq!(read_label(&p, &voc).unwrap().into_raw(), want);
        let p = write(
            "grey1.png",
            3,
            1,
            png::ColorType::Grayscale,
            png::BitDepth::One,
            None,
            &[0b1010_0000],
        );
        assert_eq!(read_label(&p, &voc).unwrap().into_raw(), vec![1, 0, 1]);
    }

    #[test]
    fn unknown_colours_and_corrupt_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("odd.png");
        write_png(&p, 1, 1, png::ColorType::Rgb, None, &[1, 2, 3]);
        let msg = read_label(&p, &ClassList::voc()).unwrap_err().to_string();
        assert!(
            msg.contains("odd.png") && msg.contains("[1, 2, 3]"),
            "{msg}"
        );

        let p = dir.path().join("broken.png");
        std::fs::write(&p, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let msg = format!("{:#}", read_label(&p, &ClassList::voc()).unwrap_err());
        assert!(
            msg.contains("broken.png") && msg.contains("corrupt"),
            "{msg}"
        );
    }

    #[test]
    fn a_label_header_promising_a_huge_picture_is_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("huge.png");
        let file = std::fs::File::create(&p).unwrap();
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), 12_000, 12_000);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_compression(png::Compression::Balanced);
        // Rows of zeros: a small file from whose header the old reader sized 144 MB.
        let mut rows = enc.write_header().unwrap().into_stream_writer().unwrap();
        for _ in 0..12_000 {
            std::io::Write::write_all(&mut rows, &[0u8; 12_000]).unwrap();
        }
        rows.finish().unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() < 1 << 20);
        let msg = format!("{:#}", read_label(&p, &ClassList::voc()).unwrap_err());
        assert!(
            msg.contains("huge.png") && msg.contains("12000×12000") && msg.contains("limit"),
            "{msg}"
        );
    }

    #[test]
    fn missing_files_fail_or_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("ImageSets/Segmentation")).unwrap();
        std::fs::create_dir_all(root.join("JPEGImages")).unwrap();
        std::fs::create_dir_all(root.join("SegmentationClass")).unwrap();
        std::fs::write(root.join("ImageSets/Segmentation/train.txt"), "a\nb\n").unwrap();
        image::RgbImage::new(4, 4)
            .save(root.join("JPEGImages/a.jpg"))
            .unwrap();
        write_png(
            &root.join("SegmentationClass/a.png"),
            4,
            4,
            png::ColorType::Grayscale,
            None,
            &[0; 16],
        );
        let msg = VocDataset::open(root, "train", None, BadFiles::Fail)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("b.jpg") && msg.contains("--skip-bad"), "{msg}");
        let ds = VocDataset::open(root, "train", None, BadFiles::Skip).unwrap();
        assert_eq!((ds.samples.len(), ds.dropped_bad), (1, 1));
        let (img, label) = ds.load(0).unwrap();
        assert_eq!((img.dimensions(), label.dimensions()), ((4, 4), (4, 4)));
    }
}
