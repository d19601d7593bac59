//! Device certificates kept per device for the first half of their lifetime, so that a
//! session pipelining `certify` costs one ML-DSA signature, not one per request. A
//! sans-I/O table: the caller passes the current unix time in, and the epoch of the
//! identity key that signs now (`state::LongTermKeys::epoch`): a certificate of another
//! epoch was signed by a key the server no longer holds, and is never served.

use std::collections::HashMap;

use super::messages::ServerMessage;

/// Devices remembered at most; beyond it, entries past their reuse window or of another
/// epoch go first, then everything (a cache miss only costs a signature).
const MAX_ENTRIES: usize = 65_536;

#[derive(Debug, Clone)]
struct Cached {
    certificate: ServerMessage,
    /// Reused until then: half of the certificate's lifetime.
    reuse_until: u64,
    /// The epoch of the identity that signed it.
    epoch: u64,
}

/// Certificates by device id.
#[derive(Debug, Default)]
pub(crate) struct CertificateCache {
    entries: HashMap<String, Cached>,
}

impl CertificateCache {
    /// The certificate issued to `device_id` if at least half of its lifetime is left
    /// and it was signed in `epoch`.
    pub(crate) fn get(&self, device_id: &str, now_unix: u64, epoch: u64) -> Option<ServerMessage> {
        self.entries
            .get(device_id)
            .filter(|c| now_unix < c.reuse_until && c.epoch == epoch)
            .map(|c| c.certificate.clone())
    }

    /// Keeps `certificate`, issued at `issued_at` for `ttl` seconds in `epoch`, for reuse.
    pub(crate) fn insert(
        &mut self,
        device_id: &str,
        certificate: ServerMessage,
        issued_at: u64,
        ttl: u64,
        epoch: u64,
    ) {
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(device_id) {
            // Entries of another epoch are never served again: first to go.
            self.entries
                .retain(|_, c| issued_at < c.reuse_until && c.epoch == epoch);
            if self.entries.len() >= MAX_ENTRIES {
                self.entries.clear();
            }
        }
        let reuse_until = issued_at.saturating_add(ttl / 2);
        self.entries.insert(
            device_id.to_owned(),
            Cached {
                certificate,
                reuse_until,
                epoch,
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(n: u8) -> ServerMessage {
        ServerMessage::Certificate {
            device_id: format!("{n:064x}"),
            not_before: String::new(),
            not_after: String::new(),
            signature_hex: n.to_string(),
        }
    }

    #[test]
    fn a_certificate_is_reused_for_half_its_lifetime() {
        let mut cache = CertificateCache::default();
        assert!(cache.get("a", 100, 0).is_none());
        cache.insert("a", cert(1), 100, 86_400, 0);
        assert_eq!(cache.get("a", 100, 0), Some(cert(1)));
        assert_eq!(cache.get("a", 100 + 43_199, 0), Some(cert(1)));
        assert!(cache.get("a", 100 + 43_200, 0).is_none());
        assert!(cache.get("b", 100, 0).is_none());
    }

    #[test]
    fn a_certificate_of_a_replaced_identity_is_not_served() {
        let mut cache = CertificateCache::default();
        cache.insert("a", cert(1), 100, 86_400, 0);
        // The cluster adopted another keyring: epoch 1 signs now.
        assert!(cache.get("a", 101, 1).is_none());
        cache.insert("a", cert(2), 101, 86_400, 1);
        assert_eq!(cache.get("a", 102, 1), Some(cert(2)));
        assert!(cache.get("a", 102, 0).is_none());
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut cache = CertificateCache::default();
        for i in 0..MAX_ENTRIES {
            cache.insert(&i.to_string(), cert(0), 0, 10, 0);
        }
        // All still in their window: the table is cleared rather than grown.
        cache.insert("one more", cert(2), 1, 10, 0);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get("one more", 1, 0), Some(cert(2)));
    }
}
