//! Mutual TLS at the process boundary (DESIGN.md §8, TESTING.md §4 "bad input"): a client whose
//! certificate comes from another CA is refused at the handshake, and the node keeps serving
//! clients of its own cluster.

use std::sync::Arc;
use std::time::Duration;

use decree_runtime::node_shell::rpc::{ClientReply, ClientRequest};
use decree_sim::processes::client::{CallError, Caller, LogClient};
use decree_sim::processes::harness::{Cluster, ClusterSpec, TempDir};
use decree_sim::processes::quic::{connect_client, write_certs};
use decree_types::NodeId;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_a_certificate_from_another_ca_is_refused() {
    // Phase 1: a one-node cluster with its own CA, and a second, unrelated CA.
    let dir = TempDir::new("decree-process-tls").unwrap();
    let spec =
        ClusterSpec::local(env!("CARGO_BIN_EXE_decree-lognode").into(), dir.path(), 1, 1).unwrap();
    write_certs(&spec.certs, 1).unwrap();
    let foreign_certs = dir.path().join("foreign-certs");
    write_certs(&foreign_certs, 1).unwrap();
    let good = connect_client(&spec.certs, &spec.nodes).unwrap();
    let foreign = connect_client(&foreign_certs, &spec.nodes).unwrap();
    let cluster = Cluster::start(spec).unwrap();
    let n1 = NodeId(1);

    // Phase 2: the cluster's own client gets an answer (retrying while the node starts).
    let mut answered = false;
    for _ in 0..100 {
        if let Ok(ClientReply::Status(_)) =
            good.call(n1, ClientRequest::Status, Duration::from_millis(500)).await
        {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "node never answered its own client\n{}", cluster.all_log_tails(3000));

    // Phase 3: the foreign client is refused: the request is never delivered.
    let refused = foreign.call(n1, ClientRequest::Status, Duration::from_secs(2)).await;
    match refused {
        Err(CallError::Unreachable(reason)) => {
            assert!(
                reason.contains("TLS") || reason.contains("handshake"),
                "refused for another reason: {reason}"
            );
        }
        other => panic!("a foreign certificate must be refused, got {other:?}"),
    }

    // Phase 4: the node still serves its own client, proposals included.
    let client = LogClient::new(Arc::new(good), vec![n1]);
    let status = client.status(n1).await.expect("node keeps serving after the refusal");
    assert_eq!(status.node, n1);
    drop(cluster);
}
