//! A deterministic RNG for code outside the crate that drives the handshake
//! reproducibly: fuzz targets cannot name the `rand` traits without a dependency of
//! their own, and a finding must replay with the same draws. Never a source of keys.

use core::convert::Infallible;

use rand::{TryCryptoRng, TryRng};
use sha3::{Digest, Sha3_256};

/// The byte stream `SHA3-256(label || counter)`, counter from 0 (little endian).
#[derive(Debug, Clone)]
pub struct SeededRng {
    label: Vec<u8>,
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl SeededRng {
    /// A stream that depends on `label` only.
    pub fn new(label: &[u8]) -> Self {
        Self {
            label: label.to_vec(),
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }

    fn next_byte(&mut self) -> u8 {
        if self.used == self.block.len() {
            self.block = Sha3_256::new()
                .chain_update(&self.label)
                .chain_update(self.counter.to_le_bytes())
                .finalize()
                .into();
            self.counter = self.counter.wrapping_add(1);
            self.used = 0;
        }
        let byte = self.block[self.used];
        self.used += 1;
        byte
    }
}

impl TryRng for SeededRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut bytes = [0u8; 4];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut bytes = [0u8; 8];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        dst.fill_with(|| self.next_byte());
        Ok(())
    }
}

/// Deterministic by design; the marker only lets it stand in where the handshake asks
/// for a `CryptoRng`.
impl TryCryptoRng for SeededRng {}
