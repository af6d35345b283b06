//! Randomness, injectable like the clock: the operating system's generator in production, a
//! seeded one in tests so that a failure replays from its seed. Used for the unpredictable
//! parts of what bp makes (challenge nonces); ids stay UUIDv7.

use std::fmt;
use std::sync::Mutex;

/// A source of random bytes.
pub trait Randomness: Send + Sync + fmt::Debug + 'static {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]);
}

/// The operating system's cryptographically secure generator.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsRandomness;

impl Randomness for OsRandomness {
    fn fill(&self, buf: &mut [u8]) {
        // The operating system's generator does not fail once the process runs; if it ever did,
        // carrying on with predictable nonces would be worse than stopping.
        if let Err(e) = getrandom::fill(buf) {
            panic!("the operating system's random generator failed: {e}");
        }
    }
}

/// A deterministic generator (SplitMix64) from a seed: for tests that must replay. Never for
/// production: its output is predictable.
#[derive(Debug)]
pub struct SeededRandomness(Mutex<u64>);

impl SeededRandomness {
    /// A generator starting at `seed`.
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(seed))
    }
}

impl Randomness for SeededRandomness {
    fn fill(&self, buf: &mut [u8]) {
        let mut state = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for chunk in buf.chunks_mut(8) {
            *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// `len` random bytes from `random`, base64url without padding: a token to put in a text.
pub fn token(random: &dyn Randomness, len: usize) -> String {
    let mut bytes = vec![0u8; len];
    random.fill(&mut bytes);
    crate::sca::factors::b64(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_generators_replay_and_differ_by_seed() {
        let (a, b, c) = (SeededRandomness::new(7), SeededRandomness::new(7), SeededRandomness::new(8));
        let (ta, tb, tc) = (token(&a, 16), token(&b, 16), token(&c, 16));
        assert_eq!(ta, tb, "the same seed replays");
        assert_ne!(ta, tc);
        assert_ne!(token(&a, 16), ta, "the stream moves on");
        assert_eq!(ta.len(), 22, "16 bytes in base64url without padding");
    }

    #[test]
    fn the_os_generator_fills_odd_lengths() {
        let mut buf = [0u8; 33];
        OsRandomness.fill(&mut buf);
        assert!(buf.iter().any(|b| *b != 0));
    }
}
