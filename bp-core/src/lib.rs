//! bp-core: the domain model, the bank's rules and the storage traits of the bp Bank Payments
//! platform. No I/O and no async runtime: pure functions decide, traits abstract.
//!
//! Start at one of the two façades integrators call: [`payments::Payments`], the payment flow
//! with strong customer authentication (over a ledger and the [`sca::Sca`] service), or
//! [`service::Ledger`], the ledger alone — over a [`store::Store`] (and a
//! [`security::SecurityStore`]) such as the memory stores here or the SQLite store of
//! `bp-storage`.

#![deny(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

pub mod account;
pub mod account_number;
pub mod api;
pub mod bus;
pub mod clock;
pub mod command;
pub mod customer;
pub mod error;
pub mod event;
pub mod external;
pub mod hooks;
pub mod iban;
pub mod ids;
pub mod invariants;
pub mod iso20022;
pub mod lease;
pub mod memory;
pub mod money;
pub mod payments;
pub mod random;
pub mod rate;
pub mod rfc3339;
pub mod rules;
pub mod sca;
pub mod security;
pub mod service;
pub mod service_record;
pub mod service_store;
pub mod state;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transfer;
pub mod transient;

/// A point in time, UTC, kept to the microsecond.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

pub use error::{Error, LedgerError, StoreError, StoreErrorKind};
pub use ids::{
    AccountId, BeneficiaryId, ChallengeId, CustomerId, DeviceId, EventId, PasskeyId, ServiceRecordId, SessionId,
    TransferId,
};
pub use money::{Currency, Money, MoneyError};
pub use payments::Payments;
pub use service::Ledger;
pub use store::Store;
