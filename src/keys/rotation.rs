//! Noise key rotation: a pure plan (what is due at `now`), [`advance`], which carries it
//! out and persists the result, and [`ClockWatch`], which says when the wall clock can be
//! trusted to destroy keys. The task that calls them over time is the daemon's.
//!
//! Why the wall clock is not trusted blindly (docs/operations.md, "Clock jumps"): a host
//! that boots with its clock 30 days fast would otherwise delete every key as expired
//! and mint one valid only in the future, and once NTP set the clock right no key would
//! be usable. So: keys are never deleted at start, nor while start or a jump is recent;
//! the newest key is never deleted; a ring with no usable key gets a fresh one; and a
//! key's `valid_after` is honoured with [`VALID_AFTER_SKEW`] of tolerance.

use std::time::Duration;

#[cfg(test)]
use super::KeyLookupError;
use super::store::{KeyStore, KeyStoreError};
use super::{NoiseKey, NoiseKeyRing};

/// How long a key minted by a host whose clock runs ahead is still accepted early, and
/// how far apart two clocks may be on a key's `valid_after`.
pub const VALID_AFTER_SKEW: u64 = 300;
/// After start, and after the wall clock jumps, keys past their expiry stay on disk this
/// long (monotonic time), so that a clock set wrong and corrected meanwhile (NTP) destroys
/// nothing.
pub const PRUNE_HOLD: Duration = Duration::from_secs(600);
/// The rotation task looks at the clock at least this often, whatever the next event.
pub const RECHECK: Duration = Duration::from_secs(60);
/// Wall and monotonic time may drift this much between two looks before it is a jump.
const JUMP_TOLERANCE_SECS: u64 = 5;

/// Whether keys past their expiry may be deleted from disk now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pruning {
    Allowed,
    /// At start, and for [`PRUNE_HOLD`] after a clock jump: expired keys stay on disk.
    Held,
}

/// What the ring needs at `now`.
#[derive(Debug, PartialEq, Eq)]
pub struct RotationPlan {
    /// A new key is due: first start, the newest key reached `rotates_at`, or no key is
    /// usable at `now` (the clock moved outside every key's window).
    pub new_key_version: Option<u32>,
    /// Some key other than the newest has expired and may be dropped.
    pub prune: bool,
}

impl RotationPlan {
    pub fn is_noop(&self) -> bool {
        self.new_key_version.is_none() && !self.prune
    }
}

pub fn plan(ring: &NoiseKeyRing, now: u64, pruning: Pruning) -> RotationPlan {
    let none_usable = !ring.keys().iter().any(|k| k.usable_at(now));
    let new_key_version = match ring.newest() {
        None => Some(1),
        Some(newest) if newest.rotates_at <= now || none_usable => {
            Some(newest.version.saturating_add(1))
        }
        Some(_) => None,
    };
    let prune = pruning == Pruning::Allowed && ring.prunable(now).next().is_some();
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
    ring.successor(now, plan.prune, added)
}

/// Cluster mode: [`apply`], except that a key minted while another is still usable
/// becomes valid only `lead` seconds from now, so that every node has loaded it before
/// any node advertises it (docs/cluster.md, "Key rotation"). A ring with no usable key
/// gets one valid at once, as on a single node.
pub fn apply_with_lead(
    ring: &NoiseKeyRing,
    plan: &RotationPlan,
    now: u64,
    interval: u64,
    grace: u64,
    lead: u64,
) -> NoiseKeyRing {
    let any_usable = ring.keys().iter().any(|k| k.usable_at(now));
    let start = if any_usable {
        now.saturating_add(lead)
    } else {
        now
    };
    let added = plan
        .new_key_version
        .map(|v| NoiseKey::generate_from(v, start, interval, grace));
    ring.successor(now, plan.prune, added)
}

/// The next moment (unix seconds) after `now` at which the ring changes by itself: the
/// newest key's rotation or a listed key's expiry.
pub fn next_event(ring: &NoiseKeyRing, now: u64) -> Option<u64> {
    let rotation = ring.newest().map(|k| k.rotates_at);
    let expiry = ring.listed(now).map(|k| k.expires_at).min();
    match (rotation, expiry) {
        (Some(r), Some(e)) => Some(r.min(e)),
        (r, e) => r.or(e),
    }
}

/// What the wall clock may be trusted with, judged against the monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockTrust {
    /// Wall time moved with monotonic time, and has for [`PRUNE_HOLD`]: keys may be
    /// rotated and pruned.
    Confirmed,
    /// Consistent since the last look, but start or a jump is recent: rotate, do not prune.
    Holding,
    /// The wall clock moved differently from monotonic time since the last look: change
    /// nothing now.
    Jumped,
}

/// Watches the wall clock against the monotonic one (a sans-I/O core: the caller passes
/// both readings in).
#[derive(Debug, Clone)]
pub struct ClockWatch {
    last_wall: u64,
    last_mono: Duration,
    /// Monotonic time from which pruning is trusted again.
    trusted_from: Duration,
}

impl ClockWatch {
    /// Starts watching; start counts as a possible jump (the host may have booted with a
    /// wrong clock), so pruning is held for [`PRUNE_HOLD`].
    pub fn new(wall: u64, mono: Duration) -> Self {
        Self {
            last_wall: wall,
            last_mono: mono,
            trusted_from: mono + PRUNE_HOLD,
        }
    }

    /// Looks at both clocks now.
    pub fn observe(&mut self, wall: u64, mono: Duration) -> ClockTrust {
        let mono_elapsed = mono.saturating_sub(self.last_mono).as_secs();
        let drift = wall.abs_diff(self.last_wall.saturating_add(mono_elapsed));
        self.last_wall = wall;
        self.last_mono = mono;
        if drift > JUMP_TOLERANCE_SECS + mono_elapsed / 100 {
            self.trusted_from = mono + PRUNE_HOLD;
            return ClockTrust::Jumped;
        }
        if mono >= self.trusted_from {
            ClockTrust::Confirmed
        } else {
            ClockTrust::Holding
        }
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
    pruning: Pruning,
) -> Result<Option<Advanced>, KeyStoreError> {
    let plan = plan(ring, now, pruning);
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
    fn a_cluster_rotation_mints_a_key_valid_after_the_lead() {
        let ring = first_ring(T0, 100, 1000);
        let p = plan(&ring, T0 + 100, Pruning::Allowed);
        let ring = apply_with_lead(&ring, &p, T0 + 100, 100, 1000, 25);
        let new = ring.newest().unwrap();
        assert_eq!((new.version, new.valid_after), (2, T0 + 125));
        assert_eq!(new.rotates_at, T0 + 225);
        assert!(plan(&ring, T0 + 101, Pruning::Allowed).is_noop());
        // No usable key: valid at once.
        let empty = NoiseKeyRing::default();
        let p = plan(&empty, T0, Pruning::Allowed);
        let ring = apply_with_lead(&empty, &p, T0, 100, 1000, 25);
        assert_eq!(ring.newest().unwrap().valid_after, T0);
    }

    #[test]
    fn first_start_creates_version_one() {
        let ring = NoiseKeyRing::default();
        let p = plan(&ring, 100, Pruning::Allowed);
        assert_eq!(p.new_key_version, Some(1));
        let ring = apply(&ring, &p, 100, 10, 5);
        assert_eq!(ring.keys()[0].rotates_at, 110);
        assert_eq!(ring.keys()[0].expires_at, 115);
        assert!(plan(&ring, 105, Pruning::Allowed).is_noop());
        assert_eq!(next_event(&ring, 100), Some(110));
    }

    #[test]
    fn rotation_keeps_old_key_until_it_expires() {
        let ring = first_ring(0, 10, 5);
        let p = plan(&ring, 10, Pruning::Allowed);
        assert_eq!(p.new_key_version, Some(2));
        let ring = apply(&ring, &p, 10, 10, 5);
        assert_eq!(ring.keys().len(), 2);
        assert_eq!(next_event(&ring, 10), Some(15));
        let p = plan(&ring, 15, Pruning::Allowed);
        assert!(p.prune && p.new_key_version.is_none());
        let ring = apply(&ring, &p, 15, 10, 5);
        assert_eq!(ring.keys().len(), 1);
        assert_eq!(ring.keys()[0].version, 2);
    }

    /// The ring a first start makes at `now`.
    fn first_ring(now: u64, interval: u64, grace: u64) -> NoiseKeyRing {
        let empty = NoiseKeyRing::default();
        apply(
            &empty,
            &plan(&empty, now, Pruning::Allowed),
            now,
            interval,
            grace,
        )
    }

    const DAY: u64 = 86_400;
    const WEEK: u64 = 7 * DAY;
    const T0: u64 = 1_800_000_000;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_clock_watch_holds_pruning_after_start_and_after_a_jump() {
        let mut watch = ClockWatch::new(T0, secs(0));
        assert_eq!(watch.observe(T0 + 60, secs(60)), ClockTrust::Holding);
        let hold = PRUNE_HOLD.as_secs();
        assert_eq!(watch.observe(T0 + hold, secs(hold)), ClockTrust::Confirmed);
        // 30 days forward while 60 s passed: a jump; then holding again.
        let jumped = T0 + hold + 30 * DAY;
        assert_eq!(watch.observe(jumped, secs(hold + 60)), ClockTrust::Jumped);
        assert_eq!(
            watch.observe(jumped + 60, secs(hold + 120)),
            ClockTrust::Holding
        );
        assert_eq!(
            watch.observe(jumped + 60 + hold, secs(2 * hold + 120)),
            ClockTrust::Confirmed
        );
        // Backwards is a jump too; small drift is not.
        assert_eq!(watch.observe(T0, secs(2 * hold + 180)), ClockTrust::Jumped);
        assert_eq!(
            watch.observe(T0 + 63, secs(2 * hold + 240)),
            ClockTrust::Holding
        );
    }

    #[test]
    fn a_host_booting_30_days_fast_destroys_no_key_and_recovers_when_ntp_corrects_it() {
        // Keys made at T0; the daemon restarts a day later on a clock 30 days fast.
        let ring = first_ring(T0, WEEK, WEEK);
        let real = T0 + DAY;
        let fast = real + 30 * DAY;
        // At start nothing is deleted (keys::load holds pruning); a key is minted because
        // none is usable on the wrong clock.
        let at_start = plan(&ring, fast, Pruning::Held);
        assert_eq!(
            at_start,
            RotationPlan {
                new_key_version: Some(2),
                prune: false
            }
        );
        let ring = apply(&ring, &at_start, fast, WEEK, WEEK);
        assert_eq!(ring.keys().len(), 2, "the old key stays on disk");

        // Five minutes later NTP sets the clock right: the watch sees a jump.
        let mut watch = ClockWatch::new(fast, secs(0));
        assert_eq!(watch.observe(real + 300, secs(300)), ClockTrust::Jumped);

        // Handshakes on the old key work again; the key from the wrong clock is not yet valid.
        let now = real + 300;
        assert_eq!(ring.lookup(1, now).map(|k| k.version), Ok(1));
        assert_eq!(ring.lookup(2, now).err(), Some(KeyLookupError::Unknown));
        // Once trusted, nothing is due: the old key is usable and not expired.
        assert!(plan(&ring, now + PRUNE_HOLD.as_secs(), Pruning::Allowed).is_noop());

        // When the old key really expires it goes, but never leaves the ring without a
        // usable key: a fresh one is minted in the same step.
        let expiry = ring.keys()[0].expires_at;
        let p = plan(&ring, expiry, Pruning::Allowed);
        assert_eq!(
            p,
            RotationPlan {
                new_key_version: Some(3),
                prune: true
            }
        );
        let ring = apply(&ring, &p, expiry, WEEK, WEEK);
        let versions: Vec<u32> = ring.keys().iter().map(|k| k.version).collect();
        assert_eq!(versions, [2, 3]);
        assert!(ring.lookup(3, expiry).is_ok());
    }

    #[test]
    fn the_newest_key_is_never_pruned() {
        let ring = first_ring(T0, 10, 5);
        // Long past its expiry the only key stays; a new one is added beside it.
        let later = T0 + 1_000;
        assert_eq!(ring.prunable(later).count(), 0);
        let p = plan(&ring, later, Pruning::Allowed);
        assert_eq!(p.new_key_version, Some(2));
        let ring = apply(&ring, &p, later, 10, 5);
        assert_eq!(ring.keys().len(), 2);
        // Held pruning keeps expired keys; allowed pruning drops all but the newest.
        assert!(!plan(&ring, later + 100, Pruning::Held).prune);
        let p = plan(&ring, later + 100, Pruning::Allowed);
        let ring = apply(&ring, &p, later + 100, 10, 5);
        assert_eq!(ring.keys().last().map(|k| k.version), Some(3));
        assert!(ring.keys().iter().all(|k| k.version >= 2));
    }

    #[test]
    fn a_key_minted_slightly_ahead_is_accepted_within_the_skew() {
        let ring = first_ring(T0, WEEK, WEEK);
        let behind = T0 - VALID_AFTER_SKEW;
        assert!(ring.lookup(1, behind).is_ok());
        assert_eq!(
            ring.lookup(1, behind - 1).err(),
            Some(KeyLookupError::Unknown)
        );
    }
}
