//! The shared keyring in Redis (`commucat:keyring`, sealed by `keys::sealed`).
//!
//! - Created once: the first node of an empty cluster writes it with `SET NX`; a node
//!   that loses that race loads the winner's.
//! - Changed only under the lease `commucat:keyring:lease` (`SET NX PX`), and then with
//!   a compare-and-set on the generation (a Lua script), which also announces the new
//!   generation on `commucat:keyring:changed`.
//! - Reloaded by every node on that announcement and every `heartbeat_seconds`.
//!
//! docs/cluster.md ("Key rotation") argues why no node advertises a key another node
//! does not accept.

use std::sync::atomic::Ordering;

use crate::keys::sealed::{self, KeyringContents, SealError};

use super::{Cluster, ClusterError, names};

/// Replaces the ring if its header (magic and generation) is still `ARGV[1]`, and
/// announces it. KEYS: keyring. ARGV: expected header, new blob, channel.
pub(super) const COMPARE_AND_SET: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur or string.sub(cur, 1, 12) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[2]:sub(1, 12))
return 1
";

/// Deletes the lease only if this node still holds it. KEYS: lease. ARGV: node.
pub(super) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Compare-and-set attempts of an import before it gives up (each lost one means another
/// node changed the ring in between).
const IMPORT_ATTEMPTS: usize = 5;

/// The ring as this node read it: its generation and contents.
pub struct SharedKeyring {
    pub generation: u64,
    pub contents: KeyringContents,
}

fn header_of(blob: &[u8]) -> &[u8] {
    &blob[..blob.len().min(12)]
}

impl Cluster {
    fn seal(&self, contents: &KeyringContents, generation: u64) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::fill(&mut nonce);
        sealed::seal(contents, generation, &self.secret, nonce)
    }

    async fn get_blob(&self) -> Result<Option<Vec<u8>>, ClusterError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(names::KEYRING);
        self.call::<Option<Vec<u8>>>(&cmd).await
    }

    fn open(&self, blob: &[u8]) -> Result<SharedKeyring, SealError> {
        let (generation, contents) = sealed::open(blob, &self.secret)?;
        Ok(SharedKeyring {
            generation,
            contents,
        })
    }

    /// The cluster's keyring; the first node creates it from `create()` (atomically: a
    /// node that loses the race loads the winner's). A ring this node's `keys_secret`
    /// does not open is an error.
    pub async fn load_or_create_keyring(
        &self,
        create: impl FnOnce() -> KeyringContents,
    ) -> Result<SharedKeyring, ClusterError> {
        if let Some(blob) = self.get_blob().await? {
            let ring = self.open(&blob)?;
            self.keyring_generation
                .store(ring.generation, Ordering::Release);
            return Ok(ring);
        }
        let contents = create();
        let blob = self.seal(&contents, 1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(names::KEYRING).arg(&blob).arg("NX");
        let created: Option<String> = self.call(&cmd).await?;
        if created.is_some() {
            tracing::info!(node = %self.node_id, "cluster: created the shared keyring");
            self.keyring_generation.store(1, Ordering::Release);
            return Ok(SharedKeyring {
                generation: 1,
                contents,
            });
        }
        let blob = self.get_blob().await?.ok_or(ClusterError::KeyringMissing)?;
        let ring = self.open(&blob)?;
        self.keyring_generation
            .store(ring.generation, Ordering::Release);
        Ok(ring)
    }

    /// `commucat cluster import`: writes `contents` as the cluster's keyring; an existing
    /// ring is replaced only with `force`, as the next generation, with a compare-and-set
    /// (so a rotation landing meanwhile cannot leave two rings of one generation, one of
    /// which some nodes would never reload).
    pub async fn import_keyring(
        &self,
        contents: &KeyringContents,
        force: bool,
    ) -> Result<u64, ClusterError> {
        for _ in 0..IMPORT_ATTEMPTS {
            let Some(blob) = self.get_blob().await? else {
                let blob = self.seal(contents, 1);
                let mut cmd = redis::cmd("SET");
                cmd.arg(names::KEYRING).arg(&blob).arg("NX");
                let created: Option<String> = self.call(&cmd).await?;
                if created.is_some() {
                    self.announce(&blob).await;
                    return Ok(1);
                }
                continue;
            };
            let current = sealed::generation(&blob).unwrap_or(0);
            if !force {
                return Err(ClusterError::KeyringExists {
                    generation: current,
                });
            }
            if self
                .replace_if_unchanged(&blob, contents, current + 1)
                .await?
            {
                return Ok(current + 1);
            }
        }
        Err(ClusterError::KeyringBusy)
    }

    /// Writes `contents` as generation `generation` if the ring in Redis is still
    /// `seen`, and announces it; whether it was written.
    async fn replace_if_unchanged(
        &self,
        seen: &[u8],
        contents: &KeyringContents,
        generation: u64,
    ) -> Result<bool, ClusterError> {
        let new_blob = self.seal(contents, generation);
        let mut cas = Self::script(COMPARE_AND_SET, &[names::KEYRING]);
        cas.arg(header_of(seen))
            .arg(&new_blob)
            .arg(names::KEYRING_CHANNEL);
        let written: i64 = self.call(&cas).await?;
        Ok(written == 1)
    }

    async fn announce(&self, blob: &[u8]) {
        let mut announce = redis::cmd("PUBLISH");
        announce.arg(names::KEYRING_CHANNEL).arg(header_of(blob));
        let _ = self.call::<i64>(&announce).await;
    }

    /// A newer ring than the one this node serves with, if Redis has one. When Redis
    /// lost the ring (restarted without persistence), `current` is written back.
    pub async fn reload_keyring(
        &self,
        current: &KeyringContents,
    ) -> Result<Option<SharedKeyring>, ClusterError> {
        let mine = self.keyring_generation.load(Ordering::Acquire);
        let Some(blob) = self.get_blob().await? else {
            let blob = self.seal(current, mine.max(1));
            let mut cmd = redis::cmd("SET");
            cmd.arg(names::KEYRING).arg(&blob).arg("NX");
            let _: Option<String> = self.call(&cmd).await?;
            tracing::warn!("cluster: the keyring was missing from Redis; wrote this node's back");
            return Ok(None);
        };
        let theirs = sealed::generation(&blob).unwrap_or(0);
        if theirs == mine {
            return Ok(None);
        }
        if theirs < mine {
            // Another node wrote back an older ring (Redis lost it): the newest wins, so
            // every node converges on one ring instead of some going back in time.
            if self.replace_if_unchanged(&blob, current, mine).await? {
                tracing::warn!(
                    generation = theirs,
                    "cluster: Redis held an older keyring; wrote this node's back"
                );
            }
            return Ok(None);
        }
        let ring = self.open(&blob)?;
        self.keyring_generation
            .store(ring.generation, Ordering::Release);
        self.metrics.keyring_reloads.inc();
        Ok(Some(ring))
    }

    /// Changes the ring under the lease: reads the current ring, lets `change` make
    /// the next one (`None`: nothing to do), and writes it with a compare-and-set on
    /// the generation. `Ok(None)` when another node holds the lease, the ring changed
    /// meanwhile, or nothing was due.
    pub async fn change_keyring(
        &self,
        change: impl FnOnce(&KeyringContents) -> Option<KeyringContents>,
    ) -> Result<Option<SharedKeyring>, ClusterError> {
        let lease_ms = self.config.heartbeat_seconds.saturating_mul(2000).max(2000);
        let mut take = redis::cmd("SET");
        take.arg(names::KEYRING_LEASE)
            .arg(&self.node_id)
            .arg("NX")
            .arg("PX")
            .arg(lease_ms);
        let held: Option<String> = self.call(&take).await?;
        if held.is_none() {
            return Ok(None);
        }
        let result = self.change_under_lease(change).await;
        let mut release = Self::script(RELEASE, &[names::KEYRING_LEASE]);
        release.arg(&self.node_id);
        let _ = self.call::<i64>(&release).await;
        result
    }

    async fn change_under_lease(
        &self,
        change: impl FnOnce(&KeyringContents) -> Option<KeyringContents>,
    ) -> Result<Option<SharedKeyring>, ClusterError> {
        let blob = self.get_blob().await?.ok_or(ClusterError::KeyringMissing)?;
        let current = self.open(&blob)?;
        let Some(next) = change(&current.contents) else {
            return Ok(None);
        };
        let generation = current.generation + 1;
        if !self.replace_if_unchanged(&blob, &next, generation).await? {
            return Ok(None);
        }
        self.keyring_generation.store(generation, Ordering::Release);
        Ok(Some(SharedKeyring {
            generation,
            contents: next,
        }))
    }
}
