//! Noise key rotation: a pure plan (what is due at `now`) and [`advance`], which carries
//! it out and persists the result. The task that calls it over time is the daemon's.

use super::store::{KeyStore, KeyStoreError};
use super::{NoiseKey, NoiseKeyRing};

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

/// A ring that changed at some moment: already persisted, ready to publish.
pub struct Advanced {
    pub ring: NoiseKeyRing,
    /// The version of the key minted, when the change was a rotation.
    pub new_version: Option<u32>,
}

/// Carries out what is due at `now`, persisting the new ring before returning it so that
/// nothing is published that a restart would lose. `None` when nothing is due. The one
/// rotate-and-persist path: used at start and by the daemon's rotation task.
pub fn advance(
    store: &KeyStore,
    ring: &NoiseKeyRing,
    now: u64,
    interval: u64,
    grace: u64,
) -> Result<Option<Advanced>, KeyStoreError> {
    let plan = plan(ring, now);
    if plan.is_noop() {
        return Ok(None);
    }
    let next = apply(ring, &plan, now, interval, grace);
    store.save_noise_keys(&next)?;
    Ok(Some(Advanced {
        ring: next,
        new_version: plan.new_key_version,
    }))
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
