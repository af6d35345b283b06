//! Runs the services conformance suite (`bp_core::testing::services`) against the memory store.

#![cfg(feature = "testing")]

use bp_core::testing::conformance::{SUITES_DIR, assert_case_list};
use bp_core::testing::services;

/// One `#[tokio::test]` per case, so that a failure names its case.
mod memory {
    bp_core::services_conformance_tests!(bp_core::testing::factory_fn(|clock| async move {
        std::sync::Arc::new(bp_core::memory::MemoryStore::with_clock(clock))
    }));
}

/// Every case function written in the suite's sources is in its list: a case left out of the
/// list would never run.
#[test]
fn every_case_is_listed() {
    assert_case_list(SUITES_DIR, "ServicesFactory", services::CASES);
}
