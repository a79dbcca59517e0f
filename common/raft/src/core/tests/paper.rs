//! Tests named after the sections of the Raft paper (Ongaro & Ousterhout, "In Search of an
//! Understandable Consensus Algorithm") and the rule IDs of protocol.md §8/§9, in the style of
//! raft-rs's `test_raft_paper.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use decree_types::{DetRng, LogIndex, NodeId, Term};

use super::harness::{test_config, Cluster, MS};
use crate::core::{
    AppendError, Ignored, RaftConfig, RaftCore, ReadIndexError, ReplicationState, RestoreError,
    Restored, Role, SnapshotError, TransferError,
};
use crate::msg::{Entry, EntryPayload, HardState, Message, RejectHint, SnapshotMeta};
use crate::ready::Ready;

pub(super) fn n(id: u64) -> NodeId {
    NodeId(id)
}

pub(super) fn entry(term: u64, index: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(vec![index as u8]),
    }
}

/// A replica of a three-voter group restored with entries of the given terms.
pub(super) fn replica(id: u64, term: u64, terms: &[u64], commit: u64) -> RaftCore {
    let entries = terms.iter().enumerate().map(|(i, &t)| entry(t, i as u64 + 1)).collect();
    let restored = Restored {
        hard_state: HardState { term: Term(term), vote: None, commit: LogIndex(commit) },
        snapshot: None,
        entries,
        applied: LogIndex(0),
    };
    RaftCore::new(test_config(), n(id), vec![n(1), n(2), n(3)], restored, DetRng::new(id), 0)
        .expect("valid state")
}

pub(super) fn msgs_to(ready: &Ready, to: u64) -> Vec<Message> {
    ready.messages.iter().filter(|(t, _)| *t == n(to)).map(|(_, m)| m.clone()).collect()
}

pub(super) fn after_sync_to(ready: &Ready, to: u64) -> Vec<Message> {
    ready
        .persisted_messages
        .peek()
        .iter()
        .filter(|(t, _)| *t == n(to))
        .map(|(_, m)| m.clone())
        .collect()
}

pub(super) fn append(term: u64, prev: (u64, u64), entries: Vec<Entry>, commit: u64) -> Message {
    Message::AppendEntries {
        term: Term(term),
        prev_log_index: LogIndex(prev.1),
        prev_log_term: Term(prev.0),
        entries,
        leader_commit: LogIndex(commit),
        read_seq: 0,
    }
}

pub(super) fn elected_three() -> Cluster {
    let mut c = Cluster::new(3, test_config());
    c.elect(1);
    c
}

// ----- §5.2 Leader election -----

#[test]
fn raft_5_2_follower_campaigns_only_after_a_randomized_election_timeout() {
    let config = test_config();
    let mut deadlines = BTreeSet::new();
    for seed in 0..20 {
        let mut core = RaftCore::new(
            config.clone(),
            n(1),
            vec![n(1), n(2), n(3)],
            Restored::default(),
            DetRng::new(seed),
            0,
        )
        .expect("new replica");
        let deadline = core.next_deadline_ns();
        assert!(
            (1000 * MS..2000 * MS).contains(&deadline),
            "deadline {deadline} within [min, max)"
        );
        deadlines.insert(deadline);
        core.tick(deadline - 1);
        assert!(core.ready().messages.is_empty(), "no campaign before the timeout");
        core.tick(deadline);
        assert_eq!(core.role(), Role::PreCandidate);
        let ready = core.ready();
        assert!(matches!(msgs_to(&ready, 2)[..], [Message::PreVote { term: Term(1), .. }]));
    }
    assert!(deadlines.len() > 15, "timeouts are randomized");
}

#[test]
fn raft_5_2_leader_election_in_three_nodes_commits_a_noop() {
    let c = elected_three();
    for id in 1..=3 {
        let core = c.core(id);
        assert_eq!(core.term(), Term(1));
        assert_eq!(core.leader(), Some(n(1)));
        assert_eq!(core.commit_index(), LogIndex(1));
        // RAFT-2: the first entry of a term is the leader's no-op.
        assert_eq!(core.entries().next().map(|e| e.payload.clone()), Some(EntryPayload::Noop));
    }
    assert_eq!(c.core(1).role(), Role::Leader);
}

#[test]
fn raft_5_2_single_voter_elects_itself_and_commits_after_persisting() {
    let mut core =
        RaftCore::new(test_config(), n(1), vec![n(1)], Restored::default(), DetRng::new(1), 0)
            .expect("new replica");
    core.campaign(0);
    assert_eq!(core.role(), Role::Leader);
    let ready = core.ready();
    assert_eq!(ready.entries.len(), 1);
    assert!(
        ready.committed_entries.is_empty(),
        "the leader's own entry counts only once persisted"
    );
    let (index, term) = ready.persist_mark().expect("entries to persist");
    core.on_persisted(index, term);
    assert_eq!(core.commit_index(), LogIndex(1));
    let index = core.propose(0, b"x".to_vec()).expect("leader");
    let ready = core.ready();
    assert_eq!(ready.committed_entries.len(), 1, "the no-op");
    core.on_persisted(index, Term(1));
    assert_eq!(core.commit_index(), index);
}

#[test]
fn raft_5_2_voter_grants_one_vote_per_term() {
    let mut core = replica(1, 1, &[1], 0);
    let req = |term| Message::RequestVote {
        term: Term(term),
        last_log_index: LogIndex(1),
        last_log_term: Term(1),
        transfer: false,
    };
    core.step(0, n(2), req(2)).expect("vote request");
    core.step(0, n(3), req(2)).expect("vote request");
    core.step(0, n(2), req(2)).expect("repeated request");
    let ready = core.ready();
    assert_eq!(
        after_sync_to(&ready, 2),
        vec![
            Message::VoteResponse { term: Term(2), granted: true },
            Message::VoteResponse { term: Term(2), granted: true }
        ]
    );
    assert_eq!(
        after_sync_to(&ready, 3),
        vec![Message::VoteResponse { term: Term(2), granted: false }]
    );
    assert_eq!(ready.hard_state.map(|h| h.vote), Some(Some(n(2))));
}

#[test]
fn raft_5_2_candidate_steps_down_on_append_from_leader_of_its_term() {
    let mut config = test_config();
    config.pre_vote = false;
    let mut core =
        RaftCore::new(config, n(1), vec![n(1), n(2), n(3)], Restored::default(), DetRng::new(1), 0)
            .expect("new replica");
    core.campaign(0);
    assert_eq!(core.role(), Role::Candidate);
    core.step(0, n(2), append(1, (0, 0), vec![], 0)).expect("append");
    assert_eq!(core.role(), Role::Follower);
    assert_eq!(core.leader(), Some(n(2)));
    assert_eq!(core.term(), Term(1));
}

#[test]
fn raft_5_1_higher_term_makes_leader_step_down_and_stale_term_is_answered() {
    let mut c = elected_three();
    let leader = c.core_mut(1);
    let reply = Message::AppendResponse {
        term: Term(5),
        success: false,
        match_index: LogIndex(0),
        reject_hint: None,
        read_seq: 0,
    };
    leader.step(0, n(2), reply).expect_err("no effect besides stepping down");
    assert_eq!(leader.role(), Role::Follower);
    assert_eq!(leader.term(), Term(5));
    leader.ready();
    // A message of an older term is refused, and the sender learns our term.
    let stale = append(1, (1, 1), vec![], 1);
    assert_eq!(leader.step(0, n(3), stale), Err(Ignored::StaleTerm));
    let ready = leader.ready();
    assert!(matches!(
        after_sync_to(&ready, 3)[..],
        [Message::AppendResponse { term: Term(5), success: false, .. }]
    ));
}

// ----- §5.4.1 Election restriction -----

#[test]
fn raft_5_4_1_election_restriction_rejects_a_less_up_to_date_candidate() {
    // Our log ends at term 2; candidates with (term 1, longer) or (term 2, shorter) logs lose.
    for (last_term, last_index, granted) in
        [(1, 5, false), (2, 1, false), (2, 2, true), (3, 1, true)]
    {
        let mut core = replica(1, 2, &[1, 2], 0);
        let req = Message::RequestVote {
            term: Term(3),
            last_log_index: LogIndex(last_index),
            last_log_term: Term(last_term),
            transfer: false,
        };
        core.step(0, n(2), req).expect("vote request");
        let ready = core.ready();
        assert_eq!(
            after_sync_to(&ready, 2),
            vec![Message::VoteResponse { term: Term(3), granted }]
        );
    }
}

// ----- §5.3 Log replication -----

#[test]
fn raft_5_3_follower_rejects_mismatch_with_a_hint_naming_the_conflicting_term() {
    let mut core = replica(2, 2, &[1, 1, 2, 2], 0);
    core.step(0, n(1), append(3, (3, 4), vec![], 0)).expect("append");
    let ready = core.ready();
    assert_eq!(
        after_sync_to(&ready, 1),
        vec![Message::AppendResponse {
            term: Term(3),
            success: false,
            match_index: LogIndex(4),
            reject_hint: Some(RejectHint {
                last_index: LogIndex(4),
                conflict_term: Some(Term(2)),
                conflict_first_index: LogIndex(3),
            }),
            read_seq: 0,
        }]
    );
}

#[test]
fn raft_5_3_follower_truncates_a_conflicting_suffix_and_acks_after_sync() {
    let mut core = replica(2, 2, &[1, 1, 2, 2], 1);
    core.step(0, n(1), append(3, (1, 2), vec![entry(3, 3)], 2)).expect("append");
    let ready = core.ready();
    assert_eq!(ready.entries, vec![entry(3, 3)], "the tail from index 3 is replaced");
    assert!(ready.messages.is_empty());
    assert!(matches!(
        after_sync_to(&ready, 1)[..],
        [Message::AppendResponse { success: true, match_index: LogIndex(3), .. }]
    ));
    let terms: Vec<u64> = core.entries().map(|e| e.term.0).collect();
    assert_eq!(terms, vec![1, 1, 3]);
    assert_eq!(core.commit_index(), LogIndex(2));
}

#[test]
fn raft_5_3_leader_backs_up_to_the_follower_end_in_one_round_trip() {
    let mut c = Cluster::new(3, test_config());
    c.elect(1);
    c.isolate(n(3));
    for i in 0..20 {
        c.propose(1, &format!("e{i}"));
        c.stabilize(None);
    }
    c.heal();
    c.restart(n(1)); // forget progress: node 1 restarts, must be re-elected and probe node 3
    c.now_ns += 1000 * MS;
    c.elect(1);
    assert_eq!(c.core(3).last_index(), c.core(1).last_index());
    assert_eq!(c.core(3).commit_index(), c.core(1).commit_index());
}

/// Coalesced heartbeats: a leader's heartbeats fall on the multiples of the heartbeat
/// interval of the driver's clock, whenever it was elected and however late it is ticked, so
/// every group a node leads is due at the same instants. The gap is at most one interval.
#[test]
fn raft_5_3_heartbeats_fall_on_the_heartbeat_interval_grid() {
    let mut c = Cluster::new(3, test_config());
    c.now_ns = 1_234 * MS;
    c.elect(1);
    assert_eq!(c.core(1).next_deadline_ns(), 1_300 * MS, "next grid point, not now + 100 ms");
    c.now_ns = 1_300 * MS;
    c.tick_all();
    let heartbeats = |c: &Cluster| {
        c.net.iter().filter(|m| matches!(&m.msg, Message::AppendEntries { .. })).count()
    };
    c.process_ready(n(1));
    assert_eq!(heartbeats(&c), 2, "one heartbeat per follower at the grid point");
    assert_eq!(c.core(1).next_deadline_ns(), 1_400 * MS);
    // A late tick does not shift the grid.
    c.now_ns = 1_437 * MS;
    c.tick_all();
    assert_eq!(c.core(1).next_deadline_ns(), 1_500 * MS);
}

#[test]
fn raft_5_3_pipeline_is_bounded_by_max_inflight_appends() {
    let mut config = test_config();
    config.max_inflight_appends = 2;
    config.max_append_bytes = 1;
    let mut c = Cluster::new(3, config);
    c.elect(1);
    c.isolate(n(2));
    c.isolate(n(3));
    for i in 0..10 {
        c.propose(1, &format!("e{i}"));
    }
    c.process_ready(n(1));
    let appends = c
        .net
        .iter()
        .filter(|m| m.to == n(2) && matches!(m.msg, Message::AppendEntries { .. }))
        .count();
    assert_eq!(appends, 2, "two appends in flight, then the follower is paused");
    assert!(!c.core(1).has_ready());
}

#[test]
fn raft_5_3_lost_appends_are_resent_after_a_heartbeat_without_progress() {
    let mut c = elected_three();
    c.isolate(n(3));
    c.propose(1, "lost");
    c.stabilize(None);
    c.heal();
    c.run_for(400);
    assert_eq!(c.core(3).last_index(), LogIndex(2));
    assert_eq!(c.core(3).commit_index(), LogIndex(2));
}

#[test]
fn raft_5_3_malformed_appends_are_ignored_without_panicking() {
    let mut core = replica(2, 2, &[1, 1, 2], 2);
    let gap = append(2, (1, 1), vec![entry(2, 3)], 0);
    assert_eq!(core.step(0, n(1), gap), Err(Ignored::Malformed("entries not contiguous")));
    let future = append(2, (1, 1), vec![entry(3, 2)], 0);
    assert_eq!(core.step(0, n(1), future), Err(Ignored::Malformed("entry terms out of order")));
    let rewrite = append(2, (1, 1), vec![entry(2, 2)], 0);
    assert_eq!(
        core.step(0, n(1), rewrite),
        Err(Ignored::Malformed("contradicts a committed entry"))
    );
    assert_eq!(core.step(0, n(9), append(2, (0, 0), vec![], 0)), Err(Ignored::UnknownPeer));
    let terms: Vec<u64> = core.entries().map(|e| e.term.0).collect();
    assert_eq!(terms, vec![1, 1, 2], "log untouched");
}

#[test]
fn raft_5_3_leader_ignores_an_ack_beyond_its_log() {
    let mut c = elected_three();
    let ack = Message::AppendResponse {
        term: Term(1),
        success: true,
        match_index: LogIndex(99),
        reject_hint: None,
        read_seq: 0,
    };
    assert!(matches!(c.core_mut(1).step(0, n(2), ack), Err(Ignored::Malformed(_))));
    assert_eq!(c.core(1).commit_index(), LogIndex(1));
}

// ----- RAFT-2: the commit rule (Figure 8) -----

#[test]
fn raft_2_figure8_leader_does_not_commit_an_old_term_entry_by_counting() {
    // Node 1 leads term 3 with an uncommitted entry of term 1 at index 2 and its no-op at 3.
    let mut core = replica(1, 2, &[1, 1], 1);
    core.campaign(0);
    assert_eq!(msgs_to(&core.ready(), 2).len(), 1, "pre-vote requests are plain messages");
    for to in [2, 3] {
        let _ = core.step(0, n(to), Message::PreVoteResponse { term: Term(3), granted: true });
    }
    assert_eq!(core.role(), Role::Candidate);
    core.step(0, n(2), Message::VoteResponse { term: Term(3), granted: true }).expect("vote");
    assert_eq!(core.role(), Role::Leader);
    let ready = core.ready();
    let (index, term) = ready.persist_mark().expect("no-op");
    assert_eq!((index, term), (LogIndex(3), Term(3)));
    core.on_persisted(index, term);
    // A majority (1 and 2) stores index 2, but it is of term 1: not committed (INV-R7).
    let ack = |m| Message::AppendResponse {
        term: Term(3),
        success: true,
        match_index: LogIndex(m),
        reject_hint: None,
        read_seq: 0,
    };
    core.step(0, n(2), ack(2)).expect("ack");
    assert_eq!(core.commit_index(), LogIndex(1));
    // Once the current term's no-op is on a majority, both commit.
    core.step(0, n(2), ack(3)).expect("ack");
    assert_eq!(core.commit_index(), LogIndex(3));
}

// ----- RAFT-1: persistence before replying -----

#[test]
fn raft_1_vote_response_is_after_sync() {
    let mut core = replica(1, 1, &[1], 0);
    let req = Message::RequestVote {
        term: Term(2),
        last_log_index: LogIndex(1),
        last_log_term: Term(1),
        transfer: false,
    };
    core.step(0, n(2), req).expect("vote request");
    let ready = core.ready();
    assert!(ready.messages.is_empty(), "nothing acknowledging the vote is sendable before fsync");
    assert_eq!(
        ready.hard_state,
        Some(HardState { term: Term(2), vote: Some(n(2)), commit: LogIndex(0) })
    );
    assert_eq!(
        after_sync_to(&ready, 2),
        vec![Message::VoteResponse { term: Term(2), granted: true }]
    );
}

#[test]
fn raft_1_append_ack_and_vote_requests_are_after_sync() {
    let mut core = replica(2, 1, &[1], 0);
    core.step(0, n(1), append(1, (1, 1), vec![entry(1, 2)], 1)).expect("append");
    let ready = core.ready();
    assert!(ready.messages.is_empty());
    assert_eq!(after_sync_to(&ready, 1).len(), 1);
    // A candidate's requests leave only after its new term and self-vote are durable.
    let mut config = test_config();
    config.pre_vote = false;
    let mut core =
        RaftCore::new(config, n(1), vec![n(1), n(2), n(3)], Restored::default(), DetRng::new(1), 0)
            .expect("new replica");
    core.campaign(0);
    let ready = core.ready();
    assert!(ready.messages.is_empty());
    assert_eq!(ready.hard_state.map(|h| (h.term, h.vote)), Some((Term(1), Some(n(1)))));
    assert_eq!(ready.persisted_messages.peek().len(), 2);
}

#[test]
fn raft_1_restart_restores_term_vote_log_and_commit() {
    let mut c = elected_three();
    c.propose(1, "a");
    c.stabilize(None);
    let before =
        (c.core(2).term(), c.core(2).vote(), c.core(2).last_index(), c.core(2).commit_index());
    c.restart(n(2));
    let core = c.core(2);
    assert_eq!((core.term(), core.vote(), core.last_index(), core.commit_index()), before);
    assert_eq!(core.applied(), LogIndex(0));
    c.stabilize(None);
    assert_eq!(c.core(2).applied(), LogIndex(2), "committed entries are applied again");
}

#[test]
fn raft_1_restore_refuses_an_inconsistent_log() {
    let cfg = test_config;
    let voters = || vec![n(1), n(2), n(3)];
    let with = |entries: Vec<Entry>, applied: u64| Restored {
        hard_state: HardState { term: Term(2), vote: None, commit: LogIndex(0) },
        snapshot: None,
        entries,
        applied: LogIndex(applied),
    };
    let gap = RaftCore::new(
        cfg(),
        n(1),
        voters(),
        with(vec![entry(1, 1), entry(1, 3)], 0),
        DetRng::new(1),
        0,
    );
    assert_eq!(
        gap.err(),
        Some(RestoreError::EntriesNotContiguous { expected: LogIndex(2), found: LogIndex(3) })
    );
    let order = RaftCore::new(
        cfg(),
        n(1),
        voters(),
        with(vec![entry(2, 1), entry(1, 2)], 0),
        DetRng::new(1),
        0,
    );
    assert_eq!(
        order.err(),
        Some(RestoreError::EntryTermOutOfOrder { index: LogIndex(2), term: Term(1) })
    );
    let applied =
        RaftCore::new(cfg(), n(1), voters(), with(vec![entry(1, 1)], 2), DetRng::new(1), 0);
    assert_eq!(
        applied.err(),
        Some(RestoreError::AppliedBeyondLog { applied: LogIndex(2), last: LogIndex(1) })
    );
    let none = RaftCore::new(cfg(), n(1), vec![], Restored::default(), DetRng::new(1), 0);
    assert_eq!(none.err(), Some(RestoreError::NoVoters));
    let crowd: Vec<NodeId> = (1..=decree_types::limits::VOTERS_MAX as u64 + 1).map(n).collect();
    let crowded = RaftCore::new(cfg(), n(1), crowd, Restored::default(), DetRng::new(1), 0);
    assert_eq!(crowded.err(), Some(RestoreError::TooManyVoters(65)));
    let mut bad = test_config();
    bad.election_timeout_max = bad.election_timeout_min;
    assert!(matches!(
        RaftCore::new(bad, n(1), voters(), Restored::default(), DetRng::new(1), 0).err(),
        Some(RestoreError::Config(_))
    ));
}

// ----- RAFT-4: check-quorum -----

#[test]
fn raft_4_check_quorum_steps_down() {
    let mut c = elected_three();
    c.isolate(n(1));
    let mut stepped_down_at = None;
    for step in 1..=300 {
        c.now_ns += 10 * MS;
        c.tick_all();
        c.stabilize(Some(&BTreeSet::from([n(1)])));
        c.net.clear();
        if c.core(1).role() != Role::Leader {
            stepped_down_at = Some(step * 10);
            break;
        }
    }
    let at = stepped_down_at.expect("the isolated leader steps down");
    assert!(at <= 2000, "within two election timeouts (stepped down after {at} ms)");
    assert_eq!(c.core(1).term(), Term(1), "stepping down does not change the term");
    assert_eq!(c.core_mut(1).propose(0, vec![]), Err(AppendError::NotLeader { leader_hint: None }));
}

#[test]
fn raft_4_leader_with_a_majority_keeps_leading() {
    let mut c = elected_three();
    c.isolate(n(3));
    c.run_for(5000);
    assert_eq!(c.core(1).role(), Role::Leader);
    assert_eq!(c.core(1).term(), Term(1));
}

// ----- RAFT-5: pre-vote and the leader lease -----

#[test]
fn raft_5_pre_vote_does_not_change_any_term() {
    let mut c = elected_three();
    c.isolate(n(3));
    c.run_for(10_000);
    assert_eq!(c.core(3).term(), Term(1), "the partitioned node never raised its term");
    c.heal();
    c.run_for(1000);
    assert_eq!(c.core(1).role(), Role::Leader);
    assert_eq!(c.core(1).term(), Term(1));
    assert_eq!(c.core(3).leader(), Some(n(1)));
}

#[test]
fn raft_5_vote_requests_within_the_leader_lease_are_ignored_unless_transfer() {
    let mut c = elected_three();
    let now = c.now_ns;
    let req = |transfer| Message::RequestVote {
        term: Term(2),
        last_log_index: LogIndex(1),
        last_log_term: Term(1),
        transfer,
    };
    assert_eq!(c.core_mut(2).step(now, n(3), req(false)), Err(Ignored::InLease));
    assert_eq!(c.core(2).term(), Term(1));
    c.core_mut(2).step(now, n(3), req(true)).expect("transfer bypasses the lease");
    assert_eq!(c.core(2).term(), Term(2));
    assert_eq!(c.core(2).vote(), Some(n(3)));
    // After the minimum election timeout without the leader, requests are considered.
    let mut c = elected_three();
    let later = c.now_ns + 1000 * MS;
    c.core_mut(2).step(later, n(3), req(false)).expect("lease expired");
    assert_eq!(c.core(2).vote(), Some(n(3)));
}

#[test]
fn raft_5_pre_vote_refused_while_the_leader_is_alive() {
    let mut c = elected_three();
    let now = c.now_ns;
    let pre =
        Message::PreVote { term: Term(2), last_log_index: LogIndex(1), last_log_term: Term(1) };
    c.core_mut(2).step(now, n(3), pre).expect("pre-vote");
    let ready = c.core_mut(2).ready();
    assert_eq!(
        msgs_to(&ready, 3),
        vec![Message::PreVoteResponse { term: Term(1), granted: false }]
    );
    assert_eq!(c.core(2).term(), Term(1));
}

// ----- RAFT-6: leadership transfer -----

#[test]
fn raft_6_transfer_hands_leadership_to_a_caught_up_target() {
    let mut c = elected_three();
    c.propose(1, "a");
    c.stabilize(None);
    let now = c.now_ns;
    c.core_mut(1).transfer_leadership(now, n(2)).expect("leader");
    assert_eq!(c.core(1).transfer_target(), Some(n(2)));
    c.stabilize(None);
    assert_eq!(c.core(2).role(), Role::Leader);
    assert_eq!(c.core(2).term(), Term(2));
    assert_eq!(c.core(1).leader(), Some(n(2)));
    assert_eq!(c.core(1).transfer_target(), None);
}

#[test]
fn raft_6_transfer_refuses_proposals_and_aborts_after_an_election_timeout() {
    let mut c = elected_three();
    c.isolate(n(3));
    let now = c.now_ns;
    c.core_mut(1).transfer_leadership(now, n(3)).expect("leader");
    assert_eq!(
        c.core_mut(1).propose(now, vec![]),
        Err(AppendError::TransferInProgress { target: n(3) })
    );
    c.run_for(990);
    assert_eq!(c.core(1).transfer_target(), Some(n(3)));
    c.run_for(20);
    assert_eq!(c.core(1).transfer_target(), None, "aborted after election_timeout_min");
    let now = c.now_ns;
    assert!(c.core_mut(1).propose(now, vec![]).is_ok());
    assert_eq!(
        c.core_mut(2).transfer_leadership(now, n(1)),
        Err(TransferError::NotLeader { leader_hint: Some(n(1)) })
    );
}

// ----- RAFT-3: ReadIndex -----

#[test]
fn raft_3_read_index_waits_for_a_majority_heartbeat_round() {
    let mut c = elected_three();
    c.isolate(n(2));
    c.isolate(n(3));
    let now = c.now_ns;
    c.core_mut(1).read_index(now, 7).expect("leader");
    c.stabilize(None);
    assert!(c.node(1).read_states.is_empty(), "no majority confirmed leadership");
    c.heal();
    c.run_for(100);
    let rs = &c.node(1).read_states;
    assert_eq!(rs.len(), 1);
    assert_eq!((rs[0].ctx, rs[0].index), (7, LogIndex(1)));
}

#[test]
fn raft_3_read_index_on_a_follower_is_answered_by_the_leader() {
    let mut c = elected_three();
    c.propose(1, "a");
    c.stabilize(None);
    let now = c.now_ns;
    c.core_mut(3).read_index(now, 42).expect("follower with a leader");
    c.stabilize(None);
    let rs = &c.node(3).read_states;
    assert_eq!(rs.len(), 1);
    assert_eq!((rs[0].ctx, rs[0].index), (42, LogIndex(2)));
    assert!(c.core(3).applied() >= rs[0].index);
}

#[test]
fn raft_3_pending_reads_fail_when_leadership_is_lost() {
    let mut c = elected_three();
    c.isolate(n(1));
    let now = c.now_ns;
    c.core_mut(1).read_index(now, 5).expect("leader");
    c.run_for(2500);
    assert_eq!(c.node(1).failed_reads, vec![5]);
    let mut lone = RaftCore::new(
        test_config(),
        n(1),
        vec![n(1), n(2)],
        Restored::default(),
        DetRng::new(1),
        0,
    )
    .expect("new replica");
    assert_eq!(lone.read_index(0, 1), Err(ReadIndexError::NoLeader));
}

/// A follower far behind gets the entries it lacks in appends the wire accepts: cut at the
/// entry count as well as at the byte budget (tiny entries would otherwise fit thousands more
/// into one append than `RAFT_ENTRIES_PER_APPEND_MAX`, which the encoder refuses, and the
/// follower would never catch up). The harness checks every delivered append against it.
#[test]
fn raft_5_3_appends_to_a_lagging_follower_respect_the_entry_count_bound() {
    let count = decree_types::limits::RAFT_ENTRIES_PER_APPEND_MAX + 1000;
    let c = catch_up_after_isolation(test_config(), count);
    assert!(c.core(1).last_index().0 > count as u64);

    // A smaller configured count is honoured too.
    let mut config = test_config();
    config.max_append_entries = 7;
    catch_up_after_isolation(config, 40);
}

/// n3 is cut off while n1 commits `count` entries, then reconnected and given a second to
/// catch up; asserts it did. (The harness checks every append against the bounds.)
fn catch_up_after_isolation(config: RaftConfig, count: usize) -> Cluster {
    let mut c = Cluster::new(3, config);
    c.elect(1);
    c.isolate(n(3));
    for i in 0..count {
        c.propose(1, &format!("{i}"));
    }
    c.stabilize(None);
    c.heal();
    c.run_for(1000);
    assert_eq!(c.core(3).commit_index(), c.core(1).last_index(), "n3 caught up");
    c
}

#[test]
fn config_refuses_append_counts_and_chunks_over_the_wire_bounds() {
    let mut config = test_config();
    config.max_append_entries = decree_types::limits::RAFT_ENTRIES_PER_APPEND_MAX + 1;
    assert!(config.validate().is_err());
    config.max_append_entries = 0;
    assert!(config.validate().is_err());
    let mut config = test_config();
    config.snapshot_chunk_bytes = decree_types::limits::SNAPSHOT_CHUNK_BYTES_MAX as u64 + 1;
    assert!(config.validate().is_err());
    assert!(test_config().validate().is_ok());
}

// ----- RAFT-8: snapshots -----

#[test]
fn raft_8_snapshot_is_sent_to_a_follower_behind_the_compaction_point() {
    let mut config = test_config();
    config.snapshot_chunk_bytes = 4;
    let mut c = Cluster::new(3, config);
    c.elect(1);
    c.isolate(n(3));
    for i in 0..5 {
        c.propose(1, &format!("v{i}"));
    }
    c.stabilize(None);
    let applied = c.core(1).applied();
    let data = super::harness::encode_state(&c.node(1).applied);
    let meta = c.core_mut(1).snapshot_created(applied, data).expect("applied");
    assert_eq!(meta.last_index, LogIndex(6));
    assert_eq!(c.core(1).entries().count(), 0);
    assert_eq!(
        c.core_mut(1).snapshot_created(LogIndex(99), vec![]),
        Err(SnapshotError::NotApplied { index: LogIndex(99), applied: LogIndex(6) })
    );
    c.heal();
    c.run_for(500);
    assert_eq!(c.core(3).snapshot_index(), LogIndex(6));
    assert_eq!(c.core(3).commit_index(), LogIndex(6));
    assert_eq!(c.node(3).applied, c.node(1).applied, "state machine restored from the snapshot");
    assert_eq!(c.core(1).status().progress[&n(3)], (LogIndex(6), ReplicationState::Replicate));
}

#[test]
fn raft_8_snapshot_describing_a_prefix_of_the_log_keeps_the_suffix() {
    let mut core = replica(2, 1, &[1, 1, 1, 1], 1);
    let meta = SnapshotMeta {
        last_index: LogIndex(3),
        last_term: Term(1),
        voters: vec![n(1), n(2), n(3)],
    };
    let chunk = Message::InstallSnapshot {
        term: Term(1),
        meta,
        offset: 0,
        data: vec![1, 2, 3],
        done: true,
    };
    core.step(0, n(1), chunk).expect("snapshot");
    let ready = core.ready();
    assert!(ready.snapshot.is_none(), "nothing to install: the log already holds it");
    assert_eq!(core.last_index(), LogIndex(4));
    assert_eq!(core.commit_index(), LogIndex(3));
    assert_eq!(ready.committed_entries.len(), 3);
}

#[test]
fn raft_8_snapshot_conflicting_with_the_log_replaces_it() {
    let mut core = replica(2, 2, &[1, 1, 1, 1], 1);
    let meta = SnapshotMeta {
        last_index: LogIndex(3),
        last_term: Term(2),
        voters: vec![n(1), n(2), n(3)],
    };
    let first = Message::InstallSnapshot {
        term: Term(2),
        meta: meta.clone(),
        offset: 0,
        data: vec![1, 2],
        done: false,
    };
    core.step(0, n(1), first).expect("chunk");
    // A duplicate of the first chunk is answered with where we are; what arrived is kept.
    let dup = Message::InstallSnapshot {
        term: Term(2),
        meta: meta.clone(),
        offset: 0,
        data: vec![1, 2],
        done: false,
    };
    assert_eq!(core.step(0, n(1), dup), Err(Ignored::Stale));
    let answers = msgs_to(&core.ready(), 1);
    assert!(
        matches!(
            answers[..],
            [
                Message::InstallSnapshotResponse { next_offset: 2, done: false, .. },
                Message::InstallSnapshotResponse { next_offset: 2, done: false, .. }
            ]
        ),
        "{answers:?}"
    );
    let gap = Message::InstallSnapshot {
        term: Term(2),
        meta: meta.clone(),
        offset: 5,
        data: vec![9],
        done: true,
    };
    assert_eq!(core.step(0, n(1), gap), Err(Ignored::Stale));
    let last = Message::InstallSnapshot {
        term: Term(2),
        meta: meta.clone(),
        offset: 2,
        data: vec![3],
        done: true,
    };
    core.step(0, n(1), last).expect("last chunk");
    let ready = core.ready();
    assert_eq!(ready.snapshot, Some((meta, vec![1, 2, 3])));
    assert_eq!(ready.persist_mark(), Some((LogIndex(3), Term(2))));
    assert_eq!(core.last_index(), LogIndex(3));
    assert_eq!(core.entries().count(), 0);
    // INV-R9: applied jumps to the snapshot, never back.
    assert_eq!(core.applied(), LogIndex(3));
    assert!(matches!(
        after_sync_to(&ready, 1)[..],
        [Message::InstallSnapshotResponse { done: true, last_index: LogIndex(3), .. }]
    ));
}

pub(super) fn snapshot_chunk(
    term: u64,
    index: u64,
    offset: u64,
    data: &[u8],
    done: bool,
) -> Message {
    Message::InstallSnapshot {
        term: Term(term),
        meta: SnapshotMeta {
            last_index: LogIndex(index),
            last_term: Term(2),
            voters: vec![n(1), n(2), n(3)],
        },
        offset,
        data: data.to_vec(),
        done,
    }
}

/// The follower's answers to snapshot chunks in one Ready: `(snapshot index, next offset)`.
pub(super) fn chunk_answers(core: &mut RaftCore) -> Vec<(u64, u64)> {
    msgs_to(&core.ready(), 1)
        .into_iter()
        .filter_map(|m| match m {
            Message::InstallSnapshotResponse { last_index, next_offset, .. } => {
                Some((last_index.0, next_offset))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn raft_8_follower_keeps_its_assembly_when_chunks_of_another_snapshot_arrive() {
    let mut core = replica(2, 2, &[1, 1], 1);
    core.step(0, n(1), snapshot_chunk(2, 5, 0, &[1, 2], false)).expect("first chunk of S5");
    assert_eq!(chunk_answers(&mut core), vec![(5, 2)]);
    // A late copy of a chunk of an earlier transfer in this term: ignored, S5 is kept.
    assert_eq!(core.step(0, n(1), snapshot_chunk(2, 4, 0, &[9], false)), Err(Ignored::Stale));
    assert_eq!(chunk_answers(&mut core), vec![]);
    // The middle of a snapshot we never saw the start of: ask for it from 0, S5 is kept.
    assert_eq!(core.step(0, n(1), snapshot_chunk(2, 6, 4, &[9], false)), Err(Ignored::Stale));
    assert_eq!(chunk_answers(&mut core), vec![(6, 0)]);
    core.step(0, n(1), snapshot_chunk(2, 5, 2, &[3], false)).expect("S5 goes on");
    assert_eq!(chunk_answers(&mut core), vec![(5, 3)]);
    // A newer snapshot from its start replaces S5, whose chunks are then stale.
    core.step(0, n(1), snapshot_chunk(2, 6, 0, &[6], false)).expect("S6 starts");
    assert_eq!(core.step(0, n(1), snapshot_chunk(2, 5, 3, &[4], true)), Err(Ignored::Stale));
    assert_eq!(chunk_answers(&mut core), vec![(6, 1)]);
    // A new leader starts over even with the same snapshot: its bytes may differ.
    core.step(0, n(3), snapshot_chunk(3, 6, 0, &[7], false)).expect("new term, from 0");
    assert_eq!(msgs_to(&core.ready(), 3).len(), 1);
    core.step(0, n(3), snapshot_chunk(3, 6, 1, &[8], true)).expect("last chunk");
    let ready = core.ready();
    assert_eq!(ready.snapshot.map(|(m, d)| (m.last_index, d)), Some((LogIndex(6), vec![7, 8])));
    assert_eq!(core.commit_index(), LogIndex(6));
}

#[test]
fn raft_8_restart_from_a_snapshot() {
    let meta = SnapshotMeta {
        last_index: LogIndex(5),
        last_term: Term(2),
        voters: vec![n(1), n(2), n(3)],
    };
    let restored = Restored {
        hard_state: HardState { term: Term(3), vote: Some(n(1)), commit: LogIndex(6) },
        snapshot: Some((meta, vec![7])),
        entries: vec![entry(2, 4), entry(2, 5), entry(3, 6)],
        applied: LogIndex(0),
    };
    let core =
        RaftCore::new(test_config(), n(1), vec![n(1), n(2), n(3)], restored, DetRng::new(1), 0)
            .expect("valid state");
    assert_eq!(core.snapshot_index(), LogIndex(5));
    assert_eq!(core.applied(), LogIndex(5));
    assert_eq!(core.commit_index(), LogIndex(6));
    assert_eq!(core.entries().map(|e| e.index.0).collect::<Vec<_>>(), vec![6]);
}

/// One chunk of a snapshot transfer as it left the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Chunk {
    pub(super) snapshot: LogIndex,
    pub(super) offset: u64,
    pub(super) len: u64,
    pub(super) done: bool,
}

/// One round of a lossless network: every node that has a `Ready` processes it, then every
/// message in flight is delivered. Returns the snapshot chunks sent to `to` in this round.
pub(super) fn round(c: &mut Cluster, to: NodeId) -> Vec<Chunk> {
    let ids: Vec<NodeId> = c.nodes.keys().copied().collect();
    for id in ids {
        if c.is_up(id) && c.nodes[&id].core().has_ready() {
            c.process_ready(id);
        }
    }
    let chunks = c
        .net
        .iter()
        .filter(|m| m.to == to && !c.cut.contains(&(m.from, m.to)))
        .filter_map(|m| match &m.msg {
            Message::InstallSnapshot { meta, offset, data, done, .. } => Some(Chunk {
                snapshot: meta.last_index,
                offset: *offset,
                len: data.len() as u64,
                done: *done,
            }),
            _ => None,
        })
        .collect();
    c.deliver_all(None);
    chunks
}

/// Splits the chunks sent to one follower into transfers (runs of one snapshot) and checks
/// that each transfer is contiguous from offset 0: it never starts over.
pub(super) fn transfers(chunks: &[Chunk]) -> Vec<(LogIndex, Vec<Chunk>)> {
    let mut out: Vec<(LogIndex, Vec<Chunk>)> = Vec::new();
    for &chunk in chunks {
        match out.last_mut() {
            Some((index, run)) if *index == chunk.snapshot => run.push(chunk),
            _ => out.push((chunk.snapshot, vec![chunk])),
        }
    }
    for (index, run) in &out {
        let mut next = 0;
        for chunk in run {
            assert_eq!(
                chunk.offset, next,
                "RAFT-8: transfer of snapshot {index} restarted: {run:?}"
            );
            next = chunk.offset + chunk.len;
        }
    }
    out
}

/// A follower cut off while the leader commits `entries` commands and compacts; returns the
/// cluster (leader 1, follower 3 behind the compaction point) and the snapshot's metadata.
pub(super) fn follower_behind_a_snapshot(entries: usize) -> (Cluster, SnapshotMeta) {
    let mut config = test_config();
    config.snapshot_chunk_bytes = 16;
    let mut c = Cluster::new(3, config);
    c.elect(1);
    c.isolate(n(3));
    for i in 0..entries {
        c.propose(1, &format!("value-{i:04}"));
    }
    c.stabilize(None);
    let s1 = c.snapshot(n(1)).expect("applied");
    c.heal();
    (c, s1)
}

#[test]
fn raft_8_snapshot_transfer_survives_newer_snapshot() {
    let (mut c, s1) = follower_behind_a_snapshot(30);
    // A heartbeat finds n3 behind the compaction point: the transfer of S1 starts.
    c.fire(n(1));
    let mut chunks = Vec::new();
    while chunks.len() < 4 {
        chunks.extend(round(&mut c, n(3)));
    }
    assert!(chunks.iter().all(|ch| ch.snapshot == s1.last_index && !ch.done), "{chunks:?}");
    // The leader commits more and its state machine compacts again: S2 replaces S1 as the
    // leader's current snapshot while S1 is half sent.
    for i in 0..5 {
        c.propose(1, &format!("more-{i}"));
    }
    while c.core(1).applied() < c.core(1).last_index() {
        chunks.extend(round(&mut c, n(3)));
    }
    let s2 = c.snapshot(n(1)).expect("applied");
    assert!(s2.last_index > s1.last_index);
    assert!(chunks.iter().all(|ch| !ch.done), "S1 is still being sent: {chunks:?}");
    // The transfer of S1 goes on from where it was and completes; n3's next entry (after S1)
    // is compacted too, so S2 follows, from offset 0; then n3 is caught up.
    let mut matched = Vec::new();
    for _ in 0..200 {
        chunks.extend(round(&mut c, n(3)));
        matched.push(c.core(1).status().progress[&n(3)].0);
    }
    c.run_for(500);
    let runs = transfers(&chunks);
    let indexes: Vec<LogIndex> = runs.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, vec![s1.last_index, s2.last_index], "{chunks:?}");
    assert!(runs.iter().all(|(_, run)| run.last().is_some_and(|ch| ch.done)), "{chunks:?}");
    assert!(matched.windows(2).all(|w| w[0] <= w[1]), "match index is monotone: {matched:?}");
    assert!(matched.contains(&s1.last_index), "S1 was acknowledged before S2 was sent");
    assert_eq!(c.core(3).snapshot_index(), s2.last_index);
    assert_eq!(c.core(3).commit_index(), c.core(1).commit_index());
    assert_eq!(c.node(3).applied, c.node(1).applied);
}

#[test]
fn raft_8_a_lost_follower_releases_the_snapshot_its_transfer_held() {
    let (mut c, s1) = follower_behind_a_snapshot(30);
    c.fire(n(1));
    let mut chunks = Vec::new();
    while chunks.len() < 2 {
        chunks.extend(round(&mut c, n(3)));
    }
    c.propose(1, "more");
    c.isolate(n(3));
    c.stabilize(None);
    let s2 = c.snapshot(n(1)).expect("applied");
    let held = |c: &Cluster| c.core(1).progress[&n(3)].snapshot.as_ref().map(|s| s.meta.clone());
    assert_eq!(held(&c), Some(s1.clone()), "the transfer keeps S1 while n3 is reachable");
    // n3 stays silent for a whole check-quorum round: its transfer is dropped, and the next
    // one sends the current snapshot.
    c.run_for(2500);
    assert_eq!(c.core(1).role(), Role::Leader);
    assert_eq!(held(&c), Some(s2.clone()));
    c.heal();
    chunks.clear();
    for _ in 0..300 {
        c.now_ns += 10 * MS;
        c.tick_all();
        chunks.extend(round(&mut c, n(3)));
    }
    let runs = transfers(&chunks);
    assert_eq!(runs.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![s2.last_index]);
    assert_eq!(c.core(3).snapshot_index(), s2.last_index);
    assert_eq!(held(&c), None);
}

#[test]
fn raft_8_snapshot_transfers_complete_while_the_leader_compacts_after_every_chunk() {
    // Steady load with compaction after every round: each transfer must still complete (a
    // newer snapshot never restarts one), so the follower's snapshot index keeps moving.
    let (mut c, s1) = follower_behind_a_snapshot(20);
    c.fire(n(1));
    let mut chunks = Vec::new();
    let mut installed = vec![c.core(3).snapshot_index()];
    for i in 0..400 {
        c.propose(1, &format!("load-{i:04}"));
        chunks.extend(round(&mut c, n(3)));
        let _ = c.snapshot(n(1));
        let at = c.core(3).snapshot_index();
        if installed.last() != Some(&at) {
            installed.push(at);
        }
    }
    let runs = transfers(&chunks);
    let completed: Vec<LogIndex> = runs
        .iter()
        .filter(|(_, run)| run.last().is_some_and(|ch| ch.done))
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(runs[0].0, s1.last_index);
    assert!(completed.len() >= 3, "transfers completed: {completed:?} of {}", runs.len());
    assert!(runs[..runs.len() - 1].iter().all(|(_, run)| run.last().is_some_and(|ch| ch.done)));
    assert!(installed.windows(2).all(|w| w[0] < w[1]), "{installed:?}");
    assert!(installed.len() > 3, "{installed:?}");
    // Once compaction pauses, the follower catches up.
    c.run_for(2000);
    assert_eq!(c.core(3).commit_index(), c.core(1).commit_index());
    assert_eq!(c.node(3).applied, c.node(1).applied);
}

#[test]
fn raft_config_defaults_are_the_limits_and_keep_their_ratios() {
    use decree_types::limits::{
        ELECTION_TIMEOUT_MAX_MS, ELECTION_TIMEOUT_MIN_MS, HEARTBEAT_INTERVAL_MS,
    };
    let c = RaftConfig::default();
    assert_eq!(c.heartbeat_interval, Duration::from_millis(HEARTBEAT_INTERVAL_MS));
    assert_eq!(
        (c.election_timeout_min, c.election_timeout_max),
        (
            Duration::from_millis(ELECTION_TIMEOUT_MIN_MS),
            Duration::from_millis(ELECTION_TIMEOUT_MAX_MS)
        )
    );
    // Several heartbeats fit in the shortest election timeout, and the spread is the whole
    // minimum again (Raft §5.2), so split votes are rare.
    assert!(c.heartbeat_interval * 5 <= c.election_timeout_min);
    assert_eq!(c.election_timeout_max, 2 * c.election_timeout_min);
    assert!(c.pre_vote && c.check_quorum);
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn raft_5_3_flow_control_refuses_proposals_beyond_max_uncommitted_bytes() {
    let mut config = test_config();
    config.max_uncommitted_bytes = 10;
    let mut c = Cluster::new(3, config);
    c.elect(1);
    c.isolate(n(2));
    c.isolate(n(3));
    let now = c.now_ns;
    let core = c.core_mut(1);
    core.propose(now, vec![0; 6]).expect("room");
    assert_eq!(
        core.propose(now, vec![0; 6]),
        Err(AppendError::TooManyUncommitted { uncommitted_bytes: 6 })
    );
    c.heal();
    c.run_for(300);
    assert_eq!(c.core(1).commit_index(), LogIndex(2));
    let now = c.now_ns;
    c.core_mut(1).propose(now, vec![0; 6]).expect("room again once committed");
}
