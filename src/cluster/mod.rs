//! Cluster mode (`[cluster]`, docs/cluster.md): the Redis-facing side of several daemons
//! acting as one server.
//!
//! - `keyring`: the sealed keyring (`keys::sealed`) in Redis: created once, loaded,
//!   imported, reloaded, and rotated under a lease with a compare-and-set;
//! - `routing`: the device registry (device → node), presence, cross-node delivery and
//!   replacement through each node's pub/sub channel;
//! - `wire`: the frames nodes publish to each other;
//! - `metrics`: connection state, cross-node messages, Redis round trips.
//!
//! The signaling layer reaches its own sessions through [`LocalSessions`], which it
//! implements; this module knows nothing of WebSockets. The loops that call it over
//! time (heartbeat, keyring reload and rotation) are the daemon's, as the key rotation
//! loop of a single node is.

mod keyring;
pub mod metrics;
mod routing;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use crate::config::{ClusterConfig, ConfigError};
use crate::keys::pem;
use crate::keys::sealed::SealError;
pub use keyring::SharedKeyring;
pub use metrics::ClusterMetrics;
use wire::Outcome;

/// Every Redis request is bounded by this; past it the request counts as failed.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a node waits for the target node's answer to a cross-node delivery.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connecting at start is bounded by this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Redis names, all under one prefix.
pub(crate) mod names {
    pub(crate) const KEYRING: &str = "commucat:keyring";
    pub(crate) const KEYRING_LEASE: &str = "commucat:keyring:lease";
    pub(crate) const KEYRING_CHANNEL: &str = "commucat:keyring:changed";
    pub(crate) const DEVICES: &str = "commucat:devices";
    pub(crate) const NODE_PREFIX: &str = "commucat:node:";
    pub(crate) const CHANNEL_PREFIX: &str = "commucat:to:";

    pub(crate) fn node(id: &str) -> String {
        format!("{NODE_PREFIX}{id}")
    }

    pub(crate) fn channel(id: &str) -> String {
        format!("{CHANNEL_PREFIX}{id}")
    }
}

/// What went wrong talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach Redis at {at} ([cluster] redis_url): {reason}")]
    Connect { at: String, reason: String },
    #[error("Redis: {0}")]
    Redis(String),
    #[error("Redis is unavailable")]
    Unavailable,
    #[error(transparent)]
    Keyring(#[from] SealError),
    #[error(
        "a cluster keyring already exists in Redis (generation {generation}); \
         pass --force to replace it (clients that pinned its keys will fail)"
    )]
    KeyringExists { generation: u64 },
    #[error("the cluster keyring in Redis vanished while it was being changed; try again")]
    KeyringMissing,
    #[error("the cluster keyring in Redis kept changing during the import; try again")]
    KeyringBusy,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl From<redis::RedisError> for ClusterError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e.to_string())
    }
}

/// How a cross-node delivery or lookup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// No live session for the device anywhere.
    Offline,
    /// The target session's queue is full.
    Busy,
    /// Redis (or the target node) could not be asked.
    Unavailable,
}

/// The sessions of this node, as the signaling layer keeps them.
pub trait LocalSessions: Send + Sync {
    /// Queues `message` (JSON, plaintext) for the session of `device` (64 hex digits).
    fn deliver(&self, device: &str, message: Bytes) -> Outcome;
    /// Closes the session of `device` with 4409 if it is still generation `generation`.
    fn evict(&self, device: &str, generation: u64);
    /// Every registered session: device and generation.
    fn sessions(&self) -> Vec<(String, u64)>;
}

/// This node's handle on the cluster.
pub struct Cluster {
    node_id: String,
    config: ClusterConfig,
    secret: Zeroizing<[u8; 32]>,
    client: redis::Client,
    redis: ConnectionManager,
    /// Subscribed to this node's channel (and so able to get answers).
    connected: AtomicBool,
    /// The registry in Redis may have lost this node's entries: re-register them.
    resync: AtomicBool,
    local: OnceLock<Arc<dyn LocalSessions>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
    next_request: AtomicU64,
    pub metrics: ClusterMetrics,
    /// Where the registry sweep goes on.
    sweep_cursor: AtomicU64,
    /// Generation of the keyring this node serves with.
    keyring_generation: AtomicU64,
    /// Woken when another node announces a new keyring.
    pub keyring_changed: tokio::sync::Notify,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Where a Redis URL points, without its password.
fn describe(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => format!("{h}:6379"),
            _ => u.path().to_string(),
        },
        Err(_) => "the configured address".into(),
    }
}

/// Socket options of every connection to Redis.
///
/// - `TCP_NODELAY`: the redis crate leaves Nagle's algorithm on, which holds a small
///   command back while an earlier one is unacknowledged; cross-node signals are
///   small commands, so that showed up in their latency (docs/cluster.md, "Measured").
/// - keepalive and `TCP_USER_TIMEOUT`: a Redis host that vanishes without a reset
///   (power loss, partition) is noticed within about `node_ttl_seconds`, the time
///   after which the other nodes count this one as gone anyway.
fn tcp_settings(config: &ClusterConfig) -> redis::io::tcp::TcpSettings {
    use redis::io::tcp::socket2::TcpKeepalive;
    let beat = Duration::from_secs(config.heartbeat_seconds);
    let keepalive = TcpKeepalive::new()
        .with_time(beat)
        .with_interval(beat)
        .with_retries(2);
    redis::io::tcp::TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
        .set_user_timeout(Duration::from_secs(config.node_ttl_seconds))
}

/// The Redis client: plain, or for `rediss://` TLS verified against `redis_ca_file`
/// (else the system's roots), with the client certificate when one is configured.
fn redis_client(
    config: &ClusterConfig,
    info: redis::ConnectionInfo,
) -> Result<redis::Client, ClusterError> {
    let failed = |e: redis::RedisError| ClusterError::Redis(e.to_string());
    if !config.redis_tls() {
        return redis::Client::open(info).map_err(failed);
    }
    // The redis crate builds its rustls configuration from the process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root_cert = config
        .redis_ca_file
        .as_deref()
        .map(|p| pem_file(p, "cluster.redis_ca_file", Pem::Certificates))
        .transpose()?;
    let client_tls = match (
        &config.redis_client_cert_file,
        &config.redis_client_key_file,
    ) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: pem_file(cert, "cluster.redis_client_cert_file", Pem::Certificates)?,
            client_key: pem_file(key, "cluster.redis_client_key_file", Pem::PrivateKey)?,
        }),
        _ => None,
    };
    let certificates = redis::TlsCertificates {
        client_tls,
        root_cert,
    };
    redis::Client::build_with_tls(info, certificates).map_err(failed)
}

enum Pem {
    Certificates,
    PrivateKey,
}

/// The bytes of a PEM file the redis crate parses, checked first to hold what `kind`
/// says, so that a wrong file is a configuration error naming its setting rather than a
/// failed handshake later.
fn pem_file(path: &std::path::Path, key: &str, kind: Pem) -> Result<Vec<u8>, ClusterError> {
    let checked = pem::read(path).and_then(|bytes| {
        match kind {
            Pem::Certificates => pem::certificates_in(&bytes).map(drop),
            Pem::PrivateKey => pem::private_key_in(&bytes).map(drop),
        }
        .map(|()| bytes)
    });
    checked.map_err(|e| ConfigError::new(key, format!("{}: {e}", path.display())).into())
}

impl Cluster {
    /// Connects (bounded) and checks that Redis answers.
    pub async fn connect(
        config: &ClusterConfig,
        node_id: String,
    ) -> Result<Arc<Self>, ClusterError> {
        let url = config
            .redis_url
            .as_deref()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let at = describe(&url);
        let failed = |reason: String| ClusterError::Connect {
            at: at.clone(),
            reason,
        };
        let secret = config
            .keys_secret_bytes()
            .map_err(|e| failed(e.to_string()))?;
        let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
            .map_err(|e| failed(e.to_string()))?
            .set_tcp_settings(tcp_settings(config));
        let client = redis_client(config, info).map_err(|e| match e {
            ClusterError::Config(e) => ClusterError::Config(e),
            ClusterError::Redis(reason) => failed(reason),
            e => failed(e.to_string()),
        })?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let redis = tokio::time::timeout(
            CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client.clone(), manager_config),
        )
        .await
        .map_err(|_| failed("timed out".into()))?
        .map_err(|e| failed(e.to_string()))?;
        let cluster = Arc::new(Self {
            node_id,
            config: config.clone(),
            secret,
            client,
            redis,
            connected: AtomicBool::new(false),
            resync: AtomicBool::new(false),
            local: OnceLock::new(),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            metrics: ClusterMetrics::new(),
            keyring_generation: AtomicU64::new(0),
            sweep_cursor: AtomicU64::new(0),
            keyring_changed: tokio::sync::Notify::new(),
        });
        let pong: String = cluster
            .call(&redis::cmd("PING"))
            .await
            .map_err(|e| failed(e.to_string()))?;
        if pong != "PONG" {
            return Err(failed(format!("unexpected PING reply {pong:?}")));
        }
        cluster
            .load_scripts()
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(cluster)
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The signaling layer's sessions; set once, when its routes are built.
    pub fn attach(&self, local: Arc<dyn LocalSessions>) {
        let _ = self.local.set(local);
    }

    fn local(&self) -> Option<&Arc<dyn LocalSessions>> {
        self.local.get()
    }

    /// Whether the node is connected to Redis now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
        self.metrics.connected.set(i64::from(up));
    }

    /// One Redis request, bounded by [`REDIS_TIMEOUT`] and timed. A script Redis does
    /// not know (it restarted, or `SCRIPT FLUSH`) is loaded and the request sent again.
    async fn call<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, ClusterError> {
        match self.query(cmd).await {
            Err(Query::NoScript) => {
                self.load_scripts().await?;
                self.query(cmd).await.map_err(Query::into_error)
            }
            other => other.map_err(Query::into_error),
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Query> {
        let mut conn = self.redis.clone();
        let started = Instant::now();
        let result = tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<T>(&mut conn)).await;
        self.metrics
            .redis_rtt
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.code() == Some("NOSCRIPT") => Err(Query::NoScript),
            Ok(Err(e)) => Err(Query::Failed(e.into())),
            Err(_) => Err(Query::Failed(ClusterError::Unavailable)),
        }
    }

    /// Loads every script of this module into Redis' script cache (`EVALSHA` then
    /// sends only the digest).
    async fn load_scripts(&self) -> Result<(), ClusterError> {
        for body in SCRIPTS {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(body);
            self.query::<String>(&cmd)
                .await
                .map_err(Query::into_error)?;
        }
        Ok(())
    }

    /// A call of one of [`SCRIPTS`], by its SHA-1 digest.
    fn script(body: &str, keys: &[&str]) -> redis::Cmd {
        use sha1::Digest as _;
        let digest = hex::encode(sha1::Sha1::digest(body.as_bytes()));
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(digest).arg(keys.len());
        for k in keys {
            cmd.arg(*k);
        }
        cmd
    }

    /// Refreshes this node's heartbeat key (expires after `node_ttl_seconds`). If it
    /// had expired (the node was out of touch that long), other nodes may have swept
    /// this node's registry entries: they are registered again.
    pub async fn heartbeat(&self) -> Result<(), ClusterError> {
        let ttl_ms = self.config.node_ttl_seconds.saturating_mul(1000);
        let mut cmd = redis::cmd("SET");
        cmd.arg(names::node(&self.node_id))
            .arg(crate::time::unix_now())
            .arg("PX")
            .arg(ttl_ms)
            .arg("GET");
        let previous: Option<String> = self.call(&cmd).await?;
        if previous.is_none() {
            self.resync.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// On shutdown: the node is gone at once rather than after `node_ttl_seconds`.
    pub async fn leave(&self) {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(names::node(&self.node_id));
        let _ = self.call::<()>(&cmd).await;
    }
}

/// Every Lua script the cluster runs.
const SCRIPTS: [&str; 8] = [
    routing::REGISTER,
    routing::REREGISTER,
    routing::UNREGISTER,
    routing::LOOKUP,
    routing::ROUTE,
    routing::SWEEP,
    keyring::COMPARE_AND_SET,
    keyring::RELEASE,
];

/// How one request ended, before the script retry.
enum Query {
    NoScript,
    Failed(ClusterError),
}

impl Query {
    fn into_error(self) -> ClusterError {
        match self {
            Self::NoScript => ClusterError::Redis("NOSCRIPT after loading the scripts".into()),
            Self::Failed(e) => e,
        }
    }
}

/// Device ids travel as their 32 raw bytes (half the memory of the hex in Redis).
fn device_bytes(device: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(device, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_address_is_described_without_its_password() {
        assert_eq!(
            describe("redis://:secret-pw@10.0.0.5:6380/1"),
            "10.0.0.5:6380"
        );
        assert_eq!(describe("redis://user:secret-pw@redis"), "redis:6379");
        assert_eq!(describe("not a url"), "the configured address");
        assert_eq!(device_bytes(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(device_bytes("ab"), None);
    }
}
