//! What nodes publish on each other's channel (sans-I/O). One byte of kind, then:
//!
//! ```text
//! 'D' deliver: request id (u64 BE) || origin length (u8) || origin node id || device (32 raw bytes) || message JSON
//! 'A' answer:  request id (u64 BE) || outcome (u8: 0 delivered, 1 offline, 2 busy)
//! 'E' evict:   device (32 raw bytes) || generation (ASCII decimal)
//! ```
//!
//! `E` is written by a Lua script in Redis (the registration script), hence its decimal
//! generation. Anything that does not parse is dropped and counted by the caller.

use bytes::Bytes;

/// Where a delivery ended on the target node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// No live session for the device on that node.
    Offline,
    /// The session's outbound queue is full.
    Busy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Deliver {
        request: u64,
        origin: String,
        device: [u8; 32],
        message: Bytes,
    },
    Answer {
        request: u64,
        outcome: Outcome,
    },
    Evict {
        device: [u8; 32],
        generation: u64,
    },
}

pub fn deliver(request: u64, origin: &str, device: &[u8; 32], message: &[u8]) -> Vec<u8> {
    let origin = &origin.as_bytes()[..origin.len().min(255)];
    let mut out = Vec::with_capacity(1 + 8 + 1 + origin.len() + 32 + message.len());
    out.push(b'D');
    out.extend_from_slice(&request.to_be_bytes());
    out.push(origin.len() as u8);
    out.extend_from_slice(origin);
    out.extend_from_slice(device);
    out.extend_from_slice(message);
    out
}

pub fn answer(request: u64, outcome: Outcome) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    out.push(b'A');
    out.extend_from_slice(&request.to_be_bytes());
    out.push(match outcome {
        Outcome::Delivered => 0,
        Outcome::Offline => 1,
        Outcome::Busy => 2,
    });
    out
}

/// The evict frame, as the registration script also writes it.
#[cfg(test)]
pub fn evict(device: &[u8; 32], generation: u64) -> Vec<u8> {
    let mut out = vec![b'E'];
    out.extend_from_slice(device);
    out.extend_from_slice(generation.to_string().as_bytes());
    out
}

fn u64_at(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

fn device_at(b: &[u8]) -> Option<[u8; 32]> {
    b.get(..32)?.try_into().ok()
}

pub fn parse(payload: &Bytes) -> Option<Frame> {
    let (&kind, rest) = payload.split_first()?;
    match kind {
        b'D' => {
            let request = u64_at(rest)?;
            let origin_len = usize::from(*rest.get(8)?);
            let origin = rest.get(9..9 + origin_len)?;
            let origin = std::str::from_utf8(origin).ok()?.to_owned();
            let at = 1 + 9 + origin_len;
            let device = device_at(payload.get(at..)?)?;
            Some(Frame::Deliver {
                request,
                origin,
                device,
                message: payload.slice(at + 32..),
            })
        }
        b'A' => {
            let request = u64_at(rest)?;
            let outcome = match rest.get(8)? {
                0 => Outcome::Delivered,
                1 => Outcome::Offline,
                2 => Outcome::Busy,
                _ => return None,
            };
            (rest.len() == 9).then_some(Frame::Answer { request, outcome })
        }
        b'E' => {
            let device = device_at(rest)?;
            let generation = std::str::from_utf8(rest.get(32..)?).ok()?.parse().ok()?;
            Some(Frame::Evict { device, generation })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let dev = [7u8; 32];
        let d = Bytes::from(deliver(9, "node-a", &dev, br#"{"type":"signal"}"#));
        assert_eq!(
            parse(&d),
            Some(Frame::Deliver {
                request: 9,
                origin: "node-a".into(),
                device: dev,
                message: Bytes::from_static(br#"{"type":"signal"}"#),
            })
        );
        let a = Bytes::from(answer(9, Outcome::Busy));
        assert_eq!(
            parse(&a),
            Some(Frame::Answer {
                request: 9,
                outcome: Outcome::Busy
            })
        );
        let e = Bytes::from(evict(&dev, 12345));
        assert_eq!(
            parse(&e),
            Some(Frame::Evict {
                device: dev,
                generation: 12345
            })
        );
    }

    #[test]
    fn garbage_does_not_parse() {
        for bad in [
            &b""[..],
            b"X",
            b"D\0\0",
            b"A\0\0\0\0\0\0\0\x01\x09",
            b"E short",
            b"Dxxxxxxxx\xff",
        ] {
            assert_eq!(parse(&Bytes::copy_from_slice(bad)), None, "{bad:?}");
        }
    }
}
