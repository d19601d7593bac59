//! The hints doctor gives: what a failure most likely means and what to change.

use super::*;

pub(super) fn clock_hint() -> String {
    "synchronise the clocks (NTP: chrony or systemd-timesyncd) on the client and the server: \
     ICE and TURN credentials carry absolute expiry times, so a skewed clock makes them \
     look expired or not yet valid"
        .into()
}

/// A hint for an HTTP connection failure described by `text`.
pub(super) fn connect_hint(text: &str, timed_out: bool) -> String {
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

pub(super) fn status_hint(status: u16) -> String {
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

pub(super) fn signature_hint(e: &Rejected) -> String {
    use crate::client::http::IdentityError;
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

pub(super) fn assist_failure(e: &ClientError, with_token: bool) -> (String, String) {
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

pub(super) fn turn_failure(server: SocketAddr, e: &TurnError) -> (String, String) {
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

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

pub(super) fn connect_error_hint(e: &ConnectError) -> &'static str {
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
