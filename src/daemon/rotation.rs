//! The key rotation task: wakes when the ring next changes by itself and rotates or
//! prunes through [`AppState::rotate_keys`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::keys::rotation::next_event;
use crate::state::AppState;
use crate::time::unix_now;

/// Rotates and prunes keys until `shutdown` flips; each change is persisted, then published.
pub(super) async fn run(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let wake_at = next_event(&state.keys().ring).unwrap_or_else(|| unix_now() + 3600);
        let delay = Duration::from_secs(wake_at.saturating_sub(unix_now()));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        match state.rotate_keys(unix_now()) {
            Ok(true) => {}
            Ok(false) => tokio::time::sleep(Duration::from_millis(200)).await,
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
