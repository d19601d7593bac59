//! ICE: stateless credentials, TURN REST credentials, ICE-lite candidates and the
//! STUN responder.

pub mod candidates;
pub mod credentials;
pub mod stun;
pub mod turn;
pub mod udp;
