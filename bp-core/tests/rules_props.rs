//! Property tests of the rules: random sequences of commands, good and bad, decided by
//! `rules::decide` on a `LedgerState`, must keep every invariant of the ledger after every step.

use bp_core::account::{AccountKind, NewAccount, SystemAccount};
use bp_core::command::{Command, Outcome};
use bp_core::customer::{KycStatus, NewCustomer, Username};
use bp_core::event::EventBody;
use bp_core::ids::{AccountId, CustomerId, TransferId};
use bp_core::invariants::{AccountBooks, Books, Scope, check};
use bp_core::money::{Currency, Money};
use bp_core::rules::{LedgerView, decide};
use bp_core::state::LedgerState;
use bp_core::transfer::{TransferKind, TransferRequest, VoidReason};
use bp_core::{LedgerError, Timestamp};
use proptest::prelude::*;
use uuid::Uuid;

const ACCOUNTS: u8 = 6;

/// One step of a random workload. Account and transfer numbers index small fixed id spaces, so
/// that steps collide: retries, conflicts, unknown ids and double posts all happen.
#[derive(Clone, Debug)]
enum Step {
    Fund { account: u8, amount_minor: i64 },
    Transfer { id: u8, from: u8, to: u8, amount_minor: i64, hold: bool, usd: bool },
    Post { id: u8 },
    Void { id: u8, rejected: bool },
    Advance { micros: i64 },
}

fn step() -> impl Strategy<Value = Step> {
    let account = 0..ACCOUNTS + 1; // one past the last: an account that does not exist
    let amount = prop_oneof![
        8 => 1i64..5_000,
        1 => Just(0i64),
        1 => -100i64..0,
        1 => Just(i64::MAX),
        1 => (i64::MAX - 10)..=i64::MAX,
    ];
    prop_oneof![
        2 => (account.clone(), amount.clone()).prop_map(|(account, amount_minor)| Step::Fund { account, amount_minor }),
        6 => (0u8..24, account.clone(), account, amount, any::<bool>(), prop::bool::weighted(0.05))
            .prop_map(|(id, from, to, amount_minor, hold, usd)| Step::Transfer { id, from, to, amount_minor, hold, usd }),
        2 => (0u8..24).prop_map(|id| Step::Post { id }),
        1 => (0u8..24, any::<bool>()).prop_map(|(id, rejected)| Step::Void { id, rejected }),
        1 => (0i64..120_000_000).prop_map(|micros| Step::Advance { micros }),
    ]
}

fn account_id(n: u8) -> AccountId {
    AccountId::from_uuid(Uuid::from_u128(0xacc0_0000_0000_7000_8000_0000_0000_0000 | u128::from(n)))
}

fn transfer_id(n: u8) -> TransferId {
    TransferId::from_uuid(Uuid::from_u128(0x7af0_0000_0000_7000_8000_0000_0000_0000 | u128::from(n)))
}

fn start() -> Timestamp {
    chrono::DateTime::from_timestamp_micros(1_750_000_000_000_000).expect("valid time")
}

/// Applies `cmd` as a store would: decide, then write the effects into the state.
fn run(state: &mut LedgerState, cmd: &Command, now: Timestamp) -> Result<Outcome, LedgerError> {
    let decision = decide(state, cmd, now)?;
    state.apply(&decision.effects);
    Ok(decision.executed.outcome)
}

/// A ledger with one customer and `ACCOUNTS` EUR accounts, the last ones with an overdraft.
fn opened() -> LedgerState {
    let mut state = LedgerState::new();
    let customer = CustomerId::from_uuid(Uuid::from_u128(0x000c_0570_0000_7000_8000_0000_0000_0001));
    let username = Username::parse("prop").expect("valid username");
    let open =
        Command::OpenCustomer(Box::new(NewCustomer::person(customer, username, "Pro", "Perty", KycStatus::Verified)));
    run(&mut state, &open, start()).expect("open customer");
    for n in 0..ACCOUNTS {
        let cmd = Command::OpenAccount(NewAccount {
            id: account_id(n),
            customer_id: customer,
            kind: AccountKind::Current,
            currency: Currency::EUR,
            overdraft_limit_minor: if n >= ACCOUNTS - 2 { 1_000 } else { 0 },
        });
        run(&mut state, &cmd, start()).expect("open account");
    }
    state
}

fn command(step: &Step) -> Option<Command> {
    Some(match *step {
        Step::Fund { account, amount_minor } => Command::Transfer(TransferRequest {
            id: TransferId::new_v7(),
            kind: TransferKind::Deposit,
            debit_account: SystemAccount::Funding.id(Currency::EUR),
            credit_account: account_id(account),
            amount: Money::new(amount_minor, Currency::EUR),
            reference: None,
            hold_until: None,
        }),
        Step::Transfer { id, from, to, amount_minor, hold, usd } => Command::Transfer(TransferRequest {
            id: transfer_id(id),
            kind: TransferKind::Internal,
            debit_account: account_id(from),
            credit_account: account_id(to),
            amount: Money::new(amount_minor, if usd { Currency::USD } else { Currency::EUR }),
            reference: None,
            hold_until: hold.then(|| start() + chrono::TimeDelta::minutes(10)),
        }),
        Step::Post { id } => Command::PostPending { id: transfer_id(id) },
        Step::Void { id, rejected } => Command::VoidPending {
            id: transfer_id(id),
            reason: if rejected { VoidReason::Rejected } else { VoidReason::Cancelled },
        },
        Step::Advance { .. } => return None,
    })
}

/// Every invariant of the ledger that the state holds the data for (accounts and transfers, not
/// events or postings), checked by `invariants::check` on the whole state.
fn check_invariants(state: &LedgerState) -> Result<(), TestCaseError> {
    let mut books = Books::new(Scope::Ledger);
    books.accounts = state.accounts().map(|a| AccountBooks { account: a.clone(), history: None }).collect();
    books.transfers = Some(state.transfers().cloned().collect());
    check(&books).map_err(|v| TestCaseError::fail(v.to_string()))
}

/// A rejected transfer was rejected for a reason that holds in the state it was decided on.
fn check_rejection(state: &LedgerState, cmd: &Command, e: &LedgerError, now: Timestamp) -> Result<(), TestCaseError> {
    let Command::Transfer(req) = cmd else { return Ok(()) };
    let amount = req.amount.amount_minor();
    match e {
        LedgerError::NonPositiveAmount => prop_assert!(amount <= 0),
        LedgerError::InvalidField { field: "hold_until", .. } => prop_assert!(req.hold_until.is_some_and(|t| t <= now)),
        LedgerError::SameAccount => prop_assert_eq!(req.debit_account, req.credit_account),
        LedgerError::AccountNotFound(id) => {
            prop_assert!(state.account(*id).is_none() && SystemAccount::from_id(*id).is_none());
        }
        LedgerError::CurrencyMismatch { account, expected, actual } => {
            prop_assert_eq!(state.account(*account).map(|a| a.currency), Some(*expected));
            prop_assert_ne!(expected, actual);
        }
        LedgerError::InsufficientFunds { account } => {
            let a = state.account(*account).ok_or_else(|| TestCaseError::fail("unknown account"))?;
            let after = i128::from(a.posted_minor) - i128::from(a.held_minor) - i128::from(amount);
            prop_assert!(after < -i128::from(a.overdraft_limit_minor), "the funds were really short");
        }
        LedgerError::BalanceOverflow { account } => {
            let a = state.account(*account).ok_or_else(|| TestCaseError::fail("unknown account"))?;
            prop_assert!(
                a.posted_minor.checked_add(amount).is_none()
                    || a.posted_minor.checked_sub(amount).is_none()
                    || a.held_minor.checked_add(amount).is_none(),
                "the balance really would overflow"
            );
        }
        LedgerError::IdempotencyConflict { .. } => {
            let t = state.transfer(req.id).ok_or_else(|| TestCaseError::fail("conflict without a transfer"))?;
            prop_assert!(!t.was_requested_by(req));
        }
        other => prop_assert!(false, "unexpected rejection of a transfer: {other}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_workloads_keep_every_invariant(steps in prop::collection::vec(step(), 1..120)) {
        let mut state = opened();
        let mut now = start();
        for step in &steps {
            if let Step::Advance { micros } = step {
                now += chrono::TimeDelta::microseconds(*micros);
                continue;
            }
            let Some(cmd) = command(step) else { continue };
            let before = state.clone();
            let decision = decide(&state, &cmd, now);
            match decision {
                Ok(d) => {
                    // Postings balance, and each event continues its account's sequence.
                    let net: i128 = d.effects.postings.iter().map(|p| i128::from(p.signed_minor())).sum();
                    prop_assert_eq!(net, 0, "a command's postings balance");
                    for e in &d.effects.events {
                        let last = before.account(e.account_id).map_or(0, |a| a.last_event_seq);
                        let earlier = d.effects.events.iter().filter(|o| o.account_id == e.account_id && o.seq < e.seq).count();
                        prop_assert_eq!(e.seq, last + 1 + u64::try_from(earlier).unwrap_or(0), "gap-free sequence");
                        if let EventBody::TransferPosted { amount, .. } = &e.body {
                            prop_assert!(amount.is_positive(), "only positive amounts move");
                        }
                    }
                    if d.executed.replayed {
                        prop_assert!(d.effects.is_empty(), "a replay writes nothing");
                    }
                    // What a store checks in debug builds before it writes the effects.
                    check(&Books::of_effects(&before, &d.effects)).map_err(|v| TestCaseError::fail(v.to_string()))?;
                    state.apply(&d.effects);
                    // The same command again is a replay of the same answer, writing nothing.
                    if let Command::Transfer(_) = cmd {
                        let again = decide(&state, &cmd, now).map_err(|e| TestCaseError::fail(format!("retry failed: {e}")))?;
                        prop_assert!(again.executed.replayed && again.effects.is_empty());
                        prop_assert_eq!(again.executed.outcome, d.executed.outcome);
                    }
                }
                Err(e) => check_rejection(&state, &cmd, &e, now)?,
            }
            check_invariants(&state)?;
        }
    }

    #[test]
    fn same_id_with_another_request_is_a_conflict(amount in 1i64..1_000, other in 1i64..1_000) {
        prop_assume!(amount != other);
        let mut state = opened();
        run(&mut state, &command(&Step::Fund { account: 0, amount_minor: 10_000 }).expect("command"), start()).expect("fund");
        let first = Step::Transfer { id: 1, from: 0, to: 1, amount_minor: amount, hold: false, usd: false };
        let second = Step::Transfer { id: 1, from: 0, to: 1, amount_minor: other, hold: false, usd: false };
        run(&mut state, &command(&first).expect("command"), start()).expect("first transfer");
        let balances: Vec<i64> = (0..ACCOUNTS).map(|n| state.account(account_id(n)).map_or(0, |a| a.posted_minor)).collect();
        let conflict = decide(&state, &command(&second).expect("command"), start());
        prop_assert!(matches!(conflict, Err(LedgerError::IdempotencyConflict { .. })), "got {:?}", conflict.map(|d| d.executed));
        let after: Vec<i64> = (0..ACCOUNTS).map(|n| state.account(account_id(n)).map_or(0, |a| a.posted_minor)).collect();
        prop_assert_eq!(balances, after);
    }
}
