//! Signing in as a browser does (authorization code with PKCE, password, TOTP code) through
//! nginx, over HTTPS with the test's CA, and DPoP-bound requests of the signed-in customer.

use std::sync::Arc;

use bp_core::api::AccountList;
use bp_server_example::auth::crypto::{TOTP_STEP_S, b64, random_token, sha256, totp_code};
use bp_server_example::testkit::{DpopKey, hidden};
use reqwest::StatusCode;

use crate::setup::Customer;
use crate::{Env, SignIn};

/// The scopes the clients ask for.
const SCOPE: &str = "openid accounts payments";
/// The longest wait for one request of the sign-in or the setup reads.
const REQUEST_TIMEOUT_S: u64 = 20;

/// A signed-in customer: an access token bound to its own DPoP key.
#[derive(Clone, Debug)]
pub struct Session {
    pub customer: Customer,
    /// nginx's URL: where every request goes, and what the proofs name (the public URL).
    pub public: String,
    pub token: String,
    pub key: Arc<DpopKey>,
    /// Its accounts as the API listed them after the sign-in (ids, numbers, last events).
    pub accounts: AccountList,
}

impl Session {
    /// A `method` request to `path` through nginx with the token and a fresh proof.
    pub fn request(&self, http: &reqwest::Client, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.public);
        let headers = self.key.headers(method.as_str(), &url, &self.token);
        headers.into_iter().fold(http.request(method, &url), |r, (k, v)| r.header(k, v))
    }

    /// Its accounts now, through nginx.
    pub async fn accounts(&self, http: &reqwest::Client) -> Result<AccountList, String> {
        let r = self.request(http, reqwest::Method::GET, "/v1/accounts").send().await.map_err(|e| e.to_string())?;
        if r.status() != StatusCode::OK {
            return Err(format!("GET /v1/accounts answered {}", r.status()));
        }
        r.json().await.map_err(|e| e.to_string())
    }
}

/// An HTTPS client that trusts the test's CA, with `timeout` per request.
pub fn client(env: &Env, timeout: std::time::Duration) -> Result<reqwest::Client, String> {
    let ca = reqwest::Certificate::from_pem(&env.ca_pem).map_err(|e| format!("the test's CA: {e}"))?;
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())
}

/// An HTTPS client for event streams, which last as long as the run: a bound on connecting
/// only.
pub fn client_for_streams(env: &Env) -> Result<reqwest::Client, String> {
    let ca = reqwest::Certificate::from_pem(&env.ca_pem).map_err(|e| format!("the test's CA: {e}"))?;
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())
}

/// Where the sign-ins go.
pub fn where_signed_in(env: &Env) -> String {
    match env.sign_in {
        SignIn::ThroughNginx => "nginx".to_owned(),
        SignIn::AtTheFirstReplica => format!("replica 1 directly ({})", env.replicas[0].base),
    }
}

/// Signs every customer in, one after the other (each spends one TOTP code of its own).
pub async fn sign_in_all(env: &Env, customers: &[Customer]) -> Result<Vec<Session>, String> {
    let http = client(env, std::time::Duration::from_secs(REQUEST_TIMEOUT_S))?;
    let mut sessions = Vec::with_capacity(customers.len());
    for c in customers {
        let key = Arc::new(DpopKey::generate());
        let token = sign_in(env, &http, c, &key).await.map_err(|e| format!("signing {} in: {e}", c.username))?;
        let mut session = Session {
            customer: c.clone(),
            public: env.nginx.clone(),
            token,
            key,
            accounts: AccountList { accounts: vec![] },
        };
        session.accounts = session.accounts(&http).await?;
        sessions.push(session);
    }
    Ok(sessions)
}

/// The cookies a browser would send back: `name=value` of each `Set-Cookie`. Kept by hand, not
/// by a cookie store: the sign-in cookie is `Secure` (the public URL is HTTPS), which a store
/// would not send to a replica asked over plain HTTP (`BP_HA_SIGN_IN=direct`).
fn cookies(r: &reqwest::Response, jar: &mut Vec<String>) {
    for v in r.headers().get_all("set-cookie") {
        if let Some(pair) = v.to_str().ok().and_then(|v| v.split(';').next()) {
            let name = pair.split('=').next().unwrap_or_default();
            jar.retain(|c| c.split('=').next() != Some(name));
            jar.push(pair.to_owned());
        }
    }
}

/// One sign-in of `c`; its access token.
async fn sign_in(env: &Env, http: &reqwest::Client, c: &Customer, key: &DpopKey) -> Result<String, String> {
    let base = match env.sign_in {
        SignIn::ThroughNginx => env.nginx.as_str(),
        SignIn::AtTheFirstReplica => env.replicas[0].base.as_str(),
    };
    let (verifier, state) = (random_token(48), random_token(8));
    let query = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", env.client_id.as_str()),
        ("redirect_uri", env.redirect_uri.as_str()),
        ("scope", SCOPE),
        ("state", state.as_str()),
        ("nonce", random_token(8).as_str()),
        ("code_challenge", b64(&sha256(verifier.as_bytes())).as_str()),
        ("code_challenge_method", "S256"),
    ])
    .map_err(|e| e.to_string())?;
    let mut jar = Vec::new();
    let send = |r: reqwest::RequestBuilder, jar: &Vec<String>| {
        let r = if jar.is_empty() { r } else { r.header("cookie", jar.join("; ")) };
        r.send()
    };
    let r = send(http.get(format!("{base}/oauth2/authorize?{query}")), &jar).await.map_err(|e| e.to_string())?;
    cookies(&r, &mut jar);
    let page = r.text().await.map_err(|e| e.to_string())?;
    let tx = hidden(&page, "tx").ok_or("the login page has no tx field")?;
    let form = [("tx", tx.as_str()), ("username", c.username.as_str()), ("password", c.password.as_str())];
    let r =
        send(http.post(format!("{base}/oauth2/login/password")).form(&form), &jar).await.map_err(|e| e.to_string())?;
    cookies(&r, &mut jar);
    let page = r.text().await.map_err(|e| e.to_string())?;
    if !page.contains("name=\"code\"") {
        return Err(format!("no second-factor page after the password: {}", excerpt(&page)));
    }
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?;
    let step = now_s.as_secs() / TOTP_STEP_S;
    let totp = totp_code(&c.totp, step);
    let form = [("tx", tx.as_str()), ("code", totp.as_str())];
    let r = send(http.post(format!("{base}/oauth2/login/second-factor")).form(&form), &jar)
        .await
        .map_err(|e| e.to_string())?;
    let code = authorization_code(&r, &state)?;
    token(env, http, base, key, &code, &verifier).await
}

/// The code of the redirect that ends a good sign-in.
fn authorization_code(r: &reqwest::Response, state: &str) -> Result<String, String> {
    if r.status() != StatusCode::SEE_OTHER {
        return Err(format!("the second factor answered {}, not a redirect", r.status()));
    }
    let location = r.headers().get("location").and_then(|l| l.to_str().ok()).ok_or("a redirect without location")?;
    let url = reqwest::Url::parse(location).map_err(|e| e.to_string())?;
    let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    if param("state").as_deref() != Some(state) {
        return Err("the redirect's state is not the one sent".to_owned());
    }
    param("code").ok_or_else(|| "the redirect has no code".to_owned())
}

/// The code exchanged for a DPoP-bound access token, at `base`, with a proof naming the token
/// endpoint's public URL.
async fn token(
    env: &Env,
    http: &reqwest::Client,
    base: &str,
    key: &DpopKey,
    code: &str,
    verifier: &str,
) -> Result<String, String> {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", env.redirect_uri.as_str()),
        ("client_id", env.client_id.as_str()),
        ("code_verifier", verifier),
    ];
    let proof = key.proof("POST", &format!("{}/oauth2/token", env.nginx), None);
    let r = http.post(format!("{base}/oauth2/token")).header("dpop", proof).form(&form).send().await;
    let r = r.map_err(|e| e.to_string())?;
    let status = r.status();
    let body: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    if status != StatusCode::OK || body["token_type"] != "DPoP" {
        return Err(format!("the token request answered {status}: {body}"));
    }
    body["access_token"].as_str().map(str::to_owned).ok_or_else(|| "no access token".to_owned())
}

/// The start of a page, for an error message.
fn excerpt(page: &str) -> String {
    page.chars().take(300).collect()
}
