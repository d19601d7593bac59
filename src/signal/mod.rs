//! signal/mod
