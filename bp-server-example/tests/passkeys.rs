//! Passkeys over real HTTP, with a software authenticator written here (a P-256 key, `none`
//! attestation, assertions signed as an authenticator signs them): registration needs a recent
//! sign-in and user verification, forged, foreign and replayed credentials are refused with a
//! problem and nothing stored, the bounds hold, and a customer signs in with username and passkey
//! alone — and no longer once the passkey is removed, or from another origin.
//!
//! The server is reached as `http://localhost:PORT` (WebAuthn needs a domain name for its RP ID;
//! localhost is one, and a secure context for browsers).

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bp_core::security::{AuditKind, PASSKEYS_MAX};
use bp_server_example::config::Config;
use bp_server_example::testkit::{CodeFlow, Site, hidden};
use common::{Api, CLIENT, REDIRECT, Server, assert_problem};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{DerSignature, SigningKey};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ALL: &str = "openid profile accounts payments offline_access";
const REFUSED: &str = "That passkey was not accepted for this username.";

/// A server reached as `http://localhost:PORT` (its RP ID `localhost`), `adjust`ed.
async fn localhost_server(adjust: impl FnOnce(&mut Config)) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let mut server = Server::start_with(|c| {
        c.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        c.server.public_url = Some(format!("http://localhost:{port}"));
        adjust(c);
    })
    .await;
    server.base = format!("http://localhost:{port}");
    server.site = Site::new(&server.base, CLIENT, REDIRECT);
    server
}

/// Makes an assertion answering the sign-in options given.
type MakeAssertion<'a> = Box<dyn FnOnce(&Value) -> Value + 'a>;
fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).expect("base64url")
}

/// CBOR (RFC 8949) head of major type `major` with argument `n`.
fn cbor_head(major: u8, n: usize) -> Vec<u8> {
    let m = major << 5;
    match n {
        0..=23 => vec![m | u8::try_from(n).unwrap_or(0)],
        24..=255 => vec![m | 24, u8::try_from(n).unwrap_or(0)],
        _ => {
            let [hi, lo] = u16::try_from(n).expect("short").to_be_bytes();
            vec![m | 25, hi, lo]
        }
    }
}

fn cbor_bytes(b: &[u8]) -> Vec<u8> {
    [cbor_head(2, b.len()), b.to_vec()].concat()
}

fn cbor_text(t: &str) -> Vec<u8> {
    [cbor_head(3, t.len()), t.as_bytes().to_vec()].concat()
}

/// A software authenticator holding one P-256 credential, for the RP ID `localhost`.
struct SoftKey {
    key: SigningKey,
    credential_id: Vec<u8>,
    user_handle: Vec<u8>,
    counter: u32,
}

/// Authenticator data flags.
const UP: u8 = 0x01;
const UV: u8 = 0x04;
const AT: u8 = 0x40;

impl SoftKey {
    fn new() -> Self {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let credential_id = uuid::Uuid::now_v7().as_bytes().to_vec();
        Self { key, credential_id, user_handle: Vec::new(), counter: 0 }
    }

    fn auth_data(&mut self, rp_id: &str, flags: u8) -> Vec<u8> {
        self.counter += 1;
        [Sha256::digest(rp_id.as_bytes()).to_vec(), vec![flags], self.counter.to_be_bytes().to_vec()].concat()
    }

    /// The credential `navigator.credentials.create` would give for `options`, made on `origin`
    /// with the authenticator data `flags`.
    fn create(&mut self, options: &Value, origin: &str, flags: u8) -> Value {
        let pk = &options["publicKey"];
        self.user_handle = unb64(pk["user"]["id"].as_str().expect("user id"));
        let client_data = json!({
            "type": "webauthn.create", "challenge": pk["challenge"], "origin": origin, "crossOrigin": false,
        })
        .to_string();
        let point = self.key.verifying_key().to_encoded_point(false);
        let cose_key = [
            vec![0xa5],
            vec![0x01, 0x02], // kty: EC2
            vec![0x03, 0x26], // alg: ES256 (-7)
            vec![0x20, 0x01], // crv: P-256
            vec![0x21],       // x
            cbor_bytes(point.x().expect("x")),
            vec![0x22], // y
            cbor_bytes(point.y().expect("y")),
        ]
        .concat();
        let rp_id = pk["rp"]["id"].as_str().expect("rp id").to_owned();
        let id_len = u16::try_from(self.credential_id.len()).expect("short").to_be_bytes().to_vec();
        let auth_data =
            [self.auth_data(&rp_id, flags | AT), vec![0; 16], id_len, self.credential_id.clone(), cose_key].concat();
        let attestation = [
            vec![0xa3],
            cbor_text("fmt"),
            cbor_text("none"),
            cbor_text("attStmt"),
            vec![0xa0],
            cbor_text("authData"),
            cbor_bytes(&auth_data),
        ]
        .concat();
        json!({
            "id": b64(&self.credential_id), "rawId": b64(&self.credential_id), "type": "public-key",
            "response": { "clientDataJSON": b64(client_data.as_bytes()), "attestationObject": b64(&attestation) },
            "extensions": {},
        })
    }

    /// The assertion `navigator.credentials.get` would give for `options` on `origin`.
    fn get(&mut self, options: &Value, origin: &str, rp_id: &str, flags: u8) -> Value {
        let client_data = json!({
            "type": "webauthn.get", "challenge": options["publicKey"]["challenge"], "origin": origin,
            "crossOrigin": false,
        })
        .to_string();
        let auth_data = self.auth_data(rp_id, flags);
        let signed = [auth_data.clone(), Sha256::digest(client_data.as_bytes()).to_vec()].concat();
        let signature: DerSignature = self.key.sign(&signed);
        json!({
            "id": b64(&self.credential_id), "rawId": b64(&self.credential_id), "type": "public-key",
            "response": {
                "clientDataJSON": b64(client_data.as_bytes()), "authenticatorData": b64(&auth_data),
                "signature": b64(signature.as_bytes()), "userHandle": b64(&self.user_handle),
            },
            "extensions": {},
        })
    }
}

/// Registers `key` as `name` for the customer of `api`; the confirmation's status and body.
async fn register(api: &Api, server: &Server, key: &mut SoftKey, name: &str) -> (StatusCode, Value) {
    let (status, begun) = api.post("/v1/passkeys", &json!({ "name": name }), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{begun}");
    let credential = key.create(&begun["options"], &server.base, UP | UV);
    api.post(&format!("/v1/passkeys/{}/confirm", begun["id"].as_str().expect("id")), &credential, None).await
}

/// A passkey sign-in on a new sign-in page: the options for `username`, then `answer` of them
/// posted; the response (a redirect with a code, or the page again).
async fn passkey_sign_in(
    server: &Server,
    username: &str,
    answer: impl FnOnce(&Value) -> Value,
) -> (CodeFlow, reqwest::Response) {
    passkey_sign_in_asking(server, &[], username, answer).await
}

/// The same, the authorization request with the parameters `more` (`acr_values`, …).
async fn passkey_sign_in_asking(
    server: &Server,
    more: &[(&str, &str)],
    username: &str,
    answer: impl FnOnce(&Value) -> Value,
) -> (CodeFlow, reqwest::Response) {
    let flow = CodeFlow::begin_asking(&server.site, ALL, bp_server_example::testkit::browser(), more).await;
    assert!(flow.page.contains("passkey-button") && flow.page.contains("/app/js/signin-passkey.js"), "{}", flow.page);
    let options = flow
        .http
        .post(server.url("/oauth2/login/passkey/options"))
        .form(&[("tx", flow.tx.as_str()), ("username", username)])
        .send()
        .await
        .expect("options");
    assert_eq!(options.status(), StatusCode::OK);
    let options: Value = options.json().await.expect("json");
    let credential = answer(&options).to_string();
    let response = flow
        .http
        .post(server.url("/oauth2/login/passkey"))
        .form(&[("tx", flow.tx.as_str()), ("credential", credential.as_str())])
        .send()
        .await
        .expect("sign in");
    (flow, response)
}

async fn audits(server: &Server, kind: AuditKind) -> usize {
    server.state.security.audit_after(0, 1000).await.expect("audit").iter().filter(|e| e.kind == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_registers_a_passkey_signs_in_with_it_alone_and_not_once_it_is_removed() {
    let mut server = localhost_server(|_| {}).await;
    let ada = server.customer("ada-passkey", 10_000, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let mut key = SoftKey::new();

    let (status, begun) = api.post("/v1/passkeys", &json!({ "name": "Laptop" }), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{begun}");
    let pk = &begun["options"]["publicKey"];
    assert_eq!(pk["rp"]["id"], "localhost");
    assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");
    assert_eq!(pk["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(unb64(pk["user"]["id"].as_str().expect("user id")), ada.id.as_uuid().as_bytes());
    let credential = key.create(&begun["options"], &server.base, UP | UV);
    let (status, view) =
        api.post(&format!("/v1/passkeys/{}/confirm", begun["id"].as_str().expect("id")), &credential, None).await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    assert_eq!(view["name"], "Laptop");
    assert_eq!(audits(&server, AuditKind::PasskeyAdded).await, 1);
    // A second registration excludes the first credential.
    let (_, again) = api.post("/v1/passkeys", &json!({ "name": "Phone" }), None).await;
    let excluded = &again["options"]["publicKey"]["excludeCredentials"];
    assert_eq!(excluded[0]["id"].as_str().map(unb64), Some(key.credential_id.clone()), "{excluded}");

    // Username and passkey alone: a code, tokens with `hwk` and `mfa`, and payments allowed.
    let origin = server.base.clone();
    let (mut flow, response) =
        passkey_sign_in(&server, "ada-passkey", |o| key.get(o, &origin, "localhost", UP | UV)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{}", response.text().await.unwrap_or_default());
    flow.code = Some(flow.code_from(&response));
    let tokens = flow.tokens().await;
    let claims = tokens["access_token"].as_str().expect("at").split('.').nth(1).map(unb64).expect("claims");
    let claims: Value = serde_json::from_slice(&claims).expect("json");
    assert_eq!(claims["amr"], json!(["hwk", "mfa"]));
    assert_eq!(claims["acr"], "urn:bp:acr:phr", "a passkey is phishing-resistant");
    let passkey_api = Api::new(&server, &tokens);
    assert_eq!(passkey_api.get("/v1/accounts").await.0, StatusCode::OK);
    let (status, list) = passkey_api.get("/v1/passkeys").await;
    assert_eq!(status, StatusCode::OK, "a payments route: {list}");
    assert!(list["passkeys"][0]["last_used_at"].is_string(), "its use recorded: {list}");

    // A client asking for a phishing-resistant sign-in gets one from the passkey.
    let phr = [("acr_values", "urn:bp:acr:phr")];
    let (flow, response) =
        passkey_sign_in_asking(&server, &phr, "ada-passkey", |o| key.get(o, &origin, "localhost", UP | UV)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(flow.code_from(&response).len() > 20, "a code for the phr request");

    // Removed (from a recent sign-in): the passkey signs no one in.
    let id = view["id"].as_str().expect("id");
    assert_eq!(api.delete(&format!("/v1/passkeys/{id}")).await.0, StatusCode::NO_CONTENT);
    assert_eq!(audits(&server, AuditKind::PasskeyRemoved).await, 1);
    let (_, response) = passkey_sign_in(&server, "ada-passkey", |o| key.get(o, &origin, "localhost", UP | UV)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.expect("page").contains(REFUSED));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_from_another_origin_without_verification_or_for_another_username_are_refused_alike() {
    let mut server = localhost_server(|_| {}).await;
    let ada = server.customer("ada-pk-refused", 0, 0).await;
    let _bob = server.customer("bob-pk-refused", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let mut key = SoftKey::new();
    assert_eq!(register(&api, &server, &mut key, "Laptop").await.0, StatusCode::CREATED);
    let origin = server.base.clone();

    // Options tell nothing about a username: no credential list for anyone.
    let options = |username: &'static str| {
        let server = &server;
        async move {
            let flow = CodeFlow::begin(&server.site, ALL).await;
            let r = flow
                .http
                .post(server.url("/oauth2/login/passkey/options"))
                .form(&[("tx", flow.tx.as_str()), ("username", username)])
                .send()
                .await
                .expect("options");
            r.json::<Value>().await.expect("json")
        }
    };
    let shape = |o: &Value| {
        let mut pk = o["publicKey"].clone();
        pk["challenge"] = Value::Null;
        pk
    };
    let (known, unknown, without) =
        (options("ada-pk-refused").await, options("nobody").await, options("bob-pk-refused").await);
    assert_eq!(shape(&known), shape(&unknown));
    assert_eq!(shape(&known), shape(&without));
    assert_eq!(known["publicKey"]["userVerification"], "required");
    assert!(
        known["publicKey"].get("allowCredentials").is_none_or(|a| a.as_array().is_some_and(Vec::is_empty)),
        "{known}"
    );

    let failures_before = audits(&server, AuditKind::SecondFactorFailed).await;
    let cases: Vec<(&str, MakeAssertion<'_>)> = vec![
        (
            "another origin",
            Box::new(|o: &Value| clone_key(&key, 1000).get(o, "http://evil.localhost:1", "localhost", UP | UV)),
        ),
        ("another RP ID", Box::new(|o: &Value| clone_key(&key, 1000).get(o, &origin, "evil.example", UP | UV))),
        ("no user verification", Box::new(|o: &Value| clone_key(&key, 1000).get(o, &origin, "localhost", UP))),
        (
            "a counter gone back (a cloned authenticator)",
            Box::new(|o: &Value| clone_key(&key, 0).get(o, &origin, "localhost", UP | UV)),
        ),
        ("forged JSON", Box::new(|_: &Value| json!({ "id": "AAAA", "type": "public-key" }))),
        (
            "another key with the same id",
            Box::new(|o: &Value| {
                let mut other = SoftKey::new();
                other.credential_id.clone_from(&key.credential_id);
                other.get(o, &origin, "localhost", UP | UV)
            }),
        ),
    ];
    for (case, answer) in cases {
        let (_, response) = passkey_sign_in(&server, "ada-pk-refused", answer).await;
        assert_eq!(response.status(), StatusCode::OK, "{case}");
        assert!(response.text().await.expect("page").contains(REFUSED), "{case}");
    }
    // Only the answer that needed the authenticator's key (a valid signature, its counter gone
    // back) counts against the customer: anyone could send the others.
    let counted = server.state.security.security_state(ada.id).await.expect("state").failures;
    assert_eq!(counted, 1, "the one refusal only the authenticator's holder could cause");
    assert!(audits(&server, AuditKind::SecondFactorFailed).await > failures_before);
    // Ada's passkey for bob, and an unknown username: the same page.
    for username in ["bob-pk-refused", "nobody"] {
        let (_, response) =
            passkey_sign_in(&server, username, |o| clone_key(&key, 1000).get(o, &origin, "localhost", UP | UV)).await;
        assert!(response.text().await.expect("page").contains(REFUSED), "{username}");
    }
    // The refusals counted against (username, this address), as wrong passwords do: it is paused,
    // so that even the right passkey is refused from here for now.
    let paused = server
        .state
        .security
        .audit_after(0, 1000)
        .await
        .expect("audit")
        .into_iter()
        .any(|e| e.kind == AuditKind::LockedOut && e.detail.get("scope") == Some(&json!("username_and_source")));
    assert!(paused, "the (username, source) pair is locked");
    let (_, response) = passkey_sign_in(&server, "ada-pk-refused", |o| key.get(o, &origin, "localhost", UP | UV)).await;
    assert!(response.text().await.expect("page").contains(REFUSED), "throttled");
    server.stop().await;
}

/// A copy of `key` whose counter is `ahead` of it: the original still signs in after a copy's
/// refused assertions; a copy with 0 signs with a counter that went back.
fn clone_key(key: &SoftKey, ahead: u32) -> SoftKey {
    let counter = if ahead == 0 { 0 } else { key.counter + ahead };
    SoftKey {
        key: key.key.clone(),
        credential_id: key.credential_id.clone(),
        user_handle: key.user_handle.clone(),
        counter,
    }
}

/// Begins a registration with `api`; the 202's body.
async fn begin(api: &Api) -> Value {
    let (status, begun) = api.post("/v1/passkeys", &json!({ "name": "Key" }), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{begun}");
    begun
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registrations_are_problems_that_store_nothing() {
    let mut server = localhost_server(|_| {}).await;
    let ada = server.customer("ada-pk-bad", 0, 0).await;
    let bob = server.customer("bob-pk-bad", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let bob_api = Api::new(&server, &server.login(&bob, ALL).await);
    let confirm = |begun: &Value| format!("/v1/passkeys/{}/confirm", begun["id"].as_str().expect("id"));
    let origin = server.base.clone();

    let mut key = SoftKey::new();
    for (case, flags, at) in
        [("no user verification", UP, origin.as_str()), ("another origin", UP | UV, "http://127.0.0.1:1")]
    {
        let begun = begin(&api).await;
        let credential = key.create(&begun["options"], at, flags);
        let (status, body) = api.post(&confirm(&begun), &credential, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{case}: {body}");
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "passkey-refused");
        // Spent by that answer.
        let again = key.create(&begun["options"], &origin, UP | UV);
        let (status, body) = api.post(&confirm(&begun), &again, None).await;
        assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    }
    for forged in [json!({}), json!({ "id": "x", "rawId": "x", "type": "public-key", "response": {} })] {
        let begun = begin(&api).await;
        let (status, body) = api.post(&confirm(&begun), &forged, None).await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "passkey-refused");
    }
    // Another customer's registration is not theirs to finish, and stays unspent.
    let begun = begin(&api).await;
    let credential = key.create(&begun["options"], &origin, UP | UV);
    let (status, body) = bob_api.post(&confirm(&begun), &credential, None).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    let unknown = format!("/v1/passkeys/{}/confirm", uuid::Uuid::now_v7());
    let (status, body) = api.post(&unknown, &credential, None).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    assert_eq!(server.state.security.passkeys_of(ada.id).await.expect("passkeys").len(), 0, "nothing stored");
    let (status, view) = api.post(&confirm(&begun), &credential, None).await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    // Bob cannot remove it either.
    let path = format!("/v1/passkeys/{}", view["id"].as_str().expect("id"));
    let (status, body) = bob_api.delete(&path).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    assert_eq!(server.state.security.passkeys_of(ada.id).await.expect("passkeys").len(), 1);
    // Names are checked.
    let (status, body) = api.post("/v1/passkeys", &json!({ "name": " " }), None).await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkeys_are_bounded_and_their_registrations_too() {
    let mut server = localhost_server(|_| {}).await;
    let ada = server.customer("ada-pk-many", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    for i in 0..PASSKEYS_MAX {
        let (status, body) = register(&api, &server, &mut SoftKey::new(), &format!("Key {i}")).await;
        assert_eq!(status, StatusCode::CREATED, "{i}: {body}");
    }
    let (status, body) = api.post("/v1/passkeys", &json!({ "name": "One too many" }), None).await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains(&PASSKEYS_MAX.to_string())), "{body}");
    let (_, list) = api.get("/v1/passkeys").await;
    assert_eq!(list["passkeys"].as_array().map(Vec::len), Some(PASSKEYS_MAX));

    let bob = server.customer("bob-pk-many", 0, 0).await;
    let bob_api = Api::new(&server, &server.login(&bob, ALL).await);
    for _ in 0..3 {
        assert_eq!(bob_api.post("/v1/passkeys", &json!({ "name": "k" }), None).await.0, StatusCode::ACCEPTED);
    }
    let (status, body) = bob_api.post("/v1/passkeys", &json!({ "name": "k" }), None).await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_needs_a_recent_sign_in_and_expires() {
    let mut server = localhost_server(|c| {
        c.sca.recent_sign_in_max_age_s = 2;
        c.sca.challenge_ttl_s = 1;
    })
    .await;
    let ada = server.customer("ada-pk-old", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let mut key = SoftKey::new();
    let (status, begun) = api.post("/v1/passkeys", &json!({ "name": "Slow" }), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(begun["options"]["publicKey"]["timeout"], 1000, "the ceremony's time is the challenge's");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let credential = key.create(&begun["options"], &server.base, UP | UV);
    let (status, body) =
        api.post(&format!("/v1/passkeys/{}/confirm", begun["id"].as_str().expect("id")), &credential, None).await;
    assert_problem(status, &body, StatusCode::CONFLICT, "challenge-closed");
    // The sign-in is now too old: a step-up, for adding and for removing.
    let r =
        api.request(reqwest::Method::POST, "/v1/passkeys").json(&json!({ "name": "Late" })).send().await.expect("post");
    let challenge = r.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (status, body) = (r.status(), r.json::<Value>().await.expect("json"));
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "insufficient-user-authentication");
    assert!(challenge.contains("insufficient_user_authentication") && challenge.contains("max_age=2"), "{challenge}");
    let (status, body) = api.delete(&format!("/v1/passkeys/{}", uuid::Uuid::now_v7())).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "insufficient-user-authentication");
    assert_eq!(server.state.security.passkeys_of(ada.id).await.expect("passkeys").len(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_reached_by_an_ip_address_says_passkeys_are_unavailable() {
    let mut server = Server::start().await;
    let ada = server.customer("ada-pk-ip", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let (status, body) = api.post("/v1/passkeys", &json!({ "name": "Laptop" }), None).await;
    assert_problem(status, &body, StatusCode::NOT_IMPLEMENTED, "passkeys-unavailable");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("server.public_url")), "{body}");
    let flow = CodeFlow::begin(&server.site, ALL).await;
    let r = flow
        .http
        .post(server.url("/oauth2/login/passkey/options"))
        .form(&[("tx", flow.tx.as_str()), ("username", "ada-pk-ip")])
        .send()
        .await
        .expect("options");
    assert_eq!(r.status(), StatusCode::NOT_IMPLEMENTED);
    assert!(hidden(&flow.page, "tx").is_some());
    server.stop().await;
}
