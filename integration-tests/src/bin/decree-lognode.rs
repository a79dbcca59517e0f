//! `decree-lognode`: one node of a replicated-log cluster as a real OS process.
//!
//! It hosts a replica of each of `--groups` Raft groups whose state machine is an append-only
//! list of commands, talks to its peers over QUIC with mutual TLS, and serves clients
//! (`decree-logctl`, the multi-process tests, the benchmark): propose, linearizable read, status.
//!
//! ```text
//! decree-lognode --id 1 --listen 127.0.0.1:7001 --peer 2=127.0.0.1:7002 --peer 3=127.0.0.1:7003 \
//!                --data /tmp/n1 --certs /tmp/certs --groups 2
//! ```
//!
//! Exit status: 0 after SIGTERM/ctrl-c; 1 on a fatal error (failed fsync, corrupt log, bad
//! configuration), with the reason on stderr.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use decree_raft::core::RaftConfig;
use decree_raft::node::{Node, NodeConfig};
use decree_runtime::certs::{load_identity, write_dir, CA_CERT_FILE};
use decree_runtime::fs_disk::FsDisk;
use decree_runtime::node_shell::peers::{wall_clock_ns, QuicPeers};
use decree_runtime::node_shell::rpc::{decode_request, encode_response};
use decree_runtime::node_shell::run::{NodeShell, ShellConfig, ShellHandle};
use decree_runtime::node_shell::timed_disk::TimedDisk;
use decree_runtime::{HandlerError, Peer, Transport, TransportConfig, TransportLimits};
use decree_types::{DetRng, GroupId, NodeId};
use tokio::time::Instant;

/// Command-line configuration. Durations are in milliseconds.
#[derive(Debug, Parser)]
#[command(name = "decree-lognode", version, about = "One node of a decree replicated-log cluster")]
struct Args {
    /// This node's id (>= 1); must match the node id in its certificate.
    #[arg(long)]
    id: u64,
    /// UDP address to listen on for QUIC.
    #[arg(long)]
    listen: SocketAddr,
    /// A peer, as ID=ADDR; repeat for each peer.
    #[arg(long = "peer", value_parser = parse_peer)]
    peers: Vec<(NodeId, SocketAddr)>,
    /// Data directory (the write-ahead log); created if missing.
    #[arg(long)]
    data: PathBuf,
    /// Certificate directory as written by `decree-logctl certs` / `decree certs`. If it holds
    /// no CA, an ephemeral CA and certificates for nodes 1..=N are generated into it.
    #[arg(long)]
    certs: PathBuf,
    /// Number of groups hosted (ids 1..=N); every node of the cluster must use the same value.
    #[arg(long, default_value_t = 1)]
    groups: u64,
    /// Shell timer period.
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
    /// Leader heartbeat period (DESIGN.md §10: 100 ms).
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
    /// Minimum election timeout; the timeout is randomized in [min, 2*min) (DESIGN.md §10: 1 s).
    #[arg(long, default_value_t = 1000)]
    election_ms: u64,
    /// Snapshot a group after this many applied entries (0 or absent: never).
    #[arg(long)]
    snapshot_entries: Option<u64>,
    /// Fault injection for tests: every fsync after the first N fails.
    #[arg(long, hide = true)]
    fail_fsync_after: Option<u64>,
}

fn parse_peer(s: &str) -> Result<(NodeId, SocketAddr), String> {
    let (id, addr) = s.split_once('=').ok_or_else(|| format!("expected ID=ADDR, got {s:?}"))?;
    let id: u64 = id.parse().map_err(|e| format!("peer id {id:?}: {e}"))?;
    let addr: SocketAddr = addr.parse().map_err(|e| format!("peer address {addr:?}: {e}"))?;
    Ok((NodeId(id), addr))
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("decree-lognode: fatal: {e}");
            tracing::error!("fatal: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let me = NodeId(args.id);
    if args.id == 0 {
        return Err("--id must be at least 1".into());
    }
    if args.groups == 0 {
        return Err("--groups must be at least 1".into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(serve(args, me));
    // Do not wait for stray tasks (e.g. a handler blocked on a dead shell) at exit.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
}

async fn serve(args: Args, me: NodeId) -> Result<(), String> {
    // 1. Certificates: this node's identity, signed by the cluster CA.
    let all_nodes: Vec<NodeId> =
        std::iter::once(me).chain(args.peers.iter().map(|(id, _)| *id)).collect();
    ensure_certs(&args.certs, &all_nodes)?;
    let identity = load_identity(&args.certs, &Peer::Node(me)).map_err(|e| {
        format!("loading the certificate of {me} from {}: {e}", args.certs.display())
    })?;

    // 2. The node: recover every group from the WAL in the data directory.
    std::fs::create_dir_all(&args.data)
        .map_err(|e| format!("creating {}: {e}", args.data.display()))?;
    let mut disk =
        TimedDisk::new(FsDisk::open(&args.data).map_err(|e| format!("data directory: {e}"))?);
    if let Some(n) = args.fail_fsync_after {
        tracing::warn!("fault injection: every fsync after the first {n} fails");
        disk = disk.failing_syncs_after(n);
    }
    let mut voters = all_nodes.clone();
    voters.sort();
    voters.dedup();
    let groups: Vec<(GroupId, Vec<NodeId>)> =
        (1..=args.groups).map(|g| (GroupId(g), voters.clone())).collect();
    let raft = RaftConfig {
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms),
        election_timeout_min: Duration::from_millis(args.election_ms),
        election_timeout_max: Duration::from_millis(args.election_ms * 2),
        ..RaftConfig::default()
    };
    raft.validate().map_err(|e| format!("raft settings: {e}"))?;
    let config = NodeConfig { raft, ..NodeConfig::default() };
    let seed = args.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ wall_clock_ns();
    let origin = Instant::now();
    let node = Node::open(me, groups, disk, config, DetRng::new(seed), 0)
        .map_err(|e| format!("opening the write-ahead log in {}: {e}", args.data.display()))?;

    // 3. The endpoint: peers' Raft streams arrive on `inbound`; client requests go through the
    //    handler into the shell task's bounded queue, each with a oneshot for its answer.
    let (shell_handle, calls) = ShellHandle::channel();
    let handler = move |_from: Peer, body: Vec<u8>| {
        let shell = shell_handle.clone();
        async move {
            let request = decode_request(&body)
                .map_err(|e| HandlerError::Undecodable { reason: e.to_string() })?;
            Ok(encode_response(&shell.call(request).await))
        }
    };
    let limits = TransportLimits {
        // Notice a restarted peer within about a second, and redial it quickly.
        idle_timeout_ms: 1_500,
        keep_alive_ms: 300,
        connect_timeout_ms: 1_000,
        backoff_max_ms: 500,
        ..TransportLimits::default()
    };
    let transport_config = TransportConfig {
        listen_addr: args.listen,
        identity,
        peers: args.peers.iter().copied().collect::<BTreeMap<_, _>>(),
        limits,
    };
    let (transport, inbound) = Transport::bind(transport_config, handler)
        .map_err(|e| format!("binding {}: {e}", args.listen))?;
    tracing::info!(
        node = %me,
        listen = %args.listen,
        groups = args.groups,
        data = %args.data.display(),
        seed,
        "decree-lognode started"
    );

    // 4. The shell loop, until SIGTERM/ctrl-c or a fatal error.
    let shell_config = ShellConfig {
        tick: Duration::from_millis(args.tick_ms.max(1)),
        snapshot_every_entries: args.snapshot_entries.filter(|n| *n > 0),
    };
    let shell = NodeShell::new(node, QuicPeers::new(transport.clone(), me), shell_config, origin);
    let mut shell =
        shell.spawn(inbound, calls).map_err(|e| format!("starting the shell thread: {e}"))?;
    let result = tokio::select! {
        result = shell.finished() => result,
        () = shutdown_signal() => {
            shell.stop();
            shell.finished().await
        }
    };
    transport.close().await;
    match result {
        Ok(counters) => {
            tracing::info!(?counters, "decree-lognode stopped");
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Completes on SIGTERM or SIGINT (ctrl-c).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM ({e}); ctrl-c only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}

/// Makes sure `dir` holds a CA and certificates. If it holds no CA, one process generates an
/// ephemeral CA with certificates for `nodes` and a client (for local scripts); concurrent
/// starters wait for it instead of generating a second CA.
fn ensure_certs(dir: &Path, nodes: &[NodeId]) -> Result<(), String> {
    if dir.join(CA_CERT_FILE).exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let lock = dir.join(".generating");
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&lock) {
        Ok(_) => {
            let mut ids = nodes.to_vec();
            ids.sort();
            let written = write_dir(dir, &ids, &["logctl".to_string()], &[], false)
                .map_err(|e| format!("generating certificates in {}: {e}", dir.display()));
            let _ = std::fs::remove_file(&lock);
            written.map(
                |_| tracing::warn!(dir = %dir.display(), "no CA found: generated an ephemeral one"),
            )
        }
        Err(_) => {
            // Someone else is generating: wait for them (bounded).
            for _ in 0..100 {
                if !lock.exists() && dir.join(CA_CERT_FILE).exists() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(format!("timed out waiting for certificates in {}", dir.display()))
        }
    }
}
