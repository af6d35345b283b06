//! Operations: the binary with its demo data, logs that hold no secret or personal datum,
//! health and metrics endpoints, security headers, graceful shutdown, TLS, an external
//! OpenID provider's tokens verified by its JWKS, the `healthcheck` and `backup` commands, and
//! the configuration of deploy/kubernetes/ loaded as the server loads it.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::Duration;

use bp_server_example::auth::crypto::{TOTP_STEP_S, totp_code};
use bp_server_example::testkit::{CodeFlow, Site};
use common::{Api, Server};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_the_demo_and_logs_no_secret_or_personal_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, lines, mut child) = common::spawn_binary(dir.path(), &[]);
    let mut secrets: Vec<String> = Vec::new();
    let credentials =
        bp_server_example::demo::read_credentials(&dir.path().join("demo-credentials.txt")).expect("credentials");
    assert_eq!(credentials.len(), 3);
    let (username, password, secret) = credentials[0].clone();

    // Sign in as a demo customer through the web client, refresh, move money, fail a login.
    let web = Site::new(&base, "bp-web", "http://127.0.0.1:8080/callback");
    let mut flow = CodeFlow::begin(&web, "openid profile accounts payments offline_access").await;
    let wrong = flow.attempt(&username, "not-the-password-42", "000000").await;
    assert!(wrong.contains("The sign-in failed"), "{wrong}");
    flow.password(&username, &password).await;
    let now = common::now_s();
    let code = totp_code(&secret, now / TOTP_STEP_S);
    let r = flow.second_factor(&[("code", code.as_str())]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let auth_code = flow.code_from(&r);
    flow.code = Some(auth_code.clone());
    let tokens: Value = flow.exchange(&flow.verifier).await.json().await.expect("json");
    let refreshed: Value = web.refresh(tokens["refresh_token"].as_str().expect("rt")).await.json().await.expect("json");
    let api = Api {
        http: reqwest::Client::new(),
        base: base.clone(),
        token: refreshed["access_token"].as_str().expect("at").to_owned(),
        dpop: web.dpop.clone(),
    };
    let (status, me) = api.get("/v1/me").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["photo_url"], "/v1/me/photo");
    let photo = api.request(reqwest::Method::GET, "/v1/me/photo").send().await.expect("photo");
    assert_eq!(photo.headers()["content-type"], "image/svg+xml");
    assert!(photo.headers()["content-security-policy"].to_str().expect("ascii").contains("sandbox"));
    assert!(photo.text().await.expect("svg").starts_with("<svg"));
    let (_, accounts) = api.get("/v1/accounts").await;
    let list = accounts["accounts"].as_array().expect("accounts");
    assert_eq!(list.len(), 2, "two currencies");
    assert!(list.iter().all(|a| a["balances"]["posted"]["amount"] != "0.00"), "funded");
    let payee = list[0]["number"].as_str().expect("number").to_owned();
    let body = json!({ "from_account": list[0]["id"], "to_account_number": payee, "amount": { "amount": "1.00", "currency": list[0]["currency"] } });
    let (status, _) = api.post("/v1/transfers", &body, Some("same-account")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "payer and payee must differ");
    assert_eq!(reqwest::get(format!("{base}/metrics")).await.expect("metrics").status(), StatusCode::OK);

    // The documented curl sign-in (docs/api/README.md) works against the demo, as another customer.
    let scripted = common::demo_login(&base, dir.path(), &credentials[1].0);
    let bob = Api::bearer(&base, &scripted);
    let (status, bob_me) = bob.get("/v1/me").await;
    assert_eq!((status, bob_me["username"].as_str()), (StatusCode::OK, Some(credentials[1].0.as_str())));
    for k in ["access_token", "refresh_token", "id_token"] {
        secrets.push(scripted[k].as_str().expect("token").to_owned());
    }

    // Stop with SIGTERM: a graceful exit.
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read");
    assert!(stderr.contains(&password), "the demo credentials are printed once, on the terminal");

    // The logs: JSON lines with request ids, and none of the secrets or personal data.
    let logs = lines.lock().expect("lock").join("\n");
    assert!(logs.lines().count() > 10);
    for line in logs.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("a JSON log line: {line}"));
        if v["message"] == "request" {
            assert!(v["request_id"].as_str().is_some_and(|r| r.len() >= 32), "{line}");
        }
    }
    for (_, pw, secret) in &credentials {
        secrets.push(pw.clone());
        secrets.push(totp_rs::Secret::Raw(secret.clone()).to_encoded().to_string());
    }
    for t in [&tokens, &refreshed] {
        for k in ["access_token", "refresh_token", "id_token"] {
            if let Some(v) = t[k].as_str() {
                secrets.push(v.to_owned());
            }
        }
    }
    secrets.extend([auth_code, code, flow.verifier.clone(), "not-the-password-42".to_owned()]);
    for doc in me["documents"].as_array().expect("documents") {
        secrets.push(doc["number"].as_str().expect("number").to_owned());
    }
    secrets.extend(["IDC7310528", "P5561842", "IDC4402917", "ada@example.com", "Lovelace"].map(str::to_owned));
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "the logs contain a secret or personal datum ({} characters)", s.len());
    }

    // A restart keeps the data and does not seed again.
    let (base, _, mut child) = common::spawn_binary(dir.path(), &[]);
    let again =
        bp_server_example::demo::read_credentials(&dir.path().join("demo-credentials.txt")).expect("credentials");
    assert_eq!(again, credentials, "not seeded twice");
    assert_eq!(reqwest::get(format!("{base}/readyz")).await.expect("readyz").status(), StatusCode::OK);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_security_headers() {
    let mut server = Server::start().await;
    let http = reqwest::Client::new();
    let live = http.get(server.url("/livez")).send().await.expect("livez");
    assert_eq!(live.status(), StatusCode::OK);
    for (name, value) in
        [("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"), ("referrer-policy", "no-referrer")]
    {
        assert_eq!(live.headers()[name], value);
    }
    assert!(live.headers().get("strict-transport-security").is_none(), "no HSTS over plain HTTP");
    assert!(live.headers().get("x-request-id").is_some());
    assert_eq!(http.get(server.url("/readyz")).send().await.expect("readyz").status(), StatusCode::OK);
    let ada = server.customer("ada-m", 10_000, 0).await;
    let _ = server.login(&ada, "openid accounts").await;
    let metrics = http.get(server.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("bp_http_request_duration_seconds_bucket"), "latency histogram");
    assert!(metrics.contains("route=\"/oauth2/token\""), "by route");
    assert!(metrics.contains("bp_logins_total"), "logins");
    assert!(metrics.contains("bp_relay_oldest_waiting_ms"), "the outbox relay's lag");
    // The SQLite writer's counters: the customer's account and funding went through it.
    let gauge = |name: &str| metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok());
    assert!(gauge("bp_sqlite_writer_commands").is_some_and(|n| n >= 2.0), "the writer's commands");
    assert!(gauge("bp_sqlite_writer_batches").is_some_and(|n| n >= 1.0), "the writer's batches");
    assert_eq!(gauge("bp_sqlite_writer_retried_batches"), Some(0.0), "no retry was forgotten");
    let api = http.get(server.url("/openapi.json")).send().await.expect("openapi");
    assert_eq!(api.status(), StatusCode::OK);
    assert_eq!(api.json::<Value>().await.expect("json")["openapi"], "3.1.0");
    server.stop().await;
}

/// `/metrics` on a listener of its own is not on the public one; behind a TLS-terminating proxy
/// (an `https` public URL) the server sends HSTS and makes the sign-in cookie `Secure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_their_own_listener_and_https_from_the_public_url() {
    let mut server = Server::start_with(|c| {
        c.server.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
        c.server.public_url = Some("https://bank.example".to_owned());
    })
    .await;
    let http = reqwest::Client::new();
    assert_eq!(http.get(server.url("/metrics")).send().await.expect("metrics").status(), StatusCode::NOT_FOUND);
    let addr = server.started.as_ref().and_then(|s| s.metrics_addr).expect("a metrics listener");
    let metrics = http.get(format!("http://{addr}/metrics")).send().await.expect("metrics");
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(metrics.text().await.expect("text").contains("bp_http_request_duration_seconds"));
    let live = http.get(server.url("/livez")).send().await.expect("livez");
    assert!(live.headers()["strict-transport-security"].to_str().expect("ascii").contains("max-age="));
    let authorize = http.get(server.site.authorize_url("openid", &"v".repeat(43), "s", "n")).send().await.expect("get");
    let cookie = authorize.headers()["set-cookie"].to_str().expect("ascii").to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_app_is_served_from_the_binary_with_its_csp() {
    let mut server = Server::start().await;
    let http = reqwest::Client::new();
    for path in ["/", "/callback"] {
        let page = http.get(server.url(path)).send().await.expect("page");
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
        assert_eq!(page.headers()["cache-control"], "no-store", "the code arrives on this page");
        let csp = page.headers()["content-security-policy"].to_str().expect("csp").to_owned();
        assert!(csp.contains("script-src 'self';") && !csp.contains("unsafe-inline"), "{csp}");
        let html = page.text().await.expect("html");
        assert!(html.contains(r#"<script type="module" src="/app/js/main.js"></script>"#));
        assert!(!html.contains("<script>") && !html.contains("style="), "nothing inline");
    }
    let script = http.get(server.url("/app/js/main.js")).send().await.expect("script");
    assert_eq!(script.status(), StatusCode::OK);
    assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(script.headers()["cache-control"], "no-cache");
    let etag = script.headers()["etag"].clone();
    assert!(script.text().await.expect("js").contains("import * as auth from './auth.js';"));
    let again =
        http.get(server.url("/app/js/main.js")).header("if-none-match", etag.clone()).send().await.expect("304");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"], etag);
    let css = http.get(server.url("/app/app.css")).send().await.expect("css");
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    // Only the app's own files; the page only at its two addresses.
    for missing in ["/app/index.html", "/app/js/nope.js", "/app/../Cargo.toml", "/app/", "/index.html"] {
        let response = http.get(server.url(missing)).send().await.expect("missing");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "{missing}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight() {
    let mut server = Server::start().await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    // A request whose body is half sent when shutdown begins.
    let body = "grant_type=refresh_token&client_id=nobody&refresh_token=abc";
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    write!(
        stream,
        "POST /oauth2/token HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .expect("write");
    stream.flush().expect("flush");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = server.started.take().expect("running");
    let stopping = tokio::spawn(started.running.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!stopping.is_finished(), "waits for the request in flight");
    stream.write_all(&body.as_bytes()[10..]).expect("write rest");
    let mut response = String::new();
    let mut reader = BufReader::new(stream);
    reader.read_line(&mut response).expect("status line");
    assert!(response.starts_with("HTTP/1.1 401"), "the request in flight was answered: {response}");
    drop(reader);
    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("stops").expect("join").expect("ok");
    assert!(std::net::TcpStream::connect(&addr).is_err(), "no longer accepting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_an_external_provider_are_verified_by_its_jwks() {
    // The "external provider": a key made here and its JWKS served by this test.
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let keys = bp_server_example::auth::tokens::Keys::from_signing_key(&key).expect("keys");
    let jwks = keys.jwks().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let jwks_url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = fetches.clone();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let url = jwks_url.clone();
    let mut server = Server::start_with(move |c| {
        c.auth.external = Some(bp_server_example::config::ExternalIssuerConfig {
            issuer: "https://idp.example".to_owned(),
            jwks_uri: url,
            audience: "bp-api".to_owned(),
            username_claim: "preferred_username".to_owned(),
            jwks_refresh_s: 300,
            token_types: vec!["at+jwt".to_owned()],
        });
    })
    .await;
    let ada = server.customer("ada-ext", 10_000, 0).await;
    let now = common::now_s();
    let claims = |iss: &str, aud: &str, user: &str| json!({ "iss": iss, "aud": aud, "sub": "external-123", "preferred_username": user, "exp": now + 300, "iat": now, "scope": "accounts profile", "amr": ["pwd", "hwk"] });
    let sign = |c: &Value| keys.sign(c, "at+jwt").expect("sign");
    let call = |token: String| {
        let base = server.base.clone();
        async move {
            let api = Api { http: reqwest::Client::new(), base, token, dpop: None };
            api.get("/v1/accounts").await
        }
    };
    let (status, body) = call(sign(&claims("https://idp.example", "bp-api", "ada-ext"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accounts"][0]["id"], json!(ada.eur));
    for (what, c) in [
        ("another issuer", claims("https://evil.example", "bp-api", "ada-ext")),
        ("another audience", claims("https://idp.example", "other-api", "ada-ext")),
        ("an unknown customer", claims("https://idp.example", "bp-api", "nobody-here")),
    ] {
        assert_eq!(call(sign(&c)).await.0, StatusCode::UNAUTHORIZED, "{what}");
    }
    // Signed by a key the provider does not publish.
    let stranger = bp_server_example::auth::tokens::Keys::from_signing_key(&ed25519_dalek::SigningKey::generate(
        &mut rand_core::OsRng,
    ))
    .expect("keys");
    let forged = stranger.sign(&claims("https://idp.example", "bp-api", "ada-ext"), "at+jwt").expect("sign");
    assert_eq!(call(forged).await.0, StatusCode::UNAUTHORIZED);
    // Tokens with unknown key ids fetch the JWKS again at most once per interval, however many
    // arrive.
    let before = fetches.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..20 {
        let stranger = bp_server_example::auth::tokens::Keys::from_signing_key(&ed25519_dalek::SigningKey::generate(
            &mut rand_core::OsRng,
        ))
        .expect("keys");
        let forged = stranger.sign(&claims("https://idp.example", "bp-api", "ada-ext"), "at+jwt").expect("sign");
        assert_eq!(call(forged).await.0, StatusCode::UNAUTHORIZED);
    }
    let more = fetches.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(more <= 1, "20 unknown key ids fetched the JWKS {more} more times");
    // Only access tokens: of the configured `typ` (at+jwt), not an id token's or none.
    for typ in ["JWT", ""] {
        let token = keys.sign(&claims("https://idp.example", "bp-api", "ada-ext"), typ).expect("sign");
        assert_eq!(call(token).await.0, StatusCode::UNAUTHORIZED, "typ {typ:?}");
    }
    let token = keys.sign(&claims("https://idp.example", "bp-api", "ada-ext"), "application/AT+JWT").expect("sign");
    assert_eq!(call(token).await.0, StatusCode::OK, "the media type's full form");
    // Payments need a sign-in with two factors.
    let pay = |amr: Value| {
        let mut c = claims("https://idp.example", "bp-api", "ada-ext");
        c["scope"] = json!("accounts payments");
        c["amr"] = amr;
        let api = Api { http: reqwest::Client::new(), base: server.base.clone(), token: sign(&c), dpop: None };
        async move { api.post("/v1/transfers", &json!({}), Some("ext-pay")).await }
    };
    let (status, body) = pay(json!(["pwd"])).await;
    common::assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(
        pay(json!(["pwd", "hwk"])).await.0,
        StatusCode::UNPROCESSABLE_ENTITY,
        "past the check, the body is wrong"
    );

    // An event stream opened with an external token lasts as long as the token: we cannot see
    // the provider's revocations.
    let mut short = claims("https://idp.example", "bp-api", "ada-ext");
    short["exp"] = json!(common::now_s() + 2);
    let stream =
        reqwest::Client::new().get(server.url("/v1/events")).bearer_auth(sign(&short)).send().await.expect("stream");
    assert_eq!(stream.status(), StatusCode::OK);
    let opened = std::time::Instant::now();
    let mut stream = common::sse::Stream::from_response(stream);
    assert!(stream.closes_within(std::time::Duration::from_secs(10)).await, "the stream ends with its token");
    assert!(opened.elapsed() >= std::time::Duration::from_millis(900), "not before the token expires");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_when_a_certificate_is_configured() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write");
    let mut server = Server::start_with(|c| {
        c.server.tls_cert_path = Some(cert_path.clone());
        c.server.tls_key_path = Some(key_path.clone());
    })
    .await;
    assert!(server.base.starts_with("http://"), "harness base");
    let https = server.base.replace("http://127.0.0.1", "https://localhost");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).expect("cert"))
        .resolve("localhost", server.started.as_ref().expect("running").running.addr)
        .build()
        .expect("client");
    let r = client.get(format!("{https}/livez")).send().await.expect("https");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["strict-transport-security"].to_str().expect("ascii").contains("max-age="));
    let d: Value = client
        .get(format!("{https}/.well-known/openid-configuration"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert!(d["issuer"].as_str().expect("issuer").starts_with("https://"));
    assert!(reqwest::get(format!("{}/livez", server.base)).await.is_err(), "no plain HTTP on the TLS port");
    server.stop().await;
}

#[test]
fn create_customer_opens_a_customer_who_can_sign_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bp-server-example"))
        .args([
            "create-customer",
            "--username",
            "carol",
            "--given-name",
            "Carol",
            "--family-name",
            "Shaw",
            "--currencies",
            "EUR,CHF",
        ])
        .env("BP_STORAGE__DATA_DIR", dir.path())
        .env("BP_DEMO", "false")
        .env("BP_AUTH__ARGON2_MEMORY_KIB", "8192")
        .env("BP_AUTH__ARGON2_ITERATIONS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(b"carol-has-a-long-password\n").expect("password");
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("otpauth://totp/bp:carol?secret="), "the TOTP secret is shown once: {stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("carol-has-a-long-password"));
    // A short password is refused, and so is a taken username.
    for (name, password) in [("dave", "short\n"), ("carol", "another-long-password\n")] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bp-server-example"))
            .args(["create-customer", "--username", name, "--given-name", "D", "--family-name", "E"])
            .env("BP_STORAGE__DATA_DIR", dir.path())
            .env("BP_DEMO", "false")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child.stdin.take().expect("stdin").write_all(password.as_bytes()).expect("write");
        let output = child.wait_with_output().expect("wait");
        assert!(!output.status.success(), "{name} must be refused");
    }
}

#[test]
fn print_config_shows_the_effective_settings_and_bad_ones_are_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_bp-server-example"))
        .arg("print-config")
        .env("BP_SCA__LOW_VALUE_COUNT_MAX", "3")
        .output()
        .expect("run");
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let parsed: toml::Table = text.parse().expect("TOML");
    assert_eq!(parsed["server"]["listen"].as_str(), Some("127.0.0.1:8080"));
    assert_eq!(parsed["sca"]["low_value_count_max"].as_integer(), Some(3));
    // A public address in development mode without TLS: refused, with the reason.
    let output = Command::new(env!("CARGO_BIN_EXE_bp-server-example"))
        .arg("print-config")
        .env("BP_SERVER__LISTEN", "0.0.0.0:8080")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
    let output = Command::new(env!("CARGO_BIN_EXE_bp-server-example"))
        .arg("print-config")
        .env("BP_SERVER__LISTNE", "127.0.0.1:1")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2), "a misspelt setting is an error, not ignored");
}

/// `healthcheck`, the container's health check: it asks the server its configuration names
/// (plain HTTP, then TLS with a certificate for another name) and exits 0 on 200, 1 when
/// nothing answers.
#[test]
fn healthcheck_asks_the_configured_servers_own_routes() {
    let healthcheck = |env: &[(&str, &str)], probe: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_bp-server-example"))
            .args(["healthcheck", "--probe", probe, "--timeout-ms", "5000"])
            .env_remove("BP_CONFIG")
            .envs(env.iter().copied())
            .output()
            .expect("run healthcheck");
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, _lines, mut plain) = common::spawn_binary(dir.path(), &[("BP_DEMO", "false")]);
    let listen = base.trim_start_matches("http://").to_owned();
    for probe in ["live", "ready"] {
        let (code, out) = healthcheck(&[("BP_SERVER__LISTEN", &listen)], probe);
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains(&format!("healthy: http://{listen}/{probe}z answered 200")), "{out}");
    }

    // TLS with a certificate for "localhost": the probe asks 127.0.0.1 and still gets its answer.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let tls_dir = tempfile::tempdir().expect("tempdir");
    let (cert_path, key_path) = (tls_dir.path().join("cert.pem"), tls_dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write");
    let (cert_path, key_path) = (cert_path.to_str().expect("utf-8"), key_path.to_str().expect("utf-8"));
    let tls_env =
        [("BP_DEMO", "false"), ("BP_SERVER__TLS_CERT_PATH", cert_path), ("BP_SERVER__TLS_KEY_PATH", key_path)];
    let (tls_base, _tls_lines, mut tls) = common::spawn_binary(tls_dir.path(), &tls_env);
    let tls_listen = tls_base.trim_start_matches("http://").to_owned();
    let mut env = tls_env.to_vec();
    env.push(("BP_SERVER__LISTEN", &tls_listen));
    let (code, out) = healthcheck(&env, "ready");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("https://{tls_listen}/readyz answered 200")), "{out}");

    // Nothing listening: unhealthy, within the timeout.
    plain.kill().expect("kill");
    plain.wait().expect("wait");
    let started = std::time::Instant::now();
    let (code, out) = healthcheck(&[("BP_SERVER__LISTEN", &listen)], "live");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with(&format!("unhealthy: http://{listen}/livez")), "{out}");
    assert!(started.elapsed() < Duration::from_secs(10), "bounded by its timeout");
    tls.kill().expect("kill");
    tls.wait().expect("wait");
}

/// `backup`: a copy of the live database taken while the server runs, checked by the command,
/// refused over an existing file and for a MongoDB store; a server started on the copy (with the
/// signing key, as a restore would be) serves the same customers, who sign in with their
/// passwords of before and find their accounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_copies_the_live_database_and_a_server_on_the_copy_serves_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, _lines, mut child) = common::spawn_binary(dir.path(), &[]);
    let backups = tempfile::tempdir().expect("tempdir");
    let destination = backups.path().join("bp-backup.sqlite");
    let backup = |destination: &std::path::Path, env: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_bp-server-example"))
            .arg("backup")
            .arg(destination)
            .env("BP_STORAGE__DATA_DIR", dir.path())
            .env_remove("BP_CONFIG")
            .envs(env.iter().copied())
            .output()
            .expect("run backup")
    };
    let output = backup(&destination, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("backup\t{}\t", destination.display())), "{stdout}");
    assert!(stdout.contains("currency\tEUR\tposted_minor 0\t"), "the ledger sums to zero: {stdout}");

    // Ada's accounts as the live server shows them. (Signed in after the backup: a TOTP code is
    // accepted once, and the copy must not remember this sign-in's code when she signs in to
    // the restored server within the same 30 s.)
    let accounts = |base: String, token: String| async move {
        let r = reqwest::Client::new().get(format!("{base}/v1/accounts")).bearer_auth(token).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.expect("json")["accounts"].clone()
    };
    let before: Value = common::demo_login(&base, dir.path(), "ada");
    let accounts_before = accounts(base.clone(), before["access_token"].as_str().expect("token").to_owned()).await;

    let again = backup(&destination, &[]);
    assert!(!again.status.success(), "an existing file is never overwritten");
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let mongo = backup(
        &backups.path().join("other.sqlite"),
        &[("BP_STORAGE__KIND", "mongodb"), ("BP_STORAGE__MONGODB__URI", "mongodb://127.0.0.1:1/")],
    );
    assert!(!mongo.status.success());
    assert!(String::from_utf8_lossy(&mongo.stderr).contains("mongodump"));
    child.kill().expect("kill");
    child.wait().expect("wait");

    // The restore: the copy as the database of a new data folder, with the signing key.
    let restored = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&destination, restored.path().join("bp.sqlite")).expect("copy the backup");
    std::fs::copy(dir.path().join("signing-key.pem"), restored.path().join("signing-key.pem")).expect("copy the key");
    let (base, _lines, mut child) = common::spawn_binary(restored.path(), &[("BP_DEMO", "false")]);
    let after: Value = common::demo_login(&base, dir.path(), "ada");
    let accounts_after = accounts(base, after["access_token"].as_str().expect("token").to_owned()).await;
    // The same accounts. Their balances are the backup's: the demo's payment abroad may have
    // been settled by the live server after the copy was taken (the restored server's worker
    // then asks its rail again), so the restored events are a prefix of the live ones.
    let stable = |accounts: &Value| -> Vec<Value> {
        accounts
            .as_array()
            .expect("accounts")
            .iter()
            .map(|a| json!([a["id"], a["number"], a["currency"], a["kind"], a["status"], a["opened_at"]]))
            .collect()
    };
    assert_eq!(stable(&accounts_after), stable(&accounts_before), "the restored server has ada's accounts");
    for (after, before) in
        accounts_after.as_array().expect("accounts").iter().zip(accounts_before.as_array().expect("a"))
    {
        let seq = |a: &Value| a["last_event_seq"].as_u64().expect("seq");
        assert!(0 < seq(after) && seq(after) <= seq(before), "restored {after} is not a prefix of {before}");
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
}

/// The configuration of deploy/kubernetes/ is one this server accepts: the ConfigMap's
/// `config.toml` with the `BP_*` variables of the Deployment (the password put in as Kubernetes
/// would), in production mode on MongoDB and Kafka; the password is never printed; and the
/// files and ports it names are the ones the Deployment mounts and opens.
#[test]
fn the_kubernetes_configuration_is_one_the_server_accepts() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    let configmap = std::fs::read_to_string(root.join("configmap.yaml")).expect("configmap.yaml");
    let deployment = std::fs::read_to_string(root.join("deployment.yaml")).expect("deployment.yaml");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.toml");
    std::fs::write(&file, yaml_block(&configmap, "config.toml:")).expect("write");

    // The Deployment's variables: `- name: BP_…` and the `value:` on the next line.
    let password = "Sesame-0f-The-Deployment";
    let lines: Vec<&str> = deployment.lines().map(str::trim).collect();
    let mut env: Vec<(String, String)> = Vec::new();
    for pair in lines.windows(2) {
        if let (Some(name), Some(value)) = (pair[0].strip_prefix("- name: BP_"), pair[1].strip_prefix("value: ")) {
            let value = value.trim_matches('"').replace("$(MONGODB_PASSWORD)", password);
            env.push((format!("BP_{name}"), value));
        }
    }
    assert!(env.iter().any(|(k, _)| k == "BP_CONFIG") && env.iter().any(|(k, _)| k == "BP_STORAGE__MONGODB__URI"));
    let output = Command::new(env!("CARGO_BIN_EXE_bp-server-example"))
        .arg("print-config")
        .envs(env.iter().filter(|(k, _)| k != "BP_CONFIG").map(|(k, v)| (k, v)))
        .env("BP_CONFIG", &file)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!text.contains(password), "the password is never printed");
    let config: toml::Table = text.parse().expect("TOML");
    assert_eq!(config["mode"].as_str(), Some("production"));
    assert_eq!(config["demo"].as_bool(), Some(false));
    assert_eq!(config["storage"]["kind"].as_str(), Some("mongodb"));
    assert_eq!(config["bus"]["kind"].as_str(), Some("kafka"));
    assert!(config["storage"]["mongodb"]["uri"].as_str().expect("uri").contains("(redacted)"));
    let clients: Vec<&str> =
        config["auth"]["clients"].as_array().expect("clients").iter().filter_map(|c| c["id"].as_str()).collect();
    assert!(!clients.contains(&"bp-cli"), "the development client is left out: {clients:?}");

    // Every file the configuration names is under a folder the Deployment mounts.
    let mounted = |path: &str| {
        let dir = std::path::Path::new(path).parent().expect("a folder").to_str().expect("utf-8");
        assert!(deployment.contains(&format!("mountPath: {dir}\n")), "{path}: no volume is mounted at {dir}");
    };
    mounted(config["server"]["tls_cert_path"].as_str().expect("cert"));
    mounted(config["server"]["tls_key_path"].as_str().expect("key"));
    mounted(config["auth"]["signing_key_file"].as_str().expect("signing key"));
    mounted(&format!("{}/bp.sqlite", config["storage"]["data_dir"].as_str().expect("data dir")));
    mounted(env.iter().find(|(k, _)| k == "BP_CONFIG").map(|(_, v)| v.as_str()).expect("BP_CONFIG"));
    // And the ports are the container's.
    for (setting, port) in [("listen", "https"), ("metrics_listen", "metrics")] {
        let addr: std::net::SocketAddr = config["server"][setting].as_str().expect("address").parse().expect("address");
        let declared = format!("- name: {port}\n              containerPort: {}\n", addr.port());
        assert!(deployment.contains(&declared), "server.{setting} {addr} is not the container's port {port}");
    }
}

/// The text of the YAML block scalar (`key: |`) at `key`: its lines, less their indentation.
fn yaml_block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| !l.trim_start().starts_with(key)).skip(1).peekable();
    let indent = lines.peek().map(|l| l.len() - l.trim_start().len()).expect("a block after the key");
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}
