//! The two transports of `GET /v1/events`: a connection that opens with it is served without
//! hyper (`stream_conn`), a stream asked for on a connection that served other requests goes
//! through hyper. Both must be the same HTTP/1.1 to a client: status, headers (security headers
//! included), chunked framing, events; and the lean one must refuse what it does not take.

mod common;

use std::time::Duration;

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
        hyper::Request::get(uri)
            .header("host", "bp.test")
            .header("authorization", format!("Bearer {}", api.token))
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
