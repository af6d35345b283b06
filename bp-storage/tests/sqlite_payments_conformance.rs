//! Runs the payments conformance suite (`bp_core::testing::payments`) against the SQLite store,
//! which keeps the ledger and the security records in one database file (one file per case).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bp_core::clock::ManualClock;
use bp_core::testing::payments::{self, PaymentStores, PaymentsFactory};
use bp_storage::sqlite::{SqliteConfig, SqliteStore};

/// SQLite stores, each in a new file of one temporary directory that lives as long as the
/// factory.
struct Sqlite {
    dir: tempfile::TempDir,
    files: AtomicUsize,
}

impl PaymentsFactory for Sqlite {
    async fn fresh(&self, clock: Arc<ManualClock>) -> Arc<PaymentStores> {
        let path = self.dir.path().join(format!("case-{}.db", self.files.fetch_add(1, Ordering::Relaxed)));
        let store = SqliteStore::open(&path, SqliteConfig { clock, ..SqliteConfig::default() })
            .unwrap_or_else(|e| panic!("cannot open a SQLite store at {}: {e}", path.display()));
        let store = Arc::new(store);
        Arc::new(PaymentStores { ledger: store.clone(), security: store })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_case() {
    let factory = Sqlite { dir: tempfile::tempdir().expect("a temporary directory"), files: AtomicUsize::new(0) };
    payments::run_all(&factory).await;
}
