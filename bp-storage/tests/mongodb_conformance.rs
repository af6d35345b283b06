//! Runs bp-core's store, services, security store and payments conformance suites against the
//! MongoDB store on the real server that `BP_MONGODB_URI` names (scripts/test.sh starts
//! FerretDB with scripts/ferretdb.sh and sets it). Each case gets a database of its own. The tests are
//! `#[ignore]`d, so a plain `cargo test` skips them, and fail loudly when the variable is unset:
//!
//! ```text
//! BP_MONGODB_URI=mongodb://127.0.0.1:PORT/ cargo test -p bp-storage --features mongodb \
//!     --test mongodb_conformance -- --ignored
//! ```
//!
//! The payments suite runs on one MongoDB store as its ledger and its security store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bp_core::clock::ManualClock;
use bp_core::testing::conformance::Factory;
use bp_core::testing::factory_fn;
use bp_core::testing::payments::PaymentStores;
use bp_storage::mongodb::{MongoConfig, MongoStore};

/// The server's URI; panics naming the variable when it is unset.
pub fn uri() -> String {
    std::env::var("BP_MONGODB_URI").unwrap_or_else(|_| {
        panic!(
            "BP_MONGODB_URI is not set: these tests need a MongoDB-protocol server \
             (scripts/test.sh starts FerretDB with scripts/ferretdb.sh and sets it)"
        )
    })
}

/// A database name no other test of this run, or of an earlier run, uses: the process, a
/// number no other case of this process took, and a v7 UUID's random bits. (Each case builds
/// its own factory, so a per-factory count starts at 0 in every case; an earlier version named
/// databases by that count and the UUID's first 12 digits, its millisecond, so two cases
/// starting in the same millisecond shared one database, and one saw the other's customers:
/// `UsernameTaken`.)
fn database(label: &str) -> String {
    static CASES: AtomicUsize = AtomicUsize::new(0);
    let n = CASES.fetch_add(1, Ordering::Relaxed);
    let random = uuid::Uuid::now_v7().simple().to_string();
    format!("bp_{label}_{}_{n}_{}", std::process::id(), random.get(16..).unwrap_or(&random))
}

/// Stores, each in a new database, made into what a suite runs on by `make`.
fn stores<T: ?Sized + Send + Sync + 'static>(
    label: &'static str,
    tune: fn(&mut MongoConfig),
    make: fn(Arc<MongoStore>) -> Arc<T>,
) -> impl Factory<S = T> {
    let uri = uri();
    factory_fn(move |clock: Arc<ManualClock>| {
        let uri = uri.clone();
        let name = database(label);
        async move {
            let mut config = MongoConfig { clock, ..MongoConfig::default() };
            tune(&mut config);
            let store = MongoStore::connect(&uri, &name, config)
                .await
                .unwrap_or_else(|e| panic!("cannot open a MongoDB store in {name} at BP_MONGODB_URI: {e}"));
            make(Arc::new(store))
        }
    })
}

// bp-core's public suite macros take no attributes; their case lists (hidden, exported) take
// the `#[ignore]` that keeps these tests out of a plain `cargo test`.

mod store {
    bp_core::__store_conformance_cases!(@tests (super::stores("store", |_| {}, |s| s))
        #[ignore = "needs a MongoDB-protocol server: BP_MONGODB_URI (scripts/test.sh starts FerretDB)"]);
}

mod services {
    bp_core::__services_conformance_cases!(@tests (super::stores("services", |_| {}, |s| s))
        #[ignore = "needs a MongoDB-protocol server: BP_MONGODB_URI (scripts/test.sh starts FerretDB)"]);
}

mod security {
    bp_core::__security_conformance_cases!(@tests (super::stores("security", |_| {}, |s| s))
        #[ignore = "needs a MongoDB-protocol server: BP_MONGODB_URI (scripts/test.sh starts FerretDB)"]);
}

mod payments {
    use super::*;

    fn all_on_mongodb(store: Arc<MongoStore>) -> Arc<PaymentStores> {
        Arc::new(PaymentStores { ledger: store.clone(), security: store })
    }

    bp_core::__payments_conformance_cases!(@tests (super::stores("payments", |_| {}, all_on_mongodb))
        #[ignore = "needs a MongoDB-protocol server: BP_MONGODB_URI (scripts/test.sh starts FerretDB)"]);
}
