//! What can go wrong with the server's keys.

use super::store::KeyStoreError;
use crate::config::ConfigError;

/// A configured key (`[crypto] pq_kem_*`) that cannot be used; names its setting.
#[derive(Debug, thiserror::Error)]
#[error("config error: {key}: {message}")]
pub struct ConfiguredKeyError {
    pub key: &'static str,
    pub message: String,
}

impl ConfiguredKeyError {
    pub(crate) fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

/// Loading, generating, rotating or persisting keys failed.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Store(#[from] KeyStoreError),
    #[error(transparent)]
    Configured(#[from] ConfiguredKeyError),
    /// A configured secret that is not well formed (validation normally catches it first).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `commucat cluster import` found no single-node keys to import.
    #[error("{0}")]
    Import(String),
}
