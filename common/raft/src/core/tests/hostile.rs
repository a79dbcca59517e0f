//! Peers' messages never make the core panic: random, contradictory and out-of-range
//! messages are stepped into replicas in every role.

use decree_types::{DetRng, LogIndex, NodeId, Term};

use super::harness::{test_config, Cluster, MS};
use crate::core::Role;
use crate::msg::{Entry, EntryPayload, Message, RejectHint, SnapshotMeta};

fn value(rng: &mut DetRng) -> u64 {
    match rng.range(0, 6) {
        0 => 0,
        1 => u64::MAX,
        2 => 1 << 62,
        3 => rng.next_u64(),
        _ => rng.range(0, 8),
    }
}

fn random_message(rng: &mut DetRng) -> Message {
    let term = Term(value(rng));
    let index = |rng: &mut DetRng| LogIndex(value(rng));
    match rng.range(0, 11) {
        0 => Message::PreVote { term, last_log_index: index(rng), last_log_term: Term(value(rng)) },
        1 => Message::PreVoteResponse { term, granted: rng.chance(1, 2) },
        2 => Message::RequestVote {
            term,
            last_log_index: index(rng),
            last_log_term: Term(value(rng)),
            transfer: rng.chance(1, 2),
        },
        3 => Message::VoteResponse { term, granted: rng.chance(1, 2) },
        4 => {
            let prev = index(rng);
            let count = rng.range(0, 4);
            let entries = (0..count)
                .map(|i| Entry {
                    term: Term(if rng.chance(1, 2) { term.0 } else { value(rng) }),
                    index: if rng.chance(3, 4) {
                        LogIndex(prev.0.wrapping_add(1 + i))
                    } else {
                        index(rng)
                    },
                    payload: EntryPayload::Noop,
                })
                .collect();
            Message::AppendEntries {
                term,
                prev_log_index: prev,
                prev_log_term: Term(value(rng)),
                entries,
                leader_commit: index(rng),
                read_seq: value(rng),
            }
        }
        5 => Message::AppendResponse {
            term,
            success: rng.chance(1, 2),
            match_index: index(rng),
            reject_hint: rng.chance(1, 2).then(|| RejectHint {
                last_index: LogIndex(value(rng)),
                conflict_term: rng.chance(1, 2).then(|| Term(value(rng))),
                conflict_first_index: LogIndex(value(rng)),
            }),
            read_seq: value(rng),
        },
        6 => Message::InstallSnapshot {
            term,
            meta: SnapshotMeta {
                last_index: index(rng),
                last_term: Term(value(rng)),
                voters: vec![],
            },
            offset: value(rng),
            data: vec![0; rng.range(0, 16) as usize],
            done: rng.chance(1, 2),
        },
        7 => Message::InstallSnapshotResponse {
            term,
            last_index: index(rng),
            next_offset: value(rng),
            done: rng.chance(1, 2),
        },
        8 => Message::TimeoutNow { term },
        9 => Message::ReadIndexRequest { term, ctx: value(rng) },
        _ => Message::ReadIndexResponse {
            term,
            ctx: value(rng),
            index: rng.chance(1, 2).then(|| index(rng)),
        },
    }
}

#[test]
fn random_peer_messages_never_panic_in_any_role() {
    let mut rng = DetRng::new(7);
    for _ in 0..300 {
        let mut c = Cluster::new(3, test_config());
        c.elect(1);
        c.propose(1, "a");
        c.stabilize(None);
        // Put node 3 in a campaign, so every role is exercised.
        let now = c.now_ns;
        c.core_mut(3).campaign(now);
        assert_eq!(c.core(3).role(), Role::PreCandidate);
        for _ in 0..30 {
            let to = NodeId(rng.range(1, 4));
            let from = NodeId(rng.range(1, 5));
            let msg = random_message(&mut rng);
            c.now_ns += rng.range(0, 300) * MS;
            let now = c.now_ns;
            let core = c.nodes.get_mut(&to).expect("node").core_mut();
            let _ = core.step(now, from, msg);
            core.tick(now);
            // Drive the core as a driver would (without the harness's state machine, which
            // a Byzantine "leader" could feed garbage: Raft does not tolerate lying peers,
            // it only must not crash on them).
            let ready = core.ready();
            if let Some((index, term)) = ready.persist_mark() {
                core.on_persisted(index, term);
            }
            if let Some(last) = ready.committed_entries.last() {
                core.on_applied(last.index);
            }
        }
    }
}
