//! Configuration: TOML file, `COMMUCAT_<SECTION>_<KEY>` environment overrides,
//! built-in defaults that work on a laptop, and validation that names the bad key.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use zeroize::Zeroizing;

/// Sections that environment overrides may address, longest names first so that
/// `COMMUCAT_DEVICE_ROTATION_ENABLED` is not read as section `device`.
const SECTIONS: &[&str] = &[
    "device_rotation",
    "presence",
    "session",
    "pairing",
    "limits",
    "server",
    "crypto",
    "admin",
    "ice",
    "log",
];

/// Where the daemon looks for its configuration when `--config` is not given.
pub const DEFAULT_PATHS: &[&str] = &["./commucat.toml", "/etc/commucat/commucat.toml"];

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            domain: "localhost".into(),
            state_dir: None,
            public_url: None,
        }
    }
}

impl ServerConfig {
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
    /// HTTP connections open at once (WebSocket sessions leave this pool on upgrade).
    pub max_http_connections: u32,
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
            max_http_connections: 10_000,
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
        apply_env_overrides(&mut table, env)?;
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

    /// Checks the relations serde cannot express; every error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        self.validate_crypto()?;
        self.validate_ice()?;
        self.validate_transports()?;
        self.validate_misc()
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        if self.server.domain.trim().is_empty() {
            return Err(ConfigError::new("server.domain", "must not be empty"));
        }
        if let Some(public_url) = &self.server.public_url {
            let url = url::Url::parse(public_url)
                .map_err(|e| ConfigError::new("server.public_url", format!("not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(ConfigError::new(
                    "server.public_url",
                    "must be an http:// or https:// URL with a host",
                ));
            }
        }
        Ok(())
    }

    fn validate_crypto(&self) -> Result<(), ConfigError> {
        let c = &self.crypto;
        if c.prologue.len() > 256 {
            return Err(ConfigError::new("crypto.prologue", "longer than 256 bytes"));
        }
        if c.require_pq && !c.pq {
            return Err(ConfigError::new(
                "crypto.require_pq",
                "cannot be true while crypto.pq is false",
            ));
        }
        if c.rotation_interval == 0 || c.rotation_interval > u64::from(u32::MAX) {
            return Err(ConfigError::new(
                "crypto.rotation_interval",
                "must be between 1 and 4294967295 seconds",
            ));
        }
        if c.rotation_grace > u64::from(u32::MAX) {
            return Err(ConfigError::new(
                "crypto.rotation_grace",
                "must be at most 4294967295 seconds",
            ));
        }
        if c.device_cert_ttl == 0 || c.device_cert_ttl > 366 * 86_400 {
            return Err(ConfigError::new(
                "crypto.device_cert_ttl",
                "must be between 1 second and 366 days",
            ));
        }
        match (&c.pq_kem_public, &c.pq_kem_secret) {
            (None, None) => {}
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "crypto.pq_kem_secret",
                    "missing: pq_kem_public and pq_kem_secret are given together",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "crypto.pq_kem_public",
                    "missing: pq_kem_public and pq_kem_secret are given together",
                ));
            }
            (Some(public), Some(secret)) => {
                crate::keys::configured_kem(public, secret)?;
            }
        }
        Ok(())
    }

    fn validate_ice(&self) -> Result<(), ConfigError> {
        let ice = &self.ice;
        if ice.lite_enabled && ice.lite_bind.is_empty() {
            return Err(ConfigError::new(
                "ice.lite_bind",
                "needs at least one address",
            ));
        }
        if let Some(addrs) = &ice.lite_public_address
            && let Some(bad) = addrs
                .iter()
                .find(|a| a.ip().is_unspecified() || a.port() == 0)
        {
            return Err(ConfigError::new(
                "ice.lite_public_address",
                format!("{bad} is not a reachable address"),
            ));
        }
        if !(1..=7 * 86_400).contains(&ice.credential_ttl) {
            return Err(ConfigError::new(
                "ice.credential_ttl",
                "must be between 1 and 604800 seconds",
            ));
        }
        ice.credential_secret_bytes()?;
        if !(60..=7 * 86_400).contains(&ice.turn_ttl) {
            return Err(ConfigError::new(
                "ice.turn_ttl",
                "must be between 60 and 604800 seconds",
            ));
        }
        if ice.keepalive_interval == 0 {
            return Err(ConfigError::new(
                "ice.keepalive_interval",
                "must be at least 1",
            ));
        }
        if ice.rate_limit_per_ip == 0 {
            return Err(ConfigError::new(
                "ice.rate_limit_per_ip",
                "must be at least 1",
            ));
        }
        if ice.rate_limit_burst == 0 {
            return Err(ConfigError::new(
                "ice.rate_limit_burst",
                "must be at least 1",
            ));
        }
        if !(16..=16_777_216).contains(&ice.rate_limit_table_size) {
            return Err(ConfigError::new(
                "ice.rate_limit_table_size",
                "must be between 16 and 16777216",
            ));
        }
        for (i, turn) in ice.turn.iter().enumerate() {
            validate_turn(turn, &format!("ice.turn[{i}]"))?;
        }
        Ok(())
    }

    fn validate_transports(&self) -> Result<(), ConfigError> {
        let mut ids = HashSet::new();
        for (i, t) in self.transport.iter().enumerate() {
            let key = format!("transport[{i}]");
            if t.id.is_empty() || t.id.len() > 64 {
                return Err(ConfigError::new(
                    format!("{key}.id"),
                    "must be 1 to 64 characters",
                ));
            }
            if t.id == crate::http::assist::SERVER_PATH_ID || !ids.insert(t.id.as_str()) {
                return Err(ConfigError::new(
                    format!("{key}.id"),
                    format!("duplicate id {:?}", t.id),
                ));
            }
            if !is_host(&t.address) {
                return Err(ConfigError::new(
                    format!("{key}.address"),
                    "must be a hostname or IP address",
                ));
            }
            if t.port == 0 {
                return Err(ConfigError::new(
                    format!("{key}.port"),
                    "must be 1 to 65535",
                ));
            }
            if let Some(fp) = &t.reality_fingerprint {
                if t.transport != TransportKind::Reality {
                    return Err(ConfigError::new(
                        format!("{key}.reality_fingerprint"),
                        "only applies to transport = \"reality\"",
                    ));
                }
                if fp.is_empty() || hex::decode(fp).is_err() {
                    return Err(ConfigError::new(
                        format!("{key}.reality_fingerprint"),
                        "must be non-empty hex",
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_misc(&self) -> Result<(), ConfigError> {
        if self.session.ttl_seconds == 0 {
            return Err(ConfigError::new(
                "session.ttl_seconds",
                "must be at least 1",
            ));
        }
        if self.session.keepalive_interval == 0 {
            return Err(ConfigError::new(
                "session.keepalive_interval",
                "must be at least 1",
            ));
        }
        if self.admin.token.as_deref() == Some("") {
            return Err(ConfigError::new(
                "admin.token",
                "must not be empty when set",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::new("log.level", format!("not a valid filter: {e}")))?;
        let l = &self.limits;
        if l.max_sessions == 0 {
            return Err(ConfigError::new(
                "limits.max_sessions",
                "must be at least 1",
            ));
        }
        if !(1..=3600).contains(&l.http_header_timeout_seconds) {
            return Err(ConfigError::new(
                "limits.http_header_timeout_seconds",
                "must be between 1 and 3600",
            ));
        }
        if l.max_http_connections == 0 {
            return Err(ConfigError::new(
                "limits.max_http_connections",
                "must be at least 1",
            ));
        }
        if !(1..=3600).contains(&l.handshake_timeout_seconds) {
            return Err(ConfigError::new(
                "limits.handshake_timeout_seconds",
                "must be between 1 and 3600",
            ));
        }
        if l.connect_rate_per_ip == 0 || l.connect_burst == 0 {
            return Err(ConfigError::new(
                "limits.connect_rate_per_ip",
                "connect_rate_per_ip and connect_burst must be at least 1",
            ));
        }
        if l.relay_bytes_per_second < 16 * 1024 {
            return Err(ConfigError::new(
                "limits.relay_bytes_per_second",
                "must be at least 16384 (one maximal relay message)",
            ));
        }
        Ok(())
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
                format!("http://{host}:{}", bound.port())
            }
        }
    }
}

fn validate_turn(turn: &TurnServerConfig, key: &str) -> Result<(), ConfigError> {
    if turn.urls.is_empty() {
        return Err(ConfigError::new(
            format!("{key}.urls"),
            "needs at least one URL",
        ));
    }
    for url in &turn.urls {
        crate::ice::turn::TurnUrl::parse(url)
            .map_err(|e| ConfigError::new(format!("{key}.urls"), format!("{url:?}: {e}")))?;
    }
    let has_secret = turn.secret.is_some() || !turn.secrets.is_empty();
    let has_static = turn.username.is_some() || turn.password.is_some();
    if has_secret && has_static {
        return Err(ConfigError::new(
            key.to_string(),
            "give either secret/secrets or username + password, not both",
        ));
    }
    if !has_secret && !has_static {
        return Err(ConfigError::new(
            key.to_string(),
            "needs secret, secrets, or username + password",
        ));
    }
    if has_static && (turn.username.is_none() || turn.password.is_none()) {
        return Err(ConfigError::new(
            key.to_string(),
            "static credentials need both username and password",
        ));
    }
    if turn.secret.as_deref() == Some("") || turn.secrets.iter().any(|s| s.is_empty()) {
        return Err(ConfigError::new(
            format!("{key}.secret"),
            "must not be empty",
        ));
    }
    Ok(())
}

/// True for an IP address or a syntactically valid DNS hostname.
pub fn is_host(s: &str) -> bool {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    s.trim_end_matches('.').split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or("invalid value")
        .trim()
        .to_string()
}

/// The guide writes TURN servers as `[ice.turn.1]`, `[ice.turn.2]`; turn that numbered-table
/// form into the array form `[[ice.turn]]`, ordered by number.
fn normalize_turn_tables(table: &mut toml::Table) {
    let Some(toml::Value::Table(ice)) = table.get_mut("ice") else {
        return;
    };
    let Some(toml::Value::Table(numbered)) = ice.get("turn") else {
        return;
    };
    let mut entries: Vec<(u64, String, toml::Value)> = numbered
        .iter()
        .map(|(k, v)| (k.parse::<u64>().unwrap_or(u64::MAX), k.clone(), v.clone()))
        .collect();
    entries.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let array = entries.into_iter().map(|(_, _, v)| v).collect();
    ice.insert("turn".into(), toml::Value::Array(array));
}

/// Applies `COMMUCAT_<SECTION>_<KEY>=value` overrides. The value is read with the type
/// of the setting's default (bool, integer, list), so `COMMUCAT_CRYPTO_PQ=false` is a
/// boolean while a hex secret stays a string.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    let defaults = toml::Table::try_from(Config::default())
        .map_err(|e| ConfigError::new("defaults", e.to_string()))?;
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("COMMUCAT_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some(section) = SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) else {
            return Err(ConfigError::new(
                name.clone(),
                "unknown setting (no such section; [[ice.turn]] and [[transport]] are set in the file)",
            ));
        };
        let key = &rest[section.len() + 1..];
        if !known_key(&defaults, section, key) {
            return Err(ConfigError::new(
                name.clone(),
                format!("unknown setting {section}.{key}"),
            ));
        }
        let default = defaults.get(*section).and_then(|s| s.get(key));
        let is_list = matches!(default, Some(toml::Value::Array(_)))
            || (*section, key) == ("ice", "lite_public_address");
        let value =
            env_value(default, is_list, raw).map_err(|m| ConfigError::new(name.clone(), m))?;
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key.to_string(), value);
            }
            _ => return Err(ConfigError::new(*section, "must be a table")),
        }
    }
    Ok(())
}

fn known_key(defaults: &toml::Table, section: &str, key: &str) -> bool {
    let in_defaults = defaults.get(section).and_then(|s| s.get(key)).is_some();
    // Optional settings are absent from the serialized defaults.
    let optional = matches!(
        (section, key),
        ("server", "state_dir")
            | ("server", "public_url")
            | ("crypto", "pq_kem_public")
            | ("crypto", "pq_kem_secret")
            | ("ice", "lite_public_address")
            | ("ice", "credential_secret")
            | ("admin", "token")
    );
    (in_defaults || optional) && key != "turn"
}

fn env_value(
    default: Option<&toml::Value>,
    is_list: bool,
    raw: &str,
) -> Result<toml::Value, String> {
    let raw = raw.trim();
    Ok(match default {
        Some(toml::Value::Boolean(_)) => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
            "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
            _ => return Err(format!("expected a boolean, got {raw:?}")),
        },
        Some(toml::Value::Integer(_)) => toml::Value::Integer(
            raw.parse::<i64>()
                .map_err(|_| format!("expected an integer, got {raw:?}"))?,
        ),
        Some(toml::Value::Float(_)) => toml::Value::Float(
            raw.parse::<f64>()
                .map_err(|_| format!("expected a number, got {raw:?}"))?,
        ),
        _ if is_list => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_string()),
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    Ok(match OneOrMany::<String>::deserialize(d)? {
        OneOrMany::One(s) => parse_addrs(s.split(','))?,
        OneOrMany::Many(v) => parse_addrs(v.iter().map(String::as_str))?,
    })
}

fn optional_one_or_many<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<SocketAddr>>, D::Error> {
    one_or_many(d).map(Some)
}

fn parse_addrs<'a, E: serde::de::Error>(
    items: impl Iterator<Item = &'a str>,
) -> Result<Vec<SocketAddr>, E> {
    items
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<SocketAddr>()
                .map_err(|_| E::custom(format!("{s:?} is not an IP:port address")))
        })
        .collect()
}

fn comma_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match OneOrMany::<String>::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect(),
        OneOrMany::Many(v) => v.into_iter().map(|u| u.trim().to_string()).collect(),
    })
}

fn turn_servers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<TurnServerConfig>, D::Error> {
    Vec::<TurnServerConfig>::deserialize(d)
}

/// A secret from the configuration: zeroized on drop, redacted in `Debug` and when
/// serialized, so a logged or printed `Config` never shows it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
}

impl std::ops::Deref for Secret {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, &[])
    }

    #[test]
    fn empty_config_gives_laptop_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.server.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.ice.lite_bind[0].to_string(), "127.0.0.1:3478");
        assert!(c.crypto.pq);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("[server]\nbindd = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("server"), "{e}");
        assert!(e.to_string().contains("bindd"), "{e}");
    }

    #[test]
    fn bad_bind_names_the_key() {
        let e = parse("[server]\nbind = \"nope\"\n").unwrap_err();
        assert_eq!(e.key, "server.bind");
    }

    #[test]
    fn env_overrides_are_typed() {
        let env = vec![
            ("COMMUCAT_CRYPTO_PQ".to_string(), "false".to_string()),
            ("COMMUCAT_ICE_TURN_TTL".to_string(), "120".to_string()),
            (
                "COMMUCAT_ICE_LITE_BIND".to_string(),
                "127.0.0.1:1,[::1]:2".to_string(),
            ),
            (
                "COMMUCAT_DEVICE_ROTATION_ENABLED".to_string(),
                "true".to_string(),
            ),
            ("COMMUCAT_ADMIN_TOKEN".to_string(), "12345".to_string()),
            (
                "COMMUCAT_LOG_LEVEL".to_string(),
                "info,commucat=debug".to_string(),
            ),
        ];
        let c = Config::from_toml_with_env("", &env).unwrap();
        assert!(!c.crypto.pq);
        assert_eq!(c.ice.turn_ttl, 120);
        assert_eq!(c.ice.lite_bind.len(), 2);
        assert!(c.device_rotation.enabled);
        assert_eq!(c.admin.token.as_deref(), Some("12345"));
        assert!(
            !format!("{c:?}").contains("12345"),
            "secrets are redacted in Debug"
        );
        assert_eq!(c.log.level, "info,commucat=debug");
    }

    #[test]
    fn env_unknown_key_and_bad_type_are_errors() {
        let env = vec![("COMMUCAT_SERVER_BINDX".to_string(), "1".to_string())];
        assert!(Config::from_toml_with_env("", &env).is_err());
        let env = vec![("COMMUCAT_SERVR_BIND".to_string(), "x".to_string())];
        assert_eq!(
            Config::from_toml_with_env("", &env).unwrap_err().key,
            "COMMUCAT_SERVR_BIND"
        );
        let env = vec![("COMMUCAT_CRYPTO_PQ".to_string(), "maybe".to_string())];
        let e = Config::from_toml_with_env("", &env).unwrap_err();
        assert_eq!(e.key, "COMMUCAT_CRYPTO_PQ");
    }

    #[test]
    fn turn_numbered_tables_and_comma_urls() {
        let c = parse(
            "[ice.turn.2]\nurls = \"turn:b.example:3478\"\nsecret = \"s2\"\n\
             [ice.turn.1]\nurls = \"turn:a.example:3478, turns:a.example:5349\"\nsecret = \"s1\"\n",
        )
        .unwrap();
        assert_eq!(c.ice.turn.len(), 2);
        assert_eq!(c.ice.turn[0].urls.len(), 2);
        assert_eq!(c.ice.turn[1].signing_secret(), Some("s2"));
    }

    #[test]
    fn turn_needs_credentials() {
        let e = parse("[[ice.turn]]\nurls = [\"turn:a.example\"]\n").unwrap_err();
        assert_eq!(e.key, "ice.turn[0]");
    }

    #[test]
    fn relations_are_checked() {
        assert_eq!(
            parse("[crypto]\npq = false\nrequire_pq = true\n")
                .unwrap_err()
                .key,
            "crypto.require_pq"
        );
        assert_eq!(
            parse("[ice]\nturn_ttl = 10\n").unwrap_err().key,
            "ice.turn_ttl"
        );
        assert_eq!(
            parse("[ice]\ncredential_secret = \"abcd\"\n")
                .unwrap_err()
                .key,
            "ice.credential_secret"
        );
        assert_eq!(
            parse("[[transport]]\nid = \"a\"\ntransport = \"warp\"\naddress = \"x\"\nport = 1\n")
                .unwrap_err()
                .key,
            "transport[0].transport"
        );
    }

    #[test]
    fn syntax_error_names_the_line() {
        let e = parse("[server]\nbind = \n").unwrap_err();
        assert!(e.key.starts_with("line "), "{e}");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn public_url_derives_from_bind() {
        let c = parse("").unwrap();
        assert_eq!(
            c.public_url("127.0.0.1:9999".parse().unwrap()),
            "http://127.0.0.1:9999"
        );
    }
}
