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

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use decree_types::NodeId;

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
    let _ = (Duration::from_millis(args.tick_ms), args.heartbeat_ms, args.election_ms);
    Err("not wired".into())
}
