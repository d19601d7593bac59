//! The one `Arc`'d state shared by the HTTP router, the UDP tasks and the background
//! tasks: configuration, keys, TURN secrets, the ICE secret and metrics.
//!
//! Everything a keyring decides (the Noise ring, the identity, the KEM key, the ICE
//! secret, and the documents derived from them) lives in one [`KeySnapshot`], swapped
//! as a whole: a reader never mixes keys of two keyrings.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::auth::Authorizer;
use crate::config::Config;
use crate::discovery::{LimitsInfo, RenderError, StaticAdvice, server_info};
use crate::fec::FecPlanCache;
use crate::ice::credentials::{IceSecret, SharedIceSecret};
use crate::ice::stun_server::StunReadiness;
use crate::ice::turn::TurnServer;
use crate::keys::device::DeviceKeyPool;
use crate::keys::rotation::{self, Pruning};
use crate::keys::store::{KeyStore, KeyStoreError};
use crate::keys::{HandshakeKeys, IdentityKeys, KemKeys, NoiseKeyRing, StaticKeys};
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

/// The long-term keys served with, and what derives from them. Shared (`Arc`) by the
/// snapshots of one keyring; a cluster that adopts another keyring makes a new one.
pub struct LongTermKeys {
    /// `None` when PQ is off.
    kem: Option<KemKeys>,
    identity: IdentityKeys,
    /// Issues ICE credentials (assist); the STUN responder verifies with this same
    /// value through [`AppState::stun_secret`]. The only copy of the ICE secret.
    pub ice_secret: Arc<IceSecret>,
    /// The public keys of assist, encoded once per keyring (they are kilobytes of hex).
    pub static_advice: StaticAdvice,
    /// 0 at start, one more with each adopted keyring: device certificates are cached
    /// per epoch, so that none signed by a replaced identity is served again.
    pub epoch: u64,
}

impl LongTermKeys {
    fn new(keys: StaticKeys, epoch: u64) -> Self {
        let StaticKeys {
            kem,
            identity,
            ice_secret,
        } = keys;
        let static_advice = StaticAdvice::new(
            kem.as_ref().map(|k| k.public_hex.as_str()),
            &identity.public_hex,
        );
        Self {
            // `ice_secret` (zeroized on drop) leaves no second copy behind.
            ice_secret: Arc::new(IceSecret::from_bytes(*ice_secret)),
            static_advice,
            kem,
            identity,
            epoch,
        }
    }

    /// `None` when PQ is off.
    pub fn kem(&self) -> Option<&KemKeys> {
        self.kem.as_ref()
    }

    /// Signs server-info and device certificates.
    pub fn identity(&self) -> &IdentityKeys {
        &self.identity
    }
}

/// The keys as published at one moment, with the server-info document rendered and
/// signed for them. Replaced as a whole when keys rotate or expire, or (cluster mode)
/// when another keyring is adopted.
pub struct KeySnapshot {
    /// Every key a handshake may use.
    pub ring: NoiseKeyRing,
    /// The keys published (server-info, assist): the ring, less in cluster mode the keys
    /// not yet valid (docs/cluster.md, "Key rotation").
    pub advertised: NoiseKeyRing,
    pub server_info: Bytes,
    /// The key versions `server_info` lists.
    listed_versions: Vec<u32>,
    /// The identity that signed `server_info`, the KEM key handshakes decapsulate with
    /// and the ICE secret assist issues with.
    pub long_term: Arc<LongTermKeys>,
}

impl KeySnapshot {
    /// What a server handshake needs, all from this one snapshot.
    pub fn handshake_keys(&self) -> HandshakeKeys<'_> {
        HandshakeKeys {
            ring: &self.ring,
            kem: self.long_term.kem(),
        }
    }
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
    /// The ICE secret the STUN responder verifies with: the snapshot's, stored again
    /// whenever the snapshot's long-term keys change (the responder, in a lower layer,
    /// cannot read the snapshot).
    pub stun_secret: SharedIceSecret,
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
        let long_term = Arc::new(LongTermKeys::new(static_keys, 0));
        let unpublished = KeySnapshot {
            ring: NoiseKeyRing::default(),
            advertised: NoiseKeyRing::default(),
            server_info: Bytes::new(),
            listed_versions: Vec::new(),
            long_term: long_term.clone(),
        };
        let state = Arc::new(Self {
            stun_secret: SharedIceSecret::new(long_term.ice_secret.clone()),
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
            turn,
            metrics,
            fec_plans: FecPlanCache::default(),
            store,
            keys: ArcSwap::from_pointee(unpublished),
            rotate_lock: Mutex::new(()),
            hide_pending: config_cluster,
            stun_readiness,
        });
        state.publish(ring, long_term, now)?;
        Ok(state)
    }

    /// The current key snapshot; cheap (an `Arc` clone, no lock).
    pub fn keys(&self) -> Arc<KeySnapshot> {
        self.keys.load_full()
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
                self.publish(ring, current.long_term.clone(), now)?;
                Ok(true)
            }
            None => {
                let advertised = self.advertised(&current.ring, now);
                if current.listed_versions == listed_versions(&advertised, now) {
                    return Ok(false);
                }
                self.publish(current.ring.clone(), current.long_term.clone(), now)?;
                Ok(true)
            }
        }
    }

    /// Cluster mode: serves with another keyring (imported with `--force`): its
    /// long-term `keys` (identity, KEM key, ICE secret) and its Noise `ring`. One
    /// snapshot carries them all, so server-info is signed by the new identity in the
    /// same publish that lists the new keys, and no handshake or assist request sees
    /// half of each keyring; the STUN responder's secret follows at once. Sessions
    /// already established hold their own session keys and are not touched. On a
    /// render error nothing changes.
    pub fn install_keyring(
        &self,
        keys: StaticKeys,
        ring: NoiseKeyRing,
        now: u64,
    ) -> Result<(), RenderError> {
        let _guard = self.rotate_lock.lock().unwrap_or_else(|p| p.into_inner());
        let epoch = self.keys().long_term.epoch.wrapping_add(1);
        let long_term = Arc::new(LongTermKeys::new(keys, epoch));
        self.publish(ring, long_term.clone(), now)?;
        // Credentials of the replaced secret keep working until they expire.
        let previous_until = now.saturating_add(u64::from(self.config.ice.credential_ttl));
        self.stun_secret
            .replace(long_term.ice_secret.clone(), previous_until);
        Ok(())
    }

    /// Renders server-info for `ring` signed by `long_term`'s identity and makes that the
    /// snapshot every reader sees next.
    fn publish(
        &self,
        ring: NoiseKeyRing,
        long_term: Arc<LongTermKeys>,
        now: u64,
    ) -> Result<(), RenderError> {
        let sources = server_info::Sources {
            config: &self.config,
            kem_public_hex: long_term.kem().map(|k| k.public_hex.as_str()),
            identity: long_term.identity(),
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
            long_term,
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
            self.publish(current.ring.clone(), current.long_term.clone(), now)?;
            return Ok(true);
        };
        if let Some(version) = advanced.new_version {
            self.metrics.key_rotations.inc();
            tracing::info!(version, "rotated Noise static key");
        }
        self.publish(advanced.ring, current.long_term.clone(), now)?;
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

/// A state built without sockets or a daemon, for unit tests of this and higher layers.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::config::ClusterConfig;
    use crate::keys::sealed::KeyringContents;
    use crate::keys::static_keys_from_keyring;

    /// A state serving `contents` (in cluster mode when `cluster`) at `now`; the state
    /// directory lives as long as the returned guard.
    pub(crate) fn state(
        contents: &KeyringContents,
        cluster: bool,
        now: u64,
    ) -> (Arc<AppState>, tempfile::TempDir) {
        let mut config = Config::default();
        if cluster {
            config.cluster = Some(ClusterConfig::default());
        }
        let dir = tempfile::tempdir().unwrap();
        let static_keys = static_keys_from_keyring(&config, contents).unwrap();
        let http: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let parts = StateParts {
            endpoints: Endpoints {
                http,
                public_url: "http://127.0.0.1:8080".into(),
                connect_url: "ws://127.0.0.1:8080/api/connect".into(),
                public_host_port: ("127.0.0.1".into(), 8080),
                stun_addrs: Vec::new(),
                stun_urls: Vec::new(),
                candidate_addrs: Vec::new(),
            },
            static_keys,
            turn: Vec::new(),
            metrics: Metrics::new(),
            store: KeyStore::open(dir.path()).unwrap(),
            stun_readiness: None,
            limits: LimitsInfo {
                max_request_body_bytes: 1,
                max_signal_body_bytes: 1,
                max_relay_data_bytes: 1,
                relay_bytes_per_second: 1,
                max_sessions: 1,
                handshake_timeout_seconds: 1,
            },
            auth: Authorizer::new(&config.auth).unwrap(),
            config,
        };
        let state = AppState::new(parts, contents.ring.clone(), now).unwrap();
        (state, dir)
    }

    /// A keyring of fresh long-term keys with one Noise key valid at `now`.
    pub(crate) fn keyring(now: u64) -> KeyringContents {
        let mut contents = KeyringContents::generate();
        contents.ring =
            NoiseKeyRing::from_keys(vec![crate::keys::NoiseKey::generate(1, now, 3600, 3600)])
                .unwrap();
        contents
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{keyring, state};
    use super::*;
    use crate::discovery::ServerInfo;
    use crate::keys::bundle::{decode_verifying_key, verify_hex};
    use crate::keys::{IdentityKeys, static_keys_from_keyring};

    const NOW: u64 = 1_800_000_000;

    fn document(state: &AppState) -> ServerInfo {
        serde_json::from_slice(&state.keys().server_info).unwrap()
    }

    #[test]
    fn an_adopted_keyring_changes_every_long_term_key_in_one_snapshot() {
        let (old, new) = (keyring(NOW), keyring(NOW));
        let (state, _dir) = state(&old, true, NOW);
        let before = state.keys();
        let new_keys = static_keys_from_keyring(&state.config, &new).unwrap();
        let identity = IdentityKeys::from_seed(&new.identity_seed).public_hex;
        let kem = new_keys.kem.as_ref().unwrap().public_hex.clone();

        state
            .install_keyring(new_keys, new.ring.clone(), NOW)
            .unwrap();

        let after = state.keys();
        assert_eq!(after.long_term.epoch, before.long_term.epoch + 1);
        assert_eq!(after.long_term.identity().public_hex, identity);
        assert_eq!(after.long_term.kem().unwrap().public_hex, kem);
        assert_eq!(
            after.ring.newest().unwrap().public(),
            new.ring.newest().unwrap().public()
        );
        // Server-info names the new keys and is signed by the new identity.
        let info = document(&state);
        assert_eq!(info.device_ca_public, identity);
        assert_eq!(info.post_quantum.signature_public_hex, identity);
        assert_eq!(
            info.post_quantum.kem_public_hex.as_deref(),
            Some(kem.as_str())
        );
        let vk = decode_verifying_key(&identity).unwrap();
        verify_hex(
            &vk,
            info.key_bundle_text().as_bytes(),
            &info.post_quantum.key_bundle_signature_hex,
        )
        .unwrap();
        // Assist's static parts and both ICE secrets follow.
        assert!(
            after
                .long_term
                .static_advice
                .signature_public_hex
                .get()
                .contains(&identity)
        );
        assert_eq!(after.long_term.ice_secret.as_bytes(), &*new.ice_secret);
        assert_eq!(state.stun_secret.load().as_bytes(), &*new.ice_secret);
        // Readers holding the old snapshot keep a consistent old view.
        assert_eq!(before.long_term.ice_secret.as_bytes(), &*old.ice_secret);
    }

    #[test]
    fn rotation_and_republishing_keep_the_long_term_keys() {
        let contents = keyring(NOW);
        let (state, _dir) = state(&contents, false, NOW);
        let before = state.keys();
        assert_eq!(before.long_term.epoch, 0);
        // A day later the key is due: rotated, with the same identity and epoch.
        assert!(
            state
                .rotate_keys(NOW + 86_400, rotation::Pruning::Held)
                .unwrap()
        );
        let after = state.keys();
        assert!(after.ring.newest().unwrap().version > before.ring.newest().unwrap().version);
        assert!(Arc::ptr_eq(&before.long_term, &after.long_term));
        assert_eq!(state.stun_secret.load().as_bytes(), &*contents.ice_secret);
    }
}
