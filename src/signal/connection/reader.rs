//! The reading half of an established session: opens each message, runs it through
//! the session state machine and the registry, and queues the replies.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocket;
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::SplitStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use crate::cluster::RouteError;
use crate::crypto::{HandshakeError, TransportError, TransportReceiver};
use crate::keys::bundle::sign_hex;
use crate::metrics::ReasonLabels;
use crate::signal::Hub;
use crate::signal::messages::ServerMessage;
use crate::signal::registry::{DeliveryError, Eviction, SessionHandle};
use crate::signal::session::{Action, Session, certificate, delivery_error};
use crate::state::AppState;
use crate::time::unix_now;

use super::Registered;
use super::frames::{Ending, Frame, classify};
use super::handshake::{Failure, Labels};

/// What the reading half works with.
pub(super) struct Reader<'a> {
    pub(super) state: &'a Arc<AppState>,
    pub(super) hub: &'a Hub,
    pub(super) outbound: &'a mpsc::Sender<Bytes>,
    pub(super) labels: Labels,
    pub(super) pq: bool,
    pub(super) handshake_deadline: Instant,
}

impl Reader<'_> {
    /// The handshake is complete and confirmed: count it and make the device reachable,
    /// replacing (4409) any older session of the same device.
    pub(super) async fn register(&self, device_id: &str) -> Registered {
        let m = &self.state.metrics;
        self.labels.count(self.state, "ok");
        m.noise_handshakes.inc();
        if self.pq {
            m.pq_handshakes.inc();
        }
        let (evict_tx, evict) = oneshot::channel();
        let generation = self.hub.registry.next_generation();
        let handle = SessionHandle {
            generation,
            outbound: self.outbound.clone(),
            evict: evict_tx,
        };
        m.sessions_active.inc();
        if let Some(old) = self.hub.registry.insert(device_id, handle) {
            let _ = old.evict.send(Eviction::Replaced);
        }
        // Reachable from the other nodes (an older session there is closed) before the
        // client hears anything; without Redis the session stays local for now.
        if let Some(cluster) = &self.hub.cluster {
            cluster.register(device_id, generation).await;
        }
        Registered {
            device_id: device_id.to_owned(),
            generation,
            evict,
        }
    }

    pub(super) async fn read_loop(
        &mut self,
        stream: &mut SplitStream<WebSocket>,
        receiver: &mut TransportReceiver,
        session: &mut Session,
        registered: &mut Option<Registered>,
    ) -> Ending {
        let idle = Duration::from_secs(self.state.config.session.ttl_seconds);
        loop {
            let confirmed = registered.is_some();
            let mut deadline = Instant::now() + idle;
            if !confirmed {
                deadline = deadline.min(self.handshake_deadline);
            }
            let evicted = async {
                match registered.as_mut() {
                    Some(r) => (&mut r.evict).await.ok(),
                    None => std::future::pending().await,
                }
            };
            let mut shutdown = self.hub.shutdown.clone();
            let item = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => {
                    return Ending::Close(1001, "server shutting down");
                }
                Some(eviction) = evicted => {
                    let Eviction::Replaced = eviction;
                    self.state.metrics.sessions_replaced.inc();
                    return Ending::Close(4409, "replaced by a newer session");
                }
                // The writer ended on its own: the socket failed, e.g. the client
                // stopped reading past the write deadline (`http::stall`). Nothing
                // more can reach the client; it must not stay reachable.
                _ = self.outbound.closed() => return Ending::Gone,
                item = timeout_at(deadline, stream.next()) => item,
            };
            let frame = match item {
                Ok(item) => classify(item),
                Err(_) if confirmed => {
                    self.state.metrics.sessions_timed_out.inc();
                    return Ending::Close(4408, "idle timeout");
                }
                Err(_) => return self.unconfirmed(Failure::Timeout),
            };
            let ciphertext = match frame {
                Frame::Binary(b) => b,
                Frame::Control => continue,
                Frame::Gone if confirmed => return Ending::Gone,
                Frame::Gone => return self.unconfirmed(Failure::Gone),
                Frame::Text if confirmed => return self.violation("text_frame", 4400),
                Frame::Text => return self.unconfirmed(Failure::TextFrame),
                Frame::TooLarge if confirmed => {
                    self.count_violation("too_large");
                    return Ending::Abort(4400, "message too large");
                }
                Frame::TooLarge => return self.unconfirmed(Failure::TooLarge),
            };
            let plaintext = match receiver.open(&ciphertext) {
                Ok(p) => p,
                Err(e) if confirmed => return self.transport_failure(e),
                Err(e) => {
                    let f = match e {
                        TransportError::TooLarge(_) => Failure::TooLarge,
                        _ => Failure::Handshake(HandshakeError::Decrypt),
                    };
                    return self.unconfirmed(f);
                }
            };
            if !confirmed {
                *registered = Some(self.register(session.device_id()).await);
            }
            let action = session.handle_plaintext(&plaintext, std::time::Instant::now());
            if let Err(ending) = self.perform(session, action, idle).await {
                return ending;
            }
        }
    }

    /// An IK session whose keys were never confirmed ends as a failed handshake.
    fn unconfirmed(&self, failure: Failure) -> Ending {
        self.labels.count(self.state, failure.label());
        failure.ending()
    }

    fn count_violation(&self, reason: &'static str) {
        self.state
            .metrics
            .session_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    fn violation(&self, reason: &'static str, code: u16) -> Ending {
        self.count_violation(reason);
        Ending::Close(code, reason)
    }

    fn transport_failure(&self, e: TransportError) -> Ending {
        self.violation(e.label(), e.close_code())
    }

    /// Carries out one action. A reply waits for room in the outbound queue (this is
    /// the backpressure), but not longer than the idle timeout: a client that sends
    /// without ever reading is as good as idle.
    async fn perform(
        &self,
        session: &mut Session,
        action: Action,
        idle: Duration,
    ) -> Result<(), Ending> {
        let reply = match action {
            Action::Reply(message) => message,
            Action::Forward {
                to,
                message,
                relay_bytes,
            } => {
                let is_relay = matches!(message, ServerMessage::Relay { .. });
                match self.deliver(&to, message.to_json().into()).await {
                    Ok(()) => {
                        session.delivered(relay_bytes);
                        let m = &self.state.metrics;
                        if is_relay {
                            m.relay_messages.inc();
                            m.relay_bytes.inc_by(relay_bytes as u64);
                        } else {
                            // Signals share the byte budget; they are not relay bytes.
                            m.signals.inc();
                        }
                        return Ok(());
                    }
                    Err(e) => delivery_error(&to, e),
                }
            }
            Action::Lookup { device } => match self.lookup(&device).await {
                Ok(online) => ServerMessage::Presence { online, device },
                Err(e) => delivery_error(&device, e),
            },
            Action::Certify => self
                .certify(session.device_id())
                .await
                .map_err(|()| Ending::Close(1011, "internal error"))?,
        };
        match tokio::time::timeout(idle, self.outbound.send(reply.to_json().into())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ending::Gone),
            Err(_) => {
                self.state.metrics.sessions_timed_out.inc();
                Err(Ending::Close(4408, "client is not reading"))
            }
        }
    }

    /// Into the session of `to`: on this node through the registry, else (cluster mode)
    /// through its node's channel.
    async fn deliver(&self, to: &str, message: Bytes) -> Result<(), DeliveryError> {
        let message = match self.hub.registry.deliver(to, message.clone()) {
            Err(DeliveryError::Offline) => message,
            other => return other,
        };
        let Some(cluster) = &self.hub.cluster else {
            return Err(DeliveryError::Offline);
        };
        cluster.forward(to, &message).await.map_err(route_error)
    }

    /// Presence: this node's registry first, then (cluster mode) the cluster's.
    async fn lookup(&self, device: &str) -> Result<bool, DeliveryError> {
        if self.hub.registry.is_online(device) {
            return Ok(true);
        }
        match &self.hub.cluster {
            None => Ok(false),
            Some(cluster) => cluster.lookup(device).await.map_err(route_error),
        }
    }

    /// ML-DSA-65 signing takes about a millisecond: off the runtime's workers.
    async fn certify(&self, device_id: &str) -> Result<ServerMessage, ()> {
        let now = unix_now();
        // The identity of this moment's keys signs, and the cache answers only with
        // certificates of that identity (its epoch): after a cluster adopted another
        // keyring none signed by the old one is served.
        let long_term = self.state.keys().long_term.clone();
        let epoch = long_term.epoch;
        if let Some(cached) = self.hub.cached_certificate(device_id, now, epoch) {
            return Ok(cached);
        }
        // Signing shares the handshake permits, so certify floods cannot crowd out
        // handshakes in the blocking pool.
        let _permit = self.hub.handshake_permits.acquire().await.map_err(|_| ())?;
        let state = self.state.clone();
        let device = device_id.to_owned();
        let ttl = state.config.crypto.device_cert_ttl;
        let signed = tokio::task::spawn_blocking(move || {
            certificate(&state.config.server.domain, &device, now, ttl, |text| {
                sign_hex(&long_term.identity().signing, text)
            })
        })
        .await
        .map_err(|_| ())?;
        self.state.metrics.certificates_signed.inc();
        self.hub
            .remember_certificate(device_id, signed.clone(), now, ttl, epoch);
        Ok(signed)
    }
}

fn route_error(e: RouteError) -> DeliveryError {
    match e {
        RouteError::Offline => DeliveryError::Offline,
        RouteError::Busy => DeliveryError::Busy,
        RouteError::Unavailable => DeliveryError::Unavailable,
    }
}
