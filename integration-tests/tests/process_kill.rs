//! Real processes over real QUIC (TESTING.md §4, issue 3 §5): three `decree-lognode` processes
//! on loopback with certificates from an ephemeral CA. A client streams unique proposals at
//! every group while the leader of group 1 is SIGKILLed and restarted on its data directory,
//! again and again. Afterwards every acknowledged proposal must be on every replica, in the same
//! order, exactly once (no acknowledged proposal lost; state machine safety).

use std::sync::Arc;
use std::time::{Duration, Instant};

use decree_sim::processes::client::LogClient;
use decree_sim::processes::harness::{Cluster, ClusterSpec, TempDir};
use decree_sim::processes::quic::{connect_client, write_certs};
use decree_sim::processes::workload::{run_kill_scenario, KillScenario};

fn lognode() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_decree-lognode").into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_the_leader_repeatedly_and_lose_no_acknowledged_proposal() {
    let started = Instant::now();
    // Phase 1: certificates from an ephemeral CA, three nodes hosting two groups each.
    // Election timeouts are shortened (300-600 ms) so five failovers fit well in a minute.
    let dir = TempDir::new("decree-process-kill").unwrap();
    let mut spec = ClusterSpec::local(lognode(), dir.path(), 3, 2).unwrap();
    spec.extra_args = ["--election-ms", "300", "--heartbeat-ms", "50"].map(String::from).to_vec();
    write_certs(&spec.certs, 3).unwrap();
    let caller = connect_client(&spec.certs, &spec.nodes).unwrap();
    let client = Arc::new(LogClient::new(Arc::new(caller), spec.nodes.keys().copied().collect()));
    let mut cluster = Cluster::start(spec).unwrap();

    // Phase 2: propose while killing and restarting the leader of group 1, then check.
    let scenario = KillScenario {
        kills: 4,
        proposers_per_group: 4,
        acks_between_kills: 100,
        min_between_kills: Duration::ZERO,
        downtime: Duration::from_millis(500),
        time_limit: Duration::from_secs(40),
    };
    let result = run_kill_scenario(&mut cluster, client, &scenario, |_| {}).await;
    let report = match result {
        Ok(r) => r,
        Err(e) => panic!("{e}\n{}", cluster.all_log_tails(3000)),
    };

    // Phase 3: the run must have done real work: every kill happened, proposals were
    // acknowledged in every group, and every one of them is everywhere (checked above).
    assert_eq!(report.killed.len(), 4, "killed {:?}", report.killed);
    for (g, r) in &report.groups {
        assert!(r.acknowledged >= 100, "group {g}: only {} acknowledged", r.acknowledged);
    }
    eprintln!(
        "killed {:?}; {:?}; {} unknown; {:.1} s",
        report.killed,
        report.groups,
        report.unknown,
        started.elapsed().as_secs_f64()
    );
}
