//! Sample pictures of the overlay, mask, side-by-side view and HUD on the moving test
//! scene (its own labels stand in for the model's class map), and timings per 640×480
//! frame of the overlay, the HUD, the JPEG encoder and the `test://` source's picture.
//!
//! `cargo run --release -p segcam --example overlay_samples -- /tmp/segcam-overlay`

use std::path::PathBuf;
use std::time::Instant;

use segcam::classes::ClassCounts;
use segcam::hud::{self, HudInfo};
use segcam::jpeg::{encode_jpeg, encoder_in_use, DEFAULT_QUALITY};
use segcam::overlay::{Overlay, OverlayOptions, Visualize};
use segcam::resize::{resample_labels, Filter};
use segcam::scene;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or("/tmp/segcam-overlay".into()),
    );
    std::fs::create_dir_all(&out)?;
    let classes = scene::scene_classes();
    // The scene family showing the most classes makes the most telling samples.
    let seed = (0..32u64)
        .max_by_key(|&seed| {
            let labels = scene::render_frame(seed, 3.0, 160, 120).labels;
            let counts = ClassCounts::of(&labels);
            counts.present(&classes).len()
        })
        .unwrap_or(0);
    println!("scene seed {seed}");
    let frame = scene::render_frame(seed, 3.0, 640, 480);
    // A 320×240 class map, as a model at half resolution would give.
    let class_map = resample_labels(&frame.labels, 320, 240, Filter::Point);
    // The coarsest map an FCN gives before its upsampling (1/32): shows the filters.
    let coarse = resample_labels(&frame.labels, 20, 15, Filter::Point);

    let views = [
        (
            "overlay-linear",
            Visualize::Overlay,
            Filter::Linear,
            &class_map,
        ),
        (
            "overlay-point",
            Visualize::Overlay,
            Filter::Point,
            &class_map,
        ),
        ("mask", Visualize::Mask, Filter::Point, &class_map),
        (
            "side-by-side",
            Visualize::SideBySide,
            Filter::Linear,
            &class_map,
        ),
        ("coarse-point", Visualize::Overlay, Filter::Point, &coarse),
        ("coarse-linear", Visualize::Overlay, Filter::Linear, &coarse),
    ];
    for (name, visualize, filter, map) in views {
        let options = OverlayOptions {
            filter,
            visualize,
            ignore_class: Some(0),
            ..OverlayOptions::default()
        };
        let mut overlay = Overlay::new(&classes, options);
        let (mut picture, counts) = overlay.render(&frame.image, map)?;
        let info = HudInfo {
            fps: 24.8,
            inference_ms: 31.4,
            model: "fcn-resnet18-scene-320x240",
            no_signal: false,
        };
        hud::draw(&mut picture, &info, &overlay.legend(&classes, &counts));
        let path = out.join(format!("{name}.png"));
        picture.save(&path)?;
        println!("wrote {}", path.display());
    }
    let mut blank = image::RgbImage::from_pixel(640, 480, image::Rgb([24, 24, 24]));
    let info = HudInfo {
        model: "fcn-resnet18-scene-320x240",
        no_signal: true,
        ..HudInfo::default()
    };
    hud::draw(&mut blank, &info, &[]);
    blank.save(out.join("no-signal.png"))?;

    // Timings: many frames, the median.
    let options = OverlayOptions::default();
    for filter in [Filter::Point, Filter::Linear] {
        let mut overlay = Overlay::new(&classes, OverlayOptions { filter, ..options });
        let mut picture = image::RgbImage::new(0, 0);
        let ms = median_ms(200, || {
            overlay
                .render_into(&frame.image, &class_map, &mut picture)
                .unwrap();
        });
        println!("overlay {filter:?} 640×480 from 320×240: {ms:.3} ms");
    }
    let mut picture = frame.image.clone();
    let legend = Overlay::new(&classes, options).legend(&classes, &ClassCounts::of(&class_map));
    let ms = median_ms(200, || {
        hud::draw(
            &mut picture,
            &HudInfo {
                model: "m",
                ..HudInfo::default()
            },
            &legend,
        );
    });
    println!("hud 640×480: {ms:.3} ms");
    let ms = median_ms(50, || {
        std::hint::black_box(encode_jpeg(&frame.image, DEFAULT_QUALITY).unwrap());
    });
    let size = encode_jpeg(&frame.image, DEFAULT_QUALITY)?.len();
    println!(
        "jpeg q{DEFAULT_QUALITY} 640×480: {ms:.3} ms ({size} bytes; {})",
        encoder_in_use()
    );
    let live = scene::LiveScene::new(seed, 640, 480);
    let mut t = 0.0;
    let ms = median_ms(100, || {
        t += 1.0 / 15.0;
        std::hint::black_box(live.frame(t));
    });
    println!("test:// picture 640×480 (still background, moving objects): {ms:.3} ms");
    let ms = median_ms(20, || {
        std::hint::black_box(scene::render_frame(seed, 3.0, 640, 480));
    });
    println!("whole scene 640×480 (background drawn too): {ms:.3} ms");
    Ok(())
}

fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}
