//! client/mod
pub mod stun;
pub mod stun_load;
