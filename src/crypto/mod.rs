//! crypto/mod
