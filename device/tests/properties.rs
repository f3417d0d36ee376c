//! Property tests of everything that parses input from outside: HTTP request heads,
//! camera pixel formats, model cards and ONNX bytes, and the config merge. Each holds
//! for arbitrary input: no panic, and the answer the format's rules give.

use proptest::prelude::*;

use segcam::card::ModelCard;
use segcam::http::request::{host_allowed, parse_head};
use segcam::live::Config;
use segcam::scene::scene_classes;
use segcam::source::colorimetry::{Colorimetry, Matrix, Range};
use segcam::source::pixfmt::Plane;
use segcam::source::PixelFormat;
use segcam::testing::card;

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_bytes_parse_or_are_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_head(&bytes);
    }

    #[test]
    fn well_formed_heads_parse_to_what_they_say(
        method in token(),
        segments in proptest::collection::vec("[a-z0-9._~-]{0,8}", 0..4),
        query in proptest::option::of("[a-z0-9=&]{0,16}"),
        host in proptest::option::of("[a-z0-9.-]{1,20}(:[0-9]{1,5})?"),
        others in proptest::collection::vec((token(), "[ -~]{0,20}"), 0..5),
        crlf in any::<bool>(),
    ) {
        let path = format!("/{}", segments.join("/"));
        let target = match &query {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut head = format!("{method} {target} HTTP/1.1");
        if let Some(h) = &host {
            head.push_str(&format!("{eol}Host: {h}"));
        }
        let others: Vec<_> = others
            .into_iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("host") && !n.eq_ignore_ascii_case("authorization"))
            .collect();
        for (name, value) in &others {
            head.push_str(&format!("{eol}{name}: {value}"));
        }
        let request = parse_head(head.as_bytes()).map_err(|e| TestCaseError::fail(format!("{head:?}: {e}")))?;
        prop_assert_eq!(&request.method, &method);
        prop_assert_eq!(&request.path, &path);
        prop_assert_eq!(request.query, query.unwrap_or_default());
        prop_assert_eq!(request.host, host.map(|h| h.trim().to_string()));
    }

    #[test]
    fn hosts_check_without_panic_and_addresses_always_pass(
        host in "[ -~]{0,40}",
        a in any::<u8>(), b in any::<u8>(), port in proptest::option::of(any::<u16>()),
    ) {
        let _ = host_allowed(&host, &[], Some("board"));
        let ip = match port {
            Some(p) => format!("10.{a}.{b}.1:{p}"),
            None => format!("10.{a}.{b}.1"),
        };
        prop_assert!(host_allowed(&ip, &[], None));
        // A name under someone else's domain never passes for ours.
        let foreign = format!("board.{}.example", host.replace(['.', ':', '[', ']'], "x"));
        prop_assert!(!host_allowed(&foreign, &[], Some("board")));
    }
}

/// Bytes a frame of `format` at `w`×`h` needs with `stride` bytes per row
/// (the last row unpadded), written from the formats' definitions.
fn frame_bytes(format: PixelFormat, w: usize, h: usize, stride: usize) -> usize {
    let rows = |row: usize, n: usize| if n == 0 { 0 } else { stride * (n - 1) + row };
    match format {
        PixelFormat::Yuyv | PixelFormat::Uyvy => rows(4 * w.div_ceil(2), h),
        // CbCr rows after Y at the Y stride, or wider for an odd width's last pair.
        PixelFormat::Nv12 | PixelFormat::Nv21 => {
            let (row, ch) = (2 * w.div_ceil(2), h.div_ceil(2));
            stride * h
                + if ch == 0 {
                    0
                } else {
                    stride.max(row) * (ch - 1) + row
                }
        }
        // Cb then Cr planes after Y, each at half the Y stride (rounded up).
        PixelFormat::Yuv420 | PixelFormat::Yvu420 => {
            let cs = stride.div_ceil(2);
            let ch = h.div_ceil(2);
            let chroma = |n: usize| {
                if n == 0 {
                    0
                } else {
                    cs * (n - 1) + w.div_ceil(2)
                }
            };
            stride * h + cs * ch + chroma(ch)
        }
        PixelFormat::Rgb24 | PixelFormat::Bgr24 => rows(3 * w, h),
        PixelFormat::Grey => rows(w, h),
        PixelFormat::Mjpeg => unreachable!("compressed"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn pixel_formats_convert_any_size_and_stride_or_say_why(
        index in 0usize..9,
        w in 0u32..41, h in 0u32..41,
        padding in 0usize..9,
        packed in any::<bool>(),
        slack in -3i64..3,
        seed in any::<u8>(),
    ) {
        let format = [
            PixelFormat::Yuyv, PixelFormat::Uyvy, PixelFormat::Nv12, PixelFormat::Nv21,
            PixelFormat::Yuv420, PixelFormat::Yvu420,
            PixelFormat::Rgb24, PixelFormat::Bgr24, PixelFormat::Grey,
        ][index];
        let min = format.min_stride(w);
        let stride = if packed { 0 } else { min + padding };
        let need = frame_bytes(format, w as usize, h as usize, stride.max(min));
        let len = (need as i64 + slack).max(0) as usize;
        let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let result = format.to_rgb(&data, w, h, stride);
        if w == 0 || h == 0 {
            prop_assert!(result.unwrap_err().to_string().contains("empty size"));
        } else if len < need {
            prop_assert!(result.is_err(), "{format} {w}×{h} stride {stride}: {len} < {need} bytes accepted");
        } else {
            let img = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(img.dimensions(), (w, h));
        }
        // A stride below the row's bytes is refused, never guessed.
        if w > 0 && h > 0 && min > 1 {
            prop_assert!(format.to_rgb(&data, w, h, min - 1).is_err());
        }
    }

    /// A 4:2:0 frame reads the same whether its planes share one buffer (single-planar
    /// V4L2) or come one per buffer with strides of their own (multi-planar), in any
    /// colorimetry.
    #[test]
    fn one_buffer_and_one_buffer_per_plane_read_alike(
        w in 1usize..24, h in 1usize..24,
        pad in 0usize..5, chroma_pads in (0usize..5, 0usize..5),
        interleaved in any::<bool>(), swapped in any::<bool>(),
        matrix in 0usize..4, full in any::<bool>(),
        seed in any::<u8>(),
    ) {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let byte = |i: usize| (i as u8).wrapping_mul(37).wrapping_add(seed);
        let rows = |n: usize, row: usize, stride: usize, base: usize| -> Vec<u8> {
            (0..n).flat_map(|r| (0..stride).map(move |c| if c < row { byte(base + r * row + c) } else { 0xee })).collect()
        };
        let format = match (interleaved, swapped) {
            (true, false) => PixelFormat::Nv12,
            (true, true) => PixelFormat::Nv21,
            (false, false) => PixelFormat::Yuv420,
            (false, true) => PixelFormat::Yvu420,
        };
        let colorimetry = Colorimetry {
            matrix: [Matrix::Bt601, Matrix::Bt709, Matrix::Bt2020, Matrix::Smpte240m][matrix],
            range: if full { Range::Full } else { Range::Limited },
        };
        let ys = w + pad;
        let luma = rows(h, w, ys, 0);
        let (single, separate) = if interleaved {
            let uv_single = rows(ch, 2 * cw, ys.max(2 * cw), 10_000);
            let uv_own = rows(ch, 2 * cw, 2 * cw + chroma_pads.0, 10_000);
            ([luma.clone(), uv_single].concat(), vec![luma, uv_own])
        } else {
            let cs = ys.div_ceil(2);
            let first_single = rows(ch, cw, cs, 10_000);
            let second_single = rows(ch, cw, cs, 20_000);
            let first = rows(ch, cw, cw + chroma_pads.0, 10_000);
            let second = rows(ch, cw, cw + chroma_pads.1, 20_000);
            ([luma.clone(), first_single, second_single].concat(), vec![luma, first, second])
        };
        let strides: Vec<usize> = if interleaved {
            vec![ys, 2 * cw + chroma_pads.0]
        } else {
            vec![ys, cw + chroma_pads.0, cw + chroma_pads.1]
        };
        let one = format
            .convert(&[Plane { data: &single, stride: ys }], w as u32, h as u32, colorimetry)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let planes: Vec<Plane> = separate
            .iter()
            .zip(&strides)
            .map(|(data, &stride)| Plane { data, stride })
            .collect();
        let each = format
            .convert(&planes, w as u32, h as u32, colorimetry)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(one.as_raw(), each.as_raw(), "{} {}×{}", format, w, h);
    }

    #[test]
    fn corrupt_mjpeg_frames_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut frame = vec![0xff, 0xd8];
        frame.extend(bytes);
        let _ = PixelFormat::Mjpeg.to_rgb(&frame, 16, 16, 0);
    }
}

fn sample_card() -> ModelCard {
    card(scene_classes(), 24, 32, false)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mangled_cards_are_refused_or_read_back_exactly(cut in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let json = sample_card().to_json();
        let mut bytes = json.clone().into_bytes();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        bytes.truncate(cut.index(bytes.len() + 1).max(i));
        if let Ok(text) = String::from_utf8(bytes) {
            if let Ok(card) = ModelCard::from_json(&text) {
                prop_assert_eq!(ModelCard::from_json(&card.to_json()).unwrap(), card);
            }
        }
        prop_assert_eq!(ModelCard::from_json(&json).unwrap(), sample_card());
    }

    #[test]
    fn any_bytes_are_an_onnx_model_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(model) = segcam::onnx_card::decode(&bytes) {
            let _ = segcam::onnx_card::card_of(&model);
        }
    }
}

/// A config key and a TOML value for it, some valid, some not.
fn setting() -> impl Strategy<Value = (String, toml::Value)> {
    let keys = [
        "alpha",
        "width",
        "height",
        "rate",
        "threads",
        "jpeg-quality",
        "frames",
        "resize",
        "filter",
        "visualize",
        "http",
        "loop",
        "stats",
        "pixel-format",
        "decode-max-pixels",
        "http-allowed-hosts",
        "no-such-key",
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(toml::Value::Integer),
        (0i64..400).prop_map(toml::Value::Integer),
        any::<bool>().prop_map(toml::Value::Boolean),
        (-10.0f64..2000.0).prop_map(toml::Value::Float),
        "[a-z0-9:.]{0,10}".prop_map(toml::Value::String),
        prop_oneof![
            Just("crop"),
            Just("point"),
            Just("mask"),
            Just("mjpeg"),
            Just("off")
        ]
        .prop_map(|s| toml::Value::String(s.into())),
        proptest::collection::vec("[a-z]{1,6}".prop_map(toml::Value::String), 0..3)
            .prop_map(toml::Value::Array),
    ];
    (prop::sample::select(keys.to_vec()), value).prop_map(|(k, v)| (k.to_string(), v))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn config_merges_take_the_flags_and_refuse_by_name(
        file in proptest::collection::vec(setting(), 0..6),
        flags in proptest::collection::vec(setting(), 0..4),
    ) {
        let file_table: toml::Table = file.into_iter().collect();
        let flag_table: toml::Table = flags.into_iter().collect();
        let text = toml::to_string(&file_table).unwrap();
        let path = std::path::Path::new("cam.toml");
        match Config::merge(Some((path, &text)), flag_table.clone()) {
            Ok(config) => {
                // Every flag given is what the config holds.
                let back = toml::Table::try_from(&config).unwrap();
                for (key, value) in &flag_table {
                    let held = back.get(key);
                    let same = match (held, value) {
                        // rate is an f32: compare at its precision
                        (Some(toml::Value::Float(a)), toml::Value::Integer(b)) => *a == *b as f32 as f64,
                        (Some(toml::Value::Float(a)), toml::Value::Float(b)) => *a == *b as f32 as f64,
                        (Some(a), b) => a == b,
                        (None, _) => false,
                    };
                    prop_assert!(same, "{key}: {value:?} given, {held:?} held");
                }
            }
            Err(e) => prop_assert!(e.to_string().starts_with("cam.toml: "), "{e}"),
        }
    }
}
