//! Shared by the examples: start a server on a temporary database, open customers, and sign
//! in through the real login pages.

#![allow(dead_code)]

use std::collections::HashMap;

use bp_core::account::{AccountKind, NewAccount};
use bp_core::customer::{KycStatus, NewCustomer, Username};
use bp_core::ids::{AccountId, CustomerId, TransferId};
use bp_core::money::{Currency, Money};
use bp_server_example::auth::crypto::{TOTP_STEP_S, b64, random_token, sha256, totp_code};
use bp_server_example::config::{ClientConfig, Config};
use bp_server_example::{Started, demo, start};

pub const REDIRECT: &str = "http://127.0.0.1:1/callback";
pub const CLIENT: &str = "bp-example";

/// A started server on a temporary folder.
pub struct Harness {
    pub started: Started,
    pub base: String,
    pub dir: tempfile::TempDir,
}

/// A customer with credentials and a EUR account.
pub struct Person {
    pub id: CustomerId,
    pub username: String,
    pub password: String,
    pub totp: Vec<u8>,
    pub accounts: Vec<AccountId>,
}

pub async fn harness(adjust: impl FnOnce(&mut Config)) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().expect("address");
    config.storage.data_dir = dir.path().to_owned();
    config.demo = false;
    config.auth.clients.push(ClientConfig {
        id: CLIENT.to_owned(),
        name: "Example client".to_owned(),
        redirect_uris: vec![REDIRECT.to_owned()],
    });
    adjust(&mut config);
    let started = start(config, false).await.expect("server starts");
    let base = format!("http://{}", started.running.addr);
    Harness { started, base, dir }
}

impl Harness {
    /// A person with `accounts` EUR accounts, each funded with `funds_minor`.
    pub async fn person(&self, username: &str, accounts: usize, funds_minor: i64) -> Person {
        let state = &self.started.state;
        let id = CustomerId::new_v7();
        let name = Username::parse(username).expect("username");
        state
            .ledger
            .open_customer(NewCustomer::person(id, name, "Example", username, KycStatus::Verified))
            .await
            .expect("customer");
        let mut ids = Vec::new();
        for _ in 0..accounts {
            let account = AccountId::new_v7();
            let req = NewAccount {
                id: account,
                customer_id: id,
                kind: AccountKind::Current,
                currency: Currency::EUR,
                overdraft_limit_minor: 0,
            };
            state.ledger.open_account(req).await.expect("account");
            if funds_minor > 0 {
                state
                    .ledger
                    .fund(TransferId::new_v7(), account, Money::new(funds_minor, Currency::EUR))
                    .await
                    .expect("fund");
            }
            ids.push(account);
        }
        let password = format!("{username}-long-password");
        let enrolled = demo::enrol(state, id, username, &password).await.expect("enrol");
        Person { id, username: username.to_owned(), password, totp: enrolled.totp_secret, accounts: ids }
    }
}

/// Signs in through the login pages with TOTP step `step`; returns the token response.
pub async fn login(base: &str, p: &Person, scope: &str, step: u64) -> serde_json::Value {
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let verifier = random_token(48);
    let q = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", CLIENT),
        ("redirect_uri", REDIRECT),
        ("scope", scope),
        ("state", "s"),
        ("code_challenge", b64(&sha256(verifier.as_bytes())).as_str()),
        ("code_challenge_method", "S256"),
    ])
    .expect("query");
    let page =
        http.get(format!("{base}/oauth2/authorize?{q}")).send().await.expect("authorize").text().await.expect("page");
    let marker = "name=\"tx\" value=\"";
    let start = page.find(marker).expect("tx") + marker.len();
    let tx = page[start..start + page[start..].find('"').expect("end")].to_owned();
    http.post(format!("{base}/oauth2/login/password"))
        .form(&[("tx", tx.as_str()), ("username", p.username.as_str()), ("password", p.password.as_str())])
        .send()
        .await
        .expect("password");
    let code = totp_code(&p.totp, step);
    let r = http
        .post(format!("{base}/oauth2/login/second-factor"))
        .form(&[("tx", tx.as_str()), ("code", code.as_str())])
        .send()
        .await
        .expect("second factor");
    let location = r.headers().get("location").expect("redirect").to_str().expect("ascii").to_owned();
    let params: HashMap<String, String> = url::Url::parse(&location).expect("url").query_pairs().into_owned().collect();
    http.post(format!("{base}/oauth2/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", params["code"].as_str()),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json")
}

/// The current TOTP step.
pub fn step_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs() / TOTP_STEP_S
}

/// A number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The `per_mille`-th per-mille of sorted durations, nearest rank.
pub fn percentile(sorted: &[std::time::Duration], per_mille: usize) -> std::time::Duration {
    if sorted.is_empty() {
        return std::time::Duration::ZERO;
    }
    let rank = (sorted.len() * per_mille).div_ceil(1000);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with two decimals, without floating point.
pub fn ms(d: std::time::Duration) -> String {
    let us = d.as_micros();
    format!("{}.{:02}", us / 1000, (us % 1000) / 10)
}

/// The account numbers of `accounts`, read through the API with `token`.
pub async fn account_numbers(base: &str, token: &str, accounts: &[AccountId]) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut numbers = Vec::new();
    for a in accounts {
        let v: serde_json::Value = http
            .get(format!("{base}/v1/accounts/{a}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("account")
            .json()
            .await
            .expect("json");
        numbers.push(v["number"].as_str().expect("number").to_owned());
    }
    numbers
}
