//! Runs the store conformance suite (`bp_core::testing`) against the memory store.

#![cfg(feature = "testing")]

use std::sync::Arc;

use bp_core::memory::MemoryStore;
use bp_core::store::Store;
use bp_core::testing::conformance::{SUITES_DIR, assert_case_list};
use bp_core::testing::{self, factory_fn};

/// One `#[tokio::test]` per case, so that a failure names its case.
mod memory {
    bp_core::conformance_tests!(bp_core::testing::factory_fn(|clock| async move {
        std::sync::Arc::new(bp_core::memory::MemoryStore::with_clock(clock))
    }));
}

/// The suite also runs through a trait object, as a server holding `Arc<dyn Store>` would.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_through_dyn_store() {
    let factory = factory_fn(|clock| async move {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::with_clock(clock));
        store
    });
    testing::run_all(&factory).await;
}

/// The list of cases (shared by the macro, `run_all` and `CASES`) is complete and has no duplicates.
#[test]
fn case_list() {
    let mut names: Vec<&str> = testing::CASES.to_vec();
    assert!(names.len() >= 20, "{names:?}");
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), testing::CASES.len(), "a case is listed twice");
}

/// Every case function written in the suite's sources is in its list: a case left out of the
/// list would never run.
#[test]
fn every_case_is_listed() {
    assert_case_list(SUITES_DIR, "StoreFactory", testing::CASES);
}
