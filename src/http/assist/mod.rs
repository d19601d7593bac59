//! `GET`/`POST /api/p2p/assist`: per-client P2P advice (docs/protocol.md §2 and §3).
//!
//! [`wire`] holds the request and response types, [`request`] reads and validates a
//! request, [`advice`] builds the answer from the shared state, [`handler`] is the route.

mod advice;
mod handler;
mod request;
pub mod wire;

pub use handler::{__path_get_assist, __path_post_assist, get_assist, post_assist};
