//! Driver-loop tests: the order of sends and fsyncs (RAFT-1), group commit across groups, one
//! batch per peer, fatal fsync failures, and restart from the WAL.

use std::collections::BTreeSet;

use decree_types::{DetRng, GroupId, LogIndex, NodeId, Term};

use super::command_list::CommandList;
use super::*;
use crate::core::ReplicationState;
use crate::disk::MemDisk;
use crate::msg::{Entry, EntryPayload};

const MS: u64 = 1_000_000;

/// A transport that notes how many fsyncs the disk had done when each batch left.
struct Recorder {
    disk: MemDisk,
    sent: Vec<(u64, NodeId, Batch)>,
}

impl Transport for Recorder {
    fn send(&mut self, to: NodeId, batch: Batch) {
        self.sent.push((self.disk.syncs(), to, batch));
    }
}

fn open(id: u64, groups: &[(u64, &[u64])], disk: &MemDisk, now: u64) -> Node<MemDisk> {
    let groups =
        groups.iter().map(|(g, v)| (GroupId(*g), v.iter().map(|&n| NodeId(n)).collect())).collect();
    Node::open(NodeId(id), groups, disk.clone(), NodeConfig::default(), DetRng::new(id), now)
        .expect("a fresh or cleanly crashed disk opens")
}

/// Ticks and processes a node whose groups have one voter until every group leads.
fn elect_alone(node: &mut Node<MemDisk>, now: &mut u64, out: &mut Vec<Output>) {
    for _ in 0..100 {
        *now += 100 * MS;
        node.tick(*now);
        out.extend(node.process(&mut Outbox::default()).unwrap());
        if node.groups().all(|g| node.core(g).unwrap().role() == core::Role::Leader) {
            // One more iteration commits the no-op of the new term.
            out.extend(node.process(&mut Outbox::default()).unwrap());
            return;
        }
    }
    panic!("a single-voter group elects itself");
}

fn applied(out: &[Output], group: GroupId) -> Vec<Entry> {
    out.iter()
        .filter_map(|o| match o {
            Output::Apply { group: g, entries } if *g == group => Some(entries.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn one_fsync_per_iteration_covers_every_group() {
    let disk = MemDisk::new();
    let mut now = 0;
    let mut node = open(1, &[(1, &[1]), (2, &[1]), (3, &[1])], &disk, now);
    let mut out = Vec::new();
    elect_alone(&mut node, &mut now, &mut out);
    for g in 1..=3 {
        node.propose(now, GroupId(g), vec![g as u8]).unwrap();
    }
    let before = disk.syncs();
    let out = node.process(&mut Outbox::default()).unwrap();
    assert_eq!(disk.syncs() - before, 1, "three groups' appends share one fsync");
    // A single voter commits once its own append is durable; the next iteration applies.
    let out2 = node.process(&mut Outbox::default()).unwrap();
    for g in 1..=3 {
        let all: Vec<Entry> =
            applied(&out, GroupId(g)).into_iter().chain(applied(&out2, GroupId(g))).collect();
        assert!(all.iter().any(|e| e.payload == EntryPayload::Command(vec![g as u8])), "{all:?}");
    }
}

/// Three fresh nodes hosting group 1 with `voters`, n1 elected; returns the disks, the nodes
/// (index = id - 1) and the time.
fn three_nodes_n1_leading(voters: &[u64]) -> (Vec<MemDisk>, Vec<Node<MemDisk>>, u64) {
    let disks: Vec<MemDisk> = (0..3).map(|_| MemDisk::new()).collect();
    let mut nodes: Vec<Node<MemDisk>> =
        (0..3).map(|i| open(i as u64 + 1, &[(1, voters)], &disks[i], 0)).collect();
    let now = 10_000 * MS;
    nodes[0].tick(now);
    route(&mut nodes, now, None, 20);
    assert_eq!(nodes[0].core(GroupId(1)).unwrap().role(), core::Role::Leader);
    (disks, nodes, now)
}

/// RAFT-1 needs entries, terms and votes durable before an acknowledgement, not the commit
/// index: an entry costs one fsync on each replica, and the commit learned a round trip later
/// costs none. A replica that crashes before the commit index reached its disk relearns it.
#[test]
fn raft_1_a_commit_alone_costs_no_fsync_and_is_relearned_after_a_crash() {
    let g = GroupId(1);
    let voters: &[u64] = &[1, 2, 3];
    let (disks, mut nodes, now) = three_nodes_n1_leading(voters);

    let before: Vec<u64> = disks.iter().map(MemDisk::syncs).collect();
    let (index, term) = nodes[0].propose(now, g, vec![42]).unwrap();
    assert_eq!(term, nodes[0].core(g).unwrap().term(), "propose returns the leader's term");
    let outs = route(&mut nodes, now, None, 20);
    for (i, out) in outs.iter().enumerate() {
        assert!(
            applied(out, g).iter().any(|e| e.index == index),
            "n{} applied the entry: {out:?}",
            i + 1
        );
        assert_eq!(
            disks[i].syncs() - before[i],
            1,
            "n{}: one fsync for the entry, none for its commit",
            i + 1
        );
        assert_eq!(nodes[i].core(g).unwrap().commit_index(), index);
    }

    // n2's commit-only record never reached the disk: after a crash it restarts below the
    // commit, with the entry, and applies it again once the leader's heartbeat says so.
    disks[1].crash();
    nodes[1] = open(2, &[(1, voters)], &disks[1], now);
    assert!(nodes[1].core(g).unwrap().commit_index() < index);
    let later = now + 200 * MS;
    nodes[0].tick(later);
    let out = route(&mut nodes, later, None, 20).remove(1);
    assert_eq!(nodes[1].core(g).unwrap().commit_index(), index);
    let again = applied(&out, g);
    assert!(
        again.iter().any(|e| e.index == index && e.payload == EntryPayload::Command(vec![42])),
        "{again:?}"
    );
}

/// A leader's reply to a proposal need not wait for the fsync of the next batch: entries
/// committed and durable before an iteration are handed out before its fsync. A follower's
/// entry that becomes committed in the very append that brings it waits for its fsync.
#[test]
fn raft_1_durable_committed_entries_are_handed_out_before_the_iterations_fsync() {
    // Leader: A is committed by the acknowledgements; B is proposed in the same iteration.
    let g = GroupId(1);
    let voters: &[u64] = &[1, 2, 3];
    let (disks, mut nodes, now) = three_nodes_n1_leading(voters);
    let (a, _) = nodes[0].propose(now, g, b"A".to_vec()).unwrap();
    let mut outbox = Outbox::default();
    nodes[0].process(&mut outbox).unwrap();
    for (to, batch) in outbox.sent {
        let t = to.0 as usize - 1;
        batch.into_iter().for_each(|(gg, m)| nodes[t].step(now, NodeId(1), gg, m));
        let mut back = Outbox::default();
        nodes[t].process(&mut back).unwrap();
        for (_, batch) in back.sent {
            batch.into_iter().for_each(|(gg, m)| nodes[0].step(now, to, gg, m));
        }
    }
    assert_eq!(nodes[0].core(g).unwrap().commit_index(), a);
    nodes[0].propose(now, g, b"B".to_vec()).unwrap();
    let before = disks[0].syncs();
    let mut early = Vec::new();
    let late = nodes[0]
        .process_with(&mut Outbox::default(), &mut |o| early.push((disks[0].syncs(), o)))
        .unwrap();
    assert_eq!(disks[0].syncs() - before, 1, "B's append was fsynced in this iteration");
    let handed: Vec<_> = early
        .iter()
        .filter_map(|(syncs, o)| match o {
            Output::Apply { entries, .. } => Some((*syncs, entries.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(handed.len(), 1, "{early:?}");
    assert_eq!(handed[0].0, before, "A was handed out before the fsync of B");
    assert_eq!(handed[0].1.last().map(|e| e.index), Some(a));
    assert!(applied(&late, g).is_empty(), "nothing else committed: {late:?}");

    // Follower: entry 1 arrived earlier; the append of entry 2 says both are committed.
    let disk = MemDisk::new();
    let mut node = open(1, &[(1, voters)], &disk, 0);
    node.step(MS, NodeId(2), g, append_from_leader(1));
    node.process(&mut Outbox::default()).unwrap();
    let append_2 = match append_from_leader(2) {
        Message::AppendEntries {
            term, prev_log_index, prev_log_term, entries, read_seq, ..
        } => Message::AppendEntries {
            term,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: LogIndex(2),
            read_seq,
        },
        other => other,
    };
    node.step(2 * MS, NodeId(2), g, append_2);
    let before = disk.syncs();
    let mut early = Vec::new();
    let late =
        node.process_with(&mut Outbox::default(), &mut |o| early.push((disk.syncs(), o))).unwrap();
    let early_applied: Vec<(u64, Vec<LogIndex>)> = early
        .iter()
        .filter_map(|(syncs, o)| match o {
            Output::Apply { entries, .. } => {
                Some((*syncs, entries.iter().map(|e| e.index).collect()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(early_applied, vec![(before, vec![LogIndex(1)])], "only the durable entry");
    let late_applied: Vec<LogIndex> = applied(&late, g).iter().map(|e| e.index).collect();
    assert_eq!(late_applied, vec![LogIndex(2)], "entry 2 after its fsync");
    assert_eq!(disk.syncs() - before, 1);
}

/// An AppendEntries from leader n2 in term 1 with one entry.
fn append_from_leader(index: u64) -> Message {
    Message::AppendEntries {
        term: Term(1),
        prev_log_index: LogIndex(index - 1),
        prev_log_term: if index == 1 { Term(0) } else { Term(1) },
        entries: vec![Entry {
            term: Term(1),
            index: LogIndex(index),
            payload: EntryPayload::Command(vec![7]),
        }],
        leader_commit: LogIndex(0),
        read_seq: 0,
    }
}

#[test]
fn acknowledgements_leave_only_after_the_fsync_in_one_batch_per_peer() {
    let disk = MemDisk::new();
    let mut node = open(1, &[(1, &[1, 2, 3]), (2, &[1, 2, 3])], &disk, 0);
    node.step(MS, NodeId(2), GroupId(1), append_from_leader(1));
    node.step(MS, NodeId(2), GroupId(2), append_from_leader(1));
    let before = disk.syncs();
    let mut t = Recorder { disk: disk.clone(), sent: Vec::new() };
    node.process(&mut t).unwrap();
    assert_eq!(disk.syncs() - before, 1);
    let acks: Vec<_> = t
        .sent
        .iter()
        .filter(|(_, _, b)| b.iter().any(|(_, m)| matches!(m, Message::AppendResponse { .. })))
        .collect();
    assert_eq!(acks.len(), 1, "both groups' acknowledgements travel in one batch: {:?}", t.sent);
    let (syncs_at_send, to, batch) = acks[0];
    assert_eq!(*to, NodeId(2));
    assert!(*syncs_at_send > before, "RAFT-1: acknowledged only after the fsync");
    let groups: Vec<GroupId> = batch.iter().map(|(g, _)| *g).collect();
    assert_eq!(groups, vec![GroupId(1), GroupId(2)]);
}

#[test]
fn a_failed_fsync_stops_the_node_before_any_acknowledgement() {
    let disk = MemDisk::new();
    let mut node = open(1, &[(1, &[1, 2, 3])], &disk, 0);
    node.step(MS, NodeId(2), GroupId(1), append_from_leader(1));
    disk.fail_next_sync();
    let mut t = Recorder { disk: disk.clone(), sent: Vec::new() };
    let err = node.process(&mut t).unwrap_err();
    assert!(err.is_disk_failure(), "{err}");
    assert!(
        t.sent
            .iter()
            .all(|(_, _, b)| b.iter().all(|(_, m)| !matches!(m, Message::AppendResponse { .. }))),
        "nothing that acknowledges the append left: {:?}",
        t.sent
    );
    assert!(node.stopped().is_some());
    assert!(matches!(node.process(&mut t), Err(Fatal::Stopped(_))));
    assert!(matches!(node.propose(2 * MS, GroupId(1), vec![1]), Err(ProposeError::Stopped(_))));
    node.step(2 * MS, NodeId(2), GroupId(1), append_from_leader(2));
    assert!(!node.has_ready() || matches!(node.process(&mut t), Err(Fatal::Stopped(_))));
}

#[test]
fn refuses_unknown_groups_and_oversized_proposals() {
    let disk = MemDisk::new();
    let mut node = open(1, &[(1, &[1, 2, 3])], &disk, 0);
    assert_eq!(node.propose(0, GroupId(9), vec![]), Err(ProposeError::UnknownGroup(GroupId(9))));
    assert_eq!(
        node.propose(0, GroupId(1), vec![0; PROPOSAL_BYTES_MAX + 1]),
        Err(ProposeError::TooLarge { bytes: PROPOSAL_BYTES_MAX + 1 })
    );
    assert!(matches!(node.propose(0, GroupId(1), vec![1]), Err(ProposeError::NotLeader { .. })));
    // Messages for groups the node does not host are dropped, not fatal.
    node.step(MS, NodeId(2), GroupId(9), append_from_leader(1));
    assert!(node.process(&mut Outbox::default()).is_ok());
}

#[test]
fn restart_restores_the_snapshot_and_reapplies_the_rest() {
    let disk = MemDisk::new();
    let g = GroupId(1);
    let mut now = 0;
    let mut node = open(1, &[(1, &[1])], &disk, now);
    let mut out = Vec::new();
    elect_alone(&mut node, &mut now, &mut out);
    let mut machine = CommandList::new();
    let apply = |out: &[Output], machine: &mut CommandList| {
        for e in applied(out, g) {
            machine.apply(&e);
        }
    };
    apply(&out, &mut machine);
    for k in 0..6u8 {
        node.propose(now, g, vec![k]).unwrap();
        let mut out = node.process(&mut Outbox::default()).unwrap();
        out.extend(node.process(&mut Outbox::default()).unwrap());
        apply(&out, &mut machine);
        node.on_applied(g, machine.applied());
        if k == 2 {
            node.snapshot(g, machine.applied(), machine.snapshot()).unwrap();
        }
    }
    let before = machine.clone();
    assert_eq!(before.commands().len(), 6);

    // Power loss, then restart from what the disk kept (everything was fsynced).
    drop(node);
    disk.crash();
    let mut node = open(1, &[(1, &[1])], &disk, now);
    let mut machine = CommandList::new();
    let mut out = node.process(&mut Outbox::default()).unwrap();
    let Some(Output::Restore { data, meta, .. }) = out.first().cloned() else {
        panic!("the recovered snapshot is handed out first: {out:?}");
    };
    machine.restore(&data).unwrap();
    assert_eq!(machine.applied(), meta.last_index);
    // The entries after the snapshot that were known committed are applied again at once.
    apply(&out[1..], &mut machine);
    out.clear();
    elect_alone(&mut node, &mut now, &mut out);
    apply(&out, &mut machine);
    assert_eq!(machine.commands(), before.commands(), "nothing applied before the crash is lost");
}

#[test]
fn a_snapshot_not_newer_than_the_current_one_is_refused_and_the_node_goes_on() {
    // A snapshot encoded off the node thread may come back after a newer one was taken or
    // installed: a refusal, never a stop.
    let disk = MemDisk::new();
    let g = GroupId(1);
    let mut now = 0;
    let mut node = open(1, &[(1, &[1])], &disk, now);
    let mut out = Vec::new();
    elect_alone(&mut node, &mut now, &mut out);
    let mut machine = CommandList::new();
    for e in applied(&out, g) {
        machine.apply(&e);
    }
    let mut taken = Vec::new();
    for k in 0..4u8 {
        node.propose(now, g, vec![k]).unwrap();
        let mut out = node.process(&mut Outbox::default()).unwrap();
        out.extend(node.process(&mut Outbox::default()).unwrap());
        for e in applied(&out, g) {
            machine.apply(&e);
        }
        node.on_applied(g, machine.applied());
        taken.push((machine.applied(), machine.snapshot()));
    }
    let (newer, newer_bytes) = taken[3].clone();
    node.snapshot(g, newer, newer_bytes).unwrap();
    for (index, bytes) in [taken[1].clone(), taken[3].clone()] {
        let refused = node.snapshot(g, index, bytes);
        assert!(
            matches!(
                refused,
                Err(SnapshotRequestError::Refused(crate::core::SnapshotError::Stale { current, .. }))
                    if current == newer
            ),
            "{refused:?}"
        );
    }
    assert!(node.stopped().is_none());
    assert_eq!(node.core(g).unwrap().snapshot_index(), newer);
    node.propose(now, g, vec![9]).unwrap();
    assert!(node.process(&mut Outbox::default()).is_ok());
}

#[test]
fn a_corrupt_wal_refuses_to_open_naming_file_and_offset() {
    let disk = MemDisk::new();
    let mut now = 0;
    let mut node = open(1, &[(1, &[1])], &disk, now);
    elect_alone(&mut node, &mut now, &mut Vec::new());
    for k in 0..4u8 {
        node.propose(now, GroupId(1), vec![k; 32]).unwrap();
        node.process(&mut Outbox::default()).unwrap();
    }
    drop(node);
    disk.crash();
    let segment = "wal/00000000000000000001.log";
    assert!(disk.flip_bit(segment, 20, 3), "the segment exists");
    let groups = vec![(GroupId(1), vec![NodeId(1)])];
    let err =
        Node::open(NodeId(1), groups, disk.clone(), NodeConfig::default(), DetRng::new(1), now)
            .unwrap_err();
    match &err {
        Fatal::Wal(FatalError::Corrupt { path, .. }) => assert_eq!(path, segment),
        other => panic!("expected corruption, got {other}"),
    }
    assert!(!err.is_disk_failure(), "corruption is not an injected I/O failure");
}

/// An AppendEntries from leader n2 in `term` carrying entries 1..=count of that term.
fn first_append(term: u64, count: u64) -> Message {
    Message::AppendEntries {
        term: Term(term),
        prev_log_index: LogIndex(0),
        prev_log_term: Term(0),
        entries: (1..=count)
            .map(|i| Entry {
                term: Term(term),
                index: LogIndex(i),
                payload: EntryPayload::Command(vec![i as u8; 16]),
            })
            .collect(),
        leader_commit: LogIndex(0),
        read_seq: 0,
    }
}

/// Power loss at every byte of one iteration's unsynced writes: whatever prefix survives,
/// the node must restart (the hard state is written before the entries that depend on it,
/// so no prefix holds an entry of a term the hard state has not reached).
#[test]
fn a_torn_iteration_recovers_at_every_byte() {
    let mut keep = 0;
    loop {
        let disk = MemDisk::new();
        let mut node = open(1, &[(1, &[1, 2, 3])], &disk, 0);
        // A durable segment first (term 1), so the torn writes land in an existing file.
        node.step(MS, NodeId(2), GroupId(1), first_append(1, 0));
        node.process(&mut Outbox::default()).unwrap();
        node.step(MS, NodeId(2), GroupId(1), first_append(3, 3));
        disk.fail_next_sync();
        assert!(node.process(&mut Outbox::default()).is_err());
        drop(node);
        let unsynced = disk.last_unsynced_len();
        disk.crash_torn_at(keep);
        let groups = vec![(GroupId(1), vec![NodeId(1), NodeId(2), NodeId(3)])];
        let reopened =
            Node::open(NodeId(1), groups, disk.clone(), NodeConfig::default(), DetRng::new(1), 0);
        if let Err(e) = reopened {
            panic!("torn after {keep} of {unsynced} unsynced bytes: {e}");
        }
        if keep >= unsynced {
            break;
        }
        keep += 1;
    }
}

/// A follower holds uncommitted entries 1..=3 of term 1; a new leader of term 2 replaces 2..=3
/// and commits 3 in the same message. Torn at any byte of that iteration, a restarted node
/// must never apply a term-1 entry at 2 or 3: the commit index may not become durable before
/// the entries that replaced the stale tail.
#[test]
fn a_torn_iteration_never_commits_the_tail_it_was_replacing() {
    let mut keep = 0;
    loop {
        let disk = MemDisk::new();
        let g = GroupId(1);
        let mut node = open(1, &[(1, &[1, 2, 3])], &disk, 0);
        node.step(MS, NodeId(2), g, first_append(1, 3));
        node.process(&mut Outbox::default()).unwrap();
        let replace = Message::AppendEntries {
            term: Term(2),
            prev_log_index: LogIndex(1),
            prev_log_term: Term(1),
            entries: (2..=3)
                .map(|i| Entry { term: Term(2), index: LogIndex(i), payload: EntryPayload::Noop })
                .collect(),
            leader_commit: LogIndex(3),
            read_seq: 0,
        };
        node.step(2 * MS, NodeId(3), g, replace);
        disk.fail_next_sync();
        assert!(node.process(&mut Outbox::default()).is_err());
        drop(node);
        let unsynced = disk.last_unsynced_len();
        disk.crash_torn_at(keep);
        let mut node = open(1, &[(1, &[1, 2, 3])], &disk, 0);
        let out = node.process(&mut Outbox::default()).unwrap();
        for e in applied(&out, g) {
            assert!(
                e.index == LogIndex(1) || e.term == Term(2),
                "torn after {keep} of {unsynced} bytes: applied stale {e:?}"
            );
        }
        if keep >= unsynced {
            break;
        }
        keep += 1;
    }
}

/// `rounds` times: every node processes, then every batch is delivered unless it comes from
/// or goes to node index `cut`. Returns each node's outputs.
fn route(
    nodes: &mut [Node<MemDisk>],
    now: u64,
    cut: Option<usize>,
    rounds: usize,
) -> Vec<Vec<Output>> {
    let mut outs = vec![Vec::new(); nodes.len()];
    for _ in 0..rounds {
        let mut mail = Vec::new();
        for (i, n) in nodes.iter_mut().enumerate() {
            let mut outbox = Outbox::default();
            outs[i].extend(n.process(&mut outbox).unwrap());
            mail.extend(outbox.sent.into_iter().map(|(to, b)| (NodeId(i as u64 + 1), to, b)));
        }
        for (from, to, batch) in mail {
            let t = to.0 as usize - 1;
            if Some(t) == cut || Some(from.0 as usize - 1) == cut {
                continue;
            }
            for (g, m) in batch {
                nodes[t].step(now, from, g, m);
            }
        }
    }
    outs
}

/// Applies each node's outputs to its state machine (snapshots restore it) and reports the
/// applied index to the node.
fn feed(nodes: &mut [Node<MemDisk>], machines: &mut [CommandList], outs: Vec<Vec<Output>>) {
    for ((node, machine), out) in nodes.iter_mut().zip(machines.iter_mut()).zip(outs) {
        for o in out {
            match o {
                Output::Restore { data, .. } => machine.restore(&data).unwrap(),
                Output::Apply { group, entries } => {
                    entries.iter().for_each(|e| machine.apply(e));
                    node.on_applied(group, machine.applied());
                }
                _ => {}
            }
        }
    }
}

#[test]
fn raft_8_compaction_during_a_snapshot_transfer_goes_ahead_and_the_transfer_completes() {
    let g = GroupId(1);
    let voters: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let mut config = NodeConfig::default();
    // Small chunks: the transfer takes many round trips, and n1 compacts during it.
    config.raft.snapshot_chunk_bytes = 8;
    let disks: Vec<MemDisk> = (0..3).map(|_| MemDisk::new()).collect();
    let mut nodes: Vec<Node<MemDisk>> = voters
        .iter()
        .zip(&disks)
        .map(|(&id, disk)| {
            let groups = vec![(g, voters.clone())];
            Node::open(id, groups, disk.clone(), config.clone(), DetRng::new(id.0), 0).unwrap()
        })
        .collect();
    let mut machines = vec![CommandList::new(); 3];
    let mut now = 10_000 * MS;
    nodes[0].tick(now);
    let outs = route(&mut nodes, now, None, 20);
    feed(&mut nodes, &mut machines, outs);
    assert_eq!(nodes[0].core(g).unwrap().role(), core::Role::Leader);
    // n3 is cut off while the others commit and n1 compacts its log.
    for k in 0..20u8 {
        nodes[0].propose(now, g, vec![k]).unwrap();
    }
    let outs = route(&mut nodes, now, Some(2), 20);
    feed(&mut nodes, &mut machines, outs);
    nodes[0].snapshot(g, machines[0].applied(), machines[0].snapshot()).unwrap();
    // Reconnected, n3 receives that snapshot chunk by chunk while n1 keeps committing and
    // compacting: no compaction is refused, and n3's snapshot index keeps moving.
    let n3_state = |nodes: &[Node<MemDisk>]| nodes[0].status(g).unwrap().progress[&NodeId(3)].1;
    let mut transfer_seen = false;
    let mut compactions = 0;
    let mut installed = vec![LogIndex(0)];
    for k in 0..150u8 {
        now += 10 * MS;
        nodes.iter_mut().for_each(|n| n.tick(now));
        nodes[0].propose(now, g, vec![k]).unwrap();
        let outs = route(&mut nodes, now, None, 1);
        feed(&mut nodes, &mut machines, outs);
        transfer_seen |= n3_state(&nodes) == ReplicationState::Snapshot;
        if machines[0].applied() > nodes[0].core(g).unwrap().snapshot_index() {
            nodes[0].snapshot(g, machines[0].applied(), machines[0].snapshot()).unwrap();
            compactions += 1;
        }
        let at = nodes[2].core(g).unwrap().snapshot_index();
        if installed.last() != Some(&at) {
            installed.push(at);
        }
    }
    assert!(transfer_seen && compactions > 100, "{compactions} compactions");
    // Every transfer completes even though a newer snapshot exists before it is done.
    assert!(installed.len() >= 4, "n3 installed {installed:?}");
    assert!(installed.windows(2).all(|w| w[0] < w[1]), "n3 installed {installed:?}");
    // Once compaction pauses, n3 catches up.
    for _ in 0..20 {
        now += 100 * MS;
        nodes.iter_mut().for_each(|n| n.tick(now));
        let outs = route(&mut nodes, now, None, 20);
        feed(&mut nodes, &mut machines, outs);
    }
    assert_ne!(n3_state(&nodes), ReplicationState::Snapshot);
    assert_eq!(machines[2].commands(), machines[0].commands());
    assert_eq!(machines[2].applied(), nodes[0].core(g).unwrap().commit_index());
}

/// Coalesced heartbeats: a node leading 20 groups, whose leaders were elected at different
/// moments, sends all 20 groups' heartbeats in one iteration, one batch per peer — even
/// though its driver ticks every 5 ms, so heartbeats on per-group timers would leave in
/// several iterations.
#[test]
fn heartbeats_of_every_led_group_leave_in_one_batch_per_peer() {
    const GROUPS: u64 = 20;
    let voters: &[u64] = &[1, 2, 3];
    let groups: Vec<(u64, &[u64])> = (1..=GROUPS).map(|g| (g, voters)).collect();
    let disks: Vec<MemDisk> = (0..3).map(|_| MemDisk::new()).collect();
    let mut nodes: Vec<Node<MemDisk>> =
        (0..3).map(|i| open(i as u64 + 1, &groups, &disks[i], 0)).collect();

    // Phase 1: only n1 is ticked, in 7 ms steps, so each group elects n1 when its own
    // randomized election timeout runs out: at different moments.
    let mut now = 0;
    let mut elected_at = BTreeMap::new();
    while elected_at.len() < GROUPS as usize {
        assert!(now < 10_000 * MS, "n1 wins every election: {elected_at:?}");
        now += 7 * MS;
        nodes[0].tick(now);
        for o in route(&mut nodes, now, None, 20).remove(0) {
            if let Output::Role { group, state } = o {
                if state.is_leader {
                    elected_at.insert(group, now);
                }
            }
        }
    }
    let heartbeat_ns = NodeConfig::default().raft.heartbeat_interval.as_nanos() as u64;
    let phases: BTreeSet<u64> = elected_at.values().map(|t| t % heartbeat_ns).collect();
    assert!(phases.len() > 1, "elections at different phases of the interval: {elected_at:?}");
    route(&mut nodes, now, None, 20);

    // Phase 2: one heartbeat interval, ticked every 5 ms. Exactly one iteration sends, and
    // it sends one batch per peer carrying every group's heartbeat.
    let mut sending = Vec::new();
    for _ in 0..heartbeat_ns / (5 * MS) {
        now += 5 * MS;
        nodes[0].tick(now);
        let mut outbox = Outbox::default();
        nodes[0].process(&mut outbox).unwrap();
        if !outbox.sent.is_empty() {
            sending.push((now, outbox.sent));
        }
    }
    assert_eq!(sending.len(), 1, "heartbeats leave in one iteration: {sending:?}");
    let (_, sent) = sending.remove(0);
    let peers: Vec<NodeId> = sent.iter().map(|(to, _)| *to).collect();
    assert_eq!(peers, vec![NodeId(2), NodeId(3)], "one send per peer");
    for (to, batch) in sent {
        let heartbeats: Vec<GroupId> = batch
            .iter()
            .filter(
                |(_, m)| matches!(m, Message::AppendEntries { entries, .. } if entries.is_empty()),
            )
            .map(|(g, _)| *g)
            .collect();
        assert_eq!(heartbeats, (1..=GROUPS).map(GroupId).collect::<Vec<_>>(), "to {to}");
        assert_eq!(batch.len(), GROUPS as usize, "nothing but heartbeats to {to}: {batch:?}");
    }
}

/// RAFT-3 with explicit applied reports: a leader's read becomes servable only once the
/// caller reported its read index applied, and then comes first in the next iteration.
#[test]
fn raft_3_a_read_is_served_once_the_caller_reports_its_index_applied() {
    let disk = MemDisk::new();
    let g = GroupId(1);
    let mut now = 0;
    let mut node = open(1, &[(1, &[1])], &disk, now);
    let mut out = Vec::new();
    elect_alone(&mut node, &mut now, &mut out);
    let (index, _) = node.propose(now, g, vec![7]).unwrap();
    node.read_index(now, g, 42).unwrap();
    let mut out = Vec::new();
    for _ in 0..3 {
        out.extend(node.process(&mut Outbox::default()).unwrap());
    }
    assert!(applied(&out, g).iter().any(|e| e.index == index));
    assert!(
        !out.iter().any(|o| matches!(o, Output::Read { .. })),
        "nothing reported applied yet: {out:?}"
    );
    node.on_applied(g, index);
    assert!(node.has_ready(), "the servable read is work for the next iteration");
    let out = node.process(&mut Outbox::default()).unwrap();
    // The read index is the commit index when the read arrived: at or below the entry.
    assert!(
        matches!(out.first(), Some(&Output::Read { group, ctx: 42, index: at }) if group == g && at <= index),
        "{out:?}"
    );
}

/// RAFT-1 by position: the iteration's acknowledgements are sealed with the WAL position of
/// its writes, and the token of its fsync covers it.
#[test]
fn raft_1_acknowledgements_are_sealed_with_the_position_the_fsync_covers() {
    let disk = MemDisk::new();
    let mut wal = Wal::open(disk, WalConfig::default()).unwrap().0;
    let before = wal.ack_position();
    let hs = HardState { term: Term(1), vote: Some(NodeId(1)), commit: LogIndex(0) };
    wal.set_hard_state(GroupId(1), hs).unwrap();
    let needs = wal.ack_position();
    assert!(needs > before);
    let mut held = crate::ready::AfterSync::new(vec![1u8]);
    held.seal(needs);
    let token = wal.sync_for_ack().unwrap();
    assert!(token.through() >= needs);
    assert_eq!(held.release(&token), vec![1u8]);
    // A commit-only change needs no fsync, and the token still covers every acknowledgement.
    wal.set_hard_state(GroupId(1), HardState { commit: LogIndex(0), ..hs }).unwrap();
    let token = wal.sync_for_ack().unwrap();
    assert!(token.through() >= wal.ack_position());
}
