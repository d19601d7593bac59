//! ice/turn
