//! Runs the security store conformance suite (`bp_core::testing::security`) against the memory
//! store.

#![cfg(feature = "testing")]

use std::sync::Arc;

use bp_core::security::{MemorySecurityStore, SecurityStore};
use bp_core::testing::conformance::{SUITES_DIR, assert_case_list};
use bp_core::testing::{factory_fn, security};

/// One `#[tokio::test]` per case, so that a failure names its case.
mod memory {
    bp_core::security_conformance_tests!(bp_core::testing::factory_fn(|_| async {
        std::sync::Arc::new(bp_core::security::MemorySecurityStore::new())
    }));
}

/// The suite also runs through a trait object, as a server holding `Arc<dyn SecurityStore>`
/// would.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_through_dyn_security_store() {
    let factory = factory_fn(|_| async {
        let store: Arc<dyn SecurityStore> = Arc::new(MemorySecurityStore::new());
        store
    });
    security::run_all(&factory).await;
}

/// The list of cases (shared by the macro, `run_all` and `CASES`) is complete and has no
/// duplicates.
#[test]
fn case_list() {
    let mut names: Vec<&str> = security::CASES.to_vec();
    assert!(names.len() >= 13, "{names:?}");
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), security::CASES.len(), "a case is listed twice");
}

/// Every case function written in the suite's sources is in its list: a case left out of the
/// list would never run.
#[test]
fn every_case_is_listed() {
    assert_case_list(SUITES_DIR, "SecurityStoreFactory", security::CASES);
}
