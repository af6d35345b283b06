//! The single-threaded model that concurrent tests check a ledger against: the accepted
//! transfers replayed one by one in the order the store committed them (its outbox's order).

use std::collections::{HashMap, HashSet};

use crate::event::EventBody;
use crate::ids::{AccountId, TransferId};
use crate::money::Money;
use crate::store::OutboxEntry;
use crate::transfer::{Direction, Transfer};

/// One `transfer.posted` event: position, account, direction, amount, posted and held balance.
type Posted = (u64, AccountId, Direction, Money, i64, i64);

/// Replays `accepted`, transfers that posted at once (no holds), in the commit order of
/// `outbox` (each at its first `transfer.posted` event) on a single-threaded model, and
/// answers the balance the model gives each account they touch.
///
/// Panics unless the outbox posts exactly the accepted transfers, each exactly once (two
/// `transfer.posted` events, one per side), every event carries the balance the serial replay
/// reaches at that point and nothing held, and no account of `overdraft_minor` (the limit of
/// each customer account) ever goes below its limit.
pub fn replay_in_commit_order(
    outbox: &[OutboxEntry],
    accepted: &[&Transfer],
    overdraft_minor: &HashMap<AccountId, i64>,
) -> HashMap<AccountId, i64> {
    let mut posted: HashMap<TransferId, Vec<Posted>> = HashMap::new();
    for entry in outbox {
        if let EventBody::TransferPosted { transfer_id, direction, amount, balances, .. } = &entry.event.body {
            assert_eq!(
                balances.available.amount_minor(),
                balances.posted.amount_minor() - balances.held.amount_minor()
            );
            posted.entry(*transfer_id).or_default().push((
                entry.position,
                entry.event.account_id,
                *direction,
                *amount,
                balances.posted.amount_minor(),
                balances.held.amount_minor(),
            ));
        }
    }
    let accepted_ids: HashSet<TransferId> = accepted.iter().map(|t| t.id).collect();
    for id in posted.keys() {
        assert!(accepted_ids.contains(id), "the outbox posts transfer {id}, which no one was told was accepted");
    }
    let mut order: Vec<(u64, &Transfer)> = Vec::with_capacity(accepted.len());
    for t in accepted {
        let events = posted.get(&t.id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(events.len(), 2, "accepted transfer {} must have exactly two transfer.posted events", t.id);
        order.push((events.iter().map(|e| e.0).min().unwrap_or(u64::MAX), t));
    }
    order.sort_by_key(|(position, _)| *position);
    let mut model: HashMap<AccountId, i64> = HashMap::new();
    for (_, t) in order {
        let amount = t.amount.amount_minor();
        for (account, direction, delta) in
            [(t.debit_account, Direction::Debit, -amount), (t.credit_account, Direction::Credit, amount)]
        {
            let balance = model.entry(account).or_insert(0);
            *balance += delta;
            let event = posted[&t.id]
                .iter()
                .find(|e| e.1 == account && e.2 == direction)
                .unwrap_or_else(|| panic!("transfer {}: no {direction:?} event on {account}", t.id));
            assert_eq!(event.3, t.amount, "transfer {}: event amount", t.id);
            assert_eq!(
                (event.4, event.5),
                (*balance, 0),
                "transfer {}: the {direction:?} event's balance disagrees with a serial replay \
                 in commit order",
                t.id
            );
            if let Some(limit) = overdraft_minor.get(&account) {
                assert!(*balance >= -limit, "account {account} went below its overdraft limit: {balance}");
            }
        }
    }
    model
}
