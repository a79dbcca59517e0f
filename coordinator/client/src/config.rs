//! How a client finds the cluster and how patient it is.
//!
//! A client needs two things: a TLS identity (a client certificate signed by the cluster CA,
//! DESIGN.md §8) and somewhere to start — either the cluster file every node shares
//! (`cluster.toml`: nodes, coordinator groups, participant groups) or a few seed nodes
//! (`<node id>@<host:port>`). From there it fetches the authoritative range map and the
//! group leaders from a coordinator replica ([`crate::Client::connect`]).
//!
//! Every duration is in the settings, with its unit in the name and the reason for its default
//! beside it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use decree_proto::admin::{GroupLeader, RangeMapReply};
use decree_runtime::{Identity, Peer};
use decree_types::limits::{MAX_OFFSET_NS, RPC_TIMEOUT_MS};
use decree_types::{GroupId, Key, KeyRange, NodeId, Term};
use serde::Deserialize;

use crate::error::ConfigError;
use crate::txn::TxnOptions;

/// Everything [`crate::Client::connect`] needs.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The client's certificate, key and the cluster CA.
    pub identity: Identity,
    /// Nodes to ask for the range map, with their addresses (coordinator replicas are best).
    pub seeds: BTreeMap<NodeId, SocketAddr>,
    /// The cluster file's description, if one was given: every node's address and the
    /// initial range map, used until (or if) the cluster answers with its own.
    pub cluster: Option<ClusterFile>,
    /// Timeouts, retries and transaction defaults.
    pub settings: ClientSettings,
}

impl ClientConfig {
    /// A configuration with `identity` and nothing to connect to yet; add seeds or a cluster
    /// file.
    pub fn new(identity: Identity) -> ClientConfig {
        ClientConfig {
            identity,
            seeds: BTreeMap::new(),
            cluster: None,
            settings: ClientSettings::default(),
        }
    }

    /// Reads the cluster file at `cluster_file` and the identity `client-<name>` from
    /// `certs_dir` (the layout `decree certs` writes).
    pub fn load(
        cluster_file: &Path,
        certs_dir: &Path,
        client_name: &str,
    ) -> Result<ClientConfig, ConfigError> {
        let identity =
            decree_runtime::certs::load_identity(certs_dir, &Peer::Client(client_name.into()))
                .map_err(|e| ConfigError::Certificates { reason: e.to_string() })?;
        Ok(ClientConfig::new(identity).with_cluster(ClusterFile::load(cluster_file)?))
    }

    /// Adds a seed node.
    #[must_use]
    pub fn with_seed(mut self, node: NodeId, addr: SocketAddr) -> ClientConfig {
        self.seeds.insert(node, addr);
        self
    }

    /// Adds seeds written `<node id>@<host:port>` (e.g. `1@127.0.0.1:7001`), comma separated.
    pub fn with_seed_list(mut self, list: &str) -> Result<ClientConfig, ConfigError> {
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (node, addr) = parse_seed(item)?;
            self.seeds.insert(node, addr);
        }
        Ok(self)
    }

    /// Uses a cluster description: its nodes become seeds and its ranges the initial map.
    #[must_use]
    pub fn with_cluster(mut self, cluster: ClusterFile) -> ClientConfig {
        self.cluster = Some(cluster);
        self
    }

    /// Replaces the settings.
    #[must_use]
    pub fn with_settings(mut self, settings: ClientSettings) -> ClientConfig {
        self.settings = settings;
        self
    }

    /// Every node address the configuration knows.
    pub(crate) fn addresses(&self) -> BTreeMap<NodeId, SocketAddr> {
        let mut all = self.cluster.as_ref().map(|c| c.nodes.clone()).unwrap_or_default();
        all.extend(self.seeds.iter().map(|(n, a)| (*n, *a)));
        all
    }

    /// The nodes to ask for the range map first: coordinator replicas from the cluster file,
    /// then the seeds.
    pub(crate) fn seed_nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = Vec::new();
        if let Some(cluster) = &self.cluster {
            for group in &cluster.coordinator_groups {
                nodes.extend(group.replicas.iter().copied());
            }
        }
        nodes.extend(self.seeds.keys().copied());
        let mut seen = std::collections::BTreeSet::new();
        nodes.retain(|n| seen.insert(*n));
        nodes
    }
}

/// Timeouts, retry policy and transaction defaults.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// `max_offset` (HLC-3) in nanoseconds: the cluster's clock-offset bound. A transaction's
    /// uncertainty limit is `read_ts + max_offset` (TS-2). Must equal the cluster's.
    pub max_offset_ns: u64,
    /// How long one attempt (one request to one node) may take before the client tries again
    /// elsewhere. Default `RPC_TIMEOUT_MS` (2 s): above an election's low end plus a round trip.
    pub attempt_timeout: Duration,
    /// How long one operation (a read, a commit, a status query) keeps trying across leader
    /// changes before it reports `Unavailable` (or `Ambiguous` for a commit). Default 10 s:
    /// several election timeouts, so one failover never surfaces as an error.
    pub operation_timeout: Duration,
    /// How [`crate::Client::transact`] reruns transactions.
    pub retry: RetryPolicy,
    /// Isolation and commit-wait of transactions from [`crate::Client::begin`].
    pub txn: TxnOptions,
    /// Seed of the backoff jitter; `None` draws one from the OS. Tests fix it.
    pub jitter_seed: Option<u64>,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            max_offset_ns: MAX_OFFSET_NS,
            attempt_timeout: Duration::from_millis(RPC_TIMEOUT_MS),
            operation_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            txn: TxnOptions::default(),
            jitter_seed: None,
        }
    }
}

/// How [`crate::Client::transact`] reruns a transaction closure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most runs of the closure, the first included.
    pub attempts_max: u32,
    /// No new run starts after this much time since the first; resolving an ambiguous commit
    /// may continue past it by at most one `operation_timeout`.
    pub deadline: Duration,
    /// Backoff before the second run; doubled each run. Each pause is drawn uniformly from
    /// `[backoff / 2, backoff]` (equal jitter), so clients that collided spread apart.
    pub backoff_initial: Duration,
    /// Backoff ceiling.
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // Conflicts under no-wait (D-8) clear in a few milliseconds; 20 runs over at most 30 s
        // with a 1 s ceiling outlast a coordinator failover without hammering the cluster.
        RetryPolicy {
            attempts_max: 20,
            deadline: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(5),
            backoff_max: Duration::from_secs(1),
        }
    }
}

/// The part of the shared `cluster.toml` a client uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterFile {
    /// Every node's address.
    pub nodes: BTreeMap<NodeId, SocketAddr>,
    /// The coordinator groups and their replicas.
    pub coordinator_groups: Vec<GroupReplicas>,
    /// The participant groups: range and replicas.
    pub participant_groups: Vec<(KeyRange, GroupReplicas)>,
}

/// A group and the nodes holding its replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupReplicas {
    /// The group.
    pub group: GroupId,
    /// Its replicas.
    pub replicas: Vec<NodeId>,
}

#[derive(Deserialize)]
struct ClusterToml {
    nodes: Vec<NodeToml>,
    coordinator_groups: Vec<GroupToml>,
    participant_groups: Vec<ParticipantToml>,
}

#[derive(Deserialize)]
struct NodeToml {
    id: u64,
    addr: SocketAddr,
}

#[derive(Deserialize)]
struct GroupToml {
    id: u64,
    replicas: Vec<u64>,
}

#[derive(Deserialize)]
struct ParticipantToml {
    id: u64,
    start: String,
    #[serde(default)]
    end: Option<String>,
    replicas: Vec<u64>,
}

impl ClusterFile {
    /// Reads and checks a cluster file.
    pub fn load(path: &Path) -> Result<ClusterFile, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.to_path_buf(), reason: e.to_string() })?;
        ClusterFile::parse(&text, path)
    }

    /// Parses cluster-file text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ClusterFile, ConfigError> {
        let raw: ClusterToml = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), reason: e.to_string() })?;
        let nodes: BTreeMap<NodeId, SocketAddr> =
            raw.nodes.iter().map(|n| (NodeId(n.id), n.addr)).collect();
        if raw.coordinator_groups.is_empty() {
            return Err(invalid(path, "coordinator_groups", "at least one coordinator group"));
        }
        let replicas = |ids: &[u64], setting: String| -> Result<Vec<NodeId>, ConfigError> {
            match ids.iter().find(|id| !nodes.contains_key(&NodeId(**id))) {
                Some(id) => Err(invalid(path, &setting, &format!("node {id} is not in [[nodes]]"))),
                None => Ok(ids.iter().copied().map(NodeId).collect()),
            }
        };
        let coordinator_groups = raw
            .coordinator_groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                Ok(GroupReplicas {
                    group: GroupId(g.id),
                    replicas: replicas(&g.replicas, format!("coordinator_groups[{i}].replicas"))?,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let participant_groups = raw
            .participant_groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let range = KeyRange::new(g.start.as_str(), g.end.clone().map(Key::from));
                let group = GroupReplicas {
                    group: GroupId(g.id),
                    replicas: replicas(&g.replicas, format!("participant_groups[{i}].replicas"))?,
                };
                Ok((range, group))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let file = ClusterFile { nodes, coordinator_groups, participant_groups };
        decree_types::RangeMap::new(file.ranges())
            .map_err(|e| invalid(path, "participant_groups", &e.to_string()))?;
        Ok(file)
    }

    fn ranges(&self) -> Vec<(KeyRange, GroupId)> {
        self.participant_groups.iter().map(|(r, g)| (r.clone(), g.group)).collect()
    }

    /// The file as a range map reply of version 0 (older than anything the cluster sends),
    /// with every leader unknown.
    pub(crate) fn as_range_map(&self) -> RangeMapReply {
        let leader = |g: &GroupReplicas| GroupLeader {
            group: g.group,
            leader: None,
            term: Term(0),
            replicas: g.replicas.clone(),
        };
        let mut leaders: Vec<GroupLeader> = self.coordinator_groups.iter().map(leader).collect();
        leaders.extend(self.participant_groups.iter().map(|(_, g)| leader(g)));
        RangeMapReply {
            version: 0,
            ranges: self.ranges(),
            coordinator_group: self.coordinator_groups.first().map(|g| g.group).unwrap_or_default(),
            leaders,
            nodes: vec![],
            coordinator_groups: self.coordinator_groups.iter().map(|g| g.group).collect(),
        }
    }
}

fn invalid(path: &Path, setting: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        setting: format!("{}: {setting}", path.display()),
        reason: reason.to_string(),
    }
}

fn parse_seed(item: &str) -> Result<(NodeId, SocketAddr), ConfigError> {
    let bad = |reason: &str| ConfigError::Invalid {
        setting: format!("seed `{item}`"),
        reason: reason.to_string(),
    };
    let (node, addr) = item.split_once('@').ok_or_else(|| bad("expected <node id>@<host:port>"))?;
    let node: u64 = node.parse().map_err(|_| bad("node id is not a number"))?;
    let addr: SocketAddr = addr.parse().map_err(|_| bad("address is not <ip>:<port>"))?;
    Ok((NodeId(node), addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = r#"
        [[nodes]]
        id = 1
        addr = "127.0.0.1:7001"
        [[nodes]]
        id = 2
        addr = "127.0.0.1:7002"

        [[coordinator_groups]]
        id = 100
        replicas = [1, 2]

        [[participant_groups]]
        id = 1
        start = ""
        end = "m"
        replicas = [1]

        [[participant_groups]]
        id = 2
        start = "m"
        replicas = [2]
    "#;

    #[test]
    fn cluster_file_gives_nodes_ranges_and_coordinators() {
        let file = ClusterFile::parse(CLUSTER, Path::new("cluster.toml")).unwrap();
        assert_eq!(file.nodes.len(), 2);
        let map = file.as_range_map();
        assert_eq!(map.coordinator_group, GroupId(100));
        assert_eq!(map.ranges.len(), 2);
        let config = ClientConfig::new(test_identity()).with_cluster(file);
        assert_eq!(config.seed_nodes(), vec![NodeId(1), NodeId(2)]);
    }

    #[test]
    fn cluster_file_errors_name_the_setting() {
        let broken = CLUSTER.replace("replicas = [2]", "replicas = [9]");
        let err = ClusterFile::parse(&broken, Path::new("c.toml")).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { setting, .. } if setting.contains("participant_groups[1].replicas")),
            "{err}"
        );
        let gap = CLUSTER.replace("start = \"m\"", "start = \"n\"");
        assert!(matches!(
            ClusterFile::parse(&gap, Path::new("c.toml")),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            ClusterFile::parse("nodes = 3", Path::new("c.toml")),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn seeds_parse_or_say_why_not() {
        let config = ClientConfig::new(test_identity())
            .with_seed_list("1@127.0.0.1:7001, 2@127.0.0.1:7002")
            .unwrap();
        assert_eq!(config.seeds.len(), 2);
        let err = ClientConfig::new(test_identity()).with_seed_list("127.0.0.1:7001").unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { .. }));
    }

    fn test_identity() -> Identity {
        decree_runtime::ClusterCa::generate().unwrap().issue_client("test").unwrap()
    }
}
