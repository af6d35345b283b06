//! HTTP benchmark of the reference server on SQLite (durable, `synchronous=FULL`), client and
//! server in this one process on loopback, request logs formatted as in production (to a sink):
//!
//! - `http_transfers_per_s`, `http_p50_ms`, `http_p99_ms`: authenticated SCA-exempt transfers
//!   (between a customer's own accounts) over keep-alive HTTP, `BP_BENCH_CONNECTIONS` (32)
//!   clients for `BP_BENCH_SECONDS` (10) after a warm-up;
//! - `token_refresh_per_s`: one client rotating a refresh token in a loop;
//! - `password_logins_per_s`: one client signing in through the login pages (password with the
//!   OWASP Argon2id cost, then TOTP, code and token) in a loop.
//!
//! `cargo run --release -p bp-server-example --example http_bench` (`BP_BENCH_ONLY=transfers`,
//! `refresh` or `logins` runs one part, for profiling).

mod support;

// The server allocates many small buffers per request on several threads; mimalloc serves
// them with less contention than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

/// Events per second, rounded down, without floating point.
fn per_s(count: u64, elapsed: Duration) -> u128 {
    u128::from(count) * 1_000_000 / elapsed.as_micros().max(1)
}

#[tokio::main]
async fn main() {
    // Request logs as in production, formatted and discarded.
    tracing_subscriber::fmt().json().with_writer(std::io::sink).with_env_filter("info").init();
    let connections = support::env_u64("BP_BENCH_CONNECTIONS", 32) as usize;
    let seconds = support::env_u64("BP_BENCH_SECONDS", 10);
    let h = support::harness(|c| {
        c.auth.login_attempts_per_minute = 1_000_000;
        c.auth.login_attempts_per_username_per_minute = 1_000_000;
        c.server.concurrency_max = 4096;
    })
    .await;
    let only = std::env::var("BP_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "transfers" {
        transfers(&h, connections, seconds).await;
    }
    if only.is_empty() || only == "refresh" {
        refresh(&h).await;
    }
    if only.is_empty() || only == "logins" {
        logins(&h).await;
    }
    h.started.running.stop().await.expect("stop");
}

async fn transfers(h: &support::Harness, connections: usize, seconds: u64) {
    eprintln!("preparing {connections} customers…");
    let mut clients = Vec::new();
    for i in 0..connections {
        let p = h.person(&format!("bench-{i}"), 2, 1_000_000_000).await;
        let tokens = support::login(&h.base, &p, "openid accounts payments", support::step_now()).await;
        let token = tokens["access_token"].as_str().expect("token").to_owned();
        let numbers = support::account_numbers(&h.base, &token, &p.accounts).await;
        clients.push((p, token, numbers));
    }

    // Transfers at fixed concurrency: one keep-alive HTTP/1.1 connection per client.
    let addr = h.started.running.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (p, token, numbers) in clients {
        let (stop, measuring) = (stop.clone(), measuring.clone());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
            tokio::spawn(conn);
            let authorization = format!("Bearer {token}");
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (from, to) = if n % 2 == 0 { (p.accounts[0], &numbers[1]) } else { (p.accounts[1], &numbers[0]) };
                let body = json!({ "from_account": from, "to_account_number": to, "amount": { "amount": "0.01", "currency": "EUR" } });
                let request = hyper::Request::post("/v1/transfers")
                    .header("host", addr.to_string())
                    .header("authorization", &authorization)
                    .header("content-type", "application/json")
                    .header("idempotency-key", uuid::Uuid::now_v7().to_string())
                    .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
                    .expect("request");
                let started = Instant::now();
                sender.ready().await.expect("connection ready");
                let response = sender.send_request(request).await.expect("transfer");
                assert_eq!(response.status(), hyper::StatusCode::CREATED, "transfer posted");
                let _ = http_body_util::BodyExt::collect(response.into_body()).await.expect("body");
                if measuring.load(Ordering::Relaxed) {
                    latencies.push(started.elapsed());
                }
                n += 1;
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("join"));
    }
    all.sort();
    println!("http_transfers_per_s {}", per_s(all.len() as u64, elapsed));
    println!("http_p50_ms {}", support::ms(support::percentile(&all, 500)));
    println!("http_p99_ms {}", support::ms(support::percentile(&all, 990)));
}

/// Refresh-token rotation, one client.
async fn refresh(h: &support::Harness) {
    let p = h.person("bench-refresh", 1, 0).await;
    let tokens = support::login(&h.base, &p, "openid accounts offline_access", support::step_now()).await;
    let mut refresh = tokens["refresh_token"].as_str().expect("refresh").to_owned();
    let form_client = reqwest::Client::new();
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < Duration::from_secs(5) {
        let v: serde_json::Value = form_client
            .post(format!("{}/oauth2/token", h.base))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("client_id", support::CLIENT),
            ])
            .send()
            .await
            .expect("refresh")
            .json()
            .await
            .expect("json");
        refresh = v["refresh_token"].as_str().expect("rotated").to_owned();
        count += 1;
    }
    println!("token_refresh_per_s {}", per_s(count, started.elapsed()));
}

/// Full sign-ins, one client.
async fn logins(h: &support::Harness) {
    // Password logins, one client: each customer has two fresh TOTP steps (now, now+1) per 30 s.
    let pool = support::env_u64("BP_BENCH_LOGIN_CUSTOMERS", 150);
    let mut people = Vec::new();
    for i in 0..pool {
        people.push(h.person(&format!("bench-login-{i}"), 1, 0).await);
    }
    let mut next_step = vec![0u64; people.len()];
    let started = Instant::now();
    let mut logins = 0u64;
    let mut idle_rounds = 0;
    while started.elapsed() < Duration::from_secs(10) && idle_rounds < 2 {
        let mut any = false;
        for (i, p) in people.iter().enumerate() {
            let now = support::step_now();
            // Never the previous step: it may leave the server's window while this sign-in runs.
            let step = next_step[i].max(now);
            if step > now + 1 || started.elapsed() >= Duration::from_secs(10) {
                continue;
            }
            let t = support::login(&h.base, p, "openid", step).await;
            assert!(t["access_token"].is_string(), "signed in");
            next_step[i] = step + 1;
            logins += 1;
            any = true;
        }
        idle_rounds = if any { 0 } else { idle_rounds + 1 };
    }
    let rate_centi = u128::from(logins) * 100_000_000 / started.elapsed().as_micros().max(1);
    println!("password_logins_per_s {}.{:02}", rate_centi / 100, rate_centi % 100);
}
