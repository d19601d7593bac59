//! systemd integration (`Type=notify`): `READY=1` once serving, `STOPPING=1` at
//! shutdown, and `WATCHDOG=1` at half the `WatchdogSec=` interval while the daemon is
//! ready. Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;

use crate::state::AppState;

pub(super) fn ready() {
    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

pub(super) fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Pets the watchdog while the daemon is ready, until `shutdown` flips; does nothing
/// when systemd set no watchdog for this process.
pub(super) async fn watchdog(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 2).max(Duration::from_millis(50));
    loop {
        if state.is_ready() {
            notify(&[NotifyState::Watchdog]);
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
    }
}
