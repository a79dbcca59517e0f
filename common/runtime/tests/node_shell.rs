//! The node shell end to end over real loopback QUIC with mutual TLS: hosts running the
//! replicated log (`decree_host::machines::CommandLog`) behind the generic shell, their
//! envelopes on real streams, their clocks injected. Each test reads as phases.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use decree_host::machines::{CommandLog, ToyRequest, ToyResponse};
use decree_host::{Directory, GroupSpec, Host, HostConfig};
use decree_proto::envelope::{Envelope, Payload, NODE_GROUP};
use decree_proto::{encode_body_of, ErrorResponse};
use decree_raft::core::RaftConfig;
use decree_raft::msg::Message;
use decree_raft::node::NodeConfig;
use decree_runtime::fs_disk::FsDisk;
use decree_runtime::node_shell::peers::QuicPeers;
use decree_runtime::node_shell::rpc::{ClientReply, ClientRequest, NodeStatus, Refusal};
use decree_runtime::node_shell::run::{
    client_id, wall_clock_ns, NodeShell, PhysicalClockFn, ShellError, ShellHandle, ShellThread,
};
use decree_runtime::node_shell::timed_disk::TimedDisk;
use decree_runtime::{ClusterCa, HandlerError, Peer, QuicEndpoint, TransportConfig};
use decree_types::limits::{MAX_OFFSET_NS, NS_PER_MS};
use decree_types::{DetRng, GroupId, HlcTimestamp, LogIndex, NodeId, Term};
use tokio::time::Instant;

type Request = ToyRequest;
type Response = ToyResponse;
type LogEnvelope = Envelope<Request, Response>;

const G1: GroupId = GroupId(1);

/// One node: its shell on its own thread, its endpoint, the handle clients reach it through.
struct TestNode {
    id: NodeId,
    thread: ShellThread,
    endpoint: QuicEndpoint,
    handle: ShellHandle<Request, Response>,
}

impl TestNode {
    async fn status(&self) -> NodeStatus {
        match self.handle.call(client_id("test"), ClientRequest::Status).await {
            ClientReply::Status(s) => s,
            other => panic!("{}: status answered {other:?}", self.id),
        }
    }

    async fn term(&self) -> Term {
        self.status().await.groups.iter().find(|g| g.group == G1).expect("hosts g1").term
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A fresh directory under the system's temp dir, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = wall_clock_ns();
        let dir = std::env::temp_dir().join(format!("{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A host of group 1 (voters `voters`) on a disk in `dir`, with fast Raft timings; `clock` is
/// its physical clock.
fn host(
    dir: &TempDir,
    id: NodeId,
    voters: &[NodeId],
    election_ms: u64,
    probe_ms: u64,
    clock: &PhysicalClockFn,
) -> Host<TimedDisk<FsDisk>, CommandLog> {
    let raft = RaftConfig {
        heartbeat_interval: Duration::from_millis(probe_ms),
        election_timeout_min: Duration::from_millis(election_ms),
        election_timeout_max: Duration::from_millis(election_ms * 2),
        ..RaftConfig::default()
    };
    let config = HostConfig {
        node: NodeConfig { raft, ..NodeConfig::default() },
        max_offset_ns: MAX_OFFSET_NS,
        clock_probe_interval_ns: probe_ms * NS_PER_MS,
        snapshot_every_entries: u64::MAX,
    };
    let groups =
        vec![GroupSpec { group: G1, voters: voters.to_vec(), machine: CommandLog::default() }];
    let directory = Directory::new(vec![(G1, voters.to_vec())]);
    let disk = TimedDisk::new(FsDisk::open(dir.0.join(format!("n{}", id.0))).unwrap());
    Host::open(id, config, groups, directory, disk, DetRng::new(id.0), 0, clock())
        .expect("a fresh host opens")
}

/// Starts nodes `ids` on loopback (group 1's voters are `voters`), each knowing every other's
/// address; node `i` reads `clocks[i]`.
async fn start_nodes(
    dir: &TempDir,
    ca: &ClusterCa,
    voters: &[NodeId],
    ids: &[NodeId],
    clocks: &[PhysicalClockFn],
    election_ms: u64,
    probe_ms: u64,
) -> Vec<TestNode> {
    let mut started = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        let (handle, calls) = ShellHandle::<Request, Response>::channel();
        let config = TransportConfig {
            listen_addr: loopback(),
            identity: ca.issue_node(id).unwrap(),
            peers: BTreeMap::new(),
            limits: Default::default(),
        };
        let (endpoint, inbound) = QuicEndpoint::bind(config, handle.clone().rpc_handler()).unwrap();
        let origin = Instant::now();
        let host = host(dir, id, voters, election_ms, probe_ms, &clocks[i]);
        started.push((id, endpoint, inbound, calls, handle, host, origin));
    }
    let addrs: Vec<(NodeId, SocketAddr)> =
        started.iter().map(|s| (s.0, s.1.local_addr().unwrap())).collect();
    let mut nodes = Vec::new();
    for (i, (id, endpoint, inbound, calls, handle, host, origin)) in started.into_iter().enumerate()
    {
        for &(peer, addr) in &addrs {
            if peer != id {
                endpoint.add_peer(peer, addr);
            }
        }
        let peers = QuicPeers::new(endpoint.clone());
        let shell = NodeShell::new(host, peers, clocks[i].clone(), origin);
        let thread = shell.spawn(inbound, calls).unwrap();
        nodes.push(TestNode { id, thread, endpoint, handle });
    }
    nodes
}

fn system_clock() -> PhysicalClockFn {
    Arc::new(wall_clock_ns)
}

/// HLC-6 end to end: each host probes its peers' physical clocks over the node stream
/// (`ClockProbe` / `ClockEcho`, measured before the HLC-3 check). A node whose clock is 500 ms
/// ahead — beyond the tolerated 0.8 × 250 = 200 ms, and so far that HLC-3 makes its peers
/// refuse its Raft traffic — finds both peers far away and its shell stops with the reason;
/// the two healthy nodes each see one far peer of two, not a majority, carry on, and elect a
/// leader. (The margin is wide so that a slow round trip on a loaded machine, whose half is
/// the measurement's uncertainty, cannot blur the verdict.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hlc_6_a_node_whose_clock_is_off_from_the_majority_stops_and_the_others_carry_on() {
    // Phase 1: three nodes; n3's clock reads 500 ms ahead.
    let ca = ClusterCa::generate().unwrap();
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let ahead: PhysicalClockFn = Arc::new(|| wall_clock_ns() + 500 * NS_PER_MS);
    let clocks = [system_clock(), system_clock(), ahead];
    let dir = TempDir::new("decree-shell-hlc6");
    let mut nodes = start_nodes(&dir, &ca, &ids, &ids, &clocks, 300, 50).await;

    // Phase 2: n3's shell stops on its own, saying why.
    let n3 = nodes.pop().unwrap();
    let mut n3_thread = n3.thread;
    let stopped = tokio::time::timeout(Duration::from_secs(20), n3_thread.finished())
        .await
        .expect("n3 stops within 20 s");
    match stopped {
        Err(ShellError::Fatal(why)) => assert!(why.to_string().contains("HLC-6"), "{why}"),
        other => panic!("n3 must stop on HLC-6, got {other:?}"),
    }

    // Phase 3: n1 and n2 carry on: their shells run, and one of them leads group 1.
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        let mut leader = None;
        for n in &nodes {
            let s = n.status().await;
            if s.groups.iter().any(|g| g.group == G1 && g.is_leader) {
                leader = Some(n.id);
            }
        }
        if let Some(l) = leader {
            break l;
        }
        assert!(Instant::now() < deadline, "no leader among n1 and n2");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(leader == NodeId(1) || leader == NodeId(2));
    for n in &mut nodes {
        let still = tokio::time::timeout(Duration::from_millis(200), n.thread.finished()).await;
        assert!(still.is_err(), "{} must keep running, got {still:?}", n.id);
    }
    n3.endpoint.close().await;
    for n in nodes {
        n.endpoint.close().await;
    }
}

/// A peer's envelope is accepted only from the node its certificate names, on the stream its
/// kind belongs on: a vote request for a much higher term, claimed by n3's certificate to come
/// from n1, leaves n2's term alone (counted as refused by the host); so do garbage and a batch
/// on a group's stream (counted as refused by the shell); the same request honestly from n3
/// moves n2 to that term — the refusals were not for any other reason, and the node kept
/// serving the same stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_claiming_another_nodes_id_is_refused_and_the_node_keeps_serving() {
    // Phase 1: n2 runs alone (voters n1..n3, so it never elects itself); n3 is a bare endpoint
    // with n3's certificate.
    let ca = ClusterCa::generate().unwrap();
    let voters = [NodeId(1), NodeId(2), NodeId(3)];
    let dir = TempDir::new("decree-shell-sender");
    let mut nodes = start_nodes(&dir, &ca, &voters, &[NodeId(2)], &[system_clock()], 300, 50).await;
    let n2 = nodes.pop().unwrap();
    let (n3, _inbound) = QuicEndpoint::bind(
        TransportConfig {
            listen_addr: loopback(),
            identity: ca.issue_node(NodeId(3)).unwrap(),
            peers: BTreeMap::new(),
            limits: Default::default(),
        },
        |_from: Peer, _body: Vec<u8>| async {
            Err(HandlerError::Refused { code: 0, message: "no RPC here".into() })
        },
    )
    .unwrap();
    n3.add_peer(NodeId(2), n2.endpoint.local_addr().unwrap());
    let term_before = n2.term().await;
    let vote = |from: u64| -> Vec<u8> {
        let envelope: LogEnvelope = Envelope {
            from: NodeId(from),
            group: NODE_GROUP,
            sender_clock: HlcTimestamp::new(wall_clock_ns(), 0),
            payload: Payload::RaftBatch(vec![(
                G1,
                Message::RequestVote {
                    term: Term(100),
                    last_log_index: LogIndex(1_000),
                    last_log_term: Term(99),
                    transfer: false,
                },
            )]),
        };
        encode_body_of(&envelope).unwrap()
    };

    // Phase 2: the forged sender, garbage, and a batch on a group stream: no effect on the
    // term; the shell counts the two it refuses itself.
    n3.send(NodeId(2), NODE_GROUP, vote(1)).unwrap();
    n3.send(NodeId(2), NODE_GROUP, vec![0xff; 16]).unwrap();
    let misplaced: LogEnvelope = Envelope {
        from: NodeId(3),
        group: G1,
        sender_clock: HlcTimestamp::new(wall_clock_ns(), 0),
        payload: Payload::RaftBatch(vec![]),
    };
    n3.send(NodeId(2), G1, encode_body_of(&misplaced).unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while n2.status().await.counters.refused_in < 2 {
        assert!(Instant::now() < deadline, "the shell never refused the two bad frames");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let term = n2.term().await;
    assert!(term < Term(100), "a forged vote request moved the term to {term:?}");
    let counters = n2.status().await.counters;
    assert_eq!(counters.refused_in, 2, "garbage and the misplaced batch, refused by the shell");
    assert_eq!(counters.host_refused, 1, "the forged sender, refused by the host");

    // Phase 3: the same request from n3 as itself is accepted: n2 moves to term 100.
    n3.send(NodeId(2), NODE_GROUP, vote(3)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while n2.term().await != Term(100) {
        assert!(Instant::now() < deadline, "the honest vote request never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(term_before < Term(100));
    n3.close().await;
    n2.endpoint.close().await;
}

/// The client protocol through the endpoint: a node answers its own client's status, an append
/// once applied, a request for a group it does not host with the host's refusal — never by
/// hanging — and a replica read with its machine's state; it refuses the client protocol to
/// another node's certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reach_the_shell_and_nodes_may_not_use_the_client_protocol() {
    let ca = ClusterCa::generate().unwrap();
    let dir = TempDir::new("decree-shell-clients");
    let mut nodes =
        start_nodes(&dir, &ca, &[NodeId(1)], &[NodeId(1)], &[system_clock()], 300, 50).await;
    let n1 = nodes.pop().unwrap();
    let addr = n1.endpoint.local_addr().unwrap();
    let peers: BTreeMap<NodeId, SocketAddr> = [(NodeId(1), addr)].into();

    // Phase 1: a client gets the status, naming the node.
    let client =
        QuicEndpoint::client(ca.issue_client("tester").unwrap(), peers.clone(), Default::default())
            .unwrap();
    let body =
        decree_runtime::node_shell::rpc::encode_request::<Request>(&ClientRequest::Status).unwrap();
    let answer = client.request(NodeId(1), body.clone(), Duration::from_secs(5)).await.unwrap();
    match decree_runtime::node_shell::rpc::decode_response::<Response>(&answer).unwrap() {
        ClientReply::Status(s) => assert_eq!(s.node, NodeId(1)),
        other => panic!("status answered {other:?}"),
    }

    // Phase 2: a machine's request goes through the host and comes back on its stream: an
    // append on the single-voter group is answered once applied; a request for a group the
    // node does not host is refused by the host, not left hanging.
    let call = |group: GroupId, request: Request| {
        let body = decree_runtime::node_shell::rpc::encode_request(&ClientRequest::Machine {
            group,
            sender_clock: HlcTimestamp::new(wall_clock_ns(), 0),
            request,
        })
        .unwrap();
        let client = &client;
        async move {
            let answer = client.request(NodeId(1), body, Duration::from_secs(5)).await.unwrap();
            decree_runtime::node_shell::rpc::decode_response::<Response>(&answer).unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match call(G1, Request::Append(b"hello".to_vec())).await {
            ClientReply::Machine { response: Response::Appended { index, .. }, .. } => {
                assert!(index > LogIndex(0));
                break;
            }
            // Not elected yet.
            ClientReply::Machine { response: Response::NotLeader { .. }, .. } => {}
            other => panic!("an append answered {other:?}"),
        }
        assert!(Instant::now() < deadline, "never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match call(GroupId(9), Request::Read).await {
        ClientReply::Error { error: ErrorResponse::UnknownGroup { group }, .. } => {
            assert_eq!(group, GroupId(9))
        }
        other => panic!("a request for an unknown group answered {other:?}"),
    }

    // Phase 3: the replica's state, as its machine encodes a snapshot, holds the append; a
    // group the node does not host has none.
    let replica = |group: GroupId| {
        let body = decree_runtime::node_shell::rpc::encode_request::<Request>(
            &ClientRequest::ReplicaState { group },
        )
        .unwrap();
        let client = &client;
        async move {
            let answer = client.request(NodeId(1), body, Duration::from_secs(5)).await.unwrap();
            decree_runtime::node_shell::rpc::decode_response::<Response>(&answer).unwrap()
        }
    };
    match replica(G1).await {
        ClientReply::ReplicaState { group, applied, state } => {
            assert_eq!(group, G1);
            let log = CommandLog::decode_snapshot(&state).unwrap();
            let commands: Vec<&[u8]> = log.commands().iter().map(|(_, c)| c.as_slice()).collect();
            assert_eq!(commands, vec![&b"hello"[..]]);
            assert!(applied >= log.commands()[0].0);
        }
        other => panic!("a replica read answered {other:?}"),
    }
    assert_eq!(replica(GroupId(9)).await, ClientReply::Refused(Refusal::UnknownGroup(GroupId(9))));

    // Phase 4: another node's certificate is refused with a code, not served.
    let (other_node, _inbound) = QuicEndpoint::bind(
        TransportConfig {
            listen_addr: loopback(),
            identity: ca.issue_node(NodeId(9)).unwrap(),
            peers,
            limits: Default::default(),
        },
        |_from: Peer, _body: Vec<u8>| async {
            Err(HandlerError::Refused { code: 0, message: "no RPC here".into() })
        },
    )
    .unwrap();
    let refused = other_node.request(NodeId(1), body, Duration::from_secs(5)).await;
    assert!(
        matches!(refused, Err(decree_runtime::RpcError::PeerError { code: 1, .. })),
        "{refused:?}"
    );
    client.close().await;
    other_node.close().await;
    n1.endpoint.close().await;
}
