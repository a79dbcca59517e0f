//! Scenarios at the edges of the protocol: leadership transfer through a snapshot, reads
//! whose messages are lost, duplicated and reordered appends, log repair (the logs of the
//! Raft paper's Figure 7), snapshot and transfer bookkeeping, flow control and split votes.
//! Each test names the rule of protocol.md §8/§9 it pins down.

use std::collections::BTreeSet;

use decree_types::{LogIndex, NodeId, Term};

use super::harness::{test_config, Cluster, InFlight, MS};
use super::paper::{elected_three, n};
use crate::core::Role;
use crate::msg::Message;

// ----- RAFT-6 + RAFT-8: leadership transfer to a follower behind the compaction point -----

/// n3 is cut off while n1 commits `commands` entries; n1 compacts at its last index, then
/// proposes `after` more entries (committed by n2); the link heals. Returns the cluster.
fn target_behind_a_snapshot(commands: usize, after: usize) -> Cluster {
    let mut c = elected_three();
    c.isolate(n(3));
    for i in 0..commands {
        c.propose(1, &format!("v{i}"));
    }
    c.stabilize(None);
    let meta = c.snapshot(n(1)).expect("applied");
    assert_eq!(meta.last_index, c.core(1).last_index(), "compacted at the last index");
    for i in 0..after {
        c.propose(1, &format!("w{i}"));
    }
    c.stabilize(None);
    c.heal();
    c
}

/// RAFT-6: the target must first install a snapshot that covers the leader's whole log (an
/// idle leader compacted at its last entry; nothing new is appended while the transfer
/// runs). Installing it catches the target up, so `TimeoutNow` follows and the target leads
/// within an election timeout.
#[test]
fn raft_6_transfer_to_a_target_that_installs_a_snapshot_of_the_whole_log() {
    let mut c = target_behind_a_snapshot(3, 0);
    let now = c.now_ns;
    c.core_mut(1).transfer_leadership(now, n(3)).expect("leader");
    c.run_for(test_config().election_timeout_min.as_millis() as u64 - 10);
    assert_eq!(c.core(3).role(), Role::Leader, "n3 leads within an election timeout");
    assert_eq!(c.core(1).leader(), Some(n(3)));
    assert_eq!(c.core(1).transfer_target(), None);
    c.check_election_safety();
    c.check_log_invariants();
}

/// The same with one entry after the snapshot: the target installs the snapshot, then gets
/// the entry by an ordinary append.
#[test]
fn raft_6_transfer_to_a_target_that_installs_a_snapshot_then_one_entry() {
    let mut c = target_behind_a_snapshot(3, 1);
    assert_eq!(c.core(1).last_index(), c.core(1).snapshot_index().next());
    let now = c.now_ns;
    c.core_mut(1).transfer_leadership(now, n(3)).expect("leader");
    c.run_for(test_config().election_timeout_min.as_millis() as u64 - 10);
    assert_eq!(c.core(3).role(), Role::Leader, "n3 leads within an election timeout");
    assert_eq!(c.core(1).transfer_target(), None);
    c.check_election_safety();
    c.check_log_invariants();
}

/// RAFT-6: a lost `TimeoutNow` is sent again after the next heartbeat round, so a transfer to
/// a reachable, caught-up target completes within an election timeout.
#[test]
fn raft_6_a_lost_timeout_now_is_resent() {
    let mut c = elected_three();
    let now = c.now_ns;
    c.core_mut(1).transfer_leadership(now, n(2)).expect("leader");
    c.process_ready(n(1));
    let before = c.net.len();
    c.net.retain(|m| !matches!(m.msg, Message::TimeoutNow { .. }));
    assert_eq!(c.net.len(), before - 1, "the TimeoutNow was in flight and is lost");
    c.run_for(test_config().election_timeout_min.as_millis() as u64 - 10);
    assert_eq!(c.core(2).role(), Role::Leader);
    c.check_election_safety();
}
