//! bp-storage: storage adapters of the bp Bank Payments platform. The memory store lives in
//! bp-core (`bp_core::memory`); this crate has the SQLite store, the embedded default, and the MongoDB store (feature
//! `mongodb`) for several servers on one replicated database.

#![deny(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

#[cfg(feature = "sqlite")]
pub mod sqlite;

#[cfg(feature = "mongodb")]
pub mod mongodb;
