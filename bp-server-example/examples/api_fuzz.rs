//! Runs schemathesis (given as the first argument, a path to its executable) against a live
//! server, authenticated as a signed-in customer, with every check, over the committed
//! description `docs/api/openapi.json`. Exits with schemathesis's status. The full suite
//! (`scripts/test.sh`) installs schemathesis and runs this.
//!
//! `cargo run -p bp-server-example --example api_fuzz -- /path/to/schemathesis [extra args]`

mod support;

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(schemathesis) = args.next() else {
        eprintln!("usage: api_fuzz <schemathesis executable> [extra schemathesis arguments]");
        return ExitCode::from(2);
    };
    let extra: Vec<String> = args.collect();
    // Reached as localhost (a domain name), so that the passkey routes are served, not refused
    // as unavailable on an IP address: a free port, taken before the server starts.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()).expect("a free port").port();
    let h = support::harness(|c| {
        c.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        c.server.public_url = Some(format!("http://localhost:{port}"));
        // Fuzzing answers many challenges wrongly: keep the customer from locking out.
        c.lockout.failures_max = 1_000_000;
        c.auth.login_attempts_per_minute = 1_000_000;
        c.auth.login_attempts_per_username_per_minute = 1_000_000;
    })
    .await;
    let payer = h.person("fuzz-payer", 2, 100_000_000).await;
    let tokens =
        support::login(&h.base, &payer, "openid profile accounts payments offline_access", support::step_now()).await;
    let token = tokens["access_token"].as_str().expect("access token").to_owned();
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api/openapi.json");
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis.toml");
    let base = h.base.clone();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(schemathesis)
            .arg("--config-file")
            .arg(&config)
            .arg("run")
            .arg(&spec)
            .args(["--url", &base])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--checks", "all"])
            .args(extra)
            .status()
    })
    .await
    .expect("join");
    h.started.running.stop().await.expect("stop");
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("schemathesis failed: {s}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("cannot run schemathesis: {e}");
            ExitCode::FAILURE
        }
    }
}
