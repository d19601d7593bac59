//! Prometheus metrics (`prometheus-client`): one registry, built once, shared by every
//! part of the daemon through the `Arc`'d state.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
}

/// Labels of `commucat_turn_credentials_issued`: the kind (`rest` or `static`) and the
/// server, named by its first configured URL.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TurnLabels {
    pub kind: &'static str,
    pub server: String,
}

/// Labels of `commucat_handshakes`: `outcome` is "ok" or the failure label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    pub pattern: &'static str,
    pub version: &'static str,
    pub pq: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~3.3 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.0, 17,
    ))
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    started: Instant,
    uptime: Gauge,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub assist_requests: Family<MethodLabels, Counter>,
    pub turn_credentials: Family<TurnLabels, Counter>,
    pub key_rotations: Counter,
    /// Wall-clock jumps the key rotation task saw against the monotonic clock.
    pub clock_jumps: Counter,
    /// Device certificates signed (a cached one handed out again is not counted).
    pub certificates_signed: Counter,
    /// Requests to the credential routes refused with 429 by the per-source limit.
    pub credential_requests_limited: Counter,
    pub noise_handshakes: Counter,
    pub pq_handshakes: Counter,
    /// `/api/connect` handshakes by pattern, version, pq and outcome.
    pub handshakes: Family<HandshakeLabels, Counter>,
    pub sessions_active: Gauge,
    pub signals: Counter,
    pub relay_messages: Counter,
    pub relay_bytes: Counter,
    pub sessions_replaced: Counter,
    pub sessions_timed_out: Counter,
    /// Established sessions closed by the server for a protocol violation, by reason.
    pub session_errors: Family<ReasonLabels, Counter>,
    /// WebSocket connections refused because `[limits] max_sessions` was reached.
    pub sessions_refused: Counter,
    pub connect_rate_limited: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("commucat");
        let uptime = Gauge::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_latency =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let assist_requests = Family::<MethodLabels, Counter>::default();
        let turn_credentials = Family::<TurnLabels, Counter>::default();
        let key_rotations = Counter::default();
        let clock_jumps = Counter::default();
        let certificates_signed = Counter::default();
        let credential_requests_limited = Counter::default();
        let noise_handshakes = Counter::default();
        let pq_handshakes = Counter::default();
        let handshakes = Family::<HandshakeLabels, Counter>::default();
        let sessions_active = Gauge::default();
        let signals = Counter::default();
        let relay_messages = Counter::default();
        let relay_bytes = Counter::default();
        let sessions_replaced = Counter::default();
        let sessions_timed_out = Counter::default();
        let session_errors = Family::<ReasonLabels, Counter>::default();
        let sessions_refused = Counter::default();
        let connect_rate_limited = Counter::default();
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);

        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            http_requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "HTTP request latency by route",
            prometheus_client::registry::Unit::Seconds,
            http_latency.clone(),
        );
        registry.register(
            "assist_requests",
            "P2P assist requests by method",
            assist_requests.clone(),
        );
        registry.register(
            "turn_credentials_issued",
            "TURN credentials handed out, by kind (rest or static) and server",
            turn_credentials.clone(),
        );
        registry.register(
            "key_rotations",
            "Noise static key rotations carried out",
            key_rotations.clone(),
        );
        registry.register(
            "credential_requests_limited",
            "Requests to assist, /api/turn and /api/ice-servers refused by the per-source limit",
            credential_requests_limited.clone(),
        );
        registry.register(
            "certificates_signed",
            "Device certificates signed for certify (reused ones are not counted)",
            certificates_signed.clone(),
        );
        registry.register(
            "clock_jumps",
            "Wall-clock jumps against the monotonic clock seen by the key rotation task",
            clock_jumps.clone(),
        );
        registry.register(
            "noise_handshakes",
            "Completed Noise handshakes (classical and hybrid)",
            noise_handshakes.clone(),
        );
        registry.register(
            "pq_handshakes",
            "Completed hybrid (ML-KEM) handshakes",
            pq_handshakes.clone(),
        );
        registry.register(
            "handshakes",
            "Handshakes on /api/connect by pattern, version, pq and outcome (ok or the failure)",
            handshakes.clone(),
        );
        registry.register(
            "sessions_active",
            "Signaling sessions registered now",
            sessions_active.clone(),
        );
        registry.register("signals", "Signals delivered", signals.clone());
        registry.register(
            "relay_messages",
            "Relay messages delivered",
            relay_messages.clone(),
        );
        registry.register_with_unit(
            "relay",
            "Relay payload delivered (decoded)",
            prometheus_client::registry::Unit::Bytes,
            relay_bytes.clone(),
        );
        registry.register(
            "sessions_replaced",
            "Sessions closed (4409) because a newer session of the device arrived",
            sessions_replaced.clone(),
        );
        registry.register(
            "sessions_timed_out",
            "Sessions closed (4408) after session.ttl_seconds without a client frame",
            sessions_timed_out.clone(),
        );
        registry.register(
            "session_errors",
            "Established sessions closed for a protocol violation, by reason",
            session_errors.clone(),
        );
        registry.register(
            "sessions_refused",
            "WebSocket connections refused (4429) at limits.max_sessions",
            sessions_refused.clone(),
        );
        registry.register(
            "connect_rate_limited",
            "Upgrades to /api/connect refused with HTTP 429 by the per-IP limit",
            connect_rate_limited.clone(),
        );
        registry.register_with_unit(
            "uptime",
            "Seconds since the daemon started",
            prometheus_client::registry::Unit::Seconds,
            uptime.clone(),
        );
        registry.register("build_info", "Build information", build_info);

        Self {
            registry,
            started: Instant::now(),
            uptime,
            http_requests,
            http_latency,
            assist_requests,
            turn_credentials,
            key_rotations,
            clock_jumps,
            certificates_signed,
            credential_requests_limited,
            noise_handshakes,
            pq_handshakes,
            handshakes,
            sessions_active,
            signals,
            relay_messages,
            relay_bytes,
            sessions_replaced,
            sessions_timed_out,
            session_errors,
            sessions_refused,
            connect_rate_limited,
        }
    }

    /// Gives other subsystems (STUN, sessions) a place to register their metrics; only
    /// during start-up, before the state is shared.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Every metric in the Prometheus text format 0.0.4, for scrapers that do not ask for
    /// OpenMetrics (plain `curl`, older Prometheus, most agents).
    pub fn encode_prometheus(&self) -> String {
        openmetrics_to_prometheus(&self.encode())
    }

    /// Every metric in the OpenMetrics 1.0 text format.
    pub fn encode(&self) -> String {
        self.uptime
            .set(i64::try_from(self.uptime_seconds()).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4: counter families are named by
/// their `_total` samples in `# HELP`/`# TYPE`, `# UNIT` lines and the closing `# EOF`
/// go, `info` and `stateset` families are typed `gauge`. Samples are the same in both.
fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| line.strip_prefix(prefix).map(|rest| (prefix, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) && !name.ends_with("_total") {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(match tail {
                    "info" | "stateset" => "gauge",
                    other => other,
                });
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family() {
        let m = Metrics::new();
        m.key_rotations.inc();
        m.http_requests
            .get_or_create(&HttpLabels {
                route: "/healthz",
                method: "GET",
                status: 200,
            })
            .inc();
        let text = m.encode();
        assert!(text.contains("commucat_key_rotations_total 1"), "{text}");
        assert!(text.contains(
            "commucat_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1"
        ));
        assert!(text.contains("commucat_build_info{version="));
        assert!(text.contains("commucat_uptime_seconds"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn prometheus_text_names_counters_by_their_samples_and_has_no_eof() {
        let m = Metrics::new();
        m.key_rotations.inc();
        let text = m.encode_prometheus();
        assert!(
            text.contains("# TYPE commucat_key_rotations_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP commucat_key_rotations_total "),
            "{text}"
        );
        assert!(
            text.contains("\ncommucat_key_rotations_total 1\n"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        // Everything else (gauges, histograms) is unchanged.
        let open = m.encode();
        assert!(open.ends_with("# EOF\n"));
        let samples = |t: &str| t.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples(&text), samples(&open));
    }
}
