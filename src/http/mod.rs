//! http/mod
