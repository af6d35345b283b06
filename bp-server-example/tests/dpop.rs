//! Sender-constrained tokens (DPoP, RFC 9449) over real HTTP, with proofs made in the test: a
//! bound token is accepted only with the DPoP scheme and a fresh proof of its key for the
//! request (method, public URL, time, once, for this token); refresh tokens stay bound to the
//! sign-in's key; the token endpoint binds, and requires proofs of DPoP clients; server nonces
//! when configured; the event stream and its tickets; EdDSA proofs.

mod common;

use std::sync::Arc;

use bp_server_example::auth::crypto::{b64, random_token, sha256};
use bp_server_example::testkit::{CodeFlow, DpopKey, Site};
use common::{Api, CLIENT, REDIRECT, Server, assert_problem, now_s};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const SCOPE: &str = "openid accounts payments offline_access";

fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&bp_server_example::auth::crypto::unb64(payload).expect("base64url")).expect("json")
}

/// The token request that exchanges `flow`'s code (sent without the test kit, to set the proof).
fn exchange_form(flow: &CodeFlow) -> [(&'static str, String); 5] {
    [
        ("grant_type", "authorization_code".to_owned()),
        ("code", flow.code.clone().expect("code")),
        ("redirect_uri", REDIRECT.to_owned()),
        ("client_id", CLIENT.to_owned()),
        ("code_verifier", flow.verifier.clone()),
    ]
}

/// `GET /v1/accounts` with `authorization` and the `DPoP` headers `proofs`; the status, body and
/// headers.
async fn accounts(server: &Server, authorization: &str, proofs: &[String]) -> (StatusCode, Value, HeaderMap) {
    let mut request = reqwest::Client::new().get(server.url("/v1/accounts")).header("authorization", authorization);
    for proof in proofs {
        request = request.header("dpop", proof);
    }
    let r = request.send().await.expect("get");
    let (status, headers) = (r.status(), r.headers().clone());
    (status, r.json().await.unwrap_or(Value::Null), headers)
}

/// Asserts a refused proof: 401, the problem type, and the `DPoP` challenge with its error.
fn assert_refused(what: &str, (status, body, headers): &(StatusCode, Value, HeaderMap), slug: &str, error: &str) {
    assert_eq!(*status, StatusCode::UNAUTHORIZED, "{what}: {body}");
    assert_eq!(body["type"], format!("urn:bp:problem:{slug}"), "{what}: {body}");
    let challenges: Vec<&str> = headers.get_all("www-authenticate").iter().filter_map(|v| v.to_str().ok()).collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("DPoP ") && c.contains(&format!("error=\"{error}\""))),
        "{what}: {challenges:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_token_needs_a_fresh_proof_of_its_key_for_each_request() {
    let mut server = Server::start().await;
    let ada = server.customer("ada-dpop", 10_000, 0).await;
    let tokens = server.login(&ada, SCOPE).await;
    assert_eq!(tokens["token_type"], "DPoP");
    let token = tokens["access_token"].as_str().expect("token").to_owned();
    let key = server.site.dpop.clone().expect("the test client's key");
    assert_eq!(jwt_claims(&token)["cnf"]["jkt"], key.thumbprint(), "bound to the key of the sign-in");
    let url = server.url("/v1/accounts");
    let authorization = format!("DPoP {token}");
    let proof = |claims: &Value| key.sign(&key.header(), claims);
    let claims = || key.claims("GET", &url, Some(&token));

    let good = proof(&claims());
    assert_eq!(accounts(&server, &authorization, std::slice::from_ref(&good)).await.0, StatusCode::OK);
    let replayed = accounts(&server, &authorization, &[good]).await;
    assert_refused("the same proof again", &replayed, "invalid-dpop-proof", "invalid_dpop_proof");
    let missing = accounts(&server, &authorization, &[]).await;
    assert_refused("no proof", &missing, "invalid-dpop-proof", "invalid_dpop_proof");
    let stranger = DpopKey::generate();
    let other_key = stranger.proof("GET", &url, Some(&token));
    assert_refused(
        "a proof of another key",
        &accounts(&server, &authorization, &[other_key]).await,
        "invalid-dpop-proof",
        "invalid_dpop_proof",
    );
    let two = [proof(&claims()), proof(&claims())];
    assert_refused(
        "two proofs",
        &accounts(&server, &authorization, &two).await,
        "invalid-dpop-proof",
        "invalid_dpop_proof",
    );

    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut c = claims();
    c["htu"] = json!(server.url("/v1/me"));
    cases.push(("another path", c));
    let mut c = claims();
    c["htu"] = json!(url.replace("127.0.0.1", "localhost"));
    cases.push(("another host than the public URL", c));
    let mut c = claims();
    c["htm"] = json!("POST");
    cases.push(("another method", c));
    let mut c = claims();
    c["iat"] = json!(now_s() - 90);
    cases.push(("a stale iat", c));
    let mut c = claims();
    c["iat"] = json!(now_s() + 60);
    cases.push(("an iat in the future", c));
    let mut c = claims();
    c["ath"] = json!(b64(&sha256(b"another token")));
    cases.push(("the hash of another token", c));
    let mut c = claims();
    c.as_object_mut().expect("claims").remove("ath");
    cases.push(("no ath", c));
    let mut c = claims();
    c.as_object_mut().expect("claims").remove("jti");
    cases.push(("no jti", c));
    for (what, c) in cases {
        assert_refused(
            what,
            &accounts(&server, &authorization, &[proof(&c)]).await,
            "invalid-dpop-proof",
            "invalid_dpop_proof",
        );
    }
    // The public URL decides, not the Host a request was sent with (a proxy may change it); the
    // URL compares after normalization (RFC 3986 §6.2.2, §6.2.3).
    let mut c = claims();
    c["htu"] =
        json!(url.replace("http://127.0.0.1", "HTTP://127.0.0.1").replace("/v1/accounts", "/v1/./%61ccounts?x#y"));
    let r = reqwest::Client::new()
        .get(&url)
        .header("host", "bp.example")
        .header("authorization", &authorization)
        .header("dpop", proof(&c))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK, "a normalized htu of the public URL, whatever the Host");
    let mut c = claims();
    c["iat"] = json!(now_s() - 50);
    assert_eq!(accounts(&server, &authorization, &[proof(&c)]).await.0, StatusCode::OK, "within the window");

    // The proof's header: dpop+jwt, ES256 or EdDSA, a public key of its algorithm.
    let header_cases = [
        ("typ JWT", json!({ "typ": "JWT", "alg": "ES256", "jwk": key.jwk() })),
        ("alg none", json!({ "typ": "dpop+jwt", "alg": "none", "jwk": key.jwk() })),
        ("alg HS256", json!({ "typ": "dpop+jwt", "alg": "HS256", "jwk": key.jwk() })),
        ("no jwk", json!({ "typ": "dpop+jwt", "alg": "ES256" })),
        ("a private jwk", {
            let mut jwk = key.jwk().clone();
            jwk["d"] = json!(random_token(32));
            json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": jwk })
        }),
        ("the key of another alg", json!({ "typ": "dpop+jwt", "alg": "EdDSA", "jwk": key.jwk() })),
    ];
    for (what, header) in header_cases {
        let p = key.sign(&header, &claims());
        assert_refused(
            what,
            &accounts(&server, &authorization, &[p]).await,
            "invalid-dpop-proof",
            "invalid_dpop_proof",
        );
    }
    let mut forged = proof(&claims());
    forged.replace_range(forged.len() - 4.., "AAAA");
    assert_refused(
        "a bad signature",
        &accounts(&server, &authorization, &[forged]).await,
        "invalid-dpop-proof",
        "invalid_dpop_proof",
    );

    // A bound token is not a bearer token: refused with the Bearer scheme, even with a proof.
    let as_bearer = accounts(&server, &format!("Bearer {token}"), &[proof(&claims())]).await;
    assert_refused("a bound token as Bearer", &as_bearer, "unauthorized", "invalid_token");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_stay_bound_to_the_key_of_the_sign_in() {
    let mut server = Server::start().await;
    let bob = server.customer("bob-dpop", 0, 0).await;
    let tokens = server.login(&bob, SCOPE).await;
    let refresh = tokens["refresh_token"].as_str().expect("refresh").to_owned();
    let key = server.site.dpop.clone().expect("key");
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("client_id", CLIENT)];

    let bearer_site = Site { dpop: None, ..server.site.clone() };
    let r = bearer_site.token_request(&form).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "without a proof");
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "invalid_dpop_proof");
    let thief = Site { dpop: Some(Arc::new(DpopKey::generate())), ..server.site.clone() };
    let r = thief.token_request(&form).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "with another key");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"], "invalid_dpop_proof");
    assert_eq!(body["error_description"], "the refresh token is bound to another key");

    // Neither rotated it nor set off reuse detection: the client's own key still refreshes.
    let r = server.site.refresh(&refresh).await;
    assert_eq!(r.status(), StatusCode::OK);
    let next: Value = r.json().await.expect("json");
    assert_eq!(next["token_type"], "DPoP");
    assert_eq!(jwt_claims(next["access_token"].as_str().expect("at"))["cnf"]["jkt"], key.thumbprint());
    let api = Api::new(&server, &next);
    assert_eq!(api.get("/v1/accounts").await.0, StatusCode::OK);
    // The rotated token is bound as well.
    let r = thief.refresh(next["refresh_token"].as_str().expect("rt")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_binds_tokens_and_requires_proofs_of_dpop_clients() {
    let mut server = Server::start().await;
    let carol = server.customer("carol-dpop", 0, 0).await;
    let discovery: Value =
        reqwest::get(server.url("/.well-known/openid-configuration")).await.expect("get").json().await.expect("json");
    assert_eq!(discovery["dpop_signing_alg_values_supported"], json!(["ES256", "EdDSA"]));

    // A DPoP client's code exchange without a proof is refused, and burns nothing.
    let mut flow = server.login_until_code(&carol, SCOPE).await;
    flow.site.dpop = None;
    let r = flow.exchange(&flow.verifier).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "invalid_dpop_proof");
    // A proof for another URL is no proof.
    let key = server.site.dpop.clone().expect("key");
    let exchange = exchange_form(&flow);
    let r = reqwest::Client::new()
        .post(server.url("/oauth2/token"))
        .header("dpop", key.proof("POST", &server.url("/oauth2/revoke"), None))
        .form(&exchange)
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "invalid_dpop_proof");
    flow.site.dpop = Some(key.clone());
    let r = flow.exchange(&flow.verifier).await;
    assert_eq!(r.status(), StatusCode::OK, "the code was still good");

    // A bearer client (bp-cli) without a proof: a bearer token, used as one.
    let cli = Site::bearer(&server.base, "bp-cli", "http://127.0.0.1/callback");
    let code = server.totp(&carol).await;
    let tokens = cli.sign_in(&carol.username, &carol.password, &code, "openid accounts").await;
    assert_eq!(tokens["token_type"], "Bearer");
    let access = tokens["access_token"].as_str().expect("at");
    assert!(jwt_claims(access).get("cnf").is_none(), "not bound");
    assert_eq!(accounts(&server, &format!("Bearer {access}"), &[]).await.0, StatusCode::OK);
    let as_dpop =
        accounts(&server, &format!("DPoP {access}"), &[key.proof("GET", &server.url("/v1/accounts"), Some(access))])
            .await;
    assert_eq!(as_dpop.0, StatusCode::UNAUTHORIZED, "an unbound token is no DPoP token");
    // The same client with a proof gets a bound token.
    let cli = Site { dpop: Some(Arc::new(DpopKey::generate())), ..cli };
    let code = server.totp(&carol).await;
    let tokens = cli.sign_in(&carol.username, &carol.password, &code, "openid accounts").await;
    assert_eq!(tokens["token_type"], "DPoP");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_nonces_when_configured() {
    let mut server = Server::start_with(|c| c.auth.dpop_nonce = true).await;
    let dave = server.customer("dave-dpop", 0, 0).await;
    let flow = server.login_until_code(&dave, SCOPE).await;
    let key = server.site.dpop.clone().expect("key");
    let form = exchange_form(&flow);
    let token_url = server.url("/oauth2/token");
    let post = |proof: String| reqwest::Client::new().post(&token_url).header("dpop", proof).form(&form).send();
    let r = post(key.proof("POST", &token_url, None)).await.expect("token");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let nonce = r.headers()["dpop-nonce"].to_str().expect("ascii").to_owned();
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "use_dpop_nonce");
    let with_nonce = |method: &str, url: &str, token: Option<&str>, nonce: &str| {
        let mut c = key.claims(method, url, token);
        c["nonce"] = json!(nonce);
        key.sign(&key.header(), &c)
    };
    let r = post(with_nonce("POST", &token_url, None, &nonce)).await.expect("token");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("dpop-nonce"), "a fresh nonce with the answer");
    let tokens: Value = r.json().await.expect("json");
    let token = tokens["access_token"].as_str().expect("at");
    let (url, authorization) = (server.url("/v1/accounts"), format!("DPoP {token}"));

    let without = accounts(&server, &authorization, &[key.proof("GET", &url, Some(token))]).await;
    assert_refused("no nonce", &without, "use-dpop-nonce", "use_dpop_nonce");
    let fresh = without.2["dpop-nonce"].to_str().expect("a nonce to use").to_owned();
    let bogus = accounts(&server, &authorization, &[with_nonce("GET", &url, Some(token), "bm9uY2U")]).await;
    assert_refused("a nonce not of this server", &bogus, "use-dpop-nonce", "use_dpop_nonce");
    assert_eq!(
        accounts(&server, &authorization, &[with_nonce("GET", &url, Some(token), &fresh)]).await.0,
        StatusCode::OK
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_tickets_and_streams_need_proofs_too() {
    let mut server = Server::start().await;
    let erin = server.customer("erin-dpop", 0, 0).await;
    let tokens = server.login(&erin, SCOPE).await;
    let api = Api::new(&server, &tokens);
    let ticket = reqwest::Client::new()
        .post(server.url("/v1/events/ticket"))
        .header("authorization", format!("DPoP {}", api.token))
        .send()
        .await
        .expect("ticket");
    assert_eq!(ticket.status(), StatusCode::UNAUTHORIZED, "a ticket needs the proof too");
    let (status, _) = api.post("/v1/events/ticket", &json!({}), None).await;
    assert_eq!(status, StatusCode::OK);
    let stream = api.request(reqwest::Method::GET, "/v1/events").send().await.expect("stream");
    assert_eq!(stream.status(), StatusCode::OK, "a stream with the DPoP scheme and a proof");
    let as_bearer =
        reqwest::Client::new().get(server.url("/v1/events")).bearer_auth(&api.token).send().await.expect("stream");
    let status = as_bearer.status();
    let body: Value = as_bearer.json().await.expect("json");
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_proofs_bind_and_prove_too() {
    let mut server = Server::start().await;
    let fay = server.customer("fay-dpop", 0, 0).await;
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let x = b64(key.verifying_key().as_bytes());
    let jkt = b64(&sha256(format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#).as_bytes()));
    let proof = |method: &str, url: &str, token: Option<&str>| {
        use ed25519_dalek::Signer as _;
        let header = json!({ "typ": "dpop+jwt", "alg": "EdDSA", "jwk": { "kty": "OKP", "crv": "Ed25519", "x": x } });
        let claims = DpopKey::generate().claims(method, url, token);
        let signed = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        format!("{signed}.{}", b64(&key.sign(signed.as_bytes()).to_bytes()))
    };
    let flow = server.login_until_code(&fay, SCOPE).await;
    let token_url = server.url("/oauth2/token");
    let r = reqwest::Client::new()
        .post(&token_url)
        .header("dpop", proof("POST", &token_url, None))
        .form(&exchange_form(&flow))
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), StatusCode::OK);
    let tokens: Value = r.json().await.expect("json");
    let token = tokens["access_token"].as_str().expect("at");
    assert_eq!(jwt_claims(token)["cnf"]["jkt"], jkt, "the RFC 7638 thumbprint of the Ed25519 key");
    let url = server.url("/v1/accounts");
    assert_eq!(accounts(&server, &format!("DPoP {token}"), &[proof("GET", &url, Some(token))]).await.0, StatusCode::OK);
    server.stop().await;
}
