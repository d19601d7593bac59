//! One batch of datagrams and the policy that answers it, without sockets or clocks.

use std::net::SocketAddr;
use std::sync::Arc;

use super::metrics::{LocalCounts, RATE_LIMITED};
use crate::ice::stun::{Outcome, StunResponder};
use crate::ratelimit::{RateLimitConfig, SharedRateLimiter};

/// Datagrams per batch (and per system call).
pub(super) const BATCH: usize = 32;
/// Receive slot size: larger than any sensible STUN request; longer datagrams are
/// truncated by the kernel, flagged, and dropped.
pub(super) const SLOT: usize = 2048;
/// A length over `SLOT` marks a datagram to drop unread (truncated, or from an address
/// family the responder does not know).
pub(super) const OVERSIZED: usize = SLOT + 1;

/// The clocks, read once per batch by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BatchTime {
    /// Unix seconds, for credential expiry.
    pub(super) unix_secs: u64,
    /// Monotonic nanoseconds, for the rate limiter.
    pub(super) mono_nanos: u64,
}

/// Per-task buffers, allocated once.
pub(super) struct Batch {
    pub(super) recv: Vec<u8>,
    pub(super) lens: [usize; BATCH],
    pub(super) sources: [SocketAddr; BATCH],
    pub(super) replies: Vec<Vec<u8>>,
    /// Which replies are to be sent.
    pub(super) send: [bool; BATCH],
    pub(super) counts: LocalCounts,
}

impl Batch {
    pub(super) fn new() -> Self {
        Self {
            recv: vec![0u8; BATCH * SLOT],
            lens: [0; BATCH],
            sources: [SocketAddr::from(([0, 0, 0, 0], 0)); BATCH],
            replies: (0..BATCH).map(|_| Vec::with_capacity(256)).collect(),
            send: [false; BATCH],
            counts: LocalCounts::default(),
        }
    }

    fn datagram(&self, i: usize) -> &[u8] {
        &self.recv[i * SLOT..i * SLOT + self.lens[i]]
    }
}

/// The responder behind the per-source rate limit. For each batch:
/// - a source already over its limit gets no reply, so its datagrams are not parsed or
///   MAC-checked at all (its bucket is only peeked at): a flood costs a table lookup
///   per datagram;
/// - a token is taken only for a reply that is to leave, so datagrams without a reply
///   (dropped ones) cost nothing;
/// - each datagram is counted once: by its outcome, or as `rate_limited` when its reply
///   was withheld.
///
/// The limiter is locked once per step, not per datagram.
pub(super) struct LimitedResponder {
    responder: Arc<StunResponder>,
    limiter: SharedRateLimiter,
}

impl LimitedResponder {
    pub(super) fn new(responder: Arc<StunResponder>, limits: RateLimitConfig) -> Self {
        Self {
            responder,
            limiter: SharedRateLimiter::new(limits),
        }
    }

    /// Answers the first `n` datagrams of `batch`: fills its replies, `send` flags and
    /// counts (bytes sent are the caller's).
    pub(super) fn respond(&self, batch: &mut Batch, n: usize, now: BatchTime) {
        let n = n.min(BATCH);
        let mut outcomes = [0usize; BATCH];
        let mut throttled = [false; BATCH];
        {
            let limiter = self.limiter.lock_batch();
            for (t, source) in throttled.iter_mut().zip(&batch.sources).take(n) {
                *t = !limiter.has_token(source.ip(), now.mono_nanos);
            }
        }
        let mut replies = std::mem::take(&mut batch.replies);
        let mut any_reply = false;
        for (i, reply) in replies.iter_mut().enumerate().take(n) {
            batch.counts.bytes_received += batch.lens[i] as u64;
            let outcome = if throttled[i] {
                reply.clear();
                outcomes[i] = RATE_LIMITED;
                batch.send[i] = false;
                continue;
            } else if batch.lens[i] > SLOT {
                reply.clear();
                Outcome::Dropped
            } else {
                self.responder
                    .handle(batch.datagram(i), batch.sources[i], now.unix_secs, reply)
            };
            outcomes[i] = outcome.index();
            batch.send[i] = !reply.is_empty();
            any_reply |= batch.send[i];
        }
        batch.replies = replies;
        if any_reply {
            let mut limiter = self.limiter.lock_batch();
            let slots = batch.send.iter_mut().zip(&batch.sources).zip(&mut outcomes);
            for ((send, source), outcome) in slots.take(n) {
                if *send && !limiter.allow(source.ip(), now.mono_nanos) {
                    *send = false;
                    // A reply that never left is counted as rate_limited only.
                    *outcome = RATE_LIMITED;
                }
            }
        }
        for &outcome in &outcomes[..n] {
            batch.counts.by_outcome[outcome] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ice::credentials::IceSecret;
    use crate::ice::stun::{IntegrityKind, RequestBuilder};

    const SEC: u64 = 1_000_000_000;
    const UNIX: u64 = 1_800_000_000;

    fn at(mono_nanos: u64) -> BatchTime {
        BatchTime {
            unix_secs: UNIX,
            mono_nanos,
        }
    }

    fn secret() -> IceSecret {
        IceSecret::from_bytes([4; 32])
    }

    fn limited(per_second: u32, burst: u32) -> LimitedResponder {
        LimitedResponder::new(
            Arc::new(StunResponder::new(secret(), false)),
            RateLimitConfig {
                per_second,
                burst,
                table_size: 64,
            },
        )
    }

    fn source(n: u8) -> SocketAddr {
        SocketAddr::from(([198, 51, 100, n], 40_000))
    }

    fn plain(tid: u8) -> Vec<u8> {
        RequestBuilder::minimal_binding([tid; 12]).to_vec()
    }

    /// A batch holding `datagrams`, as a socket would have filled it.
    fn batch(datagrams: &[(&[u8], SocketAddr)]) -> Batch {
        let mut b = Batch::new();
        for (i, (data, from)) in datagrams.iter().enumerate() {
            b.recv[i * SLOT..i * SLOT + data.len()].copy_from_slice(data);
            b.lens[i] = data.len();
            b.sources[i] = *from;
        }
        b
    }

    fn count(b: &Batch, outcome: Outcome) -> u64 {
        b.counts.by_outcome[outcome.index()]
    }

    fn rate_limited(b: &Batch) -> u64 {
        b.counts.by_outcome[RATE_LIMITED]
    }

    #[test]
    fn replies_over_the_burst_are_withheld_and_counted_once() {
        let l = limited(0, 3);
        let requests: Vec<Vec<u8>> = (0..5).map(plain).collect();
        let datagrams: Vec<_> = requests.iter().map(|r| (&r[..], source(1))).collect();
        let mut b = batch(&datagrams);
        l.respond(&mut b, 5, at(0));
        assert_eq!(b.send[..5], [true, true, true, false, false]);
        assert_eq!(count(&b, Outcome::Unauthenticated), 3);
        assert_eq!(rate_limited(&b), 2);
        assert_eq!(b.counts.by_outcome.iter().sum::<u64>(), 5);
        assert_eq!(b.counts.bytes_received, 5 * 20);
        assert!(b.replies[..3].iter().all(|r| r.len() == 32));
    }

    #[test]
    fn datagrams_without_a_reply_take_no_token() {
        let l = limited(0, 1);
        let indication = RequestBuilder::new(0x0011, [1; 12]).build();
        let request = plain(2);
        let mut b = batch(&[
            (b"not stun", source(1)),
            (&indication, source(1)),
            (&request, source(1)),
        ]);
        l.respond(&mut b, 3, at(0));
        assert_eq!(b.send[..3], [false, false, true]);
        assert_eq!(count(&b, Outcome::Dropped), 2);
        assert_eq!(count(&b, Outcome::Unauthenticated), 1);
        assert_eq!(rate_limited(&b), 0);
    }

    #[test]
    fn a_source_over_its_limit_is_not_parsed_and_others_are_served() {
        let l = limited(0, 1);
        let first = plain(1);
        let mut b = batch(&[(&first, source(1))]);
        l.respond(&mut b, 1, at(0));
        assert!(b.send[0]);
        // Garbage from the throttled source counts as rate_limited, not dropped: it was
        // never parsed.
        let second = plain(2);
        let mut b = batch(&[(b"not stun", source(1)), (&second, source(2))]);
        l.respond(&mut b, 2, at(1));
        assert_eq!(b.send[..2], [false, true]);
        assert!(b.replies[0].is_empty());
        assert_eq!(rate_limited(&b), 1);
        assert_eq!(count(&b, Outcome::Dropped), 0);
        assert_eq!(count(&b, Outcome::Unauthenticated), 1);
    }

    #[test]
    fn time_comes_from_the_caller() {
        // The limiter's clock: one token per second.
        let l = limited(1, 1);
        let request = plain(1);
        for (nanos, answered) in [(0, true), (SEC / 2, false), (SEC, true), (SEC, false)] {
            let mut b = batch(&[(&request, source(1))]);
            l.respond(&mut b, 1, at(nanos));
            assert_eq!(b.send[0], answered, "at {nanos} ns");
        }
        // The credentials' clock: valid up to and including the expiry second.
        let l = limited(1000, 1000);
        let cred = secret().issue(UNIX, 60, [3; 8]);
        let check = RequestBuilder::binding([5; 12])
            .username(&cred.ufrag)
            .integrity(IntegrityKind::Sha1, cred.password.as_bytes())
            .build();
        for (unix_secs, outcome) in [
            (UNIX + 60, Outcome::Success),
            (UNIX + 61, Outcome::AuthFailure),
        ] {
            let mut b = batch(&[(&check, source(1))]);
            let now = BatchTime {
                unix_secs,
                mono_nanos: 0,
            };
            l.respond(&mut b, 1, now);
            assert_eq!(count(&b, outcome), 1, "at {unix_secs}");
        }
    }

    #[test]
    fn oversized_datagrams_are_dropped_unread() {
        let l = limited(0, 5);
        let mut b = batch(&[(&plain(1), source(1))]);
        b.lens[0] = OVERSIZED;
        l.respond(&mut b, 1, at(0));
        assert!(!b.send[0]);
        assert_eq!(count(&b, Outcome::Dropped), 1);
        assert_eq!(b.counts.bytes_received, OVERSIZED as u64);
    }
}
