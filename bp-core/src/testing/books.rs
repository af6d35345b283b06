//! Reads a store's books for [`invariants::check`]: every account named with its whole history,
//! the outbox and the totals, page by page through the store's read API, asserting what that API
//! promises of its pages on the way (bounds, cursors that go one way). The conformance harness and
//! the adapters' own tests (the SQLite crash test) read the ledger this way, so that what is
//! checked is read the same everywhere.

use crate::event::Event;
use crate::ids::AccountId;
use crate::invariants::{AccountBooks, Books, History, Scope};
use crate::store::{HistoryQuery, OutboxEntry, PAGE_LEN_MAX, Store};
use crate::transfer::Posting;

use super::fixtures::ok;
#[cfg(doc)]
use crate::invariants;

/// Upper bound of pages read by one paging loop, so that a store whose cursor never ends fails
/// the test instead of hanging it.
const PAGES_MAX: usize = 100_000;

/// The books of `accounts` in `store`, with `scope`: each account that exists, with its whole
/// history, and the whole outbox and the totals. Accounts that do not exist are left out; the
/// transfers are the caller's to add, since only it knows which to read.
pub async fn read_books<S: Store + ?Sized>(store: &S, accounts: &[AccountId], scope: Scope) -> Books {
    let mut books = Books::new(scope);
    for &id in accounts {
        let Some(account) = ok("read account", store.account(id).await) else { continue };
        assert_eq!(account.id, id, "account {id} was read back with another id");
        let events = read_events(store, id, PAGE_LEN_MAX).await;
        let mut postings = read_history(store, id, &HistoryQuery::default()).await;
        // History pages come newest first; books hold histories oldest first.
        postings.reverse();
        books.accounts.push(AccountBooks { account, history: Some(History::whole(events, postings)) });
    }
    books.outbox = Some(read_outbox(store, PAGE_LEN_MAX).await);
    books.totals = Some(ok("totals", store.totals().await));
    books
}

/// Every posting of `account` that `query` selects, newest first, following `next_cursor`.
pub async fn read_history<S: Store + ?Sized>(store: &S, account: AccountId, query: &HistoryQuery) -> Vec<Posting> {
    let mut q = query.clone();
    if q.limit.is_none() {
        q.limit = Some(PAGE_LEN_MAX);
    }
    let limit = usize::try_from(q.limit()).unwrap_or(usize::MAX);
    let mut all: Vec<Posting> = Vec::new();
    for _ in 0..PAGES_MAX {
        let page = ok("read history", store.postings(account, &q).await);
        assert!(page.items.len() <= limit, "a history page is longer than its limit");
        all.extend(page.items);
        match page.next_cursor {
            None => return all,
            Some(cursor) => {
                assert!(
                    q.before_seq.is_none_or(|c| cursor < c),
                    "history cursors must go down: {cursor} after {:?}",
                    q.before_seq
                );
                q.before_seq = Some(cursor);
            }
        }
    }
    panic!("history of {account} has more than {PAGES_MAX} pages")
}

/// Every event of `account`, oldest first, in pages of `page_len`.
pub async fn read_events<S: Store + ?Sized>(store: &S, account: AccountId, page_len: u32) -> Vec<Event> {
    let mut all: Vec<Event> = Vec::new();
    for _ in 0..PAGES_MAX * 10 {
        let after = all.last().map_or(0, |e| e.seq);
        let page = ok("read events", store.events_after(account, after, page_len).await);
        assert!(page.len() <= usize::try_from(page_len).unwrap_or(usize::MAX), "events page too long");
        if page.is_empty() {
            return all;
        }
        for e in page {
            assert!(e.seq > all.last().map_or(after, |l| l.seq), "events_after must go up from after_seq");
            all.push(e);
        }
    }
    panic!("events of {account} have more than {} pages", PAGES_MAX * 10)
}

/// The whole outbox, in pages of `page_len`.
pub async fn read_outbox<S: Store + ?Sized>(store: &S, page_len: u32) -> Vec<OutboxEntry> {
    let mut all: Vec<OutboxEntry> = Vec::new();
    for _ in 0..PAGES_MAX * 10 {
        let after = all.last().map_or(0, |e| e.position);
        let page = ok("read outbox", store.outbox_after(after, page_len).await);
        assert!(page.len() <= usize::try_from(page_len).unwrap_or(usize::MAX), "outbox page too long");
        if page.is_empty() {
            return all;
        }
        for e in page {
            assert!(e.position > all.last().map_or(after, |l| l.position), "outbox positions must go up from `after`");
            all.push(e);
        }
    }
    panic!("the outbox has more than {} pages", PAGES_MAX * 10)
}
