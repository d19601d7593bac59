//! The tokio side of one `/api/connect` WebSocket: it moves frames between the socket,
//! the sans-I/O handshake and [`Session`], and the registry. One task reads (and runs
//! the protocol), one task writes (and seals), joined by a small bounded queue: when the
//! queue is full the reader waits, so a client that pipelines faster than it reads is
//! slowed down instead of losing replies.

mod frames;
mod handshake;
mod reader;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocket;
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use super::Hub;
use super::messages::ServerMessage;
use super::registry::Eviction;
use super::session::Session;
use crate::crypto::{Established, Transport};
use crate::state::AppState;

use crate::auth::Grant;
use frames::{Ending, finish_unsplit, linger};
use handshake::{Failure, Labels, handshake};
use reader::Reader;
use writer::write_loop;

/// Messages waiting for the writer, per session. Small: idle sessions must stay cheap.
const OUTBOUND_QUEUE: usize = 16;
/// How many queued messages the writer seals before it flushes the socket.
const WRITE_BATCH: usize = 32;
/// How long a closing side waits for the client's close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Serves one upgraded connection to its end.
pub(super) async fn serve(
    state: Arc<AppState>,
    hub: Arc<Hub>,
    mut socket: WebSocket,
    grant: Grant,
) {
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
    if !grant.admits_device(&established.device_id) {
        // The token binds another device: the handshake proved this one.
        labels.count(&state, "device_mismatch");
        finish_unsplit(socket, Ending::Close(4403, "device not authorized")).await;
        return;
    }
    run_session(state, hub.clone(), socket, *established, labels, deadline).await;
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
    let mut registered = if established.key_confirmed {
        Some(reader.register(&established.device_id).await)
    } else {
        None
    };
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
        if let Some(cluster) = hub.cluster.clone() {
            let (device, generation) = (r.device_id.clone(), r.generation);
            tokio::spawn(async move { cluster.unregister(&device, generation).await });
        }
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
