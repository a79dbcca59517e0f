//! A cluster of real `decree start` processes on loopback, owned by one process (the demo):
//! picks free ports, writes `cluster.toml`, one `node-<id>.toml` per node and the certificates
//! (an ephemeral CA, as `decree certs` makes), then starts, SIGKILLs, pauses (SIGSTOP),
//! resumes (SIGCONT) and restarts nodes. Every child is SIGKILLed when the [`LocalCluster`] is
//! dropped, so an interrupted demo leaves nothing running.
//!
//! Layout of the root directory: `cluster.toml`, `node-<id>.toml`, `certs/`, `n<id>/` (data),
//! `n<id>.log` (each node's output, appended across restarts).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use decree_server::config::{ClusterSpec, NodeSettings, Timing};
use decree_types::NodeId;

use super::client_opts::CmdError;

/// The client certificate name the local cluster issues.
pub const LOCAL_CLIENT: &str = "cli";

/// A running local cluster. Dropping it SIGKILLs every node.
#[derive(Debug)]
pub struct LocalCluster {
    root: PathBuf,
    binary: PathBuf,
    spec: ClusterSpec,
    children: BTreeMap<u64, Child>,
    paused: Vec<u64>,
}

impl LocalCluster {
    /// Lays out a cluster of `nodes` nodes and `groups` participant groups under `root` (every
    /// group with a replica on every node, plus one coordinator group), on free ports. With
    /// `separate_coordinator`, the coordinator group gets `nodes` nodes of its own instead
    /// (ids after the participant nodes), so no process hosts both kinds of group.
    pub fn create(
        root: &Path,
        binary: PathBuf,
        nodes: u64,
        groups: u64,
        separate_coordinator: bool,
        timing: Timing,
    ) -> Result<LocalCluster, CmdError> {
        let io = |what: &str, e: std::io::Error| CmdError::Io(format!("{what}: {e}"));
        fs::create_dir_all(root).map_err(|e| io(&format!("creating {}", root.display()), e))?;
        let mut spec = if separate_coordinator {
            let mut spec = ClusterSpec::local(nodes * 2, groups, 7000);
            let (participants, coordinators): (Vec<u64>, Vec<u64>) =
                (1..=nodes * 2).partition(|id| *id <= nodes);
            for g in &mut spec.participant_groups {
                g.replicas = participants.clone();
            }
            for g in &mut spec.coordinator_groups {
                g.replicas = coordinators.clone();
            }
            spec
        } else {
            ClusterSpec::local(nodes, groups, 7000)
        };
        let addrs = free_udp_addrs(spec.nodes.len()).map_err(|e| io("finding free ports", e))?;
        for (entry, addr) in spec.nodes.iter_mut().zip(addrs) {
            entry.addr = addr;
        }
        let text = toml::to_string(&spec)
            .map_err(|e| CmdError::Io(format!("cannot write cluster.toml: {e}")))?;
        fs::write(root.join("cluster.toml"), text).map_err(|e| io("writing cluster.toml", e))?;
        for entry in &spec.nodes {
            let settings = NodeSettings {
                node_id: entry.id,
                listen: entry.addr,
                data_dir: PathBuf::from(format!("n{}", entry.id)),
                certs_dir: PathBuf::from("certs"),
                cluster: PathBuf::from("cluster.toml"),
                timing,
            };
            let text = toml::to_string(&settings)
                .map_err(|e| CmdError::Io(format!("cannot write node-{}.toml: {e}", entry.id)))?;
            fs::write(root.join(format!("node-{}.toml", entry.id)), text)
                .map_err(|e| io("writing a node file", e))?;
        }
        let ids: Vec<NodeId> = spec.nodes.iter().map(|n| NodeId(n.id)).collect();
        decree_runtime::certs::write_dir(
            &root.join("certs"),
            &ids,
            &[LOCAL_CLIENT.to_string()],
            &[],
            true,
        )
        .map_err(|e| CmdError::Io(format!("cannot make certificates: {e}")))?;
        Ok(LocalCluster {
            root: root.to_path_buf(),
            binary,
            spec,
            children: BTreeMap::new(),
            paused: Vec::new(),
        })
    }

    /// The cluster file.
    pub fn cluster_file(&self) -> PathBuf {
        self.root.join("cluster.toml")
    }

    /// The certificate directory.
    pub fn certs_dir(&self) -> PathBuf {
        self.root.join("certs")
    }

    /// Node ids.
    pub fn node_ids(&self) -> Vec<u64> {
        self.spec.nodes.iter().map(|n| n.id).collect()
    }

    /// Starts every node not running.
    pub fn start_all(&mut self) -> Result<(), CmdError> {
        for id in self.node_ids() {
            self.start(id)?;
        }
        Ok(())
    }

    /// Starts (or restarts, on its data directory) node `id`.
    pub fn start(&mut self, id: u64) -> Result<(), CmdError> {
        if self.children.contains_key(&id) {
            return Ok(());
        }
        let log_path = self.root.join(format!("n{id}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| CmdError::Io(format!("cannot open {}: {e}", log_path.display())))?;
        let err_log = log.try_clone().map_err(|e| CmdError::Io(e.to_string()))?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("start")
            .arg("--config")
            .arg(self.root.join(format!("node-{id}.toml")))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd.spawn().map_err(|e| {
            CmdError::Io(format!("cannot start {} start: {e}", self.binary.display()))
        })?;
        let _ = fs::write(self.root.join(format!("n{id}.pid")), child.id().to_string());
        self.children.insert(id, child);
        Ok(())
    }

    /// SIGKILLs node `id` (no chance to flush anything) and reaps it.
    pub fn kill(&mut self, id: u64) {
        self.resume(id);
        if let Some(mut child) = self.children.remove(&id) {
            let _ = child.kill();
            let _ = child.wait();
            let _ = fs::remove_file(self.root.join(format!("n{id}.pid")));
        }
    }

    /// SIGSTOPs node `id`: it stays alive but silent, like a long GC pause.
    pub fn pause(&mut self, id: u64) {
        if let Some(child) = self.children.get(&id) {
            signal(child.id(), "-STOP");
            self.paused.push(id);
        }
    }

    /// SIGCONTs node `id` if paused.
    pub fn resume(&mut self, id: u64) {
        if let Some(pos) = self.paused.iter().position(|p| *p == id) {
            self.paused.remove(pos);
            if let Some(child) = self.children.get(&id) {
                signal(child.id(), "-CONT");
            }
        }
    }

    /// A node that exited on its own, with its status, if any (a crash the demo did not cause).
    pub fn exited(&mut self) -> Option<(u64, String)> {
        for (id, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                return Some((*id, status.to_string()));
            }
        }
        None
    }

    /// The last `bytes` of node `id`'s log.
    pub fn log_tail(&self, id: u64, bytes: usize) -> String {
        let text = fs::read(self.root.join(format!("n{id}.log"))).unwrap_or_default();
        let from = text.len().saturating_sub(bytes);
        String::from_utf8_lossy(&text[from..]).into_owned()
    }

    /// SIGKILLs every node.
    pub fn kill_all(&mut self) {
        for id in self.node_ids() {
            self.kill(id);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Sends a signal with kill(1) (the crate forbids `unsafe`, so no libc::kill).
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Loopback UDP addresses whose ports were free a moment ago (QUIC runs over UDP).
pub fn free_udp_addrs(count: usize) -> std::io::Result<Vec<SocketAddr>> {
    // Hold every socket until all are chosen, so one port is not handed out twice.
    let sockets: Vec<UdpSocket> =
        (0..count).map(|_| UdpSocket::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    sockets.iter().map(UdpSocket::local_addr).collect()
}
