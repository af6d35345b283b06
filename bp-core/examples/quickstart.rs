//! Quickstart: the ledger over the memory store. Opens two customers with an account each, funds
//! one, pays the other, retries that payment (a replay: money moves once), holds and posts an
//! interbank payment, and prints balances and history.
//!
//! `cargo run -p bp-core --example quickstart`
//!
//! For a durable ledger, open the SQLite store of `bp-storage` instead of the memory store:
//! `Ledger::new(Arc::new(SqliteStore::open("data/ledger.db", SqliteConfig::default())?))`.

use std::sync::Arc;

use bp_core::account::SystemAccount;
use bp_core::customer::{KycStatus, NewCustomer, Username};
use bp_core::memory::MemoryStore;
use bp_core::service::current_account;
use bp_core::store::HistoryQuery;
use bp_core::transfer::{TransferKind, TransferRequest};
use bp_core::{AccountId, Currency, CustomerId, Error, Ledger, Money, Store, TransferId};

/// A request to open a natural person. The id is made by the caller: retrying the same request
/// returns the same customer.
fn person(username: &str, given_name: &str, family_name: &str) -> Result<NewCustomer, Error> {
    Ok(NewCustomer::person(
        CustomerId::new_v7(),
        Username::parse(username)?,
        given_name,
        family_name,
        KycStatus::Verified,
    ))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let ledger = Ledger::new(Arc::new(MemoryStore::new()));

    let alice = ledger.open_customer(person("alice", "Alice", "Martin")?).await?;
    let bob = ledger.open_customer(person("bob", "Bob", "Dupont")?).await?;
    let alice_eur = ledger.open_account(current_account(AccountId::new_v7(), alice.id, Currency::EUR)).await?;
    let bob_eur = ledger.open_account(current_account(AccountId::new_v7(), bob.id, Currency::EUR)).await?;

    // Money enters through the bank's EUR funding account, opened by the ledger on first use.
    let deposit = Money::parse("100.00", Currency::EUR)?;
    ledger.fund(TransferId::new_v7(), alice_eur.id, deposit).await?;

    // The client makes the payment's id, stores it before sending, and reuses it on every retry.
    let payment = TransferId::new_v7();
    let amount = Money::parse("12.50", Currency::EUR)?;
    let dinner = Some("Dinner".to_owned());
    let first = ledger.internal_transfer(payment, alice_eur.id, bob_eur.id, amount, dinner.clone()).await?;
    let retry = ledger.internal_transfer(payment, alice_eur.id, bob_eur.id, amount, dinner).await?;
    assert!(!first.replayed && retry.replayed, "the retry replays the first answer");
    assert_eq!(first.transfer, retry.transfer);

    // An interbank payment holds the funds until the other bank answers, then posts (or voids).
    let interbank = TransferId::new_v7();
    let until = chrono::Utc::now() + chrono::TimeDelta::days(1);
    let pending = ledger
        .transfer(TransferRequest {
            id: interbank,
            kind: TransferKind::Interbank,
            debit_account: alice_eur.id,
            credit_account: SystemAccount::InterbankClearing.id(Currency::EUR),
            amount: Money::parse("30.00", Currency::EUR)?,
            reference: Some("Invoice 2026-001".to_owned()),
            hold_until: Some(until),
        })
        .await?;
    let b = ledger.account(alice_eur.id).await?.balances();
    println!(
        "interbank payment {:?}: Alice posted {} held {} available {}",
        pending.transfer.state, b.posted, b.held, b.available
    );
    let posted = ledger.post_pending(interbank).await?;
    println!("interbank payment {:?}", posted.transfer.state);

    for (name, id) in [("Alice", alice_eur.id), ("Bob", bob_eur.id)] {
        let account = ledger.account(id).await?;
        let b = account.balances();
        println!(
            "{name} {} {}: posted {} held {} available {}",
            account.number.formatted(),
            account.currency,
            b.posted,
            b.held,
            b.available
        );
    }

    println!("Alice's history, newest first:");
    let page = ledger.history(alice_eur.id, &HistoryQuery::default()).await?;
    for line in &page.items {
        println!(
            "  #{} {:?} {:?} {} balance {} {}",
            line.seq,
            line.kind,
            line.direction,
            line.amount,
            line.balance_after,
            line.reference.as_deref().unwrap_or(""),
        );
    }

    // The ledger is closed: every currency's balances, system accounts included, sum to zero.
    for total in ledger.store().totals().await? {
        println!("{} sum of all balances: {}", total.currency, total.posted_minor);
    }
    Ok(())
}
