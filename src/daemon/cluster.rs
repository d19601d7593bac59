//! Cluster mode in the daemon (docs/cluster.md): joining at start (connect, load or
//! create the shared keyring), the loop that keeps the node's heartbeat, reloads and
//! rotates the keyring (adopting a replaced one whole, long-term keys included), and
//! `commucat cluster import`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::StartError;
use crate::cluster::{Cluster, ClusterError};
use crate::config::{ClusterConfig, Config, ConfigError};
use crate::discovery::RenderError;
use crate::keys::rotation::{self, ClockTrust, ClockWatch, Pruning};
use crate::keys::sealed::KeyringContents;
use crate::keys::store::KeyStore;
use crate::keys::{
    KeysError, LoadedKeys, NoiseKeyRing, keyring_from_state_dir, static_keys_from_keyring,
};
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
            Ok(Some(shared)) => adopt(&state, &mut keyring, shared.contents, now),
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
                && let Some(written) = rotate(&state, &cluster, now, pruning, lead).await
            {
                adopt(&state, &mut keyring, written, now);
            }
        }
        // A key minted ahead becomes valid, or a listed one expires: republish.
        install(&state, None, now);
    }
    cluster.leave().await;
}

/// Serves with `next`, a keyring newer than `keyring` (reloaded, or written by this
/// node's rotation), and makes it `keyring`. A ring that differs in its Noise keys only
/// is installed as such. One with other long-term keys (imported with `--force`) is
/// adopted whole, identity, KEM key and ICE secret in the one snapshot with its Noise
/// keys: every node then signs the same server-info with the same identity, and no
/// reader sees the new Noise keys under the old identity.
fn adopt(state: &AppState, keyring: &mut KeyringContents, next: KeyringContents, now: u64) {
    if next.same_long_term_keys(keyring) {
        install(state, Some(next.ring.clone()), now);
        *keyring = next;
        return;
    }
    match adopt_long_term(state, &next, now) {
        Ok(()) => {
            tracing::warn!(
                "cluster: the keyring in Redis has other long-term keys (imported with \
                 --force?); now serving with them (key material configured in [crypto] or \
                 [ice] is kept, as at start)"
            );
            *keyring = next;
        }
        // Not expected: the ring opened and configured keys were checked at start. The
        // old keys stay whole rather than half replaced; a later import retries.
        Err(e) => tracing::error!(
            error = %e,
            "cluster: cannot serve with the keyring's new long-term keys; keeping the keys in use"
        ),
    }
}

/// Why a keyring's long-term keys could not be served with.
#[derive(Debug, thiserror::Error)]
enum AdoptError {
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error(transparent)]
    Render(#[from] RenderError),
}

/// Decodes `next`'s long-term keys (configured key material still wins) and installs
/// them with its Noise ring in one snapshot.
fn adopt_long_term(state: &AppState, next: &KeyringContents, now: u64) -> Result<(), AdoptError> {
    let keys = static_keys_from_keyring(&state.config, next)?;
    state.install_keyring(keys, next.ring.clone(), now)?;
    Ok(())
}

/// Rotates under the cluster's lease and returns the ring written; `None` when nothing
/// was written: another node holding the lease is fine (its ring arrives by the
/// announcement).
async fn rotate(
    state: &AppState,
    cluster: &Cluster,
    now: u64,
    pruning: Pruning,
    lead: u64,
) -> Option<KeyringContents> {
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
        // The ring written is Redis' ring with new Noise keys: if it was imported since
        // this node last reloaded, its long-term keys are new too, which `adopt` sees.
        Ok(Some(shared)) => {
            if let Some(k) = shared.contents.ring.newest() {
                tracing::info!(
                    version = k.version,
                    valid_after = k.valid_after,
                    generation = shared.generation,
                    "cluster: rotated the shared Noise keys"
                );
            }
            Some(shared.contents)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cluster: key rotation failed; keeping the current keys");
            None
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{IdentityKeys, NoiseKey};
    use crate::state::testing::{keyring, state};

    const NOW: u64 = 1_800_000_000;

    fn newest_public(ring: &NoiseKeyRing) -> [u8; 32] {
        *ring.newest().unwrap().public()
    }

    #[test]
    fn a_rotated_ring_keeps_the_long_term_keys() {
        let mut current = keyring(NOW);
        let (state, _dir) = state(&current, true, NOW);
        let before = state.keys();
        let mut keys = current.ring.keys().to_vec();
        keys.push(NoiseKey::generate(2, NOW, 3600, 3600));
        let next = current.with_ring(NoiseKeyRing::from_keys(keys).unwrap());
        adopt(&state, &mut current, next, NOW);
        let after = state.keys();
        assert_eq!(after.ring.newest().unwrap().version, 2);
        assert_eq!(current.ring.newest().unwrap().version, 2);
        assert!(Arc::ptr_eq(&before.long_term, &after.long_term));
    }

    #[test]
    fn an_imported_keyring_is_adopted_whole() {
        let mut current = keyring(NOW);
        let (state, _dir) = state(&current, true, NOW);
        let imported = keyring(NOW);
        let identity = IdentityKeys::from_seed(&imported.identity_seed).public_hex;
        let ring = newest_public(&imported.ring);
        let next = imported.with_ring(imported.ring.clone());
        adopt(&state, &mut current, next, NOW);
        let after = state.keys();
        assert_eq!(after.long_term.epoch, 1);
        assert_eq!(after.long_term.identity().public_hex, identity);
        assert_eq!(newest_public(&after.ring), ring);
        assert_eq!(state.stun_secret.load().as_bytes(), &*imported.ice_secret);
        assert!(current.same_long_term_keys(&imported));
        let info: crate::discovery::ServerInfo =
            serde_json::from_slice(&after.server_info).unwrap();
        assert_eq!(info.device_ca_public, identity);
    }
}
