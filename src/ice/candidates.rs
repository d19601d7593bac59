//! ICE-lite host candidates (RFC 8839 syntax, RFC 8445 §5.1.2 priorities).

use std::net::SocketAddr;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// RFC 8445 §5.1.2.2: type preference of host candidates.
const HOST_TYPE_PREFERENCE: u32 = 126;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LiteCandidate {
    pub candidate: String,
    pub component: u8,
    pub protocol: &'static str,
    pub foundation: String,
    pub priority: u32,
    pub ip: String,
    pub port: u16,
    pub typ: &'static str,
}

/// RFC 8445 §5.1.2.1: `2^24 * type pref + 2^8 * local pref + (256 - component)`.
pub fn priority(type_preference: u32, local_preference: u32, component: u32) -> u32 {
    (type_preference << 24) + (local_preference << 8) + (256 - component)
}

/// Candidates with the same type, base address and protocol share a foundation.
fn foundation(addr: &SocketAddr) -> String {
    let digest = Sha256::new()
        .chain_update(b"host/udp/")
        .chain_update(addr.ip().to_string())
        .finalize();
    hex::encode(&digest[..4])
}

/// Host candidates for the given public addresses, the first preferred.
pub fn host_candidates(addrs: &[SocketAddr]) -> Vec<LiteCandidate> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let local_pref = 65_535u32.saturating_sub(i as u32);
            let prio = priority(HOST_TYPE_PREFERENCE, local_pref, 1);
            let foundation = foundation(addr);
            let ip = addr.ip().to_string();
            LiteCandidate {
                candidate: format!(
                    "candidate:{foundation} 1 udp {prio} {ip} {} typ host generation 0",
                    addr.port()
                ),
                component: 1,
                protocol: "udp",
                foundation,
                priority: prio,
                ip,
                port: addr.port(),
                typ: "host",
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_host_candidate_has_the_classic_priority() {
        let c = host_candidates(&[
            "203.0.113.42:3478".parse().unwrap(),
            "[2001:db8::1]:3478".parse().unwrap(),
        ]);
        assert_eq!(c[0].priority, 2_130_706_431);
        assert!(c[1].priority < c[0].priority);
        assert_eq!(c[0].foundation.len(), 8);
        assert_eq!(
            c[0].candidate,
            format!(
                "candidate:{} 1 udp 2130706431 203.0.113.42 3478 typ host generation 0",
                c[0].foundation
            )
        );
        assert_eq!(c[1].ip, "2001:db8::1");
    }
}
