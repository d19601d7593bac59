//! The per-session relay byte budget: a `crate::ratelimit::TokenBucket` whose tokens
//! are bytes, on the `Instant` clock (checked with `has` before a relay, charged with
//! `charge` once delivered). Per-source limits on `/api/connect` use the shared
//! [`crate::ratelimit`] table.

use std::time::Instant;

/// The relay byte budget of one session.
pub(crate) type TokenBucket = crate::ratelimit::TokenBucket<Instant>;

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
