//! ice/stun
