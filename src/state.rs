//! The one `Arc`'d state shared by the HTTP router, the UDP tasks and the background
//! tasks: configuration, keys, TURN secrets, the ICE secret and metrics.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::auth::Authorizer;
use crate::config::Config;
use crate::discovery::{LimitsInfo, RenderError, StaticAdvice, server_info};
use crate::fec::FecPlanCache;
use crate::ice::credentials::IceSecret;
use crate::ice::stun_server::StunReadiness;
use crate::ice::turn::TurnServer;
use crate::keys::device::DeviceKeyPool;
use crate::keys::rotation::{self, Pruning};
use crate::keys::store::{KeyStore, KeyStoreError};
use crate::keys::{KemKeys, NoiseKeyRing, StaticKeys};
use crate::metrics::Metrics;
use crate::ratelimit::{RateLimitConfig, SourceLimiter};

/// Sources tracked by the credential routes' limiter (fixed memory, LRU within a set).
const CREDENTIAL_LIMIT_TABLE: usize = 65_536;

/// A rotation that could not be completed; the keys in use stay as they were.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Store(#[from] KeyStoreError),
    #[error(transparent)]
    Render(#[from] RenderError),
}

/// The Noise keys as published at one moment, with the server-info document rendered
/// and signed for them. Replaced as a whole when keys rotate or expire.
pub struct KeySnapshot {
    /// Every key a handshake may use.
    pub ring: NoiseKeyRing,
    /// The keys published (server-info, assist): the ring, less in cluster mode the keys
    /// not yet valid (docs/cluster.md, "Key rotation").
    pub advertised: NoiseKeyRing,
    pub server_info: Bytes,
    /// The key versions `server_info` lists.
    listed_versions: Vec<u32>,
}

fn listed_versions(ring: &NoiseKeyRing, now: u64) -> Vec<u32> {
    ring.listed(now).map(|k| k.version).collect()
}

/// Where the daemon listens, known once its sockets are bound.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub http: SocketAddr,
    pub public_url: String,
    pub connect_url: String,
    /// Host and port of `public_url`, as listed in assist `transports`.
    pub public_host_port: (String, u16),
    pub stun_addrs: Vec<SocketAddr>,
    /// `stun:host:port` URLs clients should use (public addresses when configured).
    pub stun_urls: Vec<String>,
    /// Addresses advertised as ICE-lite host candidates.
    pub candidate_addrs: Vec<SocketAddr>,
}

/// Everything the state is built from.
pub struct StateParts {
    pub config: Config,
    pub endpoints: Endpoints,
    pub static_keys: StaticKeys,
    pub turn: Vec<TurnServer>,
    pub metrics: Metrics,
    pub store: KeyStore,
    /// `None` when the ICE-lite responder is disabled.
    pub stun_readiness: Option<StunReadiness>,
    /// The limits server-info publishes, from the layers that enforce them.
    pub limits: LimitsInfo,
    pub auth: Authorizer,
}

pub struct AppState {
    pub config: Config,
    pub endpoints: Endpoints,
    pub static_keys: StaticKeys,
    /// Issues and checks ICE credentials; derived once from `static_keys.ice_secret`.
    pub ice_secret: IceSecret,
    pub turn: Vec<TurnServer>,
    pub metrics: Metrics,
    pub limits: LimitsInfo,
    /// Who may fetch assist and open sessions.
    pub auth: Authorizer,
    /// Per-source limit of the routes that mint credentials (assist, TURN REST, ICE
    /// servers).
    pub credential_limiter: SourceLimiter,
    /// `[server] trusted_proxies`, parsed once.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub fec_plans: FecPlanCache,
    pub static_advice: StaticAdvice,
    pub device_keys: DeviceKeyPool,
    store: KeyStore,
    keys: ArcSwap<KeySnapshot>,
    /// Serializes rotations: the rotation task and tests must not interleave writes.
    rotate_lock: Mutex<()>,
    /// Cluster mode: keys not yet valid are in the ring (accepted) but not advertised.
    hide_pending: bool,
    stun_readiness: Option<StunReadiness>,
}

impl AppState {
    /// Builds the state and publishes the first key snapshot for `ring` at `now`; a
    /// document that cannot be rendered is an error here, never an empty body later.
    pub fn new(parts: StateParts, ring: NoiseKeyRing, now: u64) -> Result<Arc<Self>, RenderError> {
        let unpublished = KeySnapshot {
            ring: NoiseKeyRing::default(),
            advertised: NoiseKeyRing::default(),
            server_info: Bytes::new(),
            listed_versions: Vec::new(),
        };
        let StateParts {
            config,
            endpoints,
            static_keys,
            turn,
            metrics,
            store,
            stun_readiness,
            limits,
            auth,
        } = parts;
        let config_cluster = config.cluster.is_some();
        let static_advice = StaticAdvice::new(
            static_keys.kem.as_ref().map(|k| k.public_hex.as_str()),
            &static_keys.identity.public_hex,
        );
        let state = Arc::new(Self {
            static_advice,
            ice_secret: IceSecret::from_bytes(*static_keys.ice_secret),
            limits,
            auth,
            credential_limiter: SourceLimiter::new(RateLimitConfig {
                per_second: config.limits.assist_rate_per_ip,
                burst: config.limits.assist_burst,
                table_size: CREDENTIAL_LIMIT_TABLE,
            }),
            device_keys: DeviceKeyPool::default(),
            trusted_proxies: config.server.trusted_proxy_networks(),
            config,
            endpoints,
            static_keys,
            turn,
            metrics,
            fec_plans: FecPlanCache::default(),
            store,
            keys: ArcSwap::from_pointee(unpublished),
            rotate_lock: Mutex::new(()),
            hide_pending: config_cluster,
            stun_readiness,
        });
        state.publish(ring, now)?;
        Ok(state)
    }

    /// The current key snapshot; cheap (an `Arc` clone, no lock).
    pub fn keys(&self) -> Arc<KeySnapshot> {
        self.keys.load_full()
    }

    pub fn kem(&self) -> Option<&KemKeys> {
        self.static_keys.kem.as_ref()
    }

    /// The keys to advertise at `now`: all of them, or in cluster mode those already valid.
    fn advertised(&self, ring: &NoiseKeyRing, now: u64) -> NoiseKeyRing {
        if !self.hide_pending {
            return ring.clone();
        }
        let valid = ring
            .keys()
            .iter()
            .filter(|k| k.valid_after <= now)
            .cloned()
            .collect();
        NoiseKeyRing::from_keys(valid).unwrap_or_default()
    }

    /// Cluster mode: serves with `ring` (loaded from the shared keyring), or, when it is
    /// the ring in use, republishes if the advertised keys changed with time. Returns
    /// whether anything was published.
    pub fn install_ring(&self, ring: Option<NoiseKeyRing>, now: u64) -> Result<bool, RenderError> {
        let _guard = self.rotate_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.keys();
        match ring {
            Some(ring) => {
                let newest = ring.newest().map(|k| k.version);
                if newest > current.ring.newest().map(|k| k.version) {
                    self.metrics.key_rotations.inc();
                    tracing::info!(version = ?newest, "loaded a new Noise key from the cluster keyring");
                }
                self.publish(ring, now)?;
                Ok(true)
            }
            None => {
                let advertised = self.advertised(&current.ring, now);
                if current.listed_versions == listed_versions(&advertised, now) {
                    return Ok(false);
                }
                self.publish(current.ring.clone(), now)?;
                Ok(true)
            }
        }
    }

    fn publish(&self, ring: NoiseKeyRing, now: u64) -> Result<(), RenderError> {
        let sources = server_info::Sources {
            config: &self.config,
            kem_public_hex: self.kem().map(|k| k.public_hex.as_str()),
            identity: &self.static_keys.identity,
            connect_url: &self.endpoints.connect_url,
            stun_urls: &self.endpoints.stun_urls,
            limits: &self.limits,
        };
        let advertised = self.advertised(&ring, now);
        let server_info = server_info::render(&sources, &advertised, now)?;
        let listed_versions = listed_versions(&advertised, now);
        self.keys.store(Arc::new(KeySnapshot {
            ring,
            advertised,
            server_info,
            listed_versions,
        }));
        Ok(())
    }

    /// Rotates and (when `pruning` allows) prunes the Noise keys that are due at `now`
    /// ([`rotation::advance`]: the new ring is persisted before it is published), and
    /// republishes server-info when a key left the listed set by expiring. Returns
    /// whether anything was published.
    pub fn rotate_keys(&self, now: u64, pruning: Pruning) -> Result<bool, RotateError> {
        let _guard = self.rotate_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.keys();
        let crypto = &self.config.crypto;
        let advanced = rotation::advance(
            &self.store,
            &current.ring,
            now,
            crypto.rotation_interval,
            crypto.rotation_grace,
            pruning,
        )?;
        let Some(advanced) = advanced else {
            if current.listed_versions == listed_versions(&current.ring, now) {
                return Ok(false);
            }
            self.publish(current.ring.clone(), now)?;
            return Ok(true);
        };
        if let Some(version) = advanced.new_version {
            self.metrics.key_rotations.inc();
            tracing::info!(version, "rotated Noise static key");
        }
        self.publish(advanced.ring, now)?;
        Ok(true)
    }

    /// Keys loaded and, when the ICE-lite responder is enabled, its sockets serving.
    pub fn is_ready(&self) -> bool {
        let keys_ok = self.keys().ring.newest().is_some();
        let stun_ok = self
            .stun_readiness
            .as_ref()
            .is_none_or(StunReadiness::is_ready);
        keys_ok && stun_ok
    }
}
