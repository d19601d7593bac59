//! ice/candidates
