//! The live sessions, by device id: what `lookup` reads and what `signal`/`relay`
//! deliver through.
//!
//! Each entry carries a generation number so that a session that ends removes only
//! itself: when a newer session of the same device has replaced it, the old session's
//! clean-up must leave the new entry alone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

/// Why the server closes a session from outside its own task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// A newer session of the same device took over (4409).
    Replaced,
}

/// How other tasks reach a session: its outbound queue (plaintext JSON, sealed by the
/// session's writer) and a one-shot way to close it.
#[derive(Debug)]
pub struct SessionHandle {
    pub generation: u64,
    pub outbound: mpsc::Sender<Bytes>,
    pub evict: oneshot::Sender<Eviction>,
}

/// Why a message could not be handed to a device's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryError {
    /// No session for that device.
    Offline,
    /// The session's outbound queue is full (its client is not reading fast enough).
    Busy,
    /// Cluster mode: the device's node cannot be asked now (Redis unreachable).
    Unavailable,
}

#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, SessionHandle>>,
    next_generation: AtomicU64,
}

impl Registry {
    /// A fresh generation number for a session about to register.
    pub fn next_generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers `handle` for `device_id`; returns the session it replaces, if any.
    pub fn insert(&self, device_id: &str, handle: SessionHandle) -> Option<SessionHandle> {
        self.lock().insert(device_id.to_owned(), handle)
    }

    /// Removes the entry of `device_id` only if it is still generation `generation`.
    pub fn remove(&self, device_id: &str, generation: u64) -> bool {
        let mut sessions = self.lock();
        match sessions.get(device_id) {
            Some(h) if h.generation == generation => {
                sessions.remove(device_id);
                true
            }
            _ => false,
        }
    }

    pub fn is_online(&self, device_id: &str) -> bool {
        self.lock()
            .get(device_id)
            .is_some_and(|h| !h.outbound.is_closed())
    }

    /// Queues `message` for `device_id` without waiting: a sender never stalls on a
    /// slow receiver.
    pub fn deliver(&self, device_id: &str, message: Bytes) -> Result<(), DeliveryError> {
        let outbound = match self.lock().get(device_id) {
            Some(h) => h.outbound.clone(),
            None => return Err(DeliveryError::Offline),
        };
        outbound.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => DeliveryError::Busy,
            mpsc::error::TrySendError::Closed(_) => DeliveryError::Offline,
        })
    }

    /// Closes (4409) the session of `device_id` if it is still generation `generation`:
    /// a newer session of the device registered on another node.
    pub fn evict(&self, device_id: &str, generation: u64) -> bool {
        let handle = {
            let mut sessions = self.lock();
            match sessions.get(device_id) {
                Some(h) if h.generation == generation => sessions.remove(device_id),
                _ => None,
            }
        };
        match handle {
            Some(h) => {
                let _ = h.evict.send(Eviction::Replaced);
                true
            }
            None => false,
        }
    }

    /// Every registered session: device id and generation.
    pub fn sessions(&self) -> Vec<(String, u64)> {
        self.lock()
            .iter()
            .map(|(d, h)| (d.clone(), h.generation))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionHandle>> {
        // The map holds no invariant a panicking holder could break half-way.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(
        registry: &Registry,
    ) -> (
        SessionHandle,
        mpsc::Receiver<Bytes>,
        oneshot::Receiver<Eviction>,
    ) {
        let (tx, rx) = mpsc::channel(2);
        let (etx, erx) = oneshot::channel();
        (
            SessionHandle {
                generation: registry.next_generation(),
                outbound: tx,
                evict: etx,
            },
            rx,
            erx,
        )
    }

    #[test]
    fn old_cleanup_does_not_remove_the_replacement() {
        let r = Registry::default();
        let (h1, _rx1, erx1) = handle(&r);
        let g1 = h1.generation;
        assert!(r.insert("dev", h1).is_none());
        let (h2, mut rx2, _erx2) = handle(&r);
        let g2 = h2.generation;
        let old = r.insert("dev", h2).unwrap();
        assert_eq!(old.generation, g1);
        old.evict.send(Eviction::Replaced).unwrap();
        assert_eq!(erx1.blocking_recv(), Ok(Eviction::Replaced));
        assert!(!r.remove("dev", g1));
        assert!(r.is_online("dev"));
        r.deliver("dev", Bytes::from_static(b"x")).unwrap();
        assert_eq!(rx2.try_recv().unwrap(), Bytes::from_static(b"x"));
        assert!(r.remove("dev", g2));
        assert!(!r.is_online("dev"));
        assert_eq!(
            r.deliver("dev", Bytes::from_static(b"x")),
            Err(DeliveryError::Offline)
        );
    }

    #[test]
    fn a_remote_eviction_closes_only_the_generation_it_names() {
        let r = Registry::default();
        let (h, _rx, mut erx) = handle(&r);
        let g = h.generation;
        r.insert("dev", h);
        assert_eq!(r.sessions(), vec![("dev".to_string(), g)]);
        assert!(!r.evict("dev", g + 1));
        assert!(erx.try_recv().is_err());
        assert!(r.evict("dev", g));
        assert_eq!(erx.try_recv(), Ok(Eviction::Replaced));
        assert!(!r.is_online("dev"));
        assert!(r.sessions().is_empty());
    }

    #[test]
    fn full_queue_is_busy_not_blocking() {
        let r = Registry::default();
        let (h, _rx, _erx) = handle(&r);
        r.insert("dev", h);
        r.deliver("dev", Bytes::from_static(b"1")).unwrap();
        r.deliver("dev", Bytes::from_static(b"2")).unwrap();
        assert_eq!(
            r.deliver("dev", Bytes::from_static(b"3")),
            Err(DeliveryError::Busy)
        );
    }
}
