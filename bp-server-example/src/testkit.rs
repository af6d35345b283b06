//! (feature `testkit`) What the crate's tests, its examples and tools need to drive a real
//! server, written once: a configuration for a server on a free loopback port, a customer with
//! funded accounts and credentials, and the sign-in through the real login pages as a browser
//! does it (authorization code with PKCE, password, then a TOTP code), with DPoP: a [`Site`]
//! holds a P-256 key ([`DpopKey`]) unless made for bearer tokens, and proves possession of it
//! at the token endpoint and with every use of its tokens.
//!
//! Its functions panic when the server does not answer as it should: they are for tests.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bp_core::customer::{KycStatus, NewCustomer, Username};
use bp_core::ids::{AccountId, CustomerId, TransferId};
use bp_core::money::{Currency, Money};
use bp_core::service::current_account;
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::Value;

use crate::auth::crypto::{b64, random_token, sha256};
use crate::config::{ClientConfig, Config};
use crate::state::AppState;

/// The configuration of a development server on a free loopback port over `dir`, without the
/// demo, with `client` registered.
pub fn loopback_config(dir: &Path, client: ClientConfig) -> Config {
    let mut config = Config::default();
    config.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.storage.data_dir = dir.to_owned();
    config.auth.clients.push(client);
    config.demo = false;
    config
}

/// A customer opened by [`open_customer`], with what signing in takes.
#[derive(Clone, Debug)]
pub struct Customer {
    /// Their id.
    pub id: CustomerId,
    /// Their username.
    pub username: String,
    /// Their password.
    pub password: String,
    /// Their raw TOTP secret.
    pub totp: Vec<u8>,
    /// Their accounts, in the order asked for.
    pub accounts: Vec<AccountId>,
}

/// Opens the person `username` (KYC verified), a current account for each `(currency, funds)`
/// of `accounts`, funded with `funds` minor units when positive, and their credentials:
/// `password` and a new TOTP secret.
pub async fn open_customer(state: &AppState, username: &str, password: &str, accounts: &[(Currency, i64)]) -> Customer {
    let id = CustomerId::new_v7();
    let name = Username::parse(username).expect("username");
    let person = NewCustomer::person(id, name, "Test", username, KycStatus::Verified);
    state.ledger.open_customer(person).await.expect("open customer");
    let mut opened = Vec::new();
    for &(currency, funds_minor) in accounts {
        let account = AccountId::new_v7();
        state.ledger.open_account(current_account(account, id, currency)).await.expect("open account");
        if funds_minor > 0 {
            state.ledger.fund(TransferId::new_v7(), account, Money::new(funds_minor, currency)).await.expect("fund");
        }
        opened.push(account);
    }
    let enrolled = crate::demo::enrol(state, id, username, password).await.expect("enrol");
    Customer {
        id,
        username: username.to_owned(),
        password: password.to_owned(),
        totp: enrolled.totp_secret,
        accounts: opened,
    }
}

/// A client's DPoP key: a P-256 key pair (ES256, what WebCrypto and phone keystores make) whose
/// private half never leaves this value, and the proofs it signs (RFC 9449 §4.2).
pub struct DpopKey {
    key: p256::ecdsa::SigningKey,
    jwk: Value,
    jkt: String,
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopKey").field("jkt", &self.jkt).finish_non_exhaustive()
    }
}

impl DpopKey {
    /// A new random key.
    pub fn generate() -> Self {
        let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let point = key.verifying_key().to_encoded_point(false);
        let (x, y) = (b64(point.x().expect("x")), b64(point.y().expect("y")));
        // RFC 7638: the required members in lexicographic order, no whitespace.
        let jkt = b64(&sha256(format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#).as_bytes()));
        let jwk = serde_json::json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y });
        Self { key, jwk, jkt }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// Its JWK SHA-256 thumbprint: what tokens bound to it carry as `cnf.jkt`.
    pub fn thumbprint(&self) -> &str {
        &self.jkt
    }

    /// The claims of a fresh proof for `method` on `url` (its query dropped), made now, for
    /// `access_token` when given: what [`DpopKey::proof`] signs, for tests that change them.
    pub fn claims(&self, method: &str, url: &str, access_token: Option<&str>) -> Value {
        let htu = url.split(['?', '#']).next().unwrap_or(url);
        let iat = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs();
        let mut claims = serde_json::json!({ "jti": random_token(16), "htm": method, "htu": htu, "iat": iat });
        if let Some(token) = access_token {
            claims["ath"] = b64(&sha256(token.as_bytes())).into();
        }
        claims
    }

    /// A proof for `method` on `url`, for `access_token` when given.
    pub fn proof(&self, method: &str, url: &str, access_token: Option<&str>) -> String {
        self.sign(&self.header(), &self.claims(method, url, access_token))
    }

    /// The header of its proofs: `typ`, `alg` and the public key.
    pub fn header(&self) -> Value {
        serde_json::json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk })
    }

    /// `header` and `claims` signed as a JWT with this key (ES256), whatever they say.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        use p256::ecdsa::signature::Signer as _;
        let signed = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let signature: p256::ecdsa::Signature = self.key.sign(signed.as_bytes());
        format!("{signed}.{}", b64(&signature.to_bytes()))
    }

    /// The `Authorization` and `DPoP` headers of a request with `method` to `url` that uses
    /// `access_token`, bound to this key.
    pub fn headers(&self, method: &str, url: &str, access_token: &str) -> [(&'static str, String); 2] {
        [("authorization", format!("DPoP {access_token}")), ("dpop", self.proof(method, url, Some(access_token)))]
    }
}

/// Where to sign in, and as which client: a server's base URL (`http://127.0.0.1:port`) and one
/// of the OAuth2 clients registered there, with the client's DPoP key unless it uses bearer
/// tokens.
#[derive(Clone, Debug)]
pub struct Site {
    /// The server's base URL.
    pub base: String,
    /// The client's id.
    pub client_id: String,
    /// The client's registered redirect URI.
    pub redirect_uri: String,
    /// The client's DPoP key, which its tokens are bound to; `None`: bearer tokens.
    pub dpop: Option<Arc<DpopKey>>,
}

impl Site {
    /// The client `client_id`, redirected to `redirect_uri`, of the server at `base`, with a new
    /// DPoP key.
    pub fn new(base: &str, client_id: &str, redirect_uri: &str) -> Self {
        Self {
            base: base.to_owned(),
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            dpop: Some(Arc::new(DpopKey::generate())),
        }
    }

    /// The same client without a key: its token requests carry no proof, and it gets bearer
    /// tokens (if the server lets it: `token_binding = "bearer"`).
    pub fn bearer(base: &str, client_id: &str, redirect_uri: &str) -> Self {
        Self { dpop: None, ..Self::new(base, client_id, redirect_uri) }
    }

    /// A token request of this client: `form`, with a proof of its key when it has one.
    pub async fn token_request(&self, form: &[(&str, &str)]) -> reqwest::Response {
        let url = self.url("/oauth2/token");
        let mut request = browser().post(&url).form(form);
        if let Some(key) = &self.dpop {
            request = request.header("dpop", key.proof("POST", &url, None));
        }
        request.send().await.expect("token")
    }

    /// Exchanges `refresh_token` (which rotates) for new tokens.
    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        let form =
            [("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", self.client_id.as_str())];
        self.token_request(&form).await
    }

    /// `request` (to `url` with `method`) with `access_token`: as a DPoP-bound token with a proof
    /// when this client has a key, else as a bearer token.
    pub fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        method: &str,
        url: &str,
        access_token: &str,
    ) -> reqwest::RequestBuilder {
        match &self.dpop {
            Some(key) => key.headers(method, url, access_token).into_iter().fold(request, |r, (k, v)| r.header(k, v)),
            None => request.bearer_auth(access_token),
        }
    }

    /// The URL of `path` on the server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The authorization request of this client for `scope`, with the PKCE challenge of
    /// `verifier`, and `state` and `nonce`.
    pub fn authorize_url(&self, scope: &str, verifier: &str, state: &str, nonce: &str) -> String {
        let challenge = b64(&sha256(verifier.as_bytes()));
        let q = serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", self.client_id.as_str()),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("scope", scope),
            ("state", state),
            ("nonce", nonce),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .expect("query");
        self.url(&format!("/oauth2/authorize?{q}"))
    }

    /// Signs in with `username`, `password` and `totp_code` for `scope`; the token response.
    pub async fn sign_in(&self, username: &str, password: &str, totp_code: &str, scope: &str) -> Value {
        CodeFlow::until_code(self, username, password, totp_code, scope).await.tokens().await
    }
}

/// A client that keeps cookies and does not follow redirects, as a browser's sign-in needs.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(Policy::none()).build().expect("client")
}

/// A [`browser`] whose requests a reverse proxy forwarded for `client` (`X-Forwarded-For`): the
/// server believes it only when the connection comes from one of `server.trusted_proxies`.
pub fn browser_at(client: std::net::IpAddr) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = reqwest::header::HeaderValue::from_str(&client.to_string()).expect("an address is a header value");
    headers.insert("x-forwarded-for", value);
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .default_headers(headers)
        .build()
        .expect("client")
}

/// The value of the hidden field `name` of a form in `page`.
pub fn hidden(page: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker)? + marker.len();
    let end = page[start..].find('"')?;
    Some(page[start..start + end].to_owned())
}

/// One authorization-code flow, in a browser of its own.
#[derive(Debug)]
pub struct CodeFlow {
    /// Where, and as which client.
    pub site: Site,
    /// The browser.
    pub http: reqwest::Client,
    /// The sign-in's transaction, from the login form.
    pub tx: String,
    /// The PKCE code verifier.
    pub verifier: String,
    /// The `state` sent, which must come back.
    pub state: String,
    /// The `nonce` sent, which the id token must carry.
    pub nonce: String,
    /// The authorization code, once there is one.
    pub code: Option<String>,
    /// The last page shown.
    pub page: String,
}

impl CodeFlow {
    /// Asks for authorization of `scope` and opens the login form.
    pub async fn begin(site: &Site, scope: &str) -> Self {
        Self::begin_in(site, scope, browser()).await
    }

    /// The same, in the browser `http` (e.g. one at another address, [`browser_at`]).
    pub async fn begin_in(site: &Site, scope: &str, http: reqwest::Client) -> Self {
        Self::begin_asking(site, scope, http, &[]).await
    }

    /// The same, with more parameters of the authorization request (`prompt`, `acr_values`, …).
    pub async fn begin_asking(site: &Site, scope: &str, http: reqwest::Client, more: &[(&str, &str)]) -> Self {
        let verifier = random_token(48);
        let state = random_token(8);
        let nonce = random_token(8);
        let mut url = site.authorize_url(scope, &verifier, &state, &nonce);
        for (name, value) in more {
            url.push_str(&serde_urlencoded::to_string([(name, value)]).map(|q| format!("&{q}")).expect("query"));
        }
        let response = http.get(url).send().await.expect("authorize");
        assert_eq!(response.status(), StatusCode::OK);
        let page = response.text().await.expect("page");
        let tx = hidden(&page, "tx").expect("login form has a tx field");
        Self { site: site.clone(), http, tx, verifier, state, nonce, code: None, page }
    }

    /// The sign-in up to its authorization code: `username` and `password`, then `totp_code`.
    pub async fn until_code(site: &Site, username: &str, password: &str, totp_code: &str, scope: &str) -> Self {
        let mut flow = Self::begin(site, scope).await;
        let page = flow.password(username, password).await;
        assert!(page.contains("Confirm it is you"), "second-factor page: {page}");
        let response = flow.second_factor(&[("code", totp_code)]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "redirect after the second factor");
        flow.code = Some(flow.code_from(&response));
        flow
    }

    /// Sends the password form; the page shown next.
    pub async fn password(&mut self, username: &str, password: &str) -> String {
        let response = self
            .http
            .post(self.site.url("/oauth2/login/password"))
            .form(&[("tx", self.tx.as_str()), ("username", username), ("password", password)])
            .send()
            .await
            .expect("password");
        self.page = response.text().await.expect("page");
        self.page.clone()
    }

    /// A whole sign-in attempt: `username` and `password`, then the TOTP code `code` on the
    /// second-factor page that follows either way; the page shown at the end (the verdict of a
    /// failed sign-in, or the body of the redirect that ends a good one).
    pub async fn attempt(&mut self, username: &str, password: &str, code: &str) -> String {
        let page = self.password(username, password).await;
        if !page.contains("name=\"code\"") {
            return page;
        }
        let response = self.second_factor(&[("code", code)]).await;
        self.page = response.text().await.expect("page");
        self.page.clone()
    }

    /// Sends the second-factor form with `fields`.
    pub async fn second_factor(&self, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut form: Vec<(&str, &str)> = vec![("tx", self.tx.as_str())];
        form.extend_from_slice(fields);
        self.http.post(self.site.url("/oauth2/login/second-factor")).form(&form).send().await.expect("second factor")
    }

    /// The authorization code of the redirect `response`, which goes to the client's redirect URI
    /// with the `state` sent.
    pub fn code_from(&self, response: &reqwest::Response) -> String {
        let location = response.headers().get("location").expect("location").to_str().expect("ascii");
        let url = reqwest::Url::parse(location).expect("url");
        let params: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert!(location.starts_with(&self.site.redirect_uri));
        assert_eq!(params.get("state"), Some(&self.state), "state comes back");
        params.get("code").expect("code").clone()
    }

    /// Exchanges the code for tokens with `verifier` (and a proof of the site's key, if any).
    pub async fn exchange(&self, verifier: &str) -> reqwest::Response {
        let code = self.code.as_deref().expect("a code");
        self.site
            .token_request(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", self.site.redirect_uri.as_str()),
                ("client_id", self.site.client_id.as_str()),
                ("code_verifier", verifier),
            ])
            .await
    }

    /// The token response of the code, exchanged with the flow's own verifier.
    pub async fn tokens(&self) -> Value {
        let response = self.exchange(&self.verifier).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("token json")
    }
}
