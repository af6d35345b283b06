//! Runs the payments conformance suite (`bp_core::testing::payments`) against the memory stores.

#![cfg(feature = "testing")]

use std::sync::Arc;

use bp_core::memory::MemoryStore;
use bp_core::security::MemorySecurityStore;
use bp_core::testing::conformance::{SUITES_DIR, assert_case_list};
use bp_core::testing::payments::{self, PaymentStores};

/// Fresh memory stores on `clock`.
fn memory(clock: Arc<bp_core::clock::ManualClock>) -> Arc<PaymentStores> {
    Arc::new(PaymentStores {
        ledger: Arc::new(MemoryStore::with_clock(clock)),
        security: Arc::new(MemorySecurityStore::new()),
    })
}

/// One `#[tokio::test]` per case, so that a failure names its case.
mod memory {
    bp_core::payments_conformance_tests!(bp_core::testing::factory_fn(|clock| async move { super::memory(clock) }));
}

/// Every case function written in the suite's sources is in its list: a case left out of the
/// list would never run.
#[test]
fn every_case_is_listed() {
    assert_case_list(SUITES_DIR, "PaymentsFactory", payments::CASES);
}
