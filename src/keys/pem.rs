//! PEM files of TLS certificates and private keys, read with a reason an operator can act
//! on: the daemon's own certificate (`[server] tls_cert`, `tls_key`) and the CA and client
//! certificate it uses towards Redis (`[cluster] redis_*_file`).

use std::io::ErrorKind;
use std::path::Path;

use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM file cannot be used; the caller names the setting and the path.
#[derive(Debug, thiserror::Error)]
pub enum PemFileError {
    #[error("no such file")]
    Missing,
    #[error("cannot be read: permission denied")]
    Denied,
    #[error("cannot be read: {0}")]
    Unreadable(std::io::Error),
    #[error("not valid PEM: {0}")]
    Invalid(pem::Error),
    #[error("holds no certificate (expected PEM \"BEGIN CERTIFICATE\" sections)")]
    NoCertificate,
    #[error(
        "holds no private key (expected an unencrypted PEM \"PRIVATE KEY\", \
         \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" section)"
    )]
    NoKey,
}

impl From<pem::Error> for PemFileError {
    fn from(e: pem::Error) -> Self {
        match e {
            pem::Error::Io(io) if io.kind() == ErrorKind::NotFound => Self::Missing,
            pem::Error::Io(io) if io.kind() == ErrorKind::PermissionDenied => Self::Denied,
            pem::Error::Io(io) => Self::Unreadable(io),
            e => Self::Invalid(e),
        }
    }
}

/// Every certificate of a PEM file, in order; at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemFileError> {
    certificates_in(&read(path)?)
}

/// The first private key of a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemFileError> {
    private_key_in(&read(path)?)
}

/// The bytes of a file, with the same reasons as a PEM error.
pub fn read(path: &Path) -> Result<Vec<u8>, PemFileError> {
    std::fs::read(path).map_err(|e| pem::Error::Io(e).into())
}

/// Every certificate of PEM text `bytes`; at least one.
pub fn certificates_in(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemFileError> {
    let chain = CertificateDer::pem_slice_iter(bytes).collect::<Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err(PemFileError::NoCertificate);
    }
    Ok(chain)
}

/// The first private key of PEM text `bytes`.
pub fn private_key_in(bytes: &[u8]) -> Result<PrivateKeyDer<'static>, PemFileError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => PemFileError::NoKey,
        e => e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_hold_no_usable_pem_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            read_certificates(&missing),
            Err(PemFileError::Missing)
        ));
        let der = dir.path().join("ca.der");
        std::fs::write(&der, [0x30, 0x82, 0x01, 0x0a]).unwrap();
        assert!(matches!(
            read_certificates(&der),
            Err(PemFileError::NoCertificate)
        ));
        assert!(matches!(read_private_key(&der), Err(PemFileError::NoKey)));
    }
}
