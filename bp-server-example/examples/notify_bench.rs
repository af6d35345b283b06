//! Real-time benchmark of the reference server (SQLite, in-process bus), clients in this process
//! on loopback:
//!
//! - `sse_latency_p50_ms`, `sse_latency_p99_ms`: commit → SSE client. One client streams its
//!   customer's events while 300 transfers are posted one after the other; each event's latency is
//!   its arrival time minus its commit time (`at`, the server's clock — the same machine's).
//! - `sse_clients`, `sse_fanout_p99_ms`: `BP_BENCH_SSE_CLIENTS` (1,000) streams of one customer
//!   open at once; 20 transfers; the p99 over every client and event of commit → arrival.
//! - `sse_rss_kb_per_client`: growth of this process's resident memory per open stream (server
//!   and client sides both count, so the server's own share is lower).
//!
//! `cargo run --release -p bp-server-example --example notify_bench`. The Kafka figure
//! (`kafka_sse_latency_p99_ms`) comes with the Kafka adapter.

mod support;

use std::time::Duration;

use http_body_util::BodyExt as _;
use serde_json::{Value, json};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Opens one SSE stream with a fresh ticket; returns a channel of (latency µs) per event.
async fn open_stream(
    base: &str,
    addr: std::net::SocketAddr,
    token: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<Duration> {
    let ticket: Value = reqwest::Client::new()
        .post(format!("{base}/v1/events/ticket"))
        .bearer_auth(token)
        .send()
        .await
        .expect("ticket")
        .json()
        .await
        .expect("json");
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let request = hyper::Request::get(format!("/v1/events?ticket={}", ticket["ticket"].as_str().expect("ticket")))
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("stream");
    assert_eq!(response.status(), hyper::StatusCode::OK);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut body = response.into_body();
    tokio::spawn(async move {
        let mut buffer = String::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Some(data) = frame.data_ref() else { continue };
            buffer.push_str(std::str::from_utf8(data).unwrap_or(""));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let now = chrono::Utc::now();
                // The load generator reads only the commit time, not the whole event, so that it
                // takes as little of the machine as it can.
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: "))
                    && let Some(start) = data.find("\"at\":\"").map(|i| i + 6)
                    && let Some(len) = data[start..].find('"')
                    && let Ok(at) = data[start..start + len].parse::<chrono::DateTime<chrono::Utc>>()
                {
                    let _ = tx.send((now - at).to_std().unwrap_or(Duration::ZERO));
                }
            }
        }
    });
    rx
}

#[tokio::main]
async fn main() {
    let h = support::harness(|c| c.auth.login_attempts_per_minute = 1_000_000).await;
    let addr = h.started.running.addr;
    let p = h.person("notify-bench", 2, 1_000_000_000).await;
    let tokens = support::login(&h.base, &p, "openid accounts payments", support::step_now()).await;
    let token = tokens["access_token"].as_str().expect("token").to_owned();
    let http = reqwest::Client::new();
    let numbers = support::account_numbers(&h.base, &token, &p.accounts).await;
    let transfer = |n: usize| {
        let (from, to) = if n % 2 == 0 { (p.accounts[0], &numbers[1]) } else { (p.accounts[1], &numbers[0]) };
        let body =
            json!({ "from_account": from, "to_account_number": to, "amount": { "amount": "0.01", "currency": "EUR" } });
        let (http, base, token) = (http.clone(), h.base.clone(), token.clone());
        async move {
            let r = http
                .post(format!("{base}/v1/transfers"))
                .bearer_auth(&token)
                .header("Idempotency-Key", uuid::Uuid::now_v7().to_string())
                .json(&body)
                .send()
                .await
                .expect("transfer");
            assert_eq!(r.status(), reqwest::StatusCode::CREATED);
        }
    };

    // Latency: one client, sequential transfers (two events each: debit and credit side).
    let mut rx = open_stream(&h.base, addr, &token).await;
    let mut latencies = Vec::new();
    for n in 0..300 {
        transfer(n).await;
        for _ in 0..2 {
            let l =
                tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("event in time").expect("stream");
            latencies.push(l);
        }
    }
    drop(rx);
    latencies.sort_unstable();
    println!("sse_latency_p50_ms {}", support::ms(support::percentile(&latencies, 500)));
    println!("sse_latency_p99_ms {}", support::ms(support::percentile(&latencies, 990)));

    // Fan-out: many clients of the same customer.
    let clients = usize::try_from(support::env_u64("BP_BENCH_SSE_CLIENTS", 1_000)).unwrap_or(1_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kb();
    let mut streams = Vec::with_capacity(clients);
    for _ in 0..clients {
        streams.push(open_stream(&h.base, addr, &token).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kb();
    let mut fanout = Vec::new();
    for n in 0..20 {
        transfer(n).await;
        for rx in &mut streams {
            for _ in 0..2 {
                let l = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                    .await
                    .expect("event in time")
                    .expect("stream");
                fanout.push(l);
            }
        }
    }
    fanout.sort_unstable();
    println!("sse_clients {clients}");
    println!("sse_fanout_p99_ms {}", support::ms(support::percentile(&fanout, 990)));
    println!("sse_rss_kb_per_client {}", after.saturating_sub(before) / u64::try_from(clients.max(1)).unwrap_or(1));
    h.started.running.stop().await.expect("stop");
}
