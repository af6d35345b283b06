//! Runs the payments conformance suite (`bp_core::testing::payments`) against the SQLite store,
//! which keeps the ledger and the security records in one database file (one file per case).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bp_core::clock::ManualClock;
use bp_core::testing::factory_fn;
use bp_core::testing::payments::{PaymentStores, PaymentsFactory};
use bp_storage::sqlite::{SqliteConfig, SqliteStore};

/// SQLite stores, each in a new file of one temporary directory that lives as long as the
/// factory; the one store is both the ledger and the security store.
fn sqlite() -> impl PaymentsFactory {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let files = AtomicUsize::new(0);
    factory_fn(move |clock: Arc<ManualClock>| {
        let path = dir.path().join(format!("case-{}.db", files.fetch_add(1, Ordering::Relaxed)));
        async move {
            let store = SqliteStore::open(&path, SqliteConfig { clock, ..SqliteConfig::default() })
                .unwrap_or_else(|e| panic!("cannot open a SQLite store at {}: {e}", path.display()));
            let store = Arc::new(store);
            Arc::new(PaymentStores { ledger: store.clone(), security: store })
        }
    })
}

mod sqlite_payments {
    bp_core::payments_conformance_tests!(super::sqlite());
}
