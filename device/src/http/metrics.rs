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
    out
}
