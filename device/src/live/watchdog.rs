//! systemd's service notifications: `READY=1` once the pipeline runs and, while the
//! unit sets `WatchdogSec`, `WATCHDOG=1` as long as the pipeline reports itself alive
//! (frames move, or it knowingly waits for its camera). A stage that hangs stops the
//! kicks and systemd restarts the service. The kicks come from a thread of their own:
//! a notification socket that does not drain must never hold up a frame. Outside
//! systemd (no `NOTIFY_SOCKET`) all of this is a no-op.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use sd_notify::NotifyState;

/// When the pipeline last said it is alive, in milliseconds since [`base`] (0: never).
static ALIVE_MS: AtomicU64 = AtomicU64::new(0);

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Tell systemd the service is up (model loaded, outputs open, stages starting).
pub fn ready() {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
        tracing::warn!("systemd notification failed: {e}");
    }
}

/// The pipeline is alive now.
pub fn alive() {
    ALIVE_MS.store(base().elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
}

/// If systemd asked for a watchdog (`WATCHDOG_USEC`), kick it every half period while
/// [`alive`] was called within the period, until `stop` is set.
pub fn start(stop: Arc<AtomicBool>) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    base();
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let last = ALIVE_MS.load(Ordering::Relaxed);
                let now = base().elapsed().as_millis() as u64;
                if last > 0 && now.saturating_sub(last) < period.as_millis() as u64 {
                    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                }
                std::thread::sleep(period / 2);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the watchdog thread: {e}");
    }
}
