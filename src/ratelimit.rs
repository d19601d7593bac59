//! Per-source-IP token buckets in a fixed-size table (sans-I/O).
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

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;

const WAYS: usize = 8;
const NANOS_PER_SEC: f64 = 1_000_000_000.0;

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
    /// PROTOCOL.md §3: generous enough for ICE (50 per second, burst 200).
    fn default() -> Self {
        Self {
            per_second: 50,
            burst: 200,
            table_size: 16_384,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The limited key (IPv4 as IPv4-mapped IPv6, IPv6 as its /64), plus one so that
    /// zero marks a free slot.
    key: u128,
    tokens: f64,
    last_nanos: u64,
}

/// A fixed-capacity table of per-IP token buckets.
pub struct RateLimiter {
    slots: Box<[Slot]>,
    set_mask: usize,
    per_nano: f64,
    burst: f64,
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("capacity", &self.slots.len())
            .field("per_second", &(self.per_nano * NANOS_PER_SEC))
            .field("burst", &self.burst)
            .finish()
    }
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        let capacity = config.table_size.clamp(WAYS, 1 << 24).next_power_of_two();
        Self {
            slots: vec![Slot::default(); capacity].into_boxed_slice(),
            set_mask: capacity / WAYS - 1,
            per_nano: f64::from(config.per_second) / NANOS_PER_SEC,
            burst: f64::from(config.burst.max(1)),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// How many sources the table can hold.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// How many sources are tracked now.
    pub fn tracked(&self) -> usize {
        self.slots.iter().filter(|s| s.key != 0).count()
    }

    /// Whether `ip` has a token at `now_nanos`, without taking it: lets a caller skip
    /// work whose answer would be dropped anyway.
    pub fn has_token(&self, ip: IpAddr, now_nanos: u64) -> bool {
        let key = limit_key(ip);
        let set = (self.hasher.hash_one(key) as usize & self.set_mask) * WAYS;
        match self.slots[set..set + WAYS].iter().find(|s| s.key == key) {
            None => true,
            Some(slot) => {
                let elapsed = now_nanos.saturating_sub(slot.last_nanos);
                (slot.tokens + elapsed as f64 * self.per_nano).min(self.burst) >= 1.0
            }
        }
    }

    /// Takes one token for `ip` at `now_nanos`; `false` means "over the limit".
    pub fn allow(&mut self, ip: IpAddr, now_nanos: u64) -> bool {
        let key = limit_key(ip);
        let set = (self.hasher.hash_one(key) as usize & self.set_mask) * WAYS;
        let ways = &mut self.slots[set..set + WAYS];
        let slot = match ways.iter().position(|s| s.key == key) {
            Some(i) => &mut ways[i],
            None => {
                let victim = stalest(ways);
                ways[victim] = Slot {
                    key,
                    tokens: self.burst,
                    last_nanos: now_nanos,
                };
                &mut ways[victim]
            }
        };
        let elapsed = now_nanos.saturating_sub(slot.last_nanos);
        slot.tokens = (slot.tokens + elapsed as f64 * self.per_nano).min(self.burst);
        slot.last_nanos = slot.last_nanos.max(now_nanos);
        if slot.tokens >= 1.0 {
            slot.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The way to reuse: a free one, else the least recently used.
fn stalest(ways: &[Slot]) -> usize {
    let mut best = 0;
    for (i, slot) in ways.iter().enumerate() {
        if slot.key == 0 {
            return i;
        }
        if slot.last_nanos < ways[best].last_nanos {
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

/// A `RateLimiter` shared between tasks. Lock it once per batch of packets
/// (`lock_batch`), not per packet.
#[derive(Debug)]
pub struct SharedRateLimiter(Mutex<RateLimiter>);

impl SharedRateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Self(Mutex::new(RateLimiter::new(config)))
    }

    /// One decision (for callers with one event at a time, such as HTTP handlers).
    pub fn allow(&self, ip: IpAddr, now_nanos: u64) -> bool {
        self.lock_batch().allow(ip, now_nanos)
    }

    /// The limiter, for a batch of decisions. A poisoned lock is recovered: the table
    /// holds no invariant a panic could break.
    pub fn lock_batch(&self) -> std::sync::MutexGuard<'_, RateLimiter> {
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
