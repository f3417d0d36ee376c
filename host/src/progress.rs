//! Progress bars for long host work (training, evaluation, calibration, synthesis).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `prefix`; indicatif hides it when stderr is not a
/// terminal, so logs and CI output stay clean.
pub fn bar(len: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .expect("progress template")
        .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_owned());
    bar
}
