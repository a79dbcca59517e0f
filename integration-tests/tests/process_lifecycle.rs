//! A node process's life cycle: SIGTERM stops it cleanly (exit status 0), and a restart on the
//! same data directory recovers every applied command from its snapshot and write-ahead log.

use std::sync::Arc;
use std::time::Duration;

use decree_sim::processes::client::{LogClient, ProposeOutcome};
use decree_sim::processes::harness::{Cluster, ClusterSpec, TempDir};
use decree_sim::processes::quic::{connect_client, write_certs};
use decree_types::{GroupId, NodeId};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_and_a_restart_recovers_the_log() {
    // Phase 1: a three-node cluster that snapshots every 8 entries (so a restart restores a
    // snapshot, then replays the WAL after it); propose a few commands.
    let dir = TempDir::new("decree-process-lifecycle").unwrap();
    let mut spec =
        ClusterSpec::local(env!("CARGO_BIN_EXE_decree-lognode").into(), dir.path(), 3, 1).unwrap();
    spec.extra_args = ["--election-ms", "300", "--heartbeat-ms", "50", "--snapshot-entries", "8"]
        .map(String::from)
        .to_vec();
    write_certs(&spec.certs, 3).unwrap();
    let caller = connect_client(&spec.certs, &spec.nodes).unwrap();
    let client = LogClient::new(Arc::new(caller), spec.nodes.keys().copied().collect());
    let mut cluster = Cluster::start(spec).unwrap();
    let g = GroupId(1);
    assert!(
        client.wait_for_leaders(&[g], Instant::now() + Duration::from_secs(20)).await,
        "no leader\n{}",
        cluster.all_log_tails(3000)
    );
    let mut acked = Vec::new();
    for i in 0..20 {
        let cmd = format!("cmd-{i}").into_bytes();
        let deadline = Instant::now() + Duration::from_secs(10);
        match client.propose(g, cmd.clone(), deadline).await {
            ProposeOutcome::Acknowledged { .. } => acked.push(cmd),
            ProposeOutcome::Unknown(why) => panic!("no failure injected, yet unknown: {why}"),
        }
    }

    // Phase 2: SIGTERM every node: each exits with status 0.
    for n in 1..=3 {
        let status = cluster.terminate_node(NodeId(n), Duration::from_secs(10));
        assert!(matches!(status, Some(s) if s.success()), "n{n} exited with {status:?}");
    }

    // Phase 3: restart all three on their data directories: the snapshot and the log after it
    // are recovered and every acknowledged command is read back from every node, in order.
    for n in 1..=3 {
        cluster.start_node(NodeId(n)).unwrap();
    }
    assert!(
        client.wait_for_leaders(&[g], Instant::now() + Duration::from_secs(20)).await,
        "no leader after restart\n{}",
        cluster.all_log_tails(3000)
    );
    for n in 1..=3 {
        let node = NodeId(n);
        let mut read = Err(String::new());
        for _ in 0..50 {
            read = client.replica_commands(node, g).await;
            if read.as_ref().is_ok_and(|l| l.len() >= acked.len()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(read.unwrap(), acked, "{node} after restart");
    }
    let log = cluster.log_tail(NodeId(1), 20_000);
    assert!(log.contains("state restored from snapshot"), "no snapshot restored on n1: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_the_process_with_an_error() {
    // Phase 1: a one-node cluster whose disk fails every fsync after the first 20.
    let dir = TempDir::new("decree-process-fsync").unwrap();
    let mut spec =
        ClusterSpec::local(env!("CARGO_BIN_EXE_decree-lognode").into(), dir.path(), 1, 1).unwrap();
    spec.extra_args = ["--election-ms", "300", "--heartbeat-ms", "50", "--fail-fsync-after", "20"]
        .map(String::from)
        .to_vec();
    write_certs(&spec.certs, 1).unwrap();
    let caller = connect_client(&spec.certs, &spec.nodes).unwrap();
    let client = LogClient::new(Arc::new(caller), vec![NodeId(1)]);
    let mut cluster = Cluster::start(spec).unwrap();

    // Phase 2: propose until the node dies. Nothing proposed after the failure may be
    // acknowledged: the node stops instead of carrying on as if the write happened.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut exited = Vec::new();
    while exited.is_empty() && Instant::now() < deadline {
        let cmd = b"x".to_vec();
        let _ = client.propose(GroupId(1), cmd, Instant::now() + Duration::from_secs(1)).await;
        exited = cluster.exited();
    }

    // Phase 3: it exited non-zero and said why.
    let (node, status) = exited.first().cloned().expect("the node must stop after a failed fsync");
    assert_eq!(node, NodeId(1));
    assert!(!status.contains("exit status: 0"), "exit status {status}");
    let log = cluster.log_tail(NodeId(1), 4000);
    assert!(log.contains("fatal") && log.contains("injected fsync failure"), "log: {log}");
}
