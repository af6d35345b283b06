//! HTTP benchmark of the reference server on SQLite (durable, `synchronous=FULL`), client and
//! server in this one process on loopback, request logs formatted as in production (to a sink):
//!
//! - `http_transfers_per_s`, `http_p50_ms`, `http_p99_ms`: authenticated SCA-exempt transfers
//!   (between a customer's own accounts) over keep-alive HTTP, `BP_BENCH_CONNECTIONS` (32)
//!   clients with bearer tokens for `BP_BENCH_SECONDS` (10) after a warm-up;
//! - `http_dpop_transfers_per_s`, `http_dpop_p50_ms`, `http_dpop_p99_ms`: the same with
//!   DPoP-bound tokens, a proof per request (ES256, signed before the clock starts, up to
//!   `BP_BENCH_PROOFS_PER_CLIENT`, 4,000, then as it goes: stderr says so);
//! - `token_refresh_per_s`: one client rotating a refresh token in a loop;
//! - `password_logins_per_s`: one client signing in through the login pages (password with the
//!   OWASP Argon2id cost, then TOTP, code and token) in a loop.
//!
//! `cargo run --release -p bp-server-example --example http_bench` (`BP_BENCH_ONLY=transfers`,
//! `dpop`, `refresh` or `logins` runs one part, for profiling). `BP_BENCH_REQUESTS=n` makes `n`
//! transfers in all instead of timing them; with `BP_BENCH_CALLGRIND=1`, under
//! `valgrind --tool=callgrind`, the instruction counts are dumped just before and after them.

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
    bp_server_example::logs::init(tracing_subscriber::EnvFilter::new("info"), true, std::io::sink);
    let connections = support::env_u64("BP_BENCH_CONNECTIONS", 32) as usize;
    let seconds = support::env_u64("BP_BENCH_SECONDS", 10);
    let h = support::harness(|c| {
        c.auth.login_attempts_per_minute = 1_000_000;
        c.auth.login_attempts_per_username_per_minute = 1_000_000;
        c.server.concurrency_max = 4096;
    })
    .await;
    let only = std::env::var("BP_BENCH_ONLY").unwrap_or_default();
    let run = match support::env_u64("BP_BENCH_REQUESTS", 0) {
        0 => Run::For { seconds },
        all => Run::Count { per_client: all.div_ceil(connections as u64) },
    };
    if only.is_empty() || only == "transfers" {
        transfers(&h, connections, run, Binding::Bearer).await;
    }
    if only.is_empty() || only == "dpop" {
        transfers(&h, connections, run, Binding::Dpop).await;
    }
    if only.is_empty() || only == "refresh" {
        refresh(&h).await;
    }
    if only.is_empty() || only == "logins" {
        logins(&h).await;
    }
    h.started.running.stop().await.expect("stop");
}

/// How a transfer client holds its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Binding {
    /// A bearer token.
    Bearer,
    /// A DPoP-bound token, and a proof per request (ES256, signed before the measurement).
    Dpop,
}

/// A signed-in transfer client: the customer, its site (and DPoP key), token and account numbers.
struct Client {
    person: support::Person,
    site: bp_server_example::testkit::Site,
    token: String,
    numbers: Vec<String>,
}

/// How many transfers each client makes: for `seconds`, or a fixed count (`BP_BENCH_REQUESTS`
/// in all, for instruction counts under callgrind).
#[derive(Clone, Copy, Debug)]
enum Run {
    For { seconds: u64 },
    Count { per_client: u64 },
}

async fn transfers(h: &support::Harness, connections: usize, run: Run, binding: Binding) {
    let prefix = if binding == Binding::Bearer { "http" } else { "http_dpop" };
    eprintln!("preparing {connections} customers ({binding:?})…");
    let mut clients = Vec::new();
    for i in 0..connections {
        let site = match binding {
            Binding::Bearer => support::bearer_site(&h.base),
            Binding::Dpop => support::dpop_site(&h.base),
        };
        let person = h.person(&format!("bench-{prefix}-{i}"), 2, 1_000_000_000).await;
        let tokens = support::login_at(&site, &person, "openid accounts payments", support::step_now()).await;
        let token = tokens["access_token"].as_str().expect("token").to_owned();
        let numbers = support::account_numbers(&site, &token, &person.accounts).await;
        clients.push(Client { person, site, token, numbers });
    }
    // Everyone waits here once its proofs are signed, then again when done (fixed counts).
    let gate = Arc::new(tokio::sync::Barrier::new(connections + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for client in clients {
        let (gate, stop, measuring) = (gate.clone(), stop.clone(), measuring.clone());
        let addr = h.started.running.addr;
        tasks.push(tokio::spawn(async move { client_loop(client, addr, run, (gate, stop, measuring)).await }));
    }
    gate.wait().await;
    let started = match run {
        Run::For { seconds } => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            measuring.store(true, Ordering::Relaxed);
            let started = Instant::now();
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            started
        }
        Run::Count { .. } => {
            callgrind_dump("before the transfers");
            measuring.store(true, Ordering::Relaxed);
            gate.wait().await;
            let started = Instant::now();
            gate.wait().await;
            callgrind_dump("after the transfers");
            started
        }
    };
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("join"));
    }
    all.sort();
    println!("{prefix}_transfers_per_s {}", per_s(all.len() as u64, elapsed));
    println!("{prefix}_p50_ms {}", support::ms(support::percentile(&all, 500)));
    println!("{prefix}_p99_ms {}", support::ms(support::percentile(&all, 990)));
}

/// One client's transfers on its own keep-alive HTTP/1.1 connection; their latencies while
/// `measuring`.
async fn client_loop(
    c: Client,
    addr: std::net::SocketAddr,
    run: Run,
    (gate, stop, measuring): (Arc<tokio::sync::Barrier>, Arc<AtomicBool>, Arc<AtomicBool>),
) -> Vec<Duration> {
    let url = c.site.url("/v1/transfers");
    // Proofs are signed before the clock starts: the load generator shares the server's cores,
    // and the figure is to show the server's cost of checking them.
    let ahead = match run {
        Run::For { .. } => support::env_u64("BP_BENCH_PROOFS_PER_CLIENT", 4_000),
        Run::Count { per_client } => per_client,
    };
    let mut proofs: Vec<String> = match &c.site.dpop {
        Some(key) => (0..ahead).map(|_| key.proof("POST", &url, Some(&c.token))).collect(),
        None => Vec::new(),
    };
    let authorization = match c.site.dpop {
        Some(_) => format!("DPoP {}", c.token),
        None => format!("Bearer {}", c.token),
    };
    // What is the same in every request is made once: the load generator shares the server's
    // cores (and its instructions are counted with the server's under callgrind). The requests
    // are the same: these headers, and the two bodies the transfers alternate between.
    let host = hyper::header::HeaderValue::try_from(addr.to_string()).expect("host");
    let authorization = hyper::header::HeaderValue::try_from(authorization).expect("authorization");
    let bodies = [(0, 1), (1, 0)].map(|(from, to)| {
        let body = json!({
            "from_account": c.person.accounts[from],
            "to_account_number": &c.numbers[to],
            "amount": { "amount": "0.01", "currency": "EUR" },
        });
        bytes::Bytes::from(body.to_string())
    });
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    gate.wait().await;
    let limit = match run {
        Run::For { .. } => u64::MAX,
        Run::Count { per_client } => {
            gate.wait().await;
            per_client
        }
    };
    let (mut latencies, mut signed_late) = (Vec::new(), 0u64);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && n < limit {
        let body = bodies[usize::from(n % 2 == 1)].clone();
        let mut request = hyper::Request::post("/v1/transfers")
            .header(hyper::header::HOST, host.clone())
            .header(hyper::header::AUTHORIZATION, authorization.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", uuid::Uuid::now_v7().to_string());
        if let Some(key) = &c.site.dpop {
            let proof = proofs.pop().unwrap_or_else(|| {
                signed_late += 1;
                key.proof("POST", &url, Some(&c.token))
            });
            request = request.header("dpop", proof);
        }
        let request = request.body(http_body_util::Full::new(body)).expect("request");
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
    if let Run::Count { .. } = run {
        gate.wait().await;
    }
    if signed_late > 0 {
        eprintln!("a client signed {signed_late} proofs while measured (BP_BENCH_PROOFS_PER_CLIENT was too low)");
    }
    latencies
}

/// Under `valgrind --tool=callgrind` (`BP_BENCH_CALLGRIND=1`), dumps the instruction counts so
/// far, so that the dump after the transfers minus the one before is theirs alone.
fn callgrind_dump(when: &str) {
    if std::env::var_os("BP_BENCH_CALLGRIND").is_none() {
        return;
    }
    let pid = std::process::id().to_string();
    // Its report goes to stderr: stdout carries only the figures.
    let status =
        std::process::Command::new("callgrind_control").args(["--dump", &pid]).stdout(std::io::stderr()).status();
    eprintln!("callgrind dump {when}: {status:?}");
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
