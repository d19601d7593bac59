//! ice/udp
