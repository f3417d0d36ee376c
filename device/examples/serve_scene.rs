//! Serve the moving test scene through the HTTP output, with the overlay and HUD, as
//! the live pipeline will: `cargo run -p segcam --example serve_scene -- 127.0.0.1:8080 60`
//! (address, seconds), then open the address in a browser.

use std::sync::Arc;
use std::time::{Duration, Instant};

use segcam::http::{HttpServer, Published, Stats, DEFAULT_ADDR};
use segcam::hud::{self, HudInfo};
use segcam::jpeg::{encode_jpeg, DEFAULT_QUALITY};
use segcam::overlay::{Overlay, OverlayOptions};
use segcam::resize::{resample_labels, Filter};
use segcam::scene;

/// A scene family with a bird, a bottle and a car in view.
const SEED: u64 = 21;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or(DEFAULT_ADDR.into());
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(60);

    let published = Arc::new(Published::new());
    let server = HttpServer::start(&addr, published.clone())?;
    println!("serving http://{}/ for {seconds} s", server.local_addr());

    let classes = scene::scene_classes();
    let options = OverlayOptions {
        ignore_class: Some(0),
        ..OverlayOptions::default()
    };
    let mut overlay = Overlay::new(&classes, options);
    let model = "fcn-resnet18-scene-320x240";
    let start = Instant::now();
    let period = Duration::from_millis(66);
    let mut frames = 0u64;
    let mut fps = 0.0f32;
    let mut last = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        let tick = Instant::now();
        let t = start.elapsed().as_secs_f64();
        let frame = scene::render_frame(SEED, t, 640, 480);
        let class_map = resample_labels(&frame.labels, 320, 240, Filter::Point);
        let (mut picture, counts) = overlay.render(&frame.image, &class_map)?;
        let legend = overlay.legend(&classes, &counts);
        let inference_ms = 30.0 + 3.0 * (t.sin() as f32);
        let info = HudInfo {
            fps,
            inference_ms,
            model,
            no_signal: false,
        };
        hud::draw(&mut picture, &info, &legend);
        frames += 1;
        let dt = last.elapsed().as_secs_f32();
        last = Instant::now();
        fps = if fps == 0.0 {
            1.0 / dt
        } else {
            0.9 * fps + 0.1 / dt
        };
        let stats = Stats {
            frames,
            fps,
            inference_ms,
            dropped_frames: 0,
            corrupt_frames: 0,
            model: model.into(),
            width: 640,
            height: 480,
            classes_present: legend,
            ..Stats::default()
        };
        published.publish(encode_jpeg(&picture, DEFAULT_QUALITY)?, stats);
        std::thread::sleep(period.saturating_sub(tick.elapsed()));
    }
    server.shutdown();
    Ok(())
}
