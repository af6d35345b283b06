//! The report: for each phase, the requests made, how many failed (and how), and the latency
//! percentiles; the payments and their retries; the streams; the time the jobs took to move.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::pay::{Ended, Payment};
use crate::sse::Followed;
use crate::{Attempt, Env, FaultReport, Marks, Outcome, Phase};

/// The `per_mille`-th per-mille of sorted durations, nearest rank.
fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * per_mille).div_ceil(1000);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn outcome_name(o: &Outcome) -> String {
    match o {
        Outcome::Status { code, problem: true } => format!("{code} problem"),
        Outcome::Status { code, .. } => code.to_string(),
        Outcome::Network(_) => "network error".to_owned(),
    }
}

/// Prints the report on standard output.
pub fn print(
    attempts: &[Attempt],
    marks: &Marks,
    payments: &[Payment],
    streams: &[Followed],
    faults: &FaultReport,
    load: Duration,
    env: &Env,
) {
    println!();
    println!(
        "HA test: {} replicas behind nginx, {} customers paying and following their events, {} s of load",
        env.replicas.len(),
        env.customers,
        load.as_secs()
    );
    println!("phase          requests  failed  p50 ms  p99 ms  max ms  failures");
    for phase in Phase::ALL {
        let mine: Vec<&Attempt> = attempts.iter().filter(|a| marks.phase_at(a.ended()) == phase).collect();
        let mut took: Vec<Duration> = mine.iter().map(|a| a.took).collect();
        took.sort();
        let mut failed: BTreeMap<String, usize> = BTreeMap::new();
        for a in mine.iter().filter(|a| a.outcome.failed()) {
            *failed.entry(format!("{} {}", a.what, outcome_name(&a.outcome))).or_default() += 1;
        }
        let failures: Vec<String> = failed.iter().map(|(k, n)| format!("{n}× {k}")).collect();
        println!(
            "{:<14} {:>8}  {:>6}  {:>6}  {:>6}  {:>6}  {}",
            phase.name(),
            mine.len(),
            failed.values().sum::<usize>(),
            percentile(&took, 500).as_millis(),
            percentile(&took, 990).as_millis(),
            took.last().copied().unwrap_or_default().as_millis(),
            failures.join(", ")
        );
    }
    print_payments(payments);
    let opened: u32 = streams.iter().map(|s| s.opened).sum();
    let failed: u32 = streams.iter().map(|s| s.open_failures).sum();
    let events: usize = streams.iter().flat_map(|s| s.events.values()).map(Vec::len).sum();
    println!(
        "streams: {} clients received {events} ledger events over {opened} streams ({} reconnections; \
         {failed} openings failed)",
        streams.len(),
        opened.saturating_sub(u32::try_from(streams.len()).unwrap_or(0)),
    );
    match (faults.killed, faults.jobs_moved) {
        (Some(r), Some(d)) => println!(
            "replica {} killed (SIGKILL) holding {:?}: the survivors held every one {} ms later",
            r + 1,
            faults.jobs,
            d.as_millis()
        ),
        (Some(r), None) => println!("replica {} killed: its jobs did NOT move", r + 1),
        _ => println!("no replica was killed"),
    }
}

fn print_payments(payments: &[Payment]) {
    let acked = payments.iter().filter(|p| matches!(p.ended, Ended::Acknowledged { .. })).count();
    let retried: Vec<&Payment> = payments.iter().filter(|p| p.attempts > 1).collect();
    let retried_acked = retried.iter().filter(|p| matches!(p.ended, Ended::Acknowledged { .. })).count();
    let attempts_max = payments.iter().map(|p| p.attempts).max().unwrap_or(0);
    println!(
        "payments: {} made, {acked} acknowledged; {} retried with their Idempotency-Key ({retried_acked} of them \
         acknowledged), at most {attempts_max} attempts for one",
        payments.len(),
        retried.len()
    );
}
