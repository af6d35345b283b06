//! Fixtures every test of a store can share: valid customers, transfer requests, the time the
//! suites start at, and helpers that name the step that failed. The conformance suites use them,
//! and so do the adapters' own tests, so that a fixture is written once.

use std::fmt::Debug;

use chrono::{NaiveDate, TimeDelta};

use crate::Timestamp;
use crate::account::{Account, SystemAccount};
use crate::customer::{
    Contact, DocumentKind, IdentityDocument, Incorporation, KycStatus, LegalEntityProfile, NewCustomer, Party,
    PersonProfile, Username,
};
use crate::ids::{AccountId, CustomerId, TransferId};
use crate::money::{Currency, Money};
use crate::transfer::{TransferKind, TransferRequest};

/// Where every case's clock starts: 2026-01-01T00:00:00Z.
const START_UNIX_SECS: i64 = 1_767_225_600;

/// The time every case of the conformance suites starts at: 2026-01-01T00:00:00Z.
pub fn start_time() -> Timestamp {
    chrono::DateTime::from_timestamp(START_UNIX_SECS, 0).expect("a valid start time")
}

/// Unwraps `result`, naming the step on failure.
pub fn ok<T, E: Debug>(what: &str, result: Result<T, E>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what}: expected Ok, got Err({e:?})"),
    }
}

/// A JSON object from a `json!` literal.
pub fn json_map(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("not a JSON object: {other}"),
    }
}

/// A valid request to open a natural person, with every optional field filled.
pub fn person(username: &str) -> NewCustomer {
    NewCustomer {
        id: CustomerId::new_v7(),
        username: ok("username", Username::parse(username)),
        party: Party::Person(PersonProfile {
            given_name: "Ada".to_owned(),
            family_name: "Lovelace Byron".to_owned(),
            date_of_birth: NaiveDate::from_ymd_opt(1990, 12, 10),
        }),
        documents: vec![IdentityDocument {
            kind: DocumentKind::Passport,
            number: "XDA123456".to_owned(),
            issuing_country: "ES".to_owned(),
            expires_on: NaiveDate::from_ymd_opt(2031, 6, 30),
        }],
        contact: Contact {
            email: Some(format!("{username}@example.org")),
            phone: Some("+34600123456".to_owned()),
            address: Some("Calle Mayor 1, 28013 Madrid".to_owned()),
        },
        photo_ref: Some(format!("photos/{username}.jpg")),
        kyc: KycStatus::Verified,
        extra: json_map(serde_json::json!({ "segment": "retail", "marketing": { "email": true } })),
    }
}

/// A valid request to open a legal entity.
pub fn company(username: &str) -> NewCustomer {
    NewCustomer {
        id: CustomerId::new_v7(),
        username: ok("username", Username::parse(username)),
        party: Party::LegalEntity(LegalEntityProfile {
            legal_name: "Acme Iberia S.L.".to_owned(),
            tax_id: "B12345678".to_owned(),
            legal_representative: "Grace Hopper".to_owned(),
            incorporation: Incorporation {
                country: "ES".to_owned(),
                date: NaiveDate::from_ymd_opt(2011, 3, 14).expect("a valid date"),
                registry_number: "M-123456".to_owned(),
            },
        }),
        documents: Vec::new(),
        contact: Contact { email: Some(format!("{username}@acme.example")), phone: None, address: None },
        photo_ref: None,
        kyc: KycStatus::Pending,
        extra: serde_json::Map::new(),
    }
}

/// An immediate transfer request.
pub fn request(
    kind: TransferKind,
    debit: AccountId,
    credit: AccountId,
    amount_minor: i64,
    currency: Currency,
) -> TransferRequest {
    TransferRequest {
        id: TransferId::new_v7(),
        kind,
        debit_account: debit,
        credit_account: credit,
        amount: Money::new(amount_minor, currency),
        reference: None,
        hold_until: None,
    }
}

/// `secs` seconds after [`start_time`].
pub fn at(secs: i64) -> Timestamp {
    start_time() + TimeDelta::seconds(secs)
}

/// A deposit of `amount_minor` into `account` from its currency's funding account.
pub fn deposit(account: &Account, amount_minor: i64) -> TransferRequest {
    let funding = SystemAccount::Funding.id(account.currency);
    request(TransferKind::Deposit, funding, account.id, amount_minor, account.currency)
}
