//! The tokio side of one `/api/connect` WebSocket: it moves frames between the socket,
//! the sans-I/O handshake and [`Session`], and the registry. One task reads (and runs
//! the protocol), one task writes (and seals), joined by a small bounded queue: when the
//! queue is full the reader waits, so a client that pipelines faster than it reads is
//! slowed down instead of losing replies.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use super::Hub;
use super::messages::ServerMessage;
use super::registry::{Eviction, SessionHandle};
use super::session::{Action, Session, certificate, delivery_error};
use crate::crypto::{
    Established, HandshakeError, Header, Pattern, ServerHandshake, ServerPolicy, ServerStart,
    Transport, TransportError, TransportReceiver, TransportSender, Version,
};
use crate::keys::HandshakeKeys;
use crate::keys::bundle::sign_hex;
use crate::metrics::{HandshakeLabels, ReasonLabels};
use crate::state::AppState;
use crate::time::unix_now;

/// Messages waiting for the writer, per session. Small: idle sessions must stay cheap.
const OUTBOUND_QUEUE: usize = 16;
/// How many queued messages the writer seals before it flushes the socket.
const WRITE_BATCH: usize = 32;
/// How long a closing side waits for the client's close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Why a connection ends, as far as the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// Close with this code, without waiting for the client's reply (the decoder is in
    /// the middle of an oversized frame and must not read further).
    Abort(u16, &'static str),
    /// The client closed or vanished: nothing to send.
    Gone,
}

/// Handshake failures, with their metric label and close code.
#[derive(Debug)]
enum Failure {
    Handshake(HandshakeError),
    TextFrame,
    TooLarge,
    Timeout,
    Gone,
    Internal,
}

impl Failure {
    fn label(&self) -> &'static str {
        match self {
            Self::Handshake(e) => e.label(),
            Self::TextFrame => "text_frame",
            Self::TooLarge => "too_large",
            Self::Timeout => "timeout",
            Self::Gone => "closed",
            Self::Internal => "internal",
        }
    }

    fn ending(&self) -> Ending {
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
struct Labels {
    pattern: &'static str,
    version: &'static str,
    pq: &'static str,
}

impl Labels {
    const UNKNOWN: Self = Self {
        pattern: "unknown",
        version: "unknown",
        pq: "unknown",
    };

    fn from_header(h: &Header) -> Self {
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

    fn count(&self, state: &AppState, outcome: &'static str) {
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

/// One frame as the protocol sees it.
enum Frame {
    Binary(Bytes),
    Text,
    TooLarge,
    /// WebSocket ping or pong: proof of life, nothing else.
    Control,
    Gone,
}

fn classify(item: Option<Result<Message, axum::Error>>) -> Frame {
    match item {
        Some(Ok(Message::Binary(b))) => Frame::Binary(b),
        Some(Ok(Message::Text(_))) => Frame::Text,
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Frame::Control,
        Some(Ok(Message::Close(_))) | None => Frame::Gone,
        Some(Err(e)) => match e
            .into_inner()
            .downcast::<tokio_tungstenite::tungstenite::Error>()
        {
            Ok(e) if matches!(*e, tokio_tungstenite::tungstenite::Error::Capacity(_)) => {
                Frame::TooLarge
            }
            _ => Frame::Gone,
        },
    }
}

fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// Serves one upgraded connection to its end.
pub(super) async fn serve(state: Arc<AppState>, hub: Arc<Hub>, mut socket: WebSocket) {
    let Some(_slot) = hub.admit(state.config.limits.max_sessions) else {
        state.metrics.sessions_refused.inc();
        finish_unsplit(socket, Ending::Close(4429, "server full")).await;
        return;
    };
    let deadline =
        Instant::now() + Duration::from_secs(state.config.limits.handshake_timeout_seconds);
    let mut labels = Labels::UNKNOWN;
    let handshake = timeout_at(deadline, handshake(&state, &hub, &mut socket, &mut labels));
    let established = match handshake.await {
        Ok(Ok(established)) => established,
        Ok(Err(failure)) => {
            labels.count(&state, failure.label());
            finish_unsplit(socket, failure.ending()).await;
            return;
        }
        Err(_) => {
            labels.count(&state, Failure::Timeout.label());
            finish_unsplit(socket, Failure::Timeout.ending()).await;
            return;
        }
    };
    run_session(state, hub.clone(), socket, *established, labels, deadline).await;
}

/// Closes a connection that was never split into reader and writer.
async fn finish_unsplit(mut socket: WebSocket, ending: Ending) {
    match ending {
        Ending::Gone => {}
        Ending::Abort(code, reason) => {
            let _ = socket.send(close_message(code, reason)).await;
        }
        Ending::Close(code, reason) => {
            if socket.send(close_message(code, reason)).await.is_ok() {
                linger(&mut socket).await;
            }
        }
    }
}

/// Reads (and discards) until the client answers the close, bounded in time, so the
/// close frame is not lost to a reset caused by unread data.
async fn linger<S>(stream: &mut S)
where
    S: futures_util::Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let until = Instant::now() + CLOSE_LINGER;
    while let Ok(Some(Ok(_))) = timeout_at(until, stream.next()).await {}
}

async fn receive(socket: &mut WebSocket) -> Result<Bytes, Failure> {
    loop {
        match classify(socket.recv().await) {
            Frame::Binary(b) => return Ok(b),
            Frame::Text => return Err(Failure::TextFrame),
            Frame::TooLarge => return Err(Failure::TooLarge),
            Frame::Control => continue,
            Frame::Gone => return Err(Failure::Gone),
        }
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
async fn handshake(
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
        let snapshot = worker_state.keys();
        let keys = HandshakeKeys {
            ring: &snapshot.ring,
            kem: worker_state.kem(),
        };
        ServerHandshake::start(
            &policy(&worker_state),
            &keys,
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

/// What the reader needs once the session is registered.
struct Registered {
    device_id: String,
    generation: u64,
    evict: oneshot::Receiver<Eviction>,
}

/// The established session: welcome, then messages until an ending.
async fn run_session(
    state: Arc<AppState>,
    hub: Arc<Hub>,
    socket: WebSocket,
    established: Established,
    labels: Labels,
    handshake_deadline: Instant,
) {
    let (sink, mut stream) = socket.split();
    let (sender, mut receiver) = Transport::server(&established.keys).split();
    let (outbound, queue) = mpsc::channel::<Bytes>(OUTBOUND_QUEUE);
    let (close_tx, close_rx) = oneshot::channel();
    let writer = tokio::spawn(write_loop(sink, sender, queue, close_rx));

    let welcome = ServerMessage::Welcome {
        session_id: established.session_id.clone(),
        device_id: established.device_id.clone(),
    };
    let mut reader = Reader {
        state: &state,
        hub: &hub,
        outbound: &outbound,
        labels,
        pq: established.pq,
        handshake_deadline,
    };
    // Registered before the welcome leaves, so that once a client has its welcome, its
    // peers can reach it.
    let mut registered = established
        .key_confirmed
        .then(|| reader.register(&established.device_id));
    let ending = if outbound.send(welcome.to_json().into()).await.is_err() {
        Ending::Gone
    } else {
        let mut session = Session::new(
            established.device_id.clone(),
            state.config.limits.relay_bytes_per_second,
            std::time::Instant::now(),
        );
        reader
            .read_loop(&mut stream, &mut receiver, &mut session, &mut registered)
            .await
    };

    if let Some(r) = &registered {
        hub.registry.remove(&r.device_id, r.generation);
        state.metrics.sessions_active.dec();
    }
    let (code, reason, wait_for_reply) = match ending {
        Ending::Close(code, reason) => (Some(code), reason, true),
        Ending::Abort(code, reason) => (Some(code), reason, false),
        Ending::Gone => (None, "", false),
    };
    // The close request goes first: the writer must see it before the queue ends.
    if let Some(code) = code {
        let _ = close_tx.send((code, reason));
    }
    drop(outbound);
    let mut writer = writer;
    if tokio::time::timeout(CLOSE_LINGER, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    } else if wait_for_reply {
        linger(&mut stream).await;
    }
}

struct Reader<'a> {
    state: &'a Arc<AppState>,
    hub: &'a Hub,
    outbound: &'a mpsc::Sender<Bytes>,
    labels: Labels,
    pq: bool,
    handshake_deadline: Instant,
}

impl Reader<'_> {
    /// The handshake is complete and confirmed: count it and make the device reachable,
    /// replacing (4409) any older session of the same device.
    fn register(&self, device_id: &str) -> Registered {
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
        Registered {
            device_id: device_id.to_owned(),
            generation,
            evict,
        }
    }

    async fn read_loop(
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
                *registered = Some(self.register(session.device_id()));
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
                match self.hub.registry.deliver(&to, message.to_json().into()) {
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
            Action::Lookup { device } => ServerMessage::Presence {
                online: self.hub.registry.is_online(&device),
                device,
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

    /// ML-DSA-65 signing takes about a millisecond: off the runtime's workers.
    async fn certify(&self, device_id: &str) -> Result<ServerMessage, ()> {
        // Signing shares the handshake permits, so certify floods cannot crowd out
        // handshakes in the blocking pool.
        let _permit = self.hub.handshake_permits.acquire().await.map_err(|_| ())?;
        let state = self.state.clone();
        let device_id = device_id.to_owned();
        tokio::task::spawn_blocking(move || {
            let c = &state.config;
            certificate(
                &c.server.domain,
                &device_id,
                unix_now(),
                c.crypto.device_cert_ttl,
                |text| sign_hex(&state.static_keys.identity.signing, text),
            )
        })
        .await
        .map_err(|_| ())
    }
}

/// Seals queued messages in order and writes them, batching flushes; on a close request
/// sends the close frame and stops.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut sender: TransportSender,
    mut queue: mpsc::Receiver<Bytes>,
    mut close: oneshot::Receiver<(u16, &'static str)>,
) {
    loop {
        let first = tokio::select! {
            biased;
            request = &mut close => {
                if let Ok((code, reason)) = request {
                    let _ = sink.send(close_message(code, reason)).await;
                }
                return;
            }
            message = queue.recv() => message,
        };
        let Some(first) = first else {
            // Every sender is gone and no close was requested: the client left.
            return;
        };
        let mut next = Some(first);
        let mut batch = 0;
        while let Some(plaintext) = next.take() {
            let ciphertext = match sender.seal(&plaintext) {
                Ok(c) => c,
                Err(TransportError::CounterExhausted) => {
                    let _ = sink.send(close_message(1008, "counter exhausted")).await;
                    return;
                }
                // Replies are bounded well below the limit; reaching it is our bug.
                Err(_) => {
                    let _ = sink.send(close_message(1011, "internal error")).await;
                    return;
                }
            };
            if sink.feed(Message::Binary(ciphertext.into())).await.is_err() {
                return;
            }
            batch += 1;
            if batch < WRITE_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}
