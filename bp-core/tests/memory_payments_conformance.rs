//! Runs the payments conformance suite (`bp_core::testing::payments`) against the memory stores.

#![cfg(feature = "testing")]

use std::sync::Arc;

use bp_core::memory::MemoryStore;
use bp_core::security::MemorySecurityStore;
use bp_core::testing::payments::{self, PaymentStores, PaymentsFactory};

struct Memory;

impl PaymentsFactory for Memory {
    async fn fresh(&self, clock: Arc<bp_core::clock::ManualClock>) -> Arc<PaymentStores> {
        Arc::new(PaymentStores {
            ledger: Arc::new(MemoryStore::with_clock(clock)),
            security: Arc::new(MemorySecurityStore::new()),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_case() {
    payments::run_all(&Memory).await;
}
