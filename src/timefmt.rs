//! timefmt
