//! The bank workload against a running cluster, shared by `decree bank` and `decree demo`
//! (TESTING.md, "The bank check").
//!
//! - **Accounts** spread over every participant group: one key prefix inside each group's
//!   range, so most transfers are cross-group 2PC transactions.
//! - **Transfers** (one task per client): with `Client::transact`, read both balances; if
//!   the source would go negative, return without writing (a `fail` in the history); else
//!   write both and commit. An error the library could not resolve is `info` (unknown),
//!   never `fail`.
//! - **Audits** (one task): a read-only snapshot read of every account, checked with
//!   `Bank::audit` — the sum must equal the initial total and no balance may be negative.
//! - Every operation is appended to a Jepsen-style history (`HistoryWriter`) when asked.
//!
//! [`Stats`] is shared with the caller, which draws the progress line and the report.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use decree_client::bank::{
    decode_balance, encode_balance, Bank, HistoryWriter, OpKind, OpType, Transfer,
};
use decree_client::{Client, ClusterFile, Error, Key};
use decree_types::DetRng;
use hdrhistogram::Histogram;
use serde_json::json;

use super::client_opts::CmdError;

/// Writes per initialisation transaction (well under the protocol's keys-per-transaction
/// bound).
const INIT_BATCH_KEYS: usize = 64;

/// What to run.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Concurrent transfer clients.
    pub clients: usize,
    /// How long transfers run.
    pub duration: Duration,
    /// Pause between audits.
    pub audit_every: Duration,
    /// Largest transfer.
    pub max_amount: i64,
    /// Seed of the transfer choices.
    pub seed: u64,
    /// Where to write the history, if anywhere.
    pub history: Option<PathBuf>,
    /// Only transfers between accounts of the same group (1PC), for the benchmark.
    pub same_group_only: bool,
    /// Only transfers between accounts of different groups (2PC).
    pub cross_group_only: bool,
}

/// Counters the workload updates and the caller reads while it runs.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    /// Transfers that committed with writes.
    pub transfers_ok: AtomicU64,
    /// Of those, transfers between two groups.
    pub transfers_cross_group: AtomicU64,
    /// Transfers that committed without writing (source balance too low).
    pub transfers_declined: AtomicU64,
    /// Transfers that certainly did not take effect because of an error.
    pub transfers_failed: AtomicU64,
    /// Transfers whose outcome could not be learned.
    pub transfers_unknown: AtomicU64,
    /// Audits that read every account and were valid.
    pub audits_valid: AtomicU64,
    /// Audits that read every account and were NOT valid.
    pub audits_invalid: AtomicU64,
    /// Audits that could not read (an error; no verdict).
    pub audits_failed: AtomicU64,
    /// Set by the caller: in-doubt transactions right now.
    pub in_doubt_now: AtomicU64,
    /// Set by the caller: faults injected so far.
    pub faults: AtomicU64,
    /// Latency of committed transfers, microseconds.
    latency_us: Mutex<Histogram<u64>>,
    /// Every audit's verdict in order: (seconds since start, valid, description).
    audits: Mutex<Vec<(f64, bool, String)>>,
    /// Errors seen, by kind, for the report.
    errors: Mutex<BTreeMap<String, u64>>,
    stop: AtomicBool,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            started: Instant::now(),
            transfers_ok: AtomicU64::new(0),
            transfers_cross_group: AtomicU64::new(0),
            transfers_declined: AtomicU64::new(0),
            transfers_failed: AtomicU64::new(0),
            transfers_unknown: AtomicU64::new(0),
            audits_valid: AtomicU64::new(0),
            audits_invalid: AtomicU64::new(0),
            audits_failed: AtomicU64::new(0),
            in_doubt_now: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            // Invariant: 1 µs to 1 h with 3 significant digits is a valid histogram shape.
            latency_us: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            ),
            audits: Mutex::new(Vec::new()),
            errors: Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
        }
    }

    /// Time since the workload started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Latency percentile of committed transfers, in milliseconds.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        let h = self.latency_us.lock().unwrap_or_else(PoisonError::into_inner);
        if h.is_empty() {
            return 0.0;
        }
        h.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// Every audit's verdict: (seconds since start, valid, description).
    pub fn audits(&self) -> Vec<(f64, bool, String)> {
        self.audits.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Errors by kind.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Asks the workload to stop early (ctrl-c): the run ends with its final audit.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Was the workload asked to stop?
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn error(&self, e: &Error) {
        let kind = match e {
            Error::Conflict { .. } => "conflict (retries exhausted)",
            Error::Ambiguous { .. } => "ambiguous (unresolved)",
            Error::Aborted { .. } => "aborted",
            Error::Unavailable { .. } => "unavailable",
            Error::KeyOutOfRange { .. } => "key out of range",
            Error::Tls { .. } => "tls",
            Error::ClockRejected { .. } => "clock rejected",
            Error::Protocol { .. } => "protocol",
            _ => "other",
        };
        *self
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind.into())
            .or_default() += 1;
    }
}

/// The bank of a cluster: one account prefix inside each participant group's range.
pub fn bank_for(cluster: &ClusterFile, accounts_per_group: usize, initial: i64) -> Bank {
    let prefixes: Vec<String> = cluster
        .participant_groups
        .iter()
        .map(|(range, _)| {
            let start = String::from_utf8_lossy(range.start.as_bytes()).into_owned();
            let candidates = [
                format!("{}/", if start.is_empty() { "a" } else { start.as_str() }),
                format!("{start}/"),
                format!("{start}0/"),
            ];
            candidates
                .iter()
                .find(|p| range.contains(&Key::new(format!("{p}acct-0000"))))
                .cloned()
                .unwrap_or_else(|| format!("{start}/"))
        })
        .collect();
    let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    Bank::new(&refs, accounts_per_group, initial)
}

/// The account prefix (its group) of an account key.
fn prefix(account: &str) -> &str {
    account.split_once("acct-").map_or(account, |(p, _)| p)
}

/// A running bank workload.
#[derive(Debug)]
pub struct Workload {
    /// The accounts.
    pub bank: Bank,
    /// The counters.
    pub stats: Arc<Stats>,
    /// Where the history went.
    pub history: Option<PathBuf>,
}

type History = Arc<Mutex<Option<HistoryWriter<BufWriter<File>>>>>;

impl Workload {
    /// Sets every account to the initial balance (one transaction per group and batch).
    pub async fn init(client: &Client, bank: &Bank) -> Result<(), CmdError> {
        let mut by_prefix: BTreeMap<String, Vec<Key>> = BTreeMap::new();
        for account in bank.accounts() {
            by_prefix
                .entry(prefix(&account.escaped()).to_string())
                .or_default()
                .push(account.clone());
        }
        for keys in by_prefix.values() {
            for batch in keys.chunks(INIT_BATCH_KEYS) {
                let initial = bank.initial_balance();
                client
                    .transact(|txn| {
                        let batch = batch.to_vec();
                        async move {
                            for key in batch {
                                txn.put(key, encode_balance(initial))?;
                            }
                            Ok(())
                        }
                    })
                    .await
                    .map_err(|e| CmdError::client("creating the accounts", e))?;
            }
        }
        Ok(())
    }

    /// Runs transfers and audits for `config.duration`, then one final audit; returns when
    /// done. `client` must already be connected and the accounts created ([`Workload::init`]).
    pub async fn run(
        client: Client,
        bank: Bank,
        config: WorkloadConfig,
        stats: Arc<Stats>,
    ) -> Result<Workload, CmdError> {
        let history: History = match &config.history {
            Some(path) => {
                let file = File::create(path).map_err(|e| {
                    CmdError::Io(format!("cannot create the history {}: {e}", path.display()))
                })?;
                Arc::new(Mutex::new(Some(HistoryWriter::new(BufWriter::new(file)))))
            }
            None => Arc::new(Mutex::new(None)),
        };
        let bank = Arc::new(bank);
        let deadline = Instant::now() + config.duration;
        let mut tasks = tokio::task::JoinSet::new();
        let mut rng = DetRng::new(config.seed);
        for process in 0..config.clients.max(1) {
            let (client, bank, stats, history) =
                (client.clone(), Arc::clone(&bank), Arc::clone(&stats), Arc::clone(&history));
            let mut rng = rng.fork();
            let config = config.clone();
            tasks.spawn(async move {
                while Instant::now() < deadline && !stats.stopped() {
                    let t = plan(&bank, &mut rng, &config);
                    transfer(&client, &stats, &history, process as u64, t).await;
                }
            });
        }
        {
            let (client, bank, stats, history) =
                (client.clone(), Arc::clone(&bank), Arc::clone(&stats), Arc::clone(&history));
            let every = config.audit_every;
            let process = config.clients as u64;
            tasks.spawn(async move {
                while Instant::now() < deadline && !stats.stopped() {
                    audit(&client, &bank, &stats, &history, process).await;
                    tokio::time::sleep(every).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        // The final audit: after the faults stop, one must succeed within the recovery bound.
        let final_deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let before = stats.audits_valid.load(Ordering::Relaxed)
                + stats.audits_invalid.load(Ordering::Relaxed);
            audit(&client, &bank, &stats, &history, config.clients as u64).await;
            let after = stats.audits_valid.load(Ordering::Relaxed)
                + stats.audits_invalid.load(Ordering::Relaxed);
            if after > before || Instant::now() >= final_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let writer = history.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(writer) = writer {
            writer.finish().map_err(|e| CmdError::Io(format!("cannot write the history: {e}")))?;
        }
        let bank = Arc::try_unwrap(bank).unwrap_or_else(|b| (*b).clone());
        Ok(Workload { bank, stats, history: config.history.clone() })
    }

    /// A fresh set of counters (the clock starts now).
    pub fn new_stats() -> Arc<Stats> {
        Arc::new(Stats::new())
    }
}

/// Snapshot point reads of random accounts from `readers` tasks for `duration`: how many
/// completed, and their latency in microseconds (the benchmark's read figure).
pub async fn point_reads(
    client: &Client,
    bank: &Bank,
    readers: usize,
    duration: Duration,
    seed: u64,
) -> (u64, u64, Histogram<u64>) {
    let deadline = Instant::now() + duration;
    let accounts: Arc<Vec<Key>> = Arc::new(bank.accounts().to_vec());
    let mut tasks = tokio::task::JoinSet::new();
    let mut rng = DetRng::new(seed);
    for _ in 0..readers.max(1) {
        let (client, accounts) = (client.clone(), Arc::clone(&accounts));
        let mut rng = rng.fork();
        tasks.spawn(async move {
            // Invariant: 1 µs to 1 h with 3 significant digits is a valid histogram shape.
            let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds");
            let (mut ok, mut failed) = (0u64, 0u64);
            while Instant::now() < deadline {
                let key = accounts[rng.range(0, accounts.len() as u64) as usize].clone();
                let started = Instant::now();
                match client.read_only().get(key).await {
                    Ok(_) => {
                        ok += 1;
                        let us = started.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
                        let _ = h.record(us.max(1));
                    }
                    Err(_) => failed += 1,
                }
            }
            (ok, failed, h)
        });
    }
    // Invariant: as above.
    let mut all = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    let (mut ok, mut failed) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        if let Ok((o, f, h)) = joined {
            ok += o;
            failed += f;
            let _ = all.add(&h);
        }
    }
    (ok, failed, all)
}

/// The next transfer, within the configured group pattern.
fn plan(bank: &Bank, rng: &mut DetRng, config: &WorkloadConfig) -> Transfer {
    for _ in 0..64 {
        let t = bank.plan_transfer(rng, config.max_amount);
        let same = prefix(&t.from) == prefix(&t.to);
        if (config.same_group_only && !same) || (config.cross_group_only && same) {
            continue;
        }
        return t;
    }
    bank.plan_transfer(rng, config.max_amount)
}

/// What a transfer's closure found.
#[derive(Clone, Copy, Debug)]
enum Moved {
    Yes,
    Declined,
    Unreadable,
}

async fn transfer(client: &Client, stats: &Stats, history: &History, process: u64, t: Transfer) {
    let value = json!({"from": t.from, "to": t.to, "amount": t.amount});
    record(history, stats, process, OpType::Invoke, OpKind::Transfer, value.clone());
    let started = Instant::now();
    let (from, to, amount) = (t.from.clone(), t.to.clone(), t.amount);
    let result = client
        .transact(|txn| {
            let (from, to) = (from.clone(), to.clone());
            async move {
                let balances = txn.get_many([from.as_str(), to.as_str()]).await?;
                let read =
                    |i: usize| balances.get(i).cloned().flatten().and_then(|b| decode_balance(&b));
                let (Some(a), Some(b)) = (read(0), read(1)) else {
                    return Ok(Moved::Unreadable);
                };
                if a < amount {
                    return Ok(Moved::Declined);
                }
                txn.put(from.as_str(), encode_balance(a - amount))?;
                txn.put(to.as_str(), encode_balance(b + amount))?;
                Ok(Moved::Yes)
            }
        })
        .await;
    match result {
        Ok((Moved::Yes, _)) => {
            let us = started.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
            let _ =
                stats.latency_us.lock().unwrap_or_else(PoisonError::into_inner).record(us.max(1));
            stats.transfers_ok.fetch_add(1, Ordering::Relaxed);
            if prefix(&t.from) != prefix(&t.to) {
                stats.transfers_cross_group.fetch_add(1, Ordering::Relaxed);
            }
            record(history, stats, process, OpType::Ok, OpKind::Transfer, value);
        }
        Ok((Moved::Declined | Moved::Unreadable, _)) => {
            stats.transfers_declined.fetch_add(1, Ordering::Relaxed);
            record(history, stats, process, OpType::Fail, OpKind::Transfer, value);
        }
        Err(e) => {
            stats.error(&e);
            // Only an error that says nothing was changed is a `fail`; everything else may
            // have taken effect and is `info` (unknown).
            let certainly_not_applied = matches!(
                e,
                Error::Conflict { .. }
                    | Error::Aborted { .. }
                    | Error::Unavailable { .. }
                    | Error::KeyOutOfRange { .. }
                    | Error::InvalidArgument { .. }
                    | Error::LimitExceeded(_)
            );
            if certainly_not_applied {
                stats.transfers_failed.fetch_add(1, Ordering::Relaxed);
                record(history, stats, process, OpType::Fail, OpKind::Transfer, value);
            } else {
                stats.transfers_unknown.fetch_add(1, Ordering::Relaxed);
                record(history, stats, process, OpType::Info, OpKind::Transfer, value);
            }
            // Do not spin while the cluster is failing over.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn audit(client: &Client, bank: &Bank, stats: &Stats, history: &History, process: u64) {
    record(history, stats, process, OpType::Invoke, OpKind::Read, serde_json::Value::Null);
    let keys: Vec<Key> = bank.accounts().to_vec();
    // Every account in one snapshot. A snapshot that meets a version inside its uncertainty
    // window reruns at the restart timestamp with the same limit (U-1), so it converges while
    // transfers keep writing; one that meets an unavailable group reruns on a fresh snapshot.
    let result = client
        .read_only_transact(|snapshot| {
            let keys = keys.clone();
            async move { snapshot.get_many(keys).await }
        })
        .await;
    match result {
        Ok(values) => {
            let balances: BTreeMap<String, Option<i64>> = keys
                .iter()
                .zip(values)
                .map(|(k, v)| (k.escaped(), v.as_deref().and_then(decode_balance)))
                .collect();
            let verdict = bank.audit(&balances);
            let at = stats.elapsed().as_secs_f64();
            let valid = verdict.is_valid();
            if valid {
                stats.audits_valid.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.audits_invalid.fetch_add(1, Ordering::Relaxed);
            }
            stats.audits.lock().unwrap_or_else(PoisonError::into_inner).push((
                at,
                valid,
                verdict.to_string(),
            ));
            let value: serde_json::Map<String, serde_json::Value> =
                balances.into_iter().map(|(k, v)| (k, json!(v))).collect();
            record(history, stats, process, OpType::Ok, OpKind::Read, value.into());
        }
        Err(e) => {
            stats.error(&e);
            stats.audits_failed.fetch_add(1, Ordering::Relaxed);
            record(history, stats, process, OpType::Fail, OpKind::Read, serde_json::Value::Null);
        }
    }
}

fn record(
    history: &History,
    stats: &Stats,
    process: u64,
    op_type: OpType,
    f: OpKind,
    value: serde_json::Value,
) {
    let mut guard = history.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(writer) = guard.as_mut() {
        let ns = stats.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        if let Err(e) = writer.record(ns, process, op_type, f, value) {
            eprintln!("decree: cannot write the history ({e}); it stops here");
            *guard = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn accounts_land_in_every_group_of_the_local_cluster() {
        let text = toml::to_string(&decree_server::config::ClusterSpec::local(3, 3, 7000)).unwrap();
        let cluster = ClusterFile::parse(&text, Path::new("cluster.toml")).unwrap();
        let bank = bank_for(&cluster, 4, 100);
        assert_eq!(bank.accounts().len(), 12);
        for (range, _) in &cluster.participant_groups {
            let here = bank.accounts().iter().filter(|k| range.contains(k)).count();
            assert_eq!(here, 4, "range {range}");
        }
    }
}
