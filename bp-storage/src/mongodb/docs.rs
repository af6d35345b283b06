//! The documents the MongoDB store writes, each through serde to BSON: the batch of the shared
//! log (the commit point of every ledger write) and a consumer's outbox cursor.

use bp_core::Timestamp;
use bp_core::account::Account;
use bp_core::customer::Customer;
use bp_core::event::Event;
use bp_core::rules::{Effects, Write};
use bp_core::service_record::ServiceRecord;
use bp_core::transfer::{Posting, Transfer};
use serde::{Deserialize, Serialize};

/// Whether a record of a batch is new or replaces the stored one (the rules' [`Write`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WriteKind {
    /// A new record.
    Insert,
    /// The new state of an existing record.
    Update,
}

impl From<Write> for WriteKind {
    fn from(w: Write) -> Self {
        match w {
            Write::Insert => Self::Insert,
            Write::Update => Self::Update,
        }
    }
}

impl From<WriteKind> for Write {
    fn from(w: WriteKind) -> Self {
        match w {
            WriteKind::Insert => Self::Insert,
            WriteKind::Update => Self::Update,
        }
    }
}

/// One record a batch writes, as the rules decided it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Written<T> {
    /// New or replacing.
    pub(crate) write: WriteKind,
    /// The record's state after the batch's command.
    pub(crate) record: T,
}

fn written<T: Clone>(records: &[(Write, T)]) -> Vec<Written<T>> {
    records.iter().map(|(w, r)| Written { write: (*w).into(), record: r.clone() }).collect()
}

fn unwritten<T>(records: Vec<Written<T>>) -> Vec<(Write, T)> {
    records.into_iter().map(|w| (w.write.into(), w.record)).collect()
}

/// One batch of the shared log, collection `batches`: the effects of the commands one writer
/// committed together, in the order it decided them. `_id` is the batch number, 1, 2, 3, …:
/// inserting batch N is the commit point, and the unique `_id` lets only one writer commit N.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BatchDoc {
    /// The batch number, stored as its [`batch_id`].
    #[serde(rename = "_id", with = "batch_id_serde")]
    pub(crate) number: u64,
    /// Which attempt of which writer wrote it: a writer that lost the answer to its insert
    /// (a dropped connection) reads batch N back and knows by this whether it was its own.
    pub(crate) attempt: String,
    /// When the writer decided it.
    pub(crate) decided_at: Timestamp,
    /// The effects of every accepted command of the batch, in order.
    pub(crate) commands: Vec<EffectsDoc>,
}

/// Digits of a batch's `_id`: every `u64` fits.
const BATCH_ID_DIGITS: usize = 20;

/// The `_id` of batch `number`: its decimal digits, zero-padded to [`BATCH_ID_DIGITS`], so that
/// the strings sort as the numbers do. A string and not an Int64 because FerretDB 1.24 over
/// SQLite passes `{_id: <string>}` down to SQLite as a `WHERE` (SQLite parses each row's JSON
/// and returns one), but answers `{_id: <number>}` by decoding every document of the
/// collection in Go and filtering there, many times slower (MongoDB indexes both alike).
/// Neither uses FerretDB's `_id` index; the log's segments (`log`) bound that scan.
pub(crate) fn batch_id(number: u64) -> String {
    format!("{number:0BATCH_ID_DIGITS$}")
}

mod batch_id_serde {
    use serde::{Deserialize, Deserializer, Serializer, de};

    use super::{BATCH_ID_DIGITS, batch_id};

    pub(super) fn serialize<S: Serializer>(number: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&batch_id(*number))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let id = String::deserialize(d)?;
        if id.len() != BATCH_ID_DIGITS || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(de::Error::custom(format!("a batch _id is {BATCH_ID_DIGITS} digits, not {id:?}")));
        }
        id.parse().map_err(de::Error::custom)
    }
}

/// The effects of one command ([`Effects`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EffectsDoc {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) customers: Vec<Written<Customer>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) accounts: Vec<Written<Account>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) transfers: Vec<Written<Transfer>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) postings: Vec<Posting>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) events: Vec<Event>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) services: Vec<Written<ServiceRecord>>,
}

impl From<&Effects> for EffectsDoc {
    fn from(e: &Effects) -> Self {
        Self {
            customers: written(&e.customers),
            accounts: written(&e.accounts),
            transfers: written(&e.transfers),
            postings: e.postings.clone(),
            events: e.events.clone(),
            services: written(&e.services),
        }
    }
}

impl From<EffectsDoc> for Effects {
    fn from(d: EffectsDoc) -> Self {
        Effects {
            customers: unwritten(d.customers),
            accounts: unwritten(d.accounts),
            transfers: unwritten(d.transfers),
            postings: d.postings,
            events: d.events,
            services: unwritten(d.services),
        }
    }
}

/// A consumer's outbox cursor, collection `cursors`; it only moves forward (`$max`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CursorDoc {
    /// The consumer's name.
    #[serde(rename = "_id")]
    pub(crate) name: String,
    /// The outbox position it is done with.
    pub(crate) position: u64,
}

#[cfg(test)]
mod tests {
    //! Every stored type survives BSON: the effects of each kind of command, decided by the
    //! rules on a real state, written as a batch document and read back unchanged.

    use bp_core::account::{AccountKind, AccountOwner, AccountStatus, NewAccount, SystemAccount};
    use bp_core::command::{Command, Outcome};
    use bp_core::external::ExternalAccount;
    use bp_core::external::lifecycle::{self, Effect, NewExternalPayment, Transition};
    use bp_core::external::rail::{RailId, clearing_accounts};
    use bp_core::ids::{AccountId, CustomerId, ServiceRecordId, TransferId};
    use bp_core::money::{Currency, Money};
    use bp_core::rules::{Effects, LedgerView, Write, decide, system_account};
    use bp_core::service_record::{ServiceKind, ServiceRecord, ServiceStatus};
    use bp_core::state::LedgerState;
    use bp_core::testing::fixtures::{at, company, deposit, person, request};
    use bp_core::transfer::{TransferKind, VoidReason};
    use mongodb::bson;

    use super::{BatchDoc, CursorDoc, EffectsDoc, batch_id};

    /// Decides `cmd` on `state` and applies it; answers its effects and outcome.
    fn run(state: &mut LedgerState, cmd: Command, secs: i64) -> (Effects, Outcome) {
        let d = decide(state, &cmd, at(secs)).unwrap_or_else(|e| panic!("{cmd:?} is refused: {e}"));
        state.apply(&d.effects);
        (d.effects, d.executed.outcome)
    }

    fn account_of(outcome: Outcome) -> bp_core::account::Account {
        match outcome {
            Outcome::Account(a) => a,
            other => panic!("an account, not {other:?}"),
        }
    }

    /// The effects of one command of every kind that writes a different set of records.
    fn every_kind_of_effects() -> Vec<Effects> {
        let mut state = LedgerState::new();
        let clearing: Vec<_> =
            clearing_accounts().into_iter().map(|(s, c)| (Write::Insert, system_account(s, c, at(0)))).collect();
        let opening = Effects { accounts: clearing, ..Effects::default() };
        state.apply(&opening);
        let mut all = vec![opening];
        let ada = person("ada");
        let acme = company("acme");
        let (ada_id, acme_id) = (ada.id, acme.id);
        all.push(run(&mut state, Command::OpenCustomer(Box::new(ada)), 1).0);
        all.push(run(&mut state, Command::OpenCustomer(Box::new(acme)), 2).0);
        let open = |customer_id, kind| NewAccount {
            id: AccountId::new_v7(),
            customer_id,
            kind,
            currency: Currency::EUR,
            overdraft_limit_minor: 0,
        };
        let (e, o) = run(&mut state, Command::OpenAccount(open(ada_id, AccountKind::Current)), 3);
        let ada_acc = account_of(o);
        all.push(e);
        let (e, o) = run(&mut state, Command::OpenAccount(open(acme_id, AccountKind::Current)), 4);
        let acme_acc = account_of(o);
        all.push(e);
        all.push(run(&mut state, Command::Transfer(deposit(&ada_acc, 100_000)), 5).0);
        let mut held = request(TransferKind::Internal, ada_acc.id, acme_acc.id, 1_234, Currency::EUR);
        held.reference = Some("invoice 7".to_owned());
        held.hold_until = Some(at(3600));
        let held_id = held.id;
        all.push(run(&mut state, Command::Transfer(held), 6).0);
        all.push(run(&mut state, Command::PostPending { id: held_id }, 7).0);
        let mut voided = request(TransferKind::Internal, ada_acc.id, acme_acc.id, 1, Currency::EUR);
        voided.hold_until = Some(at(3600));
        let voided_id = voided.id;
        all.push(run(&mut state, Command::Transfer(voided), 8).0);
        all.push(run(&mut state, Command::VoidPending { id: voided_id, reason: VoidReason::Cancelled }, 9).0);
        let status = Command::SetAccountStatus { id: acme_acc.id, status: AccountStatus::Frozen };
        all.push(run(&mut state, status, 10).0);
        let payment = NewExternalPayment {
            customer: ada_id,
            account: ada_acc.id,
            hold: TransferId::new_v7(),
            amount: Money::new(5_000, Currency::EUR),
            creditor: ExternalAccount::parse("DE89370400440532013000", "Erika Mustermann", Some("COBADEFFXXX"))
                .expect("a payee"),
            remittance: Some("invoice 42".to_owned()),
            rail: RailId::SepaCreditTransfer,
        };
        let transition = lifecycle::request(&payment, at(11)).expect("a request");
        all.push(run(&mut state, Command::RequestService(Box::new(transition)), 11).0);
        let sys = |s: SystemAccount| s.id(Currency::EUR);
        for (secs, kind, debit, credit) in [
            (12, TransferKind::Fx, ada_acc.id, sys(SystemAccount::FxPosition)),
            (13, TransferKind::Interest, ada_acc.id, sys(SystemAccount::InterestIncome)),
        ] {
            all.push(run(&mut state, Command::Transfer(request(kind, debit, credit, 100, Currency::EUR)), secs).0);
        }
        all.extend(a_loans_life(&mut state, ada_id, ada_acc.id));
        all
    }

    /// A loan through every status a loan has: requested (holding nothing), offered, active (its
    /// receivable account opened and the principal disbursed), in arrears, closed (repaid).
    fn a_loans_life(state: &mut LedgerState, customer: CustomerId, account: AccountId) -> Vec<Effects> {
        let sys = |s: SystemAccount| s.id(Currency::EUR);
        let mut record = ServiceRecord {
            id: ServiceRecordId::new_v7(),
            customer_id: customer,
            kind: ServiceKind::Loan,
            status: ServiceStatus::Requested,
            account_id: account,
            amount: Money::new(10_000, Currency::EUR),
            transfers: vec![],
            checks: 0,
            next_check_at: None,
            stuck_since: None,
            reason: None,
            details: serde_json::Map::from_iter([("term_months".to_owned(), serde_json::json!(12))]),
            version: 0,
            created_at: at(20),
            updated_at: at(20),
        };
        let requested = Transition { record: record.clone(), effects: vec![] };
        let mut all = vec![run(state, Command::RequestService(Box::new(requested)), 20).0];
        let receivable = AccountId::new_v7();
        let disburse = request(TransferKind::Loan, receivable, sys(SystemAccount::LoanFunding), 10_000, Currency::EUR);
        let pay_out = request(TransferKind::Loan, sys(SystemAccount::LoanFunding), account, 10_000, Currency::EUR);
        let repay = request(TransferKind::Loan, account, receivable, 10_000, Currency::EUR);
        let steps = [
            (ServiceStatus::Offered, vec![]),
            (
                ServiceStatus::Active,
                vec![Effect::OpenReceivable(receivable), Effect::Post(disburse), Effect::Post(pay_out)],
            ),
            (ServiceStatus::InArrears, vec![]),
            (ServiceStatus::Closed, vec![Effect::Post(repay)]),
        ];
        for (version, (secs, (status, effects))) in (1..).zip((21..).zip(steps)) {
            record.status = status;
            record.version = version;
            record.updated_at = at(secs);
            record.transfers.extend(effects.iter().filter_map(|e| match e {
                Effect::Post(t) => Some(t.id),
                _ => None,
            }));
            let transition = Box::new(Transition { record: record.clone(), effects });
            all.push(
                run(state, Command::ApplyService { id: record.id, expected_version: version, transition }, secs).0,
            );
        }
        assert_eq!(state.account(receivable).map(|a| a.posted_minor), Some(0), "the loan is repaid");
        all
    }

    #[test]
    fn every_kind_of_batch_survives_bson() {
        let effects = every_kind_of_effects();
        assert!(effects.iter().any(|e| !e.customers.is_empty()), "customers covered");
        assert!(effects.iter().any(|e| !e.services.is_empty()), "service records covered");
        for kind in [TransferKind::Fx, TransferKind::Interest, TransferKind::Loan] {
            assert!(effects.iter().flat_map(|e| &e.transfers).any(|(_, t)| t.kind == kind), "{kind:?} covered");
        }
        let statuses: Vec<_> = effects.iter().flat_map(|e| &e.services).map(|(_, s)| s.status).collect();
        for status in [ServiceStatus::Offered, ServiceStatus::Active, ServiceStatus::InArrears, ServiceStatus::Closed] {
            assert!(statuses.contains(&status), "{status:?} covered");
        }
        let systems: Vec<_> = effects
            .iter()
            .flat_map(|e| &e.accounts)
            .filter_map(|(_, a)| match a.owner {
                AccountOwner::Bank { system } => Some(system),
                AccountOwner::Customer { .. } => None,
            })
            .collect();
        for system in [SystemAccount::FxPosition, SystemAccount::InterestIncome, SystemAccount::LoanReceivable] {
            assert!(systems.contains(&system), "{system:?} covered");
        }
        assert!(effects.iter().any(|e| !e.events.is_empty() && !e.postings.is_empty()), "postings, events");
        let batch = BatchDoc {
            number: 42,
            attempt: "writer/1".to_owned(),
            decided_at: at(12),
            commands: effects.iter().map(EffectsDoc::from).collect(),
        };
        // As the driver writes and reads documents: not human-readable (ids as binary).
        let bytes = bson::to_vec(&batch).expect("a batch as BSON");
        let doc = bson::Document::from_reader(bytes.as_slice()).expect("a document");
        assert_eq!(doc.get_str("_id"), Ok("00000000000000000042"), "the batch number is the _id, 20 digits");
        let back: BatchDoc = bson::from_slice(&bytes).expect("a batch from BSON");
        assert_eq!(back, batch);
        let back: Vec<Effects> = back.commands.into_iter().map(Effects::from).collect();
        assert_eq!(back, effects, "the rules' effects, the write kinds included");
    }

    #[test]
    fn batch_ids_sort_as_numbers_and_refuse_anything_else() {
        let numbers = [0, 1, 9, 10, 99, 100, 12_345, u64::MAX];
        let ids: Vec<String> = numbers.iter().map(|n| batch_id(*n)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "sorted as the numbers: {ids:?}");
        assert_eq!(ids[numbers.len() - 1], u64::MAX.to_string(), "the widest needs no padding");
        let back = |id: bson::Bson| {
            let doc = bson::doc! { "_id": id, "attempt": "w/1", "decided_at": "2026-01-01T00:00:00Z", "commands": [] };
            bson::from_document::<BatchDoc>(doc).map(|b| b.number)
        };
        assert_eq!(back(bson::Bson::String(batch_id(7))).ok(), Some(7));
        for bad in ["7", "0000000000000000000x", "-0000000000000000007", "99999999999999999999"] {
            assert!(back(bson::Bson::String(bad.to_owned())).is_err(), "{bad:?} is refused");
        }
        assert!(back(bson::Bson::Int64(7)).is_err(), "a numeric _id is refused");
    }

    #[test]
    fn a_cursor_survives_bson() {
        let cursor = CursorDoc { name: "relay".to_owned(), position: u64::try_from(i64::MAX).expect("fits") };
        let bytes = bson::to_vec(&cursor).expect("a cursor as BSON");
        assert_eq!(bson::from_slice::<CursorDoc>(&bytes).expect("a cursor from BSON"), cursor);
    }
}
