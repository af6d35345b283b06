//! What bp-core gives every store's tests: the conformance suites, written once and run against
//! every backend, the machinery they share ([`conformance`]), the fixtures ([`fixtures`]), and
//! a reader of a store's books for [`invariants::check`](crate::invariants::check) ([`books`]).
//!
//! This module is the suite of the [`Store`] trait. A backend plugs in through a
//! [`StoreFactory`], which makes a fresh, empty store on a given [`ManualClock`] for every case.
//! The easiest way to run the suite is the [`conformance_tests!`](crate::conformance_tests)
//! macro, which expands into one `#[tokio::test]` per case, so that a failure names its case:
//!
//! ```text
//! // tests/sqlite_conformance.rs of an adapter crate (needs `tokio` with the `macros` and
//! // `rt-multi-thread` features as a dev-dependency, and bp-core with the `testing` feature).
//! mod sqlite {
//!     bp_core::conformance_tests!(bp_core::testing::factory_fn(|clock| async move {
//!         // Open a store in a fresh temporary file, on `clock`.
//!         std::sync::Arc::new(my_store_on(clock))
//!     }));
//! }
//! ```
//!
//! [`run_all`] runs every case in one test instead, and each case is also a public `async fn`
//! of this module (listed in [`CASES`]) for adapters that want to pick.
//!
//! Every case checks each rejected command twice: the error must be the rule the case breaks,
//! and nothing may have changed (balances, holds, events, postings, the outbox, the totals). Each
//! case ends by re-reading the whole ledger and checking it with
//! [`invariants::check`](crate::invariants::check) (balances equal the sum of postings, gap-free
//! event numbers, every currency summing to zero, ...).
//!
//! The suite of the [`SecurityStore`](crate::security::SecurityStore) trait is in [`security`],
//! with its own factory trait and its own macro,
//! [`security_conformance_tests!`](crate::security_conformance_tests), on the same machinery.
//!
//! Randomised cases draw from a seeded generator; set `BP_CONFORMANCE_SEED` to replay a seed
//! that a failure printed.

// Amounts in the cases are written as major_minor units: `100_00` is 100.00 EUR.
#![allow(clippy::inconsistent_digit_grouping)]

#[cfg(doc)]
use crate::clock::ManualClock;
use crate::store::Store;

mod accounts;
pub mod books;
mod concurrency;
pub mod conformance;
mod customers;
mod events;
pub mod fixtures;
pub mod fx;
mod harness;
mod history;
mod leases;
pub mod model;
pub mod payments;
mod pending;
pub mod security;
pub mod services;
mod transfers;

pub use accounts::{account_open, account_status};
pub use concurrency::{concurrent_idempotency, concurrent_transfers};
pub use conformance::{Factory, FnFactory, factory_fn};
pub use customers::{customer_open, customer_update, customer_validation};
pub use events::{events_and_outbox, outbox_cursors};
pub use history::{history_filters, history_invalid, history_pagination};
pub use leases::{leases, leases_race};
pub use pending::{pending_errors, pending_expiry, pending_lifecycle, pending_list};
pub use transfers::{
    balance_overflow, funding_and_internal_transfer, idempotency, kind_rules, overdraft_boundary, transfer_rejections,
};

/// A [`Factory`] of ledger stores: the factory of this suite. Every [`Factory`] whose value is a
/// [`Store`] is one.
pub trait StoreFactory: Factory<S: Store> {}

impl<F: Factory<S: Store>> StoreFactory for F {}

/// Runs every case of the suite, one after the other, each on a fresh store from `factory`.
/// Panics on the first failure, naming the case.
pub async fn run_all<F: StoreFactory>(factory: &F) {
    crate::__store_conformance_cases!(@run_all factory);
}

/// The names of the cases, in the order [`run_all`] runs them; each is a function of this module.
pub const CASES: &[&str] = crate::__store_conformance_cases!(@names);

/// Expands into one `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]` per case of the
/// store conformance suite, each on a fresh store from the factory expression (an
/// `impl StoreFactory`, evaluated once per test). Invoke it inside a module of its own; the crate
/// needs `tokio` (features `macros`, `rt-multi-thread`) as a dev-dependency.
///
/// ```no_run
/// mod memory {
///     bp_core::conformance_tests!(bp_core::testing::factory_fn(|clock| async move {
///         std::sync::Arc::new(bp_core::memory::MemoryStore::with_clock(clock))
///     }));
/// }
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::__store_conformance_cases!(@tests ($factory));
    };
}

/// The list of cases, written once for [`run_all`], [`CASES`] and [`conformance_tests!`]; see
/// [`conformance`] for the expansions.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_cases {
    ($($mode:tt)*) => {
        $crate::__conformance! { $($mode)* "store" [$crate::testing]
            customer_open
            customer_validation
            customer_update
            account_open
            account_status
            funding_and_internal_transfer
            transfer_rejections
            kind_rules
            overdraft_boundary
            balance_overflow
            idempotency
            pending_lifecycle
            pending_expiry
            pending_errors
            pending_list
            history_pagination
            history_filters
            history_invalid
            events_and_outbox
            outbox_cursors
            leases
            leases_race
            concurrent_transfers
            concurrent_idempotency
        }
    };
}
