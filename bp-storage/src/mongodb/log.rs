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
//! **The head.** Collection `heads`, one document per writer `{_id: writer, number}`, which only
//! that writer sets, to the last batch it applied, after its insert and before answering any
//! command decided on it; the log's head is the highest of them, so every answered command's
//! batch is at or below it. One document per writer and not one shared `$max`: FerretDB 1.24
//! makes an update a read, then a write of the whole document, not one atomic step, so two
//! writers' concurrent `$max` can leave the smaller number, and a read would miss an answered
//! batch. A read therefore needs the heads (one small document per writer) and only the
//! batches between what it has applied and the head; with nothing new, that is one small
//! query instead of a miss in a segment. A writer that dies between its insert and its head
//! leaves batches past the head: no command of theirs was answered, and the next writer to
//! commit past them moves its own head past them.

use mongodb::bson::{Bson, Document, doc};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

use bp_core::error::{StoreError, StoreErrorKind};

use super::docs::{BatchDoc, CursorDoc, batch_id};
use super::{is_duplicate_key, mongo_err, to_i64};

/// Batches per segment collection: the most documents a FerretDB lookup parses.
pub(crate) const SEGMENT_LEN: u64 = 32;

/// Batches read one lookup each before the rest of a segment is read in one query.
const LOOKUPS_MAX: usize = 4;

/// Most tries of an upsert that meets a concurrent first insert of the same `_id`.
const UPSERT_TRIES_MAX: usize = 2;

/// A writer's head document, collection `heads`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HeadDoc {
    #[serde(rename = "_id")]
    pub(crate) id: String,
    /// Every batch up to this one is in the log; this writer applied it.
    pub(crate) number: u64,
    /// Since when (wall clock, microseconds) this writer has been losing the race for the next
    /// number and asks the others for a turn; absent when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) waiting_us: Option<i64>,
}

/// What the heads say.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Heads {
    /// Every batch up to this one is in the log.
    pub(crate) head: u64,
    /// The latest time another writer began to ask for a turn, if one asks.
    pub(crate) waiting_us: Option<i64>,
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
        Self { head: db.collection("heads"), cursors: db.collection("cursors"), db }
    }

    fn segment(&self, number: u64) -> Collection<BatchDoc> {
        self.db.collection(&format!("batches_{:06}", number / SEGMENT_LEN))
    }

    /// Batch `number`, if it is in the log.
    pub(crate) async fn batch(&self, number: u64) -> Result<Option<BatchDoc>, StoreError> {
        self.segment(number).find_one(doc! { "_id": batch_id(number) }).await.map_err(mongo_err)
    }

    /// The batches from `from` on, in order, up to `to` and at most to the end of `from`'s
    /// segment, stopping before the first number missing. The first `LOOKUPS_MAX` by `_id`
    /// (FerretDB's SQLite filters those, parsing each row's JSON), the rest, if wanted, in one
    /// range query (which FerretDB answers by decoding the whole segment in Go). A lookup per
    /// batch all the way made FerretDB parse the whole segment once per batch, so a process
    /// reading behind a busy writer fell further behind with every batch it read: a process
    /// started beside a busy writer did not finish opening the store in two minutes.
    pub(crate) async fn batches(&self, from: u64, to: u64) -> Result<Vec<BatchDoc>, StoreError> {
        let last = to.min((from / SEGMENT_LEN + 1) * SEGMENT_LEN - 1);
        let mut batches: Vec<BatchDoc> = Vec::new();
        let mut next = from;
        while next <= last && batches.len() < LOOKUPS_MAX {
            let Some(batch) = self.batch(next).await? else { return Ok(batches) };
            batches.push(batch);
            next += 1;
        }
        if next > last {
            return Ok(batches);
        }
        let filter = doc! { "_id": { "$gte": batch_id(next), "$lte": batch_id(last) } };
        let mut cursor = self.segment(next).find(filter).sort(doc! { "_id": 1 }).await.map_err(mongo_err)?;
        while cursor.advance().await.map_err(mongo_err)? {
            let batch: BatchDoc = cursor.deserialize_current().map_err(mongo_err)?;
            if batch.number != next {
                break;
            }
            batches.push(batch);
            next += 1;
        }
        Ok(batches)
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

    /// The heads: every batch up to `head` is in the log (0 for an empty log); and whether a
    /// writer other than `me` asks for a turn.
    pub(crate) async fn heads(&self, me: &str) -> Result<Heads, StoreError> {
        let mut cursor = self.head.find(doc! {}).await.map_err(mongo_err)?;
        let mut heads = Heads::default();
        while cursor.advance().await.map_err(mongo_err)? {
            let doc = cursor.deserialize_current().map_err(mongo_err)?;
            heads.head = heads.head.max(doc.number);
            if doc.id != me {
                heads.waiting_us = heads.waiting_us.max(doc.waiting_us);
            }
        }
        Ok(heads)
    }

    /// Sets `writer`'s head to `number`, and ends its asking for a turn. Only that writer's
    /// task calls it, one call at a time.
    pub(crate) async fn set_head(&self, writer: &str, number: u64) -> Result<(), StoreError> {
        let set = doc! { "$set": { "number": to_i64(number)? }, "$unset": { "waiting_us": "" } };
        if self.head.update_one(doc! { "_id": writer }, set).await.map_err(mongo_err)?.matched_count == 1 {
            return Ok(());
        }
        self.head.insert_one(HeadDoc { id: writer.to_owned(), number, waiting_us: None }).await.map_err(mongo_err)?;
        Ok(())
    }

    /// Marks `writer` as asking for a turn since `since_us`, until its next `set_head`.
    pub(crate) async fn ask_turn(&self, writer: &str, since_us: i64) -> Result<(), StoreError> {
        let set = doc! { "$set": { "waiting_us": since_us } };
        if self.head.update_one(doc! { "_id": writer }, set).await.map_err(mongo_err)?.matched_count == 1 {
            return Ok(());
        }
        let doc = HeadDoc { id: writer.to_owned(), number: 0, waiting_us: Some(since_us) };
        self.head.insert_one(doc).await.map_err(mongo_err)?;
        Ok(())
    }
}

/// Sets `field` of document `id` to at least `value`, inserting `{_id: id, field: value}` if
/// the document is missing. Atomic on MongoDB; on FerretDB 1.24 two concurrent calls may leave
/// the smaller value (an update there is a read and a write), so it only keeps what tolerates
/// that: outbox cursors (a cursor moved back delivers again, which consumers drop) and hints.
/// Not an upsert: FerretDB 1.24 answers an upsert that meets a taken
/// `_id` (two first upserts at once) without the `n` the driver needs, so the driver reports a
/// bad response instead of the duplicate key; an insert's duplicate key is reported as such.
pub(crate) async fn max_upsert<T: Send + Sync>(
    coll: &Collection<T>,
    id: &str,
    field: &str,
    value: impl Into<Bson> + Clone,
) -> Result<(), StoreError> {
    let raw = coll.clone_with_type::<Document>();
    for _ in 0..UPSERT_TRIES_MAX {
        let update = doc! { "$max": { field: value.clone().into() } };
        if raw.update_one(doc! { "_id": id }, update).await.map_err(mongo_err)?.matched_count == 1 {
            return Ok(());
        }
        match raw.insert_one(doc! { "_id": id, field: value.clone().into() }).await {
            Ok(_) => return Ok(()),
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(mongo_err(e)),
        }
    }
    Err(StoreError::new(StoreErrorKind::Unavailable, format!("the document {id} kept meeting a taken _id")))
}
