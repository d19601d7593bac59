//! The per-session relay byte budget: a token bucket whose tokens are bytes. Per-source
//! limits on `/api/connect` use the shared [`crate::ratelimit`] table.

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
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
