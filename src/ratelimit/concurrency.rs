//! Caps on how much one source holds at once (HTTP connections, sessions): per address
//! (IPv6 per /64, like the rate limits) and, for IPv6, also per /48, since one site
//! can hold a whole /48 of /64s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::limit_key;

/// How many a /48 may hold, in multiples of the per-source cap.
const BLOCK_FACTOR: usize = 8;

/// Counts what each source holds; entries exist only while something is held, so the
/// table is bounded by what the daemon's global caps allow at once.
#[derive(Debug)]
pub struct ConcurrencyCap {
    per_source: usize,
    counts: Mutex<HashMap<u128, usize>>,
}

/// One thing held by a source; released on drop.
#[derive(Debug)]
pub struct Held {
    cap: Arc<ConcurrencyCap>,
    keys: [Option<(u128, usize)>; 2],
}

impl ConcurrencyCap {
    pub fn new(per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            per_source: per_source.max(1),
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// Holds one more for `ip`, or `None` when its address (or its /48) is at the cap.
    pub fn try_hold(self: &Arc<Self>, ip: IpAddr) -> Option<Held> {
        let keys = [
            Some((limit_key(ip), self.per_source)),
            block_key(ip).map(|k| (k, self.per_source.saturating_mul(BLOCK_FACTOR))),
        ];
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let full = keys
            .iter()
            .flatten()
            .any(|(key, cap)| counts.get(key).is_some_and(|n| n >= cap));
        if full {
            return None;
        }
        for (key, _) in keys.iter().flatten() {
            *counts.entry(*key).or_insert(0) += 1;
        }
        Some(Held {
            cap: self.clone(),
            keys,
        })
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.counts.lock().map_or(0, |c| c.len())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self.cap.counts.lock().unwrap_or_else(|p| p.into_inner());
        for (key, _) in self.keys.iter().flatten() {
            if let Some(n) = counts.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(key);
                }
            }
        }
    }
}

/// The /48 of an IPv6 source, distinct from every [`limit_key`] (its low bits are 2);
/// `None` for IPv4.
fn block_key(ip: IpAddr) -> Option<u128> {
    match ip.to_canonical() {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => Some((u128::from(v6) & !((1u128 << 80) - 1)) | 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_holds_up_to_its_cap_and_frees_on_drop() {
        let cap = ConcurrencyCap::new(2);
        let a = cap.try_hold(ip("192.0.2.1")).unwrap();
        let _b = cap.try_hold(ip("192.0.2.1")).unwrap();
        assert!(cap.try_hold(ip("192.0.2.1")).is_none());
        assert!(cap.try_hold(ip("192.0.2.2")).is_some(), "another address");
        drop(a);
        assert!(cap.try_hold(ip("192.0.2.1")).is_some());
    }

    #[test]
    fn ipv6_counts_per_64_and_per_48() {
        let cap = ConcurrencyCap::new(1);
        let _one = cap.try_hold(ip("2001:db8:1:1::1")).unwrap();
        assert!(cap.try_hold(ip("2001:db8:1:1::2")).is_none(), "same /64");
        let held: Vec<Held> = (2..=8)
            .map(|n| cap.try_hold(ip(&format!("2001:db8:1:{n}::1"))).unwrap())
            .collect();
        assert!(
            cap.try_hold(ip("2001:db8:1:9::1")).is_none(),
            "the /48 is full"
        );
        assert!(cap.try_hold(ip("2001:db8:2:1::1")).is_some(), "another /48");
        drop(held);
        assert!(cap.try_hold(ip("2001:db8:1:9::1")).is_some());
    }

    #[test]
    fn nothing_held_leaves_nothing_tracked() {
        let cap = ConcurrencyCap::new(3);
        let held = cap.try_hold(ip("2001:db8::1")).unwrap();
        assert_eq!(cap.tracked(), 2);
        drop(held);
        assert_eq!(cap.tracked(), 0);
    }
}
