//! `decree-logctl`: client and driver for `decree-lognode` clusters.
//!
//! ```text
//! decree-logctl certs --out DIR --nodes 3            # ephemeral CA + node and client certs
//! decree-logctl --certs DIR --node 1=ADDR ... status  # role/term/leader/indexes per group
//! decree-logctl --certs DIR --node 1=ADDR ... propose 1 hello
//! decree-logctl --certs DIR --node 1=ADDR ... read 1 [--from-node 2]  # one replica's commands
//! decree-logctl demo --root DIR [--kills 4]          # starts its own cluster (scripts/demo.sh)
//! decree-logctl bench [--seconds 10]                 # starts its own cluster (scripts/bench.sh)
//! ```
//!
//! `demo` and `bench` start `decree-lognode` from the directory this executable is in.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use decree_sim::processes::bench::{probe_fdatasync, run_level, BenchRow};
use decree_sim::processes::client::{LogClient, ProposeOutcome};
use decree_sim::processes::harness::{Cluster, ClusterSpec, TempDir};
use decree_sim::processes::quic::{connect_client, write_certs, QuicCaller};
use decree_sim::processes::workload::{run_kill_scenario, KillScenario};
use decree_types::{GroupId, NodeId};
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(name = "decree-logctl", version, about = "Client and driver for decree-lognode clusters")]
struct Args {
    /// Certificate directory (as written by `certs`).
    #[arg(long, global = true)]
    certs: Option<PathBuf>,
    /// A node of the cluster, as ID=ADDR; repeat for each node.
    #[arg(long = "node", global = true, value_parser = parse_node)]
    nodes: Vec<(NodeId, SocketAddr)>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Generate an ephemeral CA, node certificates for ids 1..=N, and a client certificate.
    Certs {
        #[arg(long)]
        out: PathBuf,
        /// Number of node certificates.
        #[arg(long = "nodes", default_value_t = 3)]
        node_count: u64,
    },
    /// Print every node's view of every group.
    Status,
    /// Propose a command (UTF-8 text) to a group; prints the applied index.
    Propose { group: u64, text: String },
    /// Print a group's commands as one replica applied them (the leader's by default). The
    /// replica's own state, not a linearizable read: a follower may lag.
    Read {
        group: u64,
        #[arg(long)]
        from_node: Option<u64>,
    },
    /// Start a 3-node cluster and kill/restart its leader while proposing; check at the end.
    Demo {
        /// Directory for the cluster (certs/ must already exist in it).
        #[arg(long)]
        root: PathBuf,
        /// Leader kills (each followed by a restart).
        #[arg(long, default_value_t = 5)]
        kills: u32,
    },
    /// Replication benchmark on a fresh 3-node cluster (one group, fsync on).
    Bench {
        /// Seconds measured per concurrency level.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Seconds of warm-up per level (not measured).
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Comma-separated proposer counts.
        #[arg(long, default_value = "1,16,64", value_delimiter = ',')]
        concurrency: Vec<usize>,
        /// Bytes per command.
        #[arg(long, default_value_t = 128)]
        entry_bytes: usize,
        /// Where the nodes' data directories go (default: the system temp dir). Pointing it at
        /// a tmpfs such as /dev/shm takes the disk out of the picture, to see the rest.
        #[arg(long)]
        data_root: Option<PathBuf>,
    },
}

fn parse_node(s: &str) -> Result<(NodeId, SocketAddr), String> {
    let (id, addr) = s.split_once('=').ok_or_else(|| format!("expected ID=ADDR, got {s:?}"))?;
    let id: u64 = id.parse().map_err(|e| format!("node id {id:?}: {e}"))?;
    let addr: SocketAddr = addr.parse().map_err(|e| format!("node address {addr:?}: {e}"))?;
    Ok((NodeId(id), addr))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("decree-logctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("decree-logctl: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    match args.command {
        Cmd::Certs { out, node_count: nodes } => {
            write_certs(&out, nodes).map_err(|e| format!("writing certificates: {e}"))?;
            println!(
                "wrote a CA, node certificates n1..n{nodes} and a client certificate to {}",
                out.display()
            );
            Ok(())
        }
        Cmd::Status => {
            let client = cluster_client(&args.certs, &args.nodes)?;
            print_status(&client, &args.nodes).await;
            Ok(())
        }
        Cmd::Propose { group, text } => {
            let client = cluster_client(&args.certs, &args.nodes)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            match client.propose(GroupId(group), text.into_bytes(), deadline).await {
                ProposeOutcome::Acknowledged { index, term, via } => {
                    println!("applied at index {} (term {}) via {via}", index.0, term.0);
                    Ok(())
                }
                ProposeOutcome::Unknown(why) => Err(format!("outcome unknown: {why}")),
            }
        }
        Cmd::Read { group, from_node } => {
            let client = cluster_client(&args.certs, &args.nodes)?;
            let node = match from_node {
                Some(n) => NodeId(n),
                None => {
                    client.find_leader(GroupId(group)).await.map(|(n, _)| n).ok_or("no leader")?
                }
            };
            for cmd in client.replica_commands(node, GroupId(group)).await? {
                println!("{}", String::from_utf8_lossy(&cmd));
            }
            Ok(())
        }
        Cmd::Demo { root, kills } => demo(&root, kills).await,
        Cmd::Bench { seconds, warmup, concurrency, entry_bytes, data_root } => {
            bench(seconds, warmup, &concurrency, entry_bytes, data_root).await
        }
    }
}

fn cluster_client(
    certs: &Option<PathBuf>,
    nodes: &[(NodeId, SocketAddr)],
) -> Result<LogClient<QuicCaller>, String> {
    let certs = certs.as_ref().ok_or("--certs DIR is required")?;
    if nodes.is_empty() {
        return Err("at least one --node ID=ADDR is required".into());
    }
    let map: BTreeMap<NodeId, SocketAddr> = nodes.iter().copied().collect();
    let caller = connect_client(certs, &map).map_err(|e| format!("client endpoint: {e}"))?;
    Ok(LogClient::new(Arc::new(caller), map.keys().copied().collect()))
}

async fn print_status(client: &LogClient<QuicCaller>, nodes: &[(NodeId, SocketAddr)]) {
    println!(
        "{:<5} {:<6} {:<9} {:>6} {:>7} {:>9} {:>9} {:>16}",
        "node", "group", "role", "term", "leader", "commit", "applied", "state digest"
    );
    for (node, _) in nodes {
        match client.status(*node).await {
            Ok(s) => {
                for g in s.groups {
                    let role = if g.is_leader { "leader" } else { "follower" };
                    let leader = g.leader.map(|l| l.to_string()).unwrap_or_else(|| "-".into());
                    println!(
                        "{:<5} {:<6} {:<9} {:>6} {:>7} {:>9} {:>9} {:>16x}",
                        node.to_string(),
                        g.group.to_string(),
                        role,
                        g.term.0,
                        leader,
                        g.commit.0,
                        g.applied.0,
                        g.digest
                    );
                }
            }
            Err(e) => println!("{:<5} unreachable: {e}", node.to_string()),
        }
    }
}

fn lognode_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("locating myself: {e}"))?;
    let bin = me.with_file_name("decree-lognode");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: build it first (cargo build --release -p decree-sim --bins)",
            bin.display()
        ))
    }
}

fn start_cluster(
    root: &Path,
    groups: u64,
    extra: &[&str],
) -> Result<(Cluster, Arc<LogClient<QuicCaller>>), String> {
    let mut spec =
        ClusterSpec::local(lognode_binary()?, root, 3, groups).map_err(|e| e.to_string())?;
    spec.extra_args = extra.iter().map(|s| s.to_string()).collect();
    if !spec.certs.join("ca.pem").exists() {
        write_certs(&spec.certs, 3).map_err(|e| format!("writing certificates: {e}"))?;
    }
    let caller =
        connect_client(&spec.certs, &spec.nodes).map_err(|e| format!("client endpoint: {e}"))?;
    let client = Arc::new(LogClient::new(Arc::new(caller), spec.nodes.keys().copied().collect()));
    let cluster = Cluster::start(spec).map_err(|e| format!("starting nodes: {e}"))?;
    Ok((cluster, client))
}

async fn demo(root: &Path, kills: u32) -> Result<(), String> {
    let (mut cluster, client) = start_cluster(root, 2, &[])?;
    for (n, addr) in &cluster.spec().nodes {
        println!(
            "    {n}: {addr}  data {}  log {}",
            cluster.spec().data_dir(*n).display(),
            cluster.spec().log_file(*n).display()
        );
    }
    let scenario = KillScenario {
        kills,
        proposers_per_group: 4,
        acks_between_kills: 300,
        min_between_kills: Duration::from_secs(8),
        downtime: Duration::from_millis(1500),
        time_limit: Duration::from_secs(90),
    };
    let started = Instant::now();
    let run = run_kill_scenario(&mut cluster, client, &scenario, |p| {
        let at = started.elapsed().as_secs_f64();
        for event in p.take_events() {
            println!("\r    {at:>5.1}s  {event:<78}");
        }
        print!("\r    {at:>5.1}s  {}   ", p.line());
        let _ = std::io::stdout().flush();
    });
    let outcome = tokio::select! {
        r = run => r,
        _ = tokio::signal::ctrl_c() => {
            // Dropping the cluster below SIGKILLs every node.
            println!("\n==> interrupted: stopping the cluster");
            return Err("interrupted".to_string());
        }
    };
    println!();
    match outcome {
        Ok(report) => {
            println!(
                "==> killed leaders: {}",
                report
                    .killed
                    .iter()
                    .map(|(n, t)| format!("{n} (term {})", t.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for (g, r) in &report.groups {
                println!(
                    "    group {g}: {} acknowledged proposals, all on every replica; \
                     {} commands per replica ({} whose outcome the client never learned)",
                    r.acknowledged, r.replica_len, r.unknown_present
                );
            }
            println!(
                "==> VERDICT: OK — every acknowledged proposal is on every replica, \
                 in the same order, exactly once"
            );
            Ok(())
        }
        Err(e) => {
            println!("{}", cluster.all_log_tails(2000));
            println!("==> VERDICT: FAILED — {e}");
            Err("demo failed".into())
        }
    }
}

async fn bench(
    seconds: u64,
    warmup: u64,
    levels: &[usize],
    entry_bytes: usize,
    data_root: Option<PathBuf>,
) -> Result<(), String> {
    let dir = match data_root {
        Some(root) => TempDir::new_in(&root, "decree-bench"),
        None => TempDir::new("decree-bench"),
    }
    .map_err(|e| e.to_string())?;
    let probe = |when: &str| match probe_fdatasync(dir.path(), 200, 160) {
        Ok((p50, p99)) => println!(
            "bare fdatasync on this disk {when}: p50 {:.3} ms, p99 {:.3} ms \
             (200 appends of 160 bytes)",
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0
        ),
        Err(e) => println!("fdatasync probe failed: {e}"),
    };
    probe("before the run");
    let (cluster, client) = start_cluster(dir.path(), 1, &[])?;
    let g = GroupId(1);
    if !client.wait_for_leaders(&[g], Instant::now() + Duration::from_secs(20)).await {
        return Err(format!("no leader within 20 s\n{}", cluster.all_log_tails(2000)));
    }
    let (leader, _) = client.find_leader(g).await.ok_or("no leader")?;
    let follower =
        cluster.spec().nodes.keys().copied().find(|n| *n != leader).ok_or("no follower")?;
    // CPU is sampled for every node and, as "n0", for this load generator itself.
    let mut pids: BTreeMap<NodeId, u32> =
        cluster.spec().nodes.keys().filter_map(|n| Some((*n, cluster.pid(*n)?))).collect();
    pids.insert(NodeId(0), std::process::id());
    println!(
        "cluster: 3 processes, leader {leader}, {entry_bytes}-byte entries, \
         {seconds} s per level after {warmup} s warm-up"
    );
    let mut rows: Vec<BenchRow> = Vec::new();
    for &c in levels {
        let row = run_level(
            client.clone(),
            g,
            leader,
            follower,
            &pids,
            c,
            entry_bytes,
            Duration::from_secs(warmup),
            Duration::from_secs(seconds),
        )
        .await;
        println!(
            "  C={c:<3} {:>9.0} entries/s  p50 {:>7.3} ms  p99 {:>7.3} ms  unknown {}",
            row.entries_per_s,
            row.p50_us as f64 / 1000.0,
            row.p99_us as f64 / 1000.0,
            row.unknown
        );
        rows.push(row);
    }
    probe("after the run");
    println!();
    let columns = [
        "proposers",
        "entries/s",
        "p50 ms",
        "p99 ms",
        "leader loop iterations/s",
        "leader fsyncs/s",
        "entries per leader fsync",
        "mean fsync ms",
        "leader % in fsync",
        "leader % busy",
        "follower iterations/s",
        "follower fsyncs/s",
        "follower % busy",
        "messages/s (leader)",
        "CPU cores: load generator / n1 / n2 / n3",
    ];
    println!("| {} |", columns.join(" | "));
    println!("|{} --- |", " ---: |".repeat(columns.len() - 1));
    for r in &rows {
        let s = seconds as f64;
        let l = r.leader;
        let cells = [
            r.concurrency.to_string(),
            format!("{:.0}", r.entries_per_s),
            format!("{:.2}", r.p50_us as f64 / 1000.0),
            format!("{:.2}", r.p99_us as f64 / 1000.0),
            format!("{:.0}", l.iterations as f64 / s),
            format!("{:.0}", l.fsyncs as f64 / s),
            format!("{:.1}", l.applied as f64 / l.fsyncs.max(1) as f64),
            format!("{:.3}", l.sync_us as f64 / l.fsyncs.max(1) as f64 / 1000.0),
            format!("{:.0}", l.sync_us as f64 / (s * 1e6) * 100.0),
            format!("{:.0}", l.busy_us as f64 / (s * 1e6) * 100.0),
            format!("{:.0}", r.follower.iterations as f64 / s),
            format!("{:.0}", r.follower.fsyncs as f64 / s),
            format!("{:.0}", r.follower.busy_us as f64 / (s * 1e6) * 100.0),
            format!("{:.0}", l.messages as f64 / s),
            r.cpu_cores.values().map(|c| format!("{c:.2}")).collect::<Vec<_>>().join(" / "),
        ];
        println!("| {} |", cells.join(" | "));
    }
    drop(cluster);
    Ok(())
}
