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

#[path = "common/mongodb.rs"]
mod server;

use std::sync::Arc;

use bp_core::clock::ManualClock;
use bp_core::testing::conformance::Factory;
use bp_core::testing::factory_fn;
use bp_core::testing::payments::PaymentStores;
use bp_storage::mongodb::{MongoConfig, MongoStore};
use server::{database, uri};

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
