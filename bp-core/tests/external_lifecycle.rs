//! The external payment's state machine (`bp_core::external::lifecycle`): every transition,
//! duplicated and out-of-order reports, late conflicting ones, reconciliation of an unknown
//! outcome, the stuck bound; and, as a property, that no sequence of inputs both posts and
//! releases a hold, or does either twice. Also the incoming-credit rule.

use bp_core::account::{Account, AccountKind, AccountOwner, AccountStatus, SystemAccount};
use bp_core::account_number::AccountNumber;
use bp_core::event::EventBody;
use bp_core::external::incoming::{IncomingCredit, credit_incoming, incoming_account_number, incoming_transfer_id};
use bp_core::external::lifecycle::{
    Effect, Input, NewExternalPayment, Policy, RequestError, Transition, TransitionError, record_id, request,
    transition,
};
use bp_core::external::{
    BackOff, BankIbans, CallError, CallKey, ExternalAccount, NotSent, RailAnswer, RailId, RailStatus, ReasonCode,
    Refusal, Unknown,
};
use bp_core::service_record::{ServiceRecord, ServiceStatus};
use bp_core::transfer::TransferKind;
use bp_core::{AccountId, Currency, CustomerId, Money, Timestamp, TransferId};
use chrono::{TimeDelta, TimeZone};
use proptest::prelude::*;

fn t0() -> Timestamp {
    chrono::Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).single().expect("time")
}

fn policy() -> Policy {
    Policy { back_off: BackOff { first_ms: 1_000, max_ms: 60_000 }, stuck_after_s: 3_600 }
}

fn hold() -> TransferId {
    TransferId::from_uuid(uuid::Uuid::from_u128(0x0190_c0de_0000_7000_8000_0000_0000_00aa))
}

fn new_payment() -> NewExternalPayment {
    NewExternalPayment {
        customer: CustomerId::new_v7(),
        account: AccountId::new_v7(),
        hold: hold(),
        amount: Money::new(12_345, Currency::EUR),
        creditor: ExternalAccount::parse("DE89370400440532013000", "Zoë", None).expect("creditor"),
        remittance: Some("invoice 1".into()),
        rail: RailId::SepaCreditTransfer,
    }
}

fn requested() -> ServiceRecord {
    request(&new_payment(), t0()).expect("request").record
}

fn key() -> CallKey {
    CallKey::of_transfer(hold())
}

fn at(s: i64) -> Timestamp {
    t0() + TimeDelta::seconds(s)
}

fn step(record: &ServiceRecord, input: Input, now: Timestamp) -> Transition {
    transition(record, &input, now, &policy(), 0).unwrap_or_else(|e| panic!("{input:?} on {:?}: {e}", record.status))
}

/// The money effects and calls of a transition, without its events.
fn actions(t: &Transition) -> Vec<Effect> {
    t.effects.iter().filter(|e| !matches!(e, Effect::Emit(_))).cloned().collect()
}

fn emitted(t: &Transition) -> Vec<ServiceStatus> {
    t.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Emit(EventBody::ServiceUpdated { status, .. }) => Some(*status),
            _ => None,
        })
        .collect()
}

fn submitted() -> ServiceRecord {
    step(&requested(), Input::Due, at(0)).record
}

fn rejected(code: &str) -> RailAnswer {
    RailAnswer::Rejected { reason: Some(ReasonCode::parse(code).expect("code")) }
}

#[test]
fn a_request_holds_the_funds_against_the_rails_clearing_account() {
    let t = request(&new_payment(), t0()).expect("request");
    assert_eq!(t.record.status, ServiceStatus::Requested);
    assert_eq!(t.record.id, record_id(hold()));
    assert_eq!(t.record.next_check_at, Some(t0()), "due at once");
    let [Effect::PlaceHold(h), Effect::Emit(EventBody::ServiceUpdated { status: ServiceStatus::Requested, .. })] =
        t.effects.as_slice()
    else {
        panic!("{:?}", t.effects)
    };
    assert_eq!((h.id, h.kind, h.amount), (hold(), TransferKind::Interbank, new_payment().amount));
    assert_eq!(h.credit_account, SystemAccount::InterbankClearing.id(Currency::EUR));
    assert_eq!(h.hold_until, None, "an external hold has no deadline: only the lifecycle ends it");
    let details = bp_core::external::lifecycle::InterbankDetails::of(&t.record).expect("details");
    assert_eq!((details.key, details.creditor), (key(), new_payment().creditor));
    let usd = NewExternalPayment { amount: Money::new(1, Currency::USD), ..new_payment() };
    assert_eq!(
        request(&usd, t0()),
        Err(RequestError::Currency { rail: RailId::SepaCreditTransfer, currency: Currency::USD })
    );
    let zero = NewExternalPayment { amount: Money::new(0, Currency::EUR), ..new_payment() };
    assert_eq!(request(&zero, t0()), Err(RequestError::Amount));
    let long = NewExternalPayment { remittance: Some("x".repeat(141)), ..new_payment() };
    assert_eq!(request(&long, t0()), Err(RequestError::Remittance));
}

#[test]
fn due_submits_once_then_asks_with_back_off() {
    let t = step(&requested(), Input::Due, at(0));
    assert_eq!(t.record.status, ServiceStatus::Submitted);
    assert_eq!(actions(&t), vec![Effect::Submit(key())]);
    assert_eq!(emitted(&t), vec![ServiceStatus::Submitted]);
    assert_eq!(t.record.next_check_at, Some(at(0) + TimeDelta::milliseconds(500)), "first delay, no jitter");
    // Before it is due again, a tick changes nothing.
    let early = step(&t.record, Input::Due, at(0));
    assert_eq!((early.record.clone(), early.effects), (t.record.clone(), vec![]));
    // When due, it asks (never submits again); the delays grow.
    let asked = step(&t.record, Input::Due, at(1));
    assert_eq!(actions(&asked), vec![Effect::QueryStatus(key())]);
    assert_eq!(asked.record.next_check_at, Some(at(1) + TimeDelta::milliseconds(1_000)));
    assert_eq!(asked.record.checks, 2);
}

#[test]
fn answers_post_or_release_the_hold_once() {
    let s = submitted();
    let accepted = step(&s, Input::Answered(RailAnswer::Accepted), at(1));
    assert_eq!((accepted.record.status, actions(&accepted)), (ServiceStatus::Accepted, vec![Effect::PostHold(hold())]));
    assert_eq!(accepted.record.next_check_at, None);
    let settled = step(&accepted.record, Input::Webhook(RailAnswer::Settled), at(2));
    assert_eq!((settled.record.status, actions(&settled)), (ServiceStatus::Settled, vec![]), "posted already");
    assert_eq!(emitted(&settled), vec![ServiceStatus::Settled]);
    let direct = step(&s, Input::Webhook(RailAnswer::Settled), at(1));
    assert_eq!((direct.record.status, actions(&direct)), (ServiceStatus::Settled, vec![Effect::PostHold(hold())]));
    let no = step(&s, Input::Answered(rejected("AC01")), at(1));
    assert_eq!((no.record.status, actions(&no)), (ServiceStatus::Rejected, vec![Effect::VoidHold(hold())]));
    assert_eq!(no.record.reason, Some(ReasonCode::parse("AC01").expect("code")));
    let pending = step(&s, Input::Answered(RailAnswer::Pending), at(1));
    assert_eq!((pending.record.clone(), pending.effects), (s.clone(), vec![]), "still submitted, as scheduled");
}

#[test]
fn a_refused_submission_releases_and_a_lost_one_is_sent_again_with_the_same_key() {
    let s = submitted();
    let refused = step(&s, Input::SubmitFailed(CallError::Refused(Refusal { code: None })), at(1));
    assert_eq!((refused.record.status, actions(&refused)), (ServiceStatus::Rejected, vec![Effect::VoidHold(hold())]));
    let not_sent = step(&s, Input::SubmitFailed(CallError::NotSent(NotSent::CircuitOpen)), at(1));
    assert_eq!((not_sent.record.status, actions(&not_sent)), (ServiceStatus::Requested, vec![]));
    let again = step(&not_sent.record, Input::Due, not_sent.record.next_check_at.expect("scheduled"));
    assert_eq!(actions(&again), vec![Effect::Submit(key())], "the same key");
}

#[test]
fn an_unknown_outcome_is_reconciled_by_asking_never_by_resubmitting() {
    let s = submitted();
    let unknown = step(&s, Input::SubmitFailed(CallError::Unknown(Unknown::Timeout)), at(1));
    assert_eq!((unknown.record.status, actions(&unknown)), (ServiceStatus::Unknown, vec![]));
    assert_eq!(emitted(&unknown), vec![ServiceStatus::Unknown]);
    let mut r = unknown.record;
    // Queries fail or say nothing new for a while: it keeps asking, never submitting.
    for _ in 0..5 {
        let due = r.next_check_at.expect("scheduled");
        let asked = step(&r, Input::Due, due);
        assert_eq!(actions(&asked), vec![Effect::QueryStatus(key())]);
        r = step(&asked.record, Input::StatusFailed(CallError::Unknown(Unknown::ServerError { status: 503 })), due)
            .record;
        assert_eq!(r.status, ServiceStatus::Unknown);
    }
    let known = step(&r, Input::StatusReport(RailStatus::Known { answer: RailAnswer::Accepted }), at(30));
    assert_eq!((known.record.status, actions(&known)), (ServiceStatus::Accepted, vec![Effect::PostHold(hold())]));
    // The rail never got it: sent again under the same key.
    let lost = step(&r, Input::StatusReport(RailStatus::NotFound), at(30));
    assert_eq!(lost.record.status, ServiceStatus::Requested);
    let resent = step(&lost.record, Input::Due, lost.record.next_check_at.expect("scheduled"));
    assert_eq!(actions(&resent), vec![Effect::Submit(key())]);
    // Pending news of an unknown one: submitted again.
    let p = step(&r, Input::Webhook(RailAnswer::Pending), at(30));
    assert_eq!(p.record.status, ServiceStatus::Submitted);
}

#[test]
fn repeated_and_stale_reports_change_nothing() {
    let s = submitted();
    let decided = [
        step(&s, Input::Answered(RailAnswer::Accepted), at(1)).record,
        step(&s, Input::Answered(RailAnswer::Settled), at(1)).record,
        step(&s, Input::Answered(rejected("AM04")), at(1)).record,
    ];
    for r in &decided {
        let mut same = vec![
            Input::Due,
            Input::Webhook(RailAnswer::Pending),
            Input::SubmitFailed(CallError::Unknown(Unknown::Timeout)),
            Input::SubmitFailed(CallError::NotSent(NotSent::NoConnection)),
            Input::StatusFailed(CallError::Refused(Refusal { code: None })),
        ];
        match r.status {
            ServiceStatus::Accepted => same.push(Input::Webhook(RailAnswer::Accepted)),
            ServiceStatus::Settled => {
                same.extend([Input::Webhook(RailAnswer::Accepted), Input::Webhook(RailAnswer::Settled)]);
            }
            _ => same.extend([
                Input::Webhook(rejected("AM04")),
                Input::StatusReport(RailStatus::NotFound),
                Input::SubmitFailed(CallError::Refused(Refusal { code: None })),
            ]),
        }
        for input in same {
            let t = step(r, input.clone(), at(2));
            assert_eq!((&t.record, t.effects.as_slice()), (r, &[][..]), "{input:?} on {:?}", r.status);
        }
    }
}

#[test]
fn late_conflicting_reports_are_surfaced_not_applied() {
    let s = submitted();
    let no = step(&s, Input::Answered(rejected("AC01")), at(1)).record;
    let yes = step(&s, Input::Answered(RailAnswer::Accepted), at(1)).record;
    let cases = [
        (&no, Input::Webhook(RailAnswer::Accepted), "accepted"),
        (&no, Input::StatusReport(RailStatus::Known { answer: RailAnswer::Settled }), "settled"),
        (&yes, Input::Webhook(rejected("AC01")), "rejected"),
        (&yes, Input::StatusReport(RailStatus::NotFound), "not found"),
        (&yes, Input::SubmitFailed(CallError::Refused(Refusal { code: None })), "refused"),
    ];
    for (record, input, reported) in cases {
        assert_eq!(
            transition(record, &input, at(2), &policy(), 0),
            Err(TransitionError::Conflict { status: record.status, reported }),
        );
    }
}

#[test]
fn an_undecided_payment_is_flagged_stuck_after_the_bound_and_never_released() {
    let mut r = submitted();
    r = step(&r, Input::SubmitFailed(CallError::Unknown(Unknown::ConnectionLost)), at(1)).record;
    let before = step(&r, Input::Due, at(3_599));
    assert_eq!(before.record.stuck_since, None);
    let after = step(&before.record, Input::Due, at(3_600 + 60));
    assert_eq!(after.record.stuck_since, Some(at(3_660)));
    assert_eq!(actions(&after), vec![Effect::QueryStatus(key())], "still asking; no release");
    assert!(
        after.effects.iter().any(|e| matches!(e, Effect::Emit(EventBody::ServiceUpdated { stuck_since: Some(_), .. })))
    );
    // Days later it is still held and asked about, at the longest back-off at most.
    let mut r = after.record;
    for day in 1..=3 {
        let t = step(&r, Input::Due, at(day * 86_400));
        assert_eq!(actions(&t), vec![Effect::QueryStatus(key())]);
        assert!(t.record.next_check_at.expect("scheduled") <= at(day * 86_400) + TimeDelta::seconds(60));
        assert_eq!(t.record.stuck_since, Some(at(3_660)), "since when, kept");
        r = t.record;
    }
    let settled = step(&r, Input::Webhook(RailAnswer::Settled), at(4 * 86_400));
    assert_eq!((settled.record.stuck_since, actions(&settled)), (None, vec![Effect::PostHold(hold())]));
}

fn input_strategy() -> impl Strategy<Value = Input> {
    let answer = prop_oneof![
        Just(RailAnswer::Pending),
        Just(RailAnswer::Accepted),
        Just(RailAnswer::Settled),
        Just(RailAnswer::Rejected { reason: None }),
    ];
    let error = prop_oneof![
        Just(CallError::Refused(Refusal { code: None })),
        Just(CallError::NotSent(NotSent::CircuitOpen)),
        Just(CallError::Unknown(Unknown::Timeout)),
    ];
    prop_oneof![
        Just(Input::Due),
        answer.clone().prop_map(Input::Answered),
        answer.clone().prop_map(Input::Webhook),
        answer.prop_map(|answer| Input::StatusReport(RailStatus::Known { answer })),
        Just(Input::StatusReport(RailStatus::NotFound)),
        error.clone().prop_map(Input::SubmitFailed),
        error.prop_map(Input::StatusFailed),
    ]
}

proptest! {
    #[test]
    fn no_sequence_of_inputs_moves_the_money_twice(inputs in proptest::collection::vec((input_strategy(), 0u64..120, any::<u64>()), 0..40)) {
        let mut record = requested();
        let (mut posts, mut voids, mut now) = (0, 0, t0());
        for (input, secs, random) in inputs {
            now += TimeDelta::seconds(secs as i64);
            match transition(&record, &input, now, &policy(), random) {
                Ok(t) => {
                    posts += t.effects.iter().filter(|e| matches!(e, Effect::PostHold(_))).count();
                    voids += t.effects.iter().filter(|e| matches!(e, Effect::VoidHold(_))).count();
                    for e in &t.effects {
                        if let Effect::Submit(k) | Effect::QueryStatus(k) = e {
                            prop_assert_eq!(k, &key(), "every call carries the one key");
                        }
                    }
                    prop_assert_eq!(t.record.status.money_decided(), posts + voids == 1);
                    prop_assert!(t.record.next_check_at.is_some() != t.record.status.money_decided());
                    record = t.record;
                }
                Err(TransitionError::Conflict { status, .. }) => prop_assert!(status.money_decided()),
                Err(e) => prop_assert!(false, "{e}"),
            }
            prop_assert!(posts + voids <= 1, "posted {posts} and voided {voids}");
        }
    }
}

fn account(status: AccountStatus, currency: Currency) -> Account {
    Account {
        id: AccountId::new_v7(),
        number: AccountNumber::from_serial(42).expect("number"),
        owner: AccountOwner::Customer { customer_id: CustomerId::new_v7() },
        kind: AccountKind::Current,
        currency,
        status,
        posted_minor: 0,
        held_minor: 0,
        overdraft_limit_minor: 0,
        last_event_seq: 1,
        version: 1,
        opened_at: t0(),
    }
}

#[test]
fn an_incoming_credit_is_posted_from_clearing_once_or_returned_with_a_reason() {
    let bank = BankIbans::new("IT", "X0542811101").expect("scheme");
    let ours = bank.iban_of(AccountNumber::from_serial(42).expect("number"));
    let credit = IncomingCredit {
        end_to_end_id: "NOTPROVIDED".into(),
        tx_id: Some("TX-1".into()),
        debtor_agent: None,
        amount: Money::new(5_000, Currency::EUR),
        creditor_iban: ours.clone(),
        debtor_name: Some("Bob".into()),
        remittance: Some("rent\nmarch".into()),
    };
    let rail = RailId::SepaCreditTransfer;
    assert_eq!(incoming_account_number(&bank, &credit), Ok(AccountNumber::from_serial(42).expect("number")));
    let active = account(AccountStatus::Active, Currency::EUR);
    let t = credit_incoming(rail, &credit, Some(&active)).expect("credit");
    assert_eq!(
        (t.debit_account, t.credit_account, t.amount),
        (rail.clearing_account(Currency::EUR), active.id, credit.amount)
    );
    assert_eq!((t.kind, t.hold_until, t.reference.as_deref()), (TransferKind::Interbank, None, Some("rent march")));
    assert_eq!(t.id, incoming_transfer_id(rail, &credit));
    assert_eq!(
        credit_incoming(rail, &credit.clone(), Some(&active)).expect("again").id,
        t.id,
        "delivered twice: one id"
    );
    let code = |c: &str| ReasonCode::parse(c).expect("code");
    let elsewhere = IncomingCredit {
        creditor_iban: bp_core::iban::Iban::parse("DE89370400440532013000").expect("iban"),
        ..credit.clone()
    };
    assert_eq!(incoming_account_number(&bank, &elsewhere), Err(code("AC01")));
    assert_eq!(credit_incoming(rail, &credit, None), Err(code("AC01")));
    assert_eq!(credit_incoming(rail, &credit, Some(&account(AccountStatus::Closed, Currency::EUR))), Err(code("AC04")));
    assert_eq!(credit_incoming(rail, &credit, Some(&account(AccountStatus::Frozen, Currency::EUR))), Err(code("AC06")));
    assert_eq!(credit_incoming(rail, &credit, Some(&account(AccountStatus::Active, Currency::USD))), Err(code("AM03")));
    let dollars = IncomingCredit { amount: Money::new(5_000, Currency::USD), ..credit.clone() };
    assert_eq!(credit_incoming(rail, &dollars, Some(&active)), Err(code("AM03")));
    let system =
        Account { owner: AccountOwner::Bank { system: SystemAccount::Fees }, kind: AccountKind::System, ..active };
    assert_eq!(credit_incoming(rail, &credit, Some(&system)), Err(code("AC01")), "never a system account");
}
