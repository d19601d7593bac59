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
pub(super) struct Fetched {
    pub(super) info: ServerInfo,
    pub(super) date: Option<String>,
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

mod checks;
mod hints;
#[cfg(test)]
mod tests;

pub use checks::parse_http_date;
use checks::*;
use hints::*;
