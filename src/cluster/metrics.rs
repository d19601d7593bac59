//! Cluster metrics: connection state, cross-node messages, Redis round trips.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `sent` (this node's sessions to another node's), `received`, `dropped`.
    pub direction: &'static str,
}

#[derive(Clone)]
pub struct ClusterMetrics {
    /// 1 while the node is subscribed to its channel in Redis, else 0.
    pub connected: Gauge,
    /// Reconnections to Redis after it was lost.
    pub reconnects: Counter,
    /// Cross-node `signal`/`relay` messages.
    pub messages: Family<DirectionLabels, Counter>,
    /// Round trips to Redis, seconds.
    pub redis_rtt: Histogram,
    /// Keyring reloads that installed a new ring.
    pub keyring_reloads: Counter,
}

impl ClusterMetrics {
    pub fn new() -> Self {
        Self {
            connected: Gauge::default(),
            reconnects: Counter::default(),
            messages: Family::default(),
            // 25 µs .. ~1.6 s, doubling.
            redis_rtt: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.000_025, 2.0, 17,
            )),
            keyring_reloads: Counter::default(),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cluster_connected",
            "1 while this node is connected to Redis (subscribed to its channel)",
            self.connected.clone(),
        );
        registry.register(
            "cluster_reconnects",
            "Reconnections to Redis after the connection was lost",
            self.reconnects.clone(),
        );
        registry.register(
            "cluster_messages",
            "Cross-node signal and relay messages: sent, received, dropped",
            self.messages.clone(),
        );
        registry.register(
            "cluster_redis_rtt_seconds",
            "Round-trip time of requests to Redis",
            self.redis_rtt.clone(),
        );
        registry.register(
            "cluster_keyring_reloads",
            "New keyrings loaded from Redis",
            self.keyring_reloads.clone(),
        );
    }

    pub fn count(&self, direction: &'static str) {
        self.messages
            .get_or_create(&DirectionLabels { direction })
            .inc();
    }
}

impl Default for ClusterMetrics {
    fn default() -> Self {
        Self::new()
    }
}
