//! The writing half of an established session.

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::SinkExt as _;
use futures_util::stream::SplitSink;
use tokio::sync::{mpsc, oneshot};

use crate::crypto::{TransportError, TransportSender};

use super::WRITE_BATCH;
use super::frames::close_message;

/// Seals queued messages in order and writes them, batching flushes; on a close request
/// sends the close frame and stops.
pub(super) async fn write_loop(
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
            if let Err(e) = sink.feed(Message::Binary(ciphertext.into())).await {
                tracing::debug!(error = %e, "session write failed");
                return;
            }
            batch += 1;
            if batch < WRITE_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if let Err(e) = sink.flush().await {
            tracing::debug!(error = %e, "session write failed");
            return;
        }
    }
}
