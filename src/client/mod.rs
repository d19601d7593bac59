//! The client side: what `commucat-cli` and client developers use to talk to a daemon.

pub mod connect;
pub mod doctor;
pub mod http;
pub mod refresh;
pub mod stun;
pub mod stun_load;
pub mod turn;
