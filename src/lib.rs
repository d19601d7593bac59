//! CommuCat: P2P assist daemon with a hybrid post-quantum handshake.
//!
//! The module tree mirrors the system: configuration, keys (store and rotation),
//! crypto (key bundle, hybrid handshake, transport), HTTP routes, ICE (credentials and
//! the STUN responder), signaling sessions, FEC planning, metrics and the client side.

pub mod client;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod fec;
pub mod http;
pub mod ice;
pub mod keys;
pub mod metrics;
pub mod ratelimit;
pub mod signal;
pub mod state;
pub mod sys;
pub mod timefmt;
