//! The server's configuration: one file per node (`node.toml`) and one cluster description
//! shared by every node (`cluster.toml`).
//!
//! ```toml
//! # node.toml
//! node_id = 1
//! listen = "127.0.0.1:7001"         # UDP address for QUIC
//! data_dir = "data/n1"              # write-ahead log and snapshots; locked while running
//! certs_dir = "certs"               # ca.pem, node-1.pem, node-1.key (as `decree certs` writes)
//! cluster = "cluster.toml"          # relative paths are relative to this file
//!
//! [timing]                          # every field optional; defaults shown in `Timing`
//! max_offset_ms = 250
//! ```
//!
//! ```toml
//! # cluster.toml: identical on every node; the bootstrap description of the cluster
//! [[nodes]]
//! id = 1
//! addr = "127.0.0.1:7001"
//! # ... one [[nodes]] per node
//!
//! [[coordinator_groups]]
//! id = 100
//! replicas = [1, 2, 3]
//!
//! [[participant_groups]]
//! id = 1
//! start = ""                        # inclusive; "" is the smallest key
//! end = "m"                         # exclusive; absent: to the end of the key space
//! replicas = [1, 2, 3]
//! ```
//!
//! Every setting, with its unit and default, is listed in `docs/server.md`; the defaults of
//! `[timing]` are [`Timing`]'s. Every setting is checked when the file is read ([`ServerConfig::load`]); a bad file is
//! one clear error naming the file and the setting, never a panic.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use decree_types::limits::{
    ELECTION_TIMEOUT_MAX_MS, ELECTION_TIMEOUT_MIN_MS, HEARTBEAT_INTERVAL_MS, MAX_OFFSET_NS,
    NS_PER_MS, VOTERS_MAX,
};
use decree_types::{GroupId, Key, KeyRange, NodeId, RangeMap, RangeMapError};
use serde::{Deserialize, Serialize};

/// The group id the wire reserves for node-level traffic; no group may use it.
const RESERVED_GROUP_ID: u64 = u64::MAX;

/// A node's whole configuration: its own settings and the cluster description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// This node's settings.
    pub node: NodeSettings,
    /// The cluster, as every node sees it.
    pub cluster: ClusterSpec,
}

/// `node.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// This node's id (≥ 1); must be listed in the cluster description and match the node id
    /// in its certificate.
    pub node_id: u64,
    /// The UDP address QUIC listens on.
    pub listen: SocketAddr,
    /// Where the write-ahead log and snapshots live; created if missing.
    pub data_dir: PathBuf,
    /// Where the CA certificate and this node's certificate and key are.
    pub certs_dir: PathBuf,
    /// The cluster description file.
    pub cluster: PathBuf,
    /// Timeouts and clock bounds.
    #[serde(default)]
    pub timing: Timing,
}

/// Timeouts and clock bounds, in milliseconds. The defaults are `decree_types::limits`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timing {
    /// `max_offset` (HLC-3): the largest clock offset tolerated between nodes. Must be the
    /// same on every node. Default 250 ms.
    pub max_offset_ms: u64,
    /// Leader heartbeat period. Default 100 ms.
    pub heartbeat_ms: u64,
    /// Lower end of the randomized election timeout (the upper end is twice this unless
    /// `election_timeout_max_ms` says otherwise). Default 1,000 ms.
    pub election_timeout_min_ms: u64,
    /// Upper end (exclusive) of the randomized election timeout. Default 2,000 ms.
    pub election_timeout_max_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            max_offset_ms: MAX_OFFSET_NS / NS_PER_MS,
            heartbeat_ms: HEARTBEAT_INTERVAL_MS,
            election_timeout_min_ms: ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max_ms: ELECTION_TIMEOUT_MAX_MS,
        }
    }
}

/// `cluster.toml`: the bootstrap description every node of a cluster shares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Every node and its address.
    pub nodes: Vec<NodeEntry>,
    /// The coordinator groups (at least one).
    pub coordinator_groups: Vec<GroupEntry>,
    /// The participant groups; their ranges cover the whole key space without overlap.
    pub participant_groups: Vec<ParticipantGroupEntry>,
}

/// One node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Its id (≥ 1).
    pub id: u64,
    /// Its QUIC address.
    pub addr: SocketAddr,
}

/// A coordinator group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    /// Its id.
    pub id: u64,
    /// The nodes holding its replicas (an odd number is recommended).
    pub replicas: Vec<u64>,
}

/// A participant group: one key range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantGroupEntry {
    /// Its id.
    pub id: u64,
    /// First key of the range (inclusive), as UTF-8; `""` is the smallest key.
    pub start: String,
    /// End of the range (exclusive); absent: the end of the key space.
    #[serde(default)]
    pub end: Option<String>,
    /// The nodes holding its replicas.
    pub replicas: Vec<u64>,
}

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown or mistyped setting.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A setting has a value that cannot work.
    #[error("{path}: {setting}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The setting, e.g. `participant_groups[2].replicas`.
        setting: String,
        /// What is wrong.
        problem: String,
    },
}

impl ServerConfig {
    /// Reads `node.toml` at `path` and the cluster description it names, and checks both.
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let node: NodeSettings = parse_file(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let cluster_path = base.join(&node.cluster);
        let cluster: ClusterSpec = parse_file(&cluster_path)?;
        let node = NodeSettings {
            data_dir: base.join(&node.data_dir),
            certs_dir: base.join(&node.certs_dir),
            cluster: cluster_path.clone(),
            ..node
        };
        cluster.validate(&cluster_path)?;
        node.validate(path, &cluster)?;
        Ok(ServerConfig { node, cluster })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.node.node_id)
    }

    /// The groups this node hosts a replica of, with each group's voters: coordinator groups
    /// first, then participant groups, each in id order.
    pub fn hosted_groups(&self) -> Vec<HostedGroup> {
        let me = self.node.node_id;
        let voters = |r: &[u64]| r.iter().map(|&n| NodeId(n)).collect::<Vec<_>>();
        let mut out = Vec::new();
        let mut coordinators: Vec<_> = self.cluster.coordinator_groups.iter().collect();
        coordinators.sort_by_key(|g| g.id);
        for g in coordinators.into_iter().filter(|g| g.replicas.contains(&me)) {
            out.push(HostedGroup::Coordinator {
                group: GroupId(g.id),
                voters: voters(&g.replicas),
            });
        }
        let mut participants: Vec<_> = self.cluster.participant_groups.iter().collect();
        participants.sort_by_key(|g| g.id);
        for g in participants.into_iter().filter(|g| g.replicas.contains(&me)) {
            out.push(HostedGroup::Participant {
                group: GroupId(g.id),
                voters: voters(&g.replicas),
                range: g.range(),
            });
        }
        out
    }
}

/// A group a node hosts, as the configuration describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostedGroup {
    /// A coordinator group.
    Coordinator {
        /// Its id.
        group: GroupId,
        /// Its voters.
        voters: Vec<NodeId>,
    },
    /// A participant group.
    Participant {
        /// Its id.
        group: GroupId,
        /// Its voters.
        voters: Vec<NodeId>,
        /// Its key range.
        range: KeyRange,
    },
}

impl ParticipantGroupEntry {
    /// The key range.
    pub fn range(&self) -> KeyRange {
        KeyRange::new(
            Key::new(self.start.as_bytes()),
            self.end.as_ref().map(|e| Key::new(e.as_bytes())),
        )
    }
}

impl ClusterSpec {
    /// A cluster of `nodes` nodes on loopback (ports `base_port + id`), one coordinator group
    /// (id 100) and `participant_groups` participant groups (ids 1..), every group with a
    /// replica on every node. The key space is split at single lowercase letters so that
    /// keys starting with `a`, `b`, … spread over the groups.
    pub fn local(nodes: u64, participant_groups: u64, base_port: u16) -> ClusterSpec {
        let ids: Vec<u64> = (1..=nodes).collect();
        let node_entries = ids
            .iter()
            .map(|&id| NodeEntry {
                id,
                addr: SocketAddr::from(([127, 0, 0, 1], base_port + id as u16)),
            })
            .collect();
        let groups = participant_groups.max(1);
        let letter = |i: u64| ((b'a' + (i as u8)) as char).to_string();
        let participant_groups = (0..groups)
            .map(|i| ParticipantGroupEntry {
                id: i + 1,
                start: if i == 0 { String::new() } else { letter(i) },
                end: if i + 1 == groups { None } else { Some(letter(i + 1)) },
                replicas: ids.clone(),
            })
            .collect();
        ClusterSpec {
            nodes: node_entries,
            coordinator_groups: vec![GroupEntry { id: 100, replicas: ids.clone() }],
            participant_groups,
        }
    }

    /// The range map the participant groups form (the coordinator group's consistent core
    /// starts from it).
    pub fn range_map(&self) -> Result<RangeMap, RangeMapError> {
        RangeMap::new(self.participant_groups.iter().map(|g| (g.range(), GroupId(g.id))).collect())
    }

    /// Every node's address.
    pub fn addresses(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.nodes.iter().map(|n| (NodeId(n.id), n.addr)).collect()
    }

    /// The coordinator groups' ids, in order.
    pub fn coordinator_group_ids(&self) -> Vec<GroupId> {
        let mut ids: Vec<GroupId> = self.coordinator_groups.iter().map(|g| GroupId(g.id)).collect();
        ids.sort();
        ids
    }

    /// Checks the description; `path` names it in errors.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |setting: String, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            setting,
            problem,
        };
        if self.nodes.is_empty() {
            return Err(invalid("nodes".into(), "at least one node is needed".into()));
        }
        let mut node_ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.id == 0 {
                return Err(invalid(format!("nodes[{i}].id"), "node ids start at 1".into()));
            }
            if !node_ids.insert(n.id) {
                return Err(invalid(
                    format!("nodes[{i}].id"),
                    format!("node {} is listed twice", n.id),
                ));
            }
            if !addrs.insert(n.addr) {
                return Err(invalid(
                    format!("nodes[{i}].addr"),
                    format!("{} is used by another node", n.addr),
                ));
            }
        }
        if self.coordinator_groups.is_empty() {
            return Err(invalid(
                "coordinator_groups".into(),
                "at least one coordinator group is needed".into(),
            ));
        }
        if self.participant_groups.is_empty() {
            return Err(invalid(
                "participant_groups".into(),
                "at least one participant group is needed".into(),
            ));
        }
        let mut group_ids = BTreeSet::new();
        let groups = self
            .coordinator_groups
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("coordinator_groups[{i}]"), g.id, &g.replicas))
            .chain(
                self.participant_groups
                    .iter()
                    .enumerate()
                    .map(|(i, g)| (format!("participant_groups[{i}]"), g.id, &g.replicas)),
            );
        for (name, id, replicas) in groups {
            if id == RESERVED_GROUP_ID {
                return Err(invalid(
                    format!("{name}.id"),
                    format!("{id} is reserved for node traffic"),
                ));
            }
            if !group_ids.insert(id) {
                return Err(invalid(format!("{name}.id"), format!("group {id} is listed twice")));
            }
            if replicas.is_empty() || replicas.len() > VOTERS_MAX {
                return Err(invalid(
                    format!("{name}.replicas"),
                    format!("a group has 1 to {VOTERS_MAX} replicas, not {}", replicas.len()),
                ));
            }
            let mut seen = BTreeSet::new();
            for r in replicas {
                if !node_ids.contains(r) {
                    return Err(invalid(
                        format!("{name}.replicas"),
                        format!("node {r} is not in nodes"),
                    ));
                }
                if !seen.insert(r) {
                    return Err(invalid(
                        format!("{name}.replicas"),
                        format!("node {r} is listed twice"),
                    ));
                }
            }
        }
        self.range_map()
            .map_err(|e| invalid("participant_groups".into(), format!("ranges: {e}")))?;
        Ok(())
    }
}

impl NodeSettings {
    fn validate(&self, path: &Path, cluster: &ClusterSpec) -> Result<(), ConfigError> {
        let invalid = |setting: &str, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            setting: setting.into(),
            problem,
        };
        if !cluster.nodes.iter().any(|n| n.id == self.node_id) {
            return Err(invalid(
                "node_id",
                format!("node {} is not in {}", self.node_id, self.cluster.display()),
            ));
        }
        let t = &self.timing;
        if t.max_offset_ms == 0 {
            return Err(invalid("timing.max_offset_ms", "must be above 0".into()));
        }
        if t.heartbeat_ms == 0 || t.heartbeat_ms >= t.election_timeout_min_ms {
            return Err(invalid(
                "timing.heartbeat_ms",
                format!(
                    "must be above 0 and below election_timeout_min_ms ({})",
                    t.election_timeout_min_ms
                ),
            ));
        }
        if t.election_timeout_max_ms <= t.election_timeout_min_ms {
            return Err(invalid(
                "timing.election_timeout_max_ms",
                format!("must be above election_timeout_min_ms ({})", t.election_timeout_min_ms),
            ));
        }
        Ok(())
    }
}

fn parse_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    toml::from_str(&text)
        .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("decree-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const NODE: &str = "node_id = 2\nlisten = \"127.0.0.1:7002\"\ndata_dir = \"d2\"\n\
                        certs_dir = \"certs\"\ncluster = \"cluster.toml\"\n";

    fn cluster_text() -> String {
        toml::to_string(&ClusterSpec::local(3, 3, 7000)).unwrap()
    }

    #[test]
    fn a_local_cluster_loads_and_each_node_hosts_every_group() {
        let d = temp_dir("ok");
        write(&d, "cluster.toml", &cluster_text());
        let cfg = ServerConfig::load(&write(&d, "node.toml", NODE)).unwrap();
        assert_eq!(cfg.node_id(), NodeId(2));
        assert_eq!(cfg.node.data_dir, d.join("d2"));
        assert_eq!(cfg.node.timing, Timing::default());
        let hosted = cfg.hosted_groups();
        assert_eq!(hosted.len(), 4);
        assert!(matches!(hosted[0], HostedGroup::Coordinator { group: GroupId(100), .. }));
        let map = cfg.cluster.range_map().unwrap();
        assert_eq!(map.group_for(&Key::new(*b"a/1")), GroupId(1));
        assert_eq!(map.group_for(&Key::new(*b"b/1")), GroupId(2));
        assert_eq!(map.group_for(&Key::new(*b"zz")), GroupId(3));
    }

    #[test]
    fn an_unknown_setting_names_the_file_and_the_line() {
        let d = temp_dir("unknown");
        write(&d, "cluster.toml", &cluster_text());
        let p = write(&d, "node.toml", &format!("{NODE}colour = \"blue\"\n"));
        let e = ServerConfig::load(&p).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ConfigError::Parse { .. }), "{msg}");
        assert!(msg.contains("node.toml") && msg.contains("colour"), "{msg}");
    }

    #[test]
    fn a_missing_cluster_file_is_a_read_error() {
        let d = temp_dir("missing");
        let e = ServerConfig::load(&write(&d, "node.toml", NODE)).unwrap_err();
        assert!(matches!(e, ConfigError::Read { ref path, .. } if path.ends_with("cluster.toml")));
    }

    #[test]
    fn invalid_clusters_are_refused_with_the_setting_named() {
        let base = ClusterSpec::local(3, 2, 7000);
        type Mutation = Box<dyn Fn(&mut ClusterSpec)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("nodes[1].id", Box::new(|c| c.nodes[1].id = 1)),
            ("nodes[2].addr", Box::new(|c| c.nodes[2].addr = c.nodes[0].addr)),
            ("coordinator_groups", Box::new(|c| c.coordinator_groups.clear())),
            ("participant_groups[1].id", Box::new(|c| c.participant_groups[1].id = 100)),
            (
                "participant_groups[0].replicas",
                Box::new(|c| c.participant_groups[0].replicas = vec![1, 9]),
            ),
            (
                "coordinator_groups[0].replicas",
                Box::new(|c| c.coordinator_groups[0].replicas = vec![]),
            ),
            ("participant_groups", Box::new(|c| c.participant_groups[0].end = Some("c".into()))),
            ("coordinator_groups[0].id", Box::new(|c| c.coordinator_groups[0].id = u64::MAX)),
        ];
        for (setting, mutate) in cases {
            let mut c = base.clone();
            mutate(&mut c);
            match c.validate(Path::new("cluster.toml")) {
                Err(ConfigError::Invalid { setting: s, .. }) => assert_eq!(s, setting),
                other => panic!("{setting}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn bad_timing_and_unknown_node_are_refused() {
        let d = temp_dir("timing");
        write(&d, "cluster.toml", &cluster_text());
        let p = write(&d, "node.toml", &format!("{NODE}[timing]\nheartbeat_ms = 5000\n"));
        let e = ServerConfig::load(&p).unwrap_err();
        assert!(
            matches!(e, ConfigError::Invalid { ref setting, .. } if setting == "timing.heartbeat_ms"),
            "{e}"
        );
        let p = write(&d, "node.toml", &NODE.replace("node_id = 2", "node_id = 7"));
        let e = ServerConfig::load(&p).unwrap_err();
        assert!(
            matches!(e, ConfigError::Invalid { ref setting, .. } if setting == "node_id"),
            "{e}"
        );
    }
}
