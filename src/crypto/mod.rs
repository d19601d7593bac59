//! Hybrid post-quantum handshake (Noise XK/IK + ML-KEM-768) and the encrypted
//! transport that follows it, as sans-I/O state machines (docs/protocol.md §4).
//!
//! [`handshake`] turns handshake messages into [`kdf::SessionKeys`]; [`transport`]
//! seals and opens the JSON messages of the session with them. Nothing here owns a
//! socket, a clock or an RNG: time and randomness are passed in.

pub mod handshake;
pub mod kdf;
#[doc(hidden)]
pub mod testing;
pub mod transport;

pub use handshake::{
    ClientEstablished, ClientHandshake, ClientParams, Established, HandshakeError, Header,
    KemDecapsulationKey, KeyLookupError, Malformed, NoiseStaticKey, Pattern, ServerHandshake,
    ServerHello, ServerKeys, ServerPolicy, ServerStart, Version,
};
pub use kdf::SessionKeys;
pub use transport::{Transport, TransportError, TransportReceiver, TransportSender};
