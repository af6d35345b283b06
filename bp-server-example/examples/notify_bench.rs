//! Real-time benchmark of the reference server (SQLite, the outbox relay woken after each commit),
//! on loopback. Latency is the event's arrival at the client minus its commit time (`at`, the
//! server's clock — the same machine's).
//!
//! - `sse_latency_p50_ms`, `sse_latency_p99_ms`: commit → SSE client over the in-process bus. One
//!   client (in this process, opened with a stream ticket) streams its customer's events while 300
//!   transfers are posted one after the other, each after the previous one's two events (debit and
//!   credit side) arrived; 10 transfers before them warm up and are not counted.
//! - `sse_clients`, `sse_fanout_p99_ms`: `BP_BENCH_SSE_CLIENTS` (1,000) streams of one customer
//!   open at once (a connection each, bearer token, read as raw HTTP/1.1 by one task each: see
//!   [`RawStream`]), held by client processes: this program
//!   re-executed in client mode ([`client_main`]), `BP_BENCH_SSE_CLIENT_PROCS` of them, by default
//!   as few as the open-files limit allows. 20 events, one at a time: a deposit into the customer's
//!   account (one event on the stream: the other side is a bank system account's), each made once
//!   every stream has the previous one; the p99 over every stream and event of commit → arrival,
//!   which each client process takes itself from the event's `at`.
//! - `sse_rss_kb_per_client`: growth of this (the server's) process's resident memory, divided by
//!   the streams open; the clients' memory is in their own processes and not counted. Kernel
//!   socket buffers are not in any process's RSS. mimalloc asks for transparent huge pages
//!   (`madvise`), so memory is resident in 2 MiB pages and allocated-but-untouched buffers count
//!   too; `MIMALLOC_ALLOW_THP=0` turns them off for the benchmark's processes (then only the 4 KiB
//!   pages touched count).
//! - `kafka_sse_latency_p50_ms`, `kafka_sse_latency_p99_ms`: only when `BP_BENCH_KAFKA` names a
//!   broker (`host:port`): the latency measurement above against a second server (its own
//!   database) on the Kafka bus, with a topic of its own (`bp-bench-<uuid>`, created with the
//!   default 12 partitions). Without `BP_BENCH_KAFKA` these lines are not printed.
//!
//! `cargo run --release -p bp-server-example --example notify_bench`. Every process raises its
//! open-files soft limit to the hard limit first. On stderr: the latency distributions, the CPU
//! time the server and the client processes spent per delivery (one event to one stream) during
//! the fan-out, the server's RSS before and after opening the streams, and the THP state.

mod support;

use std::io::{BufRead as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bp_core::ids::AccountId;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The first argument that makes this program a client process.
const CLIENT_MODE: &str = "sse-clients";
/// Its access token (the environment, not the command line, which any user can read).
const CLIENT_TOKEN_ENV: &str = "BP_BENCH_CLIENT_TOKEN";
/// Transfers of the fan-out part; each gives every stream two events.
/// Events fanned out, one at a time: deposits into the streams' customer's account.
const FANOUT_EVENTS: usize = 20;
/// Transfers of the latency part, and those before them that are not counted.
const LATENCY_TRANSFERS: usize = 300;
const WARM_UP_TRANSFERS: usize = 10;
/// Descriptors a client process keeps for itself besides its streams.
const SPARE_FDS: u64 = 256;

fn main() {
    let nofile = raise_nofile();
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    if args.get(1).map(String::as_str) == Some(CLIENT_MODE) {
        runtime.block_on(client_main(&args[2..]));
    } else {
        runtime.block_on(bench(nofile));
    }
}

/// Raises the open-files soft limit to the hard limit; returns the soft limit now in force.
fn raise_nofile() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            eprintln!("notify_bench: raising RLIMIT_NOFILE: {e}");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// CPU time (user and system, all threads) of process `pid` (or `self`) so far, in ms.
fn cpu_ms(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (in parentheses, which may hold spaces), from `state`.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|t| t.parse::<u64>().ok()).sum());
    ticks * 1000 / rustix::param::clock_ticks_per_second().max(1)
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Commit → arrival of the ledger event in `block` (one `\n\n`-terminated SSE block), arriving
/// `now`; `None` for comments and `security.*` events. Reads only the commit time, not the whole
/// event, so that the clients take as little of the machine as they can.
fn latency_of(block: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    if block.lines().any(|l| l.starts_with("event: security.")) {
        return None;
    }
    let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
    let start = data.find("\"at\":\"")? + 6;
    let len = data[start..].find('"')?;
    let at = data[start..start + len].parse::<chrono::DateTime<chrono::Utc>>().ok()?;
    Some((now - at).to_std().unwrap_or(Duration::ZERO))
}

/// Opens `GET /v1/events` on a connection of its own, with a stream ticket or a bearer token.
async fn open_events(addr: std::net::SocketAddr, ticket: Option<&str>, bearer: Option<&str>) -> hyper::body::Incoming {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let uri = match ticket {
        Some(t) => format!("/v1/events?ticket={t}"),
        None => "/v1/events".to_owned(),
    };
    let mut request = hyper::Request::get(uri).header("host", addr.to_string());
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(http_body_util::Empty::<bytes::Bytes>::new()).expect("request");
    let response = sender.send_request(request).await.expect("stream");
    assert_eq!(response.status(), hyper::StatusCode::OK);
    response.into_body()
}

/// Calls `each` with the latency of every ledger event of `body`, until it returns false (then
/// returns the stream, still open) or the stream ends. An event's arrival time is that of the
/// frame that completes it.
async fn read_events(
    mut body: hyper::body::Incoming,
    mut each: impl FnMut(Duration) -> bool,
) -> Option<hyper::body::Incoming> {
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        let now = chrono::Utc::now();
        let Some(data) = frame.data_ref() else { continue };
        buffer.extend_from_slice(data);
        if !take_blocks(&mut buffer, now, &mut each) {
            return Some(body);
        }
    }
    None
}

/// Takes the whole SSE blocks off the front of `buffer`, calling `each` with the latency of every
/// ledger event among them (arrived `now`); false as soon as `each` does (the rest stays).
fn take_blocks(
    buffer: &mut Vec<u8>,
    now: chrono::DateTime<chrono::Utc>,
    each: &mut impl FnMut(Duration) -> bool,
) -> bool {
    let mut done = 0;
    let mut going = true;
    while going && let Some(end) = buffer[done..].windows(2).position(|w| w == b"\n\n") {
        let block = std::str::from_utf8(&buffer[done..done + end + 2]).unwrap_or("");
        done += end + 2;
        going = latency_of(block, now).is_none_or(&mut *each);
    }
    buffer.drain(..done);
    going
}

/// One customer with two funded accounts, signed in, posting transfers between them.
struct Payer {
    http: reqwest::Client,
    base: String,
    token: String,
    accounts: Vec<AccountId>,
    numbers: Vec<String>,
}

impl Payer {
    async fn new(h: &support::Harness) -> Self {
        let p = h.person("notify-bench", 2, 1_000_000_000).await;
        let tokens = support::login(&h.base, &p, "openid accounts payments", support::step_now()).await;
        let token = tokens["access_token"].as_str().expect("token").to_owned();
        let numbers = support::account_numbers(&support::bearer_site(&h.base), &token, &p.accounts).await;
        Self { http: reqwest::Client::new(), base: h.base.clone(), token, accounts: p.accounts, numbers }
    }

    /// Transfer `n` (alternating direction): two events, one per account.
    async fn transfer(&self, n: usize) {
        let (from, to) =
            if n % 2 == 0 { (self.accounts[0], &self.numbers[1]) } else { (self.accounts[1], &self.numbers[0]) };
        let body =
            json!({ "from_account": from, "to_account_number": to, "amount": { "amount": "0.01", "currency": "EUR" } });
        let r = self
            .http
            .post(format!("{}/v1/transfers", self.base))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", uuid::Uuid::now_v7().to_string())
            .json(&body)
            .send()
            .await
            .expect("transfer");
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    }

    /// One stream (in this process, with a ticket), sequential transfers: every event's latency,
    /// sorted, warm-up excluded.
    async fn latencies(&self, addr: std::net::SocketAddr) -> Vec<Duration> {
        let ticket: Value = self
            .http
            .post(format!("{}/v1/events/ticket", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("ticket")
            .json()
            .await
            .expect("json");
        let body = open_events(addr, Some(ticket["ticket"].as_str().expect("ticket")), None).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            read_events(body, move |l| tx.send(l).is_ok()).await;
        });
        let mut latencies = Vec::with_capacity(2 * LATENCY_TRANSFERS);
        for n in 0..WARM_UP_TRANSFERS + LATENCY_TRANSFERS {
            self.transfer(n).await;
            for _ in 0..2 {
                let l = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                    .await
                    .expect("event in time")
                    .expect("stream");
                if n >= WARM_UP_TRANSFERS {
                    latencies.push(l);
                }
            }
        }
        reader.abort();
        latencies.sort_unstable();
        let at = |per_mille| support::ms(support::percentile(&latencies, per_mille));
        eprintln!(
            "notify_bench: latency ms p10 {} p50 {} p90 {} p95 {} p99 {} max {}",
            at(100),
            at(500),
            at(900),
            at(950),
            at(990),
            at(1000)
        );
        latencies
    }
}

async fn bench(nofile: u64) {
    in_process(nofile).await;
    match std::env::var("BP_BENCH_KAFKA") {
        Ok(bootstrap) if !bootstrap.trim().is_empty() => kafka(bootstrap.trim()).await,
        _ => eprintln!("notify_bench: BP_BENCH_KAFKA not set: no Kafka figures"),
    }
}

/// The in-process bus: latency, then fan-out.
async fn in_process(nofile: u64) {
    let h = support::harness(|c| {
        c.auth.login_attempts_per_minute = 1_000_000;
        c.auth.login_attempts_per_username_per_minute = 1_000_000;
    })
    .await;
    let addr = h.started.running.addr;
    let payer = Payer::new(&h).await;

    // Latency: one client, sequential transfers.
    let latencies = payer.latencies(addr).await;
    println!("sse_latency_p50_ms {}", support::ms(support::percentile(&latencies, 500)));
    println!("sse_latency_p99_ms {}", support::ms(support::percentile(&latencies, 990)));

    // Fan-out: many streams of the same customer, held by client processes.
    let clients = usize::try_from(support::env_u64("BP_BENCH_SSE_CLIENTS", 1_000)).unwrap_or(1_000);
    let per_process = usize::try_from(nofile.saturating_sub(SPARE_FDS).max(1)).unwrap_or(usize::MAX);
    let procs = usize::try_from(support::env_u64("BP_BENCH_SSE_CLIENT_PROCS", 0))
        .unwrap_or(0)
        .max(clients.div_ceil(per_process))
        .clamp(1, clients.max(1));
    tokio::time::sleep(Duration::from_millis(200)).await;
    if u64::try_from(clients).unwrap_or(u64::MAX).saturating_add(SPARE_FDS) > nofile {
        eprintln!("notify_bench: {clients} streams may not fit this process's open-files limit ({nofile})");
    }
    let before = rss_kb();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    eprintln!(
        "notify_bench: transparent huge pages: system {:?}, this process {:?}",
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default().trim(),
        status.lines().find_map(|l| l.strip_prefix("THP_enabled:")).unwrap_or("?").trim(),
    );
    let opening = Instant::now();
    let mut load = ClientProcesses::spawn(addr, &payer.token, clients, procs, FANOUT_EVENTS);
    load.wait(Duration::from_secs(600), |l| l.ready == l.got.len()).await;
    eprintln!("notify_bench: {clients} streams open in {} client process(es) after {:.1?}", procs, opening.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kb();
    let (server_cpu, clients_cpu, fanning) = (cpu_ms("self"), load.cpu_ms(), Instant::now());
    for n in 0..FANOUT_EVENTS {
        // A deposit: one event on the customer's account (its other side is a system account's).
        let deposit = bp_core::money::Money::new(1, bp_core::money::Currency::EUR);
        h.started
            .state
            .ledger
            .fund(bp_core::ids::TransferId::new_v7(), payer.accounts[0], deposit)
            .await
            .expect("deposit");
        h.started.state.relay_waker.notify_one();
        load.wait(Duration::from_secs(60), |l| l.got.iter().all(|g| *g > n)).await;
    }
    let (server_cpu, clients_cpu) =
        (cpu_ms("self").saturating_sub(server_cpu), load.cpu_ms().saturating_sub(clients_cpu));
    let deliveries = u64::try_from(clients * FANOUT_EVENTS).unwrap_or(u64::MAX).max(1);
    eprintln!(
        "notify_bench: fan-out of {deliveries} deliveries in {:.0?}: CPU {server_cpu} ms server ({} µs each), \
         {clients_cpu} ms clients ({} µs each)",
        fanning.elapsed(),
        server_cpu * 1000 / deliveries,
        clients_cpu * 1000 / deliveries,
    );
    let mut fanout = load.finish().await;
    assert_eq!(fanout.len(), clients * FANOUT_EVENTS, "every client reports every event");
    if procs == 1 {
        // One client process reports stream by stream, each stream's events in order: round k's
        // latencies are every FANOUT_EVENTS-th from the k-th.
        let rounds: Vec<String> = (0..FANOUT_EVENTS)
            .map(|k| {
                let mut round: Vec<Duration> = fanout.iter().skip(k).step_by(FANOUT_EVENTS).copied().collect();
                round.sort_unstable();
                support::ms(support::percentile(&round, 990)).to_string()
            })
            .collect();
        eprintln!("notify_bench: fan-out p99 of each round (ms): {}", rounds.join(" "));
    }
    fanout.sort_unstable();
    eprintln!("notify_bench: server RSS {before} kB before the streams, {after} kB with them open");
    println!("sse_clients {clients}");
    println!("sse_fanout_p99_ms {}", support::ms(support::percentile(&fanout, 990)));
    println!("sse_rss_kb_per_client {}", after.saturating_sub(before) / u64::try_from(clients.max(1)).unwrap_or(1));
    h.started.running.stop().await.expect("stop");
}

/// The same latency measurement through a Kafka broker, on a topic of its own.
async fn kafka(bootstrap: &str) {
    let topic = format!("bp-bench-{}", uuid::Uuid::now_v7().simple());
    eprintln!("notify_bench: Kafka bus at {bootstrap}, topic {topic}");
    let h = support::harness(|c| {
        c.auth.login_attempts_per_minute = 1_000_000;
        c.auth.login_attempts_per_username_per_minute = 1_000_000;
        c.bus.kind = bp_server_example::config::BusKind::Kafka;
        c.bus.kafka = bp_notify::kafka::KafkaConfig {
            bootstrap_servers: bootstrap.to_owned(),
            topic,
            client_id: "bp-notify-bench".to_owned(),
            ..bp_notify::kafka::KafkaConfig::default()
        };
    })
    .await;
    let payer = Payer::new(&h).await;
    let latencies = payer.latencies(h.started.running.addr).await;
    println!("kafka_sse_latency_p50_ms {}", support::ms(support::percentile(&latencies, 500)));
    println!("kafka_sse_latency_p99_ms {}", support::ms(support::percentile(&latencies, 990)));
    h.started.running.stop().await.expect("stop");
}

/// The client processes of the fan-out part and what they said so far. Each writes lines on its
/// stdout: `ready` once all its streams are open, `got <k>` once each of its streams has received
/// `k` events, then `lat <µs>` for every event of every stream, then `done`.
struct ClientProcesses {
    children: Vec<std::process::Child>,
    lines: tokio::sync::mpsc::UnboundedReceiver<(usize, String)>,
    ready: usize,
    got: Vec<usize>,
    done: usize,
    latencies: Vec<Duration>,
}

impl ClientProcesses {
    /// Starts `procs` processes sharing `clients` streams, each expecting `events` per stream.
    fn spawn(addr: std::net::SocketAddr, token: &str, clients: usize, procs: usize, events: usize) -> Self {
        let exe = std::env::current_exe().expect("current exe");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let mut children = Vec::with_capacity(procs);
        for i in 0..procs {
            let streams = clients / procs + usize::from(i < clients % procs);
            let mut child = std::process::Command::new(&exe)
                .args([CLIENT_MODE, &addr.to_string(), &streams.to_string(), &events.to_string()])
                .env(CLIENT_TOKEN_ENV, token)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("client process");
            let stdout = child.stdout.take().expect("stdout");
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((i, line)).is_err() {
                        break;
                    }
                }
            });
            children.push(child);
        }
        Self { children, lines, ready: 0, got: vec![0; procs], done: 0, latencies: Vec::new() }
    }

    /// Reads the processes' lines until `until` holds; panics after `timeout`.
    async fn wait(&mut self, timeout: Duration, until: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !until(self) {
            let (i, line) = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .expect("the client processes answer in time")
                .expect("the client processes run");
            match line.split_once(' ') {
                None if line == "ready" => self.ready += 1,
                None if line == "done" => self.done += 1,
                Some(("got", k)) => self.got[i] = k.parse().expect("count"),
                Some(("lat", us)) => self.latencies.push(Duration::from_micros(us.parse().expect("µs"))),
                _ => panic!("client process {i}: unexpected line {line:?}"),
            }
        }
    }

    /// The CPU time the processes have used so far, in ms.
    fn cpu_ms(&self) -> u64 {
        self.children.iter().map(|c| cpu_ms(&c.id().to_string())).sum()
    }

    /// Waits for every latency and the processes' exit.
    async fn finish(mut self) -> Vec<Duration> {
        let procs = self.children.len();
        self.wait(Duration::from_secs(120), |l| l.done == procs).await;
        for child in &mut self.children {
            assert!(child.wait().expect("client exit").success(), "client process failed");
        }
        self.children.clear();
        std::mem::take(&mut self.latencies)
    }
}

impl Drop for ClientProcesses {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Client mode: `sse-clients <addr> <streams> <events>`, the bearer token in
/// `BP_BENCH_CLIENT_TOKEN`. Opens `streams` streams (64 at a time), says `ready`, reads until every
/// stream has `events` events (saying `got <k>` each time all streams have `k`), then writes every
/// latency and `done`.
async fn client_main(args: &[String]) {
    let [addr, streams, events] = args else { panic!("usage: notify_bench {CLIENT_MODE} <addr> <streams> <events>") };
    let addr: std::net::SocketAddr = addr.parse().expect("address");
    let streams: usize = streams.parse().expect("streams");
    let events: usize = events.parse().expect("events");
    let token: Arc<str> = std::env::var(CLIENT_TOKEN_ENV).expect(CLIENT_TOKEN_ENV).into();

    let mut streams_open = Vec::with_capacity(streams);
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..streams {
        if opening.len() >= 64
            && let Some(stream) = opening.join_next().await
        {
            streams_open.push(stream.expect("open"));
        }
        let token = Arc::clone(&token);
        opening.spawn(async move { RawStream::open(addr, &token).await });
    }
    while let Some(stream) = opening.join_next().await {
        streams_open.push(stream.expect("open"));
    }
    say("ready");

    // counts[k]: streams that have received k + 1 events.
    let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..events).map(|_| AtomicUsize::new(0)).collect());
    let (progress, mut all_got) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let mut readers = Vec::with_capacity(streams);
    for stream in streams_open {
        let (counts, progress) = (Arc::clone(&counts), progress.clone());
        readers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(events);
            let open = stream
                .read_events(|l| {
                    latencies.push(l);
                    let k = latencies.len();
                    if counts[k - 1].fetch_add(1, Ordering::AcqRel) + 1 == streams {
                        let _ = progress.send(k);
                    }
                    k < events
                })
                .await;
            // Kept open until every stream has every event: streams closing while others still
            // wait for the last one made the server work during that round, and counted it
            // (the last round's p99 was 300 ms, the others' 100 – 120).
            (latencies, open)
        }));
    }
    drop(progress);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let mut reported = 0;
    while reported < events {
        match tokio::time::timeout_at(deadline, all_got.recv()).await {
            Ok(Some(k)) => {
                // In order: all streams having k events implies they all have k - 1.
                reported = reported.max(k);
                say(&format!("got {reported}"));
            }
            Ok(None) | Err(_) => break,
        }
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut still_open = Vec::with_capacity(readers.len());
    for reader in readers {
        let (latencies, open) = reader.await.expect("reader");
        still_open.push(open);
        for l in latencies {
            writeln!(out, "lat {}", l.as_micros()).expect("stdout");
        }
    }
    writeln!(out, "done").expect("stdout");
    out.flush().expect("stdout");
}

/// One line on stdout, now.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).expect("stdout");
}

/// A fan-out client's stream, read without hyper: the response head, then the chunked body cut
/// into SSE blocks. One task and one `read` per arrival, so that the client processes, which share
/// the server's cores, take as little of them as they can (hyper's client took 6 µs of CPU per
/// event, in two tasks per connection).
struct RawStream {
    tcp: tokio::net::TcpStream,
    /// Bytes read and not yet taken off as whole chunks.
    raw: Vec<u8>,
    /// The body's bytes (chunk framing removed) not yet taken off as whole SSE blocks.
    body: Vec<u8>,
}

impl RawStream {
    /// Opens `GET /v1/events` with a bearer token on a connection of its own; panics unless the
    /// answer is a `200` chunked stream.
    async fn open(addr: std::net::SocketAddr, token: &str) -> Self {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let request = format!("GET /v1/events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.expect("request");
        let mut raw = Vec::with_capacity(1024);
        let head_len = loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            assert!(raw.len() < 16 * 1024, "a response head longer than 16 KiB");
            let mut chunk = [0u8; 1024];
            let n = tcp.read(&mut chunk).await.expect("response head");
            assert!(n > 0, "the server closed the stream before its head");
            raw.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&raw[..head_len]).expect("head").to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200 "), "stream refused: {}", head.lines().next().unwrap_or(""));
        assert!(head.contains("\r\ntransfer-encoding: chunked\r\n"), "the stream is chunked");
        raw.drain(..head_len);
        Self { tcp, raw, body: Vec::new() }
    }

    /// Like [`read_events`]: `each` gets the latency of every ledger event until it returns false
    /// (then the stream is returned, still open) or the stream ends.
    async fn read_events(mut self, mut each: impl FnMut(Duration) -> bool) -> Option<Self> {
        use tokio::io::AsyncReadExt as _;
        let mut chunk = vec![0u8; 4096];
        // An event's arrival time is that of the read that completes it.
        let mut now = chrono::Utc::now();
        loop {
            let more = self.dechunk();
            if !take_blocks(&mut self.body, now, &mut each) {
                return Some(self);
            }
            if !more {
                return None;
            }
            match self.tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => {
                    now = chrono::Utc::now();
                    self.raw.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }

    /// Moves the whole chunks at the front of `raw` into `body`; false once the last chunk came.
    fn dechunk(&mut self) -> bool {
        let mut at = 0;
        let more = loop {
            let Some(eol) = self.raw[at..].windows(2).position(|w| w == b"\r\n") else { break true };
            let line = std::str::from_utf8(&self.raw[at..at + eol]).expect("chunk size line");
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).expect("chunk size");
            let start = at + eol + 2;
            if size == 0 {
                break false;
            }
            if self.raw.len() < start + size + 2 {
                break true;
            }
            self.body.extend_from_slice(&self.raw[start..start + size]);
            at = start + size + 2;
        };
        self.raw.drain(..at);
        more
    }
}
