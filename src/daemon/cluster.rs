//! Cluster mode in the daemon (docs/cluster.md): joining at start (connect, load or
//! create the shared keyring), the loop that keeps the node's heartbeat, reloads and
//! rotates the keyring, and `commucat cluster import`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::StartError;
use crate::cluster::{Cluster, ClusterError};
use crate::config::{ClusterConfig, Config, ConfigError};
use crate::keys::rotation::{self, ClockTrust, ClockWatch, Pruning};
use crate::keys::sealed::KeyringContents;
use crate::keys::store::KeyStore;
use crate::keys::{LoadedKeys, NoiseKeyRing, keyring_from_state_dir, static_keys_from_keyring};
use crate::state::AppState;
use crate::time::unix_now;

fn cluster_config(config: &Config) -> Result<&ClusterConfig, ConfigError> {
    config
        .cluster
        .as_ref()
        .ok_or_else(|| ConfigError::new("cluster", "missing: this needs a [cluster] section"))
}

/// This node in the cluster, with the keys it serves with.
pub(super) struct Joined {
    pub(super) cluster: Arc<Cluster>,
    pub(super) keys: LoadedKeys,
    pub(super) keyring: KeyringContents,
}

/// Connects to Redis and loads the shared keyring, creating it when this is the first
/// node of an empty cluster.
pub(super) async fn join(config: &Config, http_port: u16, now: u64) -> Result<Joined, StartError> {
    let cc = cluster_config(config)?;
    let node_id = cc.resolved_node_id(http_port);
    let cluster = Cluster::connect(cc, node_id).await?;
    let crypto = &config.crypto;
    let (interval, grace) = (crypto.rotation_interval, crypto.rotation_grace);
    let shared = cluster
        .load_or_create_keyring(|| {
            let mut contents = KeyringContents::generate();
            let empty = NoiseKeyRing::default();
            let plan = rotation::plan(&empty, now, Pruning::Held);
            contents.ring = rotation::apply(&empty, &plan, now, interval, grace);
            contents
        })
        .await?;
    let static_keys = static_keys_from_keyring(config, &shared.contents)?;
    // The state directory holds nothing in cluster mode, but stays locked: two daemons
    // configured with one directory are still refused.
    let store = KeyStore::open(&config.server.resolved_state_dir())
        .map_err(crate::keys::KeysError::from)?;
    tracing::info!(
        node = %cluster.node_id(),
        keyring_generation = shared.generation,
        "joined the cluster"
    );
    Ok(Joined {
        keys: LoadedKeys {
            store,
            static_keys,
            ring: shared.contents.ring.clone(),
            rotated_at_start: false,
        },
        keyring: shared.contents,
        cluster,
    })
}

/// Keeps the heartbeat, reloads the keyring (every `heartbeat_seconds` and when another
/// node announces a change) and rotates it when due, until `shutdown`.
pub(super) async fn run(
    state: Arc<AppState>,
    cluster: Arc<Cluster>,
    mut keyring: KeyringContents,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = Duration::from_secs(cluster.config().heartbeat_seconds);
    let lead = cluster.config().key_lead_seconds();
    let origin = Instant::now();
    let mut clock = ClockWatch::new(unix_now(), origin.elapsed());
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let tick = tokio::select! {
            _ = ticks.tick() => true,
            _ = cluster.keyring_changed.notified() => false,
            _ = shutdown.changed() => break,
        };
        if *shutdown.borrow() {
            break;
        }
        if tick {
            if let Err(e) = cluster.heartbeat().await {
                tracing::debug!(error = %e, "cluster: heartbeat failed");
            }
            cluster.resync_if_needed().await;
            cluster.sweep_registry().await;
        }
        let now = unix_now();
        match cluster.reload_keyring(&keyring).await {
            Ok(Some(shared)) => {
                if *shared.contents.identity_seed != *keyring.identity_seed
                    || *shared.contents.kem_seed != *keyring.kem_seed
                {
                    tracing::error!(
                        "cluster: the keyring in Redis has another identity or KEM key (imported \
                         with --force?); this node keeps serving its own until restarted"
                    );
                }
                keyring = shared.contents;
                install(&state, Some(keyring.ring.clone()), now);
            }
            Ok(None) => {}
            Err(ClusterError::Keyring(e)) => {
                tracing::error!(error = %e, "cluster: cannot open the keyring in Redis; keeping the keys in use");
            }
            Err(e) => tracing::debug!(error = %e, "cluster: keyring reload failed"),
        }
        if tick {
            let pruning = match clock.observe(now, origin.elapsed()) {
                ClockTrust::Confirmed => Some(Pruning::Allowed),
                ClockTrust::Holding => Some(Pruning::Held),
                ClockTrust::Jumped => {
                    state.metrics.clock_jumps.inc();
                    tracing::warn!(wall = now, "the wall clock jumped; no key changes for now");
                    None
                }
            };
            if let Some(pruning) = pruning
                && !rotation::plan(&keyring.ring, now, pruning).is_noop()
            {
                keyring = rotate(&state, &cluster, keyring, now, pruning, lead).await;
            }
        }
        // A key minted ahead becomes valid, or a listed one expires: republish.
        install(&state, None, now);
    }
    cluster.leave().await;
}

/// Rotates under the cluster's lease; another node holding it is fine (its ring
/// arrives by the announcement).
async fn rotate(
    state: &AppState,
    cluster: &Cluster,
    keyring: KeyringContents,
    now: u64,
    pruning: Pruning,
    lead: u64,
) -> KeyringContents {
    let crypto = &state.config.crypto;
    let (interval, grace) = (crypto.rotation_interval, crypto.rotation_grace);
    let changed = cluster
        .change_keyring(|current| {
            let plan = rotation::plan(&current.ring, now, pruning);
            if plan.is_noop() {
                return None;
            }
            let ring = rotation::apply_with_lead(&current.ring, &plan, now, interval, grace, lead);
            Some(current.with_ring(ring))
        })
        .await;
    match changed {
        Ok(Some(shared)) => {
            if let Some(k) = shared.contents.ring.newest() {
                tracing::info!(
                    version = k.version,
                    valid_after = k.valid_after,
                    generation = shared.generation,
                    "cluster: rotated the shared Noise keys"
                );
            }
            install(state, Some(shared.contents.ring.clone()), now);
            shared.contents
        }
        Ok(None) => keyring,
        Err(e) => {
            tracing::warn!(error = %e, "cluster: key rotation failed; keeping the current keys");
            keyring
        }
    }
}

fn install(state: &AppState, ring: Option<NoiseKeyRing>, now: u64) {
    if let Err(e) = state.install_ring(ring, now) {
        tracing::error!(error = %e, "cannot publish server-info for the new keys");
    }
}

/// `commucat cluster import`: the keys of this node's single-node state directory (and
/// configured key material) become the cluster's keyring. Returns the generation
/// written.
pub async fn import(config: &Config, force: bool) -> Result<u64, StartError> {
    let cc = cluster_config(config)?;
    let contents = keyring_from_state_dir(config)?;
    let cluster = Cluster::connect(cc, "import".into()).await?;
    Ok(cluster.import_keyring(&contents, force).await?)
}
