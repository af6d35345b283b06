//! Online backup of a SQLite store's file: a consistent snapshot copied while the store serves.
//!
//! The copy is made with SQLite's online backup API in **one step**: one read transaction of
//! the source, so the copy is the database as of one commit, whatever the writer commits
//! meanwhile (WAL readers never block the writer, nor it them). Each of the store's batches is
//! one transaction, so a snapshot holds whole batches: it is what the file would hold after a
//! power cut at that instant, which the store recovers from on open like any other restart
//! (`SqliteStore::open` replays the journal and refuses a ledger whose currencies do not sum to
//! zero). The copy is checked (`PRAGMA integrity_check`), written under a temporary name, made
//! durable and only then renamed to the name asked for.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bp_core::{StoreError, StoreErrorKind};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::sql_err;

/// How often a backup step that finds the source busy or locked is tried again before the
/// backup gives up with `Unavailable`.
const BUSY_ATTEMPTS_MAX: u32 = 100;
/// The pause between those attempts (milliseconds).
const BUSY_PAUSE_MS: u64 = 50;

/// What a finished backup holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupReport {
    /// Where the copy is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its schema version (`SCHEMA_VERSION` of the build that last wrote the source).
    pub schema_version: i64,
}

/// Copies a consistent snapshot of the store's database at `source` to a new file at
/// `destination`, while a store (in this process or another on the same machine) may be
/// writing the source.
///
/// Refuses (`Conflict`) a `destination` that exists, and (`InvalidRequest`) a source that is not
/// a bp database. The copy is written to `<destination>.partial` first, checked with
/// `PRAGMA integrity_check`, synced, then renamed, and the folder synced: a crash leaves either
/// no `destination` or a whole one. A stale `.partial` of an interrupted backup is replaced.
///
/// Only the source's read transaction is held for the copy's length: the writer goes on, but
/// checkpoints cannot pass the snapshot until the copy ends, so the source's WAL grows by what
/// is committed meanwhile (see "Long readers" in `docs/storage-sqlite.md`).
pub fn backup(source: impl AsRef<Path>, destination: impl AsRef<Path>) -> Result<BackupReport, StoreError> {
    let (source, destination) = (source.as_ref(), destination.as_ref());
    if destination.exists() {
        return Err(StoreError::new(
            StoreErrorKind::Conflict,
            format!("the backup's destination {} exists already", destination.display()),
        ));
    }
    // Read-write without create: a missing source fails instead of being made, and a WAL
    // database opens whether or not its -shm file is there; `query_only` keeps it unwritten.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let src = Connection::open_with_flags(source, flags).map_err(sql_err)?;
    src.busy_timeout(Duration::from_secs(5)).map_err(sql_err)?;
    src.execute_batch("PRAGMA query_only = ON").map_err(sql_err)?;
    let schema_version: i64 = src.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sql_err)?;
    if schema_version == 0 {
        return Err(StoreError::new(
            StoreErrorKind::InvalidRequest,
            format!("{} is not a bp database (schema version 0)", source.display()),
        ));
    }

    let mut partial = destination.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    remove_if_present(&partial)?;
    let result = copy_and_check(&src, &partial);
    drop(src);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    sync_file(&partial)?;
    std::fs::rename(&partial, destination).map_err(io_err)?;
    if let Some(dir) = destination.parent().filter(|d| !d.as_os_str().is_empty()) {
        sync_file(dir)?;
    }
    let bytes = std::fs::metadata(destination).map_err(io_err)?.len();
    Ok(BackupReport { path: destination.to_owned(), bytes, schema_version })
}

/// The whole database in one backup step (one read transaction: one snapshot), then the
/// copy's integrity check.
fn copy_and_check(src: &Connection, partial: &Path) -> Result<(), StoreError> {
    let mut dst = Connection::open(partial).map_err(sql_err)?;
    {
        let copy = Backup::new(src, &mut dst).map_err(sql_err)?;
        let mut attempts = 0;
        loop {
            match copy.step(-1).map_err(sql_err)? {
                StepResult::Done => break,
                StepResult::Busy | StepResult::Locked if attempts < BUSY_ATTEMPTS_MAX => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(BUSY_PAUSE_MS));
                }
                // `More` cannot follow a step of every page; a copy in several steps would be
                // no single snapshot, so it is refused rather than continued.
                other => {
                    return Err(StoreError::new(
                        StoreErrorKind::Unavailable,
                        format!("the backup did not finish in one step: {other:?} after {attempts} retries"),
                    ));
                }
            }
        }
    }
    let verdict: String = dst.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(sql_err)?;
    if verdict != "ok" {
        return Err(StoreError::new(StoreErrorKind::Corrupt, format!("the copy fails its integrity check: {verdict}")));
    }
    dst.close().map_err(|(_, e)| sql_err(e))
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(e)),
        _ => Ok(()),
    }
}

fn sync_file(path: &Path) -> Result<(), StoreError> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(io_err)
}

fn io_err(e: std::io::Error) -> StoreError {
    let kind = match e.kind() {
        std::io::ErrorKind::StorageFull => StoreErrorKind::StorageFull,
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied => StoreErrorKind::ReadOnly,
        _ => StoreErrorKind::Unavailable,
    };
    StoreError::with_source(kind, "writing the backup failed", e)
}
