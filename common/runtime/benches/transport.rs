//! Transport benchmark: two endpoints on loopback, 64-byte payloads, mutual TLS.
//!
//! Measures, in one run on one machine:
//! 1. RPC round trip (one request at a time): decree transport vs. bare quinn ping-pong
//!    (one bidirectional stream per request, same TLS configuration, no framing);
//! 2. pipelined one-way messages per second on one stream: decree group stream vs. bare quinn
//!    (one unidirectional stream, one 64-byte write per message, no framing).
//!
//! Run with `scripts/bench.sh transport` (release build). `DECREE_BENCH_SCALE` (default 1)
//! multiplies the iteration counts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use decree_runtime::tls::{quic_client_config, quic_server_config};
use decree_runtime::transport::HandlerFuture;
use decree_runtime::{ClusterCa, Peer, QuicEndpoint, TransportConfig, TransportLimits};
use decree_types::{GroupId, NodeId};
use hdrhistogram::Histogram;

const PAYLOAD_BYTES: usize = 64;
const TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let scale: u64 =
        std::env::var("DECREE_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(scale));
}

struct Latency {
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            p50_us: h.value_at_quantile(0.50) as f64 / 1000.0,
            p99_us: h.value_at_quantile(0.99) as f64 / 1000.0,
            mean_us: h.mean() / 1000.0,
        }
    }
}

async fn run(scale: u64) {
    let rtt_requests = 20_000 * scale;
    let messages = 1_000_000 * scale;
    let ca = ClusterCa::generate().expect("CA");

    println!("payload: {PAYLOAD_BYTES} bytes; round trips: {rtt_requests}; messages: {messages}");
    let bare_rtt = bare_round_trip(&ca, rtt_requests).await;
    let decree_rtt = decree_round_trip(&ca, rtt_requests).await;
    let bare_rate = bare_pipelined(&ca, messages).await;
    let decree_rate = decree_pipelined(&ca, messages).await;

    println!();
    println!("| measurement | p50 µs | p99 µs | mean µs |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, l) in [("bare quinn round trip", &bare_rtt), ("decree RPC round trip", &decree_rtt)]
    {
        println!("| {name} | {:.1} | {:.1} | {:.1} |", l.p50_us, l.p99_us, l.mean_us);
    }
    println!();
    println!("| measurement | messages/s |");
    println!("| --- | ---: |");
    println!("| bare quinn pipelined, one stream | {:.0} |", bare_rate);
    println!("| decree group stream, one stream | {:.0} |", decree_rate);
    println!();
    let ratio = decree_rtt.p50_us / bare_rtt.p50_us;
    println!(
        "round trip p50 ratio decree/bare: {ratio:.2} (target <= 1.5): {}",
        if ratio <= 1.5 { "MET" } else { "MISSED" }
    );
    println!(
        "pipelined rate: {decree_rate:.0} msg/s (target > 300000): {}",
        if decree_rate > 300_000.0 { "MET" } else { "MISSED" }
    );
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn echo(_from: Peer, body: Vec<u8>) -> HandlerFuture {
    Box::pin(async move { Ok(body) })
}

fn node(
    ca: &ClusterCa,
    id: u64,
) -> (QuicEndpoint, tokio::sync::mpsc::Receiver<decree_runtime::InboundMessage>) {
    let config = TransportConfig {
        listen_addr: loopback(),
        identity: ca.issue_node(NodeId(id)).expect("node cert"),
        peers: BTreeMap::new(),
        limits: TransportLimits::default(),
    };
    QuicEndpoint::bind(config, echo).expect("bind")
}

async fn decree_round_trip(ca: &ClusterCa, requests: u64) -> Latency {
    let (a, _) = node(ca, 1);
    let (b, _) = node(ca, 2);
    a.add_peer(NodeId(2), b.local_addr().expect("addr"));
    let payload = vec![7u8; PAYLOAD_BYTES];
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..requests + 2_000 {
        let start = Instant::now();
        let reply = a.request(NodeId(2), payload.clone(), TIMEOUT).await.expect("rpc");
        let elapsed = start.elapsed();
        assert_eq!(reply.len(), PAYLOAD_BYTES);
        if i >= 2_000 {
            h.record(elapsed.as_nanos() as u64).expect("record");
        }
    }
    a.close().await;
    b.close().await;
    Latency::of(&h)
}

async fn decree_pipelined(ca: &ClusterCa, messages: u64) -> f64 {
    let (a, _) = node(ca, 1);
    let (b, mut inbound) = node(ca, 2);
    a.add_peer(NodeId(2), b.local_addr().expect("addr"));
    // Warm up: the connection and the group stream exist before timing starts.
    a.send_wait(NodeId(2), GroupId(1), vec![0; PAYLOAD_BYTES]).await.expect("send");
    inbound.recv().await.expect("warm-up message");

    let receiver = tokio::spawn(async move {
        let mut received = 0u64;
        while received < messages {
            let m = inbound.recv().await.expect("message");
            assert_eq!(m.body.len(), PAYLOAD_BYTES);
            received += 1;
        }
        Instant::now()
    });
    let start = Instant::now();
    for _ in 0..messages {
        a.send_wait(NodeId(2), GroupId(1), vec![7u8; PAYLOAD_BYTES]).await.expect("send");
    }
    let end = receiver.await.expect("receiver");
    let stats = a.stats();
    assert_eq!(stats.dropped_messages, 0, "benchmark lost messages");
    a.close().await;
    b.close().await;
    messages as f64 / (end - start).as_secs_f64()
}

/// Two bare quinn endpoints with the same mutual-TLS configuration as the transport.
fn bare_pair(ca: &ClusterCa) -> (quinn::Endpoint, quinn::Endpoint) {
    let server_identity = ca.issue_node(NodeId(2)).expect("cert");
    let client_identity = ca.issue_node(NodeId(1)).expect("cert");
    let server_config = quinn::ServerConfig::with_crypto(Arc::new(
        quic_server_config(&server_identity).expect("server TLS"),
    ));
    let server = quinn::Endpoint::server(server_config, loopback()).expect("bind");
    let mut client = quinn::Endpoint::client(loopback()).expect("bind");
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        quic_client_config(&client_identity).expect("client TLS"),
    )));
    (server, client)
}

async fn bare_round_trip(ca: &ClusterCa, requests: u64) -> Latency {
    let (server, client) = bare_pair(ca);
    let addr = server.local_addr().expect("addr");
    let server_task = tokio::spawn(async move {
        let conn = server.accept().await.expect("incoming").await.expect("handshake");
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            tokio::spawn(async move {
                let body = recv.read_to_end(PAYLOAD_BYTES).await.expect("read");
                send.write_all(&body).await.expect("write");
                send.finish().expect("finish");
            });
        }
    });
    let conn = client.connect(addr, "node-2").expect("connect").await.expect("handshake");
    let payload = vec![7u8; PAYLOAD_BYTES];
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..requests + 2_000 {
        let start = Instant::now();
        let (mut send, mut recv) = conn.open_bi().await.expect("open");
        send.write_all(&payload).await.expect("write");
        send.finish().expect("finish");
        let reply = recv.read_to_end(PAYLOAD_BYTES).await.expect("read");
        let elapsed = start.elapsed();
        assert_eq!(reply.len(), PAYLOAD_BYTES);
        if i >= 2_000 {
            h.record(elapsed.as_nanos() as u64).expect("record");
        }
    }
    conn.close(0u32.into(), b"done");
    server_task.abort();
    client.wait_idle().await;
    Latency::of(&h)
}

async fn bare_pipelined(ca: &ClusterCa, messages: u64) -> f64 {
    let (server, client) = bare_pair(ca);
    let addr = server.local_addr().expect("addr");
    let total_bytes = messages * PAYLOAD_BYTES as u64;
    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.expect("incoming").await.expect("handshake");
        let mut recv = conn.accept_uni().await.expect("stream");
        let mut received = 0u64;
        while received < total_bytes {
            let chunk = recv.read_chunk(64 * 1024, true).await.expect("read").expect("chunk");
            received += chunk.bytes.len() as u64;
        }
        (Instant::now(), conn)
    });
    let conn = client.connect(addr, "node-2").expect("connect").await.expect("handshake");
    let mut send = conn.open_uni().await.expect("open");
    let payload = [7u8; PAYLOAD_BYTES];
    let start = Instant::now();
    for _ in 0..messages {
        send.write_all(&payload).await.expect("write");
    }
    let (end, _server_conn) = receiver.await.expect("receiver");
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    messages as f64 / (end - start).as_secs_f64()
}
