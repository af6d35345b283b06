//! Runs the store conformance suite (`bp_core::testing`) against the SQLite store, on real
//! database files in a temporary directory (one file per case), with the default settings and
//! again with settings that push the writer onto its rarer paths.

use bp_core::testing::StoreFactory;
use bp_storage::sqlite::{SqliteConfig, SqliteStore};

mod common;

/// A factory of SQLite stores, each in a new file of one temporary directory that lives as long
/// as the factory. `tune` adjusts the default settings.
fn sqlite(tune: fn(&mut SqliteConfig)) -> impl StoreFactory<S = SqliteStore> {
    common::stores(tune, |store| store)
}

/// The default settings.
mod default_config {
    bp_core::conformance_tests!(super::sqlite(|_| {}));
}

/// One command per transaction: every batch commits alone, and the deferred index runs after
/// every command.
mod batch_of_one {
    bp_core::conformance_tests!(super::sqlite(|c| c.batch_len_max = 1));
}

/// The writer forgets every transfer after each batch, so that idempotency, state checks of
/// pending transfers and duplicate ids go through the database (the unique index on the
/// transfer id) instead of the writer's memory.
mod no_transfer_cache {
    bp_core::conformance_tests!(super::sqlite(|c| c.transfer_cache_len_max = 0));
}

/// Both at once, with a queue of one: every command waits for the previous one's commit.
mod batch_of_one_no_cache {
    bp_core::conformance_tests!(super::sqlite(|c| {
        c.batch_len_max = 1;
        c.queue_len_max = 1;
        c.transfer_cache_len_max = 0;
    }));
}
