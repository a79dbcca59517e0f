//! The transport over real loopback QUIC with mutual TLS: RPC, group streams, and every kind of
//! bad input the issue names. Each test reads as phases with a comment per phase.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use decree_proto::frame::{frame_body, FRAME_BYTES_MAX, FRAME_HEADER_BYTES};
use decree_runtime::certs::{load_identity, write_dir};
use decree_runtime::tls::quic_client_config;
use decree_runtime::transport::HandlerFuture;
use decree_runtime::{
    ClusterCa, HandlerError, Identity, InboundMessage, Peer, QuicEndpoint, RpcError, SendError,
    StreamErrorCode, TransportConfig, TransportLimits,
};
use decree_types::{GroupId, NodeId};
use tokio::sync::mpsc;

mod support;
use support::count_warnings;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Echoes the body; "refuse" is refused with code 7; "undecodable" is reported undecodable;
/// "sleep" never answers in time.
fn echo(_from: Peer, body: Vec<u8>) -> HandlerFuture {
    Box::pin(async move {
        match body.as_slice() {
            b"refuse" => Err(HandlerError::Refused { code: 7, message: "no thanks".into() }),
            b"undecodable" => Err(HandlerError::Undecodable { reason: "not a message".into() }),
            b"sleep" => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(body)
            }
            _ => Ok(body),
        }
    })
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// These tests count one `WARN` per refused stream, so every refusal is logged; the per-peer
/// rate limit on those lines is tested in `edge.rs`.
fn test_limits() -> TransportLimits {
    TransportLimits {
        duplicate_close_grace_ms: 100,
        backoff_max_ms: 200,
        refusal_log_interval_ms: 0,
        ..Default::default()
    }
}

fn start(identity: Identity) -> (QuicEndpoint, mpsc::Receiver<InboundMessage>) {
    let config = TransportConfig {
        listen_addr: loopback(),
        identity,
        peers: BTreeMap::new(),
        limits: test_limits(),
    };
    QuicEndpoint::bind(config, echo).unwrap()
}

/// Two nodes of one cluster that know each other's address.
fn pair(ca: &ClusterCa) -> [(QuicEndpoint, mpsc::Receiver<InboundMessage>); 2] {
    let a = start(ca.issue_node(NodeId(1)).unwrap());
    let b = start(ca.issue_node(NodeId(2)).unwrap());
    a.0.add_peer(NodeId(2), b.0.local_addr().unwrap());
    b.0.add_peer(NodeId(1), a.0.local_addr().unwrap());
    [a, b]
}

/// A raw quinn connection to `addr` presenting `identity`: lets a test write arbitrary bytes.
async fn raw_connection(identity: &Identity, addr: SocketAddr, node: u64) -> quinn::Connection {
    let mut endpoint = quinn::Endpoint::client(loopback()).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(quic_client_config(identity).unwrap()));
    endpoint.set_default_client_config(config);
    endpoint.connect(addr, &format!("node-{node}")).unwrap().await.unwrap()
}

/// Sends one raw request on a fresh stream of `conn` and returns the response bytes or the
/// stream reset code.
async fn raw_request(conn: &quinn::Connection, bytes: &[u8]) -> Result<Vec<u8>, u64> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    // The server may reset before we finish writing; that shows up in the read below.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    match recv.read_to_end(FRAME_BYTES_MAX).await {
        Ok(bytes) => Ok(bytes),
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => Err(code.into_inner()),
        Err(e) => panic!("unexpected read error: {e}"),
    }
}

#[tokio::test]
async fn rpc_pipelines_many_requests_over_one_connection() {
    let ca = ClusterCa::generate().unwrap();
    let [(a, _), (b, _)] = pair(&ca);

    // Phase 1: 64 requests in flight at once, each answered with its own body.
    let requests = (0..64u32).map(|i| {
        let a = a.clone();
        async move { (i, a.request(NodeId(2), i.to_le_bytes().to_vec(), TIMEOUT).await) }
    });
    let mut handles = Vec::new();
    for r in requests {
        handles.push(tokio::spawn(r));
    }
    for h in handles {
        let (i, response) = h.await.unwrap();
        assert_eq!(response.unwrap(), i.to_le_bytes().to_vec());
    }

    // Phase 2: requests in the other direction reuse the same connection.
    assert_eq!(b.request(NodeId(1), b"back".to_vec(), TIMEOUT).await.unwrap(), b"back");
    assert_eq!(a.connections_to(NodeId(2)), 1);
    assert_eq!(b.connections_to(NodeId(1)), 1);
    assert_eq!(a.stats().connections_established, 1);

    // Phase 3: application refusals and timeouts are typed.
    assert_eq!(
        a.request(NodeId(2), b"refuse".to_vec(), TIMEOUT).await,
        Err(RpcError::PeerError { code: 7, message: "no thanks".into() })
    );
    assert_eq!(
        a.request(NodeId(2), b"sleep".to_vec(), Duration::from_millis(50)).await,
        Err(RpcError::Timeout { after_ms: 50 })
    );
    assert_eq!(
        a.request(NodeId(9), b"x".to_vec(), TIMEOUT).await,
        Err(RpcError::UnknownPeer(NodeId(9)))
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn handler_sees_the_caller_named_by_its_certificate() {
    let ca = ClusterCa::generate().unwrap();
    let who = |from: Peer, _body: Vec<u8>| async move { Ok(from.name().into_bytes()) };
    let config = TransportConfig {
        listen_addr: loopback(),
        identity: ca.issue_node(NodeId(1)).unwrap(),
        peers: BTreeMap::new(),
        limits: test_limits(),
    };
    let (server, _) = QuicEndpoint::bind(config, who).unwrap();
    let addr = server.local_addr().unwrap();
    let peers = BTreeMap::from([(NodeId(1), addr)]);
    let client =
        QuicEndpoint::client(ca.issue_client("admin").unwrap(), peers, test_limits()).unwrap();
    assert_eq!(client.request(NodeId(1), vec![], TIMEOUT).await.unwrap(), b"client-admin");
    let (node, _) = start(ca.issue_node(NodeId(5)).unwrap());
    node.add_peer(NodeId(1), addr);
    assert_eq!(node.request(NodeId(1), vec![], TIMEOUT).await.unwrap(), b"node-5");
    server.close().await;
}

#[tokio::test]
async fn group_messages_arrive_in_order_per_group() {
    let ca = ClusterCa::generate().unwrap();
    let [(a, _), (_b, mut b_inbound)] = pair(&ca);

    // Phase 1: interleave 500 messages on each of two groups.
    for i in 0..500u32 {
        a.send(NodeId(2), GroupId(10), i.to_le_bytes().to_vec()).unwrap();
        a.send(NodeId(2), GroupId(20), (1000 + i).to_le_bytes().to_vec()).unwrap();
    }

    // Phase 2: each group's messages come out in the order sent, tagged with sender and group.
    let mut next = BTreeMap::from([(GroupId(10), 0u32), (GroupId(20), 1000u32)]);
    for _ in 0..1000 {
        let m = tokio::time::timeout(TIMEOUT, b_inbound.recv()).await.unwrap().unwrap();
        assert_eq!(m.from, NodeId(1));
        let expected = next.get_mut(&m.group).unwrap();
        assert_eq!(m.body, expected.to_le_bytes().to_vec());
        *expected += 1;
    }
    assert_eq!(a.stats().sent_messages, 1000);
    assert_eq!(a.stats().dropped_messages, 0);
    assert_eq!(a.connections_to(NodeId(2)), 1);
    assert_eq!(a.send(NodeId(9), GroupId(1), vec![]), Err(SendError::UnknownPeer(NodeId(9))));
}

/// The node's shell sends from its own thread and then blocks in fsync. A message it queued
/// must leave at once, driven by the transport's runtime, not wait on the sender's thread:
/// otherwise a leader's appends would leave only after its own fsync instead of overlapping it
/// (Raft thesis §10.2.1).
#[test]
fn a_send_from_a_thread_that_then_blocks_leaves_at_once() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let ca = ClusterCa::generate().unwrap();
    let [(a, _), (_b, mut b_inbound)] = runtime.block_on(async { pair(&ca) });

    // Phase 1: another thread, with a runtime of its own, sends the first message to this
    // (peer, group) and then blocks that runtime for 3 s.
    let blocked = std::thread::spawn(move || {
        let own = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        own.block_on(async {
            a.send(NodeId(2), GroupId(7), b"during the fsync".to_vec()).unwrap();
            std::thread::sleep(Duration::from_secs(3));
        });
    });

    // Phase 2: the message arrives while the sender's thread is still blocked.
    let started = std::time::Instant::now();
    let m = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(2), b_inbound.recv()).await })
        .expect("delivered while the sending thread was blocked")
        .unwrap();
    assert_eq!((m.group, m.body.as_slice()), (GroupId(7), &b"during the fsync"[..]));
    assert!(started.elapsed() < Duration::from_secs(2));
    blocked.join().unwrap();
}

#[tokio::test]
async fn full_outbound_queue_drops_and_counts() {
    let ca = ClusterCa::generate().unwrap();
    let limits = TransportLimits { outbound_queue_messages: 4, ..test_limits() };
    let config = TransportConfig {
        listen_addr: loopback(),
        identity: ca.issue_node(NodeId(1)).unwrap(),
        peers: BTreeMap::from([(NodeId(2), SocketAddr::from(([127, 0, 0, 1], 9)))]),
        limits,
    };
    let (a, _) = QuicEndpoint::bind(config, echo).unwrap();

    // On this single-threaded runtime the writer cannot run between these sends, so exactly
    // the queue's capacity is accepted and the rest are dropped.
    let mut dropped = 0;
    for _ in 0..100 {
        if a.send(NodeId(2), GroupId(1), vec![0; 64]) == Err(SendError::QueueFull) {
            dropped += 1;
        }
    }
    assert_eq!(dropped, 96);
    assert_eq!(a.stats().dropped_messages, 96);
    a.close().await;
}

#[tokio::test]
async fn simultaneous_dials_settle_on_one_connection() {
    let ca = ClusterCa::generate().unwrap();
    let [(a, _), (b, _)] = pair(&ca);

    // Phase 1: both sides dial at once.
    let (ra, rb) = tokio::join!(
        a.request(NodeId(2), b"x".to_vec(), TIMEOUT),
        b.request(NodeId(1), b"y".to_vec(), TIMEOUT)
    );
    ra.unwrap();
    rb.unwrap();

    // Phase 2: after the grace period only the connection dialed by node 1 remains, and it
    // carries traffic both ways.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(a.connections_to(NodeId(2)), 1);
    assert_eq!(b.connections_to(NodeId(1)), 1);
    assert_eq!(a.request(NodeId(2), b"x".to_vec(), TIMEOUT).await.unwrap(), b"x");
    assert_eq!(b.request(NodeId(1), b"y".to_vec(), TIMEOUT).await.unwrap(), b"y");
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused_at_handshake() {
    let (warnings, _guard) = count_warnings();
    let ca = ClusterCa::generate().unwrap();
    let foreign = ClusterCa::generate().unwrap();
    let (server, _) = start(ca.issue_node(NodeId(1)).unwrap());
    let addr = server.local_addr().unwrap();
    let peers = BTreeMap::from([(NodeId(1), addr)]);

    // Phase 1: a client whose certificate comes from another CA is refused by the server.
    let intruder =
        QuicEndpoint::client(foreign.issue_client("admin").unwrap(), peers.clone(), test_limits())
            .unwrap();
    let refused = intruder.request(NodeId(1), b"hi".to_vec(), TIMEOUT).await;
    assert!(matches!(refused, Err(RpcError::Tls { peer: NodeId(1), .. })), "{refused:?}");

    // Phase 2: a node of the other CA posing as node 1 is refused by our client.
    let (impostor, _) = start(foreign.issue_node(NodeId(1)).unwrap());
    let fooled = QuicEndpoint::client(
        ca.issue_client("admin").unwrap(),
        BTreeMap::from([(NodeId(1), impostor.local_addr().unwrap())]),
        test_limits(),
    )
    .unwrap();
    let refused = fooled.request(NodeId(1), b"hi".to_vec(), TIMEOUT).await;
    assert!(matches!(refused, Err(RpcError::Tls { peer: NodeId(1), .. })), "{refused:?}");

    // Phase 3: the server logged the refusal and still serves a well-behaved client.
    let client =
        QuicEndpoint::client(ca.issue_client("ops").unwrap(), peers, test_limits()).unwrap();
    assert_eq!(client.request(NodeId(1), b"ok".to_vec(), TIMEOUT).await.unwrap(), b"ok");
    assert!(warnings.load(Ordering::SeqCst) >= 1);
    server.close().await;
}

#[tokio::test]
async fn bad_request_frames_reset_the_stream_and_the_endpoint_keeps_serving() {
    let (warnings, _guard) = count_warnings();
    let ca = ClusterCa::generate().unwrap();
    let [(a, _), (b, _)] = pair(&ca);
    let b_addr = b.local_addr().unwrap();
    let raw = raw_connection(&ca.issue_node(NodeId(3)).unwrap(), b_addr, 2).await;

    let mut oversize = ((FRAME_BYTES_MAX + 1) as u32).to_le_bytes().to_vec();
    oversize.extend_from_slice(&1u16.to_le_bytes());
    let mut unknown_version = frame_body(b"hello").unwrap();
    unknown_version[4] = 99;
    let mut trailing = frame_body(b"hello").unwrap();
    trailing.push(0);
    let cases: [(&str, Vec<u8>, StreamErrorCode); 6] = [
        (
            "garbage",
            b"\xde\xad\xbe\xef\xff\xff\xff\xff\x00".to_vec(),
            StreamErrorCode::FrameTooLarge,
        ),
        ("short garbage", b"\x01\x02".to_vec(), StreamErrorCode::FrameMalformed),
        ("oversize header", oversize, StreamErrorCode::FrameTooLarge),
        ("unknown version", unknown_version, StreamErrorCode::VersionUnsupported),
        ("bytes after the frame", trailing, StreamErrorCode::FrameMalformed),
        ("undecodable body", frame_body(b"undecodable").unwrap(), StreamErrorCode::BodyUndecodable),
    ];
    for (i, (name, bytes, code)) in cases.into_iter().enumerate() {
        // Phase 1: the bad stream is reset with its code, and a warning is logged.
        assert_eq!(raw_request(&raw, &bytes).await, Err(u64::from(code as u32)), "{name}");
        assert_eq!(warnings.load(Ordering::SeqCst), i + 1, "{name}");

        // Phase 2: the same connection still serves a good request...
        let good = raw_request(&raw, &frame_body(b"fine").unwrap()).await.unwrap();
        assert_eq!(&good[FRAME_HEADER_BYTES..], b"\x00fine", "{name}");

        // ...and so does the endpoint for its other peers.
        assert_eq!(a.request(NodeId(2), b"still".to_vec(), TIMEOUT).await.unwrap(), b"still");
    }
    assert_eq!(b.stats().refused_streams, 6);

    // Phase 3: through the transport, an undecodable body surfaces as a typed reset.
    assert_eq!(
        a.request(NodeId(2), b"undecodable".to_vec(), TIMEOUT).await,
        Err(RpcError::StreamReset {
            raw_code: StreamErrorCode::BodyUndecodable as u64,
            code: Some(StreamErrorCode::BodyUndecodable)
        })
    );
}

#[tokio::test]
async fn bad_group_stream_is_stopped_and_other_groups_flow() {
    let (warnings, _guard) = count_warnings();
    let ca = ClusterCa::generate().unwrap();
    let [(a, _), (b, mut b_inbound)] = pair(&ca);
    let raw = raw_connection(&ca.issue_node(NodeId(3)).unwrap(), b.local_addr().unwrap(), 2).await;

    // A valid group header, then a frame whose version field says 42.
    let mut bad_version = frame_body(&5u64.to_le_bytes()).unwrap();
    let second = bad_version.len();
    bad_version.extend_from_slice(&frame_body(b"m").unwrap());
    bad_version[second + 4] = 42;
    let cases: [(&str, Vec<u8>, StreamErrorCode); 3] = [
        ("garbage", vec![0xff; 32], StreamErrorCode::FrameTooLarge),
        ("no group header", frame_body(b"abc").unwrap(), StreamErrorCode::GroupHeaderInvalid),
        ("unknown version", bad_version, StreamErrorCode::VersionUnsupported),
    ];
    for (name, bytes, code) in cases {
        // Phase 1: the bad stream is stopped with its code.
        let mut send = raw.open_uni().await.unwrap();
        let _ = send.write_all(&bytes).await;
        let stopped = tokio::time::timeout(TIMEOUT, send.stopped()).await.unwrap();
        assert_eq!(stopped.unwrap(), Some(quinn::VarInt::from_u32(code as u32)), "{name}");
    }
    assert_eq!(warnings.load(Ordering::SeqCst), 3);

    // Phase 2: a well-behaved node's group messages still arrive.
    a.send(NodeId(2), GroupId(1), b"hello".to_vec()).unwrap();
    let m = tokio::time::timeout(TIMEOUT, b_inbound.recv()).await.unwrap().unwrap();
    assert_eq!(m, InboundMessage { from: NodeId(1), group: GroupId(1), body: b"hello".to_vec() });
}

#[tokio::test]
async fn stalled_request_is_reset_after_the_read_timeout() {
    let ca = ClusterCa::generate().unwrap();
    let limits = TransportLimits { request_read_timeout_ms: 100, ..test_limits() };
    let config = TransportConfig {
        listen_addr: loopback(),
        identity: ca.issue_node(NodeId(2)).unwrap(),
        peers: BTreeMap::new(),
        limits,
    };
    let (b, _) = QuicEndpoint::bind(config, echo).unwrap();
    let raw = raw_connection(&ca.issue_node(NodeId(3)).unwrap(), b.local_addr().unwrap(), 2).await;

    // Phase 1: half a frame, and the stream left open.
    let (mut send, mut recv) = raw.open_bi().await.unwrap();
    send.write_all(&frame_body(b"hello").unwrap()[..8]).await.unwrap();

    // Phase 2: the server gives up on it with its own code.
    let read = tokio::time::timeout(TIMEOUT, recv.read_to_end(1024)).await.unwrap();
    let Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) = read else {
        panic!("expected a reset, got {read:?}");
    };
    assert_eq!(code, StreamErrorCode::RequestTooSlow.varint());
}

#[tokio::test]
async fn client_may_not_open_group_streams() {
    let ca = ClusterCa::generate().unwrap();
    let (b, _) = start(ca.issue_node(NodeId(2)).unwrap());
    let raw = raw_connection(&ca.issue_client("admin").unwrap(), b.local_addr().unwrap(), 2).await;
    let mut send = raw.open_uni().await.unwrap();
    let _ = send.write_all(&frame_body(&1u64.to_le_bytes()).unwrap()).await;
    let stopped = tokio::time::timeout(TIMEOUT, send.stopped()).await.unwrap().unwrap();
    assert_eq!(stopped, Some(StreamErrorCode::NotANode.varint()));
}

#[tokio::test]
async fn next_request_reconnects_after_peer_restart() {
    let ca = ClusterCa::generate().unwrap();
    let [(a, _), (b, _)] = pair(&ca);
    let b_addr = b.local_addr().unwrap();
    assert_eq!(a.request(NodeId(2), b"1".to_vec(), TIMEOUT).await.unwrap(), b"1");

    // Phase 1: node 2 stops; requests fail with a typed error, not a hang.
    b.close().await;
    let down = a.request(NodeId(2), b"2".to_vec(), Duration::from_secs(3)).await;
    assert!(
        matches!(down, Err(RpcError::ConnectionLost { .. } | RpcError::Unreachable { .. })),
        "{down:?}"
    );

    // Phase 2: node 2 restarts on the same address with a fresh process state. The old
    // endpoint's socket is released once its last task has seen the close.
    drop(b);
    let mut restarted = None;
    for _ in 0..100 {
        let config = TransportConfig {
            listen_addr: b_addr,
            identity: ca.issue_node(NodeId(2)).unwrap(),
            peers: BTreeMap::new(),
            limits: test_limits(),
        };
        match QuicEndpoint::bind(config, echo) {
            Ok(t) => {
                restarted = Some(t);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let (b2, _) = restarted.expect("the old endpoint released its port");

    // Phase 3: after at most the back-off, the next request dials the new process.
    let mut answer = None;
    for _ in 0..50 {
        match a.request(NodeId(2), b"3".to_vec(), TIMEOUT).await {
            Ok(body) => {
                answer = Some(body);
                break;
            }
            Err(RpcError::Unreachable { .. } | RpcError::ConnectionLost { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(answer.unwrap(), b"3");
    assert_eq!(a.connections_to(NodeId(2)), 1);
    b2.close().await;
}

#[tokio::test]
async fn certificates_written_by_certs_dir_are_accepted() {
    let dir = std::env::temp_dir().join(format!("decree-transport-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_dir(&dir, &[NodeId(1)], &["admin".to_string()], &[], false).unwrap();
    let node = load_identity(&dir, &Peer::Node(NodeId(1))).unwrap();
    let admin = load_identity(&dir, &Peer::Client("admin".into())).unwrap();
    let (server, _) = start(node);
    let peers = BTreeMap::from([(NodeId(1), server.local_addr().unwrap())]);
    let client = QuicEndpoint::client(admin, peers, test_limits()).unwrap();
    assert_eq!(client.request(NodeId(1), b"hi".to_vec(), TIMEOUT).await.unwrap(), b"hi");
    server.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
