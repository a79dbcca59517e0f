//! `decree-lognode`: one node of a replicated-log cluster as a real OS process.
//!
//! It hosts a replica of each of `--groups` Raft groups whose state machine is the replicated
//! log (`decree_host::machines::CommandLog`, an append-only list of commands), run by the host
//! inside the generic node shell: it talks to its peers over QUIC with mutual TLS and serves
//! clients (`decree-logctl`, the multi-process tests, the benchmark) over the shell's client
//! protocol: the machine's requests, the node's status, a replica's state.
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
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use decree_host::machines::CommandLog;
use decree_host::{Directory, Fatal, GroupSpec, Host, HostConfig};
use decree_raft::core::{ConfigError, RaftConfig};
use decree_raft::node::NodeConfig;
use decree_runtime::certs::{load_identity, write_dir, CertError, CA_CERT_FILE};
use decree_runtime::fs_disk::FsDisk;
use decree_runtime::node_shell::peers::QuicPeers;
use decree_runtime::node_shell::run::{wall_clock_ns, NodeShell, ShellError, ShellHandle};
use decree_runtime::node_shell::timed_disk::TimedDisk;
use decree_runtime::transport::TransportError;
use decree_runtime::{Peer, QuicEndpoint, TransportConfig, TransportLimits};
use decree_types::limits::{MAX_OFFSET_NS, NS_PER_MS};
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

/// Why the node could not start or had to stop.
#[derive(Debug, thiserror::Error)]
enum LognodeError {
    /// A command-line value is out of range.
    #[error("{0}")]
    Usage(&'static str),
    /// The Raft settings are inconsistent.
    #[error("raft settings: {0}")]
    Raft(#[from] ConfigError),
    /// The tokio runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Creating or reading a directory failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The certificates could not be generated or loaded.
    #[error("certificates in {}: {source}", dir.display())]
    Certs {
        dir: PathBuf,
        #[source]
        source: CertError,
    },
    /// Another process started generating certificates and did not finish.
    #[error("timed out waiting for certificates in {}", .0.display())]
    CertsTimeout(PathBuf),
    /// The data directory cannot be used as a disk.
    #[error("data directory {}: {source}", path.display())]
    Disk {
        path: PathBuf,
        #[source]
        source: decree_raft::DiskError,
    },
    /// The write-ahead log could not be recovered.
    #[error("opening the write-ahead log in {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: Fatal,
    },
    /// The QUIC endpoint could not start.
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: TransportError,
    },
    /// The shell stopped the node (a fatal disk error, HLC-6) or could not start.
    #[error(transparent)]
    Shell(#[from] ShellError),
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

fn run(args: Args) -> Result<(), LognodeError> {
    let me = NodeId(args.id);
    if args.id == 0 {
        return Err(LognodeError::Usage("--id must be at least 1"));
    }
    if args.groups == 0 {
        return Err(LognodeError::Usage("--groups must be at least 1"));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(LognodeError::Runtime)?;
    let result = runtime.block_on(serve(args, me));
    // Do not wait for stray tasks (e.g. a handler blocked on a dead shell) at exit.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
}

async fn serve(args: Args, me: NodeId) -> Result<(), LognodeError> {
    // 1. Certificates: this node's identity, signed by the cluster CA.
    let all_nodes: Vec<NodeId> =
        std::iter::once(me).chain(args.peers.iter().map(|(id, _)| *id)).collect();
    ensure_certs(&args.certs, &all_nodes)?;
    let identity = load_identity(&args.certs, &Peer::Node(me))
        .map_err(|source| LognodeError::Certs { dir: args.certs.clone(), source })?;

    // 2. The host: recover every group (its log, its snapshot, its machine) from the WAL in
    //    the data directory.
    std::fs::create_dir_all(&args.data).map_err(|source| LognodeError::Io {
        what: "creating",
        path: args.data.clone(),
        source,
    })?;
    let fs = FsDisk::open(&args.data)
        .map_err(|source| LognodeError::Disk { path: args.data.clone(), source })?;
    let mut disk = TimedDisk::new(fs);
    if let Some(n) = args.fail_fsync_after {
        tracing::warn!("fault injection: every fsync after the first {n} fails");
        disk = disk.failing_syncs_after(n);
    }
    let mut voters = all_nodes.clone();
    voters.sort();
    voters.dedup();
    let groups: Vec<GroupSpec<CommandLog>> = (1..=args.groups)
        .map(|g| GroupSpec {
            group: GroupId(g),
            voters: voters.clone(),
            machine: CommandLog::default(),
        })
        .collect();
    let directory = Directory::new(groups.iter().map(|g| (g.group, g.voters.clone())).collect());
    let raft = RaftConfig {
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms),
        election_timeout_min: Duration::from_millis(args.election_ms),
        election_timeout_max: Duration::from_millis(args.election_ms * 2),
        ..RaftConfig::default()
    };
    raft.validate()?;
    let config = HostConfig {
        node: NodeConfig { raft, ..NodeConfig::default() },
        max_offset_ns: MAX_OFFSET_NS,
        // HLC-6: each peer's clock is measured once per heartbeat interval.
        clock_probe_interval_ns: args.heartbeat_ms.max(1) * NS_PER_MS,
        // Absent or 0: never (a count no group reaches).
        snapshot_every_entries: args.snapshot_entries.filter(|n| *n > 0).unwrap_or(u64::MAX),
    };
    let seed = args.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ wall_clock_ns();
    let origin = Instant::now();
    let host =
        Host::open(me, config, groups, directory, disk, DetRng::new(seed), 0, wall_clock_ns())
            .map_err(|source| LognodeError::Open { path: args.data.clone(), source })?;

    // 3. The endpoint: peers' envelopes arrive on `inbound`; client requests go through the
    //    shell's handler into the shell thread's bounded queue, each with a oneshot for its
    //    answer.
    let (shell_handle, calls) = ShellHandle::channel();
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
    let (endpoint, inbound) = QuicEndpoint::bind(transport_config, shell_handle.rpc_handler())
        .map_err(|source| LognodeError::Bind { addr: args.listen, source })?;
    tracing::info!(
        node = %me,
        listen = %args.listen,
        groups = args.groups,
        data = %args.data.display(),
        seed,
        "decree-lognode started"
    );

    // 4. The shell loop, until SIGTERM/ctrl-c or a fatal error.
    let shell =
        NodeShell::new(host, QuicPeers::new(endpoint.clone()), Arc::new(wall_clock_ns), origin);
    let mut shell = shell.spawn(inbound, calls)?;
    let result = tokio::select! {
        result = shell.finished() => result,
        () = shutdown_signal() => {
            shell.stop();
            shell.finished().await
        }
    };
    endpoint.close().await;
    let counters = result?;
    tracing::info!(?counters, "decree-lognode stopped");
    Ok(())
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
fn ensure_certs(dir: &Path, nodes: &[NodeId]) -> Result<(), LognodeError> {
    if dir.join(CA_CERT_FILE).exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|source| LognodeError::Io {
        what: "creating",
        path: dir.to_path_buf(),
        source,
    })?;
    let lock = dir.join(".generating");
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&lock) {
        Ok(_) => {
            let mut ids = nodes.to_vec();
            ids.sort();
            let written = write_dir(dir, &ids, &["logctl".to_string()], &[], false)
                .map_err(|source| LognodeError::Certs { dir: dir.to_path_buf(), source });
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
            Err(LognodeError::CertsTimeout(dir.to_path_buf()))
        }
    }
}
