//! The server binary on the MongoDB store (`storage.kind = "mongodb"`), against the real
//! MongoDB-protocol server that `BP_MONGODB_URI` names (scripts/test.sh starts FerretDB with
//! scripts/ferretdb.sh and sets it); each test uses a database of its own. `#[ignore]`d, so a
//! plain `cargo test` skips it; with `--ignored` and no `BP_MONGODB_URI` it fails naming the
//! variable:
//!
//! ```text
//! BP_MONGODB_URI=mongodb://127.0.0.1:PORT/ cargo test -p bp-server-example --test mongodb -- --ignored
//! ```
//!
//! The server reaches the database through a TCP relay of the test's, so that the test can
//! take the database away from it (and give it back) without stopping the shared FerretDB.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::Api;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The server's URI; panics naming the variable when it is unset.
fn uri() -> String {
    std::env::var("BP_MONGODB_URI").unwrap_or_else(|_| {
        panic!(
            "BP_MONGODB_URI is not set: this test needs a MongoDB-protocol server \
             (scripts/test.sh starts FerretDB with scripts/ferretdb.sh and sets it)"
        )
    })
}

/// A database name no other test of this run, or of an earlier run, uses.
fn database(label: &str) -> String {
    let random = uuid::Uuid::now_v7().simple().to_string();
    format!("bp_server_{label}_{}_{}", std::process::id(), random.get(16..).unwrap_or(&random))
}

/// `host:port` of a `mongodb://` URI of one host (as scripts/ferretdb.sh prints).
fn host_of(uri: &str) -> String {
    let rest = uri.strip_prefix("mongodb://").expect("BP_MONGODB_URI is a mongodb:// URI");
    let hosts = rest.split(['/', '?']).next().unwrap_or_default();
    let host = hosts.rsplit_once('@').map_or(hosts, |(_, h)| h);
    assert!(!host.contains(','), "BP_MONGODB_URI names one host for this test: {host}");
    host.to_owned()
}

/// A TCP relay from a loopback port to `upstream`, while it runs: stopping it closes its port
/// and every connection through it, as a database that went away.
struct Relay {
    addr: SocketAddr,
    upstream: String,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    async fn start(addr: SocketAddr, upstream: &str) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind the relay");
        let addr = listener.local_addr().expect("relay address");
        let target = upstream.to_owned();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { addr, upstream: upstream.to_owned(), task: Some(task) }
    }

    /// Closes the port and every connection through it.
    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    async fn restart(&mut self) {
        *self = Self::start(self.addr, &self.upstream).await;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The server process, killed if the test fails before it stops it.
struct Running(Option<Child>);

impl Running {
    fn spawn(dir: &std::path::Path, env: &[(&str, &str)]) -> (String, Self) {
        let (base, _, child) = common::spawn_binary(dir, env);
        (base, Self(Some(child)))
    }

    /// SIGKILL: a process that dies without a word.
    fn kill(mut self) {
        let mut child = self.0.take().expect("running");
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }

    /// SIGTERM: a graceful exit.
    fn stop(mut self) {
        let mut child = self.0.take().expect("running");
        assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill").success());
        let status = child.wait().expect("wait");
        assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn readyz(base: &str) -> (StatusCode, String, String) {
    let r = reqwest::get(format!("{base}/readyz")).await.expect("readyz");
    let status = r.status();
    let kind = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (status, kind, r.text().await.unwrap_or_default())
}

/// Polls `/readyz` until it answers `want`, for at most `within`.
async fn wait_ready(base: &str, want: StatusCode, within: Duration) -> (StatusCode, String, String) {
    let deadline = Instant::now() + within;
    loop {
        let answer = readyz(base).await;
        if answer.0 == want || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Each of a customer's accounts by currency: (id, number, posted balance).
async fn accounts(api: &Api) -> Vec<(String, String, String, String)> {
    let (status, body) = api.get("/v1/accounts").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .map(|a| {
            let s = |v: &Value| v.as_str().expect("a string").to_owned();
            (s(&a["currency"]), s(&a["id"]), s(&a["number"]), s(&a["balances"]["posted"]["amount"]))
        })
        .collect()
}

/// The token response to `tokens`' refresh token, from the command-line client (as
/// scripts/demo-login.sh signs in).
async fn refreshed(base: &str, tokens: &Value) -> Value {
    let refresh_token = tokens["refresh_token"].as_str().expect("a refresh token");
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", "bp-cli")];
    let r = reqwest::Client::new().post(format!("{base}/oauth2/token")).form(&form).send().await.expect("token");
    assert_eq!(r.status(), StatusCode::OK, "refreshed");
    r.json().await.expect("a token response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a MongoDB-protocol server: BP_MONGODB_URI (scripts/test.sh starts FerretDB)"]
async fn the_binary_on_mongodb_keeps_payments_across_a_restart_and_reports_readiness() {
    let upstream = host_of(&uri());
    let mut relay = Relay::start("127.0.0.1:0".parse().expect("address"), &upstream).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let relayed = format!("mongodb://{}/", relay.addr);
    let name = database("restart");
    let env = [
        ("BP_STORAGE__KIND", "mongodb"),
        ("BP_STORAGE__MONGODB__URI", relayed.as_str()),
        ("BP_STORAGE__MONGODB__DATABASE", name.as_str()),
    ];

    // The demo, seeded into the database; a payment between two demo customers.
    let (base, server) = Running::spawn(dir.path(), &env);
    assert_eq!(readyz(&base).await.0, StatusCode::OK);
    let credentials =
        bp_server_example::demo::read_credentials(&dir.path().join("demo-credentials.txt")).expect("credentials");
    assert_eq!(credentials.len(), 3, "the demo customers");
    let (ada_tokens, bob_tokens) =
        (common::demo_login(&base, dir.path(), "ada"), common::demo_login(&base, dir.path(), "bob"));
    let (ada, bob) = (Api::bearer(&base, &ada_tokens), Api::bearer(&base, &bob_tokens));
    let (ada_before, bob_before) = (accounts(&ada).await, accounts(&bob).await);
    let (ada_eur, bob_eur) = (&ada_before[0], &bob_before[0]);
    assert_eq!((ada_eur.0.as_str(), bob_eur.0.as_str()), ("EUR", "EUR"));
    let body = json!({
        "from_account": ada_eur.1,
        "to_account_number": bob_eur.2,
        "amount": { "amount": "12.34", "currency": "EUR" },
    });
    let (status, paid) = ada.post("/v1/transfers", &body, Some("mongodb-restart-1")).await;
    assert_eq!(status, StatusCode::CREATED, "a low-value payment posts at once: {paid}");
    let transfer = paid["transfer"]["id"].as_str().expect("transfer id").to_owned();
    assert_eq!(paid["transfer"]["state"], "posted");
    let (ada_after, bob_after) = (accounts(&ada).await, accounts(&bob).await);
    assert_ne!(ada_after[0].3, ada_eur.3, "the payer's balance moved");
    assert_ne!(bob_after[0].3, bob_eur.3, "the payee's balance moved");
    server.stop();

    // Restarted on the same database (and data folder): the credentials, the payment and the
    // balances are there, the demo is not seeded again, and a retry of the payment moves
    // nothing.
    let (base, server) = Running::spawn(dir.path(), &env);
    let again =
        bp_server_example::demo::read_credentials(&dir.path().join("demo-credentials.txt")).expect("credentials");
    assert_eq!(again, credentials, "not seeded twice");
    // The sessions are there too: the refresh tokens give access tokens of the new issuer (the
    // listener's port is new). (Signing in again could reuse a TOTP code, which is refused.)
    let ada = Api::bearer(&base, &refreshed(&base, &ada_tokens).await);
    let bob = Api::bearer(&base, &refreshed(&base, &bob_tokens).await);
    let (status, found) = ada.get(&format!("/v1/transfers/{transfer}")).await;
    assert_eq!((status, found["state"].as_str()), (StatusCode::OK, Some("posted")), "{found}");
    assert_eq!(accounts(&ada).await, ada_after, "the payer's balances after the restart");
    assert_eq!(accounts(&bob).await, bob_after, "the payee's balances after the restart");
    let (status, retried) = ada.post("/v1/transfers", &body, Some("mongodb-restart-1")).await;
    assert!(status.is_success(), "{status} {retried}");
    assert_eq!(retried["transfer"]["id"].as_str(), Some(transfer.as_str()), "the same payment");
    assert_eq!(accounts(&ada).await, ada_after, "a retry moves nothing");
    assert_eq!(readyz(&base).await.0, StatusCode::OK);

    // The database goes away: not ready (problem+json, within the check's bound), while the
    // server stays up; back again: ready again.
    relay.stop().await;
    let started = Instant::now();
    let (status, kind, problem) = readyz(&base).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(kind, "application/problem+json");
    let problem: Value = serde_json::from_str(&problem).expect("a problem document");
    assert_eq!(problem["status"], 503);
    let bound = Duration::from_millis(bp_server_example::app::READY_TIMEOUT_MS + 1_000);
    assert!(started.elapsed() < bound, "answered in {:?}", started.elapsed());
    let live = reqwest::get(format!("{base}/livez")).await.expect("livez");
    assert_eq!(live.status(), StatusCode::OK, "alive, only not ready");
    relay.restart().await;
    let (status, _, problem) = wait_ready(&base, StatusCode::OK, Duration::from_secs(30)).await;
    assert_eq!(status, StatusCode::OK, "ready again once the database is back: {problem}");
    assert_eq!(accounts(&ada).await, ada_after);
    server.stop();
}

/// A server pointed at a port where no database listens does not start: it says why, naming
/// the database and the address, and prints no part of the URI's password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a MongoDB-protocol server: BP_MONGODB_URI (scripts/test.sh starts FerretDB)"]
async fn an_unreachable_database_fails_the_start_clearly_without_the_password() {
    // The same contract as the other tests of this file, though only a dead port is used.
    let _ = uri();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address");
    let dir = tempfile::tempdir().expect("tempdir");
    let password = "pw-of-the-test-42";
    let output = Command::new(env!("CARGO_BIN_EXE_bp-server-example"))
        .env("BP_SERVER__LISTEN", "127.0.0.1:0")
        .env("BP_STORAGE__DATA_DIR", dir.path())
        .env("BP_STORAGE__KIND", "mongodb")
        .env("BP_STORAGE__MONGODB__URI", format!("mongodb://bank:{password}@{dead}/?authSource=admin"))
        .env("BP_STORAGE__MONGODB__DATABASE", "bp_dead")
        .env("BP_STORAGE__MONGODB__TIMEOUT_MS", "1000")
        .env_remove("RUST_LOG")
        .output()
        .expect("run the server");
    assert!(!output.status.success(), "no start without the database");
    let (out, err) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(err.contains("opening the MongoDB store (database bp_dead at mongodb://bank:(redacted)@"), "{err}");
    assert!(err.contains(&dead.to_string()), "names the address: {err}");
    assert!(!out.contains(password) && !err.contains(password), "the password is never printed:\n{out}\n{err}");
    assert!(!out.contains("panicked") && !err.contains("panicked"), "{err}");
}

/// The value of the gauge `bp_job_lease_held{job="JOB"}` on `base`'s `/metrics` per job (the
/// jobs this process has asked a lease for).
async fn leases_held(base: &str) -> std::collections::BTreeMap<String, f64> {
    let text = reqwest::get(format!("{base}/metrics")).await.expect("metrics").text().await.expect("metrics text");
    text.lines()
        .filter_map(|line| line.strip_prefix("bp_job_lease_held{job=\""))
        .filter_map(|rest| {
            let (job, value) = rest.split_once("\"}")?;
            Some((job.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

async fn relay_published(base: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics")).await.expect("metrics").text().await.expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix("bp_relay_published_events "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Two server processes on one database run each background job once between them, through
/// the jobs' leases; when the holder is killed with SIGKILL, the other takes every job over
/// within about a lease (1 s here) and its relay publishes what is committed afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a MongoDB-protocol server: BP_MONGODB_URI (scripts/test.sh starts FerretDB)"]
async fn a_killed_replicas_jobs_move_to_the_other_within_a_lease() {
    let uri = uri();
    let dir = tempfile::tempdir().expect("tempdir");
    let name = database("leases");
    let env = [
        ("BP_STORAGE__KIND", "mongodb"),
        ("BP_STORAGE__MONGODB__URI", uri.as_str()),
        ("BP_STORAGE__MONGODB__DATABASE", name.as_str()),
        ("BP_SERVER__JOB_LEASE_MS", "1000"),
    ];
    let (first_base, first) = Running::spawn(dir.path(), &env);
    let wait_for = |base: String, want: f64| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let held = leases_held(&base).await;
            if held.len() >= 2 && held.values().all(|v| *v == want) {
                return held;
            }
            assert!(Instant::now() < deadline, "{base}: leases {held:?}, waiting for all {want}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let jobs = wait_for(first_base.clone(), 1.0).await;
    assert!(jobs.contains_key("outbox-relay") && jobs.contains_key("hold-sweeper"), "{jobs:?}");
    let (second_base, second) = Running::spawn(dir.path(), &env);
    // Two lease lengths: the second has asked for every lease several times by then.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = leases_held(&second_base).await;
    assert_eq!(held.keys().collect::<Vec<_>>(), jobs.keys().collect::<Vec<_>>(), "the same jobs");
    assert!(held.values().all(|v| *v == 0.0), "the second runs none while the first lives: {held:?}");
    assert!(leases_held(&first_base).await.values().all(|v| *v == 1.0), "the first keeps them");

    first.kill();
    let died = Instant::now();
    wait_for(second_base.clone(), 1.0).await;
    let moved = died.elapsed();
    println!("jobs moved to the other replica {} ms after the holder's SIGKILL (lease 1000 ms)", moved.as_millis());

    // What is committed now is published by the survivor's relay.
    let published = relay_published(&second_base).await;
    let ada = Api::bearer(&second_base, &common::demo_login(&second_base, dir.path(), "ada"));
    let bob = Api::bearer(&second_base, &common::demo_login(&second_base, dir.path(), "bob"));
    let (ada_eur, bob_eur) = (accounts(&ada).await.remove(0), accounts(&bob).await.remove(0));
    let body = json!({
        "from_account": ada_eur.1,
        "to_account_number": bob_eur.2,
        "amount": { "amount": "1.00", "currency": "EUR" },
    });
    let (status, paid) = ada.post("/v1/transfers", &body, Some("leases-after-failover")).await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while relay_published(&second_base).await <= published {
        assert!(Instant::now() < deadline, "the survivor's relay never published the payment's events");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.stop();
}

/// A free loopback port (bound, then released for the server to bind).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

/// Two replicas of one deployment (one database, one signing key, one public URL): an access
/// token issued by one is good on the other, a stream ticket made by one opens a stream on the
/// other (once), and once its session is signed out on one, the other refuses it too, within
/// about `jobs::REVOCATION_POLL_MS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a MongoDB-protocol server: BP_MONGODB_URI (scripts/test.sh starts FerretDB)"]
async fn a_session_signed_out_on_one_replica_is_refused_by_the_other() {
    let uri = uri();
    let dir = tempfile::tempdir().expect("tempdir");
    let name = database("revocation");
    let (port_a, port_b) = (free_port(), free_port());
    let public_url = format!("http://127.0.0.1:{port_a}");
    let env = |port: u16| {
        vec![
            ("BP_STORAGE__KIND".to_owned(), "mongodb".to_owned()),
            ("BP_STORAGE__MONGODB__URI".to_owned(), uri.clone()),
            ("BP_STORAGE__MONGODB__DATABASE".to_owned(), name.clone()),
            ("BP_SERVER__LISTEN".to_owned(), format!("127.0.0.1:{port}")),
            ("BP_SERVER__PUBLIC_URL".to_owned(), public_url.clone()),
        ]
    };
    let (env_a, env_b) = (env(port_a), env(port_b));
    let (base_a, a) = Running::spawn(dir.path(), &as_refs(&env_a));
    let (base_b, b) = Running::spawn(dir.path(), &as_refs(&env_b));
    let tokens = common::demo_login(&base_a, dir.path(), "ada");
    let (on_a, on_b) = (Api::bearer(&base_a, &tokens), Api::bearer(&base_b, &tokens));
    assert_eq!(on_b.get("/v1/accounts").await.0, StatusCode::OK, "a token of the deployment is good on every replica");
    // A stream ticket made on one replica opens the stream on the other, once.
    let (status, ticket) = on_a.post("/v1/events/ticket", &json!({}), None).await;
    assert_eq!(status, StatusCode::OK, "{ticket}");
    let ticket = ticket["ticket"].as_str().expect("a ticket").to_owned();
    let open = |ticket: String| {
        let base = base_b.clone();
        async move { reqwest::get(format!("{base}/v1/events?ticket={ticket}")).await.expect("stream") }
    };
    let stream = open(ticket.clone()).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let kind = stream.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    drop(stream);
    assert_eq!(open(ticket).await.status(), StatusCode::UNAUTHORIZED, "a ticket opens one stream");

    // A DPoP proof of a request that changes something, accepted by one replica, is refused by
    // the other: the token endpoint's (the grant is wrong, so only the proof is at stake).
    let key = bp_server_example::testkit::DpopKey::generate();
    let proof = key.proof("POST", &format!("{public_url}/oauth2/token"), None);
    let token_request = |base: String| {
        let proof = proof.clone();
        async move {
            let form =
                [("grant_type", "refresh_token"), ("refresh_token", "not-a-refresh-token"), ("client_id", "bp-cli")];
            let r = reqwest::Client::new().post(format!("{base}/oauth2/token")).header("DPoP", proof).form(&form);
            r.send().await.expect("token request").json::<Value>().await.expect("an OAuth error")
        }
    };
    assert_eq!(token_request(base_a.clone()).await["error"], "invalid_grant", "the proof was accepted");
    let replayed = token_request(base_b.clone()).await;
    assert_eq!(replayed["error"], "invalid_dpop_proof", "{replayed}");

    let refresh_token = tokens["refresh_token"].as_str().expect("a refresh token");
    let form = [("token", refresh_token), ("client_id", "bp-cli")];
    let r = reqwest::Client::new().post(format!("{base_a}/oauth2/revoke")).form(&form).send().await.expect("revoke");
    assert_eq!(r.status(), StatusCode::OK);
    let revoked = Instant::now();
    assert_eq!(on_a.get("/v1/accounts").await.0, StatusCode::UNAUTHORIZED, "refused at once where signed out");
    let deadline = revoked + Duration::from_secs(30);
    loop {
        let (status, body) = on_b.get("/v1/accounts").await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(Instant::now() < deadline, "the other replica still accepts the signed-out session's token");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "the other replica refused the signed-out session {} ms after the sign-out",
        revoked.elapsed().as_millis()
    );
    a.stop();
    b.stop();
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}
