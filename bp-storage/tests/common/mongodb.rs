//! What the tests on a MongoDB-protocol server share: the server's URI from `BP_MONGODB_URI`
//! (scripts/test.sh starts FerretDB with scripts/ferretdb.sh and sets it), and database names
//! no other test uses.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

/// The variable naming the server.
pub const URI_ENV: &str = "BP_MONGODB_URI";

/// The server's URI; panics naming the variable when it is unset.
pub fn uri() -> String {
    std::env::var(URI_ENV).unwrap_or_else(|_| {
        panic!(
            "{URI_ENV} is not set: these tests need a MongoDB-protocol server \
             (scripts/test.sh starts FerretDB with scripts/ferretdb.sh and sets it)"
        )
    })
}

/// A database name no other test of this run, or of an earlier run, uses: the process, a
/// number no other case of this process took, and a v7 UUID's random bits. (Each case builds
/// its own factory, so a per-factory count starts at 0 in every case; an earlier version named
/// databases by that count and the UUID's first 12 digits, its millisecond, so two cases
/// starting in the same millisecond shared one database, and one saw the other's customers:
/// `UsernameTaken`.)
pub fn database(label: &str) -> String {
    static CASES: AtomicUsize = AtomicUsize::new(0);
    let n = CASES.fetch_add(1, Ordering::Relaxed);
    let random = uuid::Uuid::now_v7().simple().to_string();
    format!("bp_{label}_{}_{n}_{}", std::process::id(), random.get(16..).unwrap_or(&random))
}
