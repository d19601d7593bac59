//! Feeds arbitrary bytes to `Session::handle_plaintext` as the plaintexts of one
//! session's transport messages. Byte 0 sets the relay rate; the rest is split at 0xFF
//! (a byte valid UTF-8, hence JSON, never contains) into messages, message i arriving
//! i × 10 ms after the session started. Only time differences matter to a session, so
//! a base instant taken once keeps every run of an input the same.
#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use commucat::signal::messages::{ServerMessage, is_device_id};
use commucat::signal::session::{Action, Session};
use libfuzzer_sys::fuzz_target;

static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);
const DEVICE: &str = "5e1f0a7c5e1f0a7c5e1f0a7c5e1f0a7c5e1f0a7c5e1f0a7c5e1f0a7c5e1f0a7c";
const STEP: Duration = Duration::from_millis(10);
/// Every reply the session writes is a short sentence (serde's message is cut to 200
/// bytes); a reply that grows with the input would be a bug.
const MAX_DETAIL: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Some((&rate, rest)) = data.split_first() else {
        return;
    };
    let base = *BASE;
    let mut session = Session::new(DEVICE.to_string(), u32::from(rate) << 10, base);
    let mut now = base;
    for plaintext in rest.split(|&b| b == 0xFF) {
        match session.handle_plaintext(plaintext, now) {
            Action::Reply(reply) => {
                if let ServerMessage::Error { detail, .. } = &reply {
                    assert!(detail.len() <= MAX_DETAIL, "{detail}");
                }
                assert!(!reply.to_json().is_empty());
            }
            Action::Forward {
                to, relay_bytes, ..
            } => {
                assert!(is_device_id(&to) && to == to.to_ascii_lowercase(), "{to}");
                session.delivered(relay_bytes);
            }
            Action::Lookup { device } => {
                assert!(is_device_id(&device) && device == device.to_ascii_lowercase());
            }
            Action::Certify => {}
        }
        now += STEP;
    }
});
