//! What the SQLite store's suites share: fresh stores for bp-core's conformance suites, each in a
//! new file of one temporary directory that lives as long as the factory.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bp_core::clock::ManualClock;
use bp_core::testing::conformance::Factory;
use bp_core::testing::factory_fn;
use bp_storage::sqlite::{SqliteConfig, SqliteStore};

/// Opens the store at `path` on `clock` with the default settings adjusted by `tune`.
pub fn open(path: &Path, clock: Arc<ManualClock>, tune: fn(&mut SqliteConfig)) -> SqliteStore {
    let mut config = SqliteConfig { clock, ..SqliteConfig::default() };
    tune(&mut config);
    SqliteStore::open(path, config).unwrap_or_else(|e| panic!("cannot open a SQLite store at {}: {e}", path.display()))
}

/// A factory of SQLite stores, each in a new file of one temporary directory that lives as long as
/// the factory, opened on the clock the suite gives with the default settings adjusted by `tune`,
/// and made into what the suite runs on by `make` (the store itself, or a value holding it).
pub fn stores<T: ?Sized + Send + Sync + 'static>(
    tune: fn(&mut SqliteConfig),
    make: fn(Arc<SqliteStore>) -> Arc<T>,
) -> impl Factory<S = T> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let files = AtomicUsize::new(0);
    factory_fn(move |clock: Arc<ManualClock>| {
        let store = open(&dir.path().join(format!("case-{}.db", files.fetch_add(1, Ordering::Relaxed))), clock, tune);
        async move { make(Arc::new(store)) }
    })
}

/// Two different accounts of `accounts` (at least two), chosen at random: a payer and a payee.
pub fn two_accounts(rng: &mut impl rand::Rng, accounts: &[bp_core::ids::AccountId]) -> [bp_core::ids::AccountId; 2] {
    assert!(accounts.len() >= 2, "two accounts are needed");
    let debit = accounts[rng.random_range(0..accounts.len())];
    loop {
        let credit = accounts[rng.random_range(0..accounts.len())];
        if credit != debit {
            return [debit, credit];
        }
    }
}
