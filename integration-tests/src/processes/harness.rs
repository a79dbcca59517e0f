//! Runs a cluster of `decree-lognode` processes on loopback: picks free ports, lays out a data
//! directory per node, spawns, SIGKILLs and restarts processes, and kills every child when the
//! [`Cluster`] is dropped, so a failing test or an interrupted demo leaves nothing behind.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use decree_types::NodeId;

/// A directory removed when dropped (unless `DECREE_KEEP_TMP` is set, for post-mortems).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A fresh, empty directory under the system temp dir, named after `label`.
    pub fn new(label: &str) -> std::io::Result<TempDir> {
        TempDir::new_in(&std::env::temp_dir(), label)
    }

    /// A fresh, empty directory under `parent`, named after `label`.
    pub fn new_in(parent: &Path, label: &str) -> std::io::Result<TempDir> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let path = parent.join(format!("{label}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("DECREE_KEEP_TMP").is_some() {
            eprintln!("keeping {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Loopback addresses with ports that were free a moment ago (UDP: QUIC's transport).
pub fn free_udp_addrs(count: usize) -> std::io::Result<Vec<SocketAddr>> {
    // Hold every socket until all are chosen, so the same port is not handed out twice.
    let sockets: Vec<UdpSocket> =
        (0..count).map(|_| UdpSocket::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    sockets.iter().map(|s| s.local_addr()).collect()
}

/// Everything needed to start the nodes of one cluster.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The `decree-lognode` executable.
    pub binary: PathBuf,
    /// Root directory: `certs/`, `n<id>/` data directories and `n<id>.log` files.
    pub root: PathBuf,
    /// Directory of certificates every node and the client use.
    pub certs: PathBuf,
    /// Node ids and their listen addresses.
    pub nodes: BTreeMap<NodeId, SocketAddr>,
    /// Groups every node hosts (ids 1..=groups).
    pub groups: u64,
    /// Extra arguments for every node (e.g. faster election timeouts for tests).
    pub extra_args: Vec<String>,
}

impl ClusterSpec {
    /// A spec for `n` nodes on fresh loopback ports under `root`.
    pub fn local(binary: PathBuf, root: &Path, n: u64, groups: u64) -> std::io::Result<Self> {
        let addrs = free_udp_addrs(n as usize)?;
        let nodes = (1..=n).map(NodeId).zip(addrs).collect();
        Ok(ClusterSpec {
            binary,
            root: root.to_path_buf(),
            certs: root.join("certs"),
            nodes,
            groups,
            extra_args: Vec::new(),
        })
    }

    /// The data directory of `node`.
    pub fn data_dir(&self, node: NodeId) -> PathBuf {
        self.root.join(format!("n{}", node.0))
    }

    /// The log file of `node` (appended to across restarts).
    pub fn log_file(&self, node: NodeId) -> PathBuf {
        self.root.join(format!("n{}.log", node.0))
    }

    /// The command line that starts `node`.
    pub fn command(&self, node: NodeId) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--id").arg(node.0.to_string());
        if let Some(addr) = self.nodes.get(&node) {
            cmd.arg("--listen").arg(addr.to_string());
        }
        for (peer, addr) in &self.nodes {
            if *peer != node {
                cmd.arg("--peer").arg(format!("{}={addr}", peer.0));
            }
        }
        cmd.arg("--data").arg(self.data_dir(node));
        cmd.arg("--certs").arg(&self.certs);
        cmd.arg("--groups").arg(self.groups.to_string());
        cmd.args(&self.extra_args);
        cmd
    }
}

/// A running cluster of node processes. Dropping it SIGKILLs every child.
#[derive(Debug)]
pub struct Cluster {
    spec: ClusterSpec,
    children: BTreeMap<NodeId, Child>,
    /// How many times each node was started.
    pub starts: BTreeMap<NodeId, u32>,
}

impl Cluster {
    /// Starts every node of `spec`.
    pub fn start(spec: ClusterSpec) -> std::io::Result<Cluster> {
        let mut cluster = Cluster { spec, children: BTreeMap::new(), starts: BTreeMap::new() };
        let ids: Vec<NodeId> = cluster.spec.nodes.keys().copied().collect();
        for id in ids {
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    /// The spec the cluster runs.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// Starts (or restarts) `node` on its data directory. A node still running is left alone.
    pub fn start_node(&mut self, node: NodeId) -> std::io::Result<()> {
        if self.is_running(node) {
            return Ok(());
        }
        let log = OpenOptions::new().create(true).append(true).open(self.spec.log_file(node))?;
        let mut cmd = self.spec.command(node);
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd.spawn()?;
        // The pid file lets a wrapping script clean up even if this process dies first.
        fs::write(self.spec.root.join(format!("n{}.pid", node.0)), child.id().to_string())?;
        self.children.insert(node, child);
        *self.starts.entry(node).or_default() += 1;
        Ok(())
    }

    /// SIGKILLs `node` (no chance to flush or say goodbye) and reaps it.
    pub fn kill_node(&mut self, node: NodeId) {
        if let Some(mut child) = self.children.remove(&node) {
            // Child::kill sends SIGKILL on Unix.
            let _ = child.kill();
            let _ = child.wait();
            let _ = fs::remove_file(self.spec.root.join(format!("n{}.pid", node.0)));
        }
    }

    /// Sends SIGTERM to `node` and waits (at most `timeout`) for it to exit; returns its exit
    /// status, or `None` if it did not exit in time (it is then SIGKILLed).
    pub fn terminate_node(&mut self, node: NodeId, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.children.remove(&node)?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = std::time::Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let _ = fs::remove_file(self.spec.root.join(format!("n{}.pid", node.0)));
        status
    }

    /// The OS process id of `node`, if it runs.
    pub fn pid(&self, node: NodeId) -> Option<u32> {
        self.children.get(&node).map(Child::id)
    }

    /// `true` if `node`'s process is alive.
    pub fn is_running(&mut self, node: NodeId) -> bool {
        match self.children.get_mut(&node) {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Nodes whose process exited on its own, with the exit status (a crash, a fatal error).
    pub fn exited(&mut self) -> Vec<(NodeId, String)> {
        let mut out = Vec::new();
        for (node, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                out.push((*node, status.to_string()));
            }
        }
        out
    }

    /// The last `bytes` bytes of `node`'s log, for failure reports.
    pub fn log_tail(&self, node: NodeId, bytes: u64) -> String {
        let mut out = String::new();
        if let Ok(mut f) = File::open(self.spec.log_file(node)) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(bytes)));
            let _ = f.read_to_string(&mut out);
        }
        out
    }

    /// Every node's log tail, for a failure message.
    pub fn all_log_tails(&self, bytes: u64) -> String {
        self.spec
            .nodes
            .keys()
            .map(|n| format!("----- {n} log tail -----\n{}", self.log_tail(*n, bytes)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGKILLs every node.
    pub fn kill_all(&mut self) {
        let ids: Vec<NodeId> = self.children.keys().copied().collect();
        for id in ids {
            self.kill_node(id);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}
