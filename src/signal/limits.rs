//! Token buckets for `/api/connect`: per source address (connections) and per session
//! (relay bytes). Plain data structures; the caller passes the current time.
//!
//! Kept local to the signaling layer for now; `crate::ratelimit` may absorb it later.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// A token bucket: `rate` tokens per second, at most `burst` stored; starts full.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            updated: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.updated = now;
    }

    /// Whether `amount` tokens are available now (nothing is taken).
    pub fn has(&mut self, amount: f64, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        self.tokens >= amount
    }

    /// Takes `amount` tokens if they are all available; a refusal takes nothing.
    pub fn take(&mut self, amount: f64, rate: f64, burst: f64, now: Instant) -> bool {
        if self.has(amount, rate, burst, now) {
            self.tokens -= amount;
            true
        } else {
            false
        }
    }

    /// Takes `amount` tokens that were checked with [`TokenBucket::has`] before.
    pub fn charge(&mut self, amount: f64) {
        self.tokens = (self.tokens - amount).max(0.0);
    }

    fn is_full(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        self.tokens >= burst
    }
}

/// Upper bound on the number of source addresses tracked at once.
pub const IP_TABLE_CAPACITY: usize = 65_536;

/// Per-source connection attempts. IPv6 sources are grouped by /64, since one host
/// usually owns a whole /64. Memory is bounded by [`IP_TABLE_CAPACITY`]: when the table
/// is full, buckets that have refilled completely are forgotten (a full bucket is what an
/// absent entry means anyway); if none has, the newcomers share one overflow bucket, so a
/// flood of fresh addresses is limited as a group rather than growing the table.
#[derive(Debug)]
pub struct IpLimiter {
    buckets: HashMap<IpAddr, TokenBucket>,
    overflow: Option<TokenBucket>,
    capacity: usize,
    /// Pruning scans the whole table: at most once per [`PRUNE_INTERVAL`].
    last_prune: Option<Instant>,
}

/// Least time between two scans of a full table.
pub const PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl Default for IpLimiter {
    fn default() -> Self {
        Self::with_capacity(IP_TABLE_CAPACITY)
    }
}

impl IpLimiter {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buckets: HashMap::new(),
            overflow: None,
            capacity: capacity.max(1),
            last_prune: None,
        }
    }

    /// Whether one more connection from `ip` is allowed at `now`.
    pub fn allow(&mut self, ip: IpAddr, rate: u32, burst: u32, now: Instant) -> bool {
        let (rate, burst) = (f64::from(rate), f64::from(burst));
        let key = source_key(ip);
        if let Some(bucket) = self.buckets.get_mut(&key) {
            return bucket.take(1.0, rate, burst, now);
        }
        let prune_due = self
            .last_prune
            .is_none_or(|t| now.saturating_duration_since(t) >= PRUNE_INTERVAL);
        if self.buckets.len() >= self.capacity && prune_due {
            self.buckets.retain(|_, b| !b.is_full(rate, burst, now));
            self.last_prune = Some(now);
        }
        if self.buckets.len() >= self.capacity {
            return self
                .overflow
                .get_or_insert_with(|| TokenBucket::full(burst, now))
                .take(1.0, rate, burst, now);
        }
        let mut bucket = TokenBucket::full(burst, now);
        let allowed = bucket.take(1.0, rate, burst, now);
        self.buckets.insert(key, bucket);
        allowed
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    #[test]
    fn bucket_allows_burst_then_rate_and_refusals_take_nothing() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(10.0, t0);
        assert!(b.take(10.0, 10.0, 10.0, t0));
        assert!(!b.take(1.0, 10.0, 10.0, t0));
        // A refused large request leaves the small one possible.
        let t1 = t0 + Duration::from_millis(500);
        assert!(!b.take(6.0, 10.0, 10.0, t1));
        assert!(b.take(5.0, 10.0, 10.0, t1));
        // Never more than the burst.
        let t2 = t1 + Duration::from_secs(100);
        assert!(!b.take(11.0, 10.0, 10.0, t2));
        assert!(b.take(10.0, 10.0, 10.0, t2));
    }

    #[test]
    fn limiter_counts_each_source_separately() {
        let t0 = Instant::now();
        let mut l = IpLimiter::default();
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        assert!(l.allow(a, 1, 2, t0));
        assert!(l.allow(a, 1, 2, t0));
        assert!(!l.allow(a, 1, 2, t0));
        assert!(l.allow(b, 1, 2, t0));
        assert!(l.allow(a, 1, 2, t0 + Duration::from_secs(1)));
    }

    #[test]
    fn ipv6_sources_share_their_64() {
        let t0 = Instant::now();
        let mut l = IpLimiter::default();
        let a: IpAddr = "2001:db8:1:2::1".parse::<Ipv6Addr>().unwrap().into();
        let b: IpAddr = "2001:db8:1:2::ffff".parse::<Ipv6Addr>().unwrap().into();
        let c: IpAddr = "2001:db8:1:3::1".parse::<Ipv6Addr>().unwrap().into();
        assert!(l.allow(a, 1, 1, t0));
        assert!(!l.allow(b, 1, 1, t0));
        assert!(l.allow(c, 1, 1, t0));
    }

    #[test]
    fn table_stays_bounded() {
        let t0 = Instant::now();
        let mut l = IpLimiter::with_capacity(4);
        for i in 0..100u32 {
            l.allow(IpAddr::V4(Ipv4Addr::from(i)), 1, 5, t0);
            assert!(l.tracked() <= 4);
        }
        // Newcomers beyond the table share the overflow bucket (5 tokens).
        let mut allowed = 0;
        for i in 1000..1010u32 {
            if l.allow(IpAddr::V4(Ipv4Addr::from(i)), 1, 5, t0) {
                allowed += 1;
            }
        }
        assert!(allowed <= 5, "{allowed}");
        // Once the old buckets have refilled, they make room again.
        let later = t0 + Duration::from_secs(10);
        assert!(l.allow(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 1, 5, later));
    }
}
