//! The hybrid handshake of docs/protocol.md §4 as two sans-I/O state machines.
//!
//! Server: [`ServerHandshake::start`] takes message 1 and returns message 2, plus either
//! the finished session (IK) or a state waiting for message 3 (XK,
//! [`ServerHandshake::read_message3`]). Client: [`ClientHandshake::new`] builds message 1,
//! [`ClientHandshake::read_message2`] returns the server hello, message 3 (XK) and the keys.
//!
//! Noise runs through `snow` with a resolver of our own (`HandshakeResolver`) so that
//! every random input comes from the caller's RNG (known-answer tests fix them all) and
//! so that the server's static public key is not recomputed on every handshake.
//!
//! Replays: a replayed message 1 starts a fresh responder with a fresh ephemeral key. For
//! XK it cannot complete, since message 3 needs the client's ephemeral and static secrets;
//! the session layer's handshake timeout (4408) ends it. For IK the server reaches
//! [`Established`] after message 1, but whoever replayed it cannot read message 2 or send
//! a valid transport message; [`Established::key_confirmed`] is therefore false for IK and
//! the session layer must not let such a session displace another one until the first
//! client message has opened.
//!
//! Where §4 is silent, this module chooses:
//! - a Noise message that `snow` cannot frame (too short, or over 65535 bytes) is 4400;
//! - an `ek_e` that fails the FIPS 203 encapsulation-key check is a malformed payload, 4400;
//! - an X25519 result of all zeros (a low-order peer key) fails like authentication, 4401;
//! - the message 3 payload is compared byte for byte: empty or exactly `{}`;
//! - the client accepts message 2 only if its JSON parses (unknown fields ignored), the
//!   `session_id` is 32 lowercase hex characters, and `pq`/`key_version` echo its header;
//! - `session_id` is 16 bytes of the handshake RNG, hex encoded.
//!
//! Modules by job: `header` (the clear header), `server` and `client` (the two state
//! machines), `pq` (ML-KEM fields and operations), `noise` (the `snow` calls both sides
//! share), `resolver` (the `snow` resolver), `hello` (the message 2 JSON), `keys` (what
//! the server's key store provides) and `error`.

mod client;
mod error;
mod header;
mod hello;
mod keys;
mod noise;
mod pq;
mod resolver;
mod server;

pub use client::{ClientEstablished, ClientHandshake, ClientParams};
pub use error::{HandshakeError, Malformed};
pub use header::{Header, Pattern, Version};
pub use hello::ServerHello;
pub use keys::{KeyLookupError, NoiseStaticKey, ServerKeys};
pub use pq::KemDecapsulationKey;
pub use server::{Established, ServerHandshake, ServerPolicy, ServerStart};

/// Prologue used when the configuration sets none.
pub const DEFAULT_PROLOGUE: &[u8] = b"commucat";

#[cfg(test)]
mod tests;
