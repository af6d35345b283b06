//! The server's side of loans (FR6): applying an input to a loan's record with bp-core's
//! `loan::transition`, written with its postings by `ServiceStore::apply` in one atomic write,
//! and the worker's turn of a loan ([`turn`]): the application sent to the loan provider or
//! asked about, the provider's answer applied, the instalments due collected.
//!
//! The worker that drives this is in `jobs`, the routes in `v1::loans`.

use bp_core::Timestamp;
use bp_core::clock::Clock;
use bp_core::error::{Error, LedgerError};
use bp_core::external::lifecycle::Effect;
use bp_core::external::loan::{self, LoanApplication, LoanInput, LoanPolicy, LoanProvider, LoanTransitionError};
use bp_core::ids::ServiceRecordId;
use bp_core::service_record::ServiceRecord;
use bp_core::service_store::ServiceStore;
use rand::Rng as _;

/// Times a write is tried again after another writer changed the record first, or the account's
/// balance changed between reading it and collecting from it.
pub const APPLY_ATTEMPTS_MAX: u32 = 16;

/// What to apply to a loan.
#[derive(Clone, Debug)]
pub enum LoanStep {
    /// The worker's turn: `Collect` with the repayment account's available balance, read at each
    /// attempt, for a loan being repaid; `Due` for any other.
    Turn,
    /// This input, as it is (a provider's answer, the customer's acceptance or repayment).
    Input(LoanInput),
}

/// What became of a step.
#[derive(Debug)]
pub enum LoanApplied {
    /// Written: the record as stored, and the calls to make now (`Decide`, `QueryDecision`).
    Written(Box<ServiceRecord>, Vec<Effect>),
    /// Nothing to change (a repeated answer, a turn not yet due).
    Unchanged(Box<ServiceRecord>),
    /// The input cannot be applied to the loan as it is: nothing was written.
    Refused(LoanTransitionError),
    /// No such record.
    NotFound,
}

/// Applies `step` to loan `id`: reads it, runs `loan::transition`, writes the result atomically;
/// when another writer got there first (a stale version), or a turn's collection finds the
/// money gone (`InsufficientFunds`: spent between the read and the write), reads everything
/// again and applies the step to what is there now.
pub async fn apply(
    services: &dyn ServiceStore,
    clock: &dyn Clock,
    policy: &LoanPolicy,
    id: ServiceRecordId,
    step: &LoanStep,
) -> Result<LoanApplied, Error> {
    let mut retried = None;
    for _ in 0..APPLY_ATTEMPTS_MAX {
        let Some(record) = services.service_record(id).await? else { return Ok(LoanApplied::NotFound) };
        let input = match step {
            LoanStep::Input(input) => input.clone(),
            LoanStep::Turn => turn_input(services, &record).await?,
        };
        let transition = match loan::transition(&record, &input, clock.now(), policy, rand::rng().random()) {
            Ok(t) => t,
            Err(e) => return Ok(LoanApplied::Refused(e)),
        };
        if transition.record == record && transition.effects.is_empty() {
            return Ok(LoanApplied::Unchanged(Box::new(record)));
        }
        let calls: Vec<Effect> = transition
            .effects
            .iter()
            .filter(|e| matches!(e, Effect::Decide(_) | Effect::QueryDecision(_)))
            .cloned()
            .collect();
        match services.apply(id, record.version, transition).await {
            Ok(stored) => return Ok(LoanApplied::Written(Box::new(stored), calls)),
            Err(e @ Error::Ledger(LedgerError::VersionConflict { .. })) => retried = Some(e),
            Err(e @ Error::Ledger(LedgerError::InsufficientFunds { .. })) if matches!(step, LoanStep::Turn) => {
                retried = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(retried.unwrap_or_else(|| unreachable!("APPLY_ATTEMPTS_MAX is positive")))
}

/// The worker's input for `record` (`loan::turn_input`), with its repayment account as it is
/// now.
async fn turn_input(services: &dyn ServiceStore, record: &ServiceRecord) -> Result<LoanInput, Error> {
    let account = services.account(record.account_id).await?;
    Ok(loan::turn_input(record, account.as_ref()))
}

/// One turn of loan `id`: the worker's step, then the call it asks for (with the record's own
/// key: an unknown outcome is asked about, never decided again under a new key) and the answer
/// applied. `written` is called after each write (to wake the outbox relay). Returns when the
/// loan is to be looked at next.
pub async fn turn(
    services: &dyn ServiceStore,
    clock: &dyn Clock,
    policy: &LoanPolicy,
    provider: &dyn LoanProvider,
    id: ServiceRecordId,
    written: &(dyn Fn() + Sync),
) -> Option<Timestamp> {
    let step = |step: LoanStep| async move {
        let applied = apply(services, clock, policy, id, &step).await;
        if matches!(applied, Ok(LoanApplied::Written(..))) {
            written();
        }
        applied
    };
    let (record, calls) = match step(LoanStep::Turn).await {
        Ok(LoanApplied::Written(record, calls)) => (record, calls),
        // Not due yet: its time is in the store's `due` list, read at the next pass.
        Ok(LoanApplied::Unchanged(_)) => return None,
        Ok(LoanApplied::Refused(e)) => {
            tracing::error!(service = %id, error = %e, "a loan's turn was refused; an operator must look");
            return None;
        }
        Ok(LoanApplied::NotFound) => return None,
        Err(e) => {
            tracing::warn!(service = %id, error = %e, "a loan's turn failed; it stays due");
            return None;
        }
    };
    let mut next = record.next_check_at;
    for call in calls {
        let input = match call {
            Effect::Decide(key) => {
                let Some(application) = LoanApplication::of(&record) else {
                    tracing::error!(service = %id, "a loan's details do not read; it stays due");
                    continue;
                };
                match provider.decide(&application, &key).await {
                    Ok(decision) => LoanInput::Decided(decision),
                    Err(e) => LoanInput::DecideFailed(e),
                }
            }
            Effect::QueryDecision(key) => match provider.status(&key).await {
                Ok(status) => LoanInput::StatusReport(status),
                Err(e) => LoanInput::StatusFailed(e),
            },
            _ => continue,
        };
        match step(LoanStep::Input(input)).await {
            Ok(LoanApplied::Written(record, _)) => next = record.next_check_at,
            Ok(LoanApplied::Refused(e)) => {
                metrics::counter!("bp_external_conflicts_total").increment(1);
                tracing::error!(service = %id, error = %e, "the loan provider's answer contradicts the loan");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(service = %id, error = %e, "applying the loan provider's answer failed"),
        }
    }
    next
}
