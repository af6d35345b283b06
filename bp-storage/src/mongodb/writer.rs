//! The writer of one store instance: group commit over the shared log. It drains queued
//! commands, decides them on the ledger as of the newest batch it has read, and inserts their
//! effects as the next batch; when another writer took that number first it catches up and
//! decides them again. A command is answered only once the batch its answer was decided on is
//! the log's (or, for a command that writes nothing, once the state it was decided on was).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bp_core::command::{Command, Executed};
use bp_core::error::{Error, StoreError, StoreErrorKind};
use bp_core::external::rail::clearing_accounts;
use bp_core::rules::{Effects, LedgerView, Write, decide, system_account};
use tokio::sync::{mpsc, oneshot};

use super::docs::{BatchDoc, EffectsDoc};
use super::log::Insert;
use super::replica::Overlay;
use super::{MongoConfig, Shared};

/// One queued command and where its answer goes.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) cmd: Command,
    pub(crate) reply: oneshot::Sender<Result<Executed, Error>>,
}

/// Counters of one store instance's writer.
#[derive(Debug, Default)]
pub struct WriterStats {
    batches: AtomicU64,
    races_lost: AtomicU64,
}

impl WriterStats {
    /// Batches this writer committed.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Times another writer committed the number this writer tried, so that it decided again.
    pub fn races_lost(&self) -> u64 {
        self.races_lost.load(Ordering::Relaxed)
    }
}

/// What became of one try at committing a batch.
enum Try {
    /// The batch is the log's (or there was nothing to write).
    Committed,
    /// Another writer took the number: catch up and decide again.
    Lost,
}

#[derive(Debug)]
pub(crate) struct Writer {
    shared: Arc<Shared>,
    config: MongoConfig,
    stats: Arc<WriterStats>,
    attempts: u64,
    /// When this writer last asked the others for a turn, while it does.
    waiting_us: Option<i64>,
}

/// How long an ask for a turn counts, in microseconds of the wall clock.
const TURN_FRESH_US: i64 = 5_000_000;
/// How often a writer giving a turn reads the heads again.
const TURN_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// The wall clock in microseconds. Asks for a turn are compared across processes, and only
/// pace the writers: they are not the ledger's time, which is `MongoConfig::clock`.
fn wall_clock_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>, config: MongoConfig, stats: Arc<WriterStats>) -> Self {
        Self { shared, config, stats, attempts: 0, waiting_us: None }
    }

    /// Serves the queue until every sender is gone.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let batch_len_max = self.config.batch_len_max.max(1);
        while let Some(first) = rx.recv().await {
            let mut jobs = vec![first];
            while jobs.len() < batch_len_max {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let answers = self.commit(&jobs).await;
            for (job, answer) in jobs.into_iter().zip(answers) {
                // The caller may have gone away; its command's fate is in the log either way.
                let _ = job.reply.send(answer);
            }
        }
    }

    /// Decides and commits `jobs`, answering each. The ledger is first brought up to the log's
    /// head, so that a command that writes nothing (a replay, a refusal) is answered on a
    /// state no older than any answer given before it arrived.
    async fn commit(&mut self, jobs: &[Job]) -> Vec<Result<Executed, Error>> {
        let fail =
            |e: StoreError| jobs.iter().map(|_| Err(Error::Store(StoreError::new(e.kind(), e.to_string())))).collect();
        if let Err(e) = self.shared.catch_up().await {
            return fail(e);
        }
        if let Err(e) = self.give_turn().await {
            return fail(e);
        }
        for _ in 0..self.config.attempts_max.max(1) {
            let (answers, commands, number) = self.decide(jobs);
            let tried = match self.try_commit(number, commands).await {
                Ok(Try::Committed) => self.publish().await.map(|()| true),
                Ok(Try::Lost) => self.lost().await.map(|()| false),
                Err(e) => Err(e),
            };
            match tried {
                Ok(true) => return answers,
                Ok(false) => {}
                Err(e) => return fail(e),
            }
        }
        fail(StoreError::new(
            StoreErrorKind::Overloaded,
            format!("lost the race for the next batch {} times in a row", self.config.attempts_max),
        ))
    }

    /// Moves the log's head to the last batch applied, before any command decided on it is
    /// answered, unless this process already saw it there: a read anywhere then sees those
    /// batches. (Batches past the head that a lost race made this writer read are covered too.)
    /// Ends this writer's asking for a turn.
    async fn publish(&mut self) -> Result<(), StoreError> {
        let applied = self.shared.read().applied;
        if self.waiting_us.is_none() && self.shared.head_seen.load(Ordering::Acquire) >= applied {
            return Ok(());
        }
        self.shared.log.set_head(&self.shared.writer_id, applied).await?;
        self.shared.head_seen.fetch_max(applied, Ordering::AcqRel);
        self.waiting_us = None;
        Ok(())
    }

    /// After another writer took the number: asks the others for a turn (again, if its last
    /// ask is getting old), and reads the batches it missed.
    async fn lost(&mut self) -> Result<(), StoreError> {
        self.stats.races_lost.fetch_add(1, Ordering::Relaxed);
        let now = wall_clock_us();
        if self.waiting_us.is_none_or(|since| now - since > TURN_FRESH_US / 2) {
            self.shared.log.ask_turn(&self.shared.writer_id, now).await?;
            self.waiting_us = Some(now);
        }
        self.shared.catch_up_to_end().await.map(|_| ())
    }

    /// Waits, up to `yield_ms_max`, while another writer that lost the race for the next
    /// number asks for a turn. Without it, a writer whose round trip is the shortest takes
    /// every number: on FerretDB one busy writer process kept two others from committing
    /// anything for minutes, since a loser must also read what it missed before it tries
    /// again. A writer that asks for a turn itself does not wait.
    async fn give_turn(&self) -> Result<(), StoreError> {
        if self.waiting_us.is_some() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let max = std::time::Duration::from_millis(self.config.yield_ms_max);
        while self.others_waiting() && started.elapsed() < max {
            tokio::time::sleep(TURN_POLL).await;
            self.shared.catch_up().await?;
        }
        Ok(())
    }

    /// Whether the last read of the heads found another writer asking for a turn recently (a
    /// writer killed while asking is not waited for long).
    fn others_waiting(&self) -> bool {
        let since = self.shared.others_waiting_us.load(Ordering::Acquire);
        since != 0 && wall_clock_us() - since < TURN_FRESH_US
    }

    /// Decides `jobs` in order on the replica, each after the effects of those before it.
    /// Answers the answers, the batch's effects, and the number it commits as.
    fn decide(&self, jobs: &[Job]) -> (Vec<Result<Executed, Error>>, Vec<EffectsDoc>, u64) {
        let replica = self.shared.read();
        let mut overlay = Overlay::new(&replica.state);
        let now = self.config.clock.now();
        let mut answers = Vec::with_capacity(jobs.len());
        let mut commands = Vec::new();
        for job in jobs {
            match decide(&overlay, &job.cmd, now) {
                Ok(decision) => {
                    if !decision.effects.is_empty() {
                        overlay.apply(&decision.effects);
                        commands.push(EffectsDoc::from(&decision.effects));
                    }
                    answers.push(Ok(decision.executed));
                }
                Err(e) => answers.push(Err(Error::Ledger(e))),
            }
        }
        (answers, commands, replica.applied + 1)
    }

    /// Inserts the batch `number` of `commands`, unless there are none.
    async fn try_commit(&mut self, number: u64, commands: Vec<EffectsDoc>) -> Result<Try, StoreError> {
        if commands.is_empty() {
            return Ok(Try::Committed);
        }
        self.attempts += 1;
        let attempt = format!("{}/{}", self.shared.writer_id, self.attempts);
        let batch = BatchDoc { number, attempt: attempt.clone(), decided_at: self.config.clock.now(), commands };
        if let Insert::Taken = self.shared.log.insert(&batch).await? {
            return Ok(Try::Lost);
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.shared.replica.write().unwrap_or_else(std::sync::PoisonError::into_inner).apply(batch)?;
        Ok(Try::Committed)
    }

    /// Opens every rail's clearing account the log has not opened yet, as a batch of their own.
    pub(crate) async fn open_clearing_accounts(&mut self) -> Result<(), StoreError> {
        for _ in 0..self.config.attempts_max.max(1) {
            self.shared.catch_up_to_end().await?;
            let (number, effects) = {
                let replica = self.shared.read();
                let now = self.config.clock.now();
                let accounts: Vec<_> = clearing_accounts()
                    .into_iter()
                    .map(|(system, currency)| system_account(system, currency, now))
                    .filter(|a| replica.state.account(a.id).is_none())
                    .map(|a| (Write::Insert, a))
                    .collect();
                (replica.applied + 1, Effects { accounts, ..Effects::default() })
            };
            if effects.is_empty() {
                return self.publish().await;
            }
            if let Try::Committed = self.try_commit(number, vec![EffectsDoc::from(&effects)]).await? {
                return self.publish().await;
            }
        }
        Err(StoreError::new(StoreErrorKind::Overloaded, "could not open the clearing accounts"))
    }
}
