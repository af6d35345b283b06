//! The two transports of `GET /v1/events`: a connection that opens with it is served without
//! hyper (`stream_conn`), a stream asked for on a connection that served other requests goes
//! through hyper. Both must be the same HTTP/1.1 to a client: status, headers (security headers
//! included), chunked framing, events; and the lean one must refuse what it does not take.

mod common;

use std::time::Duration;

use bp_core::bus::{BusError, EventBus, Subscription};
use bp_core::event::Event;
use bp_core::ids::{AccountId, TransferId};
use bp_core::money::{Currency, Money};
use common::{Api, Server};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const ALL: &str = "openid profile accounts payments offline_access";

/// A raw HTTP/1.1 connection to the server.
struct Raw {
    tcp: TcpStream,
    buf: Vec<u8>,
}

/// A response head: the status code and the headers (names lower-case).
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

impl Raw {
    async fn connect(server: &Server) -> Self {
        let addr = server.base.trim_start_matches("http://").to_owned();
        Self { tcp: TcpStream::connect(addr).await.expect("connect"), buf: Vec::new() }
    }

    /// A connection whose receive buffer is `bytes` (as the kernel rounds it): a client that
    /// does not read soon leaves the server's socket full.
    async fn connect_small(server: &Server, bytes: u32) -> Self {
        let addr: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().expect("address");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        Self { tcp: socket.connect(addr).await.expect("connect"), buf: Vec::new() }
    }

    /// Opens the event stream of `api`'s customer on this connection (bearer token); its head.
    async fn open_stream(&mut self, api: &Api) -> Head {
        // Host is not the server's address: a proof names the server's public URL (the issuer).
        let request =
            format!("GET /v1/events HTTP/1.1\r\nHost: bp.test\r\n{}\r\n", api.head_lines("GET", "/v1/events"));
        self.send(request.as_bytes()).await;
        self.head().await
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("send");
    }

    /// Reads until `buf` holds `n` bytes; false at the end of the connection.
    async fn fill(&mut self, n: usize) -> bool {
        while self.buf.len() < n {
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(10), self.tcp.read(&mut chunk))
                .await
                .expect("the server answers within 10 s")
                .expect("read");
            if read == 0 {
                return false;
            }
            self.buf.extend_from_slice(&chunk[..read]);
        }
        true
    }

    /// The bytes up to and including the next `delimiter`.
    async fn until(&mut self, delimiter: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = self.buf.windows(delimiter.len()).position(|w| w == delimiter) {
                return self.buf.drain(..at + delimiter.len()).collect();
            }
            let have = self.buf.len();
            assert!(self.fill(have + 1).await, "the connection ended before {delimiter:?}");
        }
    }

    async fn head(&mut self) -> Head {
        let raw = String::from_utf8(self.until(b"\r\n\r\n").await).expect("utf-8 head");
        let mut lines = raw.split("\r\n");
        let status_line = lines.next().expect("status line");
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status = status_line[9..12].parse().expect("status");
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').expect("a header line");
                (n.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        Head { status, headers }
    }

    /// The body of an answer with a `content-length`.
    async fn body(&mut self, head: &Head) -> Value {
        let len: usize = head.get("content-length").expect("content-length").parse().expect("length");
        assert!(self.fill(len).await, "the whole body");
        let body: Vec<u8> = self.buf.drain(..len).collect();
        serde_json::from_slice(&body).expect("json")
    }

    /// The next chunk's data (chunked transfer coding), or None at the last chunk.
    async fn chunk(&mut self) -> Option<Vec<u8>> {
        let size_line = String::from_utf8(self.until(b"\r\n").await).expect("size line");
        let size = usize::from_str_radix(size_line.trim_end(), 16).expect("hex chunk size");
        assert!(self.fill(size + 2).await, "the whole chunk");
        let data: Vec<u8> = self.buf.drain(..size).collect();
        assert_eq!(self.buf.drain(..2).collect::<Vec<u8>>(), b"\r\n", "a chunk ends with CRLF");
        (size > 0).then_some(data)
    }

    /// Reads chunks until `n` SSE messages with an `event:` line arrived; their `data:` JSON.
    async fn events(&mut self, n: usize) -> Vec<(String, Value)> {
        let mut text = String::new();
        let mut out = Vec::new();
        while out.len() < n {
            let data = self.chunk().await.expect("the stream goes on");
            text.push_str(std::str::from_utf8(&data).expect("utf-8"));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let event = block.lines().find_map(|l| l.strip_prefix("event: "));
                let data = block.lines().find_map(|l| l.strip_prefix("data: "));
                if let (Some(e), Some(d)) = (event, data) {
                    out.push((e.to_owned(), serde_json::from_str(d).expect("data json")));
                }
            }
        }
        out
    }

    /// The sequence numbers of `account`'s next `n` events on the stream, in arrival order.
    async fn seqs_of(&mut self, account: AccountId, n: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        while seqs.len() < n {
            for (_, data) in self.events(1).await {
                if data["account_id"] == json!(account) {
                    seqs.push(data["seq"].as_u64().expect("seq"));
                }
            }
        }
        seqs
    }

    /// Whether the server closed the connection (after what was read).
    async fn closed(&mut self) -> bool {
        let have = self.buf.len();
        !self.fill(have + 1).await
    }
}

async fn ticket(api: &Api) -> String {
    let (_, t) = api.post("/v1/events/ticket", &json!({}), None).await;
    t["ticket"].as_str().expect("ticket").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_its_own_connection_is_plain_http_and_matches_one_through_hyper() {
    let mut server = Server::start().await;
    let ada = server.customer("ada-raw", 100_000, 0).await;
    let bob = server.customer("bob-raw", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let bob_api = Api::new(&server, &server.login(&bob, ALL).await);
    let (_, bob_account) = bob_api.get(&format!("/v1/accounts/{}", bob.eur)).await;
    // Bob is trusted, so the payment below is exempt without a low-value audit entry, and every
    // security event so far has been read before the streams open: the payment's is then the
    // only event on Ada's streams (a security event would race it to be first).
    let (_, added) =
        api.post("/v1/beneficiaries", &json!({ "name": "Bob", "account_number": bob_account["number"] }), None).await;
    let answer = json!({ "method": "totp", "challenge_id": added["sca"]["id"], "code": server.totp(&ada).await });
    let confirm = format!("/v1/beneficiaries/{}/confirm", added["beneficiary"]["id"].as_str().expect("id"));
    assert_eq!(api.post(&confirm, &answer, None).await.0, reqwest::StatusCode::OK);
    server.audit_settled().await;

    // The lean transport: the connection's first bytes are the stream's request, sent in two
    // pieces (the server waits until it can tell).
    let mut lean = Raw::connect(&server).await;
    let request = format!(
        "GET /v1/events?ticket={} HTTP/1.1\r\nHost: bp.test\r\nAccept: text/event-stream\r\n\r\n",
        ticket(&api).await
    );
    lean.send(&request.as_bytes()[..9]).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    lean.send(&request.as_bytes()[9..]).await;
    let head = lean.head().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.get("content-type"), Some("text/event-stream"));
    assert_eq!(head.get("cache-control"), Some("no-cache"));
    assert_eq!(head.get("transfer-encoding"), Some("chunked"));
    assert_eq!(head.get("connection"), Some("close"));
    assert_eq!(head.get("x-content-type-options"), Some("nosniff"), "the security headers too");
    assert!(head.get("content-security-policy").is_some_and(|v| v.contains("default-src 'self'")));
    assert!(head.get("x-request-id").is_some() && head.get("date").is_some());
    assert!(head.get("content-length").is_none());

    // hyper's transport: a stream asked for on a connection that has served a request before.
    let tcp = TcpStream::connect(server.base.trim_start_matches("http://")).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.expect("handshake");
    tokio::spawn(conn);
    let get = |uri: String| {
        let url = format!("{}{uri}", api.base);
        let key = api.dpop.as_ref().expect("a DPoP-bound token");
        let [(a, authorization), (d, proof)] = key.headers("GET", &url, &api.token);
        hyper::Request::get(uri)
            .header("host", "bp.test")
            .header(a, authorization)
            .header(d, proof)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request")
    };
    let first = sender.send_request(get("/v1/accounts".to_owned())).await.expect("accounts");
    assert_eq!(first.status(), 200);
    let _ = http_body_util::BodyExt::collect(first.into_body()).await.expect("body");
    sender.ready().await.expect("the connection is ready for another request");
    let reused = sender.send_request(get("/v1/events".to_owned())).await.expect("stream");
    assert_eq!(reused.status(), 200);
    assert_eq!(reused.headers()["content-type"], "text/event-stream");
    let mut reused = reused.into_body();

    let pay = json!({ "from_account": ada.eur, "to_account_number": bob_account["number"], "amount": { "amount": "4.20", "currency": "EUR" } });
    let (status, _) = api.post("/v1/transfers", &pay, Some("raw-1")).await;
    assert_eq!(status, reqwest::StatusCode::CREATED);

    let got = lean.events(1).await;
    assert_eq!(got[0].0, "transfer.posted");
    assert_eq!(got[0].1["account_id"], json!(ada.eur));
    assert_eq!(got[0].1["data"]["amount"]["amount"], "4.20");
    // The same bytes through hyper.
    let mut text = String::new();
    while !text.contains("\n\n") {
        let frame = tokio::time::timeout(Duration::from_secs(10), http_body_util::BodyExt::frame(&mut reused))
            .await
            .expect("an event through hyper")
            .expect("the stream goes on")
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).expect("utf-8"));
        }
    }
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).expect("data line");
    assert_eq!(serde_json::from_str::<Value>(data).expect("json"), got[0].1, "one event, the same on both");

    // A client that goes away is noticed: its stream is dropped (and the ring with the last).
    assert_eq!(server.state.hub.open_streams(ada.id), 2, "the lean stream and hyper's");
    let mut gone = Raw::connect(&server).await;
    gone.send(format!("GET /v1/events?ticket={} HTTP/1.1\r\nHost: x\r\n\r\n", ticket(&api).await).as_bytes()).await;
    assert_eq!(gone.head().await.status, 200);
    assert_eq!(server.state.hub.open_streams(ada.id), 3);
    drop(gone);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.state.hub.open_streams(ada.id) > 2 {
        assert!(tokio::time::Instant::now() < deadline, "the server noticed the closed connection");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The stream ends with the server: a last chunk, then the connection closes.
    server.stop().await;
    while lean.chunk().await.is_some() {}
    assert!(lean.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_connection_refuses_what_it_does_not_take_and_closes() {
    let mut server = Server::start().await;
    let ada = server.customer("ada-bad", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let cases: Vec<(String, u16, &str)> = vec![
        ("GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n".into(), 401, "urn:bp:problem:unauthorized"),
        (
            format!("GET /v1/events?ticket={} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", ticket(&api).await),
            400,
            "urn:bp:problem:bad-request",
        ),
        ("GET /v1/events HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n".into(), 400, "urn:bp:problem:bad-request"),
        (
            format!("GET /v1/events HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(9000)),
            431,
            "urn:bp:problem:headers-too-large",
        ),
        (
            format!(
                "GET /v1/events?ticket={t} HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n",
                t = ticket(&api).await
            ),
            400,
            "urn:bp:problem:bad-request",
        ),
        (
            "GET /v1/events?last_event_id=nope HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\n\r\n".into(),
            401,
            "urn:bp:problem:unauthorized",
        ),
    ];
    for (request, status, problem) in cases {
        let mut raw = Raw::connect(&server).await;
        raw.send(request.as_bytes()).await;
        let head = raw.head().await;
        assert_eq!(head.status, status, "{}", &request[..request.len().min(80)]);
        assert_eq!(head.get("content-type"), Some("application/problem+json"));
        assert_eq!(head.get("connection"), Some("close"));
        let body = raw.body(&head).await;
        assert_eq!(body["type"], problem, "{body}");
        assert!(raw.closed().await, "and the connection is closed");
    }
    // A bad cursor with good credentials: the handler's own 400, on the lean path too.
    let mut raw = Raw::connect(&server).await;
    raw.send(
        format!("GET /v1/events?ticket={}&last_event_id=nope HTTP/1.1\r\nHost: x\r\n\r\n", ticket(&api).await)
            .as_bytes(),
    )
    .await;
    let head = raw.head().await;
    assert_eq!(head.status, 400);
    assert!(raw.body(&head).await["detail"].as_str().expect("detail").contains("Last-Event-ID"));

    // Other requests that merely start alike are hyper's, on a connection kept alive.
    for (request, status) in [
        ("GET /v1/eventsX HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        ("GET /v1/events/ticket HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    ] {
        let mut raw = Raw::connect(&server).await;
        raw.send(request.as_bytes()).await;
        let head = raw.head().await;
        assert_eq!(head.status, status, "{request}");
        assert_ne!(head.get("connection"), Some("close"));
        let _ = raw.body(&head).await;
        raw.send(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(raw.head().await.status, 200, "the same connection serves another request");
    }
    server.stop().await;
}

/// Deposits `count` cents into `account`, `at_once` at a time (each one event on the account).
async fn deposit(server: &Server, account: AccountId, count: usize, at_once: usize) {
    let mut left = count;
    while left > 0 {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..left.min(at_once) {
            let state = server.state.clone();
            batch.spawn(async move {
                state.ledger.fund(TransferId::new_v7(), account, Money::new(1, Currency::EUR)).await.expect("deposit")
            });
        }
        left -= batch.len();
        while let Some(done) = batch.join_next().await {
            done.expect("deposit task");
        }
    }
}

/// How many times pumps gave a stream back because its socket was full (`/metrics`).
async fn socket_full_returns(server: &Server) -> u64 {
    let text = reqwest::get(server.url("/metrics")).await.expect("metrics").text().await.expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix("bp_sse_pump_returns_total{reason=\"socket_full\"} "))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

/// Deposits into `account`, 1,000 at a time, until a pump has given a stream back because its
/// socket was full (loopback's buffers take a few MB), then `more`; how many in all.
async fn deposit_until_a_socket_fills(server: &Server, account: AccountId, more: usize) -> usize {
    let full = socket_full_returns(server).await;
    let mut count = 0;
    while socket_full_returns(server).await == full {
        assert!(count < 50_000, "a socket filled up");
        deposit(server, account, 1000, 200).await;
        count += 1000;
    }
    deposit(server, account, more, 200).await;
    count + more
}

/// Clients that stop reading. One that reads again: the server's socket filled, the stream's
/// pump gave it back with the part of a chunk the socket did not take, the connection's task
/// wrote the rest once the client read, and the stream went on: every event once, whole, in
/// order. One that never reads again: once it is a whole ring behind, it is disconnected, as a
/// client that reads too slowly is. (One test, so that no other test in this process fills a
/// socket meanwhile: the count of full sockets in `/metrics` is the process's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_get_everything_or_are_disconnected_a_ring_behind() {
    // A ring that holds the whole burst: this client is slow, not a ring behind.
    let mut server = Server::start_with(|c| c.bus.stream_buffer_events = 65_536).await;
    let ada = server.customer("ada-stalled", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let first = server.state.ledger.account(ada.eur).await.expect("account").last_event_seq;
    let mut raw = Raw::connect_small(&server, 4096).await;
    assert_eq!(raw.open_stream(&api).await.status, 200);
    let burst = deposit_until_a_socket_fills(&server, ada.eur, 1000).await;
    let seqs = raw.seqs_of(ada.eur, burst).await;
    let expected: Vec<u64> = (first + 1..=first + burst as u64).collect();
    assert!(seqs == expected, "every event once, in order (got {} events)", seqs.len());
    // Still live after that.
    deposit(&server, ada.eur, 1, 1).await;
    assert_eq!(raw.seqs_of(ada.eur, 1).await, vec![first + burst as u64 + 1]);
    server.stop().await;

    // A ring of 1,024 (more than a burst of deposits, which would overflow a smaller one before
    // a pump has run): a client that reads nothing is disconnected once it is 1,024 behind.
    let mut server = Server::start_with(|c| c.bus.stream_buffer_events = 1024).await;
    let bob = server.customer("bob-stalled", 0, 0).await;
    let api = Api::new(&server, &server.login(&bob, ALL).await);
    let mut raw = Raw::connect_small(&server, 4096).await;
    assert_eq!(raw.open_stream(&api).await.status, 200);
    assert_eq!(server.state.hub.open_streams(bob.id), 1);
    deposit_until_a_socket_fills(&server, bob.eur, 2000).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.state.hub.open_streams(bob.id) > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the stalled client is disconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What it reads now ends with the connection (no last chunk: there was no room for one).
    let mut sink = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match raw.tcp.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the server closed the connection");
    server.stop().await;
}

/// A bus that loses some events (as one that a subscriber fell behind on does).
struct Lossy {
    inner: bp_notify::broadcast::BroadcastBus,
    lose: Box<dyn Fn(&Event) -> bool + Send + Sync>,
}

#[async_trait::async_trait]
impl EventBus for Lossy {
    async fn publish(&self, events: &[Event]) -> Result<(), BusError> {
        let kept: Vec<Event> = events.iter().filter(|e| !(self.lose)(e)).cloned().collect();
        self.inner.publish(&kept).await
    }

    async fn subscribe(&self) -> Result<Box<dyn Subscription>, BusError> {
        self.inner.subscribe().await
    }
}

/// Live events that the bus lost show as gaps: the pump gives the stream back to its task, which
/// fills each gap from the store, and the stream goes on: every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_in_the_live_events_are_filled_from_the_store() {
    let lost = std::sync::Arc::new(std::sync::Mutex::new(None::<(AccountId, u64)>));
    let rule = std::sync::Arc::clone(&lost);
    let bus = Lossy {
        inner: bp_notify::broadcast::BroadcastBus::default(),
        // Every third event of the account under test, after `from` (the last one is kept).
        lose: Box::new(move |e| {
            rule.lock().expect("lock").is_some_and(|(a, from)| e.account_id == a && e.seq > from && e.seq % 3 == 0)
        }),
    };
    let mut server = Server::start_on(|_| {}, Some(std::sync::Arc::new(bus))).await;
    let ada = server.customer("ada-gaps", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let first = server.state.ledger.account(ada.eur).await.expect("account").last_event_seq;
    *lost.lock().expect("lock") = Some((ada.eur, first));
    let mut raw = Raw::connect(&server).await;
    assert_eq!(raw.open_stream(&api).await.status, 200);
    // The last event is one the bus keeps: a lost last event would wait for a next one.
    let count = (30..).find(|n| (first + n) % 3 != 0).expect("a count");
    for _ in 0..count {
        deposit(&server, ada.eur, 1, 1).await;
    }
    let seqs = raw.seqs_of(ada.eur, usize::try_from(count).expect("count")).await;
    assert_eq!(seqs, (first + 1..=first + count).collect::<Vec<u64>>(), "every event once, in order");
    server.stop().await;
}

/// More streams of one customer than one pump holds: every stream gets every event, in order,
/// and a stream whose client goes away is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_of_one_customer_share_the_pumps() {
    let mut server = Server::start().await;
    let ada = server.customer("ada-many", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    server.audit_settled().await;
    let first = server.state.ledger.account(ada.eur).await.expect("account").last_event_seq;
    let streams = bp_server_example::events::pump::PUMP_STREAMS_MAX + 44;
    let mut raws = Vec::new();
    for _ in 0..streams {
        let mut raw = Raw::connect(&server).await;
        assert_eq!(raw.open_stream(&api).await.status, 200);
        raws.push(raw);
    }
    assert_eq!(server.state.hub.open_streams(ada.id), streams);
    for round in 1..=3 {
        deposit(&server, ada.eur, 1, 1).await;
        for raw in &mut raws {
            assert_eq!(raw.seqs_of(ada.eur, 1).await, vec![first + round], "each stream, each event");
        }
    }
    raws.truncate(10);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.state.hub.open_streams(ada.id) > 10 {
        assert!(tokio::time::Instant::now() < deadline, "closed connections' streams are dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    deposit(&server, ada.eur, 1, 1).await;
    for raw in &mut raws {
        assert_eq!(raw.seqs_of(ada.eur, 1).await, vec![first + 4], "the others go on");
    }
    server.stop().await;
}

/// A stream served by hyper (asked for on a connection that served a request before) whose client
/// stops reading: once the socket is full, its connection is closed after `server.send_timeout_ms`
/// without progress, and the stream with it. (hyper alone would wait for that client for ever:
/// the stream notices it is a ring behind only when hyper asks it for more.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_of_a_hyper_stream_is_closed_after_the_send_timeout() {
    // A ring that holds every burst, so that only the send timeout can end the stream.
    let mut server = Server::start_with(|c| {
        c.bus.stream_buffer_events = 65_536;
        c.server.send_timeout_ms = 500;
    })
    .await;
    let ada = server.customer("ada-stalled-hyper", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let mut raw = Raw::connect_small(&server, 4096).await;
    raw.send(b"GET /livez HTTP/1.1\r\nHost: bp.test\r\n\r\n").await;
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    assert_ne!(head.get("connection"), Some("close"), "hyper keeps the connection");
    let len: usize = head.get("content-length").expect("length").parse().expect("number");
    assert!(raw.fill(len).await);
    raw.buf.drain(..len);
    let head = raw.open_stream(&api).await;
    assert_eq!(head.status, 200);
    assert_ne!(head.get("connection"), Some("close"), "served by hyper, not stream_conn");
    assert_eq!(server.state.hub.open_streams(ada.id), 1);
    // Deposits while the client reads nothing, until the stream is gone (its socket full, then
    // half a second without progress); a stream that never went would stop the test at 60,000.
    let mut count = 0;
    while server.state.hub.open_streams(ada.id) > 0 {
        assert!(count < 60_000, "the stalled stream's connection was closed");
        deposit(&server, ada.eur, 1000, 200).await;
        count += 1000;
    }
    server.stop().await;
}
