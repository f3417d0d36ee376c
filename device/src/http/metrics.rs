//! `/metrics`: the stats in Prometheus' text exposition format.

use super::published::Stats;

/// The Prometheus text exposition of `stats`.
pub fn metrics_text(stats: &Stats, clients: usize) -> String {
    // f32 prints its shortest exact form ("29.97", not "29.969999313354492").
    let real = |v: f32| {
        if v.is_finite() {
            v.to_string()
        } else {
            "NaN".into()
        }
    };
    let metrics = [
        (
            "segcam_frames_total",
            "counter",
            "Frames processed since start.",
            stats.frames.to_string(),
        ),
        (
            "segcam_fps",
            "gauge",
            "Frames processed per second.",
            real(stats.fps),
        ),
        (
            "segcam_inference_ms",
            "gauge",
            "Inference time of the latest frame in milliseconds.",
            real(stats.inference_ms),
        ),
        (
            "segcam_dropped_frames_total",
            "counter",
            "Frames dropped because the pipeline was busy.",
            stats.dropped_frames.to_string(),
        ),
        (
            "segcam_corrupt_frames_total",
            "counter",
            "Frames skipped because they did not decode.",
            stats.corrupt_frames.to_string(),
        ),
        (
            "segcam_skipped_frames_total",
            "counter",
            "Frames an output could not take (too large even scaled down).",
            stats.skipped_frames.to_string(),
        ),
        (
            "segcam_clients",
            "gauge",
            "Connected MJPEG stream clients.",
            clients.to_string(),
        ),
        (
            "segcam_no_signal",
            "gauge",
            "1 when the source delivers no frames.",
            u8::from(stats.no_signal).to_string(),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in metrics {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    let drift = &stats.drift;
    out.push_str(&format!(
        "# HELP segcam_class_window_frames Frames the class shares are over.\n\
         # TYPE segcam_class_window_frames gauge\nsegcam_class_window_frames {}\n",
        drift.frames
    ));
    if !drift.shares.is_empty() {
        out.push_str(
            "# HELP segcam_class_share Share of the recent class maps' pixels per class.\n\
             # TYPE segcam_class_share gauge\n",
        );
        for c in &drift.shares {
            out.push_str(&format!(
                "segcam_class_share{{class=\"{}\"}} {}\n",
                label_value(&c.name),
                real(c.share)
            ));
        }
    }
    // Only with the training set's shares (in the model card) to compare with.
    if let Some(score) = drift.score {
        out.push_str(&format!(
            "# HELP segcam_drift_score Total-variation distance of the recent class shares from the training set's (0 same, 1 disjoint).\n\
             # TYPE segcam_drift_score gauge\nsegcam_drift_score {}\n",
            real(score)
        ));
    }
    // The info-metric pattern: the labels carry it, the value is 1.
    if let Some(release) = &stats.release {
        out.push_str(&format!(
            "# HELP segcam_release_info The running release and how the board verified it before it ran.\n\
             # TYPE segcam_release_info gauge\n\
             segcam_release_info{{release=\"{}\",verification=\"{}\",key_id=\"{}\"}} 1\n",
            label_value(&release.release),
            label_value(&release.verification),
            label_value(release.key_id.as_deref().unwrap_or(""))
        ));
        if let Some(counter) = release.counter {
            out.push_str(&format!(
                "# HELP segcam_release_counter The signed release counter of the running release.\n\
                 # TYPE segcam_release_counter gauge\nsegcam_release_counter {counter}\n"
            ));
        }
    }
    out
}

/// A label value as the exposition format escapes it: backslash, quote, newline.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::{ClassShare, DriftStats};
    use crate::provenance::Provenance;

    #[test]
    fn the_release_and_its_verification_are_an_info_metric() {
        let mut stats = Stats::default();
        assert!(!metrics_text(&stats, 0).contains("segcam_release"));
        stats.release = Some(Provenance {
            release: "0123abcd".into(),
            verification: "signed".into(),
            key_id: Some("ABCDEF0123456789".into()),
            counter: Some(1_700_000_000),
        });
        let text = metrics_text(&stats, 0);
        assert!(
            text.contains("segcam_release_info{release=\"0123abcd\",verification=\"signed\",key_id=\"ABCDEF0123456789\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("segcam_release_counter 1700000000\n"),
            "{text}"
        );
        stats.release = Some(Provenance {
            release: "0123abcd".into(),
            verification: "unsigned".into(),
            ..Provenance::default()
        });
        let text = metrics_text(&stats, 0);
        assert!(
            text.contains("verification=\"unsigned\",key_id=\"\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("segcam_release_counter"), "{text}");
    }

    #[test]
    fn class_shares_and_drift_are_exposed_with_escaped_names() {
        let mut stats = Stats::default();
        let text = metrics_text(&stats, 0);
        assert!(text.contains("segcam_class_window_frames 0\n"), "{text}");
        assert!(!text.contains("segcam_drift_score"), "{text}");
        stats.drift = DriftStats {
            frames: 12,
            shares: vec![
                ClassShare {
                    name: "background".into(),
                    share: 0.75,
                },
                ClassShare {
                    name: "a \"b\"\\c\nd".into(),
                    share: 0.25,
                },
            ],
            score: Some(0.125),
        };
        let text = metrics_text(&stats, 0);
        assert!(text.contains("segcam_class_window_frames 12\n"), "{text}");
        assert!(
            text.contains("segcam_class_share{class=\"background\"} 0.75\n"),
            "{text}"
        );
        assert!(
            text.contains("segcam_class_share{class=\"a \\\"b\\\"\\\\c\\nd\"} 0.25\n"),
            "{text}"
        );
        assert!(text.contains("segcam_drift_score 0.125\n"), "{text}");
        // Every sample line is NAME[{LABELS}] VALUE, one per line.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert_eq!(
                line.rsplit_once(' ').map(|(_, v)| v.parse::<f64>().is_ok()),
                Some(true),
                "{line}"
            );
        }
    }
}
