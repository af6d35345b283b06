//! `BpClient`, the SDK's inner async client: discovery, sign-in for native apps (RFC 8252:
//! authorization code with PKCE in the system browser, `state`, `nonce`, `iss`), DPoP-bound
//! tokens kept in the app's `TokenStore`, refresh with rotation (one at a time), sign-out, and
//! the authorized requests every use case goes through. It speaks the v1 API with bp-core's
//! wire types and knows nothing of UniFFI: the exported layer (`lib.rs`) wraps it.

#![forbid(unsafe_code)]

use std::time::Duration;

use bp_core::api::{Problem, TokenResponse};
use reqwest::{Method, StatusCode, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::host::Host;
use crate::keys::{DpopKey, now_s, pkce, random_token};

/// The scopes the SDK asks for: the profile, accounts, payments and a refresh token.
pub const DEFAULT_SCOPE: &str = "openid profile accounts payments offline_access";
/// How long before its expiry an access token is refreshed, so it does not expire in flight.
const REFRESH_MARGIN_S: u64 = 30;
/// Connecting to the server.
const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// One request, its answer included (not the event stream's).
const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Largest answer read (a photo is the largest; the server's own limit is lower).
pub(crate) const BODY_LEN_MAX: usize = 8 * 1024 * 1024;
/// Leeway for the id token's times against the phone's clock.
const CLOCK_LEEWAY_S: u64 = 60;

/// Where the SDK signs in and what it asks for.
#[derive(Clone, Debug, uniffi::Record)]
pub struct ClientConfig {
    /// The bank's base URL (`https://bank.example`), the OAuth2 issuer.
    pub base_url: String,
    /// The app's OAuth2 client id (`bp-mobile`).
    pub client_id: String,
    /// The app's registered redirect URI (`bp.mobile://oauth/callback`: a private-use scheme,
    /// RFC 8252 §7.1, or an https App Link / Universal Link).
    pub redirect_uri: String,
    /// Scopes, space-separated; `None` for [`DEFAULT_SCOPE`].
    pub scope: Option<String>,
}

/// The issuer's OpenID configuration: the endpoints the SDK uses.
#[derive(Clone, Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    revocation_endpoint: Option<String>,
}

/// A sign-in waiting for the browser to come back.
struct PendingSignIn {
    state: String,
    nonce: String,
    verifier: String,
}

/// The signed-in session, as the `TokenStore` keeps it.
#[derive(Clone, Serialize, Deserialize)]
struct Session {
    access_token: String,
    refresh_token: Option<String>,
    expires_at_s: u64,
    customer_id: String,
}

impl Session {
    fn of(tokens: TokenResponse, customer_id: String) -> Self {
        Self {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            expires_at_s: now_s().saturating_add(tokens.expires_in),
            customer_id,
        }
    }
}

/// A request body: JSON, or a form (the token and revocation endpoints).
pub(crate) enum Body<'a> {
    None,
    Json(&'a serde_json::Value),
}

/// The SDK's client of one bank.
pub struct BpClient {
    base: String,
    config: ClientConfig,
    http: reqwest::Client,
    /// Event streams: a connection of their own each (what the server serves leanest) and no
    /// overall timeout.
    stream_http: reqwest::Client,
    pub(crate) host: Host,
    dpop: DpopKey,
    discovery: tokio::sync::OnceCell<Discovery>,
    pending: std::sync::Mutex<Option<PendingSignIn>>,
    /// The session in memory; its lock is held through a refresh, so there is one at a time.
    session: tokio::sync::Mutex<Option<Session>>,
    /// The server's latest DPoP nonce, when it asks for them.
    nonce: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for BpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BpClient").field("base", &self.base).finish_non_exhaustive()
    }
}

impl BpClient {
    /// A client of the bank at `config.base_url`, with the app's handles. Nothing is sent yet.
    pub(crate) fn new(config: ClientConfig, host: Host) -> Result<Self, Error> {
        let url = url::Url::parse(&config.base_url)
            .map_err(|_| Error::Invalid { field: "base_url", reason: "not a URL".to_owned() })?;
        if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
            return Err(Error::Invalid { field: "base_url", reason: "must be an http(s) URL".to_owned() });
        }
        url::Url::parse(&config.redirect_uri)
            .map_err(|_| Error::Invalid { field: "redirect_uri", reason: "not a URL".to_owned() })?;
        let build = |builder: reqwest::ClientBuilder| {
            builder
                .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(Error::Network)
        };
        let http = build(reqwest::Client::builder().timeout(Duration::from_millis(REQUEST_TIMEOUT_MS)))?;
        let stream_http = build(reqwest::Client::builder().pool_max_idle_per_host(0))?;
        let dpop = DpopKey::new(host.dpop_key.clone());
        Ok(Self {
            base: config.base_url.trim_end_matches('/').to_owned(),
            config,
            http,
            stream_http,
            host,
            dpop,
            discovery: tokio::sync::OnceCell::new(),
            pending: std::sync::Mutex::new(None),
            session: tokio::sync::Mutex::new(None),
            nonce: std::sync::Mutex::new(None),
        })
    }

    /// The URL of `path` on the bank's server.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn discovery(&self) -> Result<&Discovery, Error> {
        self.discovery
            .get_or_try_init(|| async {
                let response = self.http.get(self.url("/.well-known/openid-configuration")).send().await;
                let found: Discovery = read_json(response.map_err(net)?).await?;
                if found.issuer.trim_end_matches('/') != self.base {
                    return Err(Error::SignIn("the server names another issuer than its URL"));
                }
                Ok(found)
            })
            .await
    }

    // ----- sign-in -----

    /// The authorization URL to open in the system browser (Custom Tabs, ASWebAuthenticationSession),
    /// with a fresh PKCE verifier, `state` and `nonce` kept for [`BpClient::complete_sign_in`]. A
    /// second call replaces the first sign-in's secrets.
    pub(crate) async fn begin_sign_in(&self) -> Result<String, Error> {
        let endpoint = self.discovery().await?.authorization_endpoint.clone();
        let (verifier, challenge) = pkce();
        let (state, nonce) = (random_token(16), random_token(16));
        let mut url = url::Url::parse(&endpoint).map_err(|_| Error::Decode("authorization endpoint".to_owned()))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.config.redirect_uri)
            .append_pair("scope", self.config.scope.as_deref().unwrap_or(DEFAULT_SCOPE))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        *self.pending.lock().expect("pending sign-in lock") = Some(PendingSignIn { state, nonce, verifier });
        Ok(url.into())
    }

    /// Completes the sign-in from the URL the browser redirected to: checks that it answers our
    /// request (`state`) from our issuer (`iss`, RFC 9207), exchanges the code with the PKCE
    /// verifier for DPoP-bound tokens, verifies the id token (signature against the JWKS,
    /// issuer, audience, expiry, `nonce`) and saves the session. Returns the customer's id.
    pub(crate) async fn complete_sign_in(&self, redirect_url: &str) -> Result<String, Error> {
        let url = url::Url::parse(redirect_url).map_err(|_| Error::SignIn("the redirect is not a URL"))?;
        let expected = url::Url::parse(&self.config.redirect_uri).map_err(|_| Error::SignIn("redirect URI"))?;
        if (url.scheme(), url.host_str(), url.path()) != (expected.scheme(), expected.host_str(), expected.path()) {
            return Err(Error::SignIn("the redirect is not to this app's redirect URI"));
        }
        let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
        let discovery = self.discovery().await?;
        // The pending sign-in is spent whatever happens: a redirect is answered once.
        let pending =
            self.pending.lock().expect("pending sign-in lock").take().ok_or(Error::SignIn("no sign-in in progress"))?;
        if param("state").as_deref() != Some(pending.state.as_str()) {
            return Err(Error::SignIn("the redirect's state is not this sign-in's"));
        }
        if param("iss").as_deref() != Some(discovery.issuer.as_str()) {
            return Err(Error::SignIn("the redirect is not from this bank's issuer"));
        }
        if param("error").is_some() {
            return Err(Error::SignIn("the bank refused the sign-in"));
        }
        let code = param("code").ok_or(Error::SignIn("the redirect has no code"))?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", self.config.redirect_uri.as_str()),
            ("client_id", self.config.client_id.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ];
        let tokens = self.token_request(&form).await?;
        let id_token = tokens.id_token.as_deref().ok_or_else(|| Error::IdToken("none was issued".to_owned()))?;
        let customer_id = self.verify_id_token(id_token, &pending.nonce).await?;
        let session = Session::of(tokens, customer_id.clone());
        let mut current = self.session.lock().await;
        self.save(&session)?;
        *current = Some(session);
        Ok(customer_id)
    }

    /// The id token's subject, once its signature, issuer, audience, times and nonce check out.
    async fn verify_id_token(&self, id_token: &str, nonce: &str) -> Result<String, Error> {
        use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
        let discovery = self.discovery().await?;
        let jwks: JwkSet = read_json(self.http.get(&discovery.jwks_uri).send().await.map_err(net)?).await?;
        let header = jsonwebtoken::decode_header(id_token).map_err(|_| Error::IdToken("malformed".to_owned()))?;
        if header.alg != Algorithm::EdDSA && header.alg != Algorithm::ES256 {
            return Err(Error::IdToken("an algorithm the SDK does not accept".to_owned()));
        }
        let kid = header.kid.ok_or_else(|| Error::IdToken("no kid".to_owned()))?;
        let jwk = jwks.find(&kid).ok_or_else(|| Error::IdToken("signed by an unknown key".to_owned()))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| Error::IdToken("unusable key".to_owned()))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&discovery.issuer]);
        validation.set_audience(&[&self.config.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = CLOCK_LEEWAY_S;
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(id_token, &key, &validation)
            .map_err(|e| Error::IdToken(e.to_string()))?
            .claims;
        if claims.get("nonce").and_then(|n| n.as_str()) != Some(nonce) {
            return Err(Error::IdToken("the nonce is not this sign-in's".to_owned()));
        }
        claims.get("sub").and_then(|s| s.as_str()).map(str::to_owned).ok_or_else(|| Error::IdToken("no sub".to_owned()))
    }

    /// A request to the token endpoint with a DPoP proof (once more with the server's nonce if
    /// it asks for one).
    async fn token_request(&self, form: &[(&str, &str)]) -> Result<TokenResponse, Error> {
        let endpoint = self.discovery().await?.token_endpoint.clone();
        for _ in 0..2 {
            let nonce = self.nonce.lock().expect("nonce lock").clone();
            let proof = self.dpop.proof("POST", &endpoint, None, nonce.as_deref())?;
            let response = self.http.post(&endpoint).header("dpop", proof).form(form).send().await.map_err(net)?;
            self.keep_nonce(response.headers());
            if response.status().is_success() {
                let tokens: TokenResponse = read_json(response).await?;
                if !tokens.token_type.eq_ignore_ascii_case("DPoP") {
                    return Err(Error::OAuth("the tokens are not bound to the device's key".to_owned()));
                }
                return Ok(tokens);
            }
            let status = response.status();
            let body: serde_json::Value = read_json(response).await.unwrap_or_default();
            let error = body["error"].as_str().unwrap_or("unknown").to_owned();
            if error == "use_dpop_nonce" {
                continue;
            }
            return Err(match (status, error.as_str()) {
                (_, "invalid_grant") => Error::SignedOut,
                (StatusCode::TOO_MANY_REQUESTS, _) => Error::Status(429),
                (s, _) if s.is_server_error() => Error::Status(s.as_u16()),
                _ => Error::OAuth(error),
            });
        }
        Err(Error::OAuth("use_dpop_nonce".to_owned()))
    }

    fn keep_nonce(&self, headers: &header::HeaderMap) {
        if let Some(nonce) = headers.get("dpop-nonce").and_then(|v| v.to_str().ok()) {
            *self.nonce.lock().expect("nonce lock") = Some(nonce.to_owned());
        }
    }

    fn save(&self, session: &Session) -> Result<(), Error> {
        let text = serde_json::to_string(session).map_err(|e| Error::Corrupt(e.to_string()))?;
        Ok(self.host.tokens.save(text)?)
    }

    /// Forgets the session here and in the app's store.
    fn forget(&self, current: &mut Option<Session>) -> Result<(), Error> {
        *current = None;
        Ok(self.host.tokens.clear()?)
    }

    /// Loads the saved session into `current` when it is not there yet.
    fn load(&self, current: &mut Option<Session>) -> Result<(), Error> {
        if current.is_none() {
            if let Some(text) = self.host.tokens.load()? {
                let session: Session =
                    serde_json::from_str(&text).map_err(|_| Error::Corrupt("the saved session".to_owned()))?;
                *current = Some(session);
            }
        }
        Ok(())
    }

    /// Whether a session is saved (the app may skip the sign-in screen).
    pub(crate) async fn is_signed_in(&self) -> Result<bool, Error> {
        let mut current = self.session.lock().await;
        self.load(&mut current)?;
        Ok(current.is_some())
    }

    /// The signed-in customer's id.
    pub(crate) async fn customer_id(&self) -> Result<String, Error> {
        let mut current = self.session.lock().await;
        self.load(&mut current)?;
        current.as_ref().map(|s| s.customer_id.clone()).ok_or(Error::SignedOut)
    }

    /// A usable access token: the saved one, or a refreshed one when it expires within
    /// [`REFRESH_MARGIN_S`] or when `refused` is the token the server just refused. Callers wait
    /// on the session's lock while one of them refreshes, then use its result.
    async fn access_token(&self, refused: Option<&str>) -> Result<String, Error> {
        let mut current = self.session.lock().await;
        self.load(&mut current)?;
        let session = current.as_ref().ok_or(Error::SignedOut)?;
        let stale = refused.is_some_and(|t| t == session.access_token);
        if !stale && session.expires_at_s > now_s().saturating_add(REFRESH_MARGIN_S) {
            return Ok(session.access_token.clone());
        }
        let Some(refresh_token) = session.refresh_token.clone() else {
            self.forget(&mut current)?;
            return Err(Error::SignedOut);
        };
        let customer_id = session.customer_id.clone();
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.as_str()),
            ("client_id", self.config.client_id.as_str()),
        ];
        match self.token_request(&form).await {
            Ok(tokens) => {
                // Rotation: the new refresh token replaces the old one, which is now spent.
                let mut next = Session::of(tokens, customer_id);
                next.refresh_token = next.refresh_token.or(Some(refresh_token));
                self.save(&next)?;
                let token = next.access_token.clone();
                *current = Some(next);
                Ok(token)
            }
            Err(Error::SignedOut) => {
                self.forget(&mut current)?;
                Err(Error::SignedOut)
            }
            Err(e) => Err(e),
        }
    }

    /// Refreshes now, whatever the access token's expiry (for tests and for an app that wants
    /// fresh scopes); returns nothing secret.
    pub(crate) async fn refresh_now(&self) -> Result<(), Error> {
        let token = self.access_token(None).await?;
        self.access_token(Some(&token)).await.map(|_| ())
    }

    /// Signs out: revokes the refresh token (which ends the whole session at the server, its
    /// access tokens and streams included) and forgets the session here. The session is
    /// forgotten even when the revocation could not be sent; that error is returned then.
    pub(crate) async fn sign_out(&self) -> Result<(), Error> {
        let mut current = self.session.lock().await;
        self.load(&mut current)?;
        let Some(session) = current.clone() else { return Ok(()) };
        let revoked = self.revoke(session.refresh_token.as_deref().unwrap_or(&session.access_token)).await;
        self.forget(&mut current)?;
        revoked
    }

    async fn revoke(&self, token: &str) -> Result<(), Error> {
        let discovery = self.discovery().await?;
        let endpoint = discovery.revocation_endpoint.clone().unwrap_or_else(|| self.url("/oauth2/revoke"));
        let form = [("token", token), ("client_id", self.config.client_id.as_str())];
        let response = self.http.post(endpoint).form(&form).send().await.map_err(net)?;
        match response.status() {
            s if s.is_success() => Ok(()),
            s => Err(Error::Status(s.as_u16())),
        }
    }

    // ----- authorized requests -----

    /// Sends `method` `path` with the access token and a fresh DPoP proof. A refused token is
    /// refreshed and the request sent once more (so is one that needs the server's DPoP nonce);
    /// an error status becomes [`Error::Problem`].
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
        idempotency_key: Option<&str>,
    ) -> Result<reqwest::Response, Error> {
        let url = self.url(path);
        let mut refused: Option<String> = None;
        for attempt in 0..2 {
            let token = self.access_token(refused.as_deref()).await?;
            let request = self.authorized(&self.http, method.clone(), &url, &token)?;
            let request = match body {
                Body::None => request,
                Body::Json(value) => request.header(header::CONTENT_TYPE, "application/json").body(value.to_string()),
            };
            let request = match idempotency_key {
                Some(key) => request.header("idempotency-key", key),
                None => request,
            };
            let response = request.send().await.map_err(net)?;
            self.keep_nonce(response.headers());
            if response.status().is_success() {
                return Ok(response);
            }
            let error = problem_of(response).await;
            let retry = match error.problem_slug() {
                Some("use-dpop-nonce") => true,
                Some("unauthorized" | "invalid-dpop-proof") => {
                    refused = Some(token);
                    true
                }
                _ => false,
            };
            if !retry || attempt == 1 {
                return Err(error);
            }
        }
        Err(Error::SignedOut)
    }

    /// `request` with `Authorization: DPoP` and its proof.
    fn authorized(
        &self,
        http: &reqwest::Client,
        method: Method,
        url: &str,
        token: &str,
    ) -> Result<reqwest::RequestBuilder, Error> {
        let nonce = self.nonce.lock().expect("nonce lock").clone();
        let proof = self.dpop.proof(method.as_str(), url, Some(token), nonce.as_deref())?;
        Ok(http.request(method, url).header(header::AUTHORIZATION, format!("DPoP {token}")).header("dpop", proof))
    }

    /// Opens the event stream (`GET /v1/events`) on a connection of its own, resuming after
    /// `last_event_id`.
    pub(crate) async fn open_stream(&self, last_event_id: Option<&str>) -> Result<reqwest::Response, Error> {
        let url = self.url("/v1/events");
        let mut refused: Option<String> = None;
        for attempt in 0..2 {
            let token = self.access_token(refused.as_deref()).await?;
            let mut request = self.authorized(&self.stream_http, Method::GET, &url, &token)?;
            request = request.header(header::ACCEPT, "text/event-stream");
            if let Some(id) = last_event_id {
                request = request.header("last-event-id", id);
            }
            let response = request.send().await.map_err(net)?;
            if response.status().is_success() {
                return Ok(response);
            }
            let error = problem_of(response).await;
            if attempt == 1 || !matches!(error.problem_slug(), Some("unauthorized" | "invalid-dpop-proof")) {
                return Err(error);
            }
            refused = Some(token);
        }
        Err(Error::SignedOut)
    }

    /// `GET path` as `T`.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        read_json(self.send(Method::GET, path, Body::None, None).await?).await
    }

    /// `POST path` with `body` (and the idempotency key, for a payment) as `T`.
    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
        idempotency_key: Option<&str>,
    ) -> Result<T, Error> {
        read_json(self.send(Method::POST, path, Body::Json(body), idempotency_key).await?).await
    }
}

/// A network error, without its URL (which may hold a query the SDK does not log).
pub(crate) fn net(e: reqwest::Error) -> Error {
    Error::Network(e.without_url())
}

/// The body of `response`, at most [`BODY_LEN_MAX`] bytes.
pub(crate) async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(net)? {
        if body.len() + chunk.len() > BODY_LEN_MAX {
            return Err(Error::Decode(format!("an answer larger than {BODY_LEN_MAX} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The JSON body of `response` as `T`.
pub(crate) async fn read_json<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, Error> {
    let status = response.status();
    if !status.is_success() {
        return Err(problem_of(response).await);
    }
    let body = read_body(response).await?;
    serde_json::from_slice(&body)
        .map_err(|e| Error::Decode(format!("{} at line {} column {}", e.classify_name(), e.line(), e.column())))
}

/// The error of an error answer: its problem document, or its status.
pub(crate) async fn problem_of(response: reqwest::Response) -> Error {
    let status = response.status().as_u16();
    let retry_after_s =
        response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    match read_body(response).await {
        Ok(body) => match serde_json::from_slice::<Problem>(&body) {
            Ok(problem) => Error::Problem { problem: Box::new(problem), retry_after_s },
            Err(_) => Error::Status(status),
        },
        Err(e) => e,
    }
}

/// What kind of serde_json error, in words without the input.
trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "not the expected shape",
            serde_json::error::Category::Eof => "cut short",
        }
    }
}
