//! A backup taken under load restores to a ledger whose invariants hold (issue 18, point 6):
//! while the clients pay, `BP_HA_BACKUP` backs the database up (the script: `pg_dump` of
//! FerretDB's PostgreSQL database); after the run, `BP_HA_RESTORE` restores it into a new
//! database behind a second MongoDB-protocol server and prints its URI. The restored ledger is
//! opened as the servers open it and checked: its invariants hold, it has every account, and
//! every payment acknowledged before the backup began is in it.

use std::time::{Duration, Instant};

use bp_core::ids::TransferId;
use bp_core::invariants;
use bp_core::store::Store;
use bp_server_example::config::{Config, MongoUri};
use bp_server_example::state::Stores;

use crate::check::ledger_books;
use crate::pay::{Ended, Payment};
use crate::setup::Customer;

/// A backup taken: when it began, and whether it worked.
#[derive(Debug)]
pub struct Taken {
    began: Instant,
    took: Duration,
    result: Result<(), String>,
}

/// Runs `BP_HA_BACKUP` `after` the start of the load, when it is set.
pub fn start(after: Duration) -> Option<tokio::task::JoinHandle<Taken>> {
    let command = std::env::var("BP_HA_BACKUP").ok()?;
    Some(tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let began = Instant::now();
        let result = shell(&command).await.map(|_| ());
        Taken { began, took: began.elapsed(), result }
    }))
}

/// The output of `sh -c command`, or what failed.
async fn shell(command: &str) -> Result<String, String> {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .await
        .map_err(|e| format!("running sh: {e}"))?;
    if !out.status.success() {
        return Err(format!("{} ({})", String::from_utf8_lossy(&out.stderr).trim(), out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Restores `taken` and checks the restored ledger; the failures.
pub async fn check(config: &Config, customers: &[Customer], payments: &[Payment], taken: Taken) -> Vec<String> {
    if let Err(e) = taken.result {
        return vec![format!("the backup under load failed: {e}")];
    }
    let Ok(restore) = std::env::var("BP_HA_RESTORE") else {
        return vec!["BP_HA_BACKUP is set without BP_HA_RESTORE".to_owned()];
    };
    let uri = match shell(&restore).await {
        Ok(out) => out.lines().last().unwrap_or_default().to_owned(),
        Err(e) => return vec![format!("restoring the backup failed: {e}")],
    };
    let mut restored = config.clone();
    restored.storage.mongodb.uri = Some(MongoUri::new(uri));
    let stores = match Stores::open(&restored).await {
        Ok(s) => s,
        Err(e) => return vec![format!("the restored store does not open: {e}")],
    };
    let ledger: &dyn Store = &*stores.ledger;
    let books = match ledger_books(ledger, customers).await {
        Ok(b) => b,
        Err(e) => return vec![format!("the restored ledger: {e}")],
    };
    let mut failures = Vec::new();
    if let Err(violation) = invariants::check(&books) {
        failures.push(format!("the restored ledger's invariants: {violation}"));
    }
    // Acknowledged before the backup began: committed before it, so in its snapshot.
    let before: Vec<&Payment> = payments.iter().filter(|p| p.ended_at.is_some_and(|at| at < taken.began)).collect();
    let mut present = 0;
    for p in &before {
        let Ended::Acknowledged { transfer, .. } = &p.ended else { continue };
        let Ok(id) = transfer.parse::<TransferId>() else {
            failures.push(format!("payment {}: a malformed transfer id {transfer}", p.key));
            continue;
        };
        match ledger.transfer(id).await {
            Ok(Some(_)) => present += 1,
            Ok(None) => failures.push(format!("payment {} acknowledged before the backup is not in it", p.key)),
            Err(e) => failures.push(format!("reading transfer {id} of the restored ledger: {e}")),
        }
    }
    let transfers = books.transfers.as_ref().map_or(0, Vec::len);
    println!(
        "backup under load: taken in {} ms while paying; restored: {transfers} transfers, the invariants {}; \
         {present} of {} payments acknowledged before it began are in it",
        taken.took.as_millis(),
        if failures.is_empty() { "hold" } else { "FAIL" },
        before.len(),
    );
    failures
}
