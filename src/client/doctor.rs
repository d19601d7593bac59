//! `commucat-cli doctor URL`: runs the path a client takes against a deployment and
//! reports each step, with a hint naming the likely fix when one fails.
//!
//! The steps, in order: server-info is reachable; its key bundle signature verifies (with
//! the pinned identity when given); post-quantum is on; the server's clock (HTTP `Date`)
//! agrees with ours; assist answers and its `ice_servers` are well formed; the ICE
//! credential's expiry agrees with its lifetime; every ICE-lite candidate answers an
//! authenticated STUN check from the address it advertises; every UDP TURN server accepts
//! the minted credentials, relays a packet to itself and refreshes; the hybrid (XK v2)
//! and classical (XK v1) handshakes complete and a ping comes back.
//!
//! Each step is bounded by the timeout. A step whose input is missing because an earlier
//! one failed is reported as skipped (and not passed); a step that does not apply (no
//! TURN server, a TCP-only TURN URL) is skipped and passed.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::connect::{ConnectError, ConnectOptions, connect_with_info};
use super::http::{ClientError, Rejected, describe, fetch_assist, http_client, join};
use super::stun::{ProbeError, probe_addr};
use super::turn::{self, TurnError};
use crate::config::TurnUrl;
use crate::crypto::handshake::DEFAULT_PROLOGUE;
use crate::crypto::{Pattern, Version};
use crate::discovery::ServerInfo;
use crate::signal::messages::{ClientMessage, ServerMessage};

/// Largest clock difference tolerated, in seconds.
pub const MAX_SKEW_SECS: i64 = 60;

/// What to check and how.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// Base URL of the daemon, e.g. `http://127.0.0.1:8080`.
    pub base: String,
    /// The server's pinned identity (`device_ca_public`, hex).
    pub server_identity: Option<String>,
    pub access_token: Option<String>,
    /// Bound on each step.
    pub timeout: Duration,
    /// Added to the local clock before comparing it with the server's: a diagnostic and
    /// test aid that simulates a client whose clock is off.
    pub clock_offset_secs: i64,
}

/// One step of the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Step {
    pub step: String,
    pub ok: bool,
    pub skipped: bool,
    pub ms: u64,
    pub detail: String,
    pub hint: Option<String>,
}

/// Every step, in the order run.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct Report {
    pub steps: Vec<Step>,
}

impl Report {
    /// Whether every step passed (steps that do not apply count as passed).
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|s| s.ok)
    }

    fn pass(&mut self, step: impl Into<String>, started: Instant, detail: impl Into<String>) {
        self.push(step, true, false, started.elapsed(), detail, None);
    }

    fn fail(
        &mut self,
        step: impl Into<String>,
        started: Instant,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let hint = Some(hint.into());
        self.push(step, false, false, started.elapsed(), detail, hint);
    }

    /// A step not run because `reason` (an earlier failure).
    fn skip(&mut self, step: impl Into<String>, reason: impl Into<String>) {
        self.push(step, false, true, Duration::ZERO, reason, None);
    }

    /// A step that does not apply.
    fn note(&mut self, step: impl Into<String>, reason: impl Into<String>) {
        self.push(step, true, true, Duration::ZERO, reason, None);
    }

    fn push(
        &mut self,
        step: impl Into<String>,
        ok: bool,
        skipped: bool,
        elapsed: Duration,
        detail: impl Into<String>,
        hint: Option<String>,
    ) {
        self.steps.push(Step {
            step: step.into(),
            ok,
            skipped,
            ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            detail: detail.into(),
            hint,
        });
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match (self.ok, self.skipped) {
            (_, true) => "-",
            (true, false) => "✓",
            (false, false) => "✗",
        };
        write!(f, "{mark} {} ({} ms)", self.step, self.ms)?;
        if self.skipped {
            write!(f, " skipped")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " — hint: {hint}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            writeln!(f, "{step}")?;
        }
        Ok(())
    }
}

/// The local clock as the options see it, in unix seconds.
fn local_now(options: &DoctorOptions) -> i64 {
    let now = i64::try_from(crate::time::unix_now()).unwrap_or(i64::MAX);
    now.saturating_add(options.clock_offset_secs)
}

/// server-info as fetched: the document (if it parsed) and the `Date` header.
struct Fetched {
    info: ServerInfo,
    date: Option<String>,
}

/// Runs every step against `options.base`.
pub async fn run(options: &DoctorOptions) -> Report {
    let mut report = Report::default();
    let timeout = options.timeout;

    // 1. server-info reachable
    let started = Instant::now();
    let fetched = match fetch_info(options).await {
        Ok(f) => {
            report.pass(
                "server-info",
                started,
                format!(
                    "{} answers (domain {})",
                    options.base.trim_end_matches('/'),
                    f.info.domain
                ),
            );
            f
        }
        Err((detail, hint)) => {
            report.fail("server-info", started, detail, hint);
            for step in [
                "signature",
                "post-quantum",
                "clock",
                "assist",
                "ice-servers",
                "credential-expiry",
                "stun",
                "turn",
                "handshake pq (XK v2)",
                "handshake classical (XK v1)",
            ] {
                report.skip(step, "server-info failed");
            }
            return report;
        }
    };
    let info = &fetched.info;

    // 2. signature, and the pin
    let started = Instant::now();
    let signed = match super::http::verify_server_info(info, options.server_identity.as_deref()) {
        Ok(()) => {
            let detail = if options.server_identity.is_some() {
                "ML-DSA-65 key bundle signature verifies with the pinned identity"
            } else {
                "ML-DSA-65 key bundle signature verifies (no --server-identity: trusted on first use)"
            };
            report.pass("signature", started, detail);
            true
        }
        Err(e) => {
            report.fail("signature", started, e.to_string(), signature_hint(&e));
            false
        }
    };

    // 3. post-quantum
    let started = Instant::now();
    let pq = info.post_quantum.enabled && info.post_quantum.kem_public_hex.is_some();
    if pq {
        report.pass(
            "post-quantum",
            started,
            "ML-KEM-768 hybrid handshake offered",
        );
    } else {
        report.fail(
            "post-quantum",
            started,
            "post_quantum.enabled is false: only classical handshakes are offered",
            "crypto.pq = false on the server; set [crypto] pq = true (COMMUCAT_CRYPTO_PQ) and restart",
        );
    }

    // 4. clock skew (HTTP Date)
    let started = Instant::now();
    match fetched.date.as_deref().map(parse_http_date) {
        None => report.note("clock", "the server sent no Date header; not checked"),
        Some(None) => report.fail(
            "clock",
            started,
            format!(
                "unreadable Date header {:?}",
                fetched.date.unwrap_or_default()
            ),
            "a proxy in front of the daemon rewrites the Date header",
        ),
        Some(Some(server)) => {
            let skew = server - local_now(options);
            if skew.abs() <= MAX_SKEW_SECS {
                report.pass(
                    "clock",
                    started,
                    format!("server clock differs from ours by {skew:+} s"),
                );
            } else {
                report.fail(
                    "clock",
                    started,
                    format!(
                        "server clock differs from ours by {skew:+} s (more than {MAX_SKEW_SECS} s)"
                    ),
                    clock_hint(),
                );
            }
        }
    }

    // 5. assist
    let started = Instant::now();
    let assist = match http_client(timeout) {
        Ok(client) => {
            let fetching = fetch_assist(
                &client,
                &options.base,
                None,
                options.access_token.as_deref(),
            );
            match tokio::time::timeout(timeout, fetching).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(assist_failure(&e, options.access_token.is_some())),
                Err(_) => Err((
                    format!("no answer in {timeout:?}"),
                    "the daemon is overloaded or a proxy holds the request".to_string(),
                )),
            }
        }
        Err(e) => Err((e.to_string(), "cannot build an HTTP client".to_string())),
    };
    let assist = match assist {
        Ok(value) => {
            report.pass("assist", started, "/api/p2p/assist answers");
            Some(value)
        }
        Err((detail, hint)) => {
            report.fail("assist", started, detail, hint);
            for step in ["ice-servers", "credential-expiry", "stun", "turn"] {
                report.skip(step, "assist failed");
            }
            None
        }
    };

    if let Some(assist) = &assist {
        let ice = &assist["ice"];
        // 6. ice_servers well formed
        let started = Instant::now();
        match check_ice_servers(ice) {
            Ok(n) => report.pass(
                "ice-servers",
                started,
                format!("{n} entr{} well formed", if n == 1 { "y" } else { "ies" }),
            ),
            Err(problem) => report.fail(
                "ice-servers",
                started,
                problem,
                "ice.ice_servers must list urls starting with stun:, turn: or turns:, and every \
                 TURN entry needs username and credential: check [[ice.turn]] urls and secrets",
            ),
        }
        // 7. credential expiry
        let started = Instant::now();
        check_expiry(&mut report, started, ice, options);
        // 8. STUN checks of the lite candidates
        check_stun(&mut report, ice, timeout).await;
        // 9. TURN servers
        check_turn(&mut report, ice, timeout).await;
    }

    // 10. handshakes
    let prologue = assist
        .as_ref()
        .and_then(|a| a["noise"]["prologue_hex"].as_str())
        .and_then(|h| hex::decode(h).ok())
        .unwrap_or_else(|| DEFAULT_PROLOGUE.to_vec());
    let base_options = ConnectOptions {
        pattern: Pattern::Xk,
        version: Version::V2,
        pq: true,
        key_version: None,
        device_secret: None,
        timeout,
        prologue,
        server_identity: options.server_identity.clone(),
        access_token: options.access_token.clone(),
    };
    let pq_step = "handshake pq (XK v2)";
    if !signed {
        report.skip(pq_step, "the signature did not verify");
    } else if !pq {
        report.skip(pq_step, "post-quantum is off on the server");
    } else {
        handshake(
            &mut report,
            pq_step,
            &options.base,
            info,
            base_options.clone(),
        )
        .await;
    }
    let classical_step = "handshake classical (XK v1)";
    if signed {
        let classical = ConnectOptions {
            version: Version::V1,
            pq: false,
            ..base_options
        };
        handshake(&mut report, classical_step, &options.base, info, classical).await;
    } else {
        report.skip(classical_step, "the signature did not verify");
    }
    report
}

fn clock_hint() -> String {
    "synchronise the clocks (NTP: chrony or systemd-timesyncd) on the client and the server: \
     ICE and TURN credentials carry absolute expiry times, so a skewed clock makes them \
     look expired or not yet valid"
        .into()
}

/// Fetches server-info, keeping the `Date` header; on failure a detail and a hint.
async fn fetch_info(options: &DoctorOptions) -> Result<Fetched, (String, String)> {
    let url = join(&options.base, "/api/server-info").map_err(|e| {
        (
            e.to_string(),
            "give the daemon's base URL, e.g. http://host:8080 or https://host".to_string(),
        )
    })?;
    let client = http_client(options.timeout)
        .map_err(|e| (e.to_string(), "cannot build an HTTP client".to_string()))?;
    let fetching = async {
        let response = client.get(&url).send().await.map_err(|e| {
            let text = describe(&e);
            let hint = connect_hint(&text, e.is_timeout());
            (format!("cannot reach {url}: {text}"), hint)
        })?;
        let status = response.status();
        let date = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.bytes().await.map_err(|e| {
            let text = describe(&e);
            let hint = connect_hint(&text, e.is_timeout());
            (format!("reading {url}: {text}"), hint)
        })?;
        if !status.is_success() {
            return Err((
                format!("{url} answered HTTP {}", status.as_u16()),
                status_hint(status.as_u16()),
            ));
        }
        let info: ServerInfo = serde_json::from_slice(&body).map_err(|e| {
            (
                format!("{url} did not return a server-info document: {e}"),
                "the URL reaches something other than a CommuCat daemon (a proxy's page, \
                 another service on that port)"
                    .to_string(),
            )
        })?;
        Ok(Fetched { info, date })
    };
    match tokio::time::timeout(options.timeout, fetching).await {
        Ok(result) => result,
        Err(_) => Err((
            format!("no answer from {url} in {:?}", options.timeout),
            connect_hint("timed out", true),
        )),
    }
}

/// A hint for an HTTP connection failure described by `text`.
fn connect_hint(text: &str, timed_out: bool) -> String {
    let lower = text.to_ascii_lowercase();
    if lower.contains("connection refused") {
        "nothing listens there: is commucat running, and does [server] bind (or the proxy in \
         front) use this host and port?"
            .into()
    } else if lower.contains("dns")
        || lower.contains("failed to lookup")
        || lower.contains("name or service not known")
        || lower.contains("no address")
    {
        "the host name does not resolve: check the URL and DNS".into()
    } else if lower.contains("certificate")
        || lower.contains("tls")
        || lower.contains("handshake")
        || lower.contains("invalid peer")
    {
        "TLS failed: the certificate must be valid for this host name and chain to a public \
         root ([server] tls_cert with the full chain), or use http:// for a plain daemon"
            .into()
    } else if timed_out || lower.contains("timed out") {
        "no answer in time: a firewall drops the packets, or the host or port is wrong".into()
    } else if lower.contains("unreachable") {
        "the network cannot reach that address: check the host and routing".into()
    } else {
        "check the URL, and that the daemon runs and is reachable from here".into()
    }
}

fn status_hint(status: u16) -> String {
    match status {
        404 => "no /api/server-info at this URL: give the daemon's base URL (no path), or fix \
                the reverse proxy's route"
            .into(),
        401 | 403 => "a proxy in front demands authentication; server-info is public".into(),
        429 => "rate limited: retry later".into(),
        502..=504 => "the reverse proxy cannot reach the daemon: is commucat running, and does \
                      the proxy point at its [server] bind?"
            .into(),
        _ => "the daemon (or a proxy in front) refused the request; see its log".into(),
    }
}

fn signature_hint(e: &Rejected) -> String {
    use super::http::IdentityError;
    match e {
        Rejected::Identity(IdentityError::NotPinned) => {
            "the server's identity is not the pinned --server-identity: a different server, or \
             its identity seed changed (state directory lost); compare device_ca_public"
                .into()
        }
        Rejected::Identity(IdentityError::BadPin) => {
            "--server-identity must be the server's device_ca_public: an ML-DSA-65 public key in hex"
                .into()
        }
        Rejected::Identity(IdentityError::FieldsDiffer) => {
            "the document names two identity keys: it was altered in transit".into()
        }
        Rejected::Signature(_) => {
            "the key bundle does not verify: something between you and the daemon rewrites the \
             JSON, or the daemon serves a document it did not sign"
                .into()
        }
    }
}

fn assist_failure(e: &ClientError, with_token: bool) -> (String, String) {
    let hint = match e {
        ClientError::Status { status: 401, .. } if with_token => {
            "the access token was refused: expired, or signed with a secret not in [auth] \
             jwt_secrets / tokens"
        }
        ClientError::Status { status: 401, .. } => {
            "the daemon has [auth] required: pass --access-token"
        }
        ClientError::Status { status: 403, .. } => "the access token is not allowed here",
        ClientError::Status { status: 429, .. } => {
            "rate limited: this address used up [limits] assist_rate_per_ip / assist_burst; \
             retry later"
        }
        ClientError::Status { status: 404, .. } => {
            "no /api/p2p/assist at this URL: the reverse proxy does not route it"
        }
        ClientError::Status { .. } => "the daemon refused the request; see its log",
        ClientError::Connect { .. } => "the connection failed: see the server-info step",
        _ => "assist's answer is not what a CommuCat daemon sends: a proxy in front?",
    };
    (e.to_string(), hint.to_string())
}

/// Checks `ice.ice_servers` (and the URLs of `ice.servers`); the number of entries.
fn check_ice_servers(ice: &serde_json::Value) -> Result<usize, String> {
    let entries = ice["ice_servers"]
        .as_array()
        .ok_or("ice.ice_servers is missing or not an array")?;
    for (i, entry) in entries.iter().enumerate() {
        let urls = entry["urls"]
            .as_array()
            .ok_or(format!("ice.ice_servers[{i}].urls is not an array"))?;
        if urls.is_empty() {
            return Err(format!("ice.ice_servers[{i}].urls is empty"));
        }
        let mut turn = false;
        for url in urls {
            let url = url
                .as_str()
                .ok_or(format!("ice.ice_servers[{i}].urls has a non-string entry"))?;
            if url.starts_with("turn:") || url.starts_with("turns:") {
                turn = true;
            } else if !url.starts_with("stun:") {
                return Err(format!(
                    "ice.ice_servers[{i}] has URL {url:?}: not stun:, turn: or turns:"
                ));
            }
        }
        if turn {
            for field in ["username", "credential"] {
                if entry[field].as_str().is_none_or(str::is_empty) {
                    return Err(format!("TURN entry ice.ice_servers[{i}] has no {field}"));
                }
            }
        }
    }
    Ok(entries.len())
}

/// `ice.expires_at` minus now should be `ice.ttl_secs` (the credential was just minted).
fn check_expiry(
    report: &mut Report,
    started: Instant,
    ice: &serde_json::Value,
    options: &DoctorOptions,
) {
    let step = "credential-expiry";
    let expires = ice["expires_at"]
        .as_str()
        .and_then(crate::time::parse_rfc3339)
        .and_then(|t| i64::try_from(t).ok());
    let ttl = ice["ttl_secs"].as_i64();
    let (Some(expires), Some(ttl)) = (expires, ttl) else {
        report.fail(
            step,
            started,
            "ice.expires_at or ice.ttl_secs is missing or malformed",
            "assist's answer is not what a CommuCat daemon sends: a proxy in front?",
        );
        return;
    };
    let left = expires - local_now(options);
    let off = left - ttl;
    if off.abs() <= MAX_SKEW_SECS {
        report.pass(
            step,
            started,
            format!("ICE credential valid for {left} s here (ttl_secs {ttl})"),
        );
    } else {
        report.fail(
            step,
            started,
            format!(
                "ICE credential valid for {left} s by our clock, but ttl_secs is {ttl} ({off:+} s)"
            ),
            clock_hint(),
        );
    }
}

/// An authenticated STUN check of every ICE-lite candidate.
async fn check_stun(report: &mut Report, ice: &serde_json::Value, timeout: Duration) {
    let candidates = ice["lite_candidates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if candidates.is_empty() {
        report.note(
            "stun",
            "no ICE-lite candidates advertised ([ice] lite_enabled = false, or bound to 0.0.0.0 \
             without lite_public_address)",
        );
        return;
    }
    let ufrag = ice["username_fragment"].as_str().unwrap_or_default();
    let password = ice["password"].as_str().unwrap_or_default();
    for candidate in &candidates {
        let started = Instant::now();
        let ip = candidate["ip"].as_str().and_then(|s| s.parse().ok());
        let port = candidate["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok());
        let (Some(ip), Some(port)) = (ip, port) else {
            report.fail(
                "stun",
                started,
                format!("malformed lite candidate {candidate}"),
                "assist's answer is not what a CommuCat daemon sends: a proxy in front?",
            );
            continue;
        };
        let addr = SocketAddr::new(ip, port);
        let step = format!("stun {addr}");
        let creds = Some((format!("{ufrag}:doctor"), password.to_string()));
        match probe_addr(addr, creds, false, timeout, true).await {
            Ok((probe, from)) => {
                if let Some((code, reason)) = &probe.error {
                    report.fail(
                        step,
                        started,
                        format!("error response {code} {reason}"),
                        "the responder refused assist's ICE credentials: nodes behind one URL \
                         need the same [ice] credential_secret, and the clocks must agree",
                    );
                } else if from != addr {
                    report.fail(
                        step,
                        started,
                        format!("the answer came from {from}, not from the advertised {addr}"),
                        "lite_public_address does not match where the responder answers from: \
                         set [ice] lite_public_address to the address clients reach, or bind \
                         lite_bind to that address rather than 0.0.0.0",
                    );
                } else if probe.integrity != Some(true) {
                    report.fail(
                        step,
                        started,
                        "the response's MESSAGE-INTEGRITY does not verify",
                        "something between rewrites STUN, or the responder uses another \
                         credential secret",
                    );
                } else if let Some(reflexive) = probe.reflexive {
                    report.pass(
                        step,
                        started,
                        format!(
                            "authenticated answer, reflexive address {reflexive}, rtt {:.1} ms",
                            probe.rtt.as_secs_f64() * 1e3
                        ),
                    );
                } else {
                    report.fail(
                        step,
                        started,
                        "the answer has no XOR-MAPPED-ADDRESS",
                        "this is not a CommuCat responder",
                    );
                }
            }
            Err(ProbeError::Timeout { .. }) => report.fail(
                step,
                started,
                format!("no STUN answer from {addr} in {timeout:?}"),
                "the STUN port is closed or UDP is filtered, or [ice] lite_public_address \
                 advertises an address the responder does not listen on",
            ),
            Err(e) => report.fail(
                step,
                started,
                e.to_string(),
                "a local socket error: can this host send UDP?",
            ),
        }
    }
}

/// Allocation, a packet relayed to ourselves, and a refresh on every UDP TURN URL.
async fn check_turn(report: &mut Report, ice: &serde_json::Value, timeout: Duration) {
    let servers = ice["servers"].as_array().cloned().unwrap_or_default();
    if servers.is_empty() {
        report.note(
            "turn",
            "no TURN servers in assist ([[ice.turn]] not configured)",
        );
        return;
    }
    for server in &servers {
        let username = server["username"].as_str().unwrap_or_default();
        let credential = server["credential"].as_str().unwrap_or_default();
        let urls = server["urls"].as_array().cloned().unwrap_or_default();
        for url in urls {
            let url = url.as_str().unwrap_or_default();
            let step = format!("turn {url}");
            let started = Instant::now();
            let parsed = match TurnUrl::parse(url) {
                Ok(p) => p,
                Err(e) => {
                    report.fail(
                        step,
                        started,
                        format!("unusable URL: {e}"),
                        "fix [[ice.turn]] urls",
                    );
                    continue;
                }
            };
            if parsed.secure || parsed.transport.as_deref().is_some_and(|t| t != "udp") {
                report.note(step, "only UDP TURN is checked (tcp/tls skipped)");
                continue;
            }
            match relay_to_self(&parsed, username, credential, timeout).await {
                Ok(detail) => report.pass(step, started, detail),
                Err((detail, hint)) => report.fail(step, started, detail, hint),
            }
        }
    }
}

async fn relay_to_self(
    url: &TurnUrl,
    username: &str,
    credential: &str,
    timeout: Duration,
) -> Result<String, (String, String)> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    let server = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, url.port),
        Err(_) => {
            let lookup = tokio::net::lookup_host((host, url.port));
            match tokio::time::timeout(left(), lookup).await {
                Ok(Ok(mut addrs)) => addrs.next().ok_or_else(|| {
                    (
                        format!("{host} resolves to no address"),
                        "fix the DNS name in [[ice.turn]] urls".to_string(),
                    )
                })?,
                Ok(Err(e)) => {
                    return Err((
                        format!("cannot resolve {host}: {e}"),
                        "fix the DNS name in [[ice.turn]] urls".into(),
                    ));
                }
                Err(_) => {
                    return Err((
                        format!("resolving {host} timed out"),
                        "DNS is slow or unreachable".into(),
                    ));
                }
            }
        }
    };
    let mut allocation = turn::allocate(server, username, credential, left())
        .await
        .map_err(|e| turn_failure(server, &e))?;
    let relayed = allocation.relayed();
    allocation
        .create_permission(relayed.ip(), left())
        .await
        .map_err(|e| turn_failure(server, &e))?;
    let payload = b"commucat doctor";
    allocation
        .send(relayed, payload)
        .await
        .map_err(|e| turn_failure(server, &e))?;
    let (from, data) = allocation
        .recv(left())
        .await
        .map_err(|e| turn_failure(server, &e))?;
    if from != relayed || data != payload {
        return Err((
            format!(
                "relayed data came back wrong (from {from}, {} bytes)",
                data.len()
            ),
            "the TURN server mangles relayed data".into(),
        ));
    }
    let granted = allocation
        .refresh(600, left())
        .await
        .map_err(|e| turn_failure(server, &e))?;
    let _ = allocation.release(left()).await;
    Ok(format!(
        "allocated {relayed} on {server}, relayed a packet to itself, refreshed ({} s)",
        granted.as_secs()
    ))
}

fn turn_failure(server: SocketAddr, e: &TurnError) -> (String, String) {
    let hint = match e {
        TurnError::Unauthorized { .. } => {
            "the TURN server refused assist's credentials: the daemon's [[ice.turn]] secrets must \
             include coturn's static-auth-secret (use-auth-secret), the realm must match, and the \
             clocks must agree"
        }
        TurnError::Timeout {
            operation: "Data indication",
            ..
        } => {
            "the relay did not deliver a packet to its own relayed address: coturn refuses it as \
             a peer (denied-peer-ip, loopback or private ranges) or the relay ports are filtered"
        }
        TurnError::Timeout { .. } => {
            "no answer from the TURN server: is coturn running and listening on the port of \
             [[ice.turn]] urls, and is UDP open to it?"
        }
        TurnError::Refused { code: 403, .. } => {
            "coturn forbids the relayed address as a peer (denied-peer-ip)"
        }
        TurnError::Refused {
            code: 486 | 508, ..
        } => {
            "coturn is out of allocations or relay ports (user-quota, total-quota, min-port/max-port)"
        }
        TurnError::Refused { .. } => "the TURN server refused the request; see its log",
        _ => "the TURN server's answer is not what RFC 8656 says; see its log",
    };
    (format!("{server}: {e}"), hint.to_string())
}

/// Connects, sends a ping and waits for its pong.
async fn handshake(
    report: &mut Report,
    step: &str,
    base: &str,
    info: &ServerInfo,
    options: ConnectOptions,
) {
    let started = Instant::now();
    let timeout = options.timeout;
    let pq = options.pq;
    let run = async {
        let mut connection = connect_with_info(base, info, options).await?;
        let handshake_time = connection.handshake_time;
        let ping_started = Instant::now();
        connection
            .send(&ClientMessage::Ping { id: 4242.into() })
            .await?;
        loop {
            match connection.recv().await? {
                ServerMessage::Pong { id } if id.as_u64() == Some(4242) => break,
                _ => {}
            }
        }
        let ping = ping_started.elapsed();
        let session_pq = connection.pq;
        let key_version = connection.key_version;
        let _ = connection.close().await;
        Ok::<_, ConnectError>((handshake_time, ping, session_pq, key_version))
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok((handshake_time, ping, session_pq, key_version))) if session_pq == pq => report.pass(
            step,
            started,
            format!(
                "key version {key_version}, handshake {:.1} ms, ping {:.1} ms",
                handshake_time.as_secs_f64() * 1e3,
                ping.as_secs_f64() * 1e3
            ),
        ),
        Ok(Ok((_, _, session_pq, _))) => report.fail(
            step,
            started,
            format!("the session has pq = {session_pq}"),
            "the server did not run the handshake asked for",
        ),
        Ok(Err(e)) => {
            let hint = connect_error_hint(&e);
            report.fail(step, started, format!("{e}: {}", error_chain(&e)), hint);
        }
        Err(_) => report.fail(
            step,
            started,
            format!("no session in {timeout:?}"),
            "the daemon is overloaded, or a proxy does not pass WebSocket traffic",
        ),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

fn connect_error_hint(e: &ConnectError) -> &'static str {
    match e.close_code() {
        Some(4401) => {
            "Noise authentication failed: the prologue (noise.prologue_hex) or the server's keys \
             differ between server-info and the node that answered (several nodes need the same \
             keys)"
        }
        Some(4403) => {
            "the server refuses this kind of handshake: [crypto] require_pq = true refuses \
             classical clients, pq = false refuses hybrid ones"
        }
        Some(4404) => "the Noise key version is unknown or expired: the keys rotated, refetch",
        Some(1008 | 4001 | 4003) => "the access token was refused: pass a valid --access-token",
        Some(_) => "the server closed the session; see its log",
        None => match e {
            ConnectError::WebSocket(text) if text.contains("429") => {
                "refused with 429: this address holds [limits] max_sessions_per_ip sessions or \
                 max_http_connections_per_ip connections, or connects too fast"
            }
            ConnectError::WebSocket(_) => {
                "the WebSocket upgrade of /api/connect failed: a reverse proxy must pass Upgrade \
                 and Connection headers; with [auth] required pass --access-token"
            }
            ConnectError::PqUnavailable => "crypto.pq = false on the server",
            ConnectError::Timeout(_) => "no answer in time: a proxy buffers WebSocket traffic?",
            _ => "see the daemon's log",
        },
    }
}

/// Parses an HTTP date (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`) to unix seconds.
pub fn parse_http_date(text: &str) -> Option<i64> {
    let rest = text.trim().split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let day: u8 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => ::time::Month::January,
        "Feb" => ::time::Month::February,
        "Mar" => ::time::Month::March,
        "Apr" => ::time::Month::April,
        "May" => ::time::Month::May,
        "Jun" => ::time::Month::June,
        "Jul" => ::time::Month::July,
        "Aug" => ::time::Month::August,
        "Sep" => ::time::Month::September,
        "Oct" => ::time::Month::October,
        "Nov" => ::time::Month::November,
        "Dec" => ::time::Month::December,
        _ => return None,
    };
    let year: i32 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let hour: u8 = hms.next()?.parse().ok()?;
    let minute: u8 = hms.next()?.parse().ok()?;
    let second: u8 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" {
        return None;
    }
    let date = ::time::Date::from_calendar_date(year, month, day).ok()?;
    let time = ::time::Time::from_hms(hour, minute, second).ok()?;
    Some(
        ::time::PrimitiveDateTime::new(date, time)
            .assume_utc()
            .unix_timestamp(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn ice_servers_are_checked() {
        let good = serde_json::json!({"ice_servers": [
            {"urls": ["stun:1.2.3.4:3478"]},
            {"urls": ["turn:1.2.3.4:3478"], "username": "u", "credential": "c"}
        ]});
        assert_eq!(check_ice_servers(&good), Ok(2));
        let bad = serde_json::json!({"ice_servers": [{"urls": ["turn:1.2.3.4"]}]});
        assert!(check_ice_servers(&bad).is_err());
        let bad = serde_json::json!({"ice_servers": [{"urls": ["http://x"]}]});
        assert!(check_ice_servers(&bad).is_err());
    }
}
