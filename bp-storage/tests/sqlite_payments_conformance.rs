//! Runs the payments conformance suite (`bp_core::testing::payments`) against the SQLite store,
//! which keeps the ledger and the security records in one database file (one file per case).

use std::sync::Arc;

use bp_core::testing::payments::{PaymentStores, PaymentsFactory};

mod common;

/// SQLite stores, each in a new file; the one store is both the ledger and the security store.
fn sqlite() -> impl PaymentsFactory {
    common::stores(|_| {}, |store| Arc::new(PaymentStores { ledger: store.clone(), security: store }))
}

mod sqlite_payments {
    bp_core::payments_conformance_tests!(super::sqlite());
}
