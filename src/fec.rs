//! fec
