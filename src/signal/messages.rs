//! The JSON messages of a signaling session (docs/protocol.md §4, "Messages"), shared by the
//! server and the client library. Each one travels as one encrypted transport message.

use serde::{Deserialize, Serialize};

/// Largest `signal` body and decoded `relay` data on the signaling channel.
pub const MAX_SIGNAL_BYTES: usize = 16 * 1024;

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientMessage {
    /// Answered with [`ServerMessage::Pong`] carrying the same `id`.
    Ping { id: serde_json::Number },
    /// Delivered to the session of `to` as [`ServerMessage::Signal`].
    Signal { to: String, body: serde_json::Value },
    /// Delivered to the session of `to` as [`ServerMessage::Relay`]; `data` is base64.
    Relay { to: String, data: String },
    /// Answered with [`ServerMessage::Presence`].
    Lookup { device: String },
    /// Answered with [`ServerMessage::Certificate`].
    Certify {},
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage {
    /// Message 0 of every session.
    Welcome {
        session_id: String,
        device_id: String,
    },
    Pong {
        id: serde_json::Number,
    },
    Signal {
        from: String,
        body: serde_json::Value,
    },
    Relay {
        from: String,
        data: String,
    },
    Presence {
        device: String,
        online: bool,
    },
    Certificate {
        device_id: String,
        not_before: String,
        not_after: String,
        signature_hex: String,
    },
    Error {
        code: ErrorCode,
        detail: String,
    },
}

impl ServerMessage {
    pub fn error(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::Error {
            code,
            detail: detail.into(),
        }
    }

    /// The JSON text (serializing these types cannot fail: every map key is a string).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl ClientMessage {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The `code` of an error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    PeerOffline,
    TooLarge,
    RateLimited,
    BadRequest,
    /// Cluster mode: the device may be on another node, which cannot be asked now
    /// (Redis unreachable). A protocol addition (docs/protocol.md §4.10).
    Unavailable,
}

/// Length of `value` as compact serialized JSON, without building the text.
pub fn serialized_len(value: &serde_json::Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing into a counter cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// Whether `id` looks like a device id: 64 hex digits (an X25519 public key).
pub fn is_device_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_messages_parse_as_in_the_contract() {
        let m: ClientMessage = serde_json::from_str(r#"{"type":"ping","id":7}"#).unwrap();
        assert_eq!(m, ClientMessage::Ping { id: 7.into() });
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"signal","to":"ab","body":{"x":[1]},"extra":1}"#)
                .unwrap();
        assert_eq!(
            m,
            ClientMessage::Signal {
                to: "ab".into(),
                body: json!({"x":[1]})
            }
        );
        let m: ClientMessage = serde_json::from_str(r#"{"type":"certify"}"#).unwrap();
        assert_eq!(m, ClientMessage::Certify {});
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"nope"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"ping"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"[1]"#).is_err());
    }

    #[test]
    fn server_messages_serialize_as_in_the_contract() {
        let text = String::from_utf8(
            ServerMessage::Welcome {
                session_id: "s".into(),
                device_id: "d".into(),
            }
            .to_json(),
        )
        .unwrap();
        assert_eq!(
            text,
            r#"{"type":"welcome","session_id":"s","device_id":"d"}"#
        );
        let text =
            String::from_utf8(ServerMessage::error(ErrorCode::PeerOffline, "no session").to_json())
                .unwrap();
        assert_eq!(
            text,
            r#"{"type":"error","code":"peer_offline","detail":"no session"}"#
        );
        let text = String::from_utf8(
            ServerMessage::Presence {
                device: "d".into(),
                online: true,
            }
            .to_json(),
        )
        .unwrap();
        assert_eq!(text, r#"{"type":"presence","device":"d","online":true}"#);
    }

    #[test]
    fn serialized_len_matches_the_text() {
        let v = json!({"a":"é","b":[1,2.5,null],"c":{"d":true}});
        assert_eq!(serialized_len(&v), serde_json::to_vec(&v).unwrap().len());
    }

    #[test]
    fn device_ids_are_64_hex_digits() {
        assert!(is_device_id(&"a".repeat(64)));
        assert!(!is_device_id(&"a".repeat(63)));
        assert!(!is_device_id(&"g".repeat(64)));
    }
}
