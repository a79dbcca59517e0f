//! Host tests: the exact outputs of an admission, an apply and a role change; the envelope
//! checks (sender, HLC-3, clock probes, HLC-6); and golden interaction scripts (every output
//! printed to `tests/testdata/`; `DECREE_BLESS=1` rewrites them).

mod support;

use decree_host::machines::{ToyRequest, ToyResponse};
use decree_host::{ClientTag, Role};
use decree_proto::envelope::{Payload, NODE_GROUP};
use decree_proto::{Envelope, ErrorResponse, RequestId};
use decree_raft::node::Output;
use decree_types::{GroupId, HlcTimestamp, LogIndex, NodeId, Term};
use support::{Cluster, EPOCH_NS, MS};

const G: GroupId = GroupId(1);

#[test]
fn admission_proposes_and_apply_answers_with_the_entry_index() {
    let mut c = Cluster::new(1, &[1]);
    c.elect(1);
    let applied_before = c.hosts[0].applied(G).unwrap();
    c.request(1, 10, 1, ToyRequest::Append(b"x".to_vec()));
    // Nothing is answered before the entry is applied.
    assert!(c.io[0].replies.is_empty());
    c.settle(5);
    let index = applied_before.next();
    assert_eq!(
        c.io[0].replies.iter().map(|r| (r.0, r.2.clone())).collect::<Vec<_>>(),
        vec![(ClientTag(10), ToyResponse::Appended { index, term: Term(1) })]
    );
    assert_eq!(c.hosts[0].machine(G).unwrap().commands(), &[(index, b"x".to_vec())]);
    assert_eq!(c.hosts[0].waiting(), 0);
    // The reply's clock is above the entry's proposed_at, which was read after the request.
    assert!(c.io[0].replies[0].1 > HlcTimestamp::new(EPOCH_NS + c.now, 0));
}

#[test]
fn followers_redirect_and_unknown_groups_are_refused() {
    let mut c = Cluster::new(3, &[1]);
    c.elect(1);
    c.request(2, 1, 1, ToyRequest::Append(b"x".to_vec()));
    c.request(2, 2, 9, ToyRequest::Read);
    c.settle(5);
    let replies: Vec<_> = c.io[1].replies.iter().map(|r| (r.0, r.2.clone())).collect();
    assert_eq!(replies, vec![(ClientTag(1), ToyResponse::NotLeader { leader: Some(NodeId(1)) })]);
    let refusals: Vec<_> = c.io[1].refusals.iter().map(|r| (r.0, r.2.clone())).collect();
    assert_eq!(refusals, vec![(ClientTag(2), ErrorResponse::UnknownGroup { group: GroupId(9) })]);
}

#[test]
fn linearizable_reads_are_served_once_the_read_index_is_applied() {
    let mut c = Cluster::new(3, &[1]);
    c.elect(1);
    c.request(1, 1, 1, ToyRequest::Append(b"a".to_vec()));
    c.settle(10);
    c.request(1, 2, 1, ToyRequest::Read);
    c.settle(10);
    let last = c.io[0].replies.last().cloned().unwrap();
    assert_eq!(last.0, ClientTag(2));
    let ToyResponse::Contents { read_index, count, last } = last.2 else {
        panic!("a read answers with the contents: {last:?}")
    };
    assert_eq!((count, last), (1, read_index));
}

#[test]
fn role_change_answers_waiting_proposals_as_unknown_and_reports_roles() {
    let mut c = Cluster::new(3, &[1]);
    c.elect(1);
    assert_eq!(c.hosts[0].role(G), Some(Role::Leader { term: Term(1), ready: true }));
    // n1 is cut off: its proposal can never commit in term 1.
    c.cut = vec![NodeId(1)];
    c.request(1, 5, 1, ToyRequest::Append(b"lost".to_vec()));
    c.settle(5);
    assert!(c.io[0].replies.is_empty());
    // n2 is elected in term 2; then n1 hears from it and steps down.
    c.advance(10_000, Some(2));
    assert!(c.hosts[1].role(G).unwrap().is_leader());
    c.cut.clear();
    c.advance(200, None);
    c.advance(200, None);
    let replies: Vec<_> = c.io[0].replies.iter().map(|r| (r.0, r.2.clone())).collect();
    assert_eq!(replies, vec![(ClientTag(5), ToyResponse::Unknown)]);
    let role = c.hosts[0].role(G).unwrap();
    assert_eq!(role, Role::Follower { term: role.term(), leader: Some(NodeId(2)) });
    // The node's role outputs, as the host observed them, in order.
    let roles: Vec<bool> = c.io[0]
        .observed
        .iter()
        .filter_map(|o| match o {
            Output::Role { state, .. } => Some(state.is_leader),
            _ => None,
        })
        .collect();
    assert_eq!(roles.first(), Some(&false), "candidate first");
    assert!(roles.contains(&true) && roles.last() == Some(&false));
}

#[test]
fn raft_6_a_leader_handing_over_redirects_requests_to_the_target_then_serves_again() {
    let mut c = Cluster::new(3, &[1]);
    c.elect(1);
    // n3 is cut off: the transfer to it cannot complete.
    c.cut = vec![NodeId(3)];
    let now = c.now;
    c.host(1).transfer_leadership(now, G, NodeId(3)).expect("the leader transfers");
    // While the transfer is under way the node takes no proposal: the request goes to the
    // target before the machine admits it (and keeps leader-only state for it).
    c.request(1, 7, 1, ToyRequest::Append(b"during".to_vec()));
    c.settle(5);
    let replies: Vec<_> = c.io[0].replies.iter().map(|r| (r.0, r.2.clone())).collect();
    assert_eq!(replies, vec![(ClientTag(7), ToyResponse::NotLeader { leader: Some(NodeId(3)) })]);
    assert_eq!(c.hosts[0].waiting(), 0);
    // The transfer is abandoned after an election timeout; n1 still leads and serves.
    for _ in 0..25 {
        c.advance(100, None);
    }
    assert!(c.hosts[0].node().core(G).unwrap().transfer_target().is_none());
    assert_eq!(c.hosts[0].role(G), Some(Role::Leader { term: Term(1), ready: true }));
    c.request(1, 8, 1, ToyRequest::Append(b"after".to_vec()));
    c.settle(10);
    let last = c.io[0].replies.last().map(|r| (r.0, r.2.clone()));
    assert!(
        matches!(last, Some((ClientTag(8), ToyResponse::Appended { term: Term(1), .. }))),
        "{last:?}"
    );
}

fn envelope(
    from: u64,
    group: GroupId,
    clock: HlcTimestamp,
    payload: Payload<ToyRequest, ToyResponse>,
) -> Envelope<ToyRequest, ToyResponse> {
    Envelope { from: NodeId(from), group, sender_clock: clock, payload }
}

#[test]
fn an_envelope_whose_sender_is_not_its_certificate_is_refused() {
    let mut c = Cluster::new(3, &[1]);
    c.elect(1);
    let wall = c.wall();
    let now = c.now;
    let request = Payload::Request { request_id: RequestId(1), request: ToyRequest::Read };
    // Claims to be n3, but the certificate says n2.
    c.hosts[0].handle_envelope(
        now,
        wall,
        NodeId(2),
        envelope(3, G, HlcTimestamp::new(wall, 0), request),
    );
    assert_eq!(c.hosts[0].stats().refused, 1);
    c.process_all();
    assert!(c
        .mail
        .iter()
        .all(|(_, _, e)| !matches!(e.payload, Payload::Response { .. } | Payload::Error { .. })));
}

#[test]
fn hlc_3_a_clock_too_far_ahead_is_refused_without_moving_the_clock() {
    let mut c = Cluster::new(3, &[1]);
    c.elect(1);
    c.mail.clear();
    let (now, wall) = (c.now, c.wall());
    let before = c.hosts[0].clock_last();
    let ahead = HlcTimestamp::new(wall + 10 * support::config().max_offset_ns, 0);
    let request = Payload::Request { request_id: RequestId(4), request: ToyRequest::Read };
    c.hosts[0].handle_envelope(now, wall, NodeId(2), envelope(2, G, ahead, request));
    assert_eq!(c.hosts[0].clock_last(), before, "the clock is not moved");
    c.process_all();
    let errors: Vec<_> = c
        .mail
        .iter()
        .filter_map(|(_, to, e)| match &e.payload {
            Payload::Error { in_reply_to, error } => Some((*to, *in_reply_to, error.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, NodeId(2));
    assert_eq!(errors[0].1, Some(RequestId(4)));
    assert!(matches!(errors[0].2, ErrorResponse::ClockRejected { remote, .. } if remote == ahead));
    // A client's reading too far ahead: refused the same way.
    c.hosts[0].handle_client_request(
        now,
        wall,
        decree_types::ClientId(1),
        ClientTag(9),
        ahead,
        G,
        ToyRequest::Read,
    );
    c.process_all();
    assert!(matches!(
        c.io[0].refusals.last(),
        Some((ClientTag(9), _, ErrorResponse::ClockRejected { .. }))
    ));
    assert!(c.hosts[0].clock_last() < ahead, "the clock is not moved");
}

#[test]
fn clock_probes_are_echoed_and_measured() {
    let mut c = Cluster::new(3, &[1]);
    c.advance(1, None);
    // Every host probed its two peers once, and every probe was echoed and measured.
    for i in 1..=3u64 {
        for peer in (1..=3u64).filter(|&p| p != i) {
            let m = c.hosts[i as usize - 1].clock_offset(NodeId(peer));
            assert!(m.is_some(), "n{i} measured n{peer}");
        }
    }
    // A probe is answered whatever the sender's HLC says (HLC-6 bypasses HLC-3).
    let (now, wall) = (c.now, c.wall());
    let far = HlcTimestamp::new(u64::MAX / 2, 0);
    c.mail.clear();
    c.hosts[0].handle_envelope(
        now,
        wall,
        NodeId(2),
        envelope(2, NODE_GROUP, far, Payload::ClockProbe { sent_pt: 5 }),
    );
    c.process_all();
    let echoes: Vec<_> = c.mail.iter().filter(|(_, to, e)| *to == NodeId(2) && matches!(e.payload, Payload::ClockEcho { sent_pt: 5, remote_pt } if remote_pt == wall)).collect();
    assert_eq!(echoes.len(), 1);
    // A probe on a group's stream is refused.
    let refused = c.hosts[0].stats().refused;
    c.hosts[0].handle_envelope(
        now,
        wall,
        NodeId(2),
        envelope(2, G, far, Payload::ClockProbe { sent_pt: 5 }),
    );
    assert_eq!(c.hosts[0].stats().refused, refused + 1);
}

#[test]
fn hlc_6_a_host_off_from_a_majority_stops() {
    let mut c = Cluster::new(3, &[1]);
    c.advance(1, None);
    // Echoes that put both peers 10 s ahead of n1.
    let (now, wall) = (c.now, c.wall());
    for peer in [2u64, 3] {
        let echo = Payload::ClockEcho { sent_pt: wall - MS, remote_pt: wall + 10_000 * MS };
        c.hosts[0].handle_envelope(
            now,
            wall,
            NodeId(peer),
            envelope(peer, NODE_GROUP, HlcTimestamp::ZERO, echo),
        );
    }
    assert!(c.hosts[0].stopped().is_none());
    // The next probe round, while the measurements are fresh (younger than their TTL).
    c.advance(2 * decree_types::limits::HEARTBEAT_INTERVAL_MS, Some(1));
    let why = c.hosts[0].stopped().expect("n1 stopped").to_string();
    assert!(why.contains("offset") || why.contains("clock"), "{why}");
    let mut io = support::Recorder::default();
    let (now, wall) = (c.now, c.wall());
    assert!(c.hosts[0].process(now, wall, &mut io).is_err());
    // The others are fine.
    assert!(c.hosts[1].stopped().is_none());
}

#[test]
fn snapshot_policy_snapshots_after_the_configured_entries_and_restores_after_restart() {
    let config = decree_host::HostConfig { snapshot_every_entries: 3, ..support::config() };
    let mut c = Cluster::with_config(1, &[1], config.clone());
    c.elect(1);
    for k in 0..5u64 {
        c.request(1, k, 1, ToyRequest::Append(vec![k as u8]));
        c.settle(5);
    }
    let core = c.hosts[0].node().core(G).unwrap();
    assert!(core.snapshot_index() >= LogIndex(3), "snapshot taken: {}", core.snapshot_index());
    let contents = c.hosts[0].machine(G).unwrap().clone();
    // Restart from the disk: the snapshot is restored, the rest replayed.
    let disk = c.disks[0].clone();
    let directory = decree_host::Directory::new(vec![(G, vec![NodeId(1)])]);
    let spec = decree_host::GroupSpec {
        group: G,
        voters: vec![NodeId(1)],
        machine: decree_host::machines::CommandLog::new(),
    };
    let mut host = decree_host::Host::open(
        NodeId(1),
        config,
        vec![spec],
        directory,
        disk,
        decree_types::DetRng::new(9),
        0,
        EPOCH_NS + c.now,
    )
    .unwrap();
    let mut io = support::Recorder::default();
    let mut now = c.now;
    for _ in 0..50 {
        now += 100 * MS;
        host.handle_timeout(now, EPOCH_NS + now);
        host.process(now, EPOCH_NS + now, &mut io).unwrap();
    }
    assert!(io.observed.iter().any(|o| matches!(o, Output::Restore { .. })));
    assert_eq!(host.machine(G).unwrap(), &contents);
}

#[test]
fn a_group_has_at_most_one_snapshot_job_out_and_its_view_is_the_state_at_its_index() {
    let config = decree_host::HostConfig { snapshot_every_entries: 3, ..support::config() };
    let mut c = Cluster::with_config(1, &[1], config);
    c.io[0].hold_snapshots = true;
    c.elect(1);
    // Phase 1: entries until a job is out (the no-op and two appends); it is not completed.
    let mut k = 0u64;
    while c.io[0].snapshots.is_empty() {
        c.request(1, k, 1, ToyRequest::Append(vec![k as u8]));
        c.settle(5);
        k += 1;
    }
    let index = c.io[0].snapshots[0].index;
    assert_eq!(index, LogIndex(3));
    let at_index = c.hosts[0].machine(G).unwrap().clone();
    // Phase 2: many more entries; no second job while the first is out.
    for k in 4..12u64 {
        c.request(1, k, 1, ToyRequest::Append(vec![k as u8]));
        c.settle(5);
    }
    assert_eq!(c.io[0].snapshots.len(), 1, "one job out per group");
    assert_eq!(c.hosts[0].node().core(G).unwrap().snapshot_index(), LogIndex(0));
    // Phase 3: encoded now, the view is still the state at its index.
    let bytes = c.io[0].snapshots[0].encode();
    let mut restored = decree_host::machines::CommandLog::new();
    decree_host::ReplicatedMachine::restore(&mut restored, &bytes).unwrap();
    assert_eq!(restored, at_index);
    assert_ne!(&restored, c.hosts[0].machine(G).unwrap());
    // Phase 4: handed back, the node takes it; the next job follows at once (12 more applied).
    assert_eq!(c.complete_snapshots(1), vec![true]);
    assert_eq!(c.hosts[0].node().core(G).unwrap().snapshot_index(), index);
    c.request(1, 99, 1, ToyRequest::Append(vec![99]));
    c.settle(5);
    assert_eq!(c.io[0].snapshots.len(), 1);
    assert!(c.io[0].snapshots[0].index > index);
}

#[test]
fn a_snapshot_job_completed_after_a_newer_restore_is_dropped_harmlessly() {
    let config = decree_host::HostConfig { snapshot_every_entries: 3, ..support::config() };
    let mut c = Cluster::with_config(3, &[1], config);
    c.elect(1);
    // Phase 1: n3 applies enough for a snapshot job, and holds it.
    c.io[2].hold_snapshots = true;
    for k in 0..4u64 {
        c.request(1, k, 1, ToyRequest::Append(vec![k as u8]));
        c.settle(5);
    }
    assert_eq!(c.io[2].snapshots.len(), 1);
    let old = c.io[2].snapshots[0].index;
    // Phase 2: n3 is cut off; the others move on and compact their logs past it.
    c.cut.push(NodeId(3));
    for k in 4..20u64 {
        c.request(1, k, 1, ToyRequest::Append(vec![k as u8]));
        c.settle(5);
    }
    let leader_snapshot = c.hosts[0].node().core(G).unwrap().snapshot_index();
    assert!(leader_snapshot > c.hosts[2].applied(G).unwrap(), "n3 needs a snapshot");
    // Phase 3: healed, n3 restores the leader's snapshot, newer than its job.
    c.cut.clear();
    for _ in 0..10 {
        c.advance(100, None);
    }
    let restored = c.io[2]
        .observed
        .iter()
        .find_map(|o| match o {
            Output::Restore { meta, .. } => Some(meta.last_index),
            _ => None,
        })
        .expect("n3 restored a snapshot");
    assert!(restored > old);
    assert_eq!(c.hosts[2].applied(G), c.hosts[0].applied(G));
    // Phase 4: the old job comes back: refused, nothing changes, nothing stops.
    assert_eq!(c.complete_snapshots(3), vec![false]);
    assert!(c.hosts[2].stopped().is_none());
    assert_eq!(c.hosts[2].node().core(G).unwrap().snapshot_index(), restored);
    assert_eq!(c.hosts[2].machine(G), c.hosts[0].machine(G));
    // Bytes for a job that is not out (repeated) are dropped too.
    let bytes = std::sync::Arc::from(vec![0u8; 4]);
    assert!(!c.hosts[2].snapshot_encoded(G, old, bytes).unwrap());
    // Phase 5: the group goes on, and its next job is taken.
    c.io[2].hold_snapshots = false;
    for k in 20..24u64 {
        c.request(1, k, 1, ToyRequest::Append(vec![k as u8]));
        c.settle(5);
    }
    assert_eq!(c.hosts[2].machine(G), c.hosts[0].machine(G));
    assert!(c.hosts[2].node().core(G).unwrap().snapshot_index() > restored);
}

/// Compares `got` with the golden file `name`, or rewrites it under `DECREE_BLESS=1`.
fn golden(name: &str, got: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata").join(name);
    if std::env::var_os("DECREE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e} (run with DECREE_BLESS=1 to create it)", path.display())
    });
    if want != got {
        let line = want.lines().zip(got.lines()).position(|(a, b)| a != b);
        panic!("{name} differs from the golden file (first at line {line:?}); DECREE_BLESS=1 rewrites it\n{got}");
    }
}

#[test]
fn golden_single_node_election_append_read() {
    let mut c = Cluster::new(1, &[1]);
    let mut out = String::new();
    out += "# election: n1's timer fires\n";
    c.elect(1);
    out += &c.take_log();
    out += "# append \"a\" by client tag 1\n";
    c.request(1, 1, 1, ToyRequest::Append(b"a".to_vec()));
    c.settle(5);
    out += &c.take_log();
    out += "# read by client tag 2\n";
    c.request(1, 2, 1, ToyRequest::Read);
    c.settle(5);
    out += &c.take_log();
    golden("single_node.txt", &out);
}

#[test]
fn golden_three_nodes_append_and_step_down() {
    let mut c = Cluster::new(3, &[1, 2]);
    let mut out = String::new();
    out += "# election: n1's timer fires, it leads both groups\n";
    c.elect(1);
    out += &c.take_log();
    out += "# append to group 1 through n1\n";
    c.request(1, 1, 1, ToyRequest::Append(b"a".to_vec()));
    c.settle(10);
    out += &c.take_log();
    out += "# n1 cut off with a proposal; n2 elected; n1 steps down and answers Unknown\n";
    c.cut = vec![NodeId(1)];
    c.request(1, 2, 2, ToyRequest::Append(b"b".to_vec()));
    c.settle(5);
    c.advance(10_000, Some(2));
    c.cut.clear();
    c.advance(200, None);
    out += &c.take_log();
    golden("three_nodes.txt", &out);
}

/// The envelope cases of the QUIC shell's peer tests, at the host: each bad envelope is
/// refused whole and counted, and the next good batch from the same peer is still served.
#[test]
fn bad_envelopes_are_refused_and_counted_and_the_host_keeps_serving() {
    use decree_proto::limits::RAFT_BATCH_MESSAGES_MAX;
    let mut c = Cluster::new(3, &[1]);
    c.elect(1);
    // A real batch from the leader to n2, kept to replay after each bad envelope.
    c.advance(200, Some(1));
    c.process_all();
    c.mail.clear();
    c.now += 500 * MS;
    let (now, wall) = (c.now, c.wall());
    c.hosts[0].handle_timeout(now, wall);
    c.process_all();
    let good = c
        .mail
        .iter()
        .find(|(_, to, e)| *to == NodeId(2) && matches!(e.payload, Payload::RaftBatch(_)))
        .map(|(_, _, e)| e.clone())
        .expect("the leader sends n2 a batch");
    let Payload::RaftBatch(batch) = &good.payload else { unreachable!() };
    let heartbeat = batch[0].clone();
    c.mail.clear();
    let clock = HlcTimestamp::new(wall, 0);
    let far = HlcTimestamp::new(wall + 10_000 * MS, 0);
    let request = || Payload::Request { request_id: RequestId(1), request: ToyRequest::Read };
    let cases: Vec<(&str, Envelope<ToyRequest, ToyResponse>)> = vec![
        (
            "claimed sender is not the certificate's node",
            envelope(3, NODE_GROUP, clock, Payload::RaftBatch(vec![heartbeat.clone()])),
        ),
        (
            "longer than RAFT_BATCH_MESSAGES_MAX",
            envelope(
                1,
                NODE_GROUP,
                clock,
                Payload::RaftBatch(vec![heartbeat.clone(); RAFT_BATCH_MESSAGES_MAX + 1]),
            ),
        ),
        (
            "batch on a group's stream",
            envelope(1, G, clock, Payload::RaftBatch(vec![heartbeat.clone()])),
        ),
        (
            "single Raft message on the node stream",
            envelope(1, NODE_GROUP, clock, Payload::Raft(heartbeat.1.clone())),
        ),
        ("request on the node stream", envelope(1, NODE_GROUP, clock, request())),
        (
            "clock too far ahead (HLC-3)",
            envelope(1, NODE_GROUP, far, Payload::RaftBatch(vec![heartbeat.clone()])),
        ),
    ];
    for (i, (name, bad)) in cases.into_iter().enumerate() {
        let before = c.hosts[1].clock_last();
        c.hosts[1].handle_envelope(now, wall, NodeId(1), bad);
        assert_eq!(c.hosts[1].stats().refused, i as u64 + 1, "{name}: counted");
        assert!(!c.hosts[1].has_work(), "{name}: nothing reached the node");
        assert_eq!(c.hosts[1].clock_last(), before, "{name}: the clock did not move");
        // A good batch is still served: the node answers the heartbeat.
        c.hosts[1].handle_envelope(now, wall, NodeId(1), good.clone());
        assert_eq!(c.hosts[1].stats().refused, i as u64 + 1, "{name}: the good batch is taken");
        assert!(c.hosts[1].has_work(), "{name}: the node has an answer to send");
        let mut io = support::Recorder::default();
        c.hosts[1].process(now, wall, &mut io).unwrap();
        assert!(io.sent.iter().any(|(to, _)| *to == NodeId(1)), "{name}: answered");
    }
}

#[test]
fn raft_3_a_deposed_leader_never_serves_a_read_a_new_leaders_write_overtook() {
    let mut c = Cluster::new(3, &[1]);
    c.elect(1);
    c.request(1, 1, 1, ToyRequest::Append(b"a".to_vec()));
    c.settle(10);
    // n1 is cut off; n2 is elected in term 2 and commits a write n1 never sees.
    c.cut = vec![NodeId(1)];
    c.advance(10_000, Some(2));
    assert!(c.hosts[1].role(G).unwrap().is_leader());
    c.request(2, 2, 1, ToyRequest::Append(b"b".to_vec()));
    c.settle(10);
    assert!(c.io[1].replies.iter().any(|r| r.0 == ClientTag(2)));
    // n1 still believes it leads term 1 and is asked to read: its confirmation round cannot
    // complete, so it serves nothing while cut off.
    assert!(c.hosts[0].role(G).unwrap().is_leader());
    c.request(1, 3, 1, ToyRequest::Read);
    c.settle(10);
    assert!(c.io[0].replies.iter().all(|r| r.0 != ClientTag(3)), "served unconfirmed");
    // Healed, n1 learns of term 2 and steps down: the read is redirected, never answered
    // with contents that miss "b".
    c.cut.clear();
    c.advance(200, None);
    c.advance(200, None);
    let answers: Vec<_> =
        c.io[0].replies.iter().filter(|r| r.0 == ClientTag(3)).map(|r| r.2.clone()).collect();
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(matches!(answers[0], ToyResponse::NotLeader { .. }), "{answers:?}");
}
