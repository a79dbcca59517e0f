//! Scenarios at the edges of the protocol: leadership transfer through a snapshot, reads
//! whose messages are lost, duplicated and reordered appends, log repair (the logs of the
//! Raft paper's Figure 7), snapshot and transfer bookkeeping, flow control and split votes.
//! Each test names the rule of protocol.md §8/§9 it pins down.

use std::collections::{BTreeMap, BTreeSet};

use decree_types::{DetRng, LogIndex, NodeId, Term};

use super::harness::{test_config, Cluster, InFlight, MS};
use super::paper::{
    after_sync_to, append, elected_three, entry, follower_behind_a_snapshot, n, replica, round,
    snapshot_chunk,
};
use crate::core::{AppendError, Ignored, RaftConfig, RaftCore, ReplicationState, Restored, Role};
use crate::msg::{Entry, HardState, Message, RejectHint};

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

// ----- RAFT-3: every read is served or failed within an election timeout -----

/// Drops every message in flight that `lost` matches; returns how many.
fn lose(c: &mut Cluster, lost: impl Fn(&InFlight) -> bool) -> usize {
    let before = c.net.len();
    c.net.retain(|m| !lost(m));
    before - c.net.len()
}

/// RAFT-3: a follower's read whose `ReadIndexRequest` is lost fails within an election
/// timeout while the leader stays, and so does one whose `ReadIndexResponse` is lost; a late
/// answer to a failed read is ignored.
#[test]
fn raft_3_a_forwarded_read_whose_request_or_answer_is_lost_fails_in_time() {
    let mut c = elected_three();
    let now = c.now_ns;
    c.core_mut(3).read_index(now, 1).expect("follower with a leader");
    c.process_ready(n(3));
    assert_eq!(lose(&mut c, |m| matches!(m.msg, Message::ReadIndexRequest { .. })), 1);
    c.core_mut(3).read_index(now, 2).expect("follower with a leader");
    c.process_ready(n(3));
    c.deliver_all(None);
    c.process_ready(n(1));
    c.deliver_all(None);
    c.process_ready(n(2));
    c.process_ready(n(3));
    c.deliver_all(Some(&BTreeSet::from([n(1)])));
    c.process_ready(n(1));
    assert_eq!(lose(&mut c, |m| matches!(m.msg, Message::ReadIndexResponse { .. })), 1);
    let min_ms = test_config().election_timeout_min.as_millis() as u64;
    c.run_for(min_ms - 100);
    assert!(c.node(3).failed_reads.is_empty() && c.node(3).read_states.is_empty());
    c.run_for(110);
    assert_eq!(c.node(3).failed_reads, vec![1, 2], "both reads failed within the bound");
    assert_eq!(c.core(1).role(), Role::Leader, "while the leader stayed");
    assert!(c.node(3).read_states.is_empty());
    // A follower that lost `max_pending_reads` of them still serves reads.
    let max = test_config().max_pending_reads as u64;
    let now = c.now_ns;
    for ctx in 100..100 + max {
        c.core_mut(3).read_index(now, ctx).expect("room for every read");
    }
    c.process_ready(n(3));
    lose(&mut c, |m| matches!(m.msg, Message::ReadIndexRequest { .. }));
    c.run_for(min_ms + 10);
    assert_eq!(c.node(3).failed_reads.len() as u64, 2 + max);
    let now = c.now_ns;
    c.core_mut(3).read_index(now, 7).expect("the lost reads gave their slots back");
    c.stabilize(None);
    assert_eq!(c.node(3).read_states.last().map(|r| r.ctx), Some(7));
}

/// RAFT-3: a leader cut off from its majority (check-quorum off, so it keeps leading) fails
/// its waiting reads after an election timeout instead of holding them.
#[test]
fn raft_3_a_leader_read_without_a_majority_fails_in_time() {
    let mut config = test_config();
    config.check_quorum = false;
    let mut c = Cluster::new(3, config);
    c.elect(1);
    c.isolate(n(1));
    let now = c.now_ns;
    c.core_mut(1).read_index(now, 9).expect("leader");
    let min_ms = test_config().election_timeout_min.as_millis() as u64;
    c.run_for(min_ms - 100);
    assert!(c.node(1).failed_reads.is_empty());
    c.run_for(110);
    assert_eq!(c.node(1).failed_reads, vec![9]);
    assert_eq!(c.core(1).role(), Role::Leader);
    assert!(c.node(1).read_states.is_empty());
}

// ----- §5.3 / INV-R3: a stale or duplicated append never shortens a follower's log -----

/// §5.3: "If an existing entry conflicts with a new one … delete the existing entry and all
/// that follow it" — only on a conflict. A delayed append whose entries the follower already
/// holds rewrites nothing; its acknowledgement covers what it carried (3), not the log's end,
/// and the commit index it may move to is capped there too.
#[test]
fn raft_5_3_a_delayed_append_of_entries_already_held_rewrites_nothing() {
    let mut core = replica(2, 2, &[1, 2, 2, 2, 2], 1);
    core.ready();
    let before: Vec<Entry> = core.entries().cloned().collect();
    core.step(0, n(1), append(2, (1, 1), vec![entry(2, 2), entry(2, 3)], 5)).expect("leader");
    let ready = core.ready();
    assert!(ready.entries.is_empty(), "nothing to persist: {:?}", ready.entries);
    assert_eq!(core.entries().cloned().collect::<Vec<_>>(), before);
    assert_eq!(core.last_index(), LogIndex(5));
    assert_eq!(core.commit_index(), LogIndex(3), "commit is capped at the append's last entry");
    let acks = after_sync_to(&ready, 1);
    assert!(
        matches!(
            acks.as_slice(),
            [Message::AppendResponse { success: true, match_index: LogIndex(3), .. }]
        ),
        "{acks:?}"
    );
}

/// INV-R3 under a hostile network: appends and their answers are delivered out of order,
/// duplicated and late, including a stale rejection. No follower's log ever shrinks, the
/// leader's match index for a follower never decreases and its next index stays above it.
#[test]
fn raft_5_3_reordered_and_duplicated_appends_never_shrink_a_log_or_move_match_back() {
    let mut config = test_config();
    config.max_inflight_appends = 4;
    config.max_append_entries = 2;
    let mut c = Cluster::new(3, config);
    c.elect(1);
    let mut rng = DetRng::new(7);
    let mut last = BTreeMap::new();
    let mut matched = BTreeMap::new();
    let mut old: Vec<InFlight> = Vec::new();
    let (mut rejections, mut stale_rejections) = (0, 0);
    for round in 0..300 {
        if round % 20 == 0 {
            c.now_ns += 100 * MS;
            c.tick_all();
        }
        // Two proposals, each sent at once: two appends per follower in flight.
        for k in 0..2 {
            if round < 240 {
                c.propose(1, &format!("r{round}.{k}"));
            }
            for id in [n(1), n(2), n(3)] {
                if c.nodes[&id].core().has_ready() {
                    c.process_ready(id);
                }
            }
        }
        // Hold some messages back to deliver much later and keep copies of others (late
        // duplicates); shuffle the rest, duplicate some and deliver them.
        let mut batch = Vec::new();
        for m in std::mem::take(&mut c.net) {
            match rng.range(0, 10) {
                0 => old.push(m),
                1 => {
                    old.push(m.clone());
                    batch.push(m);
                }
                _ => batch.push(m),
            }
        }
        if rng.chance(1, 4) && !old.is_empty() {
            let pick = rng.range(0, old.len() as u64) as usize;
            batch.push(old.swap_remove(pick));
        }
        let dup: Vec<InFlight> = batch.iter().filter(|_| rng.chance(1, 6)).cloned().collect();
        batch.extend(dup);
        for i in (1..batch.len()).rev() {
            let j = rng.range(0, i as u64 + 1) as usize;
            batch.swap(i, j);
        }
        for m in batch {
            let rejection = matches!(m.msg, Message::AppendResponse { success: false, .. });
            let ignored = c.deliver(m);
            rejections += usize::from(rejection);
            if rejection && ignored.contains("stale or duplicate") {
                stale_rejections += 1;
            }
            for id in [2, 3] {
                let last_index = c.core(id).last_index();
                let prev = last.insert(id, last_index).unwrap_or_default();
                // Shrinking is allowed only when a conflicting suffix is replaced, which a
                // single leader with one term never causes.
                assert!(last_index >= prev, "n{id}'s log shrank from {prev} to {last_index}");
                let p = &c.core(1).progress[&n(id)];
                let prev_match = matched.insert(id, p.match_index).unwrap_or_default();
                assert!(p.match_index >= prev_match, "match of n{id} went back");
                assert!(p.next_index > p.match_index, "next of n{id} at or below match");
            }
        }
        c.check_log_invariants();
    }
    assert!(
        stale_rejections > 0,
        "the schedule delivered no stale rejection ({rejections} rejections)"
    );
    c.run_for(1000);
    assert_eq!(c.core(1).role(), Role::Leader);
    assert_eq!(c.core(1).term(), Term(1), "one leader, one term throughout");
    for id in [2, 3] {
        assert_eq!(c.core(id).last_index(), c.core(1).last_index());
        assert_eq!(c.node(id).applied, c.node(1).applied);
    }
}

/// A rejection of a `prev_log_index` at or below the follower's known match is stale (an
/// answer to a probe sent before the follower caught up): it changes nothing.
#[test]
fn raft_5_3_a_stale_rejection_does_not_move_match_or_next() {
    let mut c = elected_three();
    for i in 0..3 {
        c.propose(1, &format!("s{i}"));
    }
    c.stabilize(None);
    let (match_before, next_before) = {
        let p = &c.core(1).progress[&n(2)];
        (p.match_index, p.next_index)
    };
    assert_eq!(match_before, LogIndex(4));
    let stale = Message::AppendResponse {
        term: Term(1),
        success: false,
        match_index: LogIndex(2),
        reject_hint: Some(RejectHint {
            last_index: LogIndex(1),
            conflict_term: None,
            conflict_first_index: LogIndex(2),
        }),
        read_seq: 0,
    };
    let now = c.now_ns;
    assert_eq!(c.core_mut(1).step(now, n(2), stale), Err(Ignored::Stale));
    let p = &c.core(1).progress[&n(2)];
    assert_eq!((p.match_index, p.next_index), (match_before, next_before));
    assert_eq!(p.state, ReplicationState::Replicate);
}

// ----- §5.3 log repair: the follower logs of Figure 7 -----

/// The log of the term-8 leader in Figure 7 of the Raft paper, by term.
const FIGURE_7_LEADER: [u64; 10] = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];

fn log_of(terms: &[u64]) -> Vec<Entry> {
    terms.iter().enumerate().map(|(i, &t)| entry(t, i as u64 + 1)).collect()
}

/// The distinct terms of `follower`'s entries that the leader's log does not hold at the
/// same index.
fn conflicting_terms(follower: &[u64]) -> BTreeSet<u64> {
    follower
        .iter()
        .enumerate()
        .filter(|(i, t)| FIGURE_7_LEADER.get(*i) != Some(t))
        .map(|(_, t)| *t)
        .collect()
}

/// n1 and n2 hold the leader's log of Figure 7, n3 `follower` (compacted up to
/// `snapshot_at`); all are at term 7. n1 is elected for term 8 and repairs n3's log. Returns
/// the rejections n3 sent.
fn repair_figure_7(follower: &[u64], snapshot_at: Option<u64>) -> usize {
    let mut c = Cluster::new(3, test_config());
    let commit = LogIndex(snapshot_at.unwrap_or(3));
    for id in [1, 2] {
        c.preload(n(id), Term(7), LogIndex(3), log_of(&FIGURE_7_LEADER), None);
    }
    c.preload(n(3), Term(7), commit, log_of(follower), snapshot_at.map(LogIndex));
    c.trace_delivery = true;
    let now = c.now_ns;
    c.core_mut(1).campaign(now);
    let trace = c.stabilize(None);
    assert_eq!((c.core(1).role(), c.core(1).term()), (Role::Leader, Term(8)));
    let leader: Vec<Entry> = c.core(1).entries().cloned().collect();
    let repaired: Vec<Entry> = c.core(3).entries().cloned().collect();
    assert_eq!(repaired[..], leader[leader.len() - repaired.len()..], "{follower:?}");
    assert_eq!(c.core(3).last_index(), LogIndex(11));
    assert_eq!(c.core(3).commit_index(), LogIndex(11));
    assert_eq!(c.node(3).applied, c.node(1).applied, "{follower:?}");
    c.check_log_invariants();
    trace.lines().filter(|l| l.contains("3->1 AppendResponse") && l.contains("reject")).count()
}

/// §5.3 with fast back-tracking: each follower log of Figure 7 converges to the term-8
/// leader's with at most one rejection per conflicting term plus one (for a log that is
/// merely short), including conflict terms the leader never had (2, 3 and 7) and followers
/// whose logs are compacted, so that the hint is cut at their snapshot.
#[test]
fn raft_5_3_figure_7_followers_converge_with_one_rejection_per_conflicting_term() {
    let followers: [(&str, &[u64], Option<u64>, usize); 8] = [
        ("a", &[1, 1, 1, 4, 4, 5, 5, 6, 6], None, 1),
        ("b", &[1, 1, 1, 4], None, 1),
        ("c", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], None, 0),
        ("d", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], None, 0),
        ("e", &[1, 1, 1, 4, 4, 4, 4], None, 2),
        ("f", &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], None, 2),
        ("e compacted to 5", &[1, 1, 1, 4, 4, 4, 4], Some(5), 2),
        ("a compacted to 9", &[1, 1, 1, 4, 4, 5, 5, 6, 6], Some(9), 1),
    ];
    for (name, log, snapshot_at, expected) in followers {
        let bound = conflicting_terms(log).len() + 1;
        let rejections = repair_figure_7(log, snapshot_at);
        assert!(rejections <= bound, "({name}) {rejections} rejections, bound {bound}");
        assert_eq!(rejections, expected, "({name})");
    }
}

/// §5.4.1 / RAFT-2 with 5 voters: n1 and n2 hold two uncommitted entries of term 2; n3, n4
/// and n5, whose logs end in term 1, elect n3 for term 3, and n3 overwrites the higher-term
/// suffix once the cut heals. Nobody ever applies an overwritten entry, and every log
/// converges on n3's.
#[test]
fn raft_5_4_a_new_leader_overwrites_a_higher_term_uncommitted_suffix() {
    let mut c = Cluster::new(5, test_config());
    for id in [1, 2] {
        c.preload(n(id), Term(2), LogIndex(1), log_of(&[1, 2, 2]), None);
    }
    for id in [3, 4, 5] {
        c.preload(n(id), Term(2), LogIndex(1), log_of(&[1]), None);
    }
    c.isolate(n(1));
    c.isolate(n(2));
    c.elect(3);
    assert_eq!(c.core(3).term(), Term(3));
    c.propose(3, "after");
    c.stabilize(None);
    assert_eq!(c.core(3).commit_index(), LogIndex(3), "committed by n3, n4 and n5");
    c.heal();
    c.run_for(500);
    let leader: Vec<Entry> = c.core(3).entries().cloned().collect();
    assert_eq!(leader.iter().map(|e| e.term.0).collect::<Vec<_>>(), vec![1, 3, 3]);
    for id in [1, 2, 4, 5] {
        assert_eq!(c.core(id).entries().cloned().collect::<Vec<_>>(), leader, "n{id}");
        assert_eq!(c.node(id).applied, c.node(3).applied, "n{id}");
    }
    assert!(
        c.applied_anywhere.values().all(|e| e.term != Term(2)),
        "an overwritten entry was applied: {:?}",
        c.applied_anywhere
    );
    c.check_election_safety();
    c.check_log_invariants();
}

// ----- RAFT-3 at a deposed leader -----

/// RAFT-3: a leader cut off from the others (check-quorum off, so it does not step down on
/// its own) confirms a read only with acknowledgements of a round started after the read.
/// Delayed and duplicated acknowledgements of an earlier round — even delivered after the
/// others elected a new leader that committed a write — never make it answer a read asked
/// after that write below the write's index.
#[test]
fn raft_3_a_deposed_leader_never_serves_a_read_below_a_newer_write() {
    let mut config = test_config();
    config.check_quorum = false;
    let mut c = Cluster::new(3, config);
    c.elect(1);
    // Round 1 of n1's reads: the followers' acknowledgements are held back.
    let now = c.now_ns;
    c.core_mut(1).read_index(now, 1).expect("leader");
    c.process_ready(n(1));
    c.deliver_all(Some(&BTreeSet::from([n(2), n(3)])));
    c.process_ready(n(2));
    c.process_ready(n(3));
    let held: Vec<InFlight> = c.net.drain(..).filter(|m| m.to == n(1)).collect();
    assert_eq!(held.len(), 2);
    // n1 is cut off; n2 and n3 elect a new leader, which commits a write.
    c.isolate(n(1));
    c.run_for(3000);
    let new_leader = c.leader().filter(|&l| l != n(1)).expect("n2 or n3 leads");
    let write = c.propose(new_leader.0, "write");
    c.stabilize(None);
    assert_eq!(c.core(new_leader.0).commit_index(), write);
    assert_eq!(c.core(1).role(), Role::Leader, "n1 still believes it leads");
    // A read asked of n1 now, answered by the old acknowledgements, twice each.
    let now = c.now_ns;
    c.core_mut(1).read_index(now, 2).expect("n1 still leads");
    c.process_ready(n(1));
    for m in held.iter().chain(held.iter()) {
        c.deliver(m.clone());
    }
    c.process_ready(n(1));
    assert!(
        c.node(1).read_states.iter().all(|r| r.ctx != 2),
        "read 2 served from old acknowledgements: {:?}",
        c.node(1).read_states
    );
    // The cut heals: n1 learns the new term and the read fails; it is never served.
    c.heal();
    c.run_for(500);
    assert_ne!(c.core(1).role(), Role::Leader);
    assert!(c.node(1).failed_reads.contains(&2));
    assert!(c.node(1).read_states.iter().all(|r| r.ctx != 2 || r.index >= write));
}

// ----- RAFT-5 / §5.4.1: a stale candidate -----

/// Everything `core` has to send, plain and after its fsync.
fn outbox(core: &mut RaftCore) -> Vec<(NodeId, Message)> {
    let ready = core.ready();
    let after_sync = ready.persisted_messages.peek().iter().cloned();
    ready.messages.iter().cloned().chain(after_sync).collect()
}

/// Steps the messages of `sent` addressed to `to` into it; returns its answers to `from`.
fn exchange(sent: &[(NodeId, Message)], from: NodeId, to: &mut RaftCore) -> Vec<Message> {
    for (dest, msg) in sent {
        if *dest == to.id() {
            let _ = to.step(0, from, msg.clone());
        }
    }
    outbox(to).into_iter().filter(|(dest, _)| *dest == from).map(|(_, m)| m).collect()
}

/// RAFT-5: a pre-candidate whose log is behind the voters' is refused; nobody's term moves,
/// and a majority of refusals makes it a follower again.
#[test]
fn raft_5_pre_vote_is_refused_to_a_stale_log_and_no_term_moves() {
    let mut stale = replica(3, 1, &[1], 1);
    let mut voters = [replica(1, 1, &[1, 1, 1], 1), replica(2, 1, &[1, 1, 1], 1)];
    stale.campaign(0);
    assert_eq!(stale.role(), Role::PreCandidate);
    let sent = outbox(&mut stale);
    for voter in &mut voters {
        let answers = exchange(&sent, n(3), voter);
        assert_eq!(answers, vec![Message::PreVoteResponse { term: Term(1), granted: false }]);
        assert_eq!(voter.term(), Term(1), "a pre-vote never moves a voter's term");
        for answer in answers {
            let _ = stale.step(0, voter.id(), answer);
        }
    }
    assert_eq!((stale.role(), stale.term()), (Role::Follower, Term(1)));
}

/// §5.4.1: without pre-vote the stale candidate's term moves (and so do the voters'), but it
/// gets no vote, and a majority of refusals makes it a follower.
#[test]
fn raft_5_4_1_a_majority_of_refused_votes_makes_a_candidate_a_follower() {
    let config = RaftConfig { pre_vote: false, ..test_config() };
    let voters_of = |id| {
        let entries = log_of(if id == 3 { &[1] } else { &[1, 1, 1] });
        let restored = Restored {
            hard_state: HardState { term: Term(1), vote: None, commit: LogIndex(1) },
            entries,
            ..Restored::default()
        };
        RaftCore::new(config.clone(), n(id), vec![n(1), n(2), n(3)], restored, DetRng::new(id), 0)
            .expect("valid state")
    };
    let mut stale = voters_of(3);
    let mut voters = [voters_of(1), voters_of(2)];
    stale.campaign(0);
    assert_eq!((stale.role(), stale.term()), (Role::Candidate, Term(2)));
    let sent = outbox(&mut stale);
    let first = exchange(&sent, n(3), &mut voters[0]);
    assert_eq!(first, vec![Message::VoteResponse { term: Term(2), granted: false }]);
    stale.step(0, n(1), first[0].clone()).expect("counted");
    assert_eq!(stale.role(), Role::Candidate, "one refusal of three voters is no majority");
    let second = exchange(&sent, n(3), &mut voters[1]);
    stale.step(0, n(2), second[0].clone()).expect("counted");
    assert_eq!((stale.role(), stale.term(), stale.leader()), (Role::Follower, Term(2), None));
}

// ----- RAFT-8: snapshot edges -----

/// RAFT-8: a late copy of an InstallSnapshot for a point at or below the follower's commit
/// index — the last chunk or any other — is acknowledged with the commit index and installs
/// nothing; the log stays as it was.
#[test]
fn raft_8_a_late_duplicate_snapshot_at_or_below_commit_installs_nothing() {
    let mut core = replica(2, 2, &[1, 1, 2, 2], 4);
    core.ready();
    let before: Vec<Entry> = core.entries().cloned().collect();
    for (index, offset, done) in [(3, 0, true), (4, 0, true), (4, 8, false), (2, 16, true)] {
        core.step(0, n(1), snapshot_chunk(2, index, offset, &[1, 2, 3], done)).expect("leader");
        let ready = core.ready();
        assert!(ready.snapshot.is_none(), "snapshot {index} installed");
        assert!(ready.entries.is_empty() && ready.committed_entries.is_empty());
        let answers = after_sync_to(&ready, 1);
        assert_eq!(
            answers,
            vec![Message::InstallSnapshotResponse {
                term: Term(2),
                last_index: LogIndex(4),
                next_offset: 0,
                done: true
            }],
            "snapshot {index} at offset {offset}"
        );
        assert_eq!(core.entries().cloned().collect::<Vec<_>>(), before);
        assert_eq!((core.snapshot_index(), core.commit_index()), (LogIndex(0), LogIndex(4)));
    }
}

/// RAFT-8: while a snapshot is being sent, the follower gets chunks and heartbeats, never
/// entries; an ordinary append acknowledgement at or beyond the snapshot's index (the
/// follower got there another way) ends the transfer and replication resumes.
#[test]
fn raft_8_no_entries_in_snapshot_mode_and_an_append_ack_beyond_the_snapshot_ends_it() {
    let (mut c, s1) = follower_behind_a_snapshot(30);
    c.fire(n(1));
    let mut chunks = Vec::new();
    for i in 0..6 {
        c.propose(1, &format!("during-{i}"));
        chunks.extend(round(&mut c, n(3)));
        let appends_to_n3 = c.net.iter().filter(|m| m.to == n(3));
        for m in appends_to_n3 {
            if let Message::AppendEntries { entries, .. } = &m.msg {
                assert!(entries.is_empty(), "entries sent in snapshot mode: {entries:?}");
            }
        }
        if i == 2 {
            c.now_ns += 100 * MS;
            c.tick_all();
        }
    }
    assert!(!chunks.is_empty());
    assert_eq!(c.core(1).progress[&n(3)].state, ReplicationState::Snapshot);
    let ack = Message::AppendResponse {
        term: c.core(1).term(),
        success: true,
        match_index: s1.last_index,
        reject_hint: None,
        read_seq: 0,
    };
    let now = c.now_ns;
    c.core_mut(1).step(now, n(3), ack).expect("an acknowledgement beyond the snapshot");
    let p = &c.core(1).progress[&n(3)];
    assert_eq!((p.state, p.match_index), (ReplicationState::Replicate, s1.last_index));
    assert!(p.snapshot.is_none(), "the transfer released its snapshot");
}

/// RAFT-8: a lost chunk is sent again, after a heartbeat, from the offset the follower
/// confirmed; the transfer never starts over and completes.
#[test]
fn raft_8_a_lost_chunk_is_resent_from_the_confirmed_offset() {
    let (mut c, s1) = follower_behind_a_snapshot(30);
    c.fire(n(1));
    let mut chunks = Vec::new();
    while chunks.len() < 3 {
        chunks.extend(round(&mut c, n(3)));
    }
    let is_chunk = |m: &InFlight| matches!(m.msg, Message::InstallSnapshot { .. });
    // Run until the next chunk is in flight.
    for _ in 0..4 {
        if c.net.iter().any(is_chunk) {
            break;
        }
        for id in [n(3), n(1)] {
            c.process_ready(id);
        }
        if !c.net.iter().any(is_chunk) {
            c.deliver_all(None);
        }
    }
    let lost: Vec<InFlight> = c.net.iter().filter(|m| is_chunk(m)).cloned().collect();
    assert_eq!(lost.len(), 1, "stop-and-wait: one chunk in flight");
    let Message::InstallSnapshot { offset: lost_offset, .. } = lost[0].msg else { unreachable!() };
    lose(&mut c, is_chunk);
    c.stabilize(None);
    assert_eq!(c.core(3).snapshot_index(), LogIndex(0), "stalled on the lost chunk");
    // The next heartbeat resends from the confirmed offset.
    c.fire(n(1));
    let resent = round(&mut c, n(3));
    assert_eq!(resent.first().map(|ch| ch.offset), Some(lost_offset), "{resent:?}");
    chunks.extend(resent);
    for _ in 0..200 {
        chunks.extend(round(&mut c, n(3)));
    }
    let runs = super::paper::transfers(&chunks);
    assert_eq!(runs.len(), 1, "one transfer, never restarted");
    assert_eq!(c.core(3).snapshot_index(), s1.last_index);
    c.run_for(300);
    assert_eq!(c.node(3).applied, c.node(1).applied);
}

// ----- RAFT-6: transfer bookkeeping -----

/// RAFT-6: a transfer to ourselves cancels the pending one (proposals are accepted again);
/// a transfer to another node replaces the target with a fresh deadline; repeating the
/// current transfer keeps its deadline.
#[test]
fn raft_6_transfer_to_self_cancels_another_target_replaces_a_repeat_keeps_the_deadline() {
    let mut c = elected_three();
    c.isolate(n(2));
    c.isolate(n(3));
    let t0 = c.now_ns;
    c.core_mut(1).transfer_leadership(t0, n(2)).expect("leader");
    // (n2 is caught up: the TimeoutNow that goes out at once is lost on the cut link.)
    c.stabilize(None);
    let deadline = c.core(1).transfer.map(|t| t.deadline_ns).expect("pending");
    c.now_ns += 200 * MS;
    let now = c.now_ns;
    c.core_mut(1).transfer_leadership(now, n(2)).expect("repeat");
    assert_eq!(c.core(1).transfer.map(|t| t.deadline_ns), Some(deadline), "deadline kept");
    c.core_mut(1).transfer_leadership(now, n(1)).expect("to self");
    assert_eq!(c.core(1).transfer_target(), None, "cancelled");
    c.core_mut(1).propose(now, b"ok".to_vec()).expect("proposals accepted again");
    c.core_mut(1).transfer_leadership(now, n(2)).expect("again");
    c.stabilize(None);
    c.now_ns += 50 * MS;
    let later = c.now_ns;
    c.core_mut(1).transfer_leadership(later, n(3)).expect("another target");
    let t = c.core(1).transfer.expect("pending");
    assert_eq!(t.target, n(3), "the target is replaced");
    assert_eq!(t.deadline_ns, later + test_config().election_timeout_min.as_nanos() as u64);
    assert!(matches!(
        c.core_mut(1).propose(later, vec![]),
        Err(AppendError::TransferInProgress { target }) if target == n(3)
    ));
    // Heal (well within the followers' election timeouts): only the current target is told
    // to campaign.
    c.heal();
    c.run_for(300);
    assert_eq!(c.core(3).role(), Role::Leader, "{}", c.render_state());
    assert_ne!(c.core(2).role(), Role::Leader);
}

/// RAFT-6: a leader that steps down for a higher term drops its pending transfer; leading
/// again later it accepts proposals.
#[test]
fn raft_6_a_pending_transfer_is_dropped_when_the_leader_steps_down() {
    let mut c = elected_three();
    c.isolate(n(3));
    let now = c.now_ns;
    c.core_mut(1).transfer_leadership(now, n(3)).expect("leader");
    let higher = Message::AppendResponse {
        term: Term(5),
        success: false,
        match_index: LogIndex(0),
        reject_hint: None,
        read_seq: 0,
    };
    let _ = c.core_mut(1).step(now, n(2), higher);
    assert_eq!((c.core(1).role(), c.core(1).term()), (Role::Follower, Term(5)));
    assert_eq!(c.core(1).transfer_target(), None);
    c.stabilize(None);
    // Past n2's leader lease, n1 campaigns and wins with n2.
    c.now_ns += 1100 * MS;
    let now = c.now_ns;
    c.core_mut(1).campaign(now);
    c.stabilize(None);
    assert_eq!(c.core(1).role(), Role::Leader);
    assert_eq!(c.core(1).transfer_target(), None);
    c.propose(1, "accepted");
}

// ----- flow control: max_uncommitted_bytes -----

/// Proposals of `bytes` bytes that `id` accepts until it refuses one; returns how many.
fn accepted_until_refused(c: &mut Cluster, id: u64, bytes: usize) -> usize {
    let now = c.now_ns;
    let mut accepted = 0;
    loop {
        match c.core_mut(id).propose(now, vec![7; bytes]) {
            Ok(_) => accepted += 1,
            Err(AppendError::TooManyUncommitted { .. }) => return accepted,
            Err(e) => panic!("unexpected refusal {e}"),
        }
        assert!(accepted <= 1000, "flow control never refused");
    }
}

/// With room for exactly N proposals, N are accepted and the next refused; once they
/// commit, exactly N again. A single proposal larger than the limit is accepted when
/// nothing awaits commit. A leader change neither underflows the count nor blocks the new
/// leader, and the old leader leading again starts from nothing.
#[test]
fn raft_5_3_uncommitted_bytes_admit_exactly_the_limit_across_commits_and_leader_changes() {
    const N: usize = 4;
    const BYTES: usize = 10;
    let mut config = test_config();
    config.max_uncommitted_bytes = (N * BYTES) as u64;
    let mut c = Cluster::new(3, config);
    c.elect(1);
    c.isolate(n(2));
    c.isolate(n(3));
    assert_eq!(accepted_until_refused(&mut c, 1, BYTES), N);
    c.heal();
    c.run_for(300);
    assert_eq!(c.core(1).commit_index(), c.core(1).last_index());
    c.isolate(n(2));
    c.isolate(n(3));
    assert_eq!(accepted_until_refused(&mut c, 1, BYTES), N, "exactly N again after commit");
    c.heal();
    c.run_for(300);
    // One proposal over the limit: accepted alone, then nothing more.
    c.isolate(n(2));
    c.isolate(n(3));
    let now = c.now_ns;
    c.core_mut(1).propose(now, vec![1; N * BYTES + 1]).expect("alone it is accepted");
    assert_eq!(accepted_until_refused(&mut c, 1, 1), 0);
    // n1 is deposed with its uncommitted entries; n2 leads and has the full allowance.
    c.heal();
    c.isolate(n(1));
    c.run_for(3000);
    let leader = c.leader().filter(|&l| l != n(1)).expect("n2 or n3 leads").0;
    c.isolate(n(1));
    let other = if leader == 2 { 3 } else { 2 };
    c.isolate(n(other));
    assert_eq!(accepted_until_refused(&mut c, leader, BYTES), N, "the new leader is not blocked");
    c.heal();
    c.run_for(500);
    assert_ne!(c.core(1).role(), Role::Leader);
    assert_eq!(c.core(1).commit_index(), c.core(leader).commit_index());
    // n1 leads again: its count starts from nothing.
    let now = c.now_ns;
    c.core_mut(leader).transfer_leadership(now, n(1)).expect("leader");
    c.run_for(500);
    assert_eq!(c.core(1).role(), Role::Leader);
    c.isolate(n(2));
    c.isolate(n(3));
    assert_eq!(accepted_until_refused(&mut c, 1, BYTES), N);
    c.check_election_safety();
    c.check_log_invariants();
}

// ----- §5.2 liveness corners: split votes and quorum sizes -----

/// §5.2: in a 4-voter group (pre-vote off) n1 and n2 campaign at once and split the vote
/// 2-2: neither wins nor gives up (two refusals are no majority of four). Randomized
/// timeouts resolve it in the next round: a leader of term 2 within one more election
/// timeout.
#[test]
fn raft_5_2_a_split_vote_of_four_resolves_in_the_next_round() {
    let config = RaftConfig { pre_vote: false, ..test_config() };
    let mut c = Cluster::new(4, config);
    let now = c.now_ns;
    c.core_mut(1).campaign(now);
    c.core_mut(2).campaign(now);
    c.process_ready(n(1));
    c.process_ready(n(2));
    // n3 hears n1 first, n4 hears n2 first.
    let first = |m: &InFlight| (m.from, m.to) == (n(1), n(3)) || (m.from, m.to) == (n(2), n(4));
    let (early, late): (Vec<InFlight>, Vec<InFlight>) = c.net.drain(..).partition(first);
    for m in early.into_iter().chain(late) {
        c.deliver(m);
    }
    c.stabilize(None);
    for id in [1, 2] {
        assert_eq!((c.core(id).role(), c.core(id).term()), (Role::Candidate, Term(1)), "n{id}");
    }
    assert_eq!(c.leader(), None);
    c.run_for(test_config().election_timeout_max.as_millis() as u64 + 100);
    let leader = c.leader().expect("a leader in the next round");
    assert_eq!(c.core(leader.0).term(), Term(2), "resolved in the next round");
    c.check_election_safety();
}

/// §5.2 quorum sizes: a majority of 1, 2, 3, 4, 5 voters is 1, 2, 2, 3, 3. With 2 voters
/// the leader needs its peer to commit; with 4 voters, two of them cannot commit (nor keep a
/// leader under check-quorum) and three can.
#[test]
fn raft_5_2_quorum_of_two_and_four_voters() {
    for (voters, quorum) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)] {
        assert_eq!(Cluster::new(voters, test_config()).core(1).quorum(), quorum, "{voters}");
    }
    let mut two = Cluster::new(2, test_config());
    two.elect(1);
    two.isolate(n(2));
    let index = two.propose(1, "needs n2");
    two.run_for(500);
    assert!(two.core(1).commit_index() < index, "one of two voters is no majority");
    two.heal();
    two.run_for(300);
    assert_eq!(two.core(1).commit_index(), index);

    let mut four = Cluster::new(4, test_config());
    four.elect(1);
    four.isolate(n(3));
    four.isolate(n(4));
    let index = four.propose(1, "needs three");
    four.run_for(500);
    assert!(four.core(1).commit_index() < index, "two of four voters are no majority");
    // The first check-quorum round still counts the acknowledgements of the election.
    four.run_for(1600);
    assert_ne!(four.core(1).role(), Role::Leader, "check-quorum: two of four step down");
    four.heal();
    four.isolate(n(4));
    four.run_for(3000);
    let leader = four.leader().expect("three of four elect a leader");
    let index = four.propose(leader.0, "three suffice");
    four.stabilize(None);
    assert_eq!(four.core(leader.0).commit_index(), index);
    four.check_election_safety();
    four.check_log_invariants();
}
