//! A tiny deterministic random number generator (splitmix64). Small, fast,
//! dependency-free, and the same on every platform, so a seed replays exactly.

/// splitmix64: one `u64` of state, every seed is a good seed.
#[derive(Debug, Clone)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    /// A generator whose whole output is determined by `seed`.
    #[must_use]
    pub fn new(seed: u64) -> SimRng {
        SimRng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (0 when `bound` is 0). The modulo bias is
    /// irrelevant for simulation.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }

    /// A number in `low..=high` (`low` when `high < low`).
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            low
        } else {
            low + self.below(high - low + 1)
        }
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A `usize` in `0..bound`.
    pub fn index(&mut self, bound: usize) -> usize {
        // usize -> u64 never truncates on the 64-bit targets Trail supports, and
        // the result is below `bound`, so it fits back.
        usize::try_from(self.below(bound as u64)).unwrap_or(0)
    }

    /// Fills `buffer` with random bytes.
    pub fn fill(&mut self, buffer: &mut [u8]) {
        for chunk in buffer.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    /// A new generator derived from this one (for a sub-component that must
    /// not shift this generator's sequence when it draws more or fewer numbers).
    pub fn fork(&mut self) -> SimRng {
        SimRng::new(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = SimRng::new(42);
        let mut b = SimRng::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(SimRng::new(1).next_u64(), SimRng::new(2).next_u64());
    }

    #[test]
    fn bounds_hold() {
        let mut rng = SimRng::new(7);
        for _ in 0..1000 {
            assert!(rng.below(10) < 10);
            let value = rng.between(5, 8);
            assert!((5..=8).contains(&value));
        }
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.between(9, 3), 9);
        let mut buffer = [0u8; 13];
        rng.fill(&mut buffer);
        assert!(buffer.iter().any(|&byte| byte != 0));
    }
}
