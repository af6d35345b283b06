//! Leases (`crate::lease`): one holder at a time, renewals keep the token, an ended or released
//! lease goes to the next asker with a higher token, and concurrent askers get one holder.

use chrono::TimeDelta;
use tokio::task::JoinSet;

use super::StoreFactory;
use super::harness::Harness;
use crate::StoreErrorKind;
use crate::lease::Lease;
use crate::service::Ledger;
use crate::store::Store;

fn ok<T>(what: &str, r: Result<T, crate::StoreError>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// One holder until the end; renewals keep the token; ended or released, the next asker gets
/// the next token; arguments checked.
pub async fn leases<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let store = h.store();
    let t0 = h.now();
    let a = ok("a takes it", store.acquire_lease("relay", "a", t0, 1_000).await);
    assert_eq!((a.holder.as_str(), a.token, a.expires_at), ("a", 1, t0 + TimeDelta::seconds(1)));
    let b = ok("b asks", store.acquire_lease("relay", "b", t0 + TimeDelta::milliseconds(999), 1_000).await);
    assert_eq!(b, a, "held by a: b gets a's lease as it is");
    let other = ok("another lease", store.acquire_lease("sweeper", "b", t0, 1_000).await);
    assert_eq!((other.holder.as_str(), other.token), ("b", 1), "leases are independent");

    let renewed = ok("a renews", store.acquire_lease("relay", "a", t0 + TimeDelta::milliseconds(500), 2_000).await);
    assert_eq!((renewed.token, renewed.expires_at), (1, t0 + TimeDelta::milliseconds(2_500)));
    let b = ok("b before the new end", store.acquire_lease("relay", "b", t0 + TimeDelta::seconds(2), 1_000).await);
    assert_eq!(b.holder, "a", "the renewal moved the end");

    let end = t0 + TimeDelta::milliseconds(2_500);
    let b = ok("b at the end", store.acquire_lease("relay", "b", end, 1_000).await);
    assert_eq!((b.holder.as_str(), b.token, b.expires_at), ("b", 2, end + TimeDelta::seconds(1)));
    assert!(
        !ok("a releases what it lost", store.release_lease("relay", "a", 1, end).await),
        "only the holder's own token releases"
    );
    assert!(!ok("b with a's token", store.release_lease("relay", "b", 1, end).await));
    assert!(ok("b releases", store.release_lease("relay", "b", 2, end + TimeDelta::milliseconds(10)).await));
    assert!(
        !ok("b releases twice", store.release_lease("relay", "b", 2, end + TimeDelta::milliseconds(10)).await),
        "a released lease has ended"
    );
    let a = ok("a at once", store.acquire_lease("relay", "a", end + TimeDelta::milliseconds(20), 1_000).await);
    assert_eq!((a.holder.as_str(), a.token), ("a", 3), "released: free at once, the next token");
    let same = ok("a renews", store.acquire_lease("relay", "a", end + TimeDelta::milliseconds(30), 1_000).await);
    assert_eq!(same.token, 3);

    for (name, holder) in [("", "a"), ("a b", "a"), ("relay/1", "a"), ("relay", ""), ("relay", "a\u{e9}")] {
        let e = store.acquire_lease(name, holder, t0, 1_000).await.expect_err("a bad name");
        assert_eq!(e.kind(), StoreErrorKind::InvalidRequest, "{name:?} {holder:?}");
        let e = store.release_lease(name, holder, 1, t0).await.expect_err("a bad name");
        assert_eq!(e.kind(), StoreErrorKind::InvalidRequest, "{name:?} {holder:?}");
    }
    for ms in [0, 99, 600_001] {
        let e = store.acquire_lease("relay", "a", t0, ms).await.expect_err("a bad length");
        assert_eq!(e.kind(), StoreErrorKind::InvalidRequest, "{ms} ms");
    }
    let still = ok("unchanged by the refusals", store.acquire_lease("relay", "z", end, 1_000).await);
    assert_eq!((still.holder.as_str(), still.token), ("a", 3));
    h.check_invariants().await;
}

/// Processes asking at once for a free lease, then for it ended: one holder each time, and
/// every asker is told the same holder and token.
pub async fn leases_race<F: StoreFactory>(f: &F) {
    const ASKERS: usize = 8;
    let h = Harness::new(f).await;
    let mut previous: Option<Lease> = None;
    for round in 0..3_i64 {
        let now = h.now() + TimeDelta::seconds(10 * round);
        let mut set = JoinSet::new();
        for i in 0..ASKERS {
            let ledger: Ledger<F::S> = h.ledger.clone();
            set.spawn(async move { ledger.store().acquire_lease("sweeper", &format!("p{i}"), now, 5_000).await });
        }
        let mut answers = Vec::new();
        while let Some(joined) = set.join_next().await {
            answers.push(ok("acquire", joined.expect("an asker panicked")));
        }
        let winner = answers[0].clone();
        assert!(
            answers.iter().all(|l| *l == winner),
            "round {round}: one holder for all askers, got {:?}",
            answers.iter().map(|l| (&l.holder, l.token)).collect::<Vec<_>>()
        );
        let expected_token = previous.as_ref().map_or(1, |p| p.token + 1);
        assert_eq!(winner.token, expected_token, "round {round}: the token after the ended lease's");
        previous = Some(winner);
    }
    h.check_invariants().await;
}
