//! ICE: stateless credentials, TURN REST credentials, ICE-lite candidates, the
//! STUN responder and the STUN server around it.

pub mod candidates;
pub mod credentials;
pub mod stun;
pub mod stun_server;
pub mod turn;
