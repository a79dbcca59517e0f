//! [`run`]: one server node, from its configuration to a clean stop.
//!
//! 1. Lock the data directory (one process per directory, [`crate::lock`]).
//! 2. Load this node's certificate and key, signed by the cluster CA.
//! 3. Open the host on the write-ahead log in the data directory: one replica per hosted
//!    group (a participant group for each key range placed here, a coordinator group for each
//!    coordinator group placed here), all on one Raft node and one WAL, recovered from it.
//! 4. Bind the QUIC endpoint: peers' envelopes go to the shell, client requests (one proto
//!    envelope per request stream) go through [`client_handler`] into the shell.
//! 5. Run the node shell on its own thread until `shutdown` completes or the node stops.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use decree_coordinator::{ClusterMap, ClusterMapError, CoordinatorConfig, CoordinatorGroup};
use decree_host::{Directory, Either, Fatal, GroupSpec, Host, HostConfig};
use decree_participant::{ParticipantConfig, ParticipantGroup};
use decree_proto::admin::GroupRole;
use decree_proto::envelope::NODE_GROUP;
use decree_proto::{decode_body, encode_body, Envelope, ErrorResponse, Payload, RequestId};
use decree_raft::core::RaftConfig;
use decree_raft::node::NodeConfig;
use decree_runtime::certs::{load_identity, CertError};
use decree_runtime::fs_disk::FsDisk;
use decree_runtime::node_shell::peers::QuicPeers;
use decree_runtime::node_shell::rpc::{ClientReply, ClientRequest, Refusal};
use decree_runtime::node_shell::run::{
    client_id, wall_clock_ns, NodeShell, ShellError, ShellHandle, CLIENT_ONLY_CODE,
    UNENCODABLE_CODE,
};
use decree_runtime::node_shell::timed_disk::TimedDisk;
use decree_runtime::transport::TransportError;
use decree_runtime::{
    HandlerError, Peer, QuicEndpoint, RpcHandler, TransportConfig, TransportLimits,
};
use decree_types::limits::NS_PER_MS;
use decree_types::{DetRng, GroupId, HlcTimestamp, NodeId};
use tokio::time::Instant;

use crate::config::{HostedGroup, ServerConfig};
use crate::lock::{DataDirLock, LockError};
use crate::node_service::{NodeService, Reply, ServerMachine};

/// The range-map version every participant group starts at: the bootstrap cluster map's.
const BOOTSTRAP_RANGE_VERSION: u64 = 1;

/// Why the server could not start or had to stop. Every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another process uses the data directory, or it cannot be locked.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Creating the data directory failed.
    #[error("cannot create data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The node's certificate, key or the CA could not be loaded.
    #[error("certificates in {}: {source}", dir.display())]
    Certs {
        /// The certificate directory.
        dir: PathBuf,
        /// Why.
        source: CertError,
    },
    /// The cluster description is not a valid cluster map.
    #[error("cluster description: {0}")]
    ClusterMap(#[from] ClusterMapError),
    /// The participant groups' ranges do not cover the key space exactly once.
    #[error("cluster description: participant ranges: {0}")]
    Ranges(#[from] decree_types::RangeMapError),
    /// The Raft timing settings are inconsistent.
    #[error("raft settings: {0}")]
    Raft(#[from] decree_raft::core::ConfigError),
    /// The data directory cannot be used as a disk.
    #[error("data directory {}: {source}", path.display())]
    Disk {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: decree_raft::DiskError,
    },
    /// The write-ahead log could not be recovered.
    #[error("opening the write-ahead log in {}: {source}", path.display())]
    Open {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: Fatal,
    },
    /// The QUIC endpoint could not start.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: TransportError,
    },
    /// The shell stopped the node (a fatal disk error, HLC-6) or could not start.
    #[error(transparent)]
    Shell(#[from] ShellError),
}

/// Runs the node `config` describes until `shutdown` completes (then `Ok`) or the node stops
/// on a fatal error. Must be called inside a multi-threaded tokio runtime.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let me = config.node_id();
    let node = &config.node;

    // 1. The data directory, locked.
    std::fs::create_dir_all(&node.data_dir)
        .map_err(|source| ServerError::DataDir { path: node.data_dir.clone(), source })?;
    let _lock = DataDirLock::acquire(&node.data_dir)?;

    // 2. This node's identity.
    let identity = load_identity(&node.certs_dir, &Peer::Node(me))
        .map_err(|source| ServerError::Certs { dir: node.certs_dir.clone(), source })?;

    // 3. The host: every hosted group's replica, recovered from the WAL.
    let map = cluster_map(&config)?;
    let mut roles = BTreeMap::new();
    let groups: Vec<GroupSpec<ServerMachine>> = config
        .hosted_groups()
        .into_iter()
        .map(|hosted| match hosted {
            HostedGroup::Coordinator { group, voters } => {
                roles.insert(group, GroupRole::Coordinator);
                let machine =
                    CoordinatorGroup::new(group, CoordinatorConfig::default(), map.clone());
                GroupSpec { group, voters, machine: Either::Right(machine) }
            }
            HostedGroup::Participant { group, voters, range } => {
                roles.insert(group, GroupRole::Participant { range: range.clone() });
                let participant = ParticipantConfig {
                    max_offset_ns: node.timing.max_offset_ms * NS_PER_MS,
                    ..ParticipantConfig::default()
                };
                let machine =
                    ParticipantGroup::new(group, range, BOOTSTRAP_RANGE_VERSION, participant);
                GroupSpec { group, voters, machine: Either::Left(machine) }
            }
        })
        .collect();
    // Every group of the cluster, hosted here or not: machines send requests to the leaders
    // of other groups (a participant's in-doubt query to its coordinator group).
    let directory = Directory::new(
        config
            .cluster
            .coordinator_groups
            .iter()
            .map(|g| (g.id, &g.replicas))
            .chain(config.cluster.participant_groups.iter().map(|g| (g.id, &g.replicas)))
            .map(|(id, replicas)| (GroupId(id), replicas.iter().map(|&n| NodeId(n)).collect()))
            .collect(),
    );
    let timing = node.timing;
    let raft = RaftConfig {
        heartbeat_interval: Duration::from_millis(timing.heartbeat_ms),
        election_timeout_min: Duration::from_millis(timing.election_timeout_min_ms),
        election_timeout_max: Duration::from_millis(timing.election_timeout_max_ms),
        ..RaftConfig::default()
    };
    raft.validate()?;
    let host_config = HostConfig {
        node: NodeConfig { raft, ..NodeConfig::default() },
        max_offset_ns: timing.max_offset_ms * NS_PER_MS,
        // HLC-6: each peer's clock is measured once per heartbeat interval.
        clock_probe_interval_ns: timing.heartbeat_ms.max(1) * NS_PER_MS,
        ..HostConfig::default()
    };
    let disk = FsDisk::open(&node.data_dir)
        .map_err(|source| ServerError::Disk { path: node.data_dir.clone(), source })?;
    let seed = me.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ wall_clock_ns();
    let origin = Instant::now();
    let host = Host::open(
        me,
        host_config,
        groups,
        directory,
        TimedDisk::new(disk),
        DetRng::new(seed),
        0,
        wall_clock_ns(),
    )
    .map_err(|source| ServerError::Open { path: node.data_dir.clone(), source })?;

    // 4. The endpoint.
    let (shell_handle, calls) = ShellHandle::channel();
    let limits = TransportLimits {
        // Notice a restarted peer within about a second, and redial it quickly.
        idle_timeout_ms: 1_500,
        keep_alive_ms: 300,
        connect_timeout_ms: 1_000,
        backoff_max_ms: 500,
        ..TransportLimits::default()
    };
    let peers = config.cluster.addresses().into_iter().filter(|(id, _)| *id != me).collect();
    let transport_config = TransportConfig { listen_addr: node.listen, identity, peers, limits };
    let (endpoint, inbound) =
        QuicEndpoint::bind(transport_config, client_handler(me, shell_handle))
            .map_err(|source| ServerError::Bind { addr: node.listen, source })?;
    tracing::info!(
        node = %me,
        listen = %node.listen,
        groups = roles.len(),
        data = %node.data_dir.display(),
        "decree server started"
    );

    // 5. The shell loop, until `shutdown` or a fatal error.
    let service = NodeService::new(me, roles, map);
    let shell =
        NodeShell::new(host, QuicPeers::new(endpoint.clone()), Arc::new(wall_clock_ns), origin)
            .with_node_service(Box::new(move |host, request| service.answer(host, request)));
    let mut shell = shell.spawn(inbound, calls)?;
    let result = tokio::select! {
        result = shell.finished() => result,
        () = shutdown => {
            shell.stop();
            shell.finished().await
        }
    };
    endpoint.close().await;
    let counters = result?;
    tracing::info!(?counters, "decree server stopped");
    Ok(())
}

/// The cluster map every coordinator replica starts from, built from the cluster description.
fn cluster_map(config: &ServerConfig) -> Result<ClusterMap, ServerError> {
    let cluster = &config.cluster;
    // `ServerConfig::load` checked the ranges; a hand-built config may not have been.
    let ranges = cluster.range_map()?;
    let replicas = cluster
        .coordinator_groups
        .iter()
        .map(|g| (g.id, &g.replicas))
        .chain(cluster.participant_groups.iter().map(|g| (g.id, &g.replicas)))
        .map(|(id, r)| (GroupId(id), r.iter().map(|&n| NodeId(n)).collect()))
        .collect();
    let addrs = cluster.nodes.iter().map(|n| (NodeId(n.id), n.addr.to_string())).collect();
    Ok(ClusterMap::new(ranges, replicas, addrs, cluster.coordinator_group_ids())?)
}

/// Completes on SIGTERM or SIGINT (ctrl-c).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM ({e}); ctrl-c only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}

/// The client protocol of a server: one `decree_proto::Envelope` per request stream, with a
/// `Payload::Request`, answered with one envelope holding `Payload::Response` or
/// `Payload::Error` (a machine's `Err` answer, the host's refusal, a malformed request).
/// Requests for [`NODE_GROUP`] are the node's own (range map, cluster status); the others go to
/// the named group's machine through the host. Requests from nodes are refused: nodes talk to
/// each other in envelopes on streams, never through the client protocol.
///
/// A request whose outcome is unknown (the node stopped while it waited) resets the stream, so
/// the client treats it as possibly delivered rather than refused.
pub fn client_handler(
    me: NodeId,
    shell: ShellHandle<decree_proto::Request, Reply>,
) -> impl RpcHandler {
    move |from: Peer, body: Vec<u8>| {
        let shell = shell.clone();
        async move {
            let Peer::Client(name) = from else {
                return Err(HandlerError::Refused {
                    code: CLIENT_ONLY_CODE,
                    message: "the client protocol serves clients, not nodes".into(),
                });
            };
            let now = || HlcTimestamp::new(wall_clock_ns(), 0);
            let envelope = match decode_body(&body) {
                Ok(envelope) => envelope,
                Err(e) => {
                    let error = ErrorResponse::malformed(format!("undecodable request: {e}"));
                    return answer(me, NODE_GROUP, now(), None, Err(error));
                }
            };
            let group = envelope.group;
            let Payload::Request { request_id, request } = envelope.payload else {
                let error = ErrorResponse::malformed("a client sends only requests");
                return answer(me, group, now(), None, Err(error));
            };
            let call = if group == NODE_GROUP {
                ClientRequest::Node(request)
            } else {
                ClientRequest::Machine { group, sender_clock: envelope.sender_clock, request }
            };
            let (clock, reply) = match shell.call(client_id(&name), call).await {
                ClientReply::Machine { sender_clock, response } => (sender_clock, response),
                ClientReply::Error { sender_clock, error } => (sender_clock, Err(error)),
                ClientReply::Refused(Refusal::UnknownGroup(g)) => {
                    (now(), Err(ErrorResponse::UnknownGroup { group: g }))
                }
                ClientReply::Refused(Refusal::Overloaded) => {
                    (now(), Err(ErrorResponse::Busy { retry_after_ms: 10 }))
                }
                ClientReply::Refused(Refusal::ShuttingDown) => {
                    return Err(HandlerError::Refused {
                        code: SHUTTING_DOWN_CODE,
                        message: "node shutting down; outcome unknown".into(),
                    })
                }
                other @ (ClientReply::Refused(Refusal::NoNodeService)
                | ClientReply::Refused(Refusal::StateTooLarge { .. })
                | ClientReply::Status(_)
                | ClientReply::ReplicaState { .. }) => (
                    now(),
                    Err(ErrorResponse::Unavailable {
                        detail: format!("unexpected answer {other:?}"),
                    }),
                ),
            };
            answer(me, group, clock, Some(request_id), reply)
        }
    }
}

/// The refusal code of a request whose node stopped while it waited (outcome unknown).
pub const SHUTTING_DOWN_CODE: u32 = 3;

/// Encodes the answer envelope to `request_id` (`None`: the request could not be read).
fn answer(
    me: NodeId,
    group: GroupId,
    sender_clock: HlcTimestamp,
    request_id: Option<RequestId>,
    reply: Reply,
) -> Result<Vec<u8>, HandlerError> {
    let payload = match (reply, request_id) {
        (Ok(response), Some(request_id)) => Payload::Response { request_id, response },
        (Ok(_), None) => Payload::Error {
            in_reply_to: None,
            error: ErrorResponse::malformed("no request to answer"),
        },
        (Err(error), in_reply_to) => Payload::Error { in_reply_to, error },
    };
    let envelope = Envelope { from: me, group, sender_clock, payload };
    match encode_body(&envelope) {
        Ok(body) => Ok(body),
        // An answer over a wire bound (e.g. too large a frame): say so instead.
        Err(e) => {
            let error =
                ErrorResponse::Unavailable { detail: format!("answer cannot be sent: {e}") };
            let payload = Payload::Error { in_reply_to: request_id, error };
            encode_body(&Envelope { from: me, group, sender_clock, payload }).map_err(|e| {
                HandlerError::Refused { code: UNENCODABLE_CODE, message: e.to_string() }
            })
        }
    }
}
