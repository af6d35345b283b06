//! The faults, on a timeline: a phase of load, then SIGKILL to the replica that holds the
//! background jobs' leases (and the time until the survivors hold them all, from their
//! `/metrics`), a phase later the database stopped for the outage and started again, then a
//! last phase of load.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::{Env, FaultReport, Marks};

/// How often the survivors' metrics are read while the jobs move.
const POLL: Duration = Duration::from_millis(50);
/// The longest wait for the jobs to move (12 leases of the default 5 s).
const MOVE_MAX: Duration = Duration::from_secs(60);

/// Runs the timeline; marks each fault in `marks` when it happens.
pub async fn run(env: &Env, marks: &Marks) -> Result<FaultReport, String> {
    let began = Instant::now();
    tokio::time::sleep(env.phase).await;
    let (victim, jobs) = lease_holder(env).await?;
    let pid = rustix::process::Pid::from_raw(env.replicas[victim].pid).ok_or("a replica's pid is not a pid")?;
    // Marked just before the signal: a request in flight then may be cut by it.
    let killed = Instant::now();
    let _ = marks.killed.set(killed);
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).map_err(|e| format!("SIGKILL: {e}"))?;
    let dead = wait_dead(env.replicas[victim].pid).await?;
    let _ = marks.dead.set(dead);
    println!(
        "ha_load: {:>6} ms: SIGKILL to replica {} (pid {}), holder of {jobs:?}; gone {} ms later",
        killed.duration_since(began).as_millis(),
        victim + 1,
        env.replicas[victim].pid,
        dead.duration_since(killed).as_millis()
    );
    let moved = jobs_moved(env, victim, &jobs, killed).await;
    match moved {
        Some(d) => println!("ha_load: its jobs were held by the survivors {} ms after the SIGKILL", d.as_millis()),
        None => println!("ha_load: its jobs were NOT held by the survivors within {} s", MOVE_MAX.as_secs()),
    }
    tokio::time::sleep_until((killed + env.phase).into()).await;

    let _ = marks.db_stopped.set(Instant::now());
    shell(&env.db_stop).await.map_err(|e| format!("stopping the database: {e}"))?;
    println!("ha_load: {:>6} ms: the database is stopped", began.elapsed().as_millis());
    tokio::time::sleep(env.outage).await;
    shell(&env.db_start).await.map_err(|e| format!("starting the database: {e}"))?;
    let started = Instant::now();
    let _ = marks.db_started.set(started);
    println!("ha_load: {:>6} ms: the database is started again", began.elapsed().as_millis());
    tokio::time::sleep_until((started + env.phase).into()).await;
    Ok(FaultReport { killed: Some(victim), jobs, jobs_moved: moved })
}

/// When the process `pid` (not this one's child) has exited: no longer in /proc, or a zombie
/// (its sockets are closed then).
async fn wait_dead(pid: i32) -> Result<Instant, String> {
    let stat = format!("/proc/{pid}/stat");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match std::fs::read_to_string(&stat) {
            // The state follows the command's closing parenthesis.
            Ok(text) if !text.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')) => {}
            _ => return Ok(Instant::now()),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(format!("process {pid} still runs 10 s after its SIGKILL"))
}

/// The replica holding the most jobs' leases, and those jobs.
async fn lease_holder(env: &Env) -> Result<(usize, Vec<String>), String> {
    let mut best: Option<(usize, Vec<String>)> = None;
    for (i, r) in env.replicas.iter().enumerate() {
        let held: Vec<String> = leases(&r.metrics).await?.into_iter().filter(|(_, v)| *v).map(|(j, _)| j).collect();
        if best.as_ref().is_none_or(|(_, jobs)| held.len() > jobs.len()) {
            best = Some((i, held));
        }
    }
    match best {
        Some((i, jobs)) if !jobs.is_empty() => Ok((i, jobs)),
        _ => Err("no replica holds a job's lease before the kill".to_owned()),
    }
}

/// How long after `killed` every one of `jobs` was held by a replica other than `victim`.
async fn jobs_moved(env: &Env, victim: usize, jobs: &[String], killed: Instant) -> Option<Duration> {
    while killed.elapsed() < MOVE_MAX {
        let mut held = BTreeMap::new();
        for (i, r) in env.replicas.iter().enumerate() {
            if i == victim {
                continue;
            }
            for (job, on) in leases(&r.metrics).await.unwrap_or_default() {
                *held.entry(job).or_insert(false) |= on;
            }
        }
        if jobs.iter().all(|j| held.get(j) == Some(&true)) {
            return Some(killed.elapsed());
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

/// `bp_job_lease_held{job="JOB"}` of the metrics listener at `base`: whether it holds each job.
pub async fn leases(base: &str) -> Result<BTreeMap<String, bool>, String> {
    let text = reqwest::get(format!("{base}/metrics")).await.map_err(|e| e.to_string())?;
    let text = text.text().await.map_err(|e| e.to_string())?;
    Ok(text
        .lines()
        .filter_map(|line| line.strip_prefix("bp_job_lease_held{job=\""))
        .filter_map(|rest| {
            let (job, value) = rest.split_once("\"}")?;
            Some((job.to_owned(), value.trim() == "1"))
        })
        .collect())
}

/// Runs `command` with `sh -c`; an error names its status and output.
async fn shell(command: &str) -> Result<(), String> {
    let owned = command.to_owned();
    let output = tokio::task::spawn_blocking(move || std::process::Command::new("sh").args(["-c", &owned]).output())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{command}` exited with {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
