//! Access control (docs/operations.md, "Access control"): static bearer tokens (from the
//! configuration and a tokens file) and HS256 JWTs issued by the application's backend,
//! the way LiveKit access tokens work. A JWT carries `sub` and `exp`, and may bind the
//! session to one device with a `device` claim (the hex static key the handshake proves).
//!
//! Static tokens are compared as SHA-256 digests, in constant time, against every
//! configured token without stopping at a match, so neither timing nor position leaks.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use zeroize::Zeroizing;

use crate::config::{AuthConfig, MIN_AUTH_SECRET_LEN};

/// Longest token accepted from a request; longer ones are refused unread.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Largest tokens file read.
const MAX_TOKENS_FILE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("a bearer token is required")]
    Missing,
    #[error("the token is not valid")]
    Invalid,
    #[error("the token has expired")]
    Expired,
}

/// A setting of `[auth]` that cannot be used (the tokens file, a JWT key); names it.
#[derive(Debug, thiserror::Error)]
#[error("config error: {key}: {reason}")]
pub struct AuthConfigError {
    pub key: &'static str,
    pub reason: String,
}

/// What a valid token grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// The JWT's `sub`; `None` for a static token.
    pub subject: Option<String>,
    /// The device (lowercase hex static key) a JWT binds the session to.
    pub device: Option<String>,
}

impl Grant {
    /// Whether a session whose handshake proved `device_id` may use this grant.
    pub fn admits_device(&self, device_id: &str) -> bool {
        self.device
            .as_deref()
            .is_none_or(|d| d.eq_ignore_ascii_case(device_id))
    }
}

/// The claims of a CommuCat access token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// Checks tokens against the configured static tokens and JWT keys.
pub struct Authorizer {
    required: bool,
    /// Digests of the configured tokens and, swapped on reload, the file's.
    config_tokens: Vec<[u8; 32]>,
    file_tokens: ArcSwap<Vec<[u8; 32]>>,
    tokens_file: Option<PathBuf>,
    jwt_keys: Vec<DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    /// Builds the authorizer, reading the tokens file once.
    pub fn new(config: &AuthConfig) -> Result<Self, AuthConfigError> {
        let file_tokens = match &config.tokens_file {
            Some(path) => read_tokens_file(path)?,
            None => Vec::new(),
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self {
            required: config.required,
            config_tokens: config.tokens.iter().map(|t| digest(t)).collect(),
            file_tokens: ArcSwap::from_pointee(file_tokens),
            tokens_file: config.tokens_file.clone(),
            jwt_keys: config
                .jwt_secrets
                .iter()
                .map(|s| DecodingKey::from_secret(s.as_bytes()))
                .collect::<Result<_, _>>()
                .map_err(|e| AuthConfigError {
                    key: "auth.jwt_secrets",
                    reason: e.to_string(),
                })?,
            validation,
        })
    }

    pub fn is_required(&self) -> bool {
        self.required
    }

    /// Re-reads the tokens file; on failure the tokens in use stay and the error says why.
    /// Returns how many tokens the file now holds.
    pub fn reload(&self) -> Result<usize, AuthConfigError> {
        let Some(path) = &self.tokens_file else {
            return Ok(0);
        };
        let tokens = read_tokens_file(path)?;
        let count = tokens.len();
        self.file_tokens.store(Arc::new(tokens));
        Ok(count)
    }

    /// Decides on a request that presents `token` (or none): no token is fine unless
    /// access control is required; a presented token must be valid.
    pub fn authorize(&self, token: Option<&str>) -> Result<Grant, AuthError> {
        match token {
            None if self.required => Err(AuthError::Missing),
            None => Ok(Grant::default()),
            Some(token) => self.check(token),
        }
    }

    fn check(&self, token: &str) -> Result<Grant, AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Invalid);
        }
        if self.is_static_token(token) {
            return Ok(Grant::default());
        }
        self.check_jwt(token)
    }

    fn is_static_token(&self, token: &str) -> bool {
        let presented = digest(token);
        let file_tokens = self.file_tokens.load();
        let mut found = Choice::from(0);
        for known in self.config_tokens.iter().chain(file_tokens.iter()) {
            found |= known.ct_eq(&presented);
        }
        found.into()
    }

    fn check_jwt(&self, token: &str) -> Result<Grant, AuthError> {
        let mut outcome = Err(AuthError::Invalid);
        for key in &self.jwt_keys {
            match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
                Ok(data) => {
                    let claims = data.claims;
                    if claims.device.as_deref().is_some_and(|d| !is_device_id(d)) {
                        return Err(AuthError::Invalid);
                    }
                    return Ok(Grant {
                        subject: Some(claims.sub),
                        device: claims.device.map(|d| d.to_ascii_lowercase()),
                    });
                }
                Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                    outcome = Err(AuthError::Expired);
                }
                Err(_) => {}
            }
        }
        outcome
    }
}

/// Signs an access token with `secret` (HS256): for `commucat-cli token` and tests; the
/// application's backend does the same with any JWT library.
pub fn issue_token(secret: &[u8], claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret)?,
    )
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn is_device_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One token a line; blank lines and `#` comments are skipped; each token must be at
/// least [`MIN_AUTH_SECRET_LEN`] characters.
fn read_tokens_file(path: &Path) -> Result<Vec<[u8; 32]>, AuthConfigError> {
    let error = |reason: String| AuthConfigError {
        key: "auth.tokens_file",
        reason: format!("{}: {reason}", path.display()),
    };
    let meta = std::fs::metadata(path).map_err(|e| error(e.to_string()))?;
    if meta.len() > MAX_TOKENS_FILE {
        return Err(error("larger than 1 MiB".into()));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?);
    let mut seen = HashSet::new();
    let mut tokens = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let token = line.trim();
        if token.is_empty() || token.starts_with('#') {
            continue;
        }
        if token.len() < MIN_AUTH_SECRET_LEN || token.len() > MAX_TOKEN_LEN {
            return Err(error(format!(
                "line {}: a token must be {MIN_AUTH_SECRET_LEN} to {MAX_TOKEN_LEN} characters",
                n + 1
            )));
        }
        let d = digest(token);
        if seen.insert(d) {
            tokens.push(d);
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests;
