// Test cases for bp-money-no-float (`semgrep --test .semgrep/`).

// ruleid: bp-money-no-float
fn fee(amount_minor: i64, rate: f64) -> i64 {
    // ok: bp-money-no-float
    amount_minor / 100
}

fn cast(amount_minor: i64) {
    // ruleid: bp-money-no-float
    let units = amount_minor as f64;
    // ruleid: bp-money-no-float
    let parsed = "12.50".parse::<f64>();
    // ruleid: bp-money-no-float
    let widened = f64::from(7u32);
    // ruleid: bp-money-no-float
    let half = 0.5;
    // ruleid: bp-money-no-float
    let big = 1e6;
    // ok: bp-money-no-float
    let exact = 125_i64;
    // ok: bp-money-no-float
    let text = "0.5";
    // ok: bp-money-no-float
    let field = pair.0;
}

struct Quote {
    // ruleid: bp-money-no-float
    rate: f32,
}

fn gauges(stats: &Stats) {
    // ok: bp-money-no-float
    let g = |v: &std::sync::atomic::AtomicU64| v.load(Relaxed) as f64;
    // ruleid: bp-money-no-float
    let not_a_counter = stats.balance_minor as f64;
}

fn literals() {
    // ruleid: bp-money-no-float
    let suffixed = 2f64;
    // ruleid: bp-money-no-float
    let max = f64::MAX;
    // ok: bp-money-no-float
    let hex = 0x1f32;
    // ok: bp-money-no-float
    let typed = 7u32;
}

fn metrics(stats: &Stats, elapsed: std::time::Duration) {
    // ok: bp-money-no-float
    metrics::gauge!("bp_sse_clients").increment(1.0);
    // ok: bp-money-no-float
    metrics::histogram!("bp_http_request_duration_seconds", "route" => route).record(elapsed.as_secs_f64());
    // ok: bp-money-no-float
    let buckets = [0.0005, 0.001, 0.5];
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("bp_http_request_duration_seconds".to_owned()), &buckets)
        .unwrap_or_else(|_| PrometheusBuilder::new());
    // ruleid: bp-money-no-float
    let fee = [0.5, 1.5];
    // ruleid: bp-money-no-float
    metrics::gauge!("bp_balance").set(balance_minor as f64 / 100.0);
}

impl<'de> serde::de::Visitor<'de> for RateVisitor {
    type Value = EurRate;

    // ok: bp-money-no-float
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<EurRate, E> {
        Err(E::custom("write the rate as a string"))
    }
}

impl<'de> serde::de::Visitor<'de> for AmountVisitor {
    type Value = Money;

    // ruleid: bp-money-no-float
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Money, E> {
        // ruleid: bp-money-no-float
        Money::from_minor((v * 100.0) as i64).map_err(E::custom)
    }
}
