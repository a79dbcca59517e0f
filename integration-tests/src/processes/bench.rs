//! The replication benchmark: C concurrent proposers against the leader of one group on a
//! three-process cluster, each proposal acknowledged only once applied (a committed entry,
//! fsynced on a majority). Measures throughput, latency, and where the time goes (shell loop
//! iterations, fsyncs, time inside `process`, CPU per process, messages).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use decree_runtime::node_shell::rpc::{ClientReply, ClientRequest, ShellCounters};
use decree_types::{GroupId, NodeId};
use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::client::{Caller, LogClient, ProposeOutcome};

/// One row of the table.
#[derive(Clone, Debug)]
pub struct BenchRow {
    /// Concurrent proposers.
    pub concurrency: usize,
    /// Acknowledged proposals per second over the measured window.
    pub entries_per_s: f64,
    /// Latency percentiles, in microseconds.
    pub p50_us: u64,
    /// 99th percentile, in microseconds.
    pub p99_us: u64,
    /// Proposals whose outcome was unknown (should be 0 in a fault-free run).
    pub unknown: u64,
    /// The leader's shell counters over the window.
    pub leader: CounterDelta,
    /// A follower's shell counters over the window.
    pub follower: CounterDelta,
    /// CPU used by each node process over the window, as a fraction of one core.
    pub cpu_cores: BTreeMap<NodeId, f64>,
}

/// What one node's shell did during a window.
#[derive(Clone, Copy, Debug, Default)]
pub struct CounterDelta {
    /// Loop iterations.
    pub iterations: u64,
    /// fsyncs.
    pub fsyncs: u64,
    /// Microseconds inside `process` (persist + fsync + send hand-off).
    pub process_us: u64,
    /// Microseconds inside fsync (part of `process_us`).
    pub sync_us: u64,
    /// Microseconds busy in the loop (everything but waiting for input).
    pub busy_us: u64,
    /// Raft messages in and out.
    pub messages: u64,
    /// Entries applied.
    pub applied: u64,
}

impl CounterDelta {
    fn between(a: &ShellCounters, b: &ShellCounters) -> Self {
        CounterDelta {
            iterations: b.iterations.saturating_sub(a.iterations),
            fsyncs: b.fsyncs.saturating_sub(a.fsyncs),
            process_us: b.process_us.saturating_sub(a.process_us),
            sync_us: b.sync_us.saturating_sub(a.sync_us),
            busy_us: b.busy_us.saturating_sub(a.busy_us),
            messages: (b.messages_in + b.messages_out)
                .saturating_sub(a.messages_in + a.messages_out),
            applied: b.applied.saturating_sub(a.applied),
        }
    }
}

/// Bare `fdatasync` latency on the filesystem of `dir`: `samples` appends of `bytes` bytes,
/// each followed by `fdatasync`. Returns (p50, p99) in microseconds. The benchmark prints it
/// next to its results: on a shared machine the disk sets the floor of every figure.
pub fn probe_fdatasync(
    dir: &std::path::Path,
    samples: usize,
    bytes: usize,
) -> std::io::Result<(u64, u64)> {
    use std::io::Write;
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    // Invariant: 1 µs .. 60 s with 3 significant digits is a valid histogram range.
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .expect("static histogram bounds are valid");
    let payload = vec![b'x'; bytes];
    for _ in 0..samples {
        file.write_all(&payload)?;
        let started = std::time::Instant::now();
        file.sync_data()?;
        let _ = hist.record((started.elapsed().as_micros() as u64).max(1));
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok((hist.value_at_quantile(0.5), hist.value_at_quantile(0.99)))
}

/// CPU time (user + system) of a process, in seconds, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0) // USER_HZ is 100 on Linux
}

async fn counters<C: Caller>(client: &LogClient<C>, node: NodeId) -> ShellCounters {
    match client.call(node, ClientRequest::Status).await {
        Ok(ClientReply::Status(s)) => s.counters,
        _ => ShellCounters::default(),
    }
}

/// Runs one level: `concurrency` proposers of `entry_bytes`-byte commands for `warmup` then
/// `measure`.
#[allow(clippy::too_many_arguments)]
pub async fn run_level<C: Caller>(
    client: Arc<LogClient<C>>,
    group: GroupId,
    leader: NodeId,
    follower: NodeId,
    pids: &BTreeMap<NodeId, u32>,
    concurrency: usize,
    entry_bytes: usize,
    warmup: Duration,
    measure: Duration,
) -> BenchRow {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (client, stop, measuring) = (client.clone(), stop.clone(), measuring.clone());
        tasks.push(tokio::spawn(async move {
            // Invariant: 1 µs .. 60 s with 3 significant digits is a valid histogram range.
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .expect("static histogram bounds are valid");
            let (mut acked, mut unknown) = (0u64, 0u64);
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let mut command = format!("c{concurrency}-w{w}-{seq}-").into_bytes();
                command.resize(entry_bytes.max(command.len()), b'.');
                let started = Instant::now();
                let outcome =
                    client.propose(group, command, started + Duration::from_secs(10)).await;
                let us = started.elapsed().as_micros() as u64;
                if measuring.load(Ordering::Relaxed) {
                    match outcome {
                        ProposeOutcome::Acknowledged { .. } => {
                            acked += 1;
                            let _ = hist.record(us.max(1));
                        }
                        ProposeOutcome::Unknown(_) => unknown += 1,
                    }
                }
            }
            (hist, acked, unknown)
        }));
    }
    tokio::time::sleep(warmup).await;

    let before_leader = counters(&client, leader).await;
    let before_follower = counters(&client, follower).await;
    let cpu_before: BTreeMap<NodeId, f64> =
        pids.iter().filter_map(|(n, p)| Some((*n, cpu_seconds(*p)?))).collect();
    let t0 = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(measure).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu_after: BTreeMap<NodeId, f64> =
        pids.iter().filter_map(|(n, p)| Some((*n, cpu_seconds(*p)?))).collect();
    let after_leader = counters(&client, leader).await;
    let after_follower = counters(&client, follower).await;
    stop.store(true, Ordering::Relaxed);

    // Invariant: same bounds as the per-task histograms.
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .expect("static histogram bounds are valid");
    let (mut acked, mut unknown) = (0u64, 0u64);
    for t in tasks {
        if let Ok((h, a, u)) = t.await {
            let _ = hist.add(&h);
            acked += a;
            unknown += u;
        }
    }
    let cpu_cores = cpu_after
        .iter()
        .filter_map(|(n, after)| Some((*n, (after - cpu_before.get(n)?) / elapsed)))
        .collect();
    BenchRow {
        concurrency,
        entries_per_s: acked as f64 / elapsed,
        p50_us: hist.value_at_quantile(0.50),
        p99_us: hist.value_at_quantile(0.99),
        unknown,
        leader: CounterDelta::between(&before_leader, &after_leader),
        follower: CounterDelta::between(&before_follower, &after_follower),
        cpu_cores,
    }
}
