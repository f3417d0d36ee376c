//! Class lists and palettes: Pascal VOC's by default, or a dataset's own from a
//! `labelmap.txt` (the file CVAT writes with a "Segmentation mask" export).

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The label value that marks pixels to ignore (object borders, "difficult" regions).
pub const VOID: u8 = 255;

/// The colour VOC uses for void pixels in its label PNGs (palette index 255).
pub const VOID_COLOUR: [u8; 3] = [224, 224, 192];

/// The 21 Pascal VOC 2012 class names, in label-index order.
pub const VOC_CLASSES: [&str; 21] = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

/// The colour of VOC palette index `i` (the bit-interleaving scheme of the VOC devkit).
pub fn voc_colour(index: u8) -> [u8; 3] {
    let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
    let mut c = index;
    for shift in (0..8).rev() {
        r |= (c & 1) << shift;
        g |= ((c >> 1) & 1) << shift;
        b |= ((c >> 2) & 1) << shift;
        c >>= 3;
    }
    [r, g, b]
}

/// The full 256-entry VOC palette, as written into VOC's label PNGs.
pub fn voc_palette() -> Vec<[u8; 3]> {
    (0..=255u8).map(voc_colour).collect()
}

/// An ordered list of classes, each with the colour that marks it in label images and
/// overlays. Index `i` is the network's output channel `i`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ClassListFields")]
pub struct ClassList {
    pub names: Vec<String>,
    pub colours: Vec<[u8; 3]>,
    /// Colours besides VOC's void colour that label images use for pixels to ignore
    /// (a labelmap's `void` or `ignore` lines).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub void_colours: Vec<[u8; 3]>,
}

/// A [`ClassList`] as read from a card or checkpoint, checked before it is one.
#[derive(Deserialize)]
struct ClassListFields {
    names: Vec<String>,
    colours: Vec<[u8; 3]>,
    #[serde(default)]
    void_colours: Vec<[u8; 3]>,
}

impl TryFrom<ClassListFields> for ClassList {
    type Error = String;

    fn try_from(f: ClassListFields) -> std::result::Result<Self, String> {
        if f.names.len() != f.colours.len() {
            return Err(format!(
                "{} class names but {} colours",
                f.names.len(),
                f.colours.len()
            ));
        }
        let mut list =
            Self::new(f.names.into_iter().zip(f.colours).collect()).map_err(|e| e.to_string())?;
        list.set_void_colours(f.void_colours)
            .map_err(|e| e.to_string())?;
        Ok(list)
    }
}

impl ClassList {
    /// Pascal VOC 2012: 21 classes with the devkit palette.
    pub fn voc() -> Self {
        Self {
            names: VOC_CLASSES.iter().map(|s| s.to_string()).collect(),
            colours: (0..21).map(voc_colour).collect(),
            void_colours: Vec::new(),
        }
    }

    /// The first `n` classes of this list (with its void colours).
    pub fn first(&self, n: usize) -> Self {
        Self {
            names: self.names[..n].to_vec(),
            colours: self.colours[..n].to_vec(),
            void_colours: self.void_colours.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Build from `(name, colour)` pairs, refusing duplicates and the void colour.
    pub fn new(entries: Vec<(String, [u8; 3])>) -> Result<Self> {
        if entries.is_empty() {
            return Err(Error::Invalid(
                "a class list needs at least one class".into(),
            ));
        }
        if entries.len() > VOID as usize {
            return Err(Error::Invalid(format!(
                "{} classes: at most {} fit in an 8-bit label map",
                entries.len(),
                VOID
            )));
        }
        let mut names = HashMap::new();
        for (i, (name, _)) in entries.iter().enumerate() {
            if name.trim().is_empty() {
                return Err(Error::Invalid(format!("class {i} has an empty name")));
            }
            if let Some(j) = names.insert(name.as_str(), i) {
                return Err(Error::Invalid(format!(
                    "classes {j} and {i} are both named '{name}'"
                )));
            }
        }
        let mut seen = HashMap::new();
        for (i, (name, colour)) in entries.iter().enumerate() {
            if *colour == VOID_COLOUR {
                return Err(Error::Invalid(format!(
                    "class '{name}' uses the void colour {VOID_COLOUR:?}"
                )));
            }
            if let Some(j) = seen.insert(*colour, i) {
                return Err(Error::Invalid(format!(
                    "classes '{}' and '{name}' share the colour {colour:?}",
                    entries[j].0
                )));
            }
        }
        let (names, colours) = entries.into_iter().unzip();
        Ok(Self {
            names,
            colours,
            void_colours: Vec::new(),
        })
    }

    /// Mark these colours as void in label images, refusing one a class uses.
    pub fn set_void_colours(&mut self, colours: Vec<[u8; 3]>) -> Result<()> {
        if let Some(c) = colours.iter().find(|c| self.colours.contains(c)) {
            let name = &self.names[self.colours.iter().position(|k| k == c).unwrap_or(0)];
            return Err(Error::Invalid(format!(
                "colour {c:?} is both void and class '{name}'"
            )));
        }
        self.void_colours = colours;
        Ok(())
    }

    /// Read a CVAT-style `labelmap.txt`: `name:r,g,b:parts:actions` per line, `#`
    /// comments. An entry named `void` or `ignore` marks pixels to ignore (label 255)
    /// instead of a class.
    pub fn read_labelmap(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            cause: source,
        })?;
        let bad = |line: usize, message: String| Error::ClassFile {
            path: path.to_owned(),
            line,
            message,
        };
        let mut entries = Vec::new();
        let mut void = Vec::new();
        // A byte-order mark (Windows editors write one) is not part of the first line.
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split(':');
            let name = fields.next().unwrap_or_default().trim().to_string();
            let colour = fields
                .next()
                .ok_or_else(|| bad(n + 1, format!("expected 'name:r,g,b', found '{line}'")))?;
            let rgb: Vec<u8> = colour
                .split(',')
                .map(|v| v.trim().parse::<u8>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| {
                    bad(
                        n + 1,
                        format!("colour '{colour}' is not 'r,g,b' in 0..=255"),
                    )
                })?;
            let [r, g, b] = rgb[..] else {
                return Err(bad(n + 1, format!("colour '{colour}' needs 3 values")));
            };
            if name.is_empty() {
                return Err(bad(n + 1, "empty class name".into()));
            }
            if matches!(name.as_str(), "void" | "ignore") {
                if [r, g, b] != VOID_COLOUR {
                    void.push([r, g, b]);
                }
                continue;
            }
            entries.push((name, [r, g, b]));
        }
        // What is wrong with the list as a whole has no one line to name.
        let whole = |e: Error| Error::Invalid(format!("{}: {e}", path.display()));
        let mut list = Self::new(entries).map_err(whole)?;
        list.set_void_colours(void).map_err(whole)?;
        Ok(list)
    }

    /// The `labelmap.txt` text for this list (what [`ClassList::read_labelmap`] reads).
    pub fn to_labelmap(&self) -> String {
        let mut out = String::from("# label:color_rgb:parts:actions\n");
        for (name, [r, g, b]) in self.names.iter().zip(&self.colours) {
            out.push_str(&format!("{name}:{r},{g},{b}::\n"));
        }
        for [r, g, b] in &self.void_colours {
            out.push_str(&format!("void:{r},{g},{b}::\n"));
        }
        out
    }

    /// Colour → label lookup: every class colour to its index, the void colour to 255.
    pub fn colour_lookup(&self) -> HashMap<[u8; 3], u8> {
        let mut map: HashMap<[u8; 3], u8> = self
            .colours
            .iter()
            .enumerate()
            .map(|(i, c)| (*c, i as u8))
            .collect();
        map.insert(VOID_COLOUR, VOID);
        for c in &self.void_colours {
            map.insert(*c, VOID);
        }
        map
    }

    /// Paint a label map with the class colours (void and unknown labels: void colour).
    pub fn colourize(&self, labels: &image::GrayImage) -> image::RgbImage {
        image::RgbImage::from_fn(labels.width(), labels.height(), |x, y| {
            image::Rgb(self.colour_of(labels.get_pixel(x, y).0[0]))
        })
    }

    /// The colour to draw label `index` with (void and unknown labels: the void colour).
    pub fn colour_of(&self, index: u8) -> [u8; 3] {
        self.colours
            .get(index as usize)
            .copied()
            .unwrap_or(VOID_COLOUR)
    }
}

/// Pixel counts per label value of one class map (at the model's resolution).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassCounts {
    counts: Box<[u32; 256]>,
    total: u32,
}

/// One class seen in a frame, as the legend and `/stats.json` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresentClass {
    pub index: u8,
    pub name: String,
    pub colour: [u8; 3],
    pub pixels: u32,
    /// Share of the class map's pixels (void included in the total).
    pub fraction: f32,
}

impl ClassCounts {
    /// Count the label values of `class_map`.
    pub fn of(class_map: &image::GrayImage) -> Self {
        // Four tables, one per byte of each 4-byte step: counting into one table, the
        // pixels of a region (one label after another) each wait for the last one's
        // increment of the same counter to reach memory.
        let mut tables = [[0u32; 256]; 4];
        let mut steps = class_map.as_raw().chunks_exact(4);
        for step in &mut steps {
            for (table, &v) in tables.iter_mut().zip(step) {
                table[v as usize] += 1;
            }
        }
        for &v in steps.remainder() {
            tables[0][v as usize] += 1;
        }
        Self {
            counts: Box::new(std::array::from_fn(|label| {
                tables.iter().map(|table| table[label]).sum()
            })),
            total: class_map.as_raw().len() as u32,
        }
    }

    /// Pixels labelled `label` (any value, void included).
    pub fn get(&self, label: u8) -> u32 {
        self.counts[label as usize]
    }

    /// Pixels counted in all.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// The classes of `classes` that occur, in class order (void and labels beyond the
    /// list are left out).
    pub fn present(&self, classes: &ClassList) -> Vec<PresentClass> {
        let total = self.total.max(1) as f32;
        classes
            .names
            .iter()
            .zip(&classes.colours)
            .enumerate()
            .take(VOID as usize)
            .filter(|&(i, _)| self.counts[i] > 0)
            .map(|(i, (name, colour))| PresentClass {
                index: i as u8,
                name: name.clone(),
                colour: *colour,
                pixels: self.counts[i],
                fraction: self.counts[i] as f32 / total,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_classes_count_pixels_of_the_class_map() {
        let classes = ClassList::new(vec![
            ("background".into(), [0, 0, 0]),
            ("thing".into(), [200, 100, 50]),
        ])
        .unwrap();
        // Label 7 lies beyond the list: counted, but not present.
        let map = image::GrayImage::from_raw(5, 1, vec![1, 1, VOID, 1, 7]).unwrap();
        let counts = ClassCounts::of(&map);
        assert_eq!(counts.get(1), 3);
        assert_eq!(counts.get(VOID), 1);
        assert_eq!(counts.get(7), 1);
        assert_eq!(counts.total(), 5);
        let present = counts.present(&classes);
        assert_eq!(
            present.len(),
            1,
            "void, unknown and absent classes are left out"
        );
        assert_eq!(present[0].name, "thing");
        assert_eq!(present[0].colour, [200, 100, 50]);
        assert_eq!(present[0].pixels, 3);
        assert!((present[0].fraction - 0.6).abs() < 1e-6);
        let empty = ClassCounts::of(&image::GrayImage::new(0, 0));
        assert!(empty.present(&classes).is_empty());
    }

    #[test]
    fn counts_of_every_label_match_a_plain_count() {
        // Sizes around the 4-pixel steps the count takes, with runs of one label.
        for (w, h) in [(1, 1), (3, 1), (4, 2), (7, 3), (61, 17)] {
            let map = image::GrayImage::from_fn(w, h, |x, y| {
                image::Luma([((x / 5) * 37 + y * 11) as u8])
            });
            let counts = ClassCounts::of(&map);
            for label in 0..=255u8 {
                let plain = map.as_raw().iter().filter(|&&v| v == label).count() as u32;
                assert_eq!(counts.get(label), plain, "{w}×{h}, label {label}");
            }
            assert_eq!(counts.total(), w * h);
        }
    }

    #[test]
    fn voc_palette_matches_the_devkit() {
        assert_eq!(voc_colour(0), [0, 0, 0]);
        assert_eq!(voc_colour(1), [128, 0, 0]);
        assert_eq!(voc_colour(15), [192, 128, 128]);
        assert_eq!(voc_colour(20), [0, 64, 128]);
        assert_eq!(voc_colour(255), VOID_COLOUR);
    }

    #[test]
    fn labelmap_round_trips_and_skips_void() {
        let dir = std::env::temp_dir().join(format!("segcam-labelmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("labelmap.txt");
        let classes = ClassList::new(vec![
            ("background".into(), [0, 0, 0]),
            ("weed".into(), [10, 200, 30]),
        ])
        .unwrap();
        let text = classes.to_labelmap() + "void:224,224,192::\n";
        std::fs::write(&path, text).unwrap();
        assert_eq!(ClassList::read_labelmap(&path).unwrap(), classes);

        // Another void colour is ignored in labels too; a byte-order mark is no name.
        let text = format!("\u{feff}{}void:255,255,255::\n", classes.to_labelmap());
        std::fs::write(&path, text).unwrap();
        let read = ClassList::read_labelmap(&path).unwrap();
        assert_eq!(read.names, classes.names);
        assert_eq!(read.void_colours, [[255, 255, 255]]);
        assert_eq!(read.colour_lookup()[&[255, 255, 255]], VOID);
        std::fs::write(&path, read.to_labelmap()).unwrap();
        assert_eq!(ClassList::read_labelmap(&path).unwrap(), read);
        // A void colour may not be a class's as well.
        std::fs::write(&path, classes.to_labelmap() + "void:10,200,30::\n").unwrap();
        let msg = ClassList::read_labelmap(&path).unwrap_err().to_string();
        assert!(
            msg.contains("labelmap.txt") && msg.contains("weed"),
            "{msg}"
        );
    }

    #[test]
    fn labelmap_errors_name_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("segcam-badmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("labelmap.txt");
        std::fs::write(&path, "background:0,0,0::\ncrop:12,300,4::\n").unwrap();
        let msg = ClassList::read_labelmap(&path).unwrap_err().to_string();
        assert!(
            msg.contains("labelmap.txt") && msg.contains("line 2"),
            "{msg}"
        );
    }

    #[test]
    fn duplicate_colours_and_names_are_refused() {
        let err = ClassList::new(vec![("a".into(), [1, 2, 3]), ("b".into(), [1, 2, 3])]);
        assert!(err.unwrap_err().to_string().contains("share the colour"));
        let err = ClassList::new(vec![("a".into(), [1, 2, 3]), ("a".into(), [4, 5, 6])]);
        assert!(err.unwrap_err().to_string().contains("both named 'a'"));
    }

    #[test]
    fn a_class_list_read_from_json_is_checked_as_one_built() {
        let read = |json: &str| serde_json::from_str::<ClassList>(json).map_err(|e| e.to_string());
        let good = ClassList::voc().first(3);
        assert_eq!(read(&serde_json::to_string(&good).unwrap()).unwrap(), good);
        for (json, why) in [
            (
                r#"{"names":["a","b"],"colours":[[1,2,3]]}"#,
                "2 class names but 1 colours",
            ),
            (
                r#"{"names":["a","b"],"colours":[[1,2,3],[1,2,3]]}"#,
                "share the colour",
            ),
            (r#"{"names":[],"colours":[]}"#, "at least one class"),
            (
                r#"{"names":["a"],"colours":[[1,2,3]],"void_colours":[[1,2,3]]}"#,
                "both void and class 'a'",
            ),
        ] {
            let err = read(json).unwrap_err();
            assert!(err.contains(why), "{json}: {err}");
        }
    }
}
