//! The shared log on the server: its segments of batch documents, and its head, the newest
//! batch number whose commands may have been answered.
//!
//! **Segments.** Batch N lives in collection `batches_<N / SEGMENT_LEN>` (six digits), under
//! `_id` [`batch_id`]`(N)`. On MongoDB a lookup by `_id` is an index lookup whatever the
//! collection's size; FerretDB 1.24 over SQLite has an `_id` index that its queries never use
//! (the index is on the expression `sjson->"_id"`, its lookups filter on `sjson->'$._id'`), so
//! every lookup there parses every document of the collection. Segments bound that cost by
//! `SEGMENT_LEN` documents instead of the whole log. The number still names exactly one
//! document in exactly one collection, so the unique `_id` is still the commit point.
//!
//! **The head.** Collection `head`, one document `{_id: "log", number}`, moved only forward
//! (`$max`). A writer moves it past its batch after the insert and before answering any
//! command decided on that batch, so every answered command's batch is at or below the head.
//! A read therefore needs the head (one document) and only the batches between what it has
//! applied and the head; with nothing new, that is one small lookup instead of a miss in a
//! segment. A writer that dies between its insert and the head leaves batches past the head:
//! no command of theirs was answered, and the next writer to commit past them moves the head.

use mongodb::bson::doc;
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

use bp_core::error::{StoreError, StoreErrorKind};

use super::docs::{BatchDoc, CursorDoc, batch_id};
use super::{is_duplicate_key, mongo_err, to_i64};

/// Batches per segment collection: the most documents a FerretDB lookup parses.
pub(crate) const SEGMENT_LEN: u64 = 256;

/// The `_id` of the head document.
const HEAD_ID: &str = "log";

/// Most tries of an upsert that meets a concurrent first insert of the same `_id`.
const UPSERT_TRIES_MAX: usize = 2;

/// The head document, collection `head`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HeadDoc {
    #[serde(rename = "_id")]
    pub(crate) id: String,
    /// Every batch up to this one is in the log.
    pub(crate) number: u64,
}

/// The collections of one database.
#[derive(Clone, Debug)]
pub(crate) struct Log {
    db: Database,
    head: Collection<HeadDoc>,
    pub(crate) cursors: Collection<CursorDoc>,
}

/// What became of inserting a batch.
pub(crate) enum Insert {
    /// This batch is the log's.
    Ours,
    /// Another batch has the number.
    Taken,
}

impl Log {
    pub(crate) fn new(db: Database) -> Self {
        Self { head: db.collection("head"), cursors: db.collection("cursors"), db }
    }

    fn segment(&self, number: u64) -> Collection<BatchDoc> {
        self.db.collection(&format!("batches_{:06}", number / SEGMENT_LEN))
    }

    /// Batch `number`, if it is in the log.
    pub(crate) async fn batch(&self, number: u64) -> Result<Option<BatchDoc>, StoreError> {
        self.segment(number).find_one(doc! { "_id": batch_id(number) }).await.map_err(mongo_err)
    }

    /// Inserts `batch` unless its number is taken. A failed insert may still have written it
    /// (a lost answer; the driver's retry of a write it did then meets a taken `_id`), so on
    /// any failure the batch under that number is read back and told by its `attempt`.
    pub(crate) async fn insert(&self, batch: &BatchDoc) -> Result<Insert, StoreError> {
        let Err(e) = self.segment(batch.number).insert_one(batch).await else { return Ok(Insert::Ours) };
        match self.batch(batch.number).await {
            Ok(Some(b)) if b.attempt == batch.attempt => Ok(Insert::Ours),
            Ok(Some(_)) => Ok(Insert::Taken),
            Ok(None) | Err(_) if is_duplicate_key(&e) => Err(StoreError::with_source(
                StoreErrorKind::Unavailable,
                "the batch's number is taken but its batch cannot be read",
                e,
            )),
            Ok(None) | Err(_) => Err(mongo_err(e)),
        }
    }

    /// The head: every batch up to it is in the log (0 for an empty log).
    pub(crate) async fn head(&self) -> Result<u64, StoreError> {
        Ok(self.head.find_one(doc! { "_id": HEAD_ID }).await.map_err(mongo_err)?.map_or(0, |h| h.number))
    }

    /// Moves the head to `number` unless it is already there or past it.
    pub(crate) async fn advance_head(&self, number: u64) -> Result<(), StoreError> {
        max_upsert(&self.head, HEAD_ID, "number", number).await
    }
}

/// Sets `field` of document `id` to at least `value`, inserting the document if it is missing.
pub(crate) async fn max_upsert<T: Send + Sync>(
    coll: &Collection<T>,
    id: &str,
    field: &str,
    value: u64,
) -> Result<(), StoreError> {
    let update = doc! { "$max": { field: to_i64(value)? } };
    // Two first upserts of one `_id` at once: one inserts, the other meets the taken `_id`
    // and, tried again, updates.
    for _ in 0..UPSERT_TRIES_MAX {
        match coll.update_one(doc! { "_id": id }, update.clone()).upsert(true).await {
            Ok(_) => return Ok(()),
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(mongo_err(e)),
        }
    }
    Err(StoreError::new(StoreErrorKind::Unavailable, format!("the upsert of {id} kept meeting a taken _id")))
}
