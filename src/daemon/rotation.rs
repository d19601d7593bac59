//! The key rotation task: looks at the clocks when the ring next changes by itself (and
//! at least every [`RECHECK`]), and rotates, prunes or republishes through
//! [`AppState::rotate_keys`] as far as [`ClockWatch`] trusts the wall clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::keys::rotation::{ClockTrust, ClockWatch, Pruning, RECHECK, next_event};
use crate::state::AppState;
use crate::time::unix_now;

/// Rotates and prunes keys until `shutdown` flips; each change is persisted, then published.
pub(super) async fn run(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let origin = Instant::now();
    let mut clock = ClockWatch::new(unix_now(), origin.elapsed());
    loop {
        let now = unix_now();
        let until_event = next_event(&state.keys().ring, now)
            .map_or(RECHECK, |at| Duration::from_secs(at.saturating_sub(now)));
        tokio::select! {
            _ = tokio::time::sleep(until_event.min(RECHECK)) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let now = unix_now();
        let pruning = match clock.observe(now, origin.elapsed()) {
            ClockTrust::Confirmed => Pruning::Allowed,
            ClockTrust::Holding => Pruning::Held,
            ClockTrust::Jumped => {
                state.metrics.clock_jumps.inc();
                tracing::warn!(
                    wall = now,
                    "the wall clock jumped against the monotonic clock; keys stay as they are, \
                     and none is deleted for the next 10 minutes"
                );
                continue;
            }
        };
        match state.rotate_keys(now, pruning) {
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "key rotation failed; keeping the current keys, retrying in 30 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}
