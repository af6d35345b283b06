//! The OAuth2 / OpenID provider over real HTTP: the complete sign-in, PKCE, codes, refresh
//! rotation with reuse detection, revocation, lockout, discovery and an external issuer.

mod common;

use std::collections::HashMap;

use bp_server_example::testkit::{CodeFlow, Site, browser, hidden};
use common::{Api, CLIENT, REDIRECT, Server, assert_problem};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&bp_server_example::auth::crypto::unb64(payload).expect("base64url")).expect("json")
}

async fn refresh(server: &Server, token: &str) -> reqwest::Response {
    server.site.refresh(token).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_sign_in_gives_tokens_that_the_api_accepts() {
    let mut server = Server::start().await;
    let ada = server.customer("ada", 10_000, 0).await;
    let flow = server.login_until_code(&ada, "openid profile accounts payments offline_access").await;

    // A wrong verifier, or another client, is refused and burns nothing: whoever holds a leaked
    // code without its verifier cannot spend it, nor keep its client from spending it.
    let wrong = flow.exchange(&bp_server_example::auth::crypto::random_token(48)).await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert_eq!(wrong.json::<Value>().await.expect("json")["error"], "invalid_grant");
    let other_client = Site { client_id: "bp-mobile".to_owned(), ..server.site.clone() }
        .token_request(&[
            ("grant_type", "authorization_code"),
            ("code", flow.code.as_deref().expect("code")),
            ("redirect_uri", REDIRECT),
            ("client_id", "bp-mobile"),
            ("code_verifier", flow.verifier.as_str()),
        ])
        .await;
    assert_eq!(other_client.status(), StatusCode::BAD_REQUEST);
    assert_eq!(other_client.json::<Value>().await.expect("json")["error"], "invalid_grant");
    let right = flow.exchange(&flow.verifier).await;
    assert_eq!(right.status(), StatusCode::OK, "the code still works for its client with its verifier");
    assert_eq!(flow.exchange(&flow.verifier).await.status(), StatusCode::BAD_REQUEST, "once");

    // A fresh sign-in with the right verifier.
    let flow = server.login_until_code(&ada, "openid profile accounts payments offline_access").await;
    let response = flow.exchange(&flow.verifier).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let tokens: Value = response.json().await.expect("json");
    // The test client signs in with DPoP: its tokens are bound to its key (tests/dpop.rs).
    assert_eq!(tokens["token_type"], "DPoP");
    assert!(tokens["expires_in"].as_u64().expect("expires_in") <= 300);
    let access = jwt_claims(tokens["access_token"].as_str().expect("access"));
    assert_eq!(access["sub"], ada.id.to_string());
    assert_eq!(access["aud"], "bp-api");
    assert_eq!(access["iss"], server.base);
    assert_eq!(access["amr"], json!(["pwd", "otp"]));
    let id = jwt_claims(tokens["id_token"].as_str().expect("id token"));
    assert_eq!(id["nonce"], flow.nonce);
    assert_eq!(id["aud"], CLIENT);
    // The code is single-use.
    let replay = flow.exchange(&flow.verifier).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    // Replaying the code revoked what it gave.
    let api = Api::new(&server, &tokens);
    let (status, body) = api.get("/v1/accounts").await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    // Userinfo and the API with a good session.
    let tokens = server.login(&ada, "openid profile accounts").await;
    let api = Api::new(&server, &tokens);
    let (status, info) = api.get("/oauth2/userinfo").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["preferred_username"], "ada");
    let (status, accounts) = api.get("/v1/accounts").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(accounts["accounts"].as_array().expect("list").len(), 2);
    assert!(tokens.get("refresh_token").is_none(), "no refresh token without offline_access");
    // Scopes are enforced: no 'payments' in this token.
    let (status, body) = api.post("/v1/transfers", &json!({}), Some("k")).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_requests_are_validated_before_anything_else() {
    let mut server = Server::start().await;
    let http = browser();
    let good = server.site.authorize_url("openid", "v".repeat(43).as_str(), "s", "n");
    // Unknown client and unregistered redirect URI: an error page, never a redirect.
    for (from, to) in [("client_id=bp-test", "client_id=nobody"), ("callback", "evil")] {
        let r = http.get(good.replace(from, to)).send().await.expect("authorize");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{to}");
        assert!(r.headers().get("location").is_none());
        assert!(r.headers()["content-type"].to_str().expect("ascii").starts_with("text/html"));
    }
    // Known client and redirect: errors go back to the client with state and iss (RFC 9207).
    for (from, to, error) in [
        ("code_challenge_method=S256", "code_challenge_method=plain", "invalid_request"),
        ("response_type=code", "response_type=token", "unsupported_response_type"),
        ("scope=openid", "scope=admin", "invalid_scope"),
    ] {
        let r = http.get(good.replace(from, to)).send().await.expect("authorize");
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{to}");
        let location = url::Url::parse(r.headers()["location"].to_str().expect("ascii")).expect("url");
        let q: HashMap<String, String> = location.query_pairs().into_owned().collect();
        assert!(location.as_str().starts_with(REDIRECT));
        assert_eq!(q["error"], error);
        assert_eq!(q["state"], "s");
        assert_eq!(q["iss"], server.base);
    }
    // The login page: plain HTML forms that work without JavaScript, a strict CSP, and one
    // script, a file of this origin, that only adds the passkey sign-in.
    let r = http.get(&good).send().await.expect("authorize");
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"].to_str().expect("ascii").to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let page = r.text().await.expect("page");
    let script = "<script type=\"module\" src=\"/app/js/signin-passkey.js\"></script>";
    assert_eq!(page.matches("<script").count(), 1, "one script: {page}");
    assert!(page.contains(script), "no inline script: {page}");
    assert!(page.contains("<form method=\"post\" action=\"/oauth2/login/password\">"), "a plain form");
    assert!(page.contains("type=\"password\""));
    // A form posted without the browser's login cookie is refused.
    let tx = hidden(&page, "tx").expect("tx");
    let other_browser = browser();
    let r = other_browser
        .post(server.url("/oauth2/login/password"))
        .form(&[("tx", tx.as_str()), ("username", "x"), ("password", "y")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
}

/// Step-up requests (OpenID Connect Core §3.1.2.1, RFC 9470): every authorization is a fresh
/// sign-in with both factors, so `prompt=login` and `max_age` are met and `prompt=none` never is;
/// `acr_values` sets the least class of sign-in, and the tokens tell the class reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_up_requests_are_honoured_and_tokens_tell_the_class() {
    let mut server = Server::start().await;
    let ada = server.customer("ada-step-up", 0, 0).await;
    let redirected = |r: &reqwest::Response| -> HashMap<String, String> {
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let location = url::Url::parse(r.headers()["location"].to_str().expect("ascii")).expect("url");
        assert!(location.as_str().starts_with(REDIRECT));
        location.query_pairs().into_owned().collect()
    };
    let good = server.site.authorize_url("openid", "v".repeat(43).as_str(), "s", "n");
    for (more, error) in [
        ("&prompt=none", "login_required"),
        ("&prompt=none%20login", "invalid_request"),
        ("&prompt=consent", "invalid_request"),
        ("&max_age=soon", "invalid_request"),
        ("&max_age=-1", "invalid_request"),
        ("&acr_values=urn%3Abp%3Aacr%3A1fa", "invalid_request"),
    ] {
        let q = redirected(&browser().get(format!("{good}{more}")).send().await.expect("authorize"));
        assert_eq!(q["error"], error, "{more}");
        assert_eq!((q["state"].as_str(), q["iss"].as_str()), ("s", server.base.as_str()), "{more}");
    }

    // prompt=login and max_age=0: a sign-in as always; the tokens carry its time and class.
    let before = chrono::Utc::now().timestamp();
    let more = [("prompt", "login"), ("max_age", "0"), ("acr_values", "urn:bp:acr:2fa")];
    let mut flow = CodeFlow::begin_asking(&server.site, "openid accounts", browser(), &more).await;
    assert!(flow.password("ada-step-up", &ada.password).await.contains("Confirm it is you"));
    let response = flow.second_factor(&[("code", &server.totp(&ada).await)]).await;
    flow.code = Some(flow.code_from(&response));
    let tokens = flow.tokens().await;
    for token in ["access_token", "id_token"] {
        let claims = jwt_claims(tokens[token].as_str().expect(token));
        assert_eq!(claims["acr"], "urn:bp:acr:2fa", "{token}");
        assert!(claims["auth_time"].as_i64().expect("auth_time") >= before - 1, "{token}");
    }

    // A phishing-resistant sign-in asked for: the password path cannot give it, and says so
    // before a password is typed; asked among others, the weakest class listed is enough.
    let phr = [("acr_values", "urn:bp:acr:phr")];
    let mut flow = CodeFlow::begin_asking(&server.site, "openid", browser(), &phr).await;
    assert!(flow.page.contains("passkey"), "the page says what is needed: {}", flow.page);
    let page = flow.password("ada-step-up", &ada.password).await;
    assert!(page.contains("passkey") && !page.contains("Confirm it is you"), "{page}");
    let both = [("acr_values", "urn:bp:acr:phr urn:bp:acr:2fa")];
    let mut flow = CodeFlow::begin_asking(&server.site, "openid", browser(), &both).await;
    assert!(flow.password("ada-step-up", &ada.password).await.contains("Confirm it is you"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_and_reuse_revokes_the_session() {
    let mut server = Server::start().await;
    let bob = server.customer("bob", 0, 0).await;
    let tokens = server.login(&bob, "openid accounts offline_access").await;
    let first = tokens["refresh_token"].as_str().expect("refresh").to_owned();

    let r = refresh(&server, &first).await;
    assert_eq!(r.status(), StatusCode::OK);
    let second: Value = r.json().await.expect("json");
    let second_refresh = second["refresh_token"].as_str().expect("rotated").to_owned();
    assert_ne!(second_refresh, first, "rotated on every use");
    let api = Api::new(&server, &second);
    assert_eq!(api.get("/v1/accounts").await.0, StatusCode::OK);

    // The old token again: reuse. The whole session is revoked, the newest token included.
    let r = refresh(&server, &first).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "invalid_grant");
    let r = refresh(&server, &second_refresh).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "the successor is revoked too");
    let (status, body) = api.get("/v1/accounts").await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    // The reuse is in the audit log.
    let audit = server.state.security.audit_after(0, 1000).await.expect("audit");
    assert!(audit.iter().any(|e| e.kind == bp_core::security::AuditKind::RefreshTokenReuse));

    // Revocation (sign-out) ends a session: refresh and access tokens stop working.
    let tokens = server.login(&bob, "openid accounts offline_access").await;
    let api = Api::new(&server, &tokens);
    assert_eq!(api.get("/v1/accounts").await.0, StatusCode::OK);
    let r = browser()
        .post(server.url("/oauth2/revoke"))
        .form(&[("token", tokens["refresh_token"].as_str().expect("refresh")), ("client_id", CLIENT)])
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(api.get("/v1/accounts").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(&server, tokens["refresh_token"].as_str().expect("refresh")).await.status(),
        StatusCode::BAD_REQUEST
    );
    // Another client cannot revoke a client's tokens: 200 as RFC 7009 says, and nothing changes.
    let tokens = server.login(&bob, "openid accounts offline_access").await;
    let api = Api::new(&server, &tokens);
    for token in [&tokens["access_token"], &tokens["refresh_token"]] {
        let r = browser()
            .post(server.url("/oauth2/revoke"))
            .form(&[("token", token.as_str().expect("token")), ("client_id", "bp-mobile")])
            .send()
            .await
            .expect("revoke");
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(api.get("/v1/accounts").await.0, StatusCode::OK, "the access token still works");
    let r = refresh(&server, tokens["refresh_token"].as_str().expect("refresh")).await;
    assert_eq!(r.status(), StatusCode::OK, "so does the refresh token");
    // Unknown tokens: 200 as RFC 7009 says.
    let r = browser()
        .post(server.url("/oauth2/revoke"))
        .form(&[("token", "nonsense"), ("client_id", CLIENT)])
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), StatusCode::OK);
    server.stop().await;
}

/// The verdict of every failed sign-in, whichever element failed (RTS art. 4(3)(a)).
const FAILED: &str = "The sign-in failed: the username, password, code or signature was not right.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_lock_the_customer_out_progressively() {
    let mut server = Server::start_with(|c| {
        c.lockout.failures_max = 3;
        c.lockout.lock_s = 120;
    })
    .await;
    let eve = server.customer("eve", 0, 0).await;
    let mut flow = CodeFlow::begin(&server.site, "openid").await;
    // A wrong password is not told at once: the second-factor page follows, the same as after
    // the right one, and the verdict names no element (RTS art. 4(3)(a)).
    // (The right one first: a right password clears the source's count of wrong ones.)
    let mut other = CodeFlow::begin(&server.site, "openid").await;
    let after_right = other.password("eve", &eve.password).await;
    let after_wrong = flow.password("eve", "wrong password!").await;
    let form = |page: &str, tx: &str| page.split("<pre").next().unwrap_or_default().replace(tx, "TX");
    assert_eq!(form(&after_wrong, &flow.tx), form(&after_right, &other.tx), "the same page: {after_wrong}");
    let wrong_code = other.second_factor(&[("code", "000000")]).await.text().await.expect("page");
    let wrong_password = flow.second_factor(&[("code", &server.totp(&eve).await)]).await.text().await.expect("page");
    assert!(wrong_code.contains(FAILED) && wrong_password.contains(FAILED), "{wrong_code}");
    assert_eq!(form(&wrong_code, &other.tx), form(&wrong_password, &flow.tx), "one verdict");
    assert!(wrong_password.contains("value=\"eve\""), "the username typed stays: {wrong_password}");
    for _ in 0..2 {
        let page = flow.attempt("eve", "wrong password!", "000000").await;
        assert!(page.contains(FAILED), "{page}");
    }
    // Throttled from here: even the right password and code are refused, with the verdict of a
    // wrong one (a distinct answer would tell that the username exists).
    let page = flow.attempt("eve", &eve.password, &server.totp(&eve).await).await;
    assert!(page.contains(FAILED), "{page}");
    let state = server.state.security.security_state(eve.id).await.expect("state");
    assert_eq!((state.lockouts, state.locked_until), (0, None), "failed passwords do not lock the customer out");
    assert_eq!(state.failures, 1, "the one wrong code after her right password does");
    // An unknown username gets the same answer as a wrong password, throttled or not.
    let page = flow.attempt("nobody-here", "whatever", "000000").await;
    assert!(page.contains(FAILED));
    let kinds: Vec<_> =
        server.state.security.audit_after(0, 1000).await.expect("audit").into_iter().map(|e| e.kind).collect();
    use bp_core::security::AuditKind as K;
    assert_eq!(kinds.iter().filter(|k| **k == K::PasswordFailed).count(), 4);
    assert_eq!(kinds.iter().filter(|k| **k == K::SecondFactorFailed).count(), 1, "only where the password was right");
    assert!(kinds.contains(&K::LockedOut) && kinds.contains(&K::LockedOutAttempt));

    // Wrong second factors (the password is known then) lock the customer out.
    let mallory = server.customer("mallory", 0, 0).await;
    let mut flow = CodeFlow::begin(&server.site, "openid").await;
    for _ in 0..3 {
        let page = flow.attempt("mallory", &mallory.password, "000000").await;
        assert!(page.contains(FAILED), "{page}");
    }
    let state = server.state.security.security_state(mallory.id).await.expect("state");
    assert_eq!(state.lockouts, 1);
    // Locked out: the right password and code get the verdict of any failure.
    let page = flow.attempt("mallory", &mallory.password, &server.totp(&mallory).await).await;
    assert!(page.contains(FAILED), "a locked-out customer is not told apart from an unknown one: {page}");
    server.stop().await;
}

/// Guessing passwords locks out the guesser's (username, source) pair, not the customer: the
/// owner signs in from elsewhere. Behind a trusted proxy, sources are the forwarded clients; an
/// IPv6 /64 is one source; from anyone else, a forwarding header is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_lock_a_customer_out_and_sources_are_counted_behind_proxies() {
    let mut server = Server::start_with(|c| {
        c.lockout.failures_max = 3;
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
        c.auth.login_attempts_per_minute = 10;
    })
    .await;
    let eve = server.customer("eve", 0, 0).await;
    let at = |ip: &str| bp_server_example::testkit::browser_at(ip.parse().expect("address"));
    let mut attacker = CodeFlow::begin_in(&server.site, "openid", at("203.0.113.5")).await;
    for _ in 0..3 {
        assert!(attacker.attempt("eve", "guess", "000000").await.contains(FAILED));
    }
    let code = server.totp(&eve).await;
    assert!(attacker.attempt("eve", &eve.password, &code).await.contains(FAILED), "the guesser's source is throttled");
    // Eve, elsewhere (another /64 of IPv6), signs in.
    let code = server.totp(&eve).await;
    let mut flow = CodeFlow::begin_in(&server.site, "openid", at("2001:db8:1:2::7")).await;
    assert!(flow.password("eve", &eve.password).await.contains("Confirm it is you"));
    let r = flow.second_factor(&[("code", code.as_str())]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "signed in");

    // Per source budget: 10 requests a minute. The guesser has used 9 (authorize, and 4 times a
    // password and a code); one more, then 429. Another address of Eve's /64 shares her budget.
    assert!(attacker.password("eve", "guess").await.contains("Confirm it is you"));
    let r = attacker
        .http
        .post(server.url("/oauth2/login/password"))
        .form(&[("tx", attacker.tx.as_str()), ("username", "eve"), ("password", "x")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let same_64 = at("2001:db8:1:2:ffff::1");
    // Eve's sign-in used 3 of her /64's 10: authorize, password, second factor.
    for _ in 0..7 {
        let r = same_64.get(server.site.authorize_url("openid", &"v".repeat(43), "s", "n")).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = same_64.get(server.site.authorize_url("openid", &"v".repeat(43), "s", "n")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "one /64, one budget");
    server.stop().await;

    // Without trusted proxies, a forwarding header is the client's own word: ignored.
    let mut server = Server::start_with(|c| c.auth.login_attempts_per_minute = 2).await;
    for ip in ["192.0.2.1", "192.0.2.2"] {
        let r = at(ip).get(server.site.authorize_url("openid", &"v".repeat(43), "s", "n")).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r =
        at("192.0.2.3").get(server.site.authorize_url("openid", &"v".repeat(43), "s", "n")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "all three were loopback");
    server.stop().await;
}

/// Unauthenticated `GET /oauth2/authorize` cannot fill the store of sign-ins in progress: one
/// source holds a bounded number; others are not affected. Password attempts per username are
/// bounded across sources too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_in_progress_and_attempts_per_username_are_bounded() {
    let mut server = Server::start_with(|c| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
        c.auth.login_attempts_per_username_per_minute = 3;
    })
    .await;
    let eve = server.customer("eve", 0, 0).await;
    let at = |ip: &str| bp_server_example::testkit::browser_at(ip.parse().expect("address"));
    let flood = at("203.0.113.66");
    let mut refused = 0;
    for _ in 0..25 {
        let r = flood.get(server.site.authorize_url("openid", &"v".repeat(43), "s", "n")).send().await.expect("get");
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        }
    }
    assert_eq!(refused, 5, "20 sign-ins in progress per source");
    let flow = CodeFlow::begin_in(&server.site, "openid", at("198.51.100.1")).await;
    assert!(flow.page.contains("name=\"tx\""), "another source still signs in");

    // Three password attempts for "eve" a minute, from anywhere: the fourth is refused, even
    // with the right password, with the page of a wrong one.
    for (i, ip) in ["198.51.100.2", "198.51.100.3", "198.51.100.4"].into_iter().enumerate() {
        let mut f = CodeFlow::begin_in(&server.site, "openid", at(ip)).await;
        assert!(f.attempt("eve", &format!("guess {i}"), "000000").await.contains(FAILED));
    }
    let mut f = CodeFlow::begin_in(&server.site, "openid", at("198.51.100.5")).await;
    assert!(f.attempt("eve", &eve.password, &server.totp(&eve).await).await.contains(FAILED));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_jwks_describe_the_provider() {
    let mut server = Server::start().await;
    let http = browser();
    let d: Value = http
        .get(server.url("/.well-known/openid-configuration"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(d["issuer"], server.base);
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    assert_eq!(d["acr_values_supported"], json!(["urn:bp:acr:2fa", "urn:bp:acr:phr"]));
    assert_eq!(d["prompt_values_supported"], json!(["none", "login"]));
    let jwks: Value = http.get(server.url("/oauth2/jwks")).send().await.expect("get").json().await.expect("json");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    assert!(jwks["keys"][0].get("d").is_none(), "no private part");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_expire_and_lockouts_grow_longer() {
    let mut server = Server::start_with(|c| {
        c.auth.code_ttl_s = 1;
        c.lockout.failures_max = 2;
        c.lockout.lock_s = 1;
    })
    .await;
    let ada = server.customer("ada-ttl", 0, 0).await;
    let flow = server.login_until_code(&ada, "openid").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = flow.exchange(&flow.verifier).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.expect("json")["error_description"], "the code has expired");

    // Each lockout lasts twice as long as the one before (wrong second factors lock the
    // customer out; wrong passwords only their source, see below).
    let mut spans = Vec::new();
    for _ in 0..2 {
        let mut flow = CodeFlow::begin(&server.site, "openid").await;
        for _ in 0..2 {
            assert!(flow.attempt("ada-ttl", &ada.password, "000000").await.contains(FAILED));
        }
        let state = server.state.security.security_state(ada.id).await.expect("state");
        let until = state.locked_until.expect("locked");
        spans.push((until - chrono::Utc::now()).num_milliseconds());
        tokio::time::sleep(std::time::Duration::from_millis(
            u64::try_from(spans.last().copied().unwrap_or(0)).unwrap_or(0) + 100,
        ))
        .await;
    }
    assert!(spans[0] <= 1000 && spans[1] > 1000 && spans[1] <= 2000, "1 s, then 2 s: {spans:?}");
    // After the lock, the right factors work again.
    server.login_until_code(&ada, "openid").await;
    server.stop().await;
}
