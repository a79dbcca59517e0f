//! The client side over real QUIC with mutual TLS: certificates for a test cluster, and the
//! [`Caller`] the client uses to reach `decree-lognode` processes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use decree_runtime::certs::{load_identity, write_dir, Peer};
use decree_runtime::node_shell::rpc::{
    decode_response, encode_request, ClientReply, ClientRequest,
};
use decree_runtime::{QuicEndpoint, RpcError, TransportLimits};
use decree_types::NodeId;

use super::client::{CallError, Caller};
use super::log_machine::{ToyRequest, ToyResponse};

/// The client name the certificates of a test cluster are issued for.
pub const CLIENT_NAME: &str = "logctl";

/// Writes a fresh CA, certificates for nodes `1..=nodes` and a client certificate to `dir`.
pub fn write_certs(dir: &Path, nodes: u64) -> Result<(), String> {
    let ids: Vec<NodeId> = (1..=nodes).map(NodeId).collect();
    write_dir(dir, &ids, &[CLIENT_NAME.to_string()], &[], false)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// QuicEndpoint settings for a client that must notice restarted nodes quickly: short idle
/// timeout and dial back-off (the defaults suit long-lived node links).
pub fn client_limits() -> TransportLimits {
    TransportLimits {
        idle_timeout_ms: 2_000,
        keep_alive_ms: 500,
        connect_timeout_ms: 1_000,
        backoff_initial_ms: 20,
        backoff_max_ms: 300,
        ..TransportLimits::default()
    }
}

/// A QUIC client endpoint with a client certificate. Must be created inside a tokio runtime.
#[derive(Debug)]
pub struct QuicCaller {
    endpoint: QuicEndpoint,
}

/// Opens a client endpoint presenting the client certificate found in `certs`.
pub fn connect_client(
    certs: &Path,
    nodes: &BTreeMap<NodeId, SocketAddr>,
) -> Result<QuicCaller, String> {
    let name = client_name(certs);
    let identity = load_identity(certs, &Peer::Client(name.clone())).map_err(|e| {
        format!(
            "loading the client certificate client-{name} from {}: {e} (write one with \
             `decree certs --clients {CLIENT_NAME} ...` or `decree-logctl certs`)",
            certs.display()
        )
    })?;
    let endpoint = QuicEndpoint::client(identity, nodes.clone(), client_limits())
        .map_err(|e| e.to_string())?;
    Ok(QuicCaller { endpoint })
}

/// The client certificate to use from `certs`: `client-logctl` if present, otherwise the first
/// `client-*.pem` (so a directory written by `decree certs` works too).
fn client_name(certs: &Path) -> String {
    if certs.join(format!("client-{CLIENT_NAME}.pem")).exists() {
        return CLIENT_NAME.to_string();
    }
    let mut names: Vec<String> = std::fs::read_dir(certs)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|f| Some(f.strip_prefix("client-")?.strip_suffix(".pem")?.to_string()))
        .collect();
    names.sort();
    names.into_iter().next().unwrap_or_else(|| CLIENT_NAME.to_string())
}

impl Caller for QuicCaller {
    async fn call(
        &self,
        node: NodeId,
        request: ClientRequest<ToyRequest>,
        timeout: Duration,
    ) -> Result<ClientReply<ToyResponse>, CallError> {
        // Not sent: our own request cannot be encoded.
        let body = encode_request(&request).map_err(|e| CallError::Unreachable(e.to_string()))?;
        match self.endpoint.request(node, body, timeout).await {
            Ok(body) => decode_response(&body).map_err(|e| CallError::NoAnswer(e.to_string())),
            // Never delivered: the request did not leave this process.
            Err(
                e @ (RpcError::Unreachable { .. }
                | RpcError::Tls { .. }
                | RpcError::UnknownPeer(_)
                | RpcError::TooLarge { .. }
                | RpcError::Closed),
            ) => Err(CallError::Unreachable(e.to_string())),
            // May have been delivered and handled.
            Err(e) => Err(CallError::NoAnswer(e.to_string())),
        }
    }
}
