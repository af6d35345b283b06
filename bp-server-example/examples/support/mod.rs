//! Shared by the examples: start a server on a temporary database, open customers, and sign
//! in through the real login pages.

#![allow(dead_code)]

use bp_core::ids::AccountId;
use bp_core::money::Currency;
use bp_server_example::auth::crypto::{TOTP_STEP_S, totp_code};
use bp_server_example::config::{ClientConfig, Config, TokenBinding};
use bp_server_example::testkit::{self, Site};
use bp_server_example::{Started, start};

pub const REDIRECT: &str = "http://127.0.0.1:1/callback";
pub const CLIENT: &str = "bp-example";

/// A started server on a temporary folder.
pub struct Harness {
    pub started: Started,
    pub base: String,
    pub dir: tempfile::TempDir,
}

/// A customer with credentials and EUR accounts.
pub type Person = testkit::Customer;

pub async fn harness(adjust: impl FnOnce(&mut Config)) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    // Bearer tokens unless a token request carries a DPoP proof: schemathesis sends one fixed
    // header, and the HTTP benchmark compares both.
    let client = ClientConfig {
        id: CLIENT.to_owned(),
        name: "Example client".to_owned(),
        redirect_uris: vec![REDIRECT.to_owned()],
        token_binding: TokenBinding::Bearer,
    };
    let mut config = testkit::loopback_config(dir.path(), client);
    adjust(&mut config);
    let started = start(config, false).await.expect("server starts");
    let base = format!("http://{}", started.running.addr);
    Harness { started, base, dir }
}

impl Harness {
    /// A person with `accounts` EUR accounts, each funded with `funds_minor`.
    pub async fn person(&self, username: &str, accounts: usize, funds_minor: i64) -> Person {
        let password = format!("{username}-long-password");
        let accounts = vec![(Currency::EUR, funds_minor); accounts];
        testkit::open_customer(&self.started.state, username, &password, &accounts).await
    }
}

/// The example client of the server at `base`, with bearer tokens.
pub fn bearer_site(base: &str) -> Site {
    Site::bearer(base, CLIENT, REDIRECT)
}

/// The example client of the server at `base` with a DPoP key of its own: its tokens are bound.
pub fn dpop_site(base: &str) -> Site {
    Site::new(base, CLIENT, REDIRECT)
}

/// Signs in through the login pages with TOTP step `step`, for bearer tokens; returns the
/// token response.
pub async fn login(base: &str, p: &Person, scope: &str, step: u64) -> serde_json::Value {
    login_at(&bearer_site(base), p, scope, step).await
}

/// Signs in at `site` (bearer, or DPoP with its key) with TOTP step `step`.
pub async fn login_at(site: &Site, p: &Person, scope: &str, step: u64) -> serde_json::Value {
    site.sign_in(&p.username, &p.password, &totp_code(&p.totp, step), scope).await
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

/// The account numbers of `accounts`, read through the API of `site` with `token`.
pub async fn account_numbers(site: &Site, token: &str, accounts: &[AccountId]) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut numbers = Vec::new();
    for a in accounts {
        let url = site.url(&format!("/v1/accounts/{a}"));
        let v: serde_json::Value = site
            .authorize(http.get(&url), "GET", &url, token)
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
