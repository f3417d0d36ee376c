//! The board build of `seg-cam` (static aarch64, `just build-board`) on an emulated
//! aarch64 board with a real kernel V4L2 driver (`vivid`, board/vivid-board): format
//! negotiation, mmap streaming and pixel-format conversion against the kernel, not
//! against our own idea of it.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::RgbImage;
use segcam::scene::scene_classes;
use segcam::testing::{board_binary, board_gnu_binary, card, workspace, write_model};

/// Boot the board with `share` at /share, run the board's seg-cam with `args`;
/// returns the exit status and the console.
fn on_board(share: &Path, args: &[&str]) -> (i32, String) {
    run_on_board(share, &board_binary(), args)
}

fn run_on_board(share: &Path, program: &Path, args: &[&str]) -> (i32, String) {
    let status = Command::new(workspace().join("board/vivid-board"))
        .arg(share)
        .arg(program)
        .args(args)
        .env("BOARD_TIMEOUT", "240")
        .output()
        .expect("run board/vivid-board");
    let console = std::fs::read_to_string(share.join("console.log")).unwrap_or_default();
    let code = status.status.code().unwrap_or(-1);
    (code, console)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names
}

/// vivid's picture is eight colour bars: along a row below the HUD and legend (top
/// left), count the distinct colours (each channel read as low, middle or high) of
/// the centres of bars 2 to 8.
fn bar_colours(frame: &RgbImage) -> usize {
    let y = frame.height() * 7 / 8;
    let mut seen = std::collections::BTreeSet::new();
    for bar in 1..8 {
        let x = frame.width() * (2 * bar + 1) / 16;
        let p = frame.get_pixel(x, y).0;
        seen.insert(p.map(|c| c / 86));
    }
    seen.len()
}

#[test]
fn board_build_lists_and_captures_the_kernel_camera() {
    let share = tempfile::tempdir().unwrap();
    let (code, console) = on_board(share.path(), &["--list-cameras"]);
    assert_eq!(code, 0, "{console}");
    assert!(console.contains("BOARD: camera /dev/video0"), "{console}");
    for want in ["/dev/video0", "YUYV", "NV12", "640×480 @ 25"] {
        assert!(
            console.contains(want),
            "--list-cameras lacks {want}: {console}"
        );
    }

    write_model(
        share.path(),
        "model.onnx",
        &card(scene_classes(), 24, 32, false),
    );
    for (format, width, height) in [("yuyv", 640, 480), ("nv12", 320, 180)] {
        for dir in ["masks", "frames"] {
            let _ = std::fs::remove_dir_all(share.path().join(dir));
        }
        let (w, h) = (width.to_string(), height.to_string());
        let (code, console) = on_board(
            share.path(),
            &[
                "v4l2:///dev/video0",
                "--model",
                "/share/model.onnx",
                "--pixel-format",
                format,
                "--width",
                &w,
                "--height",
                &h,
                "--rate",
                "30",
                "--frames",
                "10",
                "--save-masks",
                "/share/masks",
                "--out",
                "/share/frames",
                "--alpha",
                "0",
                "--stats",
                "--http",
                "off",
            ],
        );
        assert_eq!(code, 0, "{format}: {console}");
        let fourcc = format.to_uppercase();
        assert!(
            console.contains(&format!("input: /dev/video0 {fourcc} {width}×{height}")),
            "{format}: the negotiated format is not in the log: {console}"
        );
        let frames: Vec<_> = console
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
            .filter(|s| s["event"] == "frame")
            .collect();
        assert_eq!(frames.len(), 10, "{format}: {console}");
        assert!(frames
            .iter()
            .all(|s| s["width"] == width && s["height"] == height));

        let masks = files(&share.path().join("masks"));
        assert_eq!(masks.len(), 10, "{format}: {masks:?}");
        for path in &masks {
            let mask = image::open(path).unwrap().into_luma8();
            assert_eq!(mask.dimensions(), (width, height), "{}", path.display());
            let classes = scene_classes().len() as u8;
            assert!(
                mask.pixels().all(|p| p.0[0] < classes),
                "{}",
                path.display()
            );
        }
        let pictures: Vec<RgbImage> = files(&share.path().join("frames"))
            .iter()
            .map(|p| image::open(p).unwrap().into_rgb8())
            .collect();
        assert_eq!(pictures.len(), 10, "{format}");
        for picture in &pictures {
            assert_eq!(picture.dimensions(), (width, height));
            assert!(
                bar_colours(picture) >= 5,
                "{format}: vivid's colour bars did not come through the conversion"
            );
        }
        assert_ne!(
            pictures.first().unwrap().as_raw(),
            pictures.last().unwrap().as_raw(),
            "{format}: vivid's picture moves; the frames should too"
        );
    }
}

/// The glibc board build runs the model in onnxruntime (PyPI's aarch64 library, shipped
/// beside it as a release does) on vivid's frames, with tract on the very same frames
/// (`--compare-engine`): the masks agree on ≥ 99.9% of pixels.
#[test]
fn board_gnu_build_runs_onnxruntime_and_agrees_with_tract_on_the_camera() {
    let cache = std::env::var_os("SEGCAM_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cache/segcam"));
    let ort = cache.join("board/onnxruntime");
    assert!(
        ort.join("libonnxruntime.so").is_file(),
        "{}: run board/fetch-onnxruntime (`just build-board` does)",
        ort.display()
    );
    let share = tempfile::tempdir().unwrap();
    let lib = share.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    // glibc's loader and libraries from Debian arm64, the library from PyPI's wheel
    for dir in [
        "glibc-root/lib/aarch64-linux-gnu",
        "glibc-root/usr/lib/aarch64-linux-gnu",
    ] {
        for entry in std::fs::read_dir(ort.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.path().is_file() {
                std::fs::copy(entry.path(), lib.join(entry.file_name())).unwrap();
            }
        }
    }
    std::fs::copy(
        ort.join("libonnxruntime.so"),
        share.path().join("libonnxruntime.so"),
    )
    .unwrap();
    std::fs::copy(board_gnu_binary(), share.path().join("seg-cam")).unwrap();
    // The board has no /lib: the wrapper runs seg-cam through the shipped loader.
    let wrapper = share.path().join("seg-cam-gnu");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nexec /share/lib/ld-linux-aarch64.so.1 --library-path /share/lib /share/seg-cam \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    write_model(
        share.path(),
        "model.onnx",
        &card(scene_classes(), 24, 32, false),
    );
    let (code, console) = run_on_board(
        share.path(),
        &wrapper,
        &[
            "v4l2:///dev/video0",
            "--model",
            "/share/model.onnx",
            "--engine",
            "onnxruntime",
            "--onnxruntime-lib",
            "/share/libonnxruntime.so",
            "--compare-engine",
            "tract",
            "--pixel-format",
            "yuyv",
            "--width",
            "320",
            "--height",
            "180",
            "--rate",
            "30",
            "--frames",
            "6",
            "--save-masks",
            "/share/masks",
            "--stats",
            "--http",
            "off",
        ],
    );
    assert_eq!(code, 0, "{console}");
    assert!(console.contains("in onnxruntime"), "{console}");
    let frames: Vec<serde_json::Value> = console
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .filter(|s| s["event"] == "frame")
        .collect();
    assert_eq!(frames.len(), 6, "{console}");
    for f in &frames {
        let agreement = f["agreement"].as_f64().unwrap_or(0.0);
        assert!(
            agreement >= 0.999,
            "onnxruntime vs tract on one frame: {agreement}: {f}"
        );
    }
    let masks = files(&share.path().join("masks"));
    assert_eq!(masks.len(), 6);
    let used: std::collections::BTreeSet<u8> = masks
        .iter()
        .flat_map(|p| image::open(p).unwrap().into_luma8().into_raw())
        .collect();
    assert!(
        used.len() > 1,
        "one class everywhere tests nothing: {used:?}"
    );
}

/// The 75% colour bars of vivid's test pattern, left to right: grey, yellow, cyan,
/// green, magenta, red, blue, black.
const BARS_75: [[u8; 3]; 8] = [
    [191, 191, 191],
    [191, 191, 0],
    [0, 191, 191],
    [0, 191, 0],
    [191, 0, 191],
    [191, 0, 0],
    [0, 0, 191],
    [0, 0, 0],
];

/// The worst channel difference between a frame's bar centres (below the HUD) and the
/// colours vivid encoded.
fn bar_error(frame: &RgbImage) -> u8 {
    let y = frame.height() * 7 / 8;
    (0..8)
        .map(|bar| {
            let x = frame.width() * (2 * bar + 1) / 16;
            let p = frame.get_pixel(x, y).0;
            (0..3)
                .map(|c| p[c].abs_diff(BARS_75[bar as usize][c]))
                .max()
                .unwrap()
        })
        .max()
        .unwrap()
}

/// A second vivid camera that speaks only the multi-planar API (as SoC ISPs do) and
/// takes any size through its scaler (an HDMI input): NV12, NV21 and YUV 4:2:0 in one
/// buffer per plane, packed YUYV through the same API, odd requested sizes (the driver
/// rounds them; seg-cam takes its size and strides), and the driver's colorimetry
/// (BT.709 for HD, full range when set through `--camera-control`); and the first,
/// single-planar camera's YUV 4:2:0 in one buffer. Every frame's colour bars must come
/// out as the colours vivid encoded.
#[test]
fn board_build_captures_multi_planar_odd_sizes_with_the_drivers_colorimetry() {
    let share = tempfile::tempdir().unwrap();
    write_model(
        share.path(),
        "model.onnx",
        &card(scene_classes(), 24, 32, false),
    );
    std::fs::copy(board_binary(), share.path().join("seg-cam")).unwrap();
    // name, pixel format, requested width and height, extra flags
    let runs: [(&str, &str, u32, u32, &str); 7] = [
        // The single-planar camera: YUV 4:2:0 planes one after another in one buffer.
        ("yu12", "yuv420", 320, 180, ""),
        ("nm12", "nv12", 320, 180, ""),
        ("nm21", "nv21", 320, 180, ""),
        ("ym12", "yuv420", 321, 179, ""),
        ("yvu", "yvu420", 320, 180, ""),
        ("yuyv", "yuyv", 333, 201, ""),
        (
            "full",
            "yuv420",
            320,
            180,
            "--camera-control y_cbcr_encoding=rec_709 --camera-control quantization=full_range",
        ),
    ];
    let mut script = String::from(
        "#!/bin/sh\n\
         for d in /sys/class/video4linux/video*; do\n  \
           [ \"$(cat $d/name)\" = vivid-001-vid-cap ] && mp=/dev/$(basename $d)\n\
         done\n\
         /share/seg-cam --list-cameras > /share/list.txt 2>&1\n",
    );
    for (name, format, w, h, extra) in runs {
        let camera = if name == "yu12" { "/dev/video0" } else { "$mp" };
        script += &format!(
            "/share/seg-cam v4l2://{camera} --model /share/model.onnx --pixel-format {format} \
             --width {w} --height {h} --rate 30 --frames 3 --alpha 0 --http off \
             --out /share/{name} {extra} > /share/{name}.log 2>&1; echo \"RUN {name} $?\"\n"
        );
    }
    let program = share.path().join("runs.sh");
    std::fs::write(&program, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();

    let status = Command::new(workspace().join("board/vivid-board"))
        .arg(share.path())
        .arg(&program)
        .env("BOARD_TIMEOUT", "400")
        // Instance 1: multi-planar, one HDMI input (any size through the scaler).
        .env(
            "VIVID_ARGS",
            "n_devs=2 multiplanar=1,2 num_inputs=4,1 input_types=0xe4,0x3",
        )
        .output()
        .expect("run board/vivid-board");
    let console = std::fs::read_to_string(share.path().join("console.log")).unwrap_or_default();
    assert!(status.status.success(), "{console}");
    let read = |name: &str| std::fs::read_to_string(share.path().join(name)).unwrap_or_default();

    let list = read("list.txt");
    assert!(
        list.contains("bus platform:vivid-001, multi-planar"),
        "{list}"
    );
    for want in [
        "NM12",
        "YM12",
        "y_cbcr_encoding",
        "quantization = 0 (0..=2)",
    ] {
        assert!(list.contains(want), "--list-cameras lacks {want}: {list}");
    }

    for (name, _, w, h, _) in runs {
        let log = read(&format!("{name}.log"));
        assert!(console.contains(&format!("RUN {name} 0")), "{name}: {log}");
        // What the driver set, as seg-cam reports it: the layout, the size (vivid
        // rounds odd sizes up to even), the colorimetry.
        let (fourcc, colour) = match name {
            "yu12" => ("YU12", "BT.601 limited range"),
            "nm12" => ("NM12", "BT.709 limited range"),
            "nm21" => ("NM21", "BT.709 limited range"),
            "ym12" => ("YM12", "BT.709 limited range"),
            "yvu" => ("YM21", "BT.709 limited range"),
            "yuyv" => ("YUYV", "BT.709 limited range"),
            _ => ("YM12", "BT.709 full range"),
        };
        let (w, h) = (w.next_multiple_of(2), h.next_multiple_of(2));
        let size = format!("{fourcc} {w}×{h}");
        assert!(
            log.contains(&size) && log.contains(colour),
            "{name}: expected {size} … {colour}: {log}"
        );
        let frames = files(&share.path().join(name));
        assert_eq!(frames.len(), 3, "{name}: {log}");
        for path in &frames {
            let frame = image::open(path).unwrap().into_rgb8();
            assert_eq!(frame.dimensions(), (w, h), "{}", path.display());
            let error = bar_error(&frame);
            assert!(
                error <= 12,
                "{}: the bars are off by {error} (wrong planes, strides or colorimetry)",
                path.display()
            );
        }
    }
}
