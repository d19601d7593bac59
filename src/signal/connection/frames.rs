//! Frames as the protocol sees them, and how a connection is closed.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::time::{Instant, timeout_at};

use super::CLOSE_LINGER;
use super::handshake::Failure;

/// Why a connection ends, as far as the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// Close with this code, without waiting for the client's reply (the decoder is in
    /// the middle of an oversized frame and must not read further).
    Abort(u16, &'static str),
    /// The client closed or vanished: nothing to send.
    Gone,
}

/// One frame as the protocol sees it.
pub(super) enum Frame {
    Binary(Bytes),
    Text,
    TooLarge,
    /// WebSocket ping or pong: proof of life, nothing else.
    Control,
    Gone,
}

pub(super) fn classify(item: Option<Result<Message, axum::Error>>) -> Frame {
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

pub(super) fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// Closes a connection that was never split into reader and writer.
pub(super) async fn finish_unsplit(mut socket: WebSocket, ending: Ending) {
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
pub(super) async fn linger<S>(stream: &mut S)
where
    S: futures_util::Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let until = Instant::now() + CLOSE_LINGER;
    while let Ok(Some(Ok(_))) = timeout_at(until, stream.next()).await {}
}

pub(super) async fn receive(socket: &mut WebSocket) -> Result<Bytes, Failure> {
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
