//! Server-Sent Events over real HTTP: a ticket opens the stream of one's own accounts, a transfer
//! appears at once, `Last-Event-ID` resumes without gap or duplicate, tickets are single-use, and
//! another customer's stream stays silent.

mod common;

use std::time::Duration;

use common::sse::Stream;
use common::{Api, Server};
use reqwest::StatusCode;
use serde_json::json;

const ALL: &str = "openid profile accounts payments offline_access";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_stream_to_their_accounts_owner_and_resume_without_gaps() {
    let mut server = Server::start().await;
    let ada = server.customer("ada-sse", 100_000, 0).await;
    let bob = server.customer("bob-sse", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let bob_api = Api::new(&server, &server.login(&bob, ALL).await);
    let second = server.open_eur(ada.id).await;
    let (_, account) = api.get(&format!("/v1/accounts/{second}")).await;
    let to = account["number"].as_str().expect("number").to_owned();
    let mut stream = Stream::open(&server, &api, None).await;
    let mut bob_stream = Stream::open(&server, &bob_api, None).await;

    let pay = |amount: &str| json!({ "from_account": ada.eur, "to_account_number": to, "amount": { "amount": amount, "currency": "EUR" } });
    let (status, _) = api.post("/v1/transfers", &pay("1.00"), Some("s1")).await;
    assert_eq!(status, StatusCode::CREATED);
    let first = stream.next(2).await;
    assert!(first.iter().all(|m| m.event == "transfer.posted"), "{first:?}");
    let debit = first.iter().find(|m| m.data["account_id"] == json!(ada.eur)).expect("the debit side");
    assert_eq!(debit.data["data"]["amount"]["amount"], "1.00");
    assert_eq!(debit.data["data"]["balances"]["posted"]["amount"], "999.00", "the new balance");

    // More transfers while a second stream resumes from the first event's id.
    for (i, amount) in ["2.00", "3.00"].iter().enumerate() {
        api.post("/v1/transfers", &pay(amount), Some(&format!("s{}", i + 2))).await;
    }
    let more = stream.next(4).await;
    let mut resumed = Stream::open(&server, &api, Some(&first[0].id)).await;
    let replay = resumed.next(5).await;
    let seen: Vec<(String, u64)> = first[1..]
        .iter()
        .chain(&more)
        .map(|m| (m.data["account_id"].as_str().expect("id").to_owned(), m.data["seq"].as_u64().expect("seq")))
        .collect();
    let replayed: Vec<(String, u64)> = replay
        .iter()
        .map(|m| (m.data["account_id"].as_str().expect("id").to_owned(), m.data["seq"].as_u64().expect("seq")))
        .collect();
    let mut a = seen.clone();
    let mut b = replayed.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "everything after the first event, once");
    assert!(resumed.quiet_for(Duration::from_millis(300)).await, "and nothing more");

    // Bob saw none of it.
    assert!(bob_stream.quiet_for(Duration::from_millis(300)).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_single_use_and_required() {
    let mut server = Server::start().await;
    let ada = server.customer("ada-tk", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let (_, ticket) = api.post("/v1/events/ticket", &json!({}), None).await;
    let url = server.url(&format!("/v1/events?ticket={}", ticket["ticket"].as_str().expect("ticket")));
    let first = reqwest::get(&url).await.expect("stream");
    assert_eq!(first.status(), StatusCode::OK);
    let again = reqwest::get(&url).await.expect("stream");
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(reqwest::get(server.url("/v1/events")).await.expect("stream").status(), StatusCode::UNAUTHORIZED);
    let bad =
        api.request(reqwest::Method::GET, "/v1/events").header("Last-Event-ID", "junk").send().await.expect("stream");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
}

/// A client that falls a whole ring (`bus.stream_buffer_events`) behind is disconnected, and a
/// client that keeps up gets every event meanwhile: nobody waits for the slow one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_a_whole_buffer_behind_is_disconnected_and_nobody_waits_for_it() {
    let mut server = Server::start_with(|c| c.bus.stream_buffer_events = 16).await;
    let ada = server.customer("ada-slow", 100_000, 0).await;
    let second = server.open_eur(ada.id).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let (_, account) = api.get(&format!("/v1/accounts/{second}")).await;
    let to = account["number"].as_str().expect("number").to_owned();
    let state = &server.state;
    let ids = {
        let mut ids = vec![ada.eur, ada.usd, second];
        ids.sort();
        ids
    };
    let mut start = Vec::new();
    for id in &ids {
        start.push(state.ledger.account(*id).await.expect("account").last_event_seq);
    }
    let open = || client_stream(&server, ada.id, &ids, start.clone());
    server.audit_settled().await;
    let mut slow = open();
    // The slow client reads the store (nothing new) and waits for live events, then stops reading.
    assert!(tokio::time::timeout(Duration::from_millis(50), slow.next_frame()).await.is_err());
    let mut fast = open();
    let reader = tokio::spawn(async move {
        let mut frames = 0;
        while frames < 40 {
            match tokio::time::timeout(Duration::from_secs(10), fast.next_frame()).await {
                Ok(Some(_)) => frames += 1,
                Ok(None) => panic!("the fast client was disconnected after {frames} events"),
                Err(_) => panic!("the fast client waited over 10 s after {frames} events"),
            }
        }
        frames
    });
    // Twenty transfers: forty events, more than the ring of sixteen.
    for i in 0..20 {
        let body = json!({ "from_account": ada.eur, "to_account_number": to, "amount": { "amount": "1.00", "currency": "EUR" } });
        let (status, _) = api.post("/v1/transfers", &body, Some(&format!("slow-{i}"))).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    assert_eq!(reader.await.expect("reader"), 40, "the fast client got every event");
    let ended = tokio::time::timeout(Duration::from_secs(5), slow.next_frame()).await.expect("an answer at once");
    assert!(ended.is_none(), "the slow client is disconnected (and resumes from its cursor)");
    server.stop().await;
}

/// The customer's security events (from the audit log) reach their stream, typed
/// `security.<kind>`, with no secret in them; another customer's stream stays silent; the cursor
/// covers them, so a resumed stream does not repeat them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_events_reach_their_customers_stream_once() {
    let mut server = Server::start().await;
    let ada = server.customer("ada-security", 0, 0).await;
    let bob = server.customer("bob-security", 0, 0).await;
    let ada_tokens = server.login(&ada, ALL).await;
    let api = Api::new(&server, &ada_tokens);
    let bob_api = Api::new(&server, &server.login(&bob, ALL).await);
    let mut stream = Stream::open(&server, &api, None).await;
    let mut bob_stream = Stream::open(&server, &bob_api, None).await;

    // Ada signs in again elsewhere (a new session), then signs that session out.
    let other = server.login(&ada, ALL).await;
    let revoked = reqwest::Client::new()
        .post(server.url("/oauth2/revoke"))
        .form(&[("token", other["refresh_token"].as_str().expect("rt")), ("client_id", common::CLIENT)])
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), StatusCode::OK);
    let got = stream.next(2).await;
    assert_eq!(got[0].event, "security.login_succeeded", "{got:?}");
    assert_eq!(got[0].data["kind"], "login_succeeded");
    assert_eq!(got[1].event, "security.session_revoked", "{got:?}");
    for m in &got {
        let text = m.data.to_string();
        for secret in [&other["access_token"], &other["refresh_token"], &other["id_token"]] {
            assert!(!text.contains(secret.as_str().expect("token")), "no token in a security event");
        }
    }
    assert!(bob_stream.quiet_for(Duration::from_millis(300)).await, "bob sees none of ada's");

    // Resuming after the first: only the second, once.
    let mut resumed = Stream::open(&server, &api, Some(&got[0].id)).await;
    let again = resumed.next(1).await;
    assert_eq!(again[0].event, "security.session_revoked");
    assert_eq!(again[0].id, got[1].id, "the same cursor");
    assert!(resumed.quiet_for(Duration::from_millis(300)).await, "and nothing more");

    // Signing out the session the streams were opened in ends them, after saying so.
    let revoked = reqwest::Client::new()
        .post(server.url("/oauth2/revoke"))
        .form(&[("token", ada_tokens["refresh_token"].as_str().expect("rt")), ("client_id", common::CLIENT)])
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(stream.next(1).await[0].event, "security.session_revoked");
    assert!(stream.closes_within(Duration::from_secs(5)).await, "the stream ends with its session");
    assert!(resumed.closes_within(Duration::from_secs(5)).await, "every stream of that session");
    server.stop().await;
}

/// Revoking a session that has no refresh token (signed in without `offline_access`) with its
/// access token is stored and audited like any sign-out: the session's streams end, and its
/// access token stays refused after a restart on the same data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_access_token_only_session_is_stored_and_ends_its_streams() {
    let mut server = Server::start().await;
    let ada = server.customer("ada-no-refresh", 0, 0).await;
    let tokens = server.login(&ada, "openid accounts").await;
    assert!(tokens.get("refresh_token").is_none(), "a session of access tokens only");
    let api = Api::new(&server, &tokens);
    assert_eq!(api.get("/v1/accounts").await.0, StatusCode::OK);
    let mut stream = Stream::open(&server, &api, None).await;

    let revoked = reqwest::Client::new()
        .post(server.url("/oauth2/revoke"))
        .form(&[("token", api.token.as_str()), ("client_id", common::CLIENT)])
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), StatusCode::OK);
    let last = stream.next(1).await;
    assert_eq!(last[0].event, "security.session_revoked", "{last:?}");
    assert!(stream.closes_within(Duration::from_secs(5)).await, "the stream ends with its session");
    assert_eq!(api.get("/v1/accounts").await.0, StatusCode::UNAUTHORIZED);

    server.restart().await;
    // A new client: the old one's pooled connection went with the old server.
    let api = Api::new(&server, &tokens);
    let (status, body) = api.get("/v1/accounts").await;
    common::assert_problem(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    server.stop().await;
}

/// An idle stream sends a comment every `bus.stream_heartbeat_s`, so that proxies keep it open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_send_heartbeats() {
    let mut server = Server::start_with(|c| c.bus.stream_heartbeat_s = 1).await;
    let ada = server.customer("ada-idle", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let mut stream = Stream::open(&server, &api, None).await;
    let started = std::time::Instant::now();
    assert!(stream.heartbeat_within(Duration::from_secs(5)).await, "a heartbeat comment");
    assert!(stream.heartbeat_within(Duration::from_secs(5)).await, "and another");
    assert!(started.elapsed() >= Duration::from_millis(1500), "about one a second, not a flood");
    server.stop().await;
}

/// Streams are routed by customer: another customer's burst neither wakes nor overflows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_customers_events_do_not_count_against_a_stream() {
    let mut server = Server::start_with(|c| c.bus.stream_buffer_events = 16).await;
    let ada = server.customer("ada-routed", 0, 0).await;
    let bob = server.customer("bob-routed", 100_000, 0).await;
    let second = server.open_eur(bob.id).await;
    let api = Api::new(&server, &server.login(&bob, ALL).await);
    let (_, account) = api.get(&format!("/v1/accounts/{second}")).await;
    let to = account["number"].as_str().expect("number").to_owned();
    server.audit_settled().await;
    let mut ada_stream = client_stream(&server, ada.id, &[ada.eur, ada.usd], vec![1, 1]);
    assert!(tokio::time::timeout(Duration::from_millis(50), ada_stream.next_frame()).await.is_err());
    // Bob: twenty transfers, forty events, more than a ring of sixteen.
    for i in 0..20 {
        let body = json!({ "from_account": bob.eur, "to_account_number": to, "amount": { "amount": "1.00", "currency": "EUR" } });
        let (status, _) = api.post("/v1/transfers", &body, Some(&format!("routed-{i}"))).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    server.audit_settled().await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ada_stream.next_frame()).await.is_err(),
        "ada's stream is still open and has nothing to send"
    );
    server.stop().await;
}

/// A refresh token used twice revokes its session, and the session's streams end with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_token_reuse_ends_the_sessions_streams() {
    let mut server = Server::start().await;
    let ada = server.customer("ada-reuse", 0, 0).await;
    let tokens = server.login(&ada, ALL).await;
    let api = Api::new(&server, &tokens);
    let mut stream = Stream::open(&server, &api, None).await;
    let refresh = |token: String| {
        let site = server.site.clone();
        async move { site.refresh(&token).await.status() }
    };
    let old = tokens["refresh_token"].as_str().expect("rt").to_owned();
    assert_eq!(refresh(old.clone()).await, StatusCode::OK);
    assert_eq!(refresh(old).await, StatusCode::BAD_REQUEST, "the reuse is refused");
    assert_eq!(stream.next(1).await[0].event, "security.refresh_token_reuse");
    assert!(stream.closes_within(Duration::from_secs(5)).await, "the stream ends with its session");
    server.stop().await;
}

/// A stream lasts as long as the session it was opened in: it ends when the session does
/// (`auth.session_ttl_s` after the sign-in), however it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_with_their_session() {
    let mut server = Server::start_with(|c| {
        c.auth.session_ttl_s = 3;
        c.auth.refresh_token_ttl_s = 3;
    })
    .await;
    let ada = server.customer("ada-session-end", 0, 0).await;
    // Taken before the sign-in: the session's clock starts during it (at the second factor,
    // in whole seconds), and a loaded machine can take over a second to finish the sign-in.
    let signed_in = std::time::Instant::now();
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    // On a connection of its own (a pump holds it while it is live).
    let mut stream = Stream::open(&server, &api, None).await;
    assert!(stream.quiet_for(Duration::from_millis(1000)).await, "open while the session lasts");
    assert!(stream.closes_within(Duration::from_secs(10)).await, "the stream ends with its session");
    assert!(signed_in.elapsed() >= Duration::from_secs(2), "not before the session ends");

    // A stream as hyper's body reads it ends at its deadline too.
    let mut read = client_stream(&server, ada.id, &[ada.eur, ada.usd], vec![1, 1])
        .until(tokio::time::Instant::now() + Duration::from_millis(300));
    let ended =
        tokio::time::timeout(Duration::from_secs(5), async { while read.next_frame().await.is_some() {} }).await;
    assert!(ended.is_ok(), "the stream ends at its deadline");
    server.stop().await;
}

/// A stream of `customer`'s accounts `ids` (in cursor order) after `start`, read in the test as
/// hyper's body reads it, from the audit log's position as the server has read it.
fn client_stream(
    server: &Server,
    customer: bp_core::ids::CustomerId,
    ids: &[bp_core::ids::AccountId],
    start: Vec<u64>,
) -> bp_server_example::events::ClientStream {
    let state = &server.state;
    let audit = state.audit_position.load(std::sync::atomic::Ordering::Acquire);
    bp_server_example::events::ClientStream::new(
        state.stream_sources(),
        (customer, None),
        ids.to_vec(),
        (audit, start),
        state.hub.subscribe(customer, ids),
    )
}
