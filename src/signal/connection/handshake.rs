//! Messages 1 to 3 of the hybrid handshake on one connection, and their metrics.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};

use crate::crypto::{
    Established, HandshakeError, Header, Pattern, ServerHandshake, ServerPolicy, ServerStart,
    Version,
};
use crate::metrics::HandshakeLabels;
use crate::signal::Hub;
use crate::state::AppState;
use crate::time::unix_now;

use super::frames::{Ending, receive};

/// Handshake failures, with their metric label and close code.
#[derive(Debug)]
pub(super) enum Failure {
    Handshake(HandshakeError),
    TextFrame,
    TooLarge,
    Timeout,
    Gone,
    Internal,
}

impl Failure {
    pub(super) fn label(&self) -> &'static str {
        match self {
            Self::Handshake(e) => e.label(),
            Self::TextFrame => "text_frame",
            Self::TooLarge => "too_large",
            Self::Timeout => "timeout",
            Self::Gone => "closed",
            Self::Internal => "internal",
        }
    }

    pub(super) fn ending(&self) -> Ending {
        match self {
            Self::Handshake(e) => Ending::Close(e.close_code(), e.label()),
            Self::TextFrame => Ending::Close(4400, "text frame"),
            Self::TooLarge => Ending::Abort(4400, "message too large"),
            Self::Timeout => Ending::Close(4408, "handshake timeout"),
            Self::Gone => Ending::Gone,
            Self::Internal => Ending::Close(1011, "internal error"),
        }
    }
}

/// Labels of the handshake counter, filled in as the header becomes known.
#[derive(Debug, Clone, Copy)]
pub(super) struct Labels {
    pattern: &'static str,
    version: &'static str,
    pq: &'static str,
}

impl Labels {
    pub(super) const UNKNOWN: Self = Self {
        pattern: "unknown",
        version: "unknown",
        pq: "unknown",
    };

    pub(super) fn from_header(h: &Header) -> Self {
        Self {
            pattern: match h.pattern {
                Pattern::Xk => "XK",
                Pattern::Ik => "IK",
            },
            version: match h.version {
                Version::V1 => "1",
                Version::V2 => "2",
            },
            pq: if h.pq { "true" } else { "false" },
        }
    }

    pub(super) fn count(&self, state: &AppState, outcome: &'static str) {
        state
            .metrics
            .handshakes
            .get_or_create(&HandshakeLabels {
                pattern: self.pattern,
                version: self.version,
                pq: self.pq,
                outcome,
            })
            .inc();
    }
}

fn policy(state: &AppState) -> ServerPolicy {
    let c = &state.config;
    ServerPolicy {
        prologue: c.crypto.prologue.as_bytes().to_vec(),
        pq_enabled: c.crypto.pq,
        require_pq: c.crypto.require_pq,
        ttl_seconds: c.session.ttl_seconds,
        keepalive_interval: c.session.keepalive_interval,
    }
}

/// Messages 1 to 3. The CPU-heavy step (`ServerHandshake::start`: X25519, ML-KEM)
/// runs on the blocking pool, bounded by the hub's handshake permits, so HTTP and STUN
/// tasks on the runtime's workers are never held up by a burst of handshakes.
pub(super) async fn handshake(
    state: &Arc<AppState>,
    hub: &Hub,
    socket: &mut WebSocket,
    labels: &mut Labels,
) -> Result<Box<Established>, Failure> {
    let message1 = receive(socket).await?;
    if let Ok(header) = Header::parse(&message1) {
        *labels = Labels::from_header(&header);
    }
    let permit = hub
        .handshake_permits
        .acquire()
        .await
        .map_err(|_| Failure::Internal)?;
    let worker_state = state.clone();
    let started = tokio::task::spawn_blocking(move || {
        // One snapshot: the Noise ring and the KEM key of one keyring.
        let snapshot = worker_state.keys();
        ServerHandshake::start(
            &policy(&worker_state),
            &snapshot.handshake_keys(),
            &message1,
            unix_now(),
            &mut rand::rng(),
        )
    })
    .await
    .map_err(|_| Failure::Internal)?;
    drop(permit);
    let (next, message2) = started.map_err(Failure::Handshake)?;
    socket
        .send(Message::Binary(message2.into()))
        .await
        .map_err(|_| Failure::Gone)?;
    match next {
        ServerStart::Established(established) => Ok(Box::new(established)),
        ServerStart::AwaitingMessage3(responder) => {
            let message3 = receive(socket).await?;
            // One X25519 and a few hashes: cheap enough for the runtime thread.
            responder
                .read_message3(&message3)
                .map(Box::new)
                .map_err(Failure::Handshake)
        }
    }
}
