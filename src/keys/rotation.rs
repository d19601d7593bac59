//! Noise key rotation: a pure plan (what is due at `now`) and the background task that
//! persists a new key before publishing it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{NoiseKey, NoiseKeyRing};
use crate::state::AppState;
use crate::timefmt::unix_now;

/// What the ring needs at `now`.
#[derive(Debug, PartialEq, Eq)]
pub struct RotationPlan {
    /// A new key is due (first start, or the newest key reached `rotates_at`).
    pub new_key_version: Option<u32>,
    /// Some listed key has expired and must be dropped.
    pub prune: bool,
}

impl RotationPlan {
    pub fn is_noop(&self) -> bool {
        self.new_key_version.is_none() && !self.prune
    }
}

pub fn plan(ring: &NoiseKeyRing, now: u64) -> RotationPlan {
    let new_key_version = match ring.newest() {
        None => Some(1),
        Some(newest) if newest.rotates_at <= now => Some(newest.version.saturating_add(1)),
        Some(_) => None,
    };
    let prune = ring.keys().iter().any(|k| k.expires_at <= now);
    RotationPlan {
        new_key_version,
        prune,
    }
}

/// The ring after carrying out `plan` at `now`.
pub fn apply(
    ring: &NoiseKeyRing,
    plan: &RotationPlan,
    now: u64,
    interval: u64,
    grace: u64,
) -> NoiseKeyRing {
    let added = plan
        .new_key_version
        .map(|v| NoiseKey::generate(v, now, interval, grace));
    ring.successor(now, added)
}

/// The next moment (unix seconds) the ring changes by itself: a rotation or an expiry.
pub fn next_event(ring: &NoiseKeyRing) -> Option<u64> {
    let rotation = ring.newest().map(|k| k.rotates_at);
    let expiry = ring.keys().iter().map(|k| k.expires_at).min();
    match (rotation, expiry) {
        (Some(r), Some(e)) => Some(r.min(e)),
        (r, e) => r.or(e),
    }
}

/// Rotates and prunes keys until `shutdown` flips; each change is persisted, then published.
pub async fn run(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_creates_version_one() {
        let ring = NoiseKeyRing::default();
        let p = plan(&ring, 100);
        assert_eq!(p.new_key_version, Some(1));
        let ring = apply(&ring, &p, 100, 10, 5);
        assert_eq!(ring.keys()[0].rotates_at, 110);
        assert_eq!(ring.keys()[0].expires_at, 115);
        assert!(plan(&ring, 105).is_noop());
        assert_eq!(next_event(&ring), Some(110));
    }

    #[test]
    fn rotation_keeps_old_key_until_it_expires() {
        let ring = apply(
            &NoiseKeyRing::default(),
            &plan(&NoiseKeyRing::default(), 0),
            0,
            10,
            5,
        );
        let p = plan(&ring, 10);
        assert_eq!(p.new_key_version, Some(2));
        let ring = apply(&ring, &p, 10, 10, 5);
        assert_eq!(ring.keys().len(), 2);
        assert_eq!(next_event(&ring), Some(15));
        let p = plan(&ring, 15);
        assert!(p.prune && p.new_key_version.is_none());
        let ring = apply(&ring, &p, 15, 10, 5);
        assert_eq!(ring.keys().len(), 1);
        assert_eq!(ring.keys()[0].version, 2);
    }
}
