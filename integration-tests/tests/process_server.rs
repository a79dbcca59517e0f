//! The server over real processes: three `decree start` processes on loopback (mutual TLS over
//! QUIC, one WAL each, every group on every node) and the real client library.
//!
//! - cross-group (2PC) and single-group (1PC) transactions commit and read back;
//! - SIGKILL of the node leading the coordinator group in the middle of a stream of cross-group
//!   transactions, then its restart: every transaction the client was told committed is
//!   visible, none is half-applied, and afterwards no node reports a transaction in doubt;
//! - a second process on a locked data directory, and a bad configuration, exit non-zero with
//!   one clear line.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use decree_client::{Client, Error, TxnState};
use decree_proto::admin::GroupRole;
use decree_sim::processes::harness::TempDir;
use decree_sim::processes::server::{cluster_status, decree_binary, ServerCluster};
use decree_types::{GroupId, NodeId};

const COORDINATOR: GroupId = GroupId(100);
const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

/// Keys in the three participant groups of `ClusterSpec::local(3, 3, _)` (split at "b", "c").
fn keys(i: u32) -> [String; 3] {
    [format!("a/{i:04}"), format!("b/{i:04}"), format!("c/{i:04}")]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

/// Commits `txn` work until the cluster answers (elections after a start take a moment).
async fn until_ready(client: &Client, deadline: Instant) {
    loop {
        let txn = client.begin();
        txn.put("a/ready", b"1".to_vec()).unwrap();
        match txn.commit().await {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cluster not ready: {e}"),
        }
    }
}

/// Runs `op` until it succeeds, retrying transient errors for at most 20 s.
async fn retry<T, F, Fut>(mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying after: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("gave up: {e}"),
        }
    }
}

/// The node leading the coordinator group, as the nodes report it.
async fn coordinator_leader(link: &decree_client::QuicLink) -> Option<NodeId> {
    for node in NODES {
        if let Ok(status) = cluster_status(link, node).await {
            let g = status.groups.iter().find(|g| g.group == COORDINATOR)?;
            if let Some(leader) = g.leader {
                return Some(leader);
            }
        }
    }
    None
}

#[test]
fn transactions_commit_and_survive_a_coordinator_leader_kill() {
    let dir = TempDir::new("decree-server").unwrap();
    let mut cluster = ServerCluster::prepare(decree_binary().unwrap(), dir.path(), 3, 3).unwrap();
    cluster.start_all().unwrap();
    let rt = runtime();
    let outcome = rt.block_on(async {
        let client = Arc::new(Client::connect(cluster.client_config().unwrap()).await.unwrap());
        until_ready(&client, Instant::now() + Duration::from_secs(20)).await;

        // A cross-group transaction (three participant groups: 2PC) and a 1PC one.
        let txn = client.begin();
        for (k, v) in keys(9999).iter().zip(["x", "y", "z"]) {
            txn.put(k.as_str(), v.as_bytes().to_vec()).unwrap();
        }
        txn.commit().await.expect("cross-group commit");
        let one = client.begin();
        one.put("a/one-1", b"1".to_vec()).unwrap();
        one.put("a/one-2", b"2".to_vec()).unwrap();
        one.commit().await.expect("single-group commit");
        let read = client.read_only();
        let got = read.get_many(keys(9999).to_vec()).await.unwrap();
        assert_eq!(got, vec![Some(b"x".to_vec()), Some(b"y".to_vec()), Some(b"z".to_vec())]);
        let got = read.get_many(["a/one-1", "a/one-2"]).await.unwrap();
        assert_eq!(got, vec![Some(b"1".to_vec()), Some(b"2".to_vec())]);

        // The node-level status names every group on every node.
        let link = cluster.link().unwrap();
        let status = cluster_status(&link, NodeId(1)).await.unwrap();
        assert_eq!(status.groups.len(), 4, "{status:?}");
        assert!(status
            .groups
            .iter()
            .any(|g| g.group == COORDINATOR && g.role == GroupRole::Coordinator));
        let victim = coordinator_leader(&link).await.expect("the coordinator group has a leader");

        // A stream of cross-group transactions, with the coordinator leader SIGKILLed in the
        // middle and restarted.
        let writer = {
            let client = client.clone();
            tokio::spawn(async move {
                let mut results = BTreeMap::new();
                let started = Instant::now();
                let mut i = 0u32;
                while started.elapsed() < Duration::from_secs(6) {
                    let txn = client.begin();
                    for k in keys(i) {
                        txn.put(k.as_str(), i.to_be_bytes().to_vec()).unwrap();
                    }
                    let result = txn.commit().await;
                    results.insert(i, (txn.txn_id(), txn.read_ts(), result));
                    i += 1;
                }
                results
            })
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        (victim, writer, client, link)
    });
    let (victim, writer, client, link) = outcome;
    cluster.kill_node(victim);
    std::thread::sleep(Duration::from_millis(1500));
    cluster.start_node(victim).unwrap();

    rt.block_on(async {
        let results = writer.await.unwrap();
        assert!(results.len() > 5, "too few transactions attempted: {}", results.len());
        // First, every transaction gets decided and acknowledged: no node reports one in
        // doubt (within a bound).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut in_doubt: Vec<String> = Vec::new();
            for node in NODES {
                match cluster_status(&link, node).await {
                    Ok(s) => in_doubt.extend(s.in_doubt.iter().map(|t| format!("{node}: {t:?}"))),
                    Err(e) => in_doubt.push(format!("{node} does not answer: {e}")),
                }
            }
            if in_doubt.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "still in doubt: {in_doubt:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }

        // Then: every transaction the client was told committed is visible, and none is
        // half-applied.
        let mut committed = 0;
        for (i, (txn_id, read_ts, result)) in &results {
            let told_committed = match result {
                Ok(_) => true,
                Err(Error::Ambiguous { .. }) => {
                    // The client was told nothing; learn the outcome to know what to expect.
                    match retry(|| client.txn_status_at(*txn_id, *read_ts)).await {
                        TxnState::Committed(_) => true,
                        TxnState::Aborted { .. } | TxnState::Expired => false,
                        TxnState::Pending => panic!("txn {i} still pending after in-doubt cleared"),
                    }
                }
                Err(_) => false,
            };
            // Atomic: all three keys or none, read at one snapshot.
            let got = retry(|| {
                let snapshot = client.read_only();
                async move { snapshot.get_many(keys(*i).to_vec()).await }
            })
            .await;
            let present = got.iter().filter(|v| v.is_some()).count();
            assert!(present == 0 || present == 3, "txn {i} half-applied: {got:?}");
            if told_committed {
                committed += 1;
                let want = Some(i.to_be_bytes().to_vec());
                assert!(got.iter().all(|v| *v == want), "committed txn {i} not visible: {got:?}");
            }
        }
        assert!(committed > 0, "nothing committed of {}", results.len());
        client.close().await;
    });

    // SIGTERM stops every node cleanly.
    for node in NODES {
        assert_eq!(cluster.terminate_node(node, Duration::from_secs(10)), Some(0), "{node}");
    }
    drop(rt);
}

#[test]
fn a_second_process_on_a_locked_data_dir_and_a_bad_config_fail_with_one_line() {
    let dir = TempDir::new("decree-server-refusals").unwrap();
    let mut cluster = ServerCluster::prepare(decree_binary().unwrap(), dir.path(), 1, 1).unwrap();
    cluster.start_node(NodeId(1)).unwrap();
    // Wait until the first process holds the lock (it writes its pid into the lock file).
    let lock = dir.path().join("n1").join(decree_server::lock::LOCK_FILE);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&lock).map_or(true, |t| t.trim().is_empty()) {
        assert!(Instant::now() < deadline, "first server never locked its data dir");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The same data directory, another port: refused at once.
    let mut second = cluster.command(NodeId(1));
    second.arg("--listen").arg("127.0.0.1:0");
    let out = cluster.run_to_exit(second, Duration::from_secs(10)).expect("second process exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("in use by another decree process"), "{stderr}");

    // A bad setting: one line naming the file and the setting.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "node_id = 1\nlisten = \"127.0.0.1:1\"\ndata_dir = \"x\"\n\
                          certs_dir = \"certs\"\ncluster = \"cluster.toml\"\n\
                          [timing]\nheartbeat_ms = 0\n",
    )
    .unwrap();
    let mut cmd_bad = std::process::Command::new(cluster.command(NodeId(1)).get_program());
    cmd_bad.arg("start").arg("--config").arg(&bad);
    let out = cluster.run_to_exit(cmd_bad, Duration::from_secs(10)).expect("exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("bad.toml") && stderr.contains("timing.heartbeat_ms"), "{stderr}");

    // Missing certificates: one line naming the directory.
    let nocerts = dir.path().join("nocerts.toml");
    std::fs::write(
        &nocerts,
        "node_id = 1\nlisten = \"127.0.0.1:0\"\ndata_dir = \"n9\"\n\
                              certs_dir = \"empty\"\ncluster = \"cluster.toml\"\n",
    )
    .unwrap();
    let mut cmd = std::process::Command::new(cluster.command(NodeId(1)).get_program());
    cmd.arg("start").arg("--config").arg(&nocerts);
    let out = cluster.run_to_exit(cmd, Duration::from_secs(10)).expect("exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("certificates in"), "{stderr}");

    // The first process still runs, and stops cleanly on SIGTERM.
    assert_eq!(cluster.terminate_node(NodeId(1), Duration::from_secs(10)), Some(0));
}
