//! `decree demo`: the bank-transfer consistency demo on a local cluster of real processes,
//! with faults. No setup: it makes its own run directory, certificates and free ports.
//!
//! 1. Start three `decree start` processes on loopback, each hosting a replica of every
//!    participant group and of the coordinator group; wait until every group has a leader.
//! 2. Create accounts spread over every participant group.
//! 3. Run concurrent transfers and audits ([`super::workload`]) while a seeded schedule of
//!    faults runs: SIGKILL (then restart) the node leading a participant group, SIGKILL the
//!    node leading the coordinator group, SIGSTOP a leader for longer than the election
//!    timeout (then SIGCONT). One fault at a time; the next waits until every group is led.
//! 4. Meanwhile a monitor asks the cluster for its status a few times a second: the in-doubt
//!    count for the live line, and for each fault, how long until every group had a leader
//!    again and every transaction in doubt since the fault was resolved.
//! 5. Report; exit non-zero if any audit was invalid.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use decree_client::{Client, ClientConfig, ClusterFile, QuicLink};
use decree_server::config::Timing;
use decree_types::DetRng;

use super::client_opts::{runtime, CmdError};
use super::local::{LocalCluster, LOCAL_CLIENT};
use super::probe::Prober;
use super::report::{live_line, FaultRecord, Report};
use super::workload::{bank_for, Stats, Workload, WorkloadConfig};

/// Run the bank demo on a local cluster with faults.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seconds of transfers.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Accounts in each participant group.
    #[arg(long, default_value_t = 10)]
    pub accounts: usize,
    /// Concurrent transfer clients.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Faults to inject (cycling through: kill a participant leader's node, kill the
    /// coordinator leader's node, pause a leader).
    #[arg(long, default_value_t = 3)]
    pub faults: usize,
    /// Seed of the fault schedule and transfer choices [default: from the clock; printed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Participant groups.
    #[arg(long, default_value_t = 3)]
    pub groups: u64,
    /// Run the coordinator group on three nodes of its own (six processes in all) instead of
    /// beside the participant groups on every node.
    #[arg(long)]
    pub separate_coordinator: bool,
    /// Run directory [default: a fresh one under the system temp dir; printed].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Where to write the history (JSON Lines, Jepsen's form) [default: history.jsonl in the
    /// run directory].
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Keep the nodes' data directories afterwards (logs and history are always kept).
    #[arg(long)]
    pub keep_data: bool,
    /// No live line (for logs and tests).
    #[arg(long)]
    pub quiet: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The faults the demo knows, in the order the schedule cycles through them.
const FAULT_KINDS: [&str; 3] =
    ["kill-participant-leader", "kill-coordinator-leader", "pause-leader"];

/// How long a killed node stays down before it is restarted.
const KILL_DOWNTIME: Duration = Duration::from_millis(1_500);

/// Runs `decree demo`.
pub fn run(args: DemoArgs) -> Result<(), CmdError> {
    JSON_ONLY.store(args.json, Ordering::Relaxed);
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) % 1_000_000
    });
    let root = match &args.dir {
        Some(d) => d.clone(),
        None => {
            let nanos =
                SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            std::env::temp_dir().join(format!("decree-demo-{}-{nanos}", std::process::id()))
        }
    };
    let binary = std::env::current_exe()
        .map_err(|e| CmdError::Io(format!("cannot find the decree executable: {e}")))?;
    let timing = Timing::default();
    let say = |s: String| {
        if !args.json {
            println!("{s}");
        }
    };
    say(format!("==> run directory {} (seed {seed})", root.display()));
    let cluster =
        LocalCluster::create(&root, binary, 3, args.groups, args.separate_coordinator, timing)?;
    let cluster = Arc::new(Mutex::new(cluster));
    let result = runtime()?.block_on(demo(&args, seed, &root, Arc::clone(&cluster), timing, &say));
    let mut guard = cluster.lock().unwrap_or_else(PoisonError::into_inner);
    guard.kill_all();
    if !args.keep_data {
        for id in guard.node_ids() {
            let _ = std::fs::remove_dir_all(root.join(format!("n{id}")));
        }
    }
    result
}

async fn demo(
    args: &DemoArgs,
    seed: u64,
    root: &std::path::Path,
    cluster: Arc<Mutex<LocalCluster>>,
    timing: Timing,
    say: &dyn Fn(String),
) -> Result<(), CmdError> {
    let lock = || cluster.lock().unwrap_or_else(PoisonError::into_inner);
    let (cluster_file, certs) = {
        let c = lock();
        (c.cluster_file(), c.certs_dir())
    };
    let nodes = if args.separate_coordinator { 6 } else { 3 };
    say(format!(
        "==> starting {nodes} nodes: {} participant groups + 1 coordinator group, 3 replicas each",
        args.groups
    ));
    lock().start_all()?;
    let mut config = ClientConfig::load(&cluster_file, &certs, LOCAL_CLIENT)
        .map_err(|e| CmdError::client("loading the demo's client configuration", e.into()))?;
    // A transfer gives up (as failed, or unknown if its commit's outcome stays unknown) after
    // 8 s of retries rather than the library's 30 s, so the run ends soon after its duration;
    // every fault here heals well within that.
    config.settings.retry.deadline = Duration::from_secs(8);
    let file: ClusterFile =
        config.cluster.clone().ok_or_else(|| CmdError::Io("no cluster file".into()))?;
    let link = QuicLink::new(config.identity.clone(), file.nodes.clone())
        .map_err(|e| CmdError::Io(format!("cannot start a client endpoint: {e}")))?;
    let prober = Prober::new(link, file.clone());

    let started = Instant::now();
    loop {
        let view = prober.view(Duration::from_millis(500)).await;
        if view.all_led() {
            break;
        }
        if let Some((id, status)) = lock().exited() {
            let tail = lock().log_tail(id, 2000);
            return Err(CmdError::Failed(format!(
                "node n{id} exited ({status}) while starting:\n{tail}"
            )));
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(CmdError::Failed(format!(
                "the cluster did not elect a leader for every group within 30 s; logs in {}",
                root.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    say(format!("==> every group has a leader ({:.1} s)", started.elapsed().as_secs_f64()));

    let client = Client::connect(config)
        .await
        .map_err(|e| CmdError::client("connecting to the demo cluster", e))?;
    let bank = bank_for(&file, args.accounts, 1_000);
    Workload::init(&client, &bank).await?;
    let history = args.history.clone().unwrap_or_else(|| root.join("history.jsonl"));
    say(format!(
        "==> {} accounts over {} groups, total {}; {} clients for {} s, {} faults",
        bank.accounts().len(),
        args.groups,
        bank.total(),
        args.clients,
        args.duration,
        args.faults
    ));
    let workload_config = WorkloadConfig {
        clients: args.clients,
        duration: Duration::from_secs(args.duration),
        audit_every: Duration::from_millis(250),
        max_amount: 50,
        seed,
        history: Some(history.clone()),
        same_group_only: false,
        cross_group_only: false,
    };
    let stats = Workload::new_stats();
    let workload =
        tokio::spawn(Workload::run(client.clone(), bank, workload_config, Arc::clone(&stats)));

    // ctrl-c or SIGTERM ends the run early, still with its final audit and report, and the nodes are
    // killed on the way out.
    {
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let terminate = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = terminate => {}
            }
            stats.stop();
        });
    }

    // The monitor: in-doubt count and recovery times.
    let faults: Arc<Mutex<Vec<OpenFault>>> = Arc::default();
    let monitor = {
        let (prober, stats, faults) = (prober.clone(), Arc::clone(&stats), Arc::clone(&faults));
        tokio::spawn(async move {
            loop {
                // Short waits, so that a recovery time is measured to within about a quarter
                // of a second even while a killed node makes every view wait out its timeout.
                let view = prober.view(Duration::from_millis(200)).await;
                stats.in_doubt_now.store(view.in_doubt.len() as u64, Ordering::Relaxed);
                let now = Instant::now();
                {
                    let mut faults = faults.lock().unwrap_or_else(PoisonError::into_inner);
                    for (at, record, seen) in faults.iter_mut() {
                        let ms = now.duration_since(*at).as_millis() as u64;
                        if record.all_led_after_ms.is_none() {
                            // In doubt at any time before the groups are led again: must resolve.
                            seen.extend(view.in_doubt.iter().map(|t| t.txn_id.clone()));
                            if view.all_led() && ms > record.down_ms.min(200) {
                                record.all_led_after_ms = Some(ms);
                            }
                        }
                        if record.all_led_after_ms.is_some()
                            && record.in_doubt_clear_after_ms.is_none()
                        {
                            let left =
                                view.in_doubt.iter().filter(|t| seen.contains(&t.txn_id)).count();
                            if left == 0 {
                                record.in_doubt_clear_after_ms = Some(ms);
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // The live line.
    let (bar, ticker) = live_line(args.quiet || args.json, &stats);

    // The fault schedule.
    let mut rng = DetRng::new(seed ^ 0x5eed);
    let offset = rng.range(0, FAULT_KINDS.len() as u64) as usize;
    let duration = Duration::from_secs(args.duration);
    let slot = duration / (args.faults as u32 + 1);
    let pause_for = Duration::from_millis(timing.election_timeout_max_ms * 3 / 2);
    for i in 0..args.faults {
        let due = stats_start(&stats) + slot * (i as u32 + 1);
        tokio::time::sleep_until(due.into()).await;
        if stats.elapsed() >= duration || stats.stopped() {
            break;
        }
        // Wait (a while) until every group is led, so one fault at a time stays a minority.
        let wait_until = Instant::now() + Duration::from_secs(15);
        let view = loop {
            let view = prober.view(Duration::from_millis(500)).await;
            if view.all_led() || Instant::now() > wait_until {
                break view;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let kind = FAULT_KINDS[(offset + i) % FAULT_KINDS.len()];
        let participants: Vec<u64> =
            view.groups.iter().filter(|g| g.role == "participant").map(|g| g.group).collect();
        let coordinator = view.groups.iter().find(|g| g.role == "coordinator").map(|g| g.group);
        let target_group = match kind {
            "kill-coordinator-leader" => coordinator,
            "kill-participant-leader" => {
                participants.get(rng.range(0, participants.len().max(1) as u64) as usize).copied()
            }
            _ => {
                let all: Vec<u64> = view.groups.iter().map(|g| g.group).collect();
                all.get(rng.range(0, all.len().max(1) as u64) as usize).copied()
            }
        };
        let Some((group, node)) = target_group.and_then(|g| view.leader_of(g).map(|n| (g, n)))
        else {
            note(&bar, format!("fault {kind} skipped: no leader found"));
            continue;
        };
        let role = if Some(group) == coordinator { "coordinator" } else { "participant" };
        let at = Instant::now();
        let (what, down) = if kind == "pause-leader" {
            lock().pause(node);
            (format!("SIGSTOP n{node} (leader of {role} group {group})"), pause_for)
        } else {
            lock().kill(node);
            (format!("SIGKILL n{node} (leader of {role} group {group})"), KILL_DOWNTIME)
        };
        stats.faults.fetch_add(1, Ordering::Relaxed);
        let record = FaultRecord {
            at_s: stats.elapsed().as_secs_f64(),
            what: what.clone(),
            kind,
            down_ms: down.as_millis() as u64,
            all_led_after_ms: None,
            in_doubt_clear_after_ms: None,
        };
        faults.lock().unwrap_or_else(PoisonError::into_inner).push((at, record, BTreeSet::new()));
        note(&bar, format!("  {:>5.1} s  {what}", stats.elapsed().as_secs_f64()));
        tokio::time::sleep(down).await;
        if kind == "pause-leader" {
            lock().resume(node);
            note(&bar, format!("  {:>5.1} s  SIGCONT n{node}", stats.elapsed().as_secs_f64()));
        } else {
            lock().start(node)?;
            note(&bar, format!("  {:>5.1} s  restarted n{node}", stats.elapsed().as_secs_f64()));
        }
        if let Some((id, status)) = lock().exited() {
            note(&bar, format!("  node n{id} exited on its own ({status}); restarting it"));
            lock().kill(id);
            lock().start(id)?;
        }
    }

    let workload =
        workload.await.map_err(|e| CmdError::Io(format!("the workload task failed: {e}")))??;
    // Give the monitor a moment to see the last recoveries.
    let settle = Instant::now() + Duration::from_secs(5);
    while Instant::now() < settle {
        let open = faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|(_, r, _)| r.in_doubt_clear_after_ms.is_none());
        if !open {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    monitor.abort();
    ticker.abort();
    bar.finish_and_clear();
    client.close().await;
    let faults: Vec<FaultRecord> = faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(_, r, _)| r.clone())
        .collect();
    let report = Report::new(
        &workload,
        duration.as_secs_f64().min(workload.stats.elapsed().as_secs_f64()),
        client.ambiguous_resolved(),
        faults,
    );
    if args.json {
        let text = serde_json::to_string(&report).map_err(|e| CmdError::Io(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", report.render());
        println!("node logs in {}", root.display());
    }
    if report.consistent() {
        Ok(())
    } else {
        Err(CmdError::Failed(format!(
            "the bank check failed: {} invalid audit(s); history in {}",
            report.audits_invalid,
            history.display()
        )))
    }
}

/// A fault as the monitor follows it: when it was injected, its record, and the in-doubt
/// transactions seen until every group was led again (each must be resolved).
type OpenFault = (Instant, FaultRecord, BTreeSet<String>);

/// Prints a line above the live line, or plainly when there is none (`--quiet`); nothing
/// with `--json`, whose only output is the report.
fn note(bar: &indicatif::ProgressBar, line: String) {
    if bar.is_hidden() {
        if !JSON_ONLY.load(Ordering::Relaxed) {
            println!("{line}");
        }
    } else {
        bar.println(line);
    }
}

/// Set with `--json`: nothing but the report goes to stdout.
static JSON_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// When the workload's clock started.
fn stats_start(stats: &Stats) -> Instant {
    Instant::now() - stats.elapsed()
}
