//! Bounds at the edge of the transport, over real loopback QUIC with mutual TLS: what one
//! authenticated peer can make a node hold (bytes of unfinished requests per connection and
//! per certificate identity, connections per identity), that a request body is exactly one
//! message, and that refusals cost a bounded number of log lines. Each test reads as phases,
//! and in each a well-behaved client keeps being served.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use decree_proto::frame::{frame_body, FRAME_BYTES_MAX, PROTOCOL_VERSION};
use decree_runtime::node_shell::rpc::{
    decode_request, decode_response, encode_request, encode_response, ClientReply, ClientRequest,
    DecodeError, NodeStatus,
};
use decree_runtime::tls::{quic_client_config, quic_server_config};
use decree_runtime::transport::HandlerFuture;
use decree_runtime::wire::{close_code, error_response};
use decree_runtime::{
    ClusterCa, HandlerError, Identity, Peer, QuicEndpoint, RpcError, StreamErrorCode,
    TransportConfig, TransportLimits, TransportStats,
};
use decree_types::limits::{
    CONNECTIONS_PER_IDENTITY_MAX, REQUEST_BYTES_PER_CONNECTION_MAX, REQUEST_BYTES_PER_IDENTITY_MAX,
};
use decree_types::{GroupId, NodeId};
use tracing_subscriber::layer::SubscriberExt;

const TIMEOUT: Duration = Duration::from_secs(5);

/// The largest body a frame announces.
const BODY_BYTES_MAX: usize = FRAME_BYTES_MAX - 2;

fn echo(_from: Peer, body: Vec<u8>) -> HandlerFuture {
    Box::pin(async move { Ok(body) })
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Node 1, answering with `handler`.
fn server(
    ca: &ClusterCa,
    limits: TransportLimits,
    handler: fn(Peer, Vec<u8>) -> HandlerFuture,
) -> QuicEndpoint {
    let config = TransportConfig {
        listen_addr: loopback(),
        identity: ca.issue_node(NodeId(1)).unwrap(),
        peers: BTreeMap::new(),
        limits,
    };
    QuicEndpoint::bind(config, handler).unwrap().0
}

/// A client transport of `ca` named `name`, knowing node 1.
fn client(ca: &ClusterCa, name: &str, node: &QuicEndpoint) -> QuicEndpoint {
    let peers = BTreeMap::from([(NodeId(1), node.local_addr().unwrap())]);
    QuicEndpoint::client(ca.issue_client(name).unwrap(), peers, TransportLimits::default()).unwrap()
}

/// A raw quinn connection to node 1 presenting `identity`: lets a test write arbitrary bytes.
async fn raw_connection(identity: &Identity, addr: SocketAddr) -> quinn::Connection {
    let mut endpoint = quinn::Endpoint::client(loopback()).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(quic_client_config(identity).unwrap()));
    endpoint.set_default_client_config(config);
    endpoint.connect(addr, "node-1").unwrap().await.unwrap()
}

/// A frame header announcing a body of `body_bytes`.
fn header(body_bytes: usize) -> Vec<u8> {
    let mut h = ((body_bytes + 2) as u32).to_le_bytes().to_vec();
    h.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    h
}

/// Opens a request stream announcing the largest body and sends only its first KiB, leaving
/// the stream open: a request the node has to wait for.
async fn unfinished_request(conn: &quinn::Connection) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(&header(BODY_BYTES_MAX)).await.unwrap();
    send.write_all(&[0u8; 1024]).await.unwrap();
    (send, recv)
}

/// Of `streams`, how many the node reset with `code` and how many it is still waiting on.
async fn refused_and_waiting(
    streams: &mut [(quinn::SendStream, quinn::RecvStream)],
    code: StreamErrorCode,
) -> (usize, usize) {
    let (mut refused, mut waiting) = (0, 0);
    for (_, recv) in streams.iter_mut() {
        match tokio::time::timeout(Duration::from_millis(200), recv.read_to_end(1024)).await {
            Err(_) => waiting += 1,
            Ok(Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(c)))) => {
                assert_eq!(c, code.varint());
                refused += 1;
            }
            Ok(other) => panic!("expected a reset or no answer yet, got {other:?}"),
        }
    }
    (refused, waiting)
}

/// Polls the node's stats until `done` holds (at most `TIMEOUT`), and returns them.
async fn stats_until(
    node: &QuicEndpoint,
    done: impl Fn(&TransportStats) -> bool,
) -> TransportStats {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let stats = node.stats();
        if done(&stats) || Instant::now() > deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One request from a well-behaved client, answered in full.
async fn polite_request(polite: &QuicEndpoint) {
    let body = vec![7u8; 1024 * 1024];
    assert_eq!(polite.request(NodeId(1), body.clone(), TIMEOUT).await.unwrap(), body);
}

#[tokio::test]
async fn unfinished_large_requests_are_refused_beyond_the_connection_and_identity_budgets() {
    count_warnings();
    let ca = ClusterCa::generate().unwrap();
    let node = server(&ca, TransportLimits::default(), echo);
    let addr = node.local_addr().unwrap();
    let greedy = ca.issue_client("greedy").unwrap();
    let polite = client(&ca, "polite", &node);
    let per_connection = REQUEST_BYTES_PER_CONNECTION_MAX / BODY_BYTES_MAX;
    let per_identity = REQUEST_BYTES_PER_IDENTITY_MAX / BODY_BYTES_MAX;
    assert_eq!((per_connection, per_identity), (4, 8), "the limits this test was written for");

    // Phase 1: one connection opens 10 requests that each announce 16 MiB and send 1 KiB.
    // The node waits on as many as fit the connection's budget and refuses the rest before
    // reading their bodies.
    let first = raw_connection(&greedy, addr).await;
    let mut first_streams = Vec::new();
    for _ in 0..10 {
        first_streams.push(unfinished_request(&first).await);
    }
    let stats = stats_until(&node, |s| s.refused_over_budget == 6).await;
    assert_eq!(stats.refused_over_budget, 6);
    assert_eq!(stats.request_bytes_held, (per_connection * BODY_BYTES_MAX) as u64);
    let code = StreamErrorCode::RequestBudgetExceeded;
    assert_eq!(refused_and_waiting(&mut first_streams, code).await, (6, per_connection));
    polite_request(&polite).await;

    // Phase 2: a second connection of the same identity gets a connection budget of its own,
    // and together they fill the identity's budget.
    let second = raw_connection(&greedy, addr).await;
    let mut second_streams = Vec::new();
    for _ in 0..10 {
        second_streams.push(unfinished_request(&second).await);
    }
    let stats = stats_until(&node, |s| s.refused_over_budget == 12).await;
    assert_eq!(stats.refused_over_budget, 12);
    assert_eq!(stats.request_bytes_held, (per_identity * BODY_BYTES_MAX) as u64);
    assert_eq!(refused_and_waiting(&mut second_streams, code).await, (6, per_connection));

    // Phase 3: a third connection, whose own budget is untouched, is refused by the
    // identity's: more connections buy no more memory.
    let third = raw_connection(&greedy, addr).await;
    let mut third_streams =
        vec![unfinished_request(&third).await, unfinished_request(&third).await];
    let stats = stats_until(&node, |s| s.refused_over_budget == 14).await;
    assert_eq!(stats.refused_over_budget, 14);
    assert_eq!(refused_and_waiting(&mut third_streams, code).await, (2, 0));

    // Phase 4: what the node held never went past the identity's budget, and another
    // identity is still served in full.
    let stats = node.stats();
    assert_eq!(stats.request_bytes_held, (per_identity * BODY_BYTES_MAX) as u64);
    assert!(stats.request_bytes_held_peak <= REQUEST_BYTES_PER_IDENTITY_MAX as u64);
    assert_eq!(stats.refused_streams, 14);
    polite_request(&polite).await;

    // Phase 5: the greedy client gives up on one stream and closes a connection; every byte
    // charged for them is given back, and the identity can make requests again.
    let (mut send, _) = first_streams.remove(0);
    send.reset(quinn::VarInt::from_u32(0)).unwrap();
    let stats = stats_until(&node, |s| s.request_bytes_held == (7 * BODY_BYTES_MAX) as u64).await;
    assert_eq!(stats.request_bytes_held, (7 * BODY_BYTES_MAX) as u64);
    second.close(quinn::VarInt::from_u32(0), b"done");
    let stats = stats_until(&node, |s| s.request_bytes_held == (3 * BODY_BYTES_MAX) as u64).await;
    assert_eq!(stats.request_bytes_held, (3 * BODY_BYTES_MAX) as u64);
    let (mut send, mut recv) = third.open_bi().await.unwrap();
    send.write_all(&header(5)).await.unwrap();
    send.write_all(b"hello").await.unwrap();
    send.finish().unwrap();
    let answer = tokio::time::timeout(TIMEOUT, recv.read_to_end(1024)).await.unwrap().unwrap();
    assert_eq!(&answer[answer.len() - 5..], b"hello");
    first.close(quinn::VarInt::from_u32(0), b"done");
    third.close(quinn::VarInt::from_u32(0), b"done");
    let stats = stats_until(&node, |s| s.request_bytes_held == 0).await;
    assert_eq!(stats.request_bytes_held, 0);
    polite_request(&polite).await;
    node.close().await;
}

/// Echoes the body; a body starting with "hold" is answered after 500 ms.
fn slow_echo(_from: Peer, body: Vec<u8>) -> HandlerFuture {
    Box::pin(async move {
        if body.starts_with(b"hold") {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(body)
    })
}

#[tokio::test]
async fn charges_are_given_back_when_a_request_times_out_and_when_its_handler_returns() {
    count_warnings();
    let ca = ClusterCa::generate().unwrap();
    let limits = TransportLimits { request_read_timeout_ms: 300, ..TransportLimits::default() };
    let node = server(&ca, limits, slow_echo);
    let raw = raw_connection(&ca.issue_client("slow").unwrap(), node.local_addr().unwrap()).await;
    let caller = client(&ca, "caller", &node);

    // Phase 1: an unfinished request holds its announced length until the read timeout resets
    // it, then nothing.
    let (_send, mut recv) = unfinished_request(&raw).await;
    let stats = stats_until(&node, |s| s.request_bytes_held == BODY_BYTES_MAX as u64).await;
    assert_eq!(stats.request_bytes_held, BODY_BYTES_MAX as u64);
    let read = tokio::time::timeout(TIMEOUT, recv.read_to_end(1024)).await.unwrap();
    let Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) = read else {
        panic!("expected a reset, got {read:?}");
    };
    assert_eq!(code, StreamErrorCode::RequestTooSlow.varint());
    assert_eq!(stats_until(&node, |s| s.request_bytes_held == 0).await.request_bytes_held, 0);

    // Phase 2: a complete request stays charged while its handler runs and is given back
    // once the handler has answered.
    let mut body = b"hold".to_vec();
    body.resize(1024 * 1024, 1);
    let request = tokio::spawn({
        let (caller, body) = (caller.clone(), body.clone());
        async move { caller.request(NodeId(1), body, TIMEOUT).await }
    });
    let stats = stats_until(&node, |s| s.request_bytes_held == body.len() as u64).await;
    assert_eq!(stats.request_bytes_held, body.len() as u64);
    assert_eq!(request.await.unwrap().unwrap(), body);
    assert_eq!(stats_until(&node, |s| s.request_bytes_held == 0).await.request_bytes_held, 0);
    node.close().await;
}

#[tokio::test]
async fn connections_beyond_the_identity_cap_are_refused_while_other_identities_connect() {
    count_warnings();
    let ca = ClusterCa::generate().unwrap();
    let node = server(&ca, TransportLimits::default(), echo);
    let addr = node.local_addr().unwrap();
    let many = ca.issue_client("many").unwrap();
    let polite = client(&ca, "polite", &node);

    // Phase 1: one identity opens as many connections as it may; each is served.
    let mut conns = Vec::new();
    for _ in 0..CONNECTIONS_PER_IDENTITY_MAX {
        let conn = raw_connection(&many, addr).await;
        assert_eq!(echo_on(&conn, b"in").await, b"in");
        conns.push(conn);
    }

    // Phase 2: one more finishes the handshake and is closed at once with its own code.
    let extra = raw_connection(&many, addr).await;
    let closed = tokio::time::timeout(TIMEOUT, extra.closed()).await.unwrap();
    let quinn::ConnectionError::ApplicationClosed(close) = closed else {
        panic!("expected an application close, got {closed:?}");
    };
    assert_eq!(close.error_code, quinn::VarInt::from_u32(close_code::TOO_MANY_CONNECTIONS));
    assert_eq!(node.stats().refused_connections, 1);

    // Phase 3: other identities, a client and a node, still connect and are served.
    polite_request(&polite).await;
    let other = raw_connection(&ca.issue_node(NodeId(2)).unwrap(), addr).await;
    assert_eq!(echo_on(&other, b"node").await, b"node");

    // Phase 4: once one of its connections is closed, the identity may open another.
    conns.pop().unwrap().close(quinn::VarInt::from_u32(0), b"done");
    let deadline = Instant::now() + TIMEOUT;
    let again = loop {
        let conn = raw_connection(&many, addr).await;
        match tokio::time::timeout(Duration::from_millis(200), conn.closed()).await {
            Err(_) => break conn,
            Ok(_) if Instant::now() < deadline => continue,
            Ok(e) => panic!("the identity was not given its slot back: {e:?}"),
        }
    };
    assert_eq!(echo_on(&again, b"back").await, b"back");
    node.close().await;
}

/// Sends `body` as one request on a fresh stream of `conn` and returns the answer's body.
async fn echo_on(conn: &quinn::Connection, body: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&header(body.len())).await.unwrap();
    send.write_all(body).await.unwrap();
    send.finish().unwrap();
    let answer = tokio::time::timeout(TIMEOUT, recv.read_to_end(1024)).await.unwrap().unwrap();
    // The answer is a frame header, then the `Ok` tag, then the body.
    answer[7..].to_vec()
}

/// Answers like a node shell: undecodable requests are refused; a `ReplicaState` of group 1 is
/// answered with one byte more than the response.
fn log_node(_from: Peer, body: Vec<u8>) -> HandlerFuture {
    Box::pin(async move {
        let request = decode_request::<Vec<u8>>(&body)
            .map_err(|e| HandlerError::Undecodable { reason: e.to_string() })?;
        let mut answer =
            encode_response::<Vec<u8>>(&ClientReply::Status(NodeStatus::default())).unwrap();
        if request == (ClientRequest::ReplicaState { group: GroupId(1) }) {
            answer.push(0);
        }
        Ok(answer)
    })
}

#[tokio::test]
async fn a_body_with_trailing_bytes_is_an_error_both_ways() {
    count_warnings();
    let ca = ClusterCa::generate().unwrap();
    let node = server(&ca, TransportLimits::default(), log_node);
    let caller = client(&ca, "caller", &node);

    // Phase 1: a request that is exactly one message is answered.
    let answer = caller
        .request(NodeId(1), encode_request::<Vec<u8>>(&ClientRequest::Status).unwrap(), TIMEOUT)
        .await;
    let status = ClientReply::<Vec<u8>>::Status(NodeStatus::default());
    assert_eq!(decode_response(&answer.unwrap()).unwrap(), status);

    // Phase 2: the same request followed by one byte is refused as undecodable.
    let mut trailing = encode_request::<Vec<u8>>(&ClientRequest::Status).unwrap();
    trailing.push(0);
    assert_eq!(
        caller.request(NodeId(1), trailing, TIMEOUT).await,
        Err(RpcError::StreamReset {
            raw_code: StreamErrorCode::BodyUndecodable as u64,
            code: Some(StreamErrorCode::BodyUndecodable)
        })
    );
    assert_eq!(node.stats().refused_streams, 1);

    // Phase 3: a response followed by one byte is refused by the client's decoder.
    let read =
        encode_request::<Vec<u8>>(&ClientRequest::ReplicaState { group: GroupId(1) }).unwrap();
    let answer = caller.request(NodeId(1), read, TIMEOUT).await.unwrap();
    assert_eq!(decode_response::<Vec<u8>>(&answer), Err(DecodeError::TrailingBytes { count: 1 }));

    // Phase 4: the node still serves the caller.
    let answer = caller
        .request(NodeId(1), encode_request::<Vec<u8>>(&ClientRequest::Status).unwrap(), TIMEOUT)
        .await;
    assert_eq!(decode_response(&answer.unwrap()).unwrap(), status);
    node.close().await;
}

/// A node 1 that answers every request with `answer`, written raw: lets a test send the
/// responses a well-behaved transport never writes.
fn raw_server(ca: &ClusterCa, answer: Vec<u8>) -> quinn::Endpoint {
    let identity = ca.issue_node(NodeId(1)).unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(quic_server_config(&identity).unwrap()));
    let endpoint = quinn::Endpoint::server(config, loopback()).unwrap();
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let conn = incoming.await.unwrap();
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let _ = recv.read_to_end(1024).await;
                    let _ = send.write_all(&answer).await;
                    let _ = send.finish();
                }
            });
        }
    });
    endpoint
}

#[tokio::test]
async fn a_response_that_is_not_exactly_one_answer_is_refused_by_the_requester() {
    count_warnings();
    let ca = ClusterCa::generate().unwrap();
    let mut bad_utf8 = error_response(7, "x");
    let last = bad_utf8.len() - 1;
    bad_utf8[last] = 0xff;
    let mut trailing = frame_body(b"\x00ok").unwrap();
    trailing.push(0);
    let cases: [(&str, Vec<u8>); 3] = [
        ("error message not UTF-8", bad_utf8),
        ("error code cut short", frame_body(b"\x01\x07\x00").unwrap()),
        ("bytes after the response frame", trailing),
    ];
    for (name, answer) in cases {
        // Phase 1: a node answers with a malformed response.
        let node = raw_server(&ca, answer);
        let peers = BTreeMap::from([(NodeId(1), node.local_addr().unwrap())]);
        let caller = QuicEndpoint::client(
            ca.issue_client("caller").unwrap(),
            peers,
            TransportLimits::default(),
        )
        .unwrap();

        // Phase 2: the requester gets a typed error, not a message.
        let got = caller.request(NodeId(1), b"hi".to_vec(), TIMEOUT).await;
        assert!(
            matches!(got, Err(RpcError::Frame { code: StreamErrorCode::FrameMalformed, .. })),
            "{name}: {got:?}"
        );
        node.close(quinn::VarInt::from_u32(0), b"done");
    }
}

thread_local! {
    /// `WARN` events on this thread, and the sum of the `suppressed` field they carry.
    static WARNINGS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Counts each thread's `WARN` events (every test runs on a current-thread runtime, so the
/// node's tasks log on the test's thread). Installed as the process-wide subscriber: a
/// subscriber set per thread can miss events of a log site first reached by another test's
/// thread, which has none.
struct WarnCounter;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for WarnCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() == tracing::Level::WARN {
            let mut suppressed = SuppressedField(0);
            event.record(&mut suppressed);
            WARNINGS.with(|w| {
                let (lines, total) = w.get();
                w.set((lines + 1, total + suppressed.0));
            });
        }
    }
}

struct SuppressedField(u64);

impl tracing::field::Visit for SuppressedField {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "suppressed" {
            self.0 = value;
        }
    }

    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

/// Starts counting this thread's warnings from zero. Every test calls it first, so the counting
/// subscriber is in place before any log site is reached.
fn count_warnings() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(WarnCounter);
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
    WARNINGS.with(|w| w.set((0, 0)));
}

/// (`WARN` lines, sum of their `suppressed` fields) on this thread since `count_warnings`.
fn warnings() -> (u64, u64) {
    WARNINGS.with(Cell::get)
}

/// Opens a request stream holding two bytes that cannot be a frame header.
async fn bad_request(conn: quinn::Connection) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    // The node may reset before the write lands; the read below sees the reset either way.
    let _ = send.write_all(b"\x01\x02").await;
    let _ = send.finish();
    let read = tokio::time::timeout(TIMEOUT, recv.read_to_end(1024)).await.unwrap();
    let Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) = read else {
        panic!("expected a reset, got {read:?}");
    };
    assert_eq!(code, StreamErrorCode::FrameMalformed.varint());
}

#[tokio::test]
async fn a_thousand_bad_streams_write_a_bounded_number_of_warnings() {
    count_warnings();
    let ca = ClusterCa::generate().unwrap();
    let node = server(&ca, TransportLimits::default(), echo);
    let noisy =
        raw_connection(&ca.issue_client("noisy").unwrap(), node.local_addr().unwrap()).await;
    let polite = client(&ca, "polite", &node);

    // Phase 1: 1,000 malformed requests, 100 at a time, while a well-behaved client keeps
    // being answered between the batches.
    let started = Instant::now();
    for _ in 0..10 {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..100 {
            batch.spawn(bad_request(noisy.clone()));
        }
        while let Some(done) = batch.join_next().await {
            done.unwrap();
        }
        polite_request(&polite).await;
    }
    let elapsed = started.elapsed();

    // Phase 2: every refusal is counted, but the log got at most one line per second of the
    // flood (plus the first), and the rest were counted as left out.
    let stats = node.stats();
    assert_eq!(stats.refused_streams, 1_000);
    assert_eq!(stats.refusal_logs_written + stats.refusal_logs_suppressed, 1_000);
    let (lines, _) = warnings();
    assert_eq!(lines, stats.refusal_logs_written);
    assert!(lines >= 1);
    assert!(lines <= 2 + elapsed.as_secs(), "{lines} warnings in {elapsed:?}");

    // Phase 3: after a quiet second, the next refusal is logged with the number left out
    // since the last line, so the lines account for every refusal.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    bad_request(noisy.clone()).await;
    let stats = node.stats();
    assert_eq!(stats.refused_streams, 1_001);
    let (lines, suppressed) = warnings();
    assert_eq!(lines, stats.refusal_logs_written);
    assert_eq!(suppressed + lines, 1_001);
    polite_request(&polite).await;
    node.close().await;
}
