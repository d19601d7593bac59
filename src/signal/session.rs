//! One signaling session as a sans-I/O state machine: it takes the plaintext of each
//! client transport message and the current time, and says what to do. The tokio layer
//! (`connection`) performs the actions: replies, deliveries through the registry,
//! presence lookups and certificate signing.

use std::time::Instant;

use base64::Engine as _;

use super::limits::TokenBucket;
use super::messages::{
    ClientMessage, ErrorCode, MAX_SIGNAL_BYTES, ServerMessage, is_device_id, serialized_len,
};
use super::registry::DeliveryError;
use crate::keys::bundle::device_certificate_text;
use crate::time::rfc3339;

/// What the session asks its I/O layer to do for one client message.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this to the client.
    Reply(ServerMessage),
    /// Deliver `message` to the session of device `to`; on success call
    /// [`Session::delivered`] with `relay_bytes`, on failure reply with
    /// [`delivery_error`].
    Forward {
        to: String,
        message: ServerMessage,
        relay_bytes: usize,
    },
    /// Answer with [`ServerMessage::Presence`] from the live registry.
    Lookup { device: String },
    /// Answer with a certificate for this session's device (see [`certificate`]).
    Certify,
}

/// Per-session protocol state: the device, its relay byte budget and its `certify`
/// budget.
#[derive(Debug)]
pub struct Session {
    device_id: String,
    relay_budget: TokenBucket,
    relay_rate: f64,
    certify_budget: TokenBucket,
}

/// `certify` requests a session may make at once, and how fast the allowance refills:
/// a certificate lives for hours, so a client needs one now and then, not a stream.
const CERTIFY_BURST: f64 = 3.0;
const CERTIFY_PER_SECOND: f64 = 1.0 / 30.0;

/// Longest `detail` of a `bad_request` reply.
const MAX_DETAIL: usize = 200;

impl Session {
    /// `relay_bytes_per_second` is the relay rate; the burst is one second's worth.
    pub fn new(device_id: String, relay_bytes_per_second: u32, now: Instant) -> Self {
        let relay_rate = f64::from(relay_bytes_per_second);
        Self {
            device_id,
            relay_budget: TokenBucket::full(relay_rate, now),
            relay_rate,
            certify_budget: TokenBucket::full(CERTIFY_BURST, now),
        }
    }

    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The plaintext of one client transport message.
    pub fn handle_plaintext(&mut self, plaintext: &[u8], now: Instant) -> Action {
        match serde_json::from_slice::<ClientMessage>(plaintext) {
            Ok(message) => self.handle(message, now),
            Err(e) => {
                // serde quotes the offending input; keep the reply small whatever was sent.
                let mut detail = format!("not a valid message: {e}");
                if detail.len() > MAX_DETAIL {
                    let cut = (0..=MAX_DETAIL)
                        .rev()
                        .find(|i| detail.is_char_boundary(*i))
                        .unwrap_or(0);
                    detail.truncate(cut);
                    detail.push('…');
                }
                Action::Reply(ServerMessage::error(ErrorCode::BadRequest, detail))
            }
        }
    }

    pub fn handle(&mut self, message: ClientMessage, now: Instant) -> Action {
        match message {
            ClientMessage::Ping { id } => Action::Reply(ServerMessage::Pong { id }),
            ClientMessage::Signal { to, body } => self.signal(to, body, now),
            ClientMessage::Relay { to, data } => self.relay(to, data, now),
            ClientMessage::Lookup { device } => match device_key(&device) {
                Some(device) => Action::Lookup { device },
                None => bad_device("device"),
            },
            ClientMessage::Certify {} => self.certify(now),
        }
    }

    fn certify(&mut self, now: Instant) -> Action {
        if self
            .certify_budget
            .take(1.0, CERTIFY_PER_SECOND, CERTIFY_BURST, now)
        {
            Action::Certify
        } else {
            Action::Reply(ServerMessage::error(
                ErrorCode::RateLimited,
                "certify: at most 3 at once, then one every 30 s; a certificate lasts hours",
            ))
        }
    }

    /// A relay of `relay_bytes` was delivered: only delivered bytes use the budget.
    pub fn delivered(&mut self, relay_bytes: usize) {
        if relay_bytes > 0 {
            self.relay_budget.charge(relay_bytes as f64);
        }
    }

    /// Signals draw on the same byte budget as relays: otherwise a signal body would be
    /// an unmetered relay.
    fn signal(&mut self, to: String, body: serde_json::Value, now: Instant) -> Action {
        let Some(to) = device_key(&to) else {
            return bad_device("to");
        };
        let len = serialized_len(&body);
        if len > MAX_SIGNAL_BYTES {
            return Action::Reply(ServerMessage::error(
                ErrorCode::TooLarge,
                format!("signal body of {len} bytes exceeds {MAX_SIGNAL_BYTES}"),
            ));
        }
        let (rate, burst) = (self.relay_rate, self.relay_rate);
        if !self.relay_budget.has(len as f64, rate, burst, now) {
            return Action::Reply(ServerMessage::error(
                ErrorCode::RateLimited,
                format!(
                    "signal and relay rate limit of {} bytes per second",
                    self.relay_rate
                ),
            ));
        }
        Action::Forward {
            to,
            message: ServerMessage::Signal {
                from: self.device_id.clone(),
                body,
            },
            relay_bytes: len,
        }
    }

    fn relay(&mut self, to: String, data: String, now: Instant) -> Action {
        let Some(to) = device_key(&to) else {
            return bad_device("to");
        };
        // Longest base64 text (with padding) that can decode to MAX_SIGNAL_BYTES.
        const MAX_ENCODED: usize = MAX_SIGNAL_BYTES.div_ceil(3) * 4;
        if data.len() > MAX_ENCODED {
            return too_large_relay(data.len() / 4 * 3);
        }
        let decoded = match base64::engine::general_purpose::STANDARD.decode(&data) {
            Ok(bytes) => bytes.len(),
            Err(_) => {
                return Action::Reply(ServerMessage::error(
                    ErrorCode::BadRequest,
                    "relay data is not standard base64",
                ));
            }
        };
        if decoded > MAX_SIGNAL_BYTES {
            return too_large_relay(decoded);
        }
        let (rate, burst) = (self.relay_rate, self.relay_rate);
        if !self.relay_budget.has(decoded as f64, rate, burst, now) {
            return Action::Reply(ServerMessage::error(
                ErrorCode::RateLimited,
                format!("relay rate limit of {} bytes per second", self.relay_rate),
            ));
        }
        Action::Forward {
            to,
            message: ServerMessage::Relay {
                from: self.device_id.clone(),
                data,
            },
            relay_bytes: decoded,
        }
    }
}

/// The error reply for a failed delivery to `to`.
pub fn delivery_error(to: &str, error: DeliveryError) -> ServerMessage {
    match error {
        DeliveryError::Offline => {
            ServerMessage::error(ErrorCode::PeerOffline, format!("{to} has no session"))
        }
        DeliveryError::Busy => ServerMessage::error(
            ErrorCode::RateLimited,
            format!("{to} is not reading fast enough; try again"),
        ),
        DeliveryError::Unavailable => ServerMessage::error(
            ErrorCode::Unavailable,
            format!("{to} may be on another node, which cannot be reached now; try again"),
        ),
    }
}

/// The certificate for `device_id` issued at `now_unix`, valid `ttl` seconds, signed by
/// `sign` (ML-DSA-65 by the identity key, hex) over the contract's certificate text.
pub fn certificate(
    domain: &str,
    device_id: &str,
    now_unix: u64,
    ttl: u64,
    sign: impl FnOnce(&[u8]) -> String,
) -> ServerMessage {
    let not_before = rfc3339(now_unix);
    let not_after = rfc3339(now_unix.saturating_add(ttl));
    let text = device_certificate_text(domain, device_id, &not_before, &not_after);
    ServerMessage::Certificate {
        device_id: device_id.to_owned(),
        not_before,
        not_after,
        signature_hex: sign(text.as_bytes()),
    }
}

/// Device ids are lowercase hex; accept either case from clients.
fn device_key(id: &str) -> Option<String> {
    is_device_id(id).then(|| id.to_ascii_lowercase())
}

fn bad_device(field: &str) -> Action {
    Action::Reply(ServerMessage::error(
        ErrorCode::BadRequest,
        format!("{field} must be a device id (64 hex digits)"),
    ))
}

fn too_large_relay(bytes: usize) -> Action {
    Action::Reply(ServerMessage::error(
        ErrorCode::TooLarge,
        format!("relay data of {bytes} bytes exceeds {MAX_SIGNAL_BYTES}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn dev(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn error_code(action: &Action) -> Option<ErrorCode> {
        match action {
            Action::Reply(ServerMessage::Error { code, .. }) => Some(*code),
            _ => None,
        }
    }

    fn relay_of(bytes: usize) -> ClientMessage {
        ClientMessage::Relay {
            to: dev('b'),
            data: base64::engine::general_purpose::STANDARD.encode(vec![7u8; bytes]),
        }
    }

    #[test]
    fn ping_pongs_with_the_same_id() {
        let mut s = Session::new(dev('a'), 262_144, Instant::now());
        let a = s.handle_plaintext(br#"{"type":"ping","id":42}"#, Instant::now());
        assert_eq!(a, Action::Reply(ServerMessage::Pong { id: 42.into() }));
    }

    #[test]
    fn anything_else_is_bad_request() {
        let mut s = Session::new(dev('a'), 262_144, Instant::now());
        let now = Instant::now();
        for text in [
            &b"not json"[..],
            br#"{"type":"hello"}"#,
            br#"{"id":1}"#,
            br#"{"type":"signal","to":"short","body":1}"#,
            br#"{"type":"relay","to":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","data":"***"}"#,
            br#"{"type":"lookup","device":"x"}"#,
        ] {
            assert_eq!(
                error_code(&s.handle_plaintext(text, now)),
                Some(ErrorCode::BadRequest)
            );
        }
    }

    #[test]
    fn signals_draw_on_the_byte_budget() {
        let now = Instant::now();
        let mut s = Session::new(dev('a'), 16 * 1024, now);
        let big = json!("x".repeat(16 * 1024 - 2));
        let first = s.handle(
            ClientMessage::Signal {
                to: dev('b'),
                body: big.clone(),
            },
            now,
        );
        let Action::Forward { relay_bytes, .. } = first else {
            panic!("{first:?}")
        };
        s.delivered(relay_bytes);
        let second = s.handle(
            ClientMessage::Signal {
                to: dev('b'),
                body: big,
            },
            now,
        );
        assert!(
            matches!(
                second,
                Action::Reply(ServerMessage::Error {
                    code: ErrorCode::RateLimited,
                    ..
                })
            ),
            "{second:?}"
        );
    }

    #[test]
    fn signal_forwards_with_from_and_limits_the_body() {
        let mut s = Session::new(dev('a'), 262_144, Instant::now());
        let now = Instant::now();
        let a = s.handle(
            ClientMessage::Signal {
                to: dev('B'),
                body: json!({"sdp":"x"}),
            },
            now,
        );
        assert_eq!(
            a,
            Action::Forward {
                to: dev('b'),
                message: ServerMessage::Signal {
                    from: dev('a'),
                    body: json!({"sdp":"x"})
                },
                relay_bytes: 11
            }
        );
        // 16384 bytes serialized passes, one more does not.
        let fits = json!("x".repeat(MAX_SIGNAL_BYTES - 2));
        let over = json!("x".repeat(MAX_SIGNAL_BYTES - 1));
        let to = dev('b');
        assert!(matches!(
            s.handle(
                ClientMessage::Signal {
                    to: to.clone(),
                    body: fits
                },
                now
            ),
            Action::Forward { .. }
        ));
        assert_eq!(
            error_code(&s.handle(ClientMessage::Signal { to, body: over }, now)),
            Some(ErrorCode::TooLarge)
        );
    }

    #[test]
    fn relay_size_limit_is_on_decoded_bytes() {
        let mut s = Session::new(dev('a'), 262_144, Instant::now());
        let now = Instant::now();
        assert!(matches!(
            s.handle(relay_of(MAX_SIGNAL_BYTES), now),
            Action::Forward { relay_bytes, .. } if relay_bytes == MAX_SIGNAL_BYTES
        ));
        assert_eq!(
            error_code(&s.handle(relay_of(MAX_SIGNAL_BYTES + 1), now)),
            Some(ErrorCode::TooLarge)
        );
    }

    #[test]
    fn relay_rate_counts_only_delivered_bytes() {
        let t0 = Instant::now();
        let mut s = Session::new(dev('a'), 32_768, t0);
        // Burst of one second's worth: two maximal messages, delivered.
        for _ in 0..2 {
            let a = s.handle(relay_of(MAX_SIGNAL_BYTES), t0);
            let Action::Forward { relay_bytes, .. } = a else {
                panic!("{a:?}")
            };
            s.delivered(relay_bytes);
        }
        assert_eq!(
            error_code(&s.handle(relay_of(1), t0)),
            Some(ErrorCode::RateLimited)
        );
        // Refused or undelivered relays use nothing: after half a second, half a budget.
        let t1 = t0 + Duration::from_millis(500);
        assert!(matches!(
            s.handle(relay_of(MAX_SIGNAL_BYTES), t1),
            Action::Forward { .. }
        ));
        assert!(matches!(
            s.handle(relay_of(MAX_SIGNAL_BYTES), t1),
            Action::Forward { .. }
        ));
        s.delivered(MAX_SIGNAL_BYTES);
        assert_eq!(
            error_code(&s.handle(relay_of(1), t1)),
            Some(ErrorCode::RateLimited)
        );
    }

    proptest::proptest! {
        /// Whatever a client sends, the session answers without panicking, and only
        /// with a reply, a forward, a lookup or a certificate request.
        #[test]
        fn arbitrary_plaintext_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut s = Session::new(dev('a'), 262_144, Instant::now());
            let _ = s.handle_plaintext(&bytes, Instant::now());
        }

        #[test]
        fn arbitrary_typed_json_never_panics(
            kind in "(ping|signal|relay|lookup|certify|x)",
            to in "[0-9a-fA-F]{0,70}",
            data in "[A-Za-z0-9+/=]{0,64}",
            id in proptest::num::i64::ANY,
        ) {
            let text = json!({"type": kind, "to": to, "device": to, "data": data, "id": id, "body": {"k": data}});
            let mut s = Session::new(dev('a'), 262_144, Instant::now());
            let action = s.handle_plaintext(text.to_string().as_bytes(), Instant::now());
            if let Action::Forward { to: target, .. } = action {
                proptest::prop_assert!(is_device_id(&target));
                proptest::prop_assert_eq!(target.clone(), target.to_ascii_lowercase());
            }
        }
    }

    #[test]
    fn certificate_signs_the_contract_text() {
        let m = certificate("example.org", &dev('a'), 0, 86_400, |text| {
            String::from_utf8(text.to_vec()).unwrap()
        });
        let ServerMessage::Certificate {
            not_before,
            not_after,
            signature_hex,
            ..
        } = m
        else {
            panic!()
        };
        assert_eq!(not_before, "1970-01-01T00:00:00Z");
        assert_eq!(not_after, "1970-01-02T00:00:00Z");
        assert_eq!(
            signature_hex,
            format!(
                "commucat-device-cert-v1\ndomain=example.org\ndevice={}\nnot_before=1970-01-01T00:00:00Z\nnot_after=1970-01-02T00:00:00Z",
                dev('a')
            )
        );
    }

    #[test]
    fn certify_is_limited_per_session() {
        let t0 = Instant::now();
        let mut s = Session::new(dev('a'), 16_384, t0);
        for _ in 0..3 {
            assert_eq!(s.handle(ClientMessage::Certify {}, t0), Action::Certify);
        }
        assert_eq!(
            error_code(&s.handle(ClientMessage::Certify {}, t0)),
            Some(ErrorCode::RateLimited)
        );
        let later = t0 + std::time::Duration::from_secs(30);
        assert_eq!(s.handle(ClientMessage::Certify {}, later), Action::Certify);
    }
}
