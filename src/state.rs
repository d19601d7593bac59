//! The one `Arc`'d state shared by the HTTP router, the UDP tasks and the background
//! tasks: configuration, keys, TURN secrets, the ICE secret and metrics.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::config::Config;
use crate::fec::FecPlanCache;
use crate::http::assist::StaticAdvice;
use crate::http::server_info;
use crate::ice::stun_server::StunReadiness;
use crate::ice::turn::TurnServer;
use crate::keys::device::DeviceKeyPool;
use crate::keys::rotation;
use crate::keys::store::{KeyStore, KeyStoreError};
use crate::keys::{KemKeys, NoiseKeyRing, StaticKeys};
use crate::metrics::Metrics;

/// The Noise keys as published at one moment, with the server-info document rendered
/// and signed for them. Replaced as a whole when keys rotate or expire.
pub struct KeySnapshot {
    pub ring: NoiseKeyRing,
    pub server_info: Bytes,
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
}

pub struct AppState {
    pub config: Config,
    pub endpoints: Endpoints,
    pub static_keys: StaticKeys,
    pub turn: Vec<TurnServer>,
    pub metrics: Metrics,
    pub fec_plans: FecPlanCache,
    pub static_advice: StaticAdvice,
    pub device_keys: DeviceKeyPool,
    store: KeyStore,
    keys: ArcSwap<KeySnapshot>,
    /// Serializes rotations: the rotation task and tests must not interleave writes.
    rotate_lock: Mutex<()>,
    stun_readiness: Option<StunReadiness>,
}

impl AppState {
    /// Builds the state and publishes the first key snapshot for `ring` at `now`.
    pub fn new(parts: StateParts, ring: NoiseKeyRing, now: u64) -> Arc<Self> {
        let unpublished = KeySnapshot {
            ring: NoiseKeyRing::default(),
            server_info: Bytes::new(),
        };
        let StateParts {
            config,
            endpoints,
            static_keys,
            turn,
            metrics,
            store,
            stun_readiness,
        } = parts;
        let static_advice = StaticAdvice::new(
            static_keys.kem.as_ref().map(|k| k.public_hex.as_str()),
            &static_keys.identity.public_hex,
        );
        let state = Arc::new(Self {
            static_advice,
            device_keys: DeviceKeyPool::default(),
            config,
            endpoints,
            static_keys,
            turn,
            metrics,
            fec_plans: FecPlanCache::default(),
            store,
            keys: ArcSwap::from_pointee(unpublished),
            rotate_lock: Mutex::new(()),
            stun_readiness,
        });
        state.publish(ring, now);
        state
    }

    /// The current key snapshot; cheap (an `Arc` clone, no lock).
    pub fn keys(&self) -> Arc<KeySnapshot> {
        self.keys.load_full()
    }

    pub fn kem(&self) -> Option<&KemKeys> {
        self.static_keys.kem.as_ref()
    }

    fn publish(&self, ring: NoiseKeyRing, now: u64) {
        let server_info = server_info::render(self, &ring, now);
        self.keys.store(Arc::new(KeySnapshot { ring, server_info }));
    }

    /// Rotates or prunes Noise keys that are due at `now`: the new ring is persisted
    /// before it is published. Returns whether anything changed.
    pub fn rotate_keys(&self, now: u64) -> Result<bool, KeyStoreError> {
        let _guard = self.rotate_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.keys();
        let plan = rotation::plan(&current.ring, now);
        if plan.is_noop() {
            return Ok(false);
        }
        let next = rotation::apply(
            &current.ring,
            &plan,
            now,
            self.config.crypto.rotation_interval,
            self.config.crypto.rotation_grace,
        );
        self.store.save_noise_keys(&next)?;
        if let Some(version) = plan.new_key_version {
            self.metrics.key_rotations.inc();
            tracing::info!(version, "rotated Noise static key");
        }
        self.publish(next, now);
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
