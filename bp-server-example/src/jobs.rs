//! The server's background jobs, which run while it serves and stop with it: the outbox relay
//! (committed events, store → bus) with the bridge it starts first (bus → this process's
//! streams), the audit log's tail (security events → streams), the sweeper of payments whose
//! SCA was not answered in time, the end of sessions past their idle deadline, the follower of
//! sessions revoked by other processes, and the worker of external payments and loans
//! ([`external_worker`]), when a rail is connected.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::state::AppState;

/// The running jobs; dropping it aborts them, [`Jobs::stop`] also gives their leases up.
#[derive(Debug)]
pub struct Jobs {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The leases this process holds, by job name: (holder, fencing token).
    held: Arc<Held>,
    state: Arc<AppState>,
}

/// The leases this process holds now.
#[derive(Debug, Default)]
struct Held(std::sync::Mutex<std::collections::BTreeMap<String, (Arc<str>, u64)>>);

impl Held {
    fn set(&self, job: &str, lease: Option<(Arc<str>, u64)>) {
        let mut held = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match lease {
            Some(l) => held.insert(job.to_owned(), l),
            None => held.remove(job),
        };
    }
}

impl Jobs {
    /// Stops every job, then gives up the leases it held, so that another process takes its
    /// jobs over at once rather than after their leases end (a graceful shutdown).
    pub async fn stop(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        let held = std::mem::take(&mut *self.held.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let store = self.state.ledger.store();
        for (job, (holder, fence)) in held {
            match store.release_lease(&job, &holder, fence, self.state.now()).await {
                Ok(_) => tracing::info!(job = %job, fence, "gave the job's lease up"),
                Err(e) => tracing::warn!(job = %job, error = %e, "giving a job's lease up failed; it ends by itself"),
            }
        }
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts every job over `state`. The outbox relay, the hold sweeper, the sweeper of transient
/// records and the external worker change shared state, so each runs in one server process at a time, the holder of its lease
/// ([`leased`]); the bridge from the bus, the audit log's tail, the end of idle sessions and
/// the follower of revocations serve this process's own streams and requests and run in every
/// process.
pub fn start(state: &Arc<AppState>) -> Jobs {
    // Unique per start: a restarted process is a new holder, whose token is new.
    let holder: Arc<str> = format!("{}:{}", std::process::id(), uuid::Uuid::now_v7().simple()).into();
    let held = Arc::new(Held::default());
    let lease = |name: String, job: Job| {
        tokio::spawn(leased(Arc::clone(state), name, Arc::clone(&holder), Arc::clone(&held), job))
    };
    let sweeper = lease("hold-sweeper".to_owned(), Box::new(|state| Box::pin(expire_holds(state))));
    let transients = lease("transient-sweeper".to_owned(), Box::new(|state| Box::pin(sweep_transients(state))));
    let idle = tokio::spawn(end_idle_sessions(Arc::clone(state)));
    let revocations = tokio::spawn(follow_revocations(Arc::clone(state)));
    let (bridge, relay) = spawn_relay(state);
    let relay = lease(state.config.bus.relay_cursor_name(), relay);
    let audit_tail = tokio::spawn(crate::events::bridge::tail_audit(
        Arc::clone(&state.security),
        Arc::clone(&state.hub),
        Arc::clone(&state.auth.audit_written),
        Arc::clone(&state.audit_position),
    ));
    let mut tasks = vec![sweeper, transients, idle, revocations, bridge, relay, audit_tail];
    if let Some(external) = &state.external {
        let external = Arc::clone(external);
        let worker: Job = Box::new(move |state| Box::pin(external_worker(state, Arc::clone(&external))));
        tasks.push(lease("external-worker".to_owned(), worker));
    }
    Jobs { tasks, held, state: Arc::clone(state) }
}

/// A job run under a lease: a new run of it each time this process takes the lease.
type Job = Box<dyn Fn(Arc<AppState>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// How long a process that does not hold a lease waits before asking again, as a share of the
/// lease's length (a third: a dead holder's job runs elsewhere within about 1.33 leases).
const LEASE_ASK_SHARE: u32 = 3;
/// How much before its end (as this process counts it) a holder stops, as a share of the
/// lease's length: room for a clock step between processes and a renewal on its way.
const LEASE_MARGIN_SHARE: u32 = 5;

/// Runs `job` while this process holds the lease `name`, and only then: asks for the lease
/// every third of its length; once held, renews it every third of its length and stops the job
/// (aborting its task) when no renewal was acknowledged before the lease's end as this process
/// counts it — from *before* it asked, on its monotonic clock, less a fifth of the length — so
/// that a process paused past its lease cannot go on as if it held it. What a late write of a
/// stopped holder could still reach is fenced where it is written (`bp_core::lease`).
async fn leased(state: Arc<AppState>, name: String, holder: Arc<str>, held_here: Arc<Held>, job: Job) {
    let length = Duration::from_millis(u64::from(state.config.server.job_lease_ms));
    let (ask_every, margin) = (length / LEASE_ASK_SHARE, length / LEASE_MARGIN_SHARE);
    let store = Arc::clone(state.ledger.store());
    let held = metrics::gauge!("bp_job_lease_held", "job" => name.clone());
    loop {
        let asked = tokio::time::Instant::now();
        let fence = match store.acquire_lease(&name, &holder, state.now(), state.config.server.job_lease_ms).await {
            Ok(lease) if *lease.holder == *holder => lease.token,
            Ok(_) => {
                tokio::time::sleep(ask_every).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(job = %name, error = %e, "asking for a job's lease failed");
                tokio::time::sleep(ask_every).await;
                continue;
            }
        };
        let mut valid_until = asked + length - margin;
        tracing::info!(job = %name, fence, "took the job's lease: running it here");
        metrics::counter!("bp_job_lease_taken_total", "job" => name.clone()).increment(1);
        held.set(1_u32);
        held_here.set(&name, Some((Arc::clone(&holder), fence)));
        let run = AbortOnDrop(tokio::spawn(job(Arc::clone(&state))));
        loop {
            tokio::time::sleep_until((tokio::time::Instant::now() + ask_every).min(valid_until)).await;
            let asked = tokio::time::Instant::now();
            if asked >= valid_until {
                break;
            }
            let renewal = store.acquire_lease(&name, &holder, state.now(), state.config.server.job_lease_ms);
            match tokio::time::timeout_at(valid_until, renewal).await {
                Ok(Ok(lease)) if *lease.holder == *holder && lease.token == fence => {
                    valid_until = asked + length - margin;
                }
                Ok(Ok(_)) => break,
                Ok(Err(e)) => tracing::warn!(job = %name, error = %e, "renewing a job's lease failed; trying again"),
                Err(_) => {}
            }
        }
        drop(run);
        held.set(0_u32);
        held_here.set(&name, None);
        tracing::warn!(job = %name, fence, "lost the job's lease: stopped the job here");
        // Ask at once: if another process took it, the answer says so; if the store was
        // unreachable, this process may be the only one left.
    }
}

/// Most records the worker takes from the store per pass.
const DUE_BATCH_LEN_MAX: u32 = 100;
/// Longest sleep of the worker between passes: the timer of records scheduled by others (a
/// webhook, another replica) that did not wake it (milliseconds).
const WORKER_IDLE_MS_MAX: u64 = 1_000;
/// Longest stuck list read for the `bp_external_stuck` gauge.
const STUCK_LEN_MAX: u32 = 500;

/// The worker and reconciler of external payments and loans: takes the records that are due
/// (new ones to submit, unknown or submitted ones to ask about, loans to decide or to collect an
/// instalment of), runs the lifecycle (a loan's: `loans::turn`) on each, makes the
/// call it asks for (with the record's own key: an unknown outcome is asked about, never sent
/// again under a new key) and applies the answer, at most `concurrency_max` payments at once.
/// Woken by `AppState::external_wake` (a payment was handed to the rail) and by the earliest `next_check_at`
/// it has seen, at the latest every [`WORKER_IDLE_MS_MAX`].
pub async fn external_worker(state: Arc<AppState>, external: Arc<crate::external::External>) {
    let limit = Arc::new(tokio::sync::Semaphore::new(external.concurrency_max));
    loop {
        let now = state.now();
        let due = match state.services.due(now, DUE_BATCH_LEN_MAX).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "listing due external payments failed");
                Vec::new()
            }
        };
        let full = u32::try_from(due.len()).unwrap_or(u32::MAX) >= DUE_BATCH_LEN_MAX;
        let mut checks = tokio::task::JoinSet::new();
        for record in due {
            let is_loan = record.kind == bp_core::service_record::ServiceKind::Loan;
            if is_loan && external.loans.is_none() {
                // No provider to decide it: it waits, due, until one is configured.
                continue;
            }
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else { return };
            let (state, external) = (Arc::clone(&state), Arc::clone(&external));
            checks.spawn(async move {
                let next = if is_loan {
                    loan_turn(&state, &external, record.id).await
                } else {
                    check(&state, &external, record.id).await
                };
                drop(permit);
                next
            });
        }
        let mut next_at = None;
        while let Some(done) = checks.join_next().await {
            if let Ok(Some(at)) = done {
                next_at = Some(next_at.map_or(at, |n: bp_core::Timestamp| n.min(at)));
            }
        }
        match state.services.stuck(STUCK_LEN_MAX).await {
            // At most STUCK_LEN_MAX: a u32, which the gauge takes exactly.
            Ok(stuck) => metrics::gauge!("bp_external_stuck").set(u32::try_from(stuck.len()).unwrap_or(u32::MAX)),
            Err(e) => tracing::warn!(error = %e, "listing stuck external payments failed"),
        }
        if full {
            continue;
        }
        let idle_ms = next_at
            .map(|at| u64::try_from((at - state.now()).num_milliseconds()).unwrap_or(0))
            .map_or(WORKER_IDLE_MS_MAX, |ms| ms.min(WORKER_IDLE_MS_MAX));
        tokio::select! {
            () = state.external_wake.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(idle_ms)) => {}
        }
    }
}

/// One turn of the payment `id`: the lifecycle's `Due`, then the call it asks for and the
/// answer applied. Returns when it is to be checked next.
async fn check(
    state: &AppState,
    external: &crate::external::External,
    id: bp_core::ids::ServiceRecordId,
) -> Option<bp_core::Timestamp> {
    use bp_core::external::lifecycle::{Effect, Input};

    use crate::external::{Applied, apply_input, order_of};
    let services = state.services.as_ref();
    let apply = |input: Input| async move {
        let applied = apply_input(services, state.clock.as_ref(), &external.policy, id, &input).await;
        if matches!(applied, Ok(Applied::Written(..))) {
            state.relay_waker.notify_one();
        }
        applied
    };
    let (record, calls) = match apply(Input::Due).await {
        Ok(Applied::Written(record, calls)) => (record, calls),
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!(service = %id, error = %e, "an external payment's turn failed; it stays due");
            return None;
        }
    };
    let mut next = record.next_check_at;
    let Some(rail) = external.rail_of(&record) else {
        tracing::error!(service = %id, "no rail is connected for this payment: it stays due");
        return next;
    };
    for call in calls {
        let input = match call {
            Effect::Submit(key) => match order_of(services, external, &record).await {
                Ok(order) => match rail.submit(&order, &key).await {
                    Ok(answer) => Input::Answered(answer),
                    Err(e) => Input::SubmitFailed(e),
                },
                Err(e) => {
                    // Recorded as submitted; asked about at the next check (the rail has no
                    // order under the key, so it answers NotFound and the record is requested
                    // again): an operator sees it stuck if it never works.
                    tracing::error!(service = %id, error = %e, "cannot build an external payment's order");
                    continue;
                }
            },
            Effect::QueryStatus(key) => match rail.status(&key).await {
                Ok(status) => Input::StatusReport(status),
                Err(e) => Input::StatusFailed(e),
            },
            _ => continue,
        };
        match apply(input).await {
            Ok(Applied::Written(record, _)) => next = record.next_check_at,
            Ok(_) => {}
            Err(e) => tracing::warn!(service = %id, error = %e, "applying a rail's answer failed; it is asked again"),
        }
    }
    next
}

/// One turn of the loan `id` (`loans::turn`): its application sent or asked about, its
/// instalments due collected. Returns when it is to be checked next.
async fn loan_turn(
    state: &AppState,
    external: &crate::external::External,
    id: bp_core::ids::ServiceRecordId,
) -> Option<bp_core::Timestamp> {
    let provider = external.loans.as_deref()?;
    let written = || state.relay_waker.notify_one();
    crate::loans::turn(state.services.as_ref(), state.clock.as_ref(), &external.loan_policy, provider, id, &written)
        .await
}

/// Starts the bridge from the bus to this server's streams, and answers it with the outbox
/// relay from the store to the bus (woken after each commit), to run under its lease once the
/// bridge has subscribed: the bridge runs in every process, the relay in one.
fn spawn_relay(state: &Arc<AppState>) -> (tokio::task::JoinHandle<()>, Job) {
    let (subscribed, ready) = oneshot::channel();
    let bridge =
        tokio::spawn(crate::events::bridge::bridge(Arc::clone(&state.bus), Arc::clone(&state.hub), subscribed));
    let ready = Arc::new(tokio::sync::Mutex::new(Some(ready)));
    let stats = Arc::clone(state.relay_stats.get_or_init(Arc::default));
    let relay: Job = Box::new(move |state| {
        let (ready, stats) = (Arc::clone(&ready), Arc::clone(&stats));
        Box::pin(async move {
            if let Some(ready) = ready.lock().await.take() {
                let _ = ready.await;
            }
            let config = bp_notify::relay::RelayConfig {
                name: state.config.bus.relay_cursor_name(),
                idle_wait_ms: 100,
                ..Default::default()
            };
            let mut relay =
                bp_notify::relay::Relay::new(Arc::clone(state.ledger.store()), Arc::clone(&state.bus), config);
            relay.set_waker(Arc::clone(&state.relay_waker));
            relay.set_stats(stats);
            relay.run(Arc::clone(&state.clock), std::future::pending()).await;
        })
    });
    (bridge, relay)
}

/// Aborts a task when dropped (with the task that owns it).
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Voids payments whose SCA was not answered in time, releasing their holds.
async fn expire_holds(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        match state.ledger.expire_holds(state.now(), 500).await {
            Ok(0) => {}
            Ok(n) => {
                state.relay_waker.notify_one();
                tracing::info!(voided = n, "expired unconfirmed payments");
            }
            Err(e) => tracing::warn!(error = %e, "expiring holds failed"),
        }
    }
}

/// How long a transient record is kept after it ended, so that one presented again is still
/// known as spent (minutes).
const TRANSIENT_KEPT_MIN: i64 = 10;

/// Deletes, every minute, the transient records that ended more than [`TRANSIENT_KEPT_MIN`]
/// ago.
async fn sweep_transients(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let before = state.now() - chrono::Duration::minutes(TRANSIENT_KEPT_MIN);
        match state.security.sweep_transients(before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "swept ended transient records"),
            Err(e) => tracing::warn!(error = %e, "sweeping transient records failed"),
        }
    }
}

/// How often every process reads the sessions revoked by any process (milliseconds): a session
/// signed out on one replica is refused by all within about this long.
pub const REVOCATION_POLL_MS: u64 = 1_000;
/// How far back each read of revocations reaches before the previous one began: room for the
/// revoking replica's clock being ahead and for its write becoming visible late (seconds).
const REVOCATION_OVERLAP_S: i64 = 10;

/// Follows the sessions revoked in the store, by this process or any other, so that their
/// access tokens are refused here too (the store is the one list; a process's own revocations
/// take effect at once, the others' within [`REVOCATION_POLL_MS`]).
async fn follow_revocations(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_millis(REVOCATION_POLL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut since = state.now() - chrono::Duration::seconds(REVOCATION_OVERLAP_S);
    loop {
        tick.tick().await;
        let began = state.now();
        match state.security.sessions_revoked_since(since).await {
            Ok(sessions) => {
                for session in sessions {
                    state.auth.verifier.revoke(session);
                }
                since = began - chrono::Duration::seconds(REVOCATION_OVERLAP_S);
            }
            Err(e) => tracing::warn!(error = %e, "reading revoked sessions failed; trying again"),
        }
    }
}

/// Ends, every second, the sessions this process has seen whose idle deadline has passed, so
/// that their event streams end on time (the audit entry ends them).
async fn end_idle_sessions(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        state.auth.end_idle_sessions().await;
    }
}
