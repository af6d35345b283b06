//! Test harness: a real server on a free loopback port over a temporary SQLite file, customers
//! made for the test, and a client that signs in through the real login pages (both from
//! `bp_server_example::testkit`, shared with the examples).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bp_core::api::device_registration_message;
use bp_core::ids::{AccountId, CustomerId};
use bp_core::money::Currency;
use bp_server_example::auth::crypto::{TOTP_STEP_S, b64, totp_code};
use bp_server_example::config::{ClientConfig, Config, TokenBinding};
use bp_server_example::state::AppState;
use bp_server_example::testkit::{self, CodeFlow, DpopKey, Site};
use bp_server_example::{Started, start};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub mod sse;

pub const REDIRECT: &str = "http://127.0.0.1:1/callback";
pub const CLIENT: &str = "bp-test";

/// A running server and its data folder.
pub struct Server {
    pub started: Option<Started>,
    pub state: Arc<AppState>,
    pub base: String,
    /// The test client of this server, for signing in.
    pub site: Site,
    pub dir: tempfile::TempDir,
    next_step: Mutex<HashMap<CustomerId, u64>>,
}

/// A customer made for a test: a `testkit::Customer` (id, username, password, TOTP secret, read
/// through `Deref`) with a EUR and a USD account.
#[derive(Clone, Debug)]
pub struct Customer {
    opened: testkit::Customer,
    pub eur: AccountId,
    pub usd: AccountId,
}

impl std::ops::Deref for Customer {
    type Target = testkit::Customer;

    fn deref(&self) -> &testkit::Customer {
        &self.opened
    }
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let client = ClientConfig {
        id: CLIENT.to_owned(),
        name: "Test client".to_owned(),
        redirect_uris: vec![REDIRECT.to_owned()],
        token_binding: TokenBinding::Dpop,
    };
    let mut config = testkit::loopback_config(dir, client);
    config.auth.argon2_memory_kib = 8 * 1024;
    config.auth.argon2_iterations = 1;
    config.auth.login_attempts_per_minute = 10_000;
    config.auth.login_attempts_per_username_per_minute = 10_000;
    config.log.json = true;
    // No rail unless a test connects one (tests/external.rs).
    config.external.sepa.simulate = false;
    config
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(adjust, None).await
    }

    /// A server on `bus` (instead of the one its configuration names).
    pub async fn start_on(adjust: impl FnOnce(&mut Config), bus: Option<Arc<dyn bp_core::bus::EventBus>>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        adjust(&mut config);
        let started = match bus {
            Some(bus) => bp_server_example::start_with_bus(config, false, bus).await,
            None => start(config, false).await,
        }
        .expect("server starts");
        let state = started.state.clone();
        let base = format!("http://{}", started.running.addr);
        let site = Site::new(&base, CLIENT, REDIRECT);
        Self { started: Some(started), state, base, site, dir, next_step: Mutex::new(HashMap::new()) }
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.started.take() {
            s.running.stop().await.expect("stops");
        }
    }

    /// Stops the server and starts it again with the same configuration, on the same address
    /// and data folder: the same issuer, signing key and records, nothing of its memory.
    pub async fn restart(&mut self) {
        let config = self.state.config.clone();
        self.stop().await;
        let started = start(config, false).await.expect("server restarts");
        assert_eq!(format!("http://{}", started.running.addr), self.base, "the same address");
        self.state = started.state.clone();
        self.started = Some(started);
    }

    /// Waits until the server's audit tail has read the whole audit log, so that a stream opened
    /// now starts after every security event so far.
    pub async fn audit_settled(&self) {
        let end = self.state.security.audit_end().await.expect("audit log");
        for _ in 0..500 {
            if self.state.audit_position.load(std::sync::atomic::Ordering::Acquire) >= end {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the audit tail did not reach position {end} within 5 s");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Opens a person with a EUR and a USD account, funded, and credentials.
    pub async fn customer(&self, username: &str, eur_minor: i64, usd_minor: i64) -> Customer {
        let password = format!("pw-{username}-correct-horse");
        let accounts = [(Currency::EUR, eur_minor), (Currency::USD, usd_minor)];
        let opened = testkit::open_customer(&self.state, username, &password, &accounts).await;
        let (eur, usd) = (opened.accounts[0], opened.accounts[1]);
        Customer { opened, eur, usd }
    }

    /// Opens another (empty) EUR account of `customer`.
    pub async fn open_eur(&self, customer: CustomerId) -> AccountId {
        let id = AccountId::new_v7();
        let request = bp_core::service::current_account(id, customer, Currency::EUR);
        self.state.ledger.open_account(request).await.expect("open account");
        id
    }

    /// A TOTP code of `c` not used before (a code is accepted once, within one step of now).
    /// The previous step's code is used only while it has a few seconds left, so that it is still
    /// valid when the server checks it; when every code valid now is spent, this waits for the
    /// next step.
    pub async fn totp(&self, c: &Customer) -> String {
        loop {
            let now = now_s();
            let now_step = now / TOTP_STEP_S;
            let earliest = if now % TOTP_STEP_S < TOTP_STEP_S - 3 { now_step.saturating_sub(1) } else { now_step };
            {
                let mut next = self.next_step.lock().expect("lock");
                let step = next.get(&c.id).copied().unwrap_or(0).max(earliest);
                if step <= now_step + 1 {
                    next.insert(c.id, step + 1);
                    return totp_code(&c.totp, step);
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(TOTP_STEP_S - now % TOTP_STEP_S)).await;
        }
    }

    /// Signs in through the login pages; returns the token response.
    pub async fn login(&self, c: &Customer, scope: &str) -> Value {
        self.login_until_code(c, scope).await.tokens().await
    }

    pub async fn login_until_code(&self, c: &Customer, scope: &str) -> CodeFlow {
        let code = self.totp(c).await;
        CodeFlow::until_code(&self.site, &c.username, &c.password, &code, scope).await
    }
}

pub fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs()
}

/// An API client with an access token: DPoP-bound, with the key it is bound to (the test
/// client's, which signs in with DPoP), or a bearer token.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
    /// The key the token is bound to; `None` for a bearer token.
    pub dpop: Option<Arc<DpopKey>>,
}

impl Api {
    /// The client of `token` (a token response) from signing in to `server`'s test client.
    pub fn new(server: &Server, token: &Value) -> Self {
        let dpop = (token["token_type"] == "DPoP").then(|| server.site.dpop.clone().expect("the test client's key"));
        Self {
            http: reqwest::Client::new(),
            base: server.base.clone(),
            token: token["access_token"].as_str().expect("access token").to_owned(),
            dpop,
        }
    }

    /// A bearer token's client of the server at `base`.
    pub fn bearer(base: &str, token: &Value) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.to_owned(),
            token: token["access_token"].as_str().expect("access token").to_owned(),
            dpop: None,
        }
    }

    /// A request to `path` with the token: `Authorization: DPoP` and a fresh proof, or `Bearer`.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.base);
        let request = self.http.request(method.clone(), &url);
        match &self.dpop {
            Some(key) => {
                key.headers(method.as_str(), &url, &self.token).into_iter().fold(request, |r, (k, v)| r.header(k, v))
            }
            None => request.bearer_auth(&self.token),
        }
    }

    /// The request head lines (`Authorization`, and `DPoP` for a bound token) of a `method`
    /// request to `path`, for tests that write HTTP by hand.
    pub fn head_lines(&self, method: &str, path: &str) -> String {
        match &self.dpop {
            Some(key) => key
                .headers(method, &format!("{}{path}", self.base), &self.token)
                .iter()
                .map(|(k, v)| format!("{k}: {v}\r\n"))
                .collect(),
            None => format!("authorization: Bearer {}\r\n", self.token),
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.request(reqwest::Method::GET, path).send().await.expect("get");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: &Value, key: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.request(reqwest::Method::POST, path).json(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let r = req.send().await.expect("post");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let r = self.request(reqwest::Method::DELETE, path).send().await.expect("delete");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// Asserts an RFC 9457 problem of `slug` with `status`.
pub fn assert_problem(status: StatusCode, body: &Value, expected: StatusCode, slug: &str) {
    assert_eq!(status, expected, "status; body {body}");
    assert_eq!(body["type"], format!("urn:bp:problem:{slug}"), "problem type; body {body}");
    assert_eq!(body["status"], expected.as_u16());
}

/// Asserts that problem `body` names the request body's member at `pointer` (`/amount`) as
/// the only part at fault, with the problem's detail.
pub fn assert_pointer(body: &Value, pointer: &str) {
    assert_at(body, serde_json::json!({ "pointer": pointer, "detail": body["detail"] }));
}

/// Asserts that problem `body` names the query parameter or header `name` as the only part at
/// fault, with the problem's detail.
pub fn assert_parameter(body: &Value, name: &str) {
    assert_at(body, serde_json::json!({ "parameter": name, "detail": body["detail"] }));
}

fn assert_at(body: &Value, expected: Value) {
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "a detail; body {body}");
    assert_eq!(body["errors"], serde_json::json!([expected]), "errors; body {body}");
}

/// Runs the real binary in development mode over `dir`, with `env` added; returns its address,
/// its log lines so far (shared, growing) and the child (stderr piped).
pub fn spawn_binary(
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (String, Arc<Mutex<Vec<String>>>, std::process::Child) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bp-server-example"))
        .env("BP_SERVER__LISTEN", "127.0.0.1:0")
        .env("BP_STORAGE__DATA_DIR", dir)
        .env("BP_AUTH__ARGON2_MEMORY_KIB", "8192")
        .env("BP_AUTH__ARGON2_ITERATIONS", "1")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let stdout = child.stdout.take().expect("stdout");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if line.contains("\"serving\"") {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                let _ = tx.send(v["address"].as_str().unwrap_or_default().to_owned());
            }
            sink.lock().expect("lock").push(line);
        }
    });
    let addr = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("the server logs its address");
    (format!("http://{addr}"), lines, child)
}

/// Signs in as the demo customer `username` of the binary serving `base` over `dir`, with
/// `scripts/demo-login.sh` (the documented curl sign-in); returns the token response.
pub fn demo_login(base: &str, dir: &std::path::Path, username: &str) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo-login.sh");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .args([base, username])
        .env("BP_CREDENTIALS", dir.join("demo-credentials.txt"))
        .env("BP_TOTP_COMMAND", format!("{} totp", env!("CARGO_BIN_EXE_bp-server-example")))
        .output()
        .expect("run the login script");
    assert!(output.status.success(), "demo-login.sh: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("a token response")
}

/// A phone of a customer: its device key, registered.
pub struct Phone {
    pub key: SigningKey,
    pub device_id: String,
}

impl Phone {
    pub fn sign(&self, message: &str) -> String {
        let sig: Signature = self.key.sign(message.as_bytes());
        b64(sig.to_der().as_bytes())
    }

    pub fn answer(&self, challenge: &Value) -> Value {
        json!({
            "method": "device_signature",
            "challenge_id": challenge["id"],
            "device_id": self.device_id,
            "signature": self.sign(challenge["message"].as_str().expect("message")),
        })
    }
}

/// A new key and its proof of possession for `customer`, as a phone sends them.
pub fn new_key(customer: CustomerId) -> (SigningKey, Value) {
    let key = SigningKey::random(&mut rand_core::OsRng);
    let public = b64(key.verifying_key().to_encoded_point(false).as_bytes());
    let proof: Signature = key.sign(device_registration_message(customer, &public).as_bytes());
    (key, json!({ "name": "Test phone", "public_key": public, "proof": b64(&proof.to_bytes()) }))
}

/// Registers a first phone of `customer`, from the fresh session of `api`, confirmed by TOTP.
pub async fn register_phone(server: &Server, api: &Api, customer: &Customer) -> Phone {
    let (key, body) = new_key(customer.id);
    let (status, begun) = api.post("/v1/devices", &body, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{begun}");
    assert_eq!(begun["sca"]["methods"], json!(["totp"]), "a first device is confirmed by a TOTP code");
    let device_id = begun["device"]["id"].as_str().expect("id").to_owned();
    let answer = json!({ "method": "totp", "challenge_id": begun["sca"]["id"], "code": server.totp(customer).await });
    let (status, body) = api.post(&format!("/v1/devices/{device_id}/confirm"), &answer, None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["device"]["id"], json!(device_id));
    Phone { key, device_id }
}
