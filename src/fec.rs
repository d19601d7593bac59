//! RaptorQ multipath FEC planning for `/api/p2p/assist` (docs/protocol.md §2.4, `multipath`).
//!
//! A sample frame of 3 × `mtu` bytes is really encoded as exactly 3 source symbols of
//! `mtu` bytes (one source block, alignment 1) plus `ceil(3 × overhead)` repair symbols,
//! and the packets are dealt round-robin over the paths. The encoder runs once per
//! (mtu, overhead, path count); later requests reuse the plan.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use raptorq::{Encoder, ObjectTransmissionInformation};

/// Source symbols in the sample frame.
pub const SAMPLE_SYMBOLS: u32 = 3;
/// Plans kept before the cache starts over; the key space is small in practice.
const CACHE_CAPACITY: usize = 1024;

/// Packets per path position (paths sorted by priority): (total, repair).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FecPlan {
    pub per_path: Vec<(u32, u32)>,
    pub source_packets: u32,
    pub repair_packets: u32,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FecError {
    #[error("mtu must be between 256 and 9000")]
    Mtu,
    #[error("repair overhead must be between 0.0 and 1.0")]
    Overhead,
    #[error("at least one path is needed")]
    NoPaths,
    #[error("encoder produced {0} source and {1} repair packets, expected {2} and {3}")]
    Encoder(u32, u32, u32, u32),
}

/// Repair symbols for the sample frame: `ceil(3 × overhead)`, computed without float drift
/// for overheads written with up to 9 decimals (0.35 → 2, not 1.05 → ceil → 2 by luck).
pub fn repair_count(overhead: f64) -> u32 {
    let scaled = (overhead * 1e9).round() as u64 * u64::from(SAMPLE_SYMBOLS);
    scaled.div_ceil(1_000_000_000) as u32
}

/// Encodes the sample frame and deals its packets over `paths` positions.
pub fn plan(mtu: u16, overhead: f64, paths: usize) -> Result<FecPlan, FecError> {
    if !(256..=9000).contains(&mtu) {
        return Err(FecError::Mtu);
    }
    if !(0.0..=1.0).contains(&overhead) || overhead.is_nan() {
        return Err(FecError::Overhead);
    }
    if paths == 0 {
        return Err(FecError::NoPaths);
    }
    let repair = repair_count(overhead);
    let frame_len = usize::from(mtu) * SAMPLE_SYMBOLS as usize;
    let frame: Vec<u8> = (0..frame_len).map(|i| (i % 251) as u8).collect();
    let oti = ObjectTransmissionInformation::new(frame_len as u64, mtu, 1, 1, 1);
    let packets = Encoder::new(&frame, oti).get_encoded_packets(repair);

    let mut per_path = vec![(0u32, 0u32); paths];
    let (mut sources, mut repairs) = (0u32, 0u32);
    for (i, packet) in packets.iter().enumerate() {
        let is_repair = packet.payload_id().encoding_symbol_id() >= SAMPLE_SYMBOLS;
        let slot = &mut per_path[i % paths];
        slot.0 += 1;
        if is_repair {
            slot.1 += 1;
            repairs += 1;
        } else {
            sources += 1;
        }
        debug_assert_eq!(packet.data().len(), usize::from(mtu));
    }
    if sources != SAMPLE_SYMBOLS || repairs != repair {
        return Err(FecError::Encoder(sources, repairs, SAMPLE_SYMBOLS, repair));
    }
    Ok(FecPlan {
        per_path,
        source_packets: sources,
        repair_packets: repairs,
    })
}

/// Plans by (mtu, overhead, path count), so the encoder does not run on every request.
#[derive(Default)]
pub struct FecPlanCache {
    plans: Mutex<HashMap<(u16, u64, usize), Arc<FecPlan>>>,
}

impl FecPlanCache {
    pub fn get(&self, mtu: u16, overhead: f64, paths: usize) -> Result<Arc<FecPlan>, FecError> {
        if !(0.0..=1.0).contains(&overhead) {
            return Err(FecError::Overhead);
        }
        // The plan depends on the overhead only through the repair count (0 to 3), so
        // near-identical overheads cannot force an encode each.
        let key = (mtu, u64::from(repair_count(overhead)), paths);
        if let Some(plan) = self.lock().get(&key) {
            return Ok(plan.clone());
        }
        let plan = Arc::new(plan(mtu, overhead, paths)?);
        let mut plans = self.lock();
        if plans.len() >= CACHE_CAPACITY {
            plans.clear();
        }
        plans.insert(key, plan.clone());
        Ok(plan)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u16, u64, usize), Arc<FecPlan>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.plans.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_deals_round_robin() {
        let p = plan(1152, 0.35, 2).unwrap();
        assert_eq!(p.repair_packets, 2);
        // packets: S0 S1 S2 R0 R1 → path0: S0 S2 R1, path1: S1 R0
        assert_eq!(p.per_path, vec![(3, 1), (2, 1)]);
    }

    #[test]
    fn repair_count_is_exact_ceiling() {
        assert_eq!(repair_count(0.0), 0);
        assert_eq!(repair_count(0.35), 2);
        assert_eq!(repair_count(1.0 / 3.0), 1);
        assert_eq!(repair_count(0.34), 2);
        assert_eq!(repair_count(0.3333333333), 1);
        assert_eq!(repair_count(1.0), 3);
    }

    #[test]
    fn paths_beyond_packets_get_zero() {
        let p = plan(256, 0.0, 5).unwrap();
        assert_eq!(p.per_path, vec![(1, 0), (1, 0), (1, 0), (0, 0), (0, 0)]);
    }

    #[test]
    fn rejects_out_of_range() {
        assert_eq!(plan(255, 0.1, 1), Err(FecError::Mtu));
        assert_eq!(plan(9001, 0.1, 1), Err(FecError::Mtu));
        assert_eq!(plan(1000, 1.5, 1), Err(FecError::Overhead));
        assert_eq!(plan(1000, f64::NAN, 1), Err(FecError::Overhead));
        assert_eq!(plan(1000, 0.5, 0), Err(FecError::NoPaths));
    }

    #[test]
    fn cache_returns_same_plan() {
        let c = FecPlanCache::default();
        let a = c.get(1200, 0.4, 3).unwrap();
        let b = c.get(1200, 0.4, 3).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
