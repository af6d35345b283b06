//! Server-Sent Events over real HTTP: a ticket opens the stream of one's own accounts, a transfer
//! appears at once, `Last-Event-ID` resumes without gap or duplicate, tickets are single-use, and
//! another customer's stream stays silent.

mod common;

use std::time::Duration;

use common::{Api, Server};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ALL: &str = "openid profile accounts payments offline_access";

/// One parsed SSE message.
#[derive(Debug, Clone)]
struct Message {
    id: String,
    event: String,
    data: Value,
}

struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    async fn open(server: &Server, api: &Api, last_event_id: Option<&str>) -> Self {
        let (status, ticket) = api.post("/v1/events/ticket", &json!({}), None).await;
        assert_eq!(status, StatusCode::OK, "{ticket}");
        let url = server.url(&format!("/v1/events?ticket={}", ticket["ticket"].as_str().expect("ticket")));
        let mut request = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("stream");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self { response, buffer: String::new() }
    }

    /// The next `n` messages (heartbeat comments skipped), failing after 10 s.
    async fn next(&mut self, n: usize) -> Vec<Message> {
        let mut out = Vec::new();
        while out.len() < n {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if !data.is_empty() {
                    out.push(Message { id, event, data: serde_json::from_str(&data).expect("json data") });
                }
            }
            if out.len() >= n {
                break;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within 10 s after {} of {n}", out.len()))
                .expect("read")
                .expect("the stream ended");
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
        out
    }

    /// Whether a message arrives within `wait`.
    async fn quiet_for(&mut self, wait: Duration) -> bool {
        match tokio::time::timeout(wait, self.response.chunk()).await {
            Err(_) => true,
            Ok(Ok(Some(chunk))) => std::str::from_utf8(&chunk).expect("utf-8").trim_start().starts_with(':'),
            Ok(_) => false,
        }
    }
}

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
    let bad = reqwest::Client::new()
        .get(server.url("/v1/events"))
        .bearer_auth(&api.token)
        .header("Last-Event-ID", "junk")
        .send()
        .await
        .expect("stream");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
}
