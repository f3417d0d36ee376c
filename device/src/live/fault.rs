//! A test hook: `SEGCAM_TEST_FAULT=STAGE:N:panic` makes the stage (capture, inference
//! or output) panic at its N-th frame, `…:hang` makes it stop there for good, and
//! `capture:N:corrupt` makes every frame from the N-th on arrive corrupt. Tests show
//! with it that a failing stage ends the process with an error, and that a hung one or
//! a source of corrupt frames turns `/healthz` (and systemd's watchdog) red, instead
//! of a half-alive pipeline.

use std::sync::OnceLock;
use std::time::Duration;

#[derive(Debug, PartialEq, Eq)]
enum Fault {
    Panic,
    Hang,
    Corrupt,
}

/// Parse `STAGE:N:panic|hang`.
fn parse(value: &str) -> Option<(String, u64, Fault)> {
    let mut parts = value.splitn(3, ':');
    let stage = parts.next()?.to_string();
    let at = parts.next()?.parse().ok()?;
    let fault = match parts.next()? {
        "panic" => Fault::Panic,
        "hang" => Fault::Hang,
        "corrupt" => Fault::Corrupt,
        _ => return None,
    };
    Some((stage, at, fault))
}

/// The hook, if set and it names `stage` at frame `n`.
fn hook(stage: &str, n: u64) -> Option<&'static Fault> {
    static HOOK: OnceLock<Option<(String, u64, Fault)>> = OnceLock::new();
    let hook = HOOK.get_or_init(|| parse(&std::env::var("SEGCAM_TEST_FAULT").ok()?));
    match hook {
        Some((name, at, fault)) if name == stage && n >= *at => Some(fault),
        _ => None,
    }
}

/// Panic or hang as the hook says if it names `stage` and the stage reached frame `n`.
pub fn maybe_fail(stage: &str, n: u64) {
    match hook(stage, n) {
        Some(Fault::Panic) => panic!("SEGCAM_TEST_FAULT: the {stage} stage panics at frame {n}"),
        Some(Fault::Hang) => loop {
            std::thread::sleep(Duration::from_secs(1));
        },
        _ => {}
    }
}

/// Whether the hook makes frame `n` of `stage` corrupt.
pub fn corrupts(stage: &str, n: u64) -> bool {
    matches!(hook(stage, n), Some(Fault::Corrupt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_names_a_stage_a_frame_and_a_fault() {
        assert_eq!(
            parse("inference:3:panic"),
            Some(("inference".into(), 3, Fault::Panic))
        );
        assert_eq!(
            parse("output:1:hang"),
            Some(("output".into(), 1, Fault::Hang))
        );
        assert_eq!(parse("output:x:hang"), None);
        assert_eq!(parse("output:2"), None);
        assert_eq!(parse("output:2:explode"), None);
    }
}
