//! The MongoDB store (feature `mongodb`): the ledger on a document database shared by several
//! writer processes, without multi-document transactions. See `docs/storage-mongodb.md`.
//!
//! The ledger is a shared log of batch documents (collection `batches`, `_id` = batch number).
//! A writer drains queued commands (group commit), decides them with the pure
//! [`bp_core::rules::decide`] on the ledger as of the newest batch it has read, and inserts
//! their effects as batch N + 1: that one-document insert is the commit point, and the unique
//! `_id` means two writers cannot both commit the same number. A writer that loses reads the
//! batches it missed, decides its commands again on the new state and tries the next number.
//! Every store instance materialises the ledger from the log by batch number ([`replica`]), and
//! every read first reads the log's head and applies the batches up to it that it has not seen
//! ([`log`]), so a read sees every write acknowledged before it started, by any process.
//!
//! Writes use the majority write concern (journaled), reads the majority read concern.

mod docs;
mod lease;
mod log;
mod replica;
mod security;
mod writer;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use async_trait::async_trait;
use bp_core::Timestamp;
use bp_core::account::Account;
use bp_core::account_number::AccountNumber;
use bp_core::clock::{Clock, SystemClock};
use bp_core::command::{Command, Executed};
use bp_core::customer::{Customer, Username};
use bp_core::error::{Error, StoreError, StoreErrorKind};
use bp_core::event::Event;
use bp_core::ids::{AccountId, CustomerId, ServiceRecordId, TransferId};
use bp_core::lease::Lease;
use bp_core::rules::LedgerView;
use bp_core::service_record::ServiceRecord;
use bp_core::service_store::{ServiceQuery, ServiceStore};
use bp_core::store::{
    CurrencyTotal, HistoryQuery, OutboxEntry, PAGE_LEN_MAX, Page, Store, check_cursor_name, in_memory,
};
use bp_core::transfer::{Posting, Transfer};
use mongodb::bson::doc;
use mongodb::options::{Acknowledgment, ClientOptions, DatabaseOptions, ReadConcern, WriteConcern};
use mongodb::{Client, Database};
use tokio::sync::{mpsc, oneshot};

use self::docs::BatchDoc;
use self::log::{Heads, Log, SEGMENT_LEN, max_upsert};
use self::replica::Replica;
use self::security::SecurityColls;

pub use self::writer::WriterStats;

/// How the MongoDB store runs.
#[derive(Clone, Debug)]
pub struct MongoConfig {
    /// Where the time of every decision comes from.
    pub clock: Arc<dyn Clock>,
    /// Most commands decided and committed in one batch document. A batch must stay well under
    /// MongoDB's 16 MiB document limit: a transfer writes about 2 KiB.
    pub batch_len_max: usize,
    /// Most commands waiting for the writer; more are refused as `Overloaded`.
    pub queue_len_max: usize,
    /// Most times a batch is decided again after losing its number to another writer before its
    /// commands are answered `Overloaded`.
    pub attempts_max: u32,
    /// Longest a writer waits, before deciding its next batch, while another writer that keeps
    /// losing the race for the next number asks for a turn (see `writer`).
    pub yield_ms_max: u64,
    /// The bound of every server operation (`wtimeout` of the majority write concern, and the
    /// driver's server selection and connection timeouts).
    pub timeout_ms: u64,
}

impl Default for MongoConfig {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            batch_len_max: 256,
            queue_len_max: 4096,
            attempts_max: 64,
            yield_ms_max: 1_000,
            timeout_ms: 10_000,
        }
    }
}

/// The log applied in memory, and the lock that keeps two catch-ups of one process from
/// reading the same batches twice.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) replica: RwLock<Replica>,
    catching_up: tokio::sync::Mutex<()>,
    /// How many catch-ups have begun reading the log (counted under `catching_up`).
    catch_ups_begun: AtomicU64,
    /// The count of `catch_ups_begun` that the last catch-up to the head took.
    last_complete: AtomicU64,
    /// The highest head this process read or wrote.
    pub(crate) head_seen: AtomicU64,
    /// This process's writer: its head document's `_id`.
    pub(crate) writer_id: String,
    /// When another writer last began asking for a turn, as the last read of the heads said
    /// (wall clock, microseconds; 0 when none asks).
    pub(crate) others_waiting_us: AtomicI64,
    pub(crate) log: Log,
    pub(crate) security: SecurityColls,
    /// The lease grants (`lease`).
    leases: mongodb::Collection<lease::GrantDoc>,
    /// The highest audit position this process appended or saw.
    pub(crate) audit_hint: AtomicU64,
}

impl Shared {
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Replica> {
        self.replica.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies every batch of the log up to its head, so that the replica holds every batch
    /// with a command answered before the call (`log`). Answers the last batch applied.
    ///
    /// Concurrent callers share the work: a caller that waited for another's catch-up which
    /// *began* after this call began needs no read of its own, since that catch-up read a head
    /// at or past every batch answered before this call. Under load a read then waits for at
    /// most about two catch-ups, not for every reader queued before it.
    pub(crate) async fn catch_up(&self) -> Result<u64, StoreError> {
        let begun_before = self.catch_ups_begun.load(Ordering::Acquire);
        let _turn = self.catching_up.lock().await;
        if self.last_complete.load(Ordering::Acquire) > begun_before {
            return Ok(self.read().applied);
        }
        let ticket = self.catch_ups_begun.fetch_add(1, Ordering::AcqRel) + 1;
        let Heads { head, waiting_us } = self.log.heads(&self.writer_id).await?;
        self.head_seen.fetch_max(head, Ordering::AcqRel);
        self.others_waiting_us.store(waiting_us.unwrap_or(0), Ordering::Release);
        while self.read().applied < head {
            let next = self.read().applied + 1;
            if self.apply(self.log.batches(next, head).await?)? == 0 {
                return Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!("batch {next} of the log is not readable yet, though the head is at {head}"),
                ));
            }
        }
        self.last_complete.store(ticket, Ordering::Release);
        Ok(self.read().applied)
    }

    /// Applies the batches of the log past the head too, up to the first number missing when
    /// each segment was read: what a writer that lost its number needs before it decides
    /// again. One query per segment, so that it ends even while other writers append.
    pub(crate) async fn catch_up_to_end(&self) -> Result<u64, StoreError> {
        let _turn = self.catching_up.lock().await;
        loop {
            let next = self.read().applied + 1;
            let applied = self.apply(self.log.batches(next, u64::MAX).await?)?;
            // Only a read that ended at its segment's end may have more after it.
            if applied == 0 || (next + applied) % SEGMENT_LEN != 0 {
                return Ok(self.read().applied);
            }
        }
    }

    /// Applies `batches` in order; answers how many.
    fn apply(&self, batches: Vec<BatchDoc>) -> Result<u64, StoreError> {
        let count = u64::try_from(batches.len()).unwrap_or(u64::MAX);
        let mut replica = self.replica.write().unwrap_or_else(PoisonError::into_inner);
        for batch in batches {
            replica.apply(batch)?;
        }
        Ok(count)
    }
}

/// The MongoDB [`Store`] and [`ServiceStore`]. Cloning shares the same writer and replica.
#[derive(Clone, Debug)]
pub struct MongoStore {
    jobs: mpsc::Sender<writer::Job>,
    shared: Arc<Shared>,
    stats: Arc<WriterStats>,
}

/// Maps a driver error to the store's kinds: a timeout or a lost server is `Unavailable`.
pub(crate) fn mongo_err(e: mongodb::error::Error) -> StoreError {
    use mongodb::error::ErrorKind;
    let kind = match *e.kind {
        ErrorKind::InvalidArgument { .. } => StoreErrorKind::InvalidRequest,
        ErrorKind::BsonDeserialization(_) => StoreErrorKind::Corrupt,
        ErrorKind::Shutdown => StoreErrorKind::Closed,
        _ => StoreErrorKind::Unavailable,
    };
    StoreError::with_source(kind, "MongoDB failed", e)
}

/// True for a write refused because its `_id` (or another unique key) is taken.
pub(crate) fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    const DUPLICATE_KEY: i32 = 11000;
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(we)) => we.code == DUPLICATE_KEY,
        ErrorKind::Command(ce) => ce.code == DUPLICATE_KEY,
        _ => false,
    }
}

pub(crate) fn to_i64(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::new(StoreErrorKind::InvalidRequest, "a number past i64::MAX"))
}

fn limit_of(limit: u32) -> usize {
    usize::try_from(limit.min(PAGE_LEN_MAX)).unwrap_or(usize::MAX)
}

impl MongoStore {
    /// Connects to the deployment at `uri` and opens the ledger in database `database`: reads
    /// the whole log, and opens the rails' clearing accounts if the log has not.
    pub async fn connect(uri: &str, database: &str, config: MongoConfig) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(uri).await.map_err(mongo_err)?;
        let timeout = Duration::from_millis(config.timeout_ms);
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        options.retry_writes = Some(true);
        options.app_name = Some("bp-storage".to_owned());
        let client = Client::with_options(options).map_err(mongo_err)?;
        Self::open(&client, database, config).await
    }

    /// Opens the ledger in database `database` of `client`.
    pub async fn open(client: &Client, database: &str, config: MongoConfig) -> Result<Self, StoreError> {
        let db = database_of(client, database, config.timeout_ms);
        let security = SecurityColls::new(&db);
        security.create_indexes(&db).await?;
        let shared = Arc::new(Shared {
            replica: RwLock::new(Replica::new()),
            catching_up: tokio::sync::Mutex::new(()),
            catch_ups_begun: AtomicU64::new(0),
            last_complete: AtomicU64::new(0),
            head_seen: AtomicU64::new(0),
            writer_id: uuid::Uuid::now_v7().to_string(),
            others_waiting_us: AtomicI64::new(0),
            security,
            leases: lease::grants(&db),
            audit_hint: AtomicU64::new(0),
            log: Log::new(db),
        });
        shared.catch_up().await?;
        let stats = Arc::new(WriterStats::default());
        let (jobs, rx) = mpsc::channel(config.queue_len_max.max(1));
        let mut w = writer::Writer::new(Arc::clone(&shared), config.clone(), Arc::clone(&stats));
        w.open_clearing_accounts().await?;
        tokio::spawn(w.run(rx));
        Ok(Self { jobs, shared, stats })
    }

    /// The writer's counters: batches committed, races lost.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    async fn fresh(&self) -> Result<RwLockReadGuard<'_, Replica>, StoreError> {
        self.shared.catch_up().await?;
        Ok(self.shared.read())
    }
}

fn database_of(client: &Client, name: &str, timeout_ms: u64) -> Database {
    let write = WriteConcern::builder()
        .w(Acknowledgment::Majority)
        .journal(true)
        .w_timeout(Duration::from_millis(timeout_ms))
        .build();
    let options = DatabaseOptions::builder().write_concern(write).read_concern(ReadConcern::majority()).build();
    client.database_with_options(name, options)
}

#[async_trait]
impl Store for MongoStore {
    async fn execute(&self, cmd: Command) -> Result<Executed, Error> {
        let (reply, answer) = oneshot::channel();
        self.jobs.try_send(writer::Job { cmd, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                StoreError::new(StoreErrorKind::Overloaded, "the MongoDB writer's queue is full")
            }
            mpsc::error::TrySendError::Closed(_) => StoreError::new(StoreErrorKind::Closed, "the store is closed"),
        })?;
        answer.await.map_err(|_| StoreError::new(StoreErrorKind::Closed, "the MongoDB writer stopped"))?
    }

    async fn customer(&self, id: CustomerId) -> Result<Option<Customer>, StoreError> {
        Ok(self.fresh().await?.state.customer(id).cloned())
    }

    async fn customer_by_username(&self, username: &Username) -> Result<Option<Customer>, StoreError> {
        let r = self.fresh().await?;
        Ok(r.state.customer_by_username(username).and_then(|id| r.state.customer(id)).cloned())
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        Ok(self.fresh().await?.state.account(id).cloned())
    }

    async fn account_by_number(&self, number: AccountNumber) -> Result<Option<Account>, StoreError> {
        Ok(self.fresh().await?.account_by_number(number).cloned())
    }

    async fn accounts_of(&self, customer: CustomerId) -> Result<Vec<Account>, StoreError> {
        let r = self.fresh().await?;
        let mut accounts: Vec<Account> =
            r.state.accounts().filter(|a| a.customer_id() == Some(customer)).cloned().collect();
        accounts.sort_by_key(|a| (a.opened_at, a.number.serial()));
        Ok(accounts)
    }

    async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        Ok(self.fresh().await?.state.transfer(id).cloned())
    }

    async fn postings(&self, account: AccountId, query: &HistoryQuery) -> Result<Page<Posting>, StoreError> {
        let r = self.fresh().await?;
        Ok(in_memory::history_page(r.postings.get(&account).map(Vec::as_slice).unwrap_or_default(), query))
    }

    async fn events_after(&self, account: AccountId, after_seq: u64, limit: u32) -> Result<Vec<Event>, StoreError> {
        let r = self.fresh().await?;
        Ok(in_memory::events_after(r.events.get(&account).map(Vec::as_slice).unwrap_or_default(), after_seq, limit))
    }

    async fn outbox_after(&self, after: u64, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(in_memory::outbox_after(&self.fresh().await?.outbox, after, limit))
    }

    async fn pending_expired(&self, now: Timestamp, limit: u32) -> Result<Vec<TransferId>, StoreError> {
        Ok(in_memory::pending_expired(self.fresh().await?.state.transfers(), now, limit))
    }

    async fn pending_of(&self, account: AccountId, limit: u32) -> Result<Vec<Transfer>, StoreError> {
        Ok(in_memory::pending_of(self.fresh().await?.state.transfers(), account, limit))
    }

    async fn totals(&self) -> Result<Vec<CurrencyTotal>, StoreError> {
        Ok(CurrencyTotal::sum_of(self.fresh().await?.state.accounts()))
    }

    async fn cursor(&self, name: &str) -> Result<u64, StoreError> {
        check_cursor_name(name)?;
        let found = self.shared.log.cursors.find_one(doc! { "_id": name }).await.map_err(mongo_err)?;
        Ok(found.map_or(0, |c| c.position))
    }

    async fn set_cursor(&self, name: &str, position: u64) -> Result<(), StoreError> {
        check_cursor_name(name)?;
        max_upsert(&self.shared.log.cursors, name, "position", to_i64(position)?).await
    }

    async fn acquire_lease(&self, name: &str, holder: &str, now: Timestamp, ms: u32) -> Result<Lease, StoreError> {
        lease::acquire(&self.shared.leases, name, holder, now, ms).await
    }

    async fn release_lease(&self, name: &str, holder: &str, token: u64, now: Timestamp) -> Result<bool, StoreError> {
        lease::release(&self.shared.leases, name, holder, token, now).await
    }
}

fn take<'a>(records: impl Iterator<Item = &'a ServiceRecord>, limit: u32) -> Vec<ServiceRecord> {
    records.take(limit_of(limit)).cloned().collect()
}

#[async_trait]
impl ServiceStore for MongoStore {
    async fn service_record(&self, id: ServiceRecordId) -> Result<Option<ServiceRecord>, StoreError> {
        Ok(self.fresh().await?.state.service_record(id).cloned())
    }

    async fn due(&self, now: Timestamp, limit: u32) -> Result<Vec<ServiceRecord>, StoreError> {
        let r = self.fresh().await?;
        let mut due: Vec<&ServiceRecord> =
            r.state.services().filter(|s| s.next_check_at.is_some_and(|at| at <= now)).collect();
        due.sort_by_key(|s| (s.next_check_at, s.id));
        Ok(take(due.into_iter(), limit))
    }

    async fn stuck(&self, limit: u32) -> Result<Vec<ServiceRecord>, StoreError> {
        let r = self.fresh().await?;
        let mut stuck: Vec<&ServiceRecord> = r.state.services().filter(|s| s.stuck_since.is_some()).collect();
        stuck.sort_by_key(|s| (s.stuck_since, s.id));
        Ok(take(stuck.into_iter(), limit))
    }

    async fn service_records_of(
        &self,
        customer: CustomerId,
        query: &ServiceQuery,
    ) -> Result<Page<ServiceRecord>, StoreError> {
        let r = self.fresh().await?;
        Ok(query.page_of(&r.services, &r.state, customer))
    }
}
