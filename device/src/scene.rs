//! A procedural generator of "VOC-like" scenes with per-pixel labels: textured
//! backgrounds and 1–4 large objects of five VOC classes, each class with its own
//! silhouette and appearance. It makes training sets without downloads (`seg-host
//! synth`) and drives the moving `test://` camera source.
//!
//! Objects are signed distance fields in object-local units (object height = 1), so
//! the image is anti-aliased and the label map gets an exact void band straddling
//! every object border, as VOC's label files have.
//!
//! Output is deterministic for the same arguments on one platform; bit-identical images
//! across CPU architectures are not promised (`sin`/`sqrt` come from the platform).

use image::{GrayImage, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::classes::{voc_colour, ClassList, VOC_CLASSES, VOID};

/// A rendered scene: the picture and its labels (compact indices into
/// [`scene_classes`], [`VOID`] on object borders).
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub image: RgbImage,
    pub labels: GrayImage,
}

/// VOC index of each compact class; compact 0 is background.
const VOC_OF_COMPACT: [u8; 6] = [0, 3, 5, 7, 15, 20];

/// Half the width of the void band, in pixels: labels are void where an object's
/// border is within this distance (a band about 2.5 px wide).
const VOID_HALF_WIDTH: f32 = 1.25;

/// The `index` the moving scene of a family draws its layout from (far from the stills).
const FRAME_FAMILY: u64 = u64::MAX;

/// Background + the scene classes, with VOC names and VOC colours (compact indices 0..=5):
/// background, bird, bottle, car, person, tvmonitor.
pub fn scene_classes() -> ClassList {
    ClassList {
        names: VOC_OF_COMPACT
            .iter()
            .map(|&v| VOC_CLASSES[v as usize].to_string())
            .collect(),
        colours: VOC_OF_COMPACT.iter().map(|&v| voc_colour(v)).collect(),
        void_colours: Vec::new(),
    }
}

/// The VOC palette index of each compact class (for writing VOC palette PNGs).
/// [`VOID`] and any value outside the scene classes map to [`VOID`].
pub fn voc_index(compact: u8) -> u8 {
    VOC_OF_COMPACT
        .get(compact as usize)
        .copied()
        .unwrap_or(VOID)
}

/// Still scene `index` of the family `seed`: deterministic for (seed, index, w, h).
pub fn render(seed: u64, index: u64, width: u32, height: u32) -> Scene {
    let (background, placed) = still(seed, index);
    draw(&background, &placed, (0.0, 0.0), width, height)
}

/// The layout of still scene `index`, independent of the image size.
fn still(seed: u64, index: u64) -> (Background, Vec<Placement>) {
    let mut rng = scene_rng(seed, index);
    let background = Background::random(&mut rng);
    let count = rng.random_range(1..=4);
    let mut placed: Vec<Placement> = (0..count)
        .map(|_| {
            let object = Object::random(&mut rng);
            let cx = rng.random_range(0.1..0.9f32);
            let cy = rng.random_range(0.3..0.72f32);
            let tilt = rng.random_range(-1.0..1.0f32) * object.max_tilt();
            Placement {
                object,
                cx,
                cy,
                scale: 1.0,
                angle: tilt,
            }
        })
        .collect();
    // Lower in the frame reads as nearer: draw those last, in front.
    placed.sort_by(|a, b| (a.cy + 0.5 * a.object.size).total_cmp(&(b.cy + 0.5 * b.object.size)));
    (background, placed)
}

/// A moving scene for a live test source: frame at time `t` seconds; objects drift and
/// bounce smoothly; deterministic for (seed, t, w, h).
pub fn render_frame(seed: u64, t: f64, width: u32, height: u32) -> Scene {
    let (background, placed) = moving(seed, t);
    // The background pans slowly, as a hand-held camera would.
    let t = if t.is_finite() { t } else { 0.0 };
    let pan = ((t * 0.02).rem_euclid(1000.0) as f32, 0.0);
    draw(&background, &placed, pan, width, height)
}

/// The moving scene of a family drawn frame after frame at one size, as `test://` does:
/// the camera stands still (no pan), so the textured background — most of the cost of a
/// frame — is drawn once and each frame draws only the objects over it. Frame `t` is
/// the same picture [`render_frame`] would draw with the background's pan at zero.
pub struct LiveScene {
    seed: u64,
    width: u32,
    height: u32,
    backdrop: Vec<Rgb>,
    backdrop_bytes: Vec<u8>,
}

impl std::fmt::Debug for LiveScene {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveScene")
            .field("seed", &self.seed)
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

impl LiveScene {
    pub fn new(seed: u64, width: u32, height: u32) -> Self {
        let (background, _) = moving(seed, 0.0);
        let (w, h) = (width as f32, height as f32);
        let mut backdrop = Vec::with_capacity(width as usize * height as usize);
        for y in 0..height {
            let mut row = background.row(y, h, w / h, (0.0, 0.0));
            backdrop.extend((0..width).map(|x| background.colour(&mut row, x)));
        }
        let backdrop_bytes = backdrop.iter().flat_map(|c| c.map(to_u8)).collect();
        Self {
            seed,
            width,
            height,
            backdrop,
            backdrop_bytes,
        }
    }

    /// The picture at scene time `t` seconds.
    pub fn frame(&self, t: f64) -> RgbImage {
        let (_, placed) = moving(self.seed, t);
        let backdrop = Backdrop::Drawn(&self.backdrop, &self.backdrop_bytes);
        draw_tiled(&backdrop, &placed, self.width, self.height, LIVE_TILE).image
    }
}

/// The layout of the moving scene of family `seed` at time `t` seconds.
fn moving(seed: u64, t: f64) -> (Background, Vec<Placement>) {
    let t = if t.is_finite() { t } else { 0.0 };
    let mut rng = scene_rng(seed, FRAME_FAMILY);
    let background = Background::random(&mut rng);
    let count = rng.random_range(2..=3);
    let placed: Vec<Placement> = (0..count)
        .map(|_| {
            let object = Object::random(&mut rng);
            let sign = |rng: &mut ChaCha8Rng| if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            let vx = sign(&mut rng) * rng.random_range(0.04..0.12f64);
            let vy = sign(&mut rng) * rng.random_range(0.01..0.04f64);
            let x0 = rng.random_range(0.1..0.9f64);
            let y0 = rng.random_range(0.3..0.7f64);
            let wobble = rng.random_range(0.5..1.5f64);
            let phase = rng.random_range(0.0..std::f64::consts::TAU);
            let breathe = rng.random_range(0.2..0.5f64);
            let tilt = (wobble * t + phase).sin() as f32 * object.max_tilt();
            Placement {
                cx: bounce(x0 + vx * t, 0.1, 0.9) as f32,
                cy: bounce(y0 + vy * t, 0.3, 0.7) as f32,
                scale: 1.0 + 0.06 * (breathe * t + phase).cos() as f32,
                angle: tilt,
                object,
            }
        })
        .collect();
    (background, placed)
}

/// The generator of one scene: ChaCha8 (stable across `rand` versions) keyed by both
/// numbers without mixing them, so distinct (seed, index) pairs never collide.
fn scene_rng(seed: u64, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&index.to_le_bytes());
    key[16..24].copy_from_slice(b"segscene");
    ChaCha8Rng::from_seed(key)
}

/// Reflect `x` into `[lo, hi]` (a triangle wave: continuous, bouncing at the ends).
fn bounce(x: f64, lo: f64, hi: f64) -> f64 {
    let span = hi - lo;
    let p = (x - lo).rem_euclid(2.0 * span);
    lo + if p > span { 2.0 * span - p } else { p }
}

// ---------------------------------------------------------------------------------
// Drawing

/// An object where it sits: centre as fractions of width and height, extra scale, tilt.
struct Placement {
    object: Object,
    cx: f32,
    cy: f32,
    scale: f32,
    angle: f32,
}

/// A placement resolved to pixels for one image size.
struct Pixels<'a> {
    object: &'a Object,
    cx: f32,
    cy: f32,
    size: f32,
    cos: f32,
    sin: f32,
    reach: f32,
}

impl Pixels<'_> {
    /// Object-local coordinates of a pixel centre.
    fn local(&self, x: f32, y: f32) -> V {
        let (dx, dy) = ((x - self.cx) / self.size, (y - self.cy) / self.size);
        let u = self.cos * dx + self.sin * dy;
        let v = -self.sin * dx + self.cos * dy;
        (if self.object.flip { -u } else { u }, v)
    }
}

/// Side of the square tiles that are classified against each object at once.
const TILE: u32 = 8;

/// The live scene's tiles: smaller, so the band around each border drawn pixel by pixel
/// is half as wide (its margin scales with the tile), for more tiles to classify.
const LIVE_TILE: u32 = 4;

fn draw(bg: &Background, placed: &[Placement], pan: V, width: u32, height: u32) -> Scene {
    draw_tiled(&Backdrop::Texture(bg, pan), placed, width, height, TILE)
}

/// Where the background's colour comes from.
enum Backdrop<'a> {
    /// Computed per pixel from the texture, panned.
    Texture(&'a Background, V),
    /// Already computed, row by row: width × height colours, and the same as RGB bytes.
    Drawn(&'a [Rgb], &'a [u8]),
}

impl<'a> Backdrop<'a> {
    /// Row `y` of an image `width` × `h` (`aspect`: width / h).
    fn row(&self, y: u32, width: u32, h: f32, aspect: f32) -> BackdropRow<'a> {
        match *self {
            Backdrop::Texture(bg, pan) => BackdropRow::Texture(bg, bg.row(y, h, aspect, pan)),
            Backdrop::Drawn(colours, bytes) => {
                let start = y as usize * width as usize;
                let end = start + width as usize;
                BackdropRow::Drawn(&colours[start..end], &bytes[3 * start..3 * end])
            }
        }
    }
}

enum BackdropRow<'a> {
    Texture(&'a Background, BgRow),
    Drawn(&'a [Rgb], &'a [u8]),
}

impl BackdropRow<'_> {
    fn colour(&mut self, x: u32) -> Rgb {
        match self {
            BackdropRow::Texture(bg, row) => bg.colour(row, x),
            BackdropRow::Drawn(colours, _) => colours[x as usize],
        }
    }

    /// The row as RGB bytes, when it is already drawn.
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            BackdropRow::Texture(..) => None,
            BackdropRow::Drawn(_, bytes) => Some(bytes),
        }
    }
}

/// Render with `tile`-sized blocks: a block whose centre lies far inside or outside an
/// object takes that answer for all its pixels, so distance fields (the costly part)
/// are evaluated per pixel only near borders. `tile = 1` is plain per-pixel rendering.
fn draw_tiled(
    backdrop: &Backdrop,
    placed: &[Placement],
    width: u32,
    height: u32,
    tile: u32,
) -> Scene {
    let mut image = RgbImage::new(width, height);
    let mut labels = GrayImage::new(width, height);
    if width == 0 || height == 0 {
        return Scene { image, labels };
    }
    let (w, h) = (width as f32, height as f32);
    let objects: Vec<Pixels> = placed
        .iter()
        .map(|p| {
            let size = p.object.size * p.scale * h;
            Pixels {
                object: &p.object,
                cx: p.cx * w,
                cy: p.cy * h,
                size,
                cos: p.angle.cos(),
                sin: p.angle.sin(),
                reach: p.object.shape.reach() * size + 2.0 * VOID_HALF_WIDTH + 1.0,
            }
        })
        .collect();
    #[derive(Clone, Copy)]
    enum Part {
        Outside,
        Inside,
        Border,
    }
    let n = objects.len();
    let tiles_x = width.div_ceil(tile) as usize;
    // How each tile of the current band of rows relates to each object.
    let mut parts = vec![Part::Outside; tiles_x * n];
    let mut dist = vec![f32::INFINITY; n];
    let image_buf: &mut [u8] = &mut image;
    let label_buf: &mut [u8] = &mut labels;
    for ty in (0..height).step_by(tile as usize) {
        let th = tile.min(height - ty);
        for (t, tile_parts) in parts.chunks_mut(n.max(1)).enumerate().take(tiles_x) {
            let tx = t as u32 * tile;
            let tw = tile.min(width - tx);
            let centre = (tx as f32 + tw as f32 / 2.0, ty as f32 + th as f32 / 2.0);
            let half_diag = len(((tw - 1) as f32 / 2.0, (th - 1) as f32 / 2.0));
            // Distance fields change at most ~2 px per px (the ellipse is approximate):
            // beyond this margin the whole tile is on one side, void band included.
            let margin = 3.0 * half_diag + 2.0 * VOID_HALF_WIDTH;
            for (part, o) in tile_parts.iter_mut().zip(&objects) {
                let reach = o.reach + half_diag;
                *part = if (centre.0 - o.cx).abs() > reach || (centre.1 - o.cy).abs() > reach {
                    Part::Outside
                } else {
                    let d = o.object.shape.dist(o.local(centre.0, centre.1)) * o.size;
                    if d > margin {
                        Part::Outside
                    } else if d < -margin {
                        Part::Inside
                    } else {
                        Part::Border
                    }
                };
            }
        }
        for y in ty..ty + th {
            let py = y as f32 + 0.5;
            let mut row = backdrop.row(y, width, h, w / h);
            let mut x = 0;
            while x < width {
                let tile_parts = &parts[(x / tile) as usize * n..][..n];
                if let Some(bytes) = row.bytes() {
                    if x % tile == 0 && tile_parts.iter().all(|p| matches!(p, Part::Outside)) {
                        // Background only, already drawn: copy the tile's row (label 0).
                        let end = (x + tile).min(width);
                        let span = 3 * x as usize..3 * end as usize;
                        let at = 3 * (y * width) as usize;
                        image_buf[at + span.start..at + span.end].copy_from_slice(&bytes[span]);
                        x = end;
                        continue;
                    }
                }
                let px = x as f32 + 0.5;
                for ((d, part), o) in dist.iter_mut().zip(tile_parts).zip(&objects) {
                    *d = match part {
                        Part::Outside => f32::INFINITY,
                        Part::Inside => f32::NEG_INFINITY,
                        Part::Border => o.object.shape.dist(o.local(px, py)) * o.size,
                    };
                }
                // Colour: painter's order with coverage from the distance (anti-aliased),
                // starting at the front-most object that covers the pixel fully.
                let first = dist.iter().rposition(|d| *d <= -0.5);
                let mut colour = match first {
                    Some(_) => [0.0; 3],
                    None => row.colour(x),
                };
                for (d, o) in dist.iter().zip(&objects).skip(first.unwrap_or(0)) {
                    let cover = (0.5 - d).clamp(0.0, 1.0);
                    if cover > 0.0 {
                        colour = mix(colour, o.object.shade(o.local(px, py)), cover);
                    }
                }
                // Label: the front-most object whose interior or border reaches here.
                let mut label = 0u8;
                for (d, o) in dist.iter().zip(&objects).rev() {
                    if *d < -VOID_HALF_WIDTH {
                        label = o.object.kind as u8;
                        break;
                    }
                    if *d <= VOID_HALF_WIDTH {
                        label = VOID;
                        break;
                    }
                }
                let i = (y * width + x) as usize;
                image_buf[3 * i..3 * i + 3].copy_from_slice(&colour.map(to_u8));
                label_buf[i] = label;
                x += 1;
            }
        }
    }
    Scene { image, labels }
}

// ---------------------------------------------------------------------------------
// Background (class 0)

struct Blob {
    centre: V,
    half: V,
    ellipse: bool,
    colour: Rgb,
}

/// One image row of the background: position and its two octaves of noise.
struct BgRow {
    y: f32,
    py: u32,
    inv_h: f32,
    aspect: f32,
    pan: V,
    /// The wall gradient's value at x = 0 and the stripes' phase at x = 0.
    gradient: f32,
    stripe: f32,
    /// The floor's colour when this row lies below the horizon.
    floor: Option<Rgb>,
    /// Bit `i` set: blob `i` reaches this row.
    blobs: u32,
    coarse: RowNoise,
    fine: RowNoise,
}

struct Background {
    top: Rgb,
    bottom: Rgb,
    dir: V,
    /// Horizon (fraction of height) and floor colour: a wall/floor split.
    floor: Option<(f32, Rgb, f32)>,
    noise_amp: f32,
    noise_scale: f32,
    /// Direction, period (in image heights) and amplitude of wallpaper stripes.
    stripes: Option<(V, f32, f32)>,
    speckle: f32,
    /// Low-contrast furniture-like shapes, so "anything not smooth" is not an object.
    blobs: Vec<Blob>,
    salt: u32,
}

impl Background {
    fn random(rng: &mut ChaCha8Rng) -> Self {
        let muted = |rng: &mut ChaCha8Rng| {
            hsv(
                rng.random::<f32>(),
                rng.random_range(0.03..0.4),
                rng.random_range(0.3..0.88),
            )
        };
        let top = muted(rng);
        let bottom = mix(top, muted(rng), rng.random_range(0.3..1.0));
        let a = rng.random_range(0.0..std::f32::consts::TAU);
        let floor = rng.random_bool(0.5).then(|| {
            (
                rng.random_range(0.45..0.8),
                muted(rng),
                rng.random_range(0.05..0.2),
            )
        });
        let stripes = rng.random_bool(0.35).then(|| {
            let a = rng.random_range(0.0..std::f32::consts::PI);
            (
                (a.cos(), a.sin()),
                rng.random_range(0.03..0.12),
                rng.random_range(0.03..0.1),
            )
        });
        let blobs = (0..rng.random_range(0..=3))
            .map(|_| {
                let base = muted(rng);
                Blob {
                    centre: (rng.random_range(0.0..1.5), rng.random_range(0.0..1.0)),
                    half: (rng.random_range(0.05..0.3), rng.random_range(0.05..0.3)),
                    ellipse: rng.random_bool(0.5),
                    colour: mix(top, base, 0.6),
                }
            })
            .collect();
        Self {
            top,
            bottom,
            dir: (a.cos(), a.sin()),
            floor,
            noise_amp: rng.random_range(0.05..0.35),
            noise_scale: rng.random_range(0.04..0.3),
            stripes,
            speckle: rng.random_range(0.0..0.08),
            blobs,
            salt: rng.random(),
        }
    }

    /// The per-row state for image row `py` (`h`: image height, `aspect`: w / h).
    fn row(&self, py: u32, h: f32, aspect: f32, pan: V) -> BgRow {
        let y = (py as f32 + 0.5) / h;
        let floor = self.floor.and_then(|(horizon, colour, _)| {
            // Floor boards: darker towards the horizon.
            (y > horizon).then(|| scale(colour, 0.75 + 0.6 * (y - horizon).min(0.5)))
        });
        BgRow {
            y,
            py,
            inv_h: 1.0 / h,
            aspect,
            pan,
            gradient: dot((-0.5 * aspect, y - 0.5), self.dir) + 0.5,
            stripe: self
                .stripes
                .map_or(0.0, |(dir, period, _)| y * dir.1 / period),
            floor,
            blobs: self
                .blobs
                .iter()
                .enumerate()
                .filter(|(_, b)| (y - b.centre.1).abs() <= b.half.1 + 2.0 / h)
                .fold(0, |bits, (i, _)| bits | 1 << i),
            coarse: RowNoise::new(y / self.noise_scale, self.salt),
            fine: RowNoise::new(2.0 * y / self.noise_scale + 5.1, self.salt ^ 0x9e37_79b9),
        }
    }

    /// Colour at pixel column `px` of `row`.
    fn colour(&self, row: &mut BgRow, px: u32) -> Rgb {
        let x = (px as f32 + 0.5) * row.inv_h;
        let mut k = 1.0;
        let mut c = if let Some(floor) = row.floor {
            let (_, _, period) = self.floor.unwrap_or_default();
            // Seams between boards: dark lines one period apart.
            let f = (x + row.pan.0) / period;
            let edge = (f - floor_i32(f) as f32 - 0.5).abs() * 2.0;
            k -= 0.1 * ((edge - 0.85) / 0.15).max(0.0);
            floor
        } else {
            let g = row.gradient + x * self.dir.0;
            mix(self.top, self.bottom, g.clamp(0.0, 1.0))
        };
        if let Some((dir, period, amp)) = self.stripes {
            k += amp * wave(row.stripe + x * dir.0 / period);
        }
        for (i, b) in self.blobs.iter().enumerate() {
            let q = (x - b.centre.0 * row.aspect / 1.5, row.y - b.centre.1);
            if row.blobs & (1 << i) == 0 || q.0.abs() > b.half.0 + 2.0 * row.inv_h {
                continue;
            }
            let d = if b.ellipse {
                sd_ellipse(q, (0.0, 0.0), b.half.0, b.half.1)
            } else {
                sd_round_box(q, (0.0, 0.0), b.half, 0.02)
            };
            // Soft edges, two pixels wide.
            let cover = (0.5 - d * 0.5 / row.inv_h).clamp(0.0, 1.0);
            c = mix(c, b.colour, cover);
        }
        let nx = (x + row.pan.0) / self.noise_scale;
        let n = (2.0 * row.coarse.at(nx) + row.fine.at(2.0 * nx + 17.3)) / 3.0;
        k += self.noise_amp * 2.0 * (n - 0.5);
        k += self.speckle * 2.0 * (unit(hash(px as i32, row.py as i32, self.salt ^ 0x5eed)) - 0.5);
        scale(c, k)
    }
}

/// A cheap sine-like wave of period 1 in [-1, 1] (no libm call per pixel).
fn wave(t: f32) -> f32 {
    let tri = (t - floor_i32(t) as f32 - 0.5).abs() * 4.0 - 1.0;
    tri * (1.5 - 0.5 * tri * tri)
}

// ---------------------------------------------------------------------------------
// Objects

/// The scene classes, as their compact label index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bird = 1,
    Bottle = 2,
    Car = 3,
    Person = 4,
    Tv = 5,
}

/// An object's silhouette, in local units: object height 1, centred on the origin,
/// y down, facing +u (mirrored by `flip`).
enum Shape {
    Bird {
        body: (V, f32, f32),
        head: (V, f32),
        beak: [V; 3],
        wing: [V; 3],
        tail: [V; 4],
    },
    Bottle {
        half: f32,
        neck: f32,
    },
    Car {
        half: f32,
        cabin: [V; 4],
        wheel_r: f32,
    },
    Person {
        head: (V, f32),
        body: f32,
        arms: [(V, V); 2],
        legs: [(V, V); 2],
    },
    Tv {
        half: f32,
        bezel: f32,
        neck: f32,
        base: f32,
    },
}

/// Colours and pattern of one object.
struct Look {
    /// Per class: bird (body, belly, wing, beak), bottle (glass, label, cap, -),
    /// car (paint, glass, tyre, lights), person (skin, hair, shirt, trousers),
    /// tv (frame, screen, -, -).
    colours: [Rgb; 4],
    /// Class-specific switch: striped shirt, labelled bottle, screen on, ...
    variant: bool,
    salt: u32,
}

struct Object {
    kind: Kind,
    /// Height as a fraction of the image height.
    size: f32,
    flip: bool,
    shape: Shape,
    look: Look,
}

impl Object {
    fn random(rng: &mut ChaCha8Rng) -> Self {
        let kind = match rng.random_range(0..5) {
            0 => Kind::Bird,
            1 => Kind::Bottle,
            2 => Kind::Car,
            3 => Kind::Person,
            _ => Kind::Tv,
        };
        let j: [f32; 4] = rng.random();
        let (size, shape, colours) = match kind {
            Kind::Bird => {
                let body_c = (-0.05, 0.12);
                let colours = pick(
                    rng,
                    &[
                        (0.0, 0.85, 0.75),
                        (0.6, 0.7, 0.7),
                        (0.14, 0.85, 0.9),
                        (0.08, 0.6, 0.45),
                        (0.0, 0.0, 0.25),
                    ],
                );
                let body = jitter(rng, colours, 0.03, 0.1, 0.1);
                (
                    rng.random_range(0.32..0.52),
                    Shape::Bird {
                        body: (body_c, 0.38 + 0.06 * j[0], 0.21 + 0.04 * j[1]),
                        head: ((0.36, -0.12), 0.14 + 0.03 * j[2]),
                        beak: [(0.46, -0.19), (0.64 + 0.08 * j[3], -0.1), (0.47, -0.03)],
                        wing: [(0.2, 0.06), (-0.1 - 0.1 * j[1], -0.47), (-0.4, 0.02)],
                        tail: [(-0.3, 0.04), (-0.74, -0.06), (-0.7, 0.2), (-0.3, 0.24)],
                    },
                    [
                        body,
                        mix(body, [0.95, 0.92, 0.85], rng.random_range(0.4..0.8)),
                        scale(body, rng.random_range(0.45..0.7)),
                        hsv(rng.random_range(0.07..0.14), 0.9, 0.95),
                    ],
                )
            }
            Kind::Bottle => {
                let glass = pick(
                    rng,
                    &[
                        (0.33, 0.8, 0.45),
                        (0.07, 0.85, 0.35),
                        (0.57, 0.6, 0.7),
                        (0.5, 0.12, 0.85),
                    ],
                );
                (
                    rng.random_range(0.4..0.62),
                    Shape::Bottle {
                        half: 0.11 + 0.05 * j[0],
                        neck: 0.04 + 0.015 * j[1],
                    },
                    [
                        jitter(rng, glass, 0.03, 0.1, 0.12),
                        hsv(
                            rng.random(),
                            rng.random_range(0.0..0.9),
                            rng.random_range(0.75..1.0),
                        ),
                        hsv(
                            rng.random(),
                            rng.random_range(0.0..0.9),
                            rng.random_range(0.2..0.9),
                        ),
                        [0.0; 3],
                    ],
                )
            }
            Kind::Car => {
                let paint = pick(
                    rng,
                    &[
                        (0.0, 0.9, 0.75),
                        (0.62, 0.8, 0.6),
                        (0.0, 0.02, 0.75),
                        (0.0, 0.0, 0.95),
                        (0.0, 0.0, 0.12),
                        (0.13, 0.9, 0.9),
                        (0.36, 0.7, 0.45),
                    ],
                );
                let half = 0.95 + 0.25 * j[0];
                let roof_back = -half * (0.6 + 0.15 * j[1]);
                let roof_front = half * (0.15 + 0.2 * j[2]);
                (
                    rng.random_range(0.3..0.48),
                    Shape::Car {
                        half,
                        cabin: [
                            (-half * 0.85, -0.05),
                            (roof_back, -0.46),
                            (roof_front, -0.46),
                            (half * (0.55 + 0.15 * j[3]), -0.05),
                        ],
                        wheel_r: 0.17 + 0.03 * j[3],
                    },
                    [
                        jitter(rng, paint, 0.02, 0.08, 0.1),
                        hsv(0.58, 0.3, rng.random_range(0.12..0.3)),
                        [0.05, 0.05, 0.06],
                        [1.0, 0.95, 0.7],
                    ],
                )
            }
            Kind::Person => {
                let skin = hsv(
                    rng.random_range(0.04..0.09),
                    rng.random_range(0.3..0.6),
                    rng.random_range(0.35..0.95),
                );
                let hair = pick(
                    rng,
                    &[
                        (0.08, 0.6, 0.2),
                        (0.0, 0.0, 0.08),
                        (0.12, 0.6, 0.75),
                        (0.05, 0.7, 0.4),
                    ],
                );
                let shirt = hsv(
                    rng.random(),
                    rng.random_range(0.4..0.9),
                    rng.random_range(0.35..0.9),
                );
                let trousers = pick(
                    rng,
                    &[
                        (0.62, 0.55, 0.35),
                        (0.0, 0.0, 0.12),
                        (0.1, 0.4, 0.55),
                        (0.6, 0.1, 0.4),
                    ],
                );
                let body = 0.11 + 0.04 * j[0];
                let head_r = 0.085 + 0.02 * j[1];
                let hand = body + 0.04 + 0.08 * j[2];
                let foot = 0.04 + 0.06 * j[3];
                (
                    rng.random_range(0.45..0.65),
                    Shape::Person {
                        head: ((0.0, -0.49 + head_r), head_r),
                        body,
                        arms: [
                            ((-body + 0.03, -0.26), (-hand, 0.02)),
                            ((body - 0.03, -0.26), (hand, 0.02)),
                        ],
                        legs: [
                            ((-0.055, 0.05), (-foot, 0.45)),
                            ((0.055, 0.05), (foot, 0.45)),
                        ],
                    },
                    [
                        skin,
                        jitter(rng, hair, 0.02, 0.1, 0.1),
                        shirt,
                        jitter(rng, trousers, 0.02, 0.1, 0.1),
                    ],
                )
            }
            Kind::Tv => {
                let frame = pick(rng, &[(0.0, 0.0, 0.06), (0.6, 0.05, 0.2), (0.0, 0.0, 0.7)]);
                let screen = hsv(
                    rng.random_range(0.45..0.7),
                    rng.random_range(0.2..0.7),
                    rng.random_range(0.55..0.95),
                );
                (
                    rng.random_range(0.38..0.58),
                    Shape::Tv {
                        half: 0.6 + 0.2 * j[0],
                        bezel: 0.035 + 0.03 * j[1],
                        neck: 0.04 + 0.02 * j[2],
                        base: 0.2 + 0.12 * j[3],
                    },
                    [
                        jitter(rng, frame, 0.0, 0.05, 0.05),
                        screen,
                        [0.0; 3],
                        [0.0; 3],
                    ],
                )
            }
        };
        Self {
            kind,
            size,
            flip: rng.random_bool(0.5),
            shape,
            look: Look {
                colours,
                variant: rng.random_bool(0.5),
                salt: rng.random(),
            },
        }
    }

    /// How far (radians) this kind may lean: bottles and birds more than cars.
    fn max_tilt(&self) -> f32 {
        match self.kind {
            Kind::Bird | Kind::Bottle => 0.2,
            Kind::Person => 0.08,
            Kind::Car | Kind::Tv => 0.04,
        }
    }

    /// The colour at local point `p` (inside the silhouette).
    fn shade(&self, p: V) -> Rgb {
        let (u, v) = p;
        let [c0, c1, c2, c3] = self.look.colours;
        let salt = self.look.salt;
        let grain = 0.94 + 0.12 * value_noise(u * 24.0, v * 24.0, salt);
        let c = match &self.shape {
            Shape::Bird {
                body,
                head,
                beak,
                wing,
                tail,
            } => {
                let eye = (head.0 .0 + 0.04, head.0 .1 - 0.03);
                if len(sub(p, eye)) < 0.035 {
                    if len(sub(p, (eye.0 + 0.01, eye.1 - 0.01))) < 0.012 {
                        [0.9; 3]
                    } else {
                        [0.02; 3]
                    }
                } else if sd_polygon(p, beak) < 0.0 {
                    c3
                } else if sd_polygon(p, wing) < 0.0 || sd_polygon(p, tail) < 0.0 {
                    // Feathers: bands across the wing.
                    let f = (u * 0.8 + v * 0.6) * 45.0;
                    scale(c2, 0.8 + 0.2 * f.sin().abs())
                } else {
                    let below = ((v - body.0 .1 + 0.02) / 0.12).clamp(0.0, 1.0);
                    let belly = if len(sub(p, head.0)) < head.1 {
                        0.0
                    } else {
                        below
                    };
                    mix(c0, c1, belly)
                }
            }
            Shape::Bottle { half, .. } => {
                let across = (u / half).clamp(-1.0, 1.0);
                // A glass cylinder: darker rims, a bright highlight left of centre.
                let round = 0.6 + 0.4 * (1.0 - across * across).sqrt();
                let shine = (-((across + 0.45) / 0.15).powi(2)).exp() * 0.5;
                if v < -0.44 {
                    scale(c2, round)
                } else if self.look.variant && (0.0..0.28).contains(&v) {
                    let print =
                        ((v - 0.14).abs() < 0.02 || (v - 0.2).abs() < 0.01) && across.abs() < 0.6;
                    scale(if print { scale(c1, 0.4) } else { c1 }, round)
                } else {
                    mix(scale(c0, round), [1.0; 3], shine)
                }
            }
            Shape::Car {
                half,
                cabin,
                wheel_r,
            } => {
                let wheel_y = 0.5 - wheel_r;
                let wheel = [(-half * 0.62, wheel_y), (half * 0.62, wheel_y)]
                    .into_iter()
                    .map(|c| len(sub(p, c)))
                    .fold(f32::INFINITY, f32::min);
                if wheel < *wheel_r {
                    if wheel < wheel_r * 0.5 {
                        [0.55, 0.56, 0.58]
                    } else {
                        c2
                    }
                } else if sd_polygon(p, cabin) < -0.05 && v < -0.1 && (u - 0.05).abs() > 0.03 {
                    // Glass with a diagonal reflection.
                    let streak = ((u + v) * 6.0).sin().max(0.0).powi(4) * 0.25;
                    mix(c1, [0.8, 0.85, 0.9], streak)
                } else if len(sub(p, (half - 0.07, 0.03))) < 0.05 {
                    c3
                } else if len(sub(p, (-half + 0.05, 0.03))) < 0.04 {
                    [0.8, 0.05, 0.05]
                } else {
                    // Glossy paint: a bright shoulder line, darker sills, a door seam.
                    let gloss = 1.0 + 0.35 * (-((v + 0.08) / 0.06).powi(2)).exp()
                        - 0.3 * (v - 0.05).max(0.0);
                    let seam = if (u - 0.05).abs() < 0.008 && v > -0.1 {
                        0.6
                    } else {
                        1.0
                    };
                    scale(c0, gloss * seam)
                }
            }
            Shape::Person { head, body, .. } => {
                let r = len(sub(p, head.0));
                if r < head.1 * 1.05 {
                    let hair = v < head.0 .1 - head.1 * 0.25 + 0.3 * head.1 * (u / head.1).powi(2);
                    if hair {
                        c1
                    } else {
                        scale(c0, 1.05 - 0.3 * (r / head.1).powi(2))
                    }
                } else if v > 0.06 {
                    scale(c3, 0.85 + 0.15 * value_noise(u * 60.0, v * 6.0, salt))
                } else {
                    let across = (u / (body + 0.1)).clamp(-1.0, 1.0);
                    let fold = 0.75 + 0.25 * (1.0 - across * across).sqrt();
                    let stripe = self.look.variant && (v * 40.0).sin() > 0.3;
                    scale(if stripe { mix(c2, [1.0; 3], 0.6) } else { c2 }, fold)
                }
            }
            Shape::Tv { half, bezel, .. } => {
                let screen = u.abs() < half - bezel && v > -0.46 + bezel && v < 0.26 - bezel;
                if screen {
                    if self.look.variant {
                        // Switched on: a glow with scan lines.
                        let glow = 1.0 - 0.3 * ((u / half).powi(2) + (v + 0.1).powi(2) * 4.0);
                        scale(c1, glow * (0.9 + 0.1 * (v * 150.0).sin()))
                    } else {
                        // Off: near-black glass with a soft reflection.
                        let refl = (-((u - v * 0.8 + 0.2) / 0.15).powi(2)).exp() * 0.12;
                        mix([0.03, 0.04, 0.06], [0.6, 0.65, 0.7], refl)
                    }
                } else {
                    let shade = if v > 0.26 {
                        0.7
                    } else {
                        1.0 - 0.15 * (v + 0.46)
                    };
                    scale(c0, shade)
                }
            }
        };
        scale(c, grain)
    }
}

impl Shape {
    /// Signed distance from local point `p` to the silhouette (negative inside).
    fn dist(&self, p: V) -> f32 {
        match self {
            Shape::Bird {
                body,
                head,
                beak,
                wing,
                tail,
            } => sd_ellipse(p, body.0, body.1, body.2)
                .min(len(sub(p, head.0)) - head.1)
                .min(sd_polygon(p, beak))
                .min(sd_polygon(p, wing))
                .min(sd_polygon(p, tail)),
            Shape::Bottle { half, neck } => {
                let body = sd_round_box(p, (0.0, 0.12), (*half, 0.38), 0.05);
                let shoulder = sd_polygon(
                    p,
                    &[(-half, -0.2), (-neck, -0.34), (*neck, -0.34), (*half, -0.2)],
                );
                let neck = sd_round_box(p, (0.0, -0.39), (*neck, 0.11), 0.012);
                body.min(shoulder).min(neck)
            }
            Shape::Car {
                half,
                cabin,
                wheel_r,
            } => {
                let body = sd_round_box(p, (0.0, 0.12), (*half, 0.2), 0.08);
                let wheel_y = 0.5 - wheel_r;
                let wheels = (len(sub(p, (-half * 0.62, wheel_y))) - wheel_r)
                    .min(len(sub(p, (half * 0.62, wheel_y))) - wheel_r);
                body.min(sd_polygon(p, cabin)).min(wheels)
            }
            Shape::Person {
                head,
                body,
                arms,
                legs,
            } => {
                let torso = sd_ellipse(p, (0.0, -0.12), *body, 0.21);
                let limbs = arms
                    .iter()
                    .map(|&(a, b)| sd_segment(p, a, b, 0.035))
                    .chain(legs.iter().map(|&(a, b)| sd_segment(p, a, b, 0.05)))
                    .fold(f32::INFINITY, f32::min);
                (len(sub(p, head.0)) - head.1).min(torso).min(limbs)
            }
            Shape::Tv {
                half, neck, base, ..
            } => {
                let frame = sd_round_box(p, (0.0, -0.1), (*half, 0.36), 0.03);
                let neck = sd_round_box(p, (0.0, 0.33), (*neck, 0.09), 0.01);
                let base = sd_round_box(p, (0.0, 0.455), (*base, 0.045), 0.02);
                frame.min(neck).min(base)
            }
        }
    }

    /// A radius (local units) around the origin that holds the whole silhouette.
    fn reach(&self) -> f32 {
        match self {
            Shape::Bird { .. } => 0.9,
            Shape::Bottle { .. } => 0.55,
            Shape::Car { half, .. } => (half * half + 0.25).sqrt() + 0.05,
            Shape::Person { .. } => 0.6,
            Shape::Tv { half, .. } => (half * half + 0.25).sqrt() + 0.05,
        }
    }
}

/// Choose one of `choices` (h, s, v) as RGB.
fn pick(rng: &mut ChaCha8Rng, choices: &[(f32, f32, f32)]) -> Rgb {
    let (h, s, v) = choices[rng.random_range(0..choices.len())];
    hsv(h, s, v) // jittered by the caller where wanted
}

/// Jitter an RGB colour in hue (±dh turns), saturation (±ds) and value (±dv).
fn jitter(rng: &mut ChaCha8Rng, c: Rgb, dh: f32, ds: f32, dv: f32) -> Rgb {
    let (h, s, v) = to_hsv(c);
    let mut r = |d: f32| {
        if d > 0.0 {
            rng.random_range(-d..d)
        } else {
            0.0
        }
    };
    let (jh, js, jv) = (r(dh), r(ds), r(dv));
    hsv(h + jh, (s + js).clamp(0.0, 1.0), (v + jv).clamp(0.02, 1.0))
}

// ---------------------------------------------------------------------------------
// Geometry, colour and noise helpers

type V = (f32, f32);
type Rgb = [f32; 3];

fn dot(a: V, b: V) -> f32 {
    a.0 * b.0 + a.1 * b.1
}

fn sub(a: V, b: V) -> V {
    (a.0 - b.0, a.1 - b.1)
}

fn len(a: V) -> f32 {
    dot(a, a).sqrt()
}

fn sd_round_box(p: V, centre: V, half: V, r: f32) -> f32 {
    let qx = (p.0 - centre.0).abs() - (half.0 - r);
    let qy = (p.1 - centre.1).abs() - (half.1 - r);
    len((qx.max(0.0), qy.max(0.0))) + qx.max(qy).min(0.0) - r
}

/// Ellipse distance (Quilez's cheap approximation: exact on the border, close near it).
fn sd_ellipse(p: V, centre: V, rx: f32, ry: f32) -> f32 {
    let (x, y) = ((p.0 - centre.0) / rx, (p.1 - centre.1) / ry);
    let k0 = len((x, y));
    let k1 = len((x / rx, y / ry));
    if k1 < 1e-6 {
        -rx.min(ry)
    } else {
        k0 * (k0 - 1.0) / k1
    }
}

/// A capsule: segment `a`–`b` with radius `r`.
fn sd_segment(p: V, a: V, b: V, r: f32) -> f32 {
    let (pa, ba) = (sub(p, a), sub(b, a));
    let h = (dot(pa, ba) / dot(ba, ba)).clamp(0.0, 1.0);
    len((pa.0 - ba.0 * h, pa.1 - ba.1 * h)) - r
}

/// Exact distance to a simple polygon (Quilez), negative inside.
fn sd_polygon(p: V, poly: &[V]) -> f32 {
    let mut d = dot(sub(p, poly[0]), sub(p, poly[0]));
    let mut sign = 1.0;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let e = sub(poly[j], poly[i]);
        let w = sub(p, poly[i]);
        let t = (dot(w, e) / dot(e, e)).clamp(0.0, 1.0);
        d = d.min(len((w.0 - e.0 * t, w.1 - e.1 * t)).powi(2));
        let c = [p.1 >= poly[i].1, p.1 < poly[j].1, e.0 * w.1 > e.1 * w.0];
        if c.iter().all(|&b| b) || c.iter().all(|&b| !b) {
            sign = -sign;
        }
        j = i;
    }
    sign * d.sqrt()
}

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [0, 1, 2].map(|i| a[i] + (b[i] - a[i]) * t)
}

fn scale(a: Rgb, k: f32) -> Rgb {
    a.map(|c| c * k)
}

fn to_u8(c: f32) -> u8 {
    (c * 255.0 + 0.5).clamp(0.0, 255.0) as u8
}

fn hsv(h: f32, s: f32, v: f32) -> Rgb {
    let h = h.rem_euclid(1.0) * 6.0;
    let f = h - h.floor();
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match h as u32 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

fn to_hsv(c: Rgb) -> (f32, f32, f32) {
    let max = c[0].max(c[1]).max(c[2]);
    let min = c[0].min(c[1]).min(c[2]);
    let d = max - min;
    let h = if d <= 0.0 {
        0.0
    } else if max == c[0] {
        ((c[1] - c[2]) / d).rem_euclid(6.0) / 6.0
    } else if max == c[1] {
        ((c[2] - c[0]) / d + 2.0) / 6.0
    } else {
        ((c[0] - c[1]) / d + 4.0) / 6.0
    };
    (h, if max > 0.0 { d / max } else { 0.0 }, max)
}

fn hash(x: i32, y: i32, salt: u32) -> u32 {
    let mut h = (x as u32).wrapping_mul(0x8da6_b343)
        ^ (y as u32).wrapping_mul(0xd816_3841)
        ^ salt.wrapping_mul(0xcb1a_b31f);
    h ^= h >> 15;
    h = h.wrapping_mul(0x2c1b_3c6d);
    h ^= h >> 12;
    h = h.wrapping_mul(0x297a_2d39);
    h ^ (h >> 15)
}

/// A hash as a float in [0, 1).
fn unit(h: u32) -> f32 {
    (h >> 8) as f32 / (1u32 << 24) as f32
}

/// Smooth lattice noise in [0, 1].
fn value_noise(x: f32, y: f32, salt: u32) -> f32 {
    RowNoise::new(y, salt).at(x)
}

/// Value noise along one row of lattice space: the corner hashes are reused while
/// consecutive `x` stay in one cell, which makes background noise cheap.
struct RowNoise {
    salt: u32,
    iy: i32,
    sy: f32,
    ix: i32,
    top: (f32, f32),
    bottom: (f32, f32),
}

impl RowNoise {
    fn new(y: f32, salt: u32) -> Self {
        let iy = floor_i32(y);
        Self {
            salt,
            iy,
            sy: smooth(y - iy as f32),
            ix: i32::MIN,
            top: (0.0, 0.0),
            bottom: (0.0, 0.0),
        }
    }

    fn at(&mut self, x: f32) -> f32 {
        let ix = floor_i32(x);
        if ix != self.ix || ix == i32::MIN {
            let at = |dx: i32, dy: i32| {
                unit(hash(
                    ix.wrapping_add(dx),
                    self.iy.wrapping_add(dy),
                    self.salt,
                ))
            };
            self.top = (at(0, 0), at(1, 0));
            self.bottom = (at(0, 1), at(1, 1));
            self.ix = ix;
        }
        let sx = smooth(x - ix as f32);
        let top = self.top.0 + (self.top.1 - self.top.0) * sx;
        let bottom = self.bottom.0 + (self.bottom.1 - self.bottom.0) * sx;
        top + (bottom - top) * self.sy
    }
}

/// `floor` as an integer; truncate-and-fix, as `f32::floor` is a libm call on
/// baseline x86-64.
fn floor_i32(x: f32) -> i32 {
    x as i32 - (x < (x as i32) as f32) as i32
}

fn smooth(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u32 = 144;
    const H: u32 = 96;

    #[test]
    fn scene_classes_are_background_and_five_voc_classes() {
        let classes = scene_classes();
        assert_eq!(
            classes.names,
            ["background", "bird", "bottle", "car", "person", "tvmonitor"]
        );
        for (i, colour) in classes.colours.iter().enumerate() {
            assert_eq!(*colour, voc_colour(voc_index(i as u8)));
            assert_eq!(classes.names[i], VOC_CLASSES[voc_index(i as u8) as usize]);
        }
        assert_eq!(voc_index(4), 15);
        assert_eq!(voc_index(VOID), VOID);
        assert_eq!(voc_index(6), VOID);
    }

    #[test]
    fn render_is_deterministic_per_seed_and_index() {
        let a = render(7, 3, W, H);
        assert_eq!(a, render(7, 3, W, H));
        assert_ne!(a.image, render(8, 3, W, H).image);
        assert_ne!(a.image, render(7, 4, W, H).image);
        assert_eq!(
            (a.image.dimensions(), a.labels.dimensions()),
            ((W, H), (W, H))
        );
    }

    #[test]
    fn labels_are_scene_classes_or_void_with_objects_and_background() {
        let mut seen = [false; 6];
        for index in 0..60 {
            let scene = render(1, index, W, H);
            let mut counts = [0usize; 256];
            for p in scene.labels.pixels() {
                counts[p.0[0] as usize] += 1;
            }
            let stray: usize = counts[6..255].iter().sum();
            assert_eq!(stray, 0, "scene {index}: labels outside 0..=5 and 255");
            let objects: usize = counts[1..6].iter().sum();
            assert!(objects > 0, "scene {index} has no object pixels");
            assert!(counts[0] > 0, "scene {index} has no background pixels");
            assert!(counts[255] > 0, "scene {index} has no void band");
            for (class, n) in counts[..6].iter().enumerate() {
                seen[class] |= *n > 0;
            }
        }
        assert!(
            seen.iter().all(|&s| s),
            "every class appears in 60 scenes: {seen:?}"
        );
    }

    /// Labels never change between neighbouring pixels except through void, and void
    /// is a thin band between classes, not blobs: thin parts (arms at small sizes) may
    /// be void throughout, as in VOC, so the band checks are shares.
    #[test]
    fn void_band_separates_every_border() {
        let (mut void, mut between, mut wide) = (0usize, 0usize, 0usize);
        for index in 0..40 {
            let labels = render(2, index, W, H).labels;
            let at = |x: i64, y: i64| {
                (x >= 0 && y >= 0 && x < W as i64 && y < H as i64)
                    .then(|| labels.get_pixel(x as u32, y as u32).0[0])
                    .filter(|&n| n != VOID)
            };
            // The classes seen within `r` px (Chebyshev) of (x, y), void left out.
            let around = |x: i64, y: i64, r: i64| {
                let mut seen = [false; 6];
                for dy in -r..=r {
                    for dx in -r..=r {
                        if let Some(n) = at(x + dx, y + dy) {
                            seen[n as usize] = true;
                        }
                    }
                }
                seen.iter().filter(|&&s| s).count()
            };
            for y in 0..H as i64 {
                for x in 0..W as i64 {
                    let Some(here) = at(x, y) else {
                        void += 1;
                        between += (around(x, y, 3) >= 2) as usize;
                        wide += (around(x, y, 2) == 0) as usize;
                        continue;
                    };
                    for (dx, dy) in [(1, 0), (0, 1), (1, 1), (1, -1)] {
                        if let Some(n) = at(x + dx, y + dy) {
                            assert_eq!(n, here, "scene {index}: classes touch at ({x}, {y})");
                        }
                    }
                }
            }
        }
        assert!(void > 0);
        let share = between as f64 / void as f64;
        assert!(
            share > 0.8,
            "only {share:.3} of void pixels lie between two classes"
        );
        let share = wide as f64 / void as f64;
        assert!(
            share < 0.02,
            "{share:.3} of void pixels are over 2 px from any class"
        );
    }

    #[test]
    fn void_band_is_a_thin_share_of_the_image() {
        let (mut void, mut total) = (0usize, 0usize);
        for index in 0..20 {
            let labels = render(3, index, 480, 320).labels;
            void += labels.pixels().filter(|p| p.0[0] == VOID).count();
            total += labels.len();
        }
        let share = void as f64 / total as f64;
        assert!((0.005..0.08).contains(&share), "void share {share:.4}");
    }

    #[test]
    fn objects_are_large() {
        // FCN-32s cannot resolve small objects: each scene's objects should cover a
        // good part of the frame.
        let mut covered = 0.0;
        for index in 0..30 {
            let labels = render(4, index, W, H).labels;
            let n = labels
                .pixels()
                .filter(|p| (1..=5).contains(&p.0[0]))
                .count();
            covered += n as f64 / labels.len() as f64;
        }
        let mean = covered / 30.0;
        assert!((0.1..0.6).contains(&mean), "mean object share {mean:.3}");
    }

    #[test]
    fn frames_are_deterministic_and_move() {
        let a = render_frame(5, 1.0, W, H);
        assert_eq!(a, render_frame(5, 1.0, W, H));
        let b = render_frame(5, 1.1, W, H);
        assert_ne!(a.labels, b.labels, "objects move between frames");
        let changed = a
            .labels
            .pixels()
            .zip(b.labels.pixels())
            .filter(|(p, q)| p != q)
            .count();
        // Smooth: a tenth of a second moves objects a little, not everywhere.
        assert!(
            changed < a.labels.len() / 5,
            "{changed} labels changed in 0.1 s"
        );
        assert_ne!(a.image, render_frame(6, 1.0, W, H).image);
        assert!(a.labels.pixels().any(|p| (1..=5).contains(&p.0[0])));
    }

    #[test]
    fn the_live_scene_is_the_moving_scene_on_a_still_background() {
        let live = LiveScene::new(5, W, H);
        for t in [0.0, 1.0, 7.3] {
            let (bg, placed) = moving(5, t);
            let drawn = draw(&bg, &placed, (0.0, 0.0), W, H);
            assert!(
                live.frame(t) == drawn.image,
                "t = {t}: the drawn backdrop differs"
            );
        }
        assert_ne!(live.frame(1.0), live.frame(1.1), "objects move");
        // At t = 0 the pan is zero too: the very picture render_frame draws.
        assert_eq!(live.frame(0.0), render_frame(5, 0.0, W, H).image);
    }

    #[test]
    fn tiled_rendering_matches_per_pixel_rendering() {
        for index in 0..12 {
            let (bg, placed) = still(11, index);
            let texture = Backdrop::Texture(&bg, (0.0, 0.0));
            let tiled = draw_tiled(&texture, &placed, 190, 130, TILE);
            let plain = draw_tiled(&texture, &placed, 190, 130, 1);
            assert!(tiled == plain, "scene {index}: tiles change the result");
        }
    }

    #[test]
    fn bounce_stays_in_range_and_is_continuous() {
        let mut last = bounce(0.5, 0.1, 0.9);
        for i in 1..10_000 {
            let x = bounce(0.5 + i as f64 * 0.001, 0.1, 0.9);
            assert!((0.1..=0.9).contains(&x));
            assert!((x - last).abs() <= 0.001 + 1e-9);
            last = x;
        }
    }

    #[test]
    fn zero_sized_and_odd_sizes_do_not_panic() {
        let s = render(0, 0, 0, 0);
        assert_eq!(s.image.dimensions(), (0, 0));
        let s = render_frame(0, f64::NAN, 1, 1);
        assert_eq!(s.labels.dimensions(), (1, 1));
        let s = render(0, 0, 7, 300);
        assert_eq!(s.image.dimensions(), (7, 300));
    }

    #[test]
    fn shapes_contain_their_centre_region() {
        // Each silhouette's distance field is negative somewhere near the middle and
        // positive at the corners of its reach.
        let mut rng = scene_rng(9, 9);
        for _ in 0..50 {
            let o = Object::random(&mut rng);
            let r = o.shape.reach();
            assert!(o.shape.dist((0.0, 0.0)) < 0.0 || o.shape.dist((0.0, 0.2)) < 0.0);
            for corner in [(-r, -r), (r, -r), (-r, r), (r, r)] {
                assert!(o.shape.dist(corner) > 0.0, "{:?} at {corner:?}", o.kind);
            }
        }
    }
}
