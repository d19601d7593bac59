//! `[cluster]`: several daemons behind one load balancer, sharing keys and a device
//! registry through Redis (docs/cluster.md). Absent: the daemon is one node on its own
//! and needs no Redis.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{ConfigError, Secret};

/// Longest `node_id`: it is part of Redis key and channel names.
pub const MAX_NODE_ID_LEN: usize = 64;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS; may carry a
    /// password, so it is a secret (never logged).
    pub redis_url: Option<Secret>,
    /// `rediss://` only: PEM certificates of the CAs that may sign Redis' certificate.
    /// Default: the system's trust store.
    pub redis_ca_file: Option<PathBuf>,
    /// `rediss://` only: a PEM client certificate chain and its key, for a Redis that
    /// asks for one (`tls-auth-clients`). Both or neither.
    pub redis_client_cert_file: Option<PathBuf>,
    pub redis_client_key_file: Option<PathBuf>,
    /// This node's name in the cluster; unique. Default: `<host name>-<HTTP port>`.
    pub node_id: Option<String>,
    /// 32 bytes, hex: seals the shared keyring in Redis (ChaCha20-Poly1305). The same on
    /// every node.
    pub keys_secret: Option<Secret>,
    /// How often the node refreshes its heartbeat and reloads the keyring.
    pub heartbeat_seconds: u64,
    /// A node whose heartbeat is older than this is gone: its devices read as offline.
    pub node_ttl_seconds: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_ca_file: None,
            redis_client_cert_file: None,
            redis_client_key_file: None,
            node_id: None,
            keys_secret: None,
            heartbeat_seconds: 5,
            node_ttl_seconds: 15,
        }
    }
}

impl ClusterConfig {
    /// `keys_secret`, decoded (validation has checked it).
    pub fn keys_secret_bytes(&self) -> Result<Zeroizing<[u8; 32]>, ConfigError> {
        let key = "cluster.keys_secret";
        let Some(secret) = &self.keys_secret else {
            return Err(ConfigError::new(
                key,
                "required in cluster mode (64 hex digits; the same on every node)",
            ));
        };
        let bytes = Zeroizing::new(
            hex::decode(secret.trim()).map_err(|_| ConfigError::new(key, "must be hex"))?,
        );
        if bytes.len() != 32 {
            return Err(ConfigError::new(
                key,
                format!("must be 32 bytes (64 hex digits), got {}", bytes.len()),
            ));
        }
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&bytes);
        Ok(out)
    }

    /// The node id: configured, or `<host name>-<port>` with the port HTTP is bound to.
    pub fn resolved_node_id(&self, http_port: u16) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_default();
        let host: String = host
            .trim()
            .chars()
            .filter(|c| is_node_id_char(*c))
            .take(MAX_NODE_ID_LEN - 6)
            .collect();
        let host = if host.is_empty() { "node".into() } else { host };
        format!("{host}-{http_port}")
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let Some(url) = &self.redis_url else {
            return Err(ConfigError::new(
                "cluster.redis_url",
                "required in cluster mode, e.g. \"redis://127.0.0.1:6379\"",
            ));
        };
        let parsed = url::Url::parse(url.trim())
            .map_err(|e| ConfigError::new("cluster.redis_url", format!("not a URL: {e}")))?;
        match parsed.scheme() {
            "redis" | "rediss" if parsed.host_str().is_some_and(|h| !h.is_empty()) => {}
            "redis" | "rediss" => {
                return Err(ConfigError::new("cluster.redis_url", "needs a host"));
            }
            "redis+unix" | "unix" => {}
            other => {
                return Err(ConfigError::new(
                    "cluster.redis_url",
                    format!(
                        "scheme {other:?} is not supported: use redis://, rediss:// (TLS) or \
                         redis+unix://"
                    ),
                ));
            }
        }
        self.validate_tls(&parsed)?;
        if let Some(id) = &self.node_id
            && (id.is_empty() || id.len() > MAX_NODE_ID_LEN || !id.chars().all(is_node_id_char))
        {
            return Err(ConfigError::new(
                "cluster.node_id",
                format!(
                    "must be 1 to {MAX_NODE_ID_LEN} characters of letters, digits, '.', '_' and '-'"
                ),
            ));
        }
        self.keys_secret_bytes()?;
        if !(1..=3600).contains(&self.heartbeat_seconds) {
            return Err(ConfigError::new(
                "cluster.heartbeat_seconds",
                "must be between 1 and 3600",
            ));
        }
        if self.node_ttl_seconds < 2 * self.heartbeat_seconds || self.node_ttl_seconds > 86_400 {
            return Err(ConfigError::new(
                "cluster.node_ttl_seconds",
                format!(
                    "must be at least twice heartbeat_seconds ({}), so that one late heartbeat \
                     does not take the node offline, and at most 86400",
                    2 * self.heartbeat_seconds
                ),
            ));
        }
        Ok(())
    }

    /// Whether `redis_url` asks for TLS (`rediss://`).
    pub fn redis_tls(&self) -> bool {
        self.redis_url
            .as_deref()
            .and_then(|u| url::Url::parse(u.trim()).ok())
            .is_some_and(|u| u.scheme() == "rediss")
    }

    /// TLS settings: only with `rediss://`, never unverified, client certificate and key
    /// together.
    fn validate_tls(&self, url: &url::Url) -> Result<(), ConfigError> {
        let files = [
            ("cluster.redis_ca_file", &self.redis_ca_file),
            (
                "cluster.redis_client_cert_file",
                &self.redis_client_cert_file,
            ),
            ("cluster.redis_client_key_file", &self.redis_client_key_file),
        ];
        if url.scheme() != "rediss" {
            if let Some((key, _)) = files.iter().find(|(_, f)| f.is_some()) {
                return Err(ConfigError::new(
                    *key,
                    "is for TLS: set it only with a rediss:// redis_url",
                ));
            }
            return Ok(());
        }
        // The redis crate reads `#insecure` as "do not verify the certificate".
        if url.fragment().is_some() {
            return Err(ConfigError::new(
                "cluster.redis_url",
                "a rediss:// URL takes no #fragment: Redis' certificate is always verified \
                 (redis_ca_file names a private CA)",
            ));
        }
        if self.redis_client_cert_file.is_some() != self.redis_client_key_file.is_some() {
            return Err(ConfigError::new(
                "cluster.redis_client_cert_file",
                "needs redis_client_key_file, and the other way round: both or neither",
            ));
        }
        Ok(())
    }

    /// How long before it becomes valid a key minted by a cluster rotation is written to
    /// the ring: every node reloads the ring at least every `heartbeat_seconds`, and a
    /// node out of touch with Redis for longer than `node_ttl_seconds` counts as gone
    /// (docs/cluster.md, "Key rotation").
    pub fn key_lead_seconds(&self) -> u64 {
        self.node_ttl_seconds + 2 * self.heartbeat_seconds
    }
}

fn is_node_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}
