//! Test harness: a real server on a free loopback port over a temporary SQLite file, customers
//! made for the test, and a client that signs in through the real login pages.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bp_core::account::{AccountKind, NewAccount};
use bp_core::customer::{KycStatus, NewCustomer, Username};
use bp_core::ids::TransferId;
use bp_core::ids::{AccountId, CustomerId};
use bp_core::money::{Currency, Money};
use bp_server_example::auth::crypto::{TOTP_STEP_S, b64, sha256, totp_code};
use bp_server_example::config::{ClientConfig, Config};
use bp_server_example::state::AppState;
use bp_server_example::{Started, demo, start};
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::Value;

pub mod sse;

pub const REDIRECT: &str = "http://127.0.0.1:1/callback";
pub const CLIENT: &str = "bp-test";

/// A running server and its data folder.
pub struct Server {
    pub started: Option<Started>,
    pub state: Arc<AppState>,
    pub base: String,
    pub dir: tempfile::TempDir,
    next_step: Mutex<HashMap<CustomerId, u64>>,
}

/// A customer made for a test.
#[derive(Clone, Debug)]
pub struct Customer {
    pub id: CustomerId,
    pub username: String,
    pub password: String,
    pub totp: Vec<u8>,
    pub eur: AccountId,
    pub usd: AccountId,
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().expect("address");
    config.storage.data_dir = dir.to_owned();
    config.auth.argon2_memory_kib = 8 * 1024;
    config.auth.argon2_iterations = 1;
    config.auth.login_attempts_per_minute = 10_000;
    config.auth.clients.push(ClientConfig {
        id: CLIENT.to_owned(),
        name: "Test client".to_owned(),
        redirect_uris: vec![REDIRECT.to_owned()],
    });
    config.log.json = true;
    config.demo = false;
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
        Self { started: Some(started), state, base, dir, next_step: Mutex::new(HashMap::new()) }
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.started.take() {
            s.running.stop().await.expect("stops");
        }
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
        let id = CustomerId::new_v7();
        let name = Username::parse(username).expect("username");
        self.state
            .ledger
            .open_customer(NewCustomer::person(id, name, "Test", username, KycStatus::Verified))
            .await
            .expect("open customer");
        let mut accounts = Vec::new();
        for (currency, amount) in [(Currency::EUR, eur_minor), (Currency::USD, usd_minor)] {
            let account = AccountId::new_v7();
            self.state
                .ledger
                .open_account(NewAccount {
                    id: account,
                    customer_id: id,
                    kind: AccountKind::Current,
                    currency,
                    overdraft_limit_minor: 0,
                })
                .await
                .expect("open account");
            if amount > 0 {
                self.state
                    .ledger
                    .fund(TransferId::new_v7(), account, Money::new(amount, currency))
                    .await
                    .expect("fund");
            }
            accounts.push(account);
        }
        let password = format!("pw-{username}-correct-horse");
        let enrolled = demo::enrol(&self.state, id, username, &password).await.expect("enrol");
        Customer {
            id,
            username: username.to_owned(),
            password,
            totp: enrolled.totp_secret,
            eur: accounts[0],
            usd: accounts[1],
        }
    }

    /// Opens another (empty) EUR account of `customer`.
    pub async fn open_eur(&self, customer: CustomerId) -> AccountId {
        let id = AccountId::new_v7();
        let request = bp_core::service::current_account(id, customer, Currency::EUR);
        self.state.ledger.open_account(request).await.expect("open account");
        id
    }

    /// A TOTP code of `c` not used before (a code is accepted once; steps within one of now).
    pub fn totp(&self, c: &Customer) -> String {
        let now_step = now_s() / TOTP_STEP_S;
        let mut next = self.next_step.lock().expect("lock");
        let step = next.get(&c.id).copied().unwrap_or(0).max(now_step.saturating_sub(1));
        assert!(step <= now_step + 1, "more than three sign-ins of one customer within 30 s");
        next.insert(c.id, step + 1);
        totp_code(&c.totp, step)
    }

    /// Signs in through the login pages; returns the token response.
    pub async fn login(&self, c: &Customer, scope: &str) -> Value {
        let flow = self.login_until_code(c, scope).await;
        let token = flow.exchange(self, &flow.verifier).await;
        assert_eq!(token.status(), StatusCode::OK);
        token.json().await.expect("token json")
    }

    pub async fn login_until_code(&self, c: &Customer, scope: &str) -> CodeFlow {
        let mut flow = CodeFlow::begin(self, scope).await;
        let page = flow.password(self, &c.username, &c.password).await;
        assert!(page.contains("Confirm it is you"), "second-factor page: {page}");
        let code = self.totp(c);
        let response = flow.second_factor(self, &[("code", code.as_str())]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "redirect after the second factor");
        flow.code = Some(flow.code_from(&response));
        flow
    }
}

pub fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs()
}

/// A browser-like client for one authorization-code flow.
pub struct CodeFlow {
    pub http: reqwest::Client,
    pub tx: String,
    pub verifier: String,
    pub state: String,
    pub nonce: String,
    pub code: Option<String>,
    pub page: String,
}

pub fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(Policy::none()).build().expect("client")
}

pub fn hidden(page: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker)? + marker.len();
    let end = page[start..].find('"')?;
    Some(page[start..start + end].to_owned())
}

impl CodeFlow {
    pub fn authorize_url(server: &Server, scope: &str, verifier: &str, state: &str, nonce: &str) -> String {
        let challenge = b64(&sha256(verifier.as_bytes()));
        let q = serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", CLIENT),
            ("redirect_uri", REDIRECT),
            ("scope", scope),
            ("state", state),
            ("nonce", nonce),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .expect("query");
        server.url(&format!("/oauth2/authorize?{q}"))
    }

    pub async fn begin(server: &Server, scope: &str) -> Self {
        let http = browser();
        let verifier = bp_server_example::auth::crypto::random_token(48);
        let state = bp_server_example::auth::crypto::random_token(8);
        let nonce = bp_server_example::auth::crypto::random_token(8);
        let response =
            http.get(Self::authorize_url(server, scope, &verifier, &state, &nonce)).send().await.expect("authorize");
        assert_eq!(response.status(), StatusCode::OK);
        let page = response.text().await.expect("page");
        let tx = hidden(&page, "tx").expect("login form has a tx field");
        Self { http, tx, verifier, state, nonce, code: None, page }
    }

    pub async fn password(&mut self, server: &Server, username: &str, password: &str) -> String {
        let response = self
            .http
            .post(server.url("/oauth2/login/password"))
            .form(&[("tx", self.tx.as_str()), ("username", username), ("password", password)])
            .send()
            .await
            .expect("password");
        self.page = response.text().await.expect("page");
        self.page.clone()
    }

    pub async fn second_factor(&self, server: &Server, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut form: Vec<(&str, &str)> = vec![("tx", self.tx.as_str())];
        form.extend_from_slice(fields);
        self.http.post(server.url("/oauth2/login/second-factor")).form(&form).send().await.expect("second factor")
    }

    pub fn code_from(&self, response: &reqwest::Response) -> String {
        let location = response.headers().get("location").expect("location").to_str().expect("ascii");
        let url = url::Url::parse(location).expect("url");
        let params: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert!(location.starts_with(REDIRECT));
        assert_eq!(params.get("state"), Some(&self.state), "state comes back");
        params.get("code").expect("code").clone()
    }

    pub async fn exchange(&self, server: &Server, verifier: &str) -> reqwest::Response {
        let code = self.code.as_deref().expect("a code");
        browser()
            .post(server.url("/oauth2/token"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("client_id", CLIENT),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .expect("token")
    }
}

/// An API client with a bearer token.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub fn new(server: &Server, token: &Value) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: server.base.clone(),
            token: token["access_token"].as_str().expect("access token").to_owned(),
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await.expect("get");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: &Value, key: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let r = req.send().await.expect("post");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let r = self.http.delete(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await.expect("delete");
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
