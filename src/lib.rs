//! CommuCat: P2P assist daemon with a hybrid post-quantum handshake.
//!
//! Modules are layered and import only from their own layer or below
//! (docs/architecture.md):
//!
//! | layer | modules |
//! |---|---|
//! | 0, leaf utilities | [`sys`] (the only unsafe code), [`time`], [`metrics`], [`ratelimit`], [`fec`] |
//! | 1 | [`config`]: parse and validate |
//! | 2 | [`keys`], [`crypto`] (sans-I/O handshake and transport), [`auth`] (access tokens) |
//! | 3 | [`ice`]: credentials, TURN, candidates, the STUN responder and server |
//! | 4 | [`discovery`] (published documents), [`state`], [`cluster`] (Redis: shared keyring, device registry, cross-node routing) |
//! | 5 | [`http`], [`signal`] |
//! | 6 | [`daemon`], [`client`] |

pub mod auth;
pub mod client;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod discovery;
pub mod fec;
pub mod http;
pub mod ice;
pub mod keys;
pub mod metrics;
pub mod ratelimit;
pub mod signal;
pub mod state;
pub mod sys;
pub mod time;
