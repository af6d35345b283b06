//! Runs the services conformance suite (`bp_core::testing::services`) against the SQLite store,
//! one database file per case, with the default settings and with a writer that forgets every
//! transfer and service record after each batch (so that they are read back from the file).

use bp_core::testing::services::ServicesFactory;
use bp_storage::sqlite::{SqliteConfig, SqliteStore};

mod common;

fn sqlite(tune: fn(&mut SqliteConfig)) -> impl ServicesFactory<S = SqliteStore> {
    common::stores(tune, |store| store)
}

mod default_config {
    bp_core::services_conformance_tests!(super::sqlite(|_| {}));
}

mod no_cache_batch_of_one {
    bp_core::services_conformance_tests!(super::sqlite(|c| {
        c.batch_len_max = 1;
        c.transfer_cache_len_max = 0;
    }));
}
