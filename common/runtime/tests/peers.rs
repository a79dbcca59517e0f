//! The shell's link to its peers over real loopback QUIC with mutual TLS: coalesced Raft traffic
//! (one envelope per node pair and iteration for every group's small messages, fanned out
//! again on receipt) and the refusal of bad batches. Each test reads as phases.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use decree_proto::envelope::{Envelope, Payload, NODE_GROUP};
use decree_proto::limits::RAFT_BATCH_MESSAGES_MAX;
use decree_proto::{encode_body, Request, RequestId};
use decree_raft::msg::{Entry, EntryPayload, Message};
use decree_raft::node::Transport as NodeTransport;
use decree_runtime::node_shell::peers::{wall_clock_ns, QuicPeers, CLOCK_PROBE_INTERVAL_NS};
use decree_runtime::node_shell::run::PeerMessage;
use decree_runtime::{ClusterCa, Identity, InboundMessage, Transport, TransportConfig};
use decree_types::{GroupId, HlcTimestamp, LogIndex, NodeId, Term};
use tokio::sync::mpsc;

mod support;
use support::count_warnings;

const TIMEOUT: Duration = Duration::from_secs(5);

fn start(identity: Identity) -> (Transport, mpsc::Receiver<InboundMessage>) {
    let config = TransportConfig {
        listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        identity,
        peers: BTreeMap::new(),
        limits: Default::default(),
    };
    let refuse = |_from: decree_runtime::Peer, _body: Vec<u8>| async {
        Err(decree_runtime::HandlerError::Refused { code: 0, message: "no RPC here".into() })
    };
    Transport::bind(config, refuse).unwrap()
}

/// Node `from`'s transport, knowing node `to`'s address.
fn dialer(ca: &ClusterCa, from: u64, to: &Transport, to_id: u64) -> Transport {
    let (t, _) = start(ca.issue_node(NodeId(from)).unwrap());
    t.add_peer(NodeId(to_id), to.local_addr().unwrap());
    t
}

async fn recv(inbound: &mut mpsc::Receiver<InboundMessage>) -> InboundMessage {
    tokio::time::timeout(TIMEOUT, inbound.recv()).await.expect("a frame arrives").unwrap()
}

async fn assert_quiet(inbound: &mut mpsc::Receiver<InboundMessage>) {
    let more = tokio::time::timeout(Duration::from_millis(300), inbound.recv()).await;
    assert!(more.is_err(), "no further frame: {more:?}");
}

fn heartbeat(commit: u64) -> Message {
    Message::AppendEntries {
        term: Term(3),
        prev_log_index: LogIndex(commit),
        prev_log_term: Term(3),
        entries: vec![],
        leader_commit: LogIndex(commit),
        read_seq: 0,
    }
}

fn append_with_entry() -> Message {
    Message::AppendEntries {
        term: Term(3),
        prev_log_index: LogIndex(4),
        prev_log_term: Term(3),
        entries: vec![Entry {
            term: Term(3),
            index: LogIndex(5),
            payload: EntryPayload::Command(b"x".to_vec()),
        }],
        leader_commit: LogIndex(4),
        read_seq: 0,
    }
}

/// Coalesced heartbeats (DESIGN.md §6; RAFT-4 heartbeats, HLC-4 one reading per envelope): the
/// heartbeats of 20 groups to one peer leave as ONE frame on the node stream and come out as
/// 20 messages again; an append carrying entries keeps its own group stream.
#[tokio::test]
async fn heartbeats_of_many_groups_travel_in_one_envelope_and_fan_out_to_every_group() {
    let ca = ClusterCa::generate().unwrap();
    let (b, mut b_inbound) = start(ca.issue_node(NodeId(2)).unwrap());
    let a = dialer(&ca, 1, &b, 2);
    let mut a_peers = QuicPeers::new(a.clone(), NodeId(1));
    let mut b_peers = QuicPeers::new(b.clone(), NodeId(2));

    // Phase 1: one iteration's batch for n2: 20 heartbeats and one append with an entry.
    let mut batch: Vec<(GroupId, Message)> =
        (1..=20).map(|g| (GroupId(g), heartbeat(g * 10))).collect();
    batch.insert(7, (GroupId(7), append_with_entry()));
    a_peers.send(NodeId(2), batch);

    // Phase 2: two frames arrive, no more: the batch on the node stream, the append on its
    // group's stream.
    let mut frames = vec![recv(&mut b_inbound).await, recv(&mut b_inbound).await];
    assert_quiet(&mut b_inbound).await;
    frames.sort_by_key(|f| f.group);
    assert_eq!(frames.iter().map(|f| f.group).collect::<Vec<_>>(), vec![GroupId(7), NODE_GROUP]);
    assert_eq!(a.stats().sent_messages, 2, "two frames written");
    assert_eq!(a_peers.dropped, 0);

    // Phase 3: the receiver fans the batch out to every group, in order, from n1.
    let mut out: Vec<PeerMessage> = Vec::new();
    b_peers.decode(frames.pop().unwrap(), &mut out);
    assert_eq!(b_peers.refused, 0);
    let groups: Vec<GroupId> = out.iter().map(|m| m.group).collect();
    assert_eq!(groups, (1..=20).map(GroupId).collect::<Vec<_>>());
    for m in &out {
        assert_eq!(m.from, NodeId(1));
        assert_eq!(m.message, heartbeat(m.group.0 * 10));
    }
    out.clear();
    b_peers.decode(frames.pop().unwrap(), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].group, &out[0].message), (GroupId(7), &append_with_entry()));
}

/// More small messages than one envelope may hold (`RAFT_BATCH_MESSAGES_MAX`) are split over
/// as few envelopes as the bound allows, and all of them arrive.
#[tokio::test]
async fn a_batch_past_the_bound_is_split_over_envelopes() {
    let ca = ClusterCa::generate().unwrap();
    let (b, mut b_inbound) = start(ca.issue_node(NodeId(2)).unwrap());
    let a = dialer(&ca, 1, &b, 2);
    let mut a_peers = QuicPeers::new(a.clone(), NodeId(1));
    let mut b_peers = QuicPeers::new(b.clone(), NodeId(2));

    let count = RAFT_BATCH_MESSAGES_MAX as u64 + 5;
    a_peers.send(NodeId(2), (0..count).map(|g| (GroupId(g), heartbeat(g))).collect());
    let mut out = Vec::new();
    for _ in 0..2 {
        let frame = recv(&mut b_inbound).await;
        assert_eq!(frame.group, NODE_GROUP);
        b_peers.decode(frame, &mut out);
    }
    assert_quiet(&mut b_inbound).await;
    assert_eq!(out.iter().map(|m| m.group.0).collect::<Vec<_>>(), (0..count).collect::<Vec<_>>());
    assert_eq!(b_peers.refused, 0);
}

/// A bad `RaftBatch` is refused whole, counted and logged, never a panic, and the endpoint keeps
/// serving — the same node stream included: a claimed sender other than the certificate's
/// node, a batch longer than `RAFT_BATCH_MESSAGES_MAX` (sent by a peer that skips
/// validation), a batch on a group stream, a single Raft message or a request on the node
/// stream, a clock reading beyond the offset bound (HLC-3).
#[tokio::test]
async fn bad_raft_batches_are_refused_and_counted_and_the_endpoint_keeps_serving() {
    let (warnings, _guard) = count_warnings();
    let ca = ClusterCa::generate().unwrap();
    let (b, mut b_inbound) = start(ca.issue_node(NodeId(2)).unwrap());
    let c = dialer(&ca, 3, &b, 2);
    let mut b_peers = QuicPeers::new(b.clone(), NodeId(2));
    let now = || HlcTimestamp::new(wall_clock_ns(), 0);
    let batch = |n: usize| Payload::RaftBatch(vec![(GroupId(1), heartbeat(1)); n]);
    let envelope = |from: u64, group: GroupId, payload: Payload| Envelope {
        from: NodeId(from),
        group,
        sender_clock: now(),
        payload,
    };
    let far_ahead = Envelope {
        sender_clock: HlcTimestamp::new(wall_clock_ns() + 10_000_000_000, 0),
        ..envelope(3, NODE_GROUP, batch(2))
    };
    let cases: Vec<(&str, GroupId, Vec<u8>)> = vec![
        (
            "claimed sender is not the certificate's node",
            NODE_GROUP,
            encode_body(&envelope(1, NODE_GROUP, batch(3))).unwrap(),
        ),
        (
            "longer than RAFT_BATCH_MESSAGES_MAX",
            NODE_GROUP,
            postcard::to_allocvec(&envelope(3, NODE_GROUP, batch(RAFT_BATCH_MESSAGES_MAX + 1)))
                .unwrap(),
        ),
        (
            "batch on a group stream",
            GroupId(1),
            encode_body(&envelope(3, GroupId(1), batch(1))).unwrap(),
        ),
        (
            "single Raft message on the node stream",
            NODE_GROUP,
            encode_body(&envelope(3, NODE_GROUP, Payload::Raft(heartbeat(1)))).unwrap(),
        ),
        (
            "request on the node stream",
            NODE_GROUP,
            encode_body(&envelope(
                3,
                NODE_GROUP,
                Payload::Request {
                    request_id: RequestId(1),
                    request: Request::Abort(decree_proto::txn::Abort {
                        txn_id: decree_types::TxnId(1),
                    }),
                },
            ))
            .unwrap(),
        ),
        ("clock too far ahead (HLC-3)", NODE_GROUP, encode_body(&far_ahead).unwrap()),
        ("garbage", NODE_GROUP, vec![0xff; 16]),
    ];
    let mut out = Vec::new();
    for (i, (name, group, body)) in cases.into_iter().enumerate() {
        // Phase 1: the frame reaches the receiver, which refuses it whole and logs why.
        c.send(NodeId(2), group, body).unwrap();
        let frame = recv(&mut b_inbound).await;
        assert_eq!(frame.from, NodeId(3), "{name}");
        let before = warnings.load(Ordering::SeqCst);
        b_peers.decode(frame, &mut out);
        assert!(out.is_empty(), "{name}: nothing delivered");
        assert_eq!(b_peers.refused, i as u64 + 1, "{name}: counted");
        assert!(warnings.load(Ordering::SeqCst) > before, "{name}: logged");

        // Phase 2: a good batch on the same node stream still fans out.
        c.send(NodeId(2), NODE_GROUP, encode_body(&envelope(3, NODE_GROUP, batch(2))).unwrap())
            .unwrap();
        b_peers.decode(recv(&mut b_inbound).await, &mut out);
        assert_eq!(out.len(), 2, "{name}: the next batch is served");
        assert!(out.iter().all(|m| m.from == NodeId(3) && m.group == GroupId(1)), "{name}");
        out.clear();
    }
    assert_eq!(b.stats().refused_streams, 0, "refusals are per envelope; streams stay open");
}

/// HLC-6 end to end over QUIC: each node asks its peers for their physical clocks every tick
/// (`ClockProbe` / `ClockEcho` on the node stream) and measures the offsets. A node whose
/// clock is 500 ms ahead — beyond the tolerated 0.8 × 250 = 200 ms, and so far that HLC-3
/// makes its peers refuse its Raft traffic, which is why clock traffic is measured before
/// that check — finds both peers far away and must stop; the two healthy nodes each see one
/// peer of two far away, not a majority, and carry on. (The margin is wide so that a slow
/// round trip on a loaded machine, whose half is the measurement's uncertainty, cannot blur
/// the verdict.)
#[tokio::test]
async fn hlc_6_a_node_whose_clock_is_off_from_the_majority_stops_and_the_others_carry_on() {
    let ca = ClusterCa::generate().unwrap();
    let mut nodes: Vec<(Transport, mpsc::Receiver<InboundMessage>)> =
        (1..=3).map(|id| start(ca.issue_node(NodeId(id)).unwrap())).collect();
    for i in 0..3 {
        for j in 0..3 {
            if i != j {
                let addr = nodes[j].0.local_addr().unwrap();
                nodes[i].0.add_peer(NodeId(j as u64 + 1), addr);
            }
        }
    }
    let skew = |ahead_ns: u64| -> std::sync::Arc<dyn Fn() -> u64 + Send + Sync> {
        std::sync::Arc::new(move || wall_clock_ns() + ahead_ns)
    };
    let mut peers: Vec<QuicPeers> = nodes
        .iter()
        .enumerate()
        .map(|(i, (t, _))| {
            let ahead = if i == 2 { 500_000_000 } else { 0 };
            QuicPeers::with_clock(t.clone(), NodeId(i as u64 + 1), skew(ahead))
        })
        .collect();

    // Phase 1: every node talks to both others (an empty batch is enough to know a peer),
    // then one tick probes them all.
    for (i, p) in peers.iter_mut().enumerate() {
        for j in (1..=3).filter(|&j| j != i as u64 + 1) {
            p.send(NodeId(j), Vec::new());
        }
        assert!(p.probe_and_check_clocks().is_ok(), "no measurement yet: no verdict");
    }

    // Phase 2: deliver probes and echoes until every node measured both peers.
    let mut out = Vec::new();
    for _ in 0..2000 {
        for (i, (_, inbound)) in nodes.iter_mut().enumerate() {
            while let Ok(frame) = inbound.try_recv() {
                peers[i].decode(frame, &mut out);
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        let measured = (0..3).all(|i| {
            (1..=3u64)
                .filter(|&j| j != i as u64 + 1)
                .all(|j| peers[i].clock_offset(NodeId(j)).is_some())
        });
        if measured {
            break;
        }
    }
    assert!(out.is_empty(), "clock traffic carries no Raft messages");
    let m = peers[0].clock_offset(NodeId(3)).expect("n1 measured n3");
    assert!(m.offset_ns > 400_000_000 && m.offset_ns < 600_000_000, "{m:?}");

    // Phase 3: at the next round of probes, the verdicts on what the last round measured.
    tokio::time::sleep(Duration::from_nanos(CLOCK_PROBE_INTERVAL_NS)).await;
    let err = peers[2].probe_and_check_clocks().expect_err("n3 is off from both peers");
    assert!(err.to_string().contains("HLC-6"), "{err}");
    assert!(peers[0].probe_and_check_clocks().is_ok(), "one far peer of two is no majority");
    assert!(peers[1].probe_and_check_clocks().is_ok());
}
