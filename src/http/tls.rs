//! The server's TLS configuration: the certificate chain and private key read from
//! `[server] tls_cert` and `tls_key`, built into a rustls `ServerConfig` (ring, TLS 1.3
//! and 1.2, ALPN `h2` then `http/1.1`) and held so that a reload swaps it atomically.
//! Connections take the configuration current when they are accepted; a reload changes
//! what new connections get and leaves established ones alone.

mod summary;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};

pub use summary::CertSummary;

use crate::keys::pem::{read_certificates, read_private_key};

/// ALPN protocols offered, in the server's order of preference.
pub const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Why the certificate or key cannot be used. Each names the setting and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls_cert: {}: {reason}", path.display())]
    Cert { path: PathBuf, reason: String },
    #[error("server.tls_key: {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error(
        "server.tls_key: {} does not match the certificate in {} (server.tls_cert)",
        key.display(),
        cert.display()
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot build the TLS configuration: {0}")]
    Build(rustls::Error),
}

impl TlsError {
    /// The configuration key at fault.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Cert { .. } | Self::Build(_) => "server.tls_cert",
            Self::Key { .. } | Self::Mismatch { .. } => "server.tls_key",
        }
    }
}

/// The current TLS configuration, and where it is loaded from.
pub struct ServerTls {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<ServerConfig>,
    summary: ArcSwap<CertSummary>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("certificate", &*self.summary.load())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads both files and builds the configuration.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let (config, summary) = build(cert_path, key_path)?;
        Ok(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: ArcSwap::from(config),
            summary: ArcSwap::from_pointee(summary),
        })
    }

    /// Reads both files again and, if they make a valid configuration, swaps it in for
    /// new connections. On error the configuration in use stays as it was.
    pub fn reload(&self) -> Result<CertSummary, TlsError> {
        let (config, summary) = build(&self.cert_path, &self.key_path)?;
        self.current.store(config);
        self.summary.store(Arc::new(summary.clone()));
        Ok(summary)
    }

    /// The configuration for a connection accepted now.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// The certificate being served.
    pub fn summary(&self) -> CertSummary {
        CertSummary::clone(&self.summary.load())
    }
}

fn build(cert_path: &Path, key_path: &Path) -> Result<(Arc<ServerConfig>, CertSummary), TlsError> {
    let chain = read_chain(cert_path)?;
    let key = read_key(key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key {
            path: key_path.to_path_buf(),
            reason: format!("not a usable private key: {e}"),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::Mismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(TlsError::Cert {
                path: cert_path.to_path_buf(),
                reason: format!("the first certificate is not usable: {e}"),
            });
        }
    }
    let summary = certified
        .end_entity_cert()
        .map(|der| CertSummary::of(der))
        .map_err(TlsError::Build)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Build)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok((Arc::new(config), summary))
}

/// Every certificate of a PEM file, in order (end-entity first).
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    read_certificates(path).map_err(|e| TlsError::Cert {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The first private key of a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    read_private_key(path).map_err(|e| TlsError::Key {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
