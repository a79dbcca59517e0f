//! The leader-kill scenario the multi-process test and the demo share: proposers stream unique
//! commands at every group while the current leader is SIGKILLed and restarted on its data
//! directory, then every replica is read and [`check_replicas`] decides.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use decree_types::{GroupId, NodeId, Term};
use tokio::time::Instant;

use super::check::{check_replicas, CheckReport};
use super::client::{Caller, LogClient, ProposeOutcome};
use super::harness::Cluster;

/// What to run.
#[derive(Clone, Debug)]
pub struct KillScenario {
    /// Leader kills (each followed by a restart on the same data directory).
    pub kills: u32,
    /// Concurrent proposers per group.
    pub proposers_per_group: usize,
    /// Acknowledgements to wait for between kills (so every leader does some work).
    pub acks_between_kills: u64,
    /// Time to wait at least between kills (the demo slows down so a person can watch).
    pub min_between_kills: Duration,
    /// How long a killed node stays down before it is restarted.
    pub downtime: Duration,
    /// Bound on the whole scenario; past it the run fails.
    pub time_limit: Duration,
}

/// Counters the proposers update, for a live progress line.
#[derive(Debug, Default)]
pub struct Progress {
    /// Acknowledged proposals.
    pub acknowledged: AtomicU64,
    /// Proposals whose outcome is unknown.
    pub unknown: AtomicU64,
    /// Leader kills so far.
    pub kills: AtomicU64,
    /// Last known leader of group 1 and its term.
    pub leader: Mutex<Option<(NodeId, Term)>>,
    /// Fault events not yet shown (kills, restarts), oldest first.
    pub events: Mutex<Vec<String>>,
}

impl Progress {
    /// Takes the events recorded since the last call.
    pub fn take_events(&self) -> Vec<String> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn event(&self, what: String) {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).push(what);
    }

    /// One line: `acked 1234  unknown 3  kills 2  leader n2 (t5)`.
    pub fn line(&self) -> String {
        let leader = match *self.leader.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((n, t)) => format!("{n} (term {})", t.0),
            None => "electing".to_string(),
        };
        format!(
            "acknowledged {:>6}  unknown {:>3}  kills {}  leader of g1: {}",
            self.acknowledged.load(Ordering::Relaxed),
            self.unknown.load(Ordering::Relaxed),
            self.kills.load(Ordering::Relaxed),
            leader
        )
    }
}

/// The outcome of a passing scenario.
#[derive(Clone, Debug)]
pub struct ScenarioReport {
    /// Per group, the check's summary.
    pub groups: BTreeMap<GroupId, CheckReport>,
    /// Leaders killed, in order.
    pub killed: Vec<(NodeId, Term)>,
    /// Proposals whose outcome the client did not learn.
    pub unknown: u64,
}

/// Runs the scenario on a started cluster. `on_tick` is called about every 200 ms with the
/// progress (the demo prints it; the test ignores it).
pub async fn run_kill_scenario<C: Caller>(
    cluster: &mut Cluster,
    client: Arc<LogClient<C>>,
    scenario: &KillScenario,
    mut on_tick: impl FnMut(&Progress),
) -> Result<ScenarioReport, String> {
    let start = Instant::now();
    let deadline = start + scenario.time_limit;
    let groups: Vec<GroupId> = (1..=cluster.spec().groups).map(GroupId).collect();
    let g1 = GroupId(1);

    // Phase 1: every group elects a leader.
    if !client.wait_for_leaders(&groups, Instant::now() + Duration::from_secs(20)).await {
        return Err("no leader for every group within 20 s of start".into());
    }

    // Phase 2: proposers stream unique commands at every group until told to stop.
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged: Arc<Mutex<BTreeMap<GroupId, BTreeSet<Vec<u8>>>>> = Arc::default();
    let mut workers = Vec::new();
    for g in &groups {
        for w in 0..scenario.proposers_per_group {
            let (client, progress, stop, acked) =
                (client.clone(), progress.clone(), stop.clone(), acknowledged.clone());
            let g = *g;
            workers.push(tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let command = format!("g{}-w{w}-{seq:06}", g.0).into_bytes();
                    let deadline = Instant::now() + Duration::from_secs(10);
                    match client.propose(g, command.clone(), deadline).await {
                        ProposeOutcome::Acknowledged { .. } => {
                            acked
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .entry(g)
                                .or_default()
                                .insert(command);
                            progress.acknowledged.fetch_add(1, Ordering::Relaxed);
                        }
                        ProposeOutcome::Unknown(_) => {
                            progress.unknown.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
    }

    // Phase 3: kill the leader of group 1, restart it, repeat.
    let mut killed = Vec::new();
    let mut result = Ok(());
    'kills: for _ in 0..scenario.kills {
        // 3a. Wait for some acknowledgements under the current leader.
        let base = progress.acknowledged.load(Ordering::Relaxed);
        let not_before = Instant::now() + scenario.min_between_kills;
        while progress.acknowledged.load(Ordering::Relaxed) < base + scenario.acks_between_kills
            || Instant::now() < not_before
        {
            if Instant::now() >= deadline {
                result = Err(format!(
                    "no progress: {} acknowledgements since the last kill, wanted {}",
                    progress.acknowledged.load(Ordering::Relaxed) - base,
                    scenario.acks_between_kills
                ));
                break 'kills;
            }
            if let Some(bad) = cluster.exited().first() {
                result = Err(format!("node {} exited on its own: {}", bad.0, bad.1));
                break 'kills;
            }
            on_tick(&progress);
            tokio::time::sleep(Duration::from_millis(200)).await;
            update_leader(&client, &progress, g1).await;
        }
        // 3b. SIGKILL the current leader.
        let Some((leader, term)) = client.find_leader(g1).await else {
            continue;
        };
        cluster.kill_node(leader);
        progress.event(format!("SIGKILL {leader} (leader of g1 in term {})", term.0));
        killed.push((leader, term));
        progress.kills.fetch_add(1, Ordering::Relaxed);
        *progress.leader.lock().unwrap_or_else(|e| e.into_inner()) = None;
        on_tick(&progress);
        tokio::time::sleep(scenario.downtime).await;
        // 3c. Restart it on the same data directory.
        if let Err(e) = cluster.start_node(leader) {
            result = Err(format!("restarting {leader}: {e}"));
            break;
        }
        progress.event(format!("restarted {leader} on its data directory"));
    }
    // A little more load after the last restart, so the restarted node catches up under load.
    if result.is_ok() {
        let base = progress.acknowledged.load(Ordering::Relaxed);
        let until = (Instant::now() + Duration::from_secs(5)).min(deadline);
        while progress.acknowledged.load(Ordering::Relaxed) < base + scenario.acks_between_kills
            && Instant::now() < until
        {
            on_tick(&progress);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Phase 4: stop the proposers; every call they have in flight ends within its timeout.
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    on_tick(&progress);
    result?;
    if let Some(bad) = cluster.exited().first() {
        return Err(format!("node {} exited on its own: {}", bad.0, bad.1));
    }

    // Phase 5: read every replica until they agree (unknown proposals may still be committed
    // by a new leader meanwhile), then check.
    let acked = acknowledged.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut reports = BTreeMap::new();
    let nodes: Vec<NodeId> = cluster.spec().nodes.keys().copied().collect();
    for g in &groups {
        let empty = BTreeSet::new();
        let acked_g = acked.get(g).unwrap_or(&empty);
        let mut last_err = String::from("never read");
        let report = loop {
            if Instant::now() >= deadline + Duration::from_secs(10) {
                return Err(format!("group {g}: replicas never agreed: {last_err}"));
            }
            let mut replicas = BTreeMap::new();
            for n in &nodes {
                match client.replica_commands(*n, *g).await {
                    Ok(list) => {
                        replicas.insert(*n, list);
                    }
                    Err(e) => last_err = e,
                }
            }
            if replicas.len() == nodes.len() {
                match check_replicas(acked_g, &replicas) {
                    Ok(report) => break report,
                    Err(violations) => last_err = violations.join("; "),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        reports.insert(*g, report);
    }
    Ok(ScenarioReport {
        groups: reports,
        killed,
        unknown: progress.unknown.load(Ordering::Relaxed),
    })
}

async fn update_leader<C: Caller>(client: &LogClient<C>, progress: &Progress, group: GroupId) {
    if let Some(found) = client.find_leader(group).await {
        *progress.leader.lock().unwrap_or_else(|e| e.into_inner()) = Some(found);
    }
}
