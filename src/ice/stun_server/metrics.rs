//! STUN metrics and the readiness of the STUN sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::ice::stun::Outcome;

/// Label set of `commucat_stun_requests`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Index of the `rate_limited` counter, after the responder's outcomes.
pub(super) const RATE_LIMITED: usize = Outcome::ALL.len();
const COUNTERS: usize = RATE_LIMITED + 1;

/// STUN metrics: requests by outcome and bytes in/out. Clones share the counters.
#[derive(Debug, Clone)]
pub struct StunMetrics {
    requests: Family<OutcomeLabels, Counter>,
    /// Handles resolved once, indexed by `Outcome::index()` then `RATE_LIMITED`.
    by_outcome: [Counter; COUNTERS],
    bytes_received: Counter,
    bytes_sent: Counter,
}

impl Default for StunMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl StunMetrics {
    pub fn new() -> Self {
        let requests = Family::<OutcomeLabels, Counter>::default();
        let by_outcome = std::array::from_fn(|i| {
            let outcome = Outcome::ALL.get(i).map_or("rate_limited", |o| o.as_str());
            requests.get_or_create_owned(&OutcomeLabels { outcome })
        });
        Self {
            requests,
            by_outcome,
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
        }
    }

    /// Registers into the daemon's registry, whose prefix is `commucat`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "stun_requests",
            "STUN datagrams handled, by outcome",
            self.requests.clone(),
        );
        registry.register(
            "stun_bytes_received",
            "Bytes of STUN datagrams received",
            self.bytes_received.clone(),
        );
        registry.register(
            "stun_bytes_sent",
            "Bytes of STUN replies sent",
            self.bytes_sent.clone(),
        );
    }

    /// The count for an outcome label (`Outcome::as_str()` or `rate_limited`).
    pub fn requests(&self, label: &str) -> u64 {
        Outcome::ALL
            .iter()
            .position(|o| o.as_str() == label)
            .or((label == "rate_limited").then_some(RATE_LIMITED))
            .map_or(0, |i| self.by_outcome[i].get())
    }

    pub fn bytes_received(&self) -> u64 {
        self.bytes_received.get()
    }

    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.get()
    }
}

/// Counts of one batch, flushed into the shared counters.
#[derive(Debug, Default)]
pub(super) struct LocalCounts {
    /// Indexed like `StunMetrics::by_outcome`.
    pub(super) by_outcome: [u64; COUNTERS],
    pub(super) bytes_received: u64,
    pub(super) bytes_sent: u64,
}

impl LocalCounts {
    pub(super) fn flush(&mut self, metrics: &StunMetrics) {
        for (counter, n) in metrics.by_outcome.iter().zip(self.by_outcome.iter_mut()) {
            if *n != 0 {
                counter.inc_by(*n);
                *n = 0;
            }
        }
        for (counter, n) in [
            (&metrics.bytes_received, &mut self.bytes_received),
            (&metrics.bytes_sent, &mut self.bytes_sent),
        ] {
            if *n != 0 {
                counter.inc_by(*n);
                *n = 0;
            }
        }
    }
}

/// Readiness of the STUN sockets for /readyz: every socket has a running task.
#[derive(Debug, Clone)]
pub struct StunReadiness {
    pub(super) running: Arc<AtomicUsize>,
    pub(super) expected: usize,
}

impl StunReadiness {
    pub fn is_ready(&self) -> bool {
        self.expected > 0 && self.running.load(Ordering::Relaxed) == self.expected
    }

    pub fn running_sockets(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }
}

/// Counts a running socket task while it lives.
pub(super) struct RunningGuard(Arc<AtomicUsize>);

impl RunningGuard {
    pub(super) fn new(running: Arc<AtomicUsize>) -> Self {
        running.fetch_add(1, Ordering::Relaxed);
        Self(running)
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_registered_under_the_contract_names() {
        let metrics = StunMetrics::new();
        let mut registry = Registry::with_prefix("commucat");
        metrics.register(&mut registry);
        metrics.by_outcome[RATE_LIMITED].inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for label in Outcome::ALL
            .iter()
            .map(|o| o.as_str())
            .chain(["rate_limited"])
        {
            assert!(
                text.contains(&format!(
                    "commucat_stun_requests_total{{outcome=\"{label}\"}}"
                )),
                "{label}\n{text}"
            );
        }
        assert!(text.contains("commucat_stun_requests_total{outcome=\"rate_limited\"} 1"));
        assert!(text.contains("commucat_stun_bytes_received_total 0"));
        assert!(text.contains("commucat_stun_bytes_sent_total 0"));
        assert_eq!(metrics.requests("rate_limited"), 1);
    }
}
