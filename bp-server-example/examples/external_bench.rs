//! An interbank payment's end-to-end time through the rail simulator: `POST
//! /v1/interbank-transfers` over HTTP, the worker's submission to the simulator over loopback
//! HTTP (a pacs.008), the simulator's signed status webhooks back to the server (pacs.002), and
//! the record settled in the store with its hold posted. The simulator answers and settles at
//! once (`simulator_settle_after_ms = 0`), so the figures are this server's pipeline, not the
//! simulator's delays. Prints `name value unit` lines (docs/benchmarks.md).
//!
//! `cargo run --release -p bp-server-example --example external_bench`
//! (`BP_BENCH_PAYMENTS=n`, default 200, one at a time.)

mod support;

use std::time::{Duration, Instant};

use bp_core::service_record::ServiceStatus;
use serde_json::json;

#[tokio::main]
async fn main() {
    let payments: usize = std::env::var("BP_BENCH_PAYMENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let h = support::harness(|c| {
        c.external.sepa.simulate = true;
        c.external.sepa.simulator_settle_after_ms = 0;
        // Every payment exempt (1.00 EUR, low value): the figures are the rail's path, not SCA's.
        c.sca.low_value_count_max = u32::MAX;
        c.sca.low_value_total_max_units = i64::MAX / 1_000;
        c.auth.login_attempts_per_minute = 1_000_000;
    })
    .await;
    let payer = h.person("bench-iban", 1, 100_000_000).await;
    let tokens = support::login(&h.base, &payer, "openid accounts payments", support::step_now()).await;
    let token = tokens["access_token"].as_str().expect("access token").to_owned();
    let http = reqwest::Client::new();
    let (mut answers, mut settles) = (Vec::with_capacity(payments), Vec::with_capacity(payments));
    for i in 0..payments {
        let body = json!({
            "from_account": payer.accounts[0], "to_iban": "DE89370400440532013000", "to_name": "Erika Mustermann",
            "amount": { "amount": "1.00", "currency": "EUR" },
        });
        let sent = Instant::now();
        let response = http
            .post(format!("{}/v1/interbank-transfers", h.base))
            .bearer_auth(&token)
            .header("idempotency-key", format!("bench-{i}"))
            .json(&body)
            .send()
            .await
            .expect("pay");
        assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
        let answer: serde_json::Value = response.json().await.expect("json");
        answers.push(sent.elapsed());
        let id = answer["service"].as_str().expect("service").parse().expect("id");
        loop {
            let record = h.started.state.services.service_record(id).await.expect("read").expect("record");
            match record.status {
                ServiceStatus::Settled => break,
                ServiceStatus::Rejected => panic!("rejected: {record:?}"),
                _ => tokio::time::sleep(Duration::from_micros(200)).await,
            }
        }
        settles.push(sent.elapsed());
    }
    h.started.running.stop().await.expect("stop");
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    for (name, mut samples) in [("external_answer", answers), ("external_settled", settles)] {
        samples.sort();
        for (label, q) in [("p50", 50), ("p99", 99)] {
            let d = samples[(samples.len() * q / 100).min(samples.len() - 1)];
            println!("{name}_{label}_ms {}.{:03} ms", us(d) / 1_000, us(d) % 1_000);
        }
    }
    println!("external_payments {payments} payments");
}
