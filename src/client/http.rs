//! HTTP client for discovery and assist, verifying the key bundle signature.

use std::sync::Once;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::discovery::ServerInfo;
use crate::keys::bundle::{VerifyError, decode_verifying_key, verify_hex};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {0:?}: expected http://host:port or https://host:port")]
    Url(String),
    #[error("cannot reach {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{url} answered HTTP {status}: {detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{url} gave an answer that is not what a CommuCat server sends: {reason}")]
    BadAnswer { url: String, reason: String },
    #[error("key bundle signature of {url} does not verify: {source}")]
    Signature { url: String, source: VerifyError },
    #[error("{url} does not prove the pinned server identity: {reason}")]
    Identity { url: String, reason: IdentityError },
}

/// Why a document is not accepted as coming from the expected server.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// `device_ca_public` and `post_quantum.signature_public_hex` must be one key: a
    /// document naming two could show a pinned key while being signed by another.
    #[error("device_ca_public and post_quantum.signature_public_hex differ")]
    FieldsDiffer,
    #[error("its identity key is not the pinned one")]
    NotPinned,
    #[error("the pinned identity is not an ML-DSA-65 public key in hex")]
    BadPin,
}

fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider was installed first, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An HTTP client with bounded timeouts and TLS through rustls (ring).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, ClientError> {
    install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .map_err(|e| ClientError::Connect {
            url: String::new(),
            reason: e.to_string(),
        })
}

/// `base` with a path appended; `base` must be an http(s) URL.
pub fn join(base: &str, path: &str) -> Result<String, ClientError> {
    let url = url::Url::parse(base).map_err(|_| ClientError::Url(base.into()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ClientError::Url(base.into()));
    }
    Ok(format!("{}{path}", base.trim_end_matches('/')))
}

/// The error and its chain of sources on one line.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn decode<T: DeserializeOwned>(
    url: &str,
    response: reqwest::Response,
) -> Result<T, ClientError> {
    let status = response.status();
    let body = response.bytes().await.map_err(|e| ClientError::Connect {
        url: url.into(),
        reason: describe(&e),
    })?;
    if !status.is_success() {
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
        return Err(ClientError::Status {
            url: url.into(),
            status: status.as_u16(),
            detail,
        });
    }
    serde_json::from_slice(&body).map_err(|e| ClientError::BadAnswer {
        url: url.into(),
        reason: e.to_string(),
    })
}

/// Fetches `/api/server-info` and verifies its key bundle signature: with the pinned
/// identity `pin` (hex ML-DSA-65 key) when given, else with the key the document names.
pub async fn fetch_server_info(
    client: &reqwest::Client,
    base: &str,
    pin: Option<&str>,
) -> Result<ServerInfo, ClientError> {
    let url = join(base, "/api/server-info")?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| ClientError::Connect {
            url: url.clone(),
            reason: describe(&e),
        })?;
    let info: ServerInfo = decode(&url, response).await?;
    match verify_server_info(&info, pin) {
        Ok(()) => Ok(info),
        Err(Rejected::Identity(reason)) => Err(ClientError::Identity { url, reason }),
        Err(Rejected::Signature(source)) => Err(ClientError::Signature { url, source }),
    }
}

/// Why [`verify_server_info`] rejected a document.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejected {
    #[error(transparent)]
    Identity(IdentityError),
    #[error(transparent)]
    Signature(VerifyError),
}

/// Recomputes the key bundle from the document and checks its ML-DSA-65 signature with
/// the verifying key: the pinned one when given (so the pin is the key that verifies,
/// not a field compared on the side), else the document's own, which then proves only
/// that the document is self-consistent. Either way the document's two identity fields
/// must name the same key.
pub fn verify_server_info(info: &ServerInfo, pin: Option<&str>) -> Result<(), Rejected> {
    let pq = &info.post_quantum;
    if !info
        .device_ca_public
        .eq_ignore_ascii_case(&pq.signature_public_hex)
    {
        return Err(Rejected::Identity(IdentityError::FieldsDiffer));
    }
    let verifying_hex = match pin.map(str::trim) {
        Some(pin) => {
            if !pin.eq_ignore_ascii_case(&pq.signature_public_hex) {
                return Err(Rejected::Identity(IdentityError::NotPinned));
            }
            pin
        }
        None => pq.signature_public_hex.as_str(),
    };
    let vk = decode_verifying_key(&verifying_hex.to_ascii_lowercase()).map_err(|e| match pin {
        Some(_) => Rejected::Identity(IdentityError::BadPin),
        None => Rejected::Signature(e),
    })?;
    let text = info.key_bundle_text();
    verify_hex(&vk, text.as_bytes(), &pq.key_bundle_signature_hex).map_err(Rejected::Signature)
}

/// `GET /api/p2p/assist`, or `POST` with `request` as the JSON body; `access_token` for
/// a daemon with `[auth] required`.
pub async fn fetch_assist(
    client: &reqwest::Client,
    base: &str,
    request: Option<&serde_json::Value>,
    access_token: Option<&str>,
) -> Result<serde_json::Value, ClientError> {
    let url = join(base, "/api/p2p/assist")?;
    let mut builder = match request {
        Some(body) => client.post(&url).json(body),
        None => client.get(&url),
    };
    if let Some(token) = access_token {
        builder = builder.bearer_auth(token);
    }
    let response = builder.send().await.map_err(|e| ClientError::Connect {
        url: url.clone(),
        reason: describe(&e),
    })?;
    let value: serde_json::Value = decode(&url, response).await?;
    for field in ["noise", "ice", "transports", "multipath", "security"] {
        if value.get(field).is_none() {
            return Err(ClientError::BadAnswer {
                url,
                reason: format!("missing field {field:?}"),
            });
        }
    }
    Ok(value)
}
