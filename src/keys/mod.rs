//! keys/mod
