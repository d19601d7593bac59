//! Token buckets (sans-I/O): `TokenBucket`, and per-source-IP buckets in a fixed-size
//! table (`RateLimiter`).
//!
//! The table is allocated once and never grows: a flood of spoofed sources only evicts
//! entries, so memory stays bounded. It is set-associative (8 ways per set, sets chosen
//! by a randomly keyed SipHash of the address, so an attacker cannot aim at the set of
//! a given victim); a new address takes a free way or evicts the way that was used least
//! recently. An evicted address starts again with a full bucket, which is what an
//! address never seen before gets anyway.
//!
//! IPv6 sources are limited per /64 (one subscriber usually holds a whole /64, so
//! limiting single addresses would let one host multiply its budget); IPv4-mapped IPv6
//! addresses count as their IPv4 address.
//!
//! Time is passed in as monotonic nanoseconds; no call allocates.

mod concurrency;

pub use concurrency::{ConcurrencyCap, Held};

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WAYS: usize = 8;

/// A point on a monotonic clock: nanoseconds since some origin (`u64`, the tables'
/// clock), or an `Instant`.
pub(crate) trait Timestamp: Copy + Ord {
    /// Time from `earlier` to `self`; zero if `earlier` is later.
    fn since(self, earlier: Self) -> Duration;
}

impl Timestamp for u64 {
    fn since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.saturating_sub(earlier))
    }
}

impl Timestamp for Instant {
    fn since(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` stored; starts full. Rate
/// and burst are passed to each call rather than stored, so that a table of buckets
/// stays small. Tokens are whatever the caller counts (events, bytes); time never runs
/// backwards for a bucket (an earlier `now` adds nothing).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TokenBucket<T> {
    tokens: f64,
    updated: T,
}

impl<T: Timestamp> TokenBucket<T> {
    pub(crate) fn full(burst: f64, now: T) -> Self {
        Self {
            tokens: burst,
            updated: now,
        }
    }

    /// The tokens available at `now`, without changing the bucket.
    pub(crate) fn available(&self, rate: f64, burst: f64, now: T) -> f64 {
        (self.tokens + now.since(self.updated).as_secs_f64() * rate).min(burst)
    }

    /// When the bucket was last refilled.
    pub(crate) fn updated(&self) -> T {
        self.updated
    }

    fn refill(&mut self, rate: f64, burst: f64, now: T) {
        self.tokens = self.available(rate, burst, now);
        self.updated = self.updated.max(now);
    }

    /// Whether `amount` tokens are available now (nothing is taken).
    pub(crate) fn has(&mut self, amount: f64, rate: f64, burst: f64, now: T) -> bool {
        self.refill(rate, burst, now);
        self.tokens >= amount
    }

    /// Takes `amount` tokens if they are all available; a refusal takes nothing.
    pub(crate) fn take(&mut self, amount: f64, rate: f64, burst: f64, now: T) -> bool {
        if self.has(amount, rate, burst, now) {
            self.tokens -= amount;
            true
        } else {
            false
        }
    }

    /// Takes `amount` tokens that were checked with [`TokenBucket::has`] before (never
    /// below zero).
    pub(crate) fn charge(&mut self, amount: f64) {
        self.tokens = (self.tokens - amount).max(0.0);
    }
}

/// Token-bucket parameters and the size of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained rate: tokens added per second.
    pub per_second: u32,
    /// Bucket size: how many events may pass at once.
    pub burst: u32,
    /// How many sources are tracked at most (rounded up to a power of two ≥ 8).
    pub table_size: usize,
}

impl Default for RateLimitConfig {
    /// docs/protocol.md §3: generous enough for ICE (50 per second, burst 200).
    fn default() -> Self {
        Self {
            per_second: 50,
            burst: 200,
            table_size: 16_384,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The limited key (IPv4 as IPv4-mapped IPv6, IPv6 as its /64), plus one so that
    /// zero marks a free slot.
    key: u128,
    /// On the table's clock (monotonic nanoseconds); tokens are events.
    bucket: TokenBucket<u64>,
}

const FREE: Slot = Slot {
    key: 0,
    bucket: TokenBucket {
        tokens: 0.0,
        updated: 0,
    },
};

/// A fixed-capacity table of per-IP token buckets.
pub(crate) struct RateLimiter {
    slots: Box<[Slot]>,
    set_mask: usize,
    per_second: f64,
    burst: f64,
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("capacity", &self.slots.len())
            .field("per_second", &self.per_second)
            .field("burst", &self.burst)
            .finish()
    }
}

impl RateLimiter {
    pub(crate) fn new(config: RateLimitConfig) -> Self {
        let capacity = config.table_size.clamp(WAYS, 1 << 24).next_power_of_two();
        Self {
            slots: vec![FREE; capacity].into_boxed_slice(),
            set_mask: capacity / WAYS - 1,
            per_second: f64::from(config.per_second),
            burst: f64::from(config.burst.max(1)),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// How many sources the table can hold.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// How many sources are tracked now.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.slots.iter().filter(|s| s.key != 0).count()
    }

    /// Whether `ip` has a token at `now_nanos`, without taking it: lets a caller skip
    /// work whose answer would be dropped anyway.
    pub(crate) fn has_token(&self, ip: IpAddr, now_nanos: u64) -> bool {
        let key = limit_key(ip);
        let set = (self.hasher.hash_one(key) as usize & self.set_mask) * WAYS;
        match self.slots[set..set + WAYS].iter().find(|s| s.key == key) {
            None => true,
            Some(slot) => {
                slot.bucket
                    .available(self.per_second, self.burst, now_nanos)
                    >= 1.0
            }
        }
    }

    /// Takes one token for `ip` at `now_nanos`; `false` means "over the limit".
    pub(crate) fn allow(&mut self, ip: IpAddr, now_nanos: u64) -> bool {
        let key = limit_key(ip);
        let set = (self.hasher.hash_one(key) as usize & self.set_mask) * WAYS;
        let ways = &mut self.slots[set..set + WAYS];
        let slot = match ways.iter().position(|s| s.key == key) {
            Some(i) => &mut ways[i],
            None => {
                let victim = stalest(ways);
                ways[victim] = Slot {
                    key,
                    bucket: TokenBucket::full(self.burst, now_nanos),
                };
                &mut ways[victim]
            }
        };
        slot.bucket
            .take(1.0, self.per_second, self.burst, now_nanos)
    }
}

/// The way to reuse: a free one, else the least recently used.
fn stalest(ways: &[Slot]) -> usize {
    let mut best = 0;
    for (i, slot) in ways.iter().enumerate() {
        if slot.key == 0 {
            return i;
        }
        if slot.bucket.updated() < ways[best].bucket.updated() {
            best = i;
        }
    }
    best
}

/// IPv4 (and IPv4-mapped IPv6) per address, IPv6 per /64; never zero (the free mark).
fn limit_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        // ::ffff:a.b.c.d has bits set in its low 64, so it is never zero and never
        // equal to an IPv6 key below, whose low 64 bits are exactly 1.
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 64) - 1)) | 1,
    }
}

/// A per-source limit for one decision at a time (HTTP routes), on its own monotonic
/// clock.
#[derive(Debug)]
pub struct SourceLimiter {
    limiter: SharedRateLimiter,
    epoch: std::time::Instant,
}

impl SourceLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            limiter: SharedRateLimiter::new(config),
            epoch: std::time::Instant::now(),
        }
    }

    /// Takes a token for `ip` if it has one.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let now_nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.limiter.allow(ip, now_nanos)
    }
}

/// A `RateLimiter` shared between tasks. Lock it once per batch of packets
/// (`lock_batch`), not per packet.
#[derive(Debug)]
pub(crate) struct SharedRateLimiter(Mutex<RateLimiter>);

impl SharedRateLimiter {
    pub(crate) fn new(config: RateLimitConfig) -> Self {
        Self(Mutex::new(RateLimiter::new(config)))
    }

    /// One decision (for callers with one event at a time, such as HTTP handlers).
    pub(crate) fn allow(&self, ip: IpAddr, now_nanos: u64) -> bool {
        self.lock_batch().allow(ip, now_nanos)
    }

    /// The limiter, for a batch of decisions. A poisoned lock is recovered: the table
    /// holds no invariant a panic could break.
    pub(crate) fn lock_batch(&self) -> std::sync::MutexGuard<'_, RateLimiter> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn bucket_refills_at_the_rate_up_to_the_burst() {
        let mut b = TokenBucket::full(3.0, 0u64);
        assert!(b.take(3.0, 2.0, 3.0, 0));
        assert!(!b.take(1.0, 2.0, 3.0, SEC / 4), "half a token");
        assert!(b.take(1.0, 2.0, 3.0, SEC / 2));
        assert_eq!(b.available(2.0, 3.0, SEC / 2), 0.0);
        // Never more than the burst, however long the pause.
        assert_eq!(b.available(2.0, 3.0, 1000 * SEC), 3.0);
    }

    #[test]
    fn bucket_available_looks_without_refilling() {
        let b = TokenBucket::full(1.0, 10 * SEC);
        assert_eq!(b.available(1.0, 5.0, 12 * SEC), 3.0);
        assert_eq!(b.updated(), 10 * SEC);
        assert_eq!(b.available(1.0, 5.0, 12 * SEC), 3.0);
    }

    #[test]
    fn bucket_has_then_charge_and_refusals_take_nothing() {
        let mut b = TokenBucket::full(10.0, 0u64);
        assert!(b.has(8.0, 10.0, 10.0, 0));
        assert!(b.has(8.0, 10.0, 10.0, 0), "has takes nothing");
        b.charge(8.0);
        assert!(!b.take(3.0, 10.0, 10.0, 0));
        assert!(b.take(2.0, 10.0, 10.0, 0));
        // A charge beyond what is left stops at zero.
        b.charge(5.0);
        assert_eq!(b.available(10.0, 10.0, 0), 0.0);
        assert!(b.take(1.0, 10.0, 10.0, SEC / 10));
    }

    #[test]
    fn bucket_time_never_runs_backwards() {
        let mut b = TokenBucket::full(1.0, 5 * SEC);
        assert!(b.take(1.0, 1.0, 1.0, 5 * SEC));
        // An earlier time adds nothing and does not rewind the bucket.
        assert!(!b.take(1.0, 1.0, 1.0, 0));
        assert_eq!(b.updated(), 5 * SEC);
        assert!(b.take(1.0, 1.0, 1.0, 6 * SEC));
        let t0 = Instant::now();
        let mut b = TokenBucket::full(1.0, t0 + Duration::from_secs(1));
        assert!(b.take(1.0, 1.0, 1.0, t0));
        assert!(!b.has(1.0, 1.0, 1.0, t0 + Duration::from_secs(1)));
        assert!(b.has(1.0, 1.0, 1.0, t0 + Duration::from_secs(2)));
    }

    #[test]
    fn has_token_looks_without_taking() {
        let mut l = limiter(1, 2, 64);
        let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
        assert!(l.has_token(ip, 0));
        assert!(l.allow(ip, 0));
        assert!(l.has_token(ip, 0));
        assert!(l.has_token(ip, 0), "looking twice takes nothing");
        assert!(l.allow(ip, 0));
        assert!(!l.has_token(ip, 0));
        assert!(l.has_token(ip, SEC), "refilled after a second");
    }

    fn limiter(per_second: u32, burst: u32, table_size: usize) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            per_second,
            burst,
            table_size,
        })
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn burst_passes_then_limit_applies() {
        let mut l = limiter(10, 5, 64);
        let a = ip(0x0A00_0001);
        assert_eq!((0..5).filter(|_| l.allow(a, 0)).count(), 5);
        assert!(!l.allow(a, 0));
    }

    #[test]
    fn tokens_refill_at_the_configured_rate() {
        let mut l = limiter(10, 5, 64);
        let a = ip(1);
        for _ in 0..5 {
            assert!(l.allow(a, 0));
        }
        assert!(!l.allow(a, SEC / 10 - 1));
        assert!(l.allow(a, SEC / 10 + 1));
        assert!(!l.allow(a, SEC / 10 + 2));
        // A long pause refills to the burst, not beyond.
        assert_eq!((0..20).filter(|_| l.allow(a, 100 * SEC)).count(), 5);
    }

    #[test]
    fn sources_are_independent() {
        let mut l = limiter(1, 1, 64);
        assert!(l.allow(ip(1), 0));
        assert!(!l.allow(ip(1), 0));
        assert!(l.allow(ip(2), 0));
    }

    #[test]
    fn ipv6_is_limited_per_64_and_mapped_ipv4_as_ipv4() {
        let mut l = limiter(1, 1, 64);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(l.allow(a, 0));
        assert!(!l.allow(b, 0));
        assert!(l.allow(c, 0));
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert!(l.allow(v4, 0));
        assert!(!l.allow(mapped, 0));
    }

    #[test]
    fn memory_is_bounded_under_a_spoofed_flood() {
        let mut l = limiter(50, 200, 1000);
        let capacity = l.capacity();
        assert_eq!(capacity, 1024);
        for n in 0..200_000u32 {
            l.allow(ip(n), u64::from(n));
        }
        assert_eq!(l.capacity(), capacity);
        assert!(l.tracked() <= capacity);
    }

    #[test]
    fn a_flood_does_not_reset_an_active_source() {
        // Rate 0: the victim's bucket can only come back by being reset.
        let mut l = limiter(0, 3, 256);
        let victim = ip(0xC000_0201);
        for _ in 0..3 {
            assert!(l.allow(victim, 0));
        }
        for n in 0..50_000u32 {
            let t = 2 * u64::from(n) + 1;
            l.allow(ip(n), t);
            assert!(
                !l.allow(victim, t + 1),
                "victim's bucket was reset after {n} spoofed sources"
            );
        }
    }

    #[test]
    fn neighbouring_ipv4_and_loopback_ipv6_are_distinct_keys() {
        let mut l = limiter(1, 1, 64);
        assert!(l.allow(ip(0x0A00_0000), 0));
        assert!(l.allow(ip(0x0A00_0001), 0));
        assert!(l.allow("::1".parse().unwrap(), 0));
        assert!(!l.allow("::2".parse().unwrap(), 0));
        assert_ne!(limit_key("::".parse().unwrap()), 0);
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let mut l = limiter(10, 2, 64);
        assert!(l.allow(ip(1), 10 * SEC));
        assert!(l.allow(ip(1), 5 * SEC));
        assert!(!l.allow(ip(1), 0));
    }

    #[test]
    fn zero_rate_allows_only_the_burst() {
        let mut l = limiter(0, 2, 8);
        assert!(l.allow(ip(1), 0));
        assert!(l.allow(ip(1), 0));
        assert!(!l.allow(ip(1), 1000 * SEC));
    }

    #[test]
    fn shared_limiter_counts_across_callers() {
        let shared = SharedRateLimiter::new(RateLimitConfig {
            per_second: 1,
            burst: 2,
            table_size: 64,
        });
        assert!(shared.allow(ip(7), 0));
        assert!(shared.lock_batch().allow(ip(7), 0));
        assert!(!shared.allow(ip(7), 0));
    }
}
