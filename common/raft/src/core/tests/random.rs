//! A seeded randomized cluster test: a faulty phase (message loss, duplication and
//! reordering, partitions, crashes — also between a Ready's send and its fsync —, snapshots,
//! proposals and reads at random), then a healing phase. Checked throughout: INV-R1 (at most
//! one leader per term) and INV-R5 (no two replicas apply different entries at one index, in
//! the harness's apply path), INV-R3 and INV-R4 every 50 steps; after healing, one leader
//! and identical applied logs.

use decree_types::{DetRng, NodeId};

use super::harness::{test_config, Cluster, InFlight, MS};
use crate::core::Role;

fn run_seed(seed: u64, voters: u64, steps: usize) {
    let mut rng = DetRng::new(seed);
    let mut config = test_config();
    config.max_inflight_appends = rng.range(1, 8) as usize;
    config.max_append_bytes = rng.range(16, 512);
    config.snapshot_chunk_bytes = rng.range(8, 64);
    config.pre_vote = rng.chance(3, 4);
    config.check_quorum = rng.chance(3, 4);
    config.max_apply_bytes = rng.range(1, 256);
    let loss_per_mille = rng.range(0, 200);
    let mut c = Cluster::new(voters, config);
    let ids: Vec<NodeId> = c.voters.clone();
    let mut proposals = 0u64;
    for step in 0..steps {
        if step % 50 == 0 {
            c.check_log_invariants();
        }
        let pick = |rng: &mut DetRng| ids[rng.range(0, ids.len() as u64) as usize];
        match rng.range(0, 1000) {
            0..=399 if !c.net.is_empty() => {
                // Deliver a random message: reordering; sometimes lose or duplicate it.
                let i = rng.range(0, c.net.len() as u64) as usize;
                let m = c.net.swap_remove(i);
                if rng.chance(loss_per_mille, 1000) {
                    continue;
                }
                if rng.chance(1, 20) {
                    c.net.push(InFlight { from: m.from, to: m.to, msg: m.msg.clone() });
                }
                c.deliver(m);
            }
            0..=599 => {
                let id = pick(&mut rng);
                if c.nodes[&id].core.as_ref().is_some_and(|core| core.has_ready()) {
                    c.process_ready(id);
                }
            }
            600..=749 => {
                c.now_ns += rng.range(1, 60) * MS;
                c.tick_all();
            }
            750..=849 => {
                if let Some(leader) = c.leader() {
                    let now = c.now_ns;
                    proposals += 1;
                    let _ = c
                        .nodes
                        .get_mut(&leader)
                        .expect("leader")
                        .core_mut()
                        .propose(now, proposals.to_be_bytes().to_vec());
                }
            }
            850..=852 => {
                let id = pick(&mut rng);
                if c.is_up(id) {
                    c.crash(id);
                } else {
                    c.restart(id);
                }
            }
            853..=857 => {
                let id = pick(&mut rng);
                if c.is_up(id) {
                    c.crash_before_sync(id);
                    c.restart(id);
                }
            }
            858..=867 => {
                if c.cut.is_empty() {
                    let id = pick(&mut rng);
                    c.isolate(id);
                } else {
                    c.heal();
                }
            }
            868..=884 => {
                let id = pick(&mut rng);
                if c.is_up(id) {
                    let _ = c.snapshot(id);
                }
            }
            915..=924 => {
                // Leader churn: crash the current leader (restarted by a later toggle).
                if let Some(leader) = c.leader() {
                    c.crash(leader);
                }
            }
            885..=914 => {
                let id = pick(&mut rng);
                let now = c.now_ns;
                if let Some(core) = c.nodes.get_mut(&id).and_then(|n| n.core.as_mut()) {
                    let _ = core.read_index(now, rng.next_u64());
                }
            }
            _ => {}
        }
        c.check_election_safety();
    }

    // Healing phase: every node up, every link healed, time passes.
    c.heal();
    for id in ids.clone() {
        if !c.is_up(id) {
            c.restart(id);
        }
    }
    for _ in 0..100 {
        c.run_for(100);
        c.check_election_safety();
        c.check_log_invariants();
    }
    let leader = c.leader().unwrap_or_else(|| panic!("seed {seed}: no leader after healing"));
    let now = c.now_ns;
    c.nodes
        .get_mut(&leader)
        .expect("leader")
        .core_mut()
        .propose(now, b"final".to_vec())
        .expect("leader accepts");
    c.run_for(1000);
    let leader_core = c.nodes[&leader].core();
    assert_eq!(leader_core.role(), Role::Leader, "seed {seed}: leadership is stable after healing");
    let commit = leader_core.commit_index();
    for id in &ids {
        let node = &c.nodes[id];
        assert_eq!(node.core().commit_index(), commit, "seed {seed}: {id} caught up");
        assert_eq!(
            node.applied.last().map(|e| e.index),
            Some(commit),
            "seed {seed}: {id} applied all"
        );
        assert_eq!(
            node.applied, c.nodes[&leader].applied,
            "seed {seed}: {id} applied the same entries"
        );
    }
}

/// A long sweep for local runs: `DECREE_RAFT_SEEDS=500 cargo test -p decree-raft random_sweep`.
#[test]
fn random_sweep_from_environment() {
    let seeds: u64 =
        std::env::var("DECREE_RAFT_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    for seed in 1000..1000 + seeds {
        run_seed(seed, 3 + 2 * (seed % 2), 6000);
    }
}

#[test]
fn random_three_voters_keep_election_and_state_machine_safety() {
    for seed in 0..16 {
        run_seed(seed, 3, 5000);
    }
}

#[test]
fn random_five_voters_keep_election_and_state_machine_safety() {
    for seed in 100..110 {
        run_seed(seed, 5, 5000);
    }
}
