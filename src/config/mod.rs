//! Configuration: TOML file, `COMMUCAT_<SECTION>_<KEY>` environment overrides,
//! built-in defaults that work on a laptop, and validation that names the bad key.
//!
//! This layer parses and validates values; it decodes no key material and knows no
//! protocol. Key material is decoded once, at start, by the `keys` module.

mod cluster;
mod de;
mod env;
mod secret;
mod turn_url;
mod validate;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use cluster::{ClusterConfig, MAX_NODE_ID_LEN};
use de::{comma_list, normalize_turn_tables, one_or_many, optional_one_or_many, turn_servers};
pub use secret::Secret;
pub use turn_url::TurnUrl;
pub use validate::is_host;

/// Where the daemon looks for its configuration when `--config` is not given.
pub const DEFAULT_PATHS: &[&str] = &["./commucat.toml", "/etc/commucat/commucat.toml"];

/// The `[[transport]]` id of the daemon's own WebSocket path, listed first in assist
/// `transports`; configured transports may not take it.
pub const SERVER_PATH_ID: &str = "commucat-ws";

/// A configuration problem, rendered on one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("config error: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub crypto: CryptoConfig,
    pub ice: IceConfig,
    pub transport: Vec<TransportConfig>,
    pub session: SessionConfig,
    pub presence: PresenceConfig,
    pub pairing: PairingConfig,
    pub device_rotation: DeviceRotationConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    /// `None`: a single node, no Redis (docs/cluster.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
    pub demo: DemoConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub domain: String,
    /// `None` means: `$STATE_DIRECTORY` when systemd sets it, else `./var`.
    pub state_dir: Option<PathBuf>,
    /// Base URL clients use to reach this daemon; derived from `bind` when unset.
    pub public_url: Option<String>,
    /// PEM certificate chain, end-entity first: with `tls_key`, the daemon serves HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Reverse proxies (addresses or CIDRs) whose `X-Forwarded-For` is believed: behind
    /// them, per-source limits key on the client the proxy names.
    pub trusted_proxies: Vec<String>,
    /// Connections from `trusted_proxies` start with a PROXY protocol header (v1 or v2).
    pub proxy_protocol: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            domain: "localhost".into(),
            state_dir: None,
            public_url: None,
            tls_cert: None,
            tls_key: None,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
        }
    }
}

impl ServerConfig {
    /// `trusted_proxies`, parsed (validation has checked them); a bare address is a
    /// single-address network.
    pub fn trusted_proxy_networks(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|s| parse_network(s))
            .collect()
    }

    /// Whether the daemon terminates TLS itself (both files are set; validation ensures
    /// that one is never set without the other).
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    pub fn resolved_state_dir(&self) -> PathBuf {
        if let Some(dir) = &self.state_dir {
            return dir.clone();
        }
        match std::env::var_os("STATE_DIRECTORY") {
            // systemd may pass several colon-separated directories; the first is ours.
            Some(dirs) if !dirs.is_empty() => {
                let dirs = dirs.to_string_lossy().into_owned();
                PathBuf::from(dirs.split(':').next().unwrap_or_default())
            }
            _ => PathBuf::from("./var"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CryptoConfig {
    pub prologue: String,
    pub pq: bool,
    pub require_pq: bool,
    pub pq_kem_public: Option<String>,
    pub pq_kem_secret: Option<Secret>,
    pub rotation_interval: u64,
    pub rotation_grace: u64,
    /// Validity of device certificates issued on `certify`, seconds.
    pub device_cert_ttl: u64,
}

impl Default for CryptoConfig {
    fn default() -> Self {
        Self {
            prologue: "commucat".into(),
            pq: true,
            require_pq: false,
            pq_kem_public: None,
            pq_kem_secret: None,
            rotation_interval: 7 * 86_400,
            rotation_grace: 7 * 86_400,
            device_cert_ttl: 86_400,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IceConfig {
    pub lite_enabled: bool,
    #[serde(deserialize_with = "one_or_many")]
    pub lite_bind: Vec<SocketAddr>,
    #[serde(deserialize_with = "optional_one_or_many")]
    pub lite_public_address: Option<Vec<SocketAddr>>,
    pub credential_ttl: u32,
    pub credential_secret: Option<Secret>,
    pub turn_ttl: u32,
    pub keepalive_interval: u32,
    pub require_integrity: bool,
    pub rate_limit_per_ip: u32,
    pub rate_limit_burst: u32,
    /// Table of the per-source rate limiter: sources beyond this share one bucket.
    pub rate_limit_table_size: u32,
    #[serde(deserialize_with = "turn_servers")]
    pub turn: Vec<TurnServerConfig>,
}

impl IceConfig {
    /// The configured `credential_secret`, decoded: `None` when unset.
    pub fn credential_secret_bytes(&self) -> Result<Option<Zeroizing<[u8; 32]>>, ConfigError> {
        let Some(secret) = &self.credential_secret else {
            return Ok(None);
        };
        let bytes = Zeroizing::new(
            hex::decode(secret.trim())
                .map_err(|_| ConfigError::new("ice.credential_secret", "must be hex"))?,
        );
        let array: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            ConfigError::new(
                "ice.credential_secret",
                format!("must be 32 bytes (64 hex digits), got {}", bytes.len()),
            )
        })?;
        Ok(Some(Zeroizing::new(array)))
    }
}

impl Default for IceConfig {
    fn default() -> Self {
        Self {
            lite_enabled: true,
            lite_bind: vec![SocketAddr::from(([127, 0, 0, 1], 3478))],
            lite_public_address: None,
            credential_ttl: 600,
            credential_secret: None,
            turn_ttl: 600,
            keepalive_interval: 30,
            require_integrity: false,
            rate_limit_per_ip: 50,
            rate_limit_burst: 200,
            rate_limit_table_size: 65_536,
            turn: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TurnServerConfig {
    #[serde(deserialize_with = "comma_list")]
    pub urls: Vec<String>,
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default, skip_serializing)]
    pub secrets: Vec<Secret>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub realm: Option<String>,
}

impl TurnServerConfig {
    /// The secret new credentials are signed with: `secret`, else the first of `secrets`.
    pub fn signing_secret(&self) -> Option<&str> {
        self.secret
            .as_deref()
            .or_else(|| self.secrets.first().map(|s| &**s))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    Websocket,
    Reality,
    Shadowsocks,
    QuicMasque,
    Dns,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Websocket => "websocket",
            Self::Reality => "reality",
            Self::Shadowsocks => "shadowsocks",
            Self::QuicMasque => "quic-masque",
            Self::Dns => "dns",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    pub id: String,
    pub transport: TransportKind,
    pub address: String,
    pub port: u16,
    #[serde(default = "default_priority")]
    pub priority: u32,
    #[serde(default)]
    pub reality_fingerprint: Option<String>,
    #[serde(default)]
    pub domain_fronting: bool,
    #[serde(default)]
    pub protocol_mimicry: bool,
    #[serde(default)]
    pub tor_bridge: bool,
}

fn default_priority() -> u32 {
    100
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    pub ttl_seconds: u64,
    pub keepalive_interval: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            ttl_seconds: 60,
            keepalive_interval: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    pub ttl_seconds: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { ttl_seconds: 30 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairingConfig {
    pub auto_approve: bool,
    pub pairing_ttl: u64,
    pub max_auto_devices: u32,
}

impl Default for PairingConfig {
    fn default() -> Self {
        Self {
            auto_approve: false,
            pairing_ttl: 300,
            max_auto_devices: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceRotationConfig {
    pub enabled: bool,
    pub min_interval_seconds: u64,
    pub proof_ttl_seconds: u64,
}

impl Default for DeviceRotationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            min_interval_seconds: 86_400,
            proof_ttl_seconds: 600,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub token: Option<Secret>,
    /// Serve `/metrics` without a token on a non-loopback address.
    pub public_metrics: bool,
}

/// Shortest static token or JWT secret `[auth]` accepts.
pub const MIN_AUTH_SECRET_LEN: usize = 16;

/// Who may fetch assist (and so TURN credentials) and open sessions
/// (docs/operations.md, "Access control").
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Refuse `/api/p2p/assist` and `/api/connect` without a valid token.
    pub required: bool,
    /// Static bearer tokens.
    #[serde(skip_serializing)]
    pub tokens: Vec<Secret>,
    /// A file of static bearer tokens, one per line (`#` starts a comment); re-read on
    /// SIGHUP.
    pub tokens_file: Option<PathBuf>,
    /// HS256 keys for JWTs issued by the application's backend; all verify, the first is
    /// the one to sign new tokens with.
    #[serde(skip_serializing)]
    pub jwt_secrets: Vec<Secret>,
}

/// `[demo]`: the two-tab WebRTC demo page at `/demo/` (sdk/js/demo, embedded in the
/// binary).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Serve `/demo/`; when off, its routes answer 404 like any unknown path.
    pub enabled: bool,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_sessions: u32,
    pub handshake_timeout_seconds: u64,
    pub connect_rate_per_ip: u32,
    pub connect_burst: u32,
    pub relay_bytes_per_second: u32,
    /// A request head must arrive within this (also the keep-alive idle limit).
    pub http_header_timeout_seconds: u64,
    /// A request body must arrive within this, once its head has.
    pub http_body_timeout_seconds: u64,
    /// A response write, or a session's write, that the peer takes no byte of for this
    /// long closes the connection.
    pub http_write_timeout_seconds: u64,
    /// HTTP connections open at once (WebSocket sessions leave this pool on upgrade).
    pub max_http_connections: u32,
    /// HTTP connections one source may hold (IPv6 per /64; a /48 holds 8 times this).
    pub max_http_connections_per_ip: u32,
    /// Sessions (WebSocket connections) one source may hold, likewise.
    pub max_sessions_per_ip: u32,
    /// Requests per second per source address to the routes that mint credentials
    /// (assist, `/api/turn`, `/api/ice-servers`), and the burst.
    pub assist_rate_per_ip: u32,
    pub assist_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_sessions: 100_000,
            handshake_timeout_seconds: 10,
            connect_rate_per_ip: 20,
            connect_burst: 40,
            relay_bytes_per_second: 256 * 1024,
            http_header_timeout_seconds: 15,
            http_body_timeout_seconds: 15,
            http_write_timeout_seconds: 30,
            max_http_connections: 10_000,
            max_http_connections_per_ip: 256,
            max_sessions_per_ip: 1_000,
            assist_rate_per_ip: 20,
            assist_burst: 40,
        }
    }
}

impl Config {
    /// Loads the configuration the daemon would run with: the file from `explicit`, or the
    /// first of [`DEFAULT_PATHS`] that exists, or built-in defaults; then environment
    /// overrides; then validation.
    pub fn load(explicit: Option<&Path>) -> Result<(Self, Option<PathBuf>), ConfigError> {
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => DEFAULT_PATHS.iter().map(PathBuf::from).find(|p| p.exists()),
        };
        let text = match &path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| {
                ConfigError::new(p.display().to_string(), format!("cannot read: {e}"))
            })?,
            None => String::new(),
        };
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("COMMUCAT_"))
            .collect();
        let config = Self::from_toml_with_env(&text, &env)?;
        Ok((config, path))
    }

    /// Parses `text`, applies `COMMUCAT_*` overrides from `env`, validates.
    pub fn from_toml_with_env(text: &str, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let key = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].lines().count().max(1);
                    format!("line {line}")
                })
                .unwrap_or_else(|| "file".into());
            ConfigError::new(key, first_line(e.message()))
        })?;
        normalize_turn_tables(&mut table);
        env::apply_env_overrides(&mut table, env)?;
        let value = toml::Value::Table(table);
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::new(
                if key == "." { "config".into() } else { key },
                first_line(&e.inner().to_string()),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The base URL clients reach this daemon at, given the address HTTP is bound to.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        match &self.server.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                let host = if bound.ip().is_unspecified() {
                    self.server.domain.clone()
                } else {
                    match bound.ip() {
                        std::net::IpAddr::V4(ip) => ip.to_string(),
                        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                    }
                };
                let scheme = if self.server.tls() { "https" } else { "http" };
                format!("{scheme}://{host}:{}", bound.port())
            }
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or("invalid value")
        .trim()
        .to_string()
}

/// An address or CIDR network, as `trusted_proxies` takes them.
pub(crate) fn parse_network(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}
