//! The device registry and cross-node delivery.
//!
//! Redis holds one hash, `commucat:devices`: device (32 raw bytes) → `"<node> <generation>"`.
//! Each node subscribes to its own channel `commucat:to:<node>` and keeps a heartbeat key
//! `commucat:node:<node>` that expires after `node_ttl_seconds`. An entry whose node has
//! no heartbeat is offline. Every step that reads and writes is one Lua script, so it is
//! atomic and costs one round trip.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::{oneshot, watch};

use super::wire::{self, Frame, Outcome};
use super::{Cluster, ClusterError, RouteError, device_bytes, names};

/// Registers a device; publishes an evict frame to the node that held it before.
/// KEYS: devices. ARGV: device, "<node> <generation>", this node.
pub(super) const REGISTER: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if old then
  local node, gen = string.match(old, '^(%S+) (%d+)$')
  if node and node ~= ARGV[3] then
    redis.call('PUBLISH', 'commucat:to:' .. node, 'E' .. ARGV[1] .. gen)
  end
end
return 1
";

/// Re-registers after Redis was lost: only where no live node holds the device now.
/// KEYS: devices. ARGV: device, "<node> <generation>", this node.
pub(super) const REREGISTER: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local node = string.match(old, '^(%S+)')
  if node and node ~= ARGV[3] and redis.call('EXISTS', 'commucat:node:' .. node) == 1 then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// Removes a device's entry if it is still this session's. KEYS: devices. ARGV: device, value.
pub(super) const UNREGISTER: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
";

/// Whether a device is online elsewhere: entry present, not this node, node alive.
/// KEYS: devices. ARGV: device, this node.
pub(super) const LOOKUP: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local node = string.match(v, '^(%S+)')
if not node or node == ARGV[2] then return 0 end
return redis.call('EXISTS', 'commucat:node:' .. node)
";

/// Publishes a frame to the device's node: subscribers reached, or -1 (no entry, or
/// this node) / -2 (node without heartbeat). KEYS: devices. ARGV: device, this node, frame.
pub(super) const ROUTE: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return -1 end
local node = string.match(v, '^(%S+)')
if not node or node == ARGV[2] then return -1 end
if redis.call('EXISTS', 'commucat:node:' .. node) == 0 then return -2 end
return redis.call('PUBLISH', 'commucat:to:' .. node, ARGV[3])
";

/// Removes entries of nodes without a heartbeat, one `HSCAN` page at a time.
/// KEYS: devices. ARGV: cursor, page size. Returns {next cursor, removed}.
pub(super) const SWEEP: &str = r"
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local removed = 0
local fields = page[2]
for i = 1, #fields, 2 do
  local node = string.match(fields[i + 1], '^(%S+)')
  if not node or redis.call('EXISTS', 'commucat:node:' .. node) == 0 then
    redis.call('HDEL', KEYS[1], fields[i])
    removed = removed + 1
  end
end
return {page[1], removed}
";

/// Entries the sweep looks at per heartbeat.
const SWEEP_PAGE: u32 = 200;

/// Backoff between attempts to reach Redis again.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Cluster {
    fn entry(&self, generation: u64) -> String {
        format!("{} {generation}", self.node_id)
    }

    /// Makes `device` (session `generation`) reachable from every node; an older session
    /// of it on another node is closed there (4409). Failing, the session stays local
    /// and is registered again once Redis is back.
    pub async fn register(&self, device: &str, generation: u64) {
        let Some(raw) = device_bytes(device) else {
            return;
        };
        if !self.is_connected() {
            self.resync.store(true, Ordering::Release);
            return;
        }
        let mut cmd = Self::script(REGISTER, &[names::DEVICES]);
        cmd.arg(&raw[..])
            .arg(self.entry(generation))
            .arg(&self.node_id);
        if let Err(e) = self.call::<i64>(&cmd).await {
            tracing::warn!(error = %e, "cluster: registering a session failed; retrying later");
            self.resync.store(true, Ordering::Release);
        }
    }

    /// The session ended: its entry goes, unless a newer session has taken it.
    pub async fn unregister(&self, device: &str, generation: u64) {
        let Some(raw) = device_bytes(device) else {
            return;
        };
        if !self.is_connected() {
            return;
        }
        let mut cmd = Self::script(UNREGISTER, &[names::DEVICES]);
        cmd.arg(&raw[..]).arg(self.entry(generation));
        let _ = self.call::<i64>(&cmd).await;
    }

    /// Whether `device` has a live session on another node.
    pub async fn lookup(&self, device: &str) -> Result<bool, RouteError> {
        let raw = device_bytes(device).ok_or(RouteError::Offline)?;
        if !self.is_connected() {
            return Err(RouteError::Unavailable);
        }
        let mut cmd = Self::script(LOOKUP, &[names::DEVICES]);
        cmd.arg(&raw[..]).arg(&self.node_id);
        match self.call::<i64>(&cmd).await {
            Ok(n) => Ok(n == 1),
            Err(_) => Err(RouteError::Unavailable),
        }
    }

    /// Delivers `message` (the JSON the target session gets) to `device` on another
    /// node and waits for that node's answer.
    pub async fn forward(&self, device: &str, message: &[u8]) -> Result<(), RouteError> {
        let raw = device_bytes(device).ok_or(RouteError::Offline)?;
        if !self.is_connected() {
            return Err(RouteError::Unavailable);
        }
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending_map().insert(request, tx);
        let frame = wire::deliver(request, &self.node_id, &raw, message);
        let mut cmd = Self::script(ROUTE, &[names::DEVICES]);
        cmd.arg(&raw[..]).arg(&self.node_id).arg(frame);
        let reached = self.call::<i64>(&cmd).await;
        let reached = match reached {
            Ok(n) if n > 0 => n,
            Ok(_) => {
                self.pending_map().remove(&request);
                return Err(RouteError::Offline);
            }
            Err(_) => {
                self.pending_map().remove(&request);
                return Err(RouteError::Unavailable);
            }
        };
        debug_assert!(reached > 0);
        let outcome = tokio::time::timeout(super::ANSWER_TIMEOUT, rx).await;
        self.pending_map().remove(&request);
        match outcome {
            Ok(Ok(Outcome::Delivered)) => {
                self.metrics.count("sent");
                Ok(())
            }
            Ok(Ok(Outcome::Offline)) => Err(RouteError::Offline),
            Ok(Ok(Outcome::Busy)) => Err(RouteError::Busy),
            Ok(Err(_)) | Err(_) => {
                self.metrics.count("dropped");
                Err(RouteError::Unavailable)
            }
        }
    }

    fn pending_map(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, oneshot::Sender<Outcome>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One frame from this node's channel.
    fn handle(self: &Arc<Self>, payload: Bytes) {
        match wire::parse(&payload) {
            Some(Frame::Deliver {
                request,
                origin,
                device,
                message,
            }) => {
                let outcome = match self.local() {
                    Some(local) => local.deliver(&hex::encode(device), message),
                    None => Outcome::Offline,
                };
                if outcome == Outcome::Delivered {
                    self.metrics.count("received");
                } else {
                    self.metrics.count("dropped");
                }
                let this = self.clone();
                tokio::spawn(async move {
                    let mut cmd = redis::cmd("PUBLISH");
                    cmd.arg(names::channel(&origin))
                        .arg(wire::answer(request, outcome));
                    let _ = this.call::<i64>(&cmd).await;
                });
            }
            Some(Frame::Answer { request, outcome }) => {
                if let Some(tx) = self.pending_map().remove(&request) {
                    let _ = tx.send(outcome);
                }
            }
            Some(Frame::Evict { device, generation }) => {
                if let Some(local) = self.local() {
                    local.evict(&hex::encode(device), generation);
                }
            }
            None => self.metrics.count("dropped"),
        }
    }

    /// Registers every local session again where no live node holds its device.
    async fn reregister_all(&self) -> Result<(), ClusterError> {
        let Some(local) = self.local() else {
            return Ok(());
        };
        let sessions = local.sessions();
        for chunk in sessions.chunks(256) {
            let mut pipe = redis::pipe();
            for (device, generation) in chunk {
                let Some(raw) = device_bytes(device) else {
                    continue;
                };
                pipe.add_command(Self::script(REREGISTER, &[names::DEVICES]))
                    .arg(&raw[..])
                    .arg(self.entry(*generation))
                    .arg(&self.node_id)
                    .ignore();
            }
            let mut conn = self.redis.clone();
            tokio::time::timeout(super::REDIS_TIMEOUT * 5, pipe.query_async::<()>(&mut conn))
                .await
                .map_err(|_| ClusterError::Unavailable)??;
        }
        if !sessions.is_empty() {
            tracing::info!(
                sessions = sessions.len(),
                "cluster: sessions registered again"
            );
        }
        Ok(())
    }

    /// Forgets a page of registry entries whose node is gone (killed nodes leave them
    /// behind; they read as offline meanwhile). Each node sweeps a page per heartbeat.
    pub async fn sweep_registry(&self) {
        if !self.is_connected() {
            return;
        }
        let cursor = self.sweep_cursor.load(Ordering::Relaxed);
        let mut cmd = Self::script(SWEEP, &[names::DEVICES]);
        cmd.arg(cursor).arg(SWEEP_PAGE);
        if let Ok((next, removed)) = self.call::<(u64, i64)>(&cmd).await {
            self.sweep_cursor.store(next, Ordering::Relaxed);
            if removed > 0 {
                tracing::debug!(removed, "cluster: forgot devices of nodes that are gone");
            }
        }
    }

    /// Re-registers this node's sessions if an earlier registration failed.
    pub async fn resync_if_needed(&self) {
        if self.is_connected()
            && self.resync.swap(false, Ordering::AcqRel)
            && let Err(e) = self.reregister_all().await
        {
            tracing::warn!(error = %e, "cluster: re-registering sessions failed; retrying");
            self.resync.store(true, Ordering::Release);
        }
    }

    /// Keeps this node subscribed to its channel and the keyring channel until
    /// `shutdown`, reconnecting with backoff; after a reconnection the heartbeat is
    /// renewed and the sessions registered again.
    pub async fn run_subscriber(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_MIN;
        let mut first = true;
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.subscribe().await {
                Ok(pubsub) => {
                    let (mut sink, mut stream) = pubsub.split();
                    backoff = BACKOFF_MIN;
                    // A restarted Redis has forgotten them (the pipeline below needs them).
                    let _ = self.load_scripts().await;
                    let rejoined = self.heartbeat().await.is_ok()
                        && (first || self.reregister_all().await.is_ok());
                    if !rejoined {
                        self.resync.store(true, Ordering::Release);
                    }
                    if !first {
                        self.metrics.reconnects.inc();
                        tracing::info!("cluster: connected to Redis again");
                        // A ring may have changed meanwhile.
                        self.keyring_changed.notify_one();
                    }
                    first = false;
                    self.set_connected(true);
                    let every = Duration::from_secs(self.config.heartbeat_seconds);
                    let answering = answers_pings(&mut sink, every);
                    tokio::pin!(answering);
                    loop {
                        tokio::select! {
                            msg = stream.next() => match msg {
                                Some(msg) => {
                                    if msg.get_channel_name() == names::KEYRING_CHANNEL {
                                        self.keyring_changed.notify_one();
                                    } else {
                                        self.handle(Bytes::copy_from_slice(msg.get_payload_bytes()));
                                    }
                                }
                                None => break,
                            },
                            () = &mut answering => {
                                tracing::warn!("cluster: Redis stopped answering on this node's subscription");
                                break;
                            }
                            _ = shutdown.changed() => {
                                self.set_connected(false);
                                return;
                            }
                        }
                    }
                    self.set_connected(false);
                    self.fail_pending();
                    tracing::warn!(
                        "cluster: lost the connection to Redis; cross-node traffic is unavailable until it is back"
                    );
                }
                Err(e) => {
                    self.set_connected(false);
                    tracing::debug!(error = %e, "cluster: Redis unreachable");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, ClusterError> {
        let connecting = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(names::channel(&self.node_id)).await?;
            pubsub.subscribe(names::KEYRING_CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        tokio::time::timeout(super::REDIS_TIMEOUT * 2, connecting)
            .await
            .map_err(|_| ClusterError::Unavailable)?
            .map_err(ClusterError::from)
    }

    /// Waiting senders learn at once that no answer will come.
    fn fail_pending(&self) {
        self.pending_map().clear();
    }
}

/// Returns once Redis leaves a `PING` on the subscription unanswered for
/// [`super::REDIS_TIMEOUT`] × 2; asks every `every`. A stopped or hung Redis keeps the
/// socket open (its kernel still acknowledges), so only a question it must answer tells
/// that it is gone.
async fn answers_pings(sink: &mut redis::aio::PubSubSink, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let asked = tokio::time::timeout(super::REDIS_TIMEOUT * 2, sink.ping::<redis::Value>());
        if !matches!(asked.await, Ok(Ok(_))) {
            return;
        }
    }
}
