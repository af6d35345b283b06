// Test cases for bp-no-seeded-rng (`semgrep --test .semgrep/`).

fn new_ticket(seed: u64) -> String {
    // ruleid: bp-no-seeded-rng
    let mut rng = StdRng::seed_from_u64(seed);
    // ruleid: bp-no-seeded-rng
    let mut chacha = ChaCha20Rng::from_seed([7; 32]);
    // ruleid: bp-no-seeded-rng
    let mut fast = SmallRng::from_os_rng();
    // ruleid: bp-no-seeded-rng
    let n = fastrand::u64(..);
    let mut bytes = [0u8; 32];
    // ok: bp-no-seeded-rng
    rand::rng().fill_bytes(&mut bytes);
    // ok: bp-no-seeded-rng
    let key = SigningKey::generate(&mut rand_core::OsRng);
    // ok: bp-no-seeded-rng
    randomness.fill(&mut bytes);
    b64(&bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn replayable() {
        // ok: bp-no-seeded-rng
        let mut rng = StdRng::seed_from_u64(42);
    }
}
