//! The client over real QUIC with mutual TLS: a one-node "cluster" whose request handler
//! answers envelopes the way a node does, on loopback.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use decree_client::{Client, ClientConfig, ClientSettings, Error};
use decree_proto::admin::{GroupLeader, RangeMapReply};
use decree_proto::txn::{OutcomeReply, TxnOutcome, ValueReply};
use decree_proto::{decode_body, encode_body, Envelope, ErrorResponse, Payload, Request, Response};
use decree_runtime::{
    ClusterCa, HandlerError, Peer, QuicEndpoint, TransportConfig, TransportLimits,
};
use decree_types::{GroupId, HlcTimestamp, KeyRange, NodeId, Term};

const NODE: NodeId = NodeId(1);
const GROUP: GroupId = GroupId(1);
const COORDINATOR: GroupId = GroupId(100);

fn now() -> HlcTimestamp {
    let ns = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    HlcTimestamp::new(ns, 0)
}

/// Answers like a node that leads both groups: the range map, every key holding `v`, and
/// every commit committed.
async fn handle(_peer: Peer, body: Vec<u8>) -> Result<Vec<u8>, HandlerError> {
    let envelope =
        decode_body(&body).map_err(|e| HandlerError::Undecodable { reason: e.to_string() })?;
    let Payload::Request { request_id, request } = envelope.payload else {
        return Err(HandlerError::Undecodable { reason: "not a request".into() });
    };
    let leader =
        |group| GroupLeader { group, leader: Some(NODE), term: Term(1), replicas: vec![NODE] };
    let payload = match request {
        Request::FetchRangeMap(_) => Payload::Response {
            request_id,
            response: Response::RangeMap(RangeMapReply {
                version: 1,
                ranges: vec![(KeyRange::full(), GROUP)],
                coordinator_group: COORDINATOR,
                leaders: vec![leader(GROUP), leader(COORDINATOR)],
                nodes: vec![],
                coordinator_groups: vec![COORDINATOR],
            }),
        },
        Request::Get(get) => Payload::Response {
            request_id,
            response: Response::Value(ValueReply {
                value: Some(b"v".to_vec()),
                version_ts: Some(HlcTimestamp::new(get.read_ts.wall_ns / 2, 0)),
            }),
        },
        Request::CommitLocal(c) => Payload::Response {
            request_id,
            response: Response::Outcome(OutcomeReply {
                txn_id: c.txn_id,
                outcome: TxnOutcome::Committed { commit_ts: now() },
            }),
        },
        other => Payload::Error {
            in_reply_to: Some(request_id),
            error: ErrorResponse::invalid_argument(format!("not served: {}", other.kind())),
        },
    };
    let reply = Envelope { from: NODE, group: envelope.group, sender_clock: now(), payload };
    encode_body(&reply).map_err(|e| HandlerError::Undecodable { reason: e.to_string() })
}

fn start_node(ca: &ClusterCa) -> (QuicEndpoint, SocketAddr) {
    let config = TransportConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        identity: ca.issue_node(NODE).unwrap(),
        peers: BTreeMap::new(),
        limits: TransportLimits::default(),
    };
    let (transport, _inbound) = QuicEndpoint::bind(config, handle).unwrap();
    let addr = transport.local_addr().unwrap();
    (transport, addr)
}

fn quick() -> ClientSettings {
    ClientSettings {
        attempt_timeout: Duration::from_millis(500),
        operation_timeout: Duration::from_secs(2),
        ..ClientSettings::default()
    }
}

#[tokio::test]
async fn connects_reads_and_commits_over_quic() {
    let ca = ClusterCa::generate().unwrap();
    let (node, addr) = start_node(&ca);
    let config = ClientConfig::new(ca.issue_client("test").unwrap())
        .with_seed(NODE, addr)
        .with_settings(quick());
    let client = Client::connect(config).await.unwrap();
    let txn = client.begin();
    assert_eq!(txn.get("k").await, Ok(Some(b"v".to_vec())));
    txn.put("k", b"w".to_vec()).unwrap();
    let info = txn.commit().await.unwrap();
    assert_eq!(info.txn_id, txn.txn_id());
    assert!(client.now() > info.commit_ts);
    // A request the node refuses comes back as a typed error.
    let err = client.txn_status_at(info.txn_id, info.commit_ts).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    // After close, requests fail cleanly.
    client.close().await;
    let started = std::time::Instant::now();
    let err = client.begin().get("k").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(100), "no retrying once closed");
    node.close().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_a_tls_error() {
    let ca = ClusterCa::generate().unwrap();
    let (node, addr) = start_node(&ca);
    let intruder = ClusterCa::generate().unwrap().issue_client("intruder").unwrap();
    let config = ClientConfig::new(intruder).with_seed(NODE, addr).with_settings(quick());
    let err = Client::connect(config).await.unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    node.close().await;
}

#[tokio::test]
async fn no_seeds_is_a_config_error() {
    let ca = ClusterCa::generate().unwrap();
    let config = ClientConfig::new(ca.issue_client("test").unwrap());
    let err = Client::connect(config).await.unwrap_err();
    assert!(matches!(err, Error::Config(decree_client::ConfigError::NoSeeds)), "{err:?}");
}

#[tokio::test]
async fn with_a_cluster_file_the_client_starts_even_if_no_node_answers_yet() {
    let ca = ClusterCa::generate().unwrap();
    // A port nothing listens on.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let file = format!(
        "[[nodes]]\nid = 1\naddr = \"{addr}\"\n\
         [[coordinator_groups]]\nid = 100\nreplicas = [1]\n\
         [[participant_groups]]\nid = 1\nstart = \"\"\nreplicas = [1]\n"
    );
    let cluster = decree_client::ClusterFile::parse(&file, "cluster.toml".as_ref()).unwrap();
    let settings = ClientSettings {
        attempt_timeout: Duration::from_millis(100),
        operation_timeout: Duration::from_millis(300),
        ..ClientSettings::default()
    };
    let config = ClientConfig::new(ca.issue_client("test").unwrap())
        .with_cluster(cluster)
        .with_settings(settings);
    let client = Client::connect(config).await.unwrap();
    // The file's map routes the read; the node does not answer: Unavailable, a retryable
    // error, after the operation timeout.
    let err = client.begin().get("k").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }) && err.is_retryable(), "{err:?}");
    // Without a cluster file the same silence fails the connect.
    let config = ClientConfig::new(ca.issue_client("test").unwrap())
        .with_seed(NODE, addr)
        .with_settings(ClientSettings {
            attempt_timeout: Duration::from_millis(100),
            operation_timeout: Duration::from_millis(300),
            ..ClientSettings::default()
        });
    assert!(matches!(Client::connect(config).await, Err(Error::Unavailable { .. })));
    drop(silent);
}
