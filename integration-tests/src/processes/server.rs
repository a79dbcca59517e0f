//! Runs a cluster of `decree start` server processes on loopback: certificates from a fresh
//! CA, one shared `cluster.toml` (`decree_server::ClusterSpec::local`), one `node.toml` and data
//! directory per node; starts, SIGKILLs and restarts processes and kills every child when the
//! [`ServerCluster`] is dropped.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use decree_proto::admin::{ClusterStatus, ClusterStatusReply};
use decree_proto::envelope::NODE_GROUP;
use decree_proto::{Envelope, Payload, Request, RequestId, Response};
use decree_runtime::certs::{load_identity, write_dir};
use decree_runtime::Peer;
use decree_server::ClusterSpec;
use decree_types::{HlcTimestamp, NodeId};

/// The client certificate name the harness issues.
pub const CLIENT_NAME: &str = "tester";

/// The `decree` executable, built (or found up to date) by cargo next to this test binary.
pub fn decree_binary() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // <target>/<profile>/deps/<test> -> <target>/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| std::io::Error::other("test binary has no target directory"))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // The `test` profile writes to the same directory as this test binary and shares its
    // dependencies' artifacts, so the build is quick.
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--profile", "test", "-p", "decree-cli", "--bin", "decree"])
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!("building decree failed: {status}")));
    }
    Ok(dir.join("decree"))
}

/// A base port such that `base + 1 ..= base + n` are free UDP ports on loopback a moment ago.
pub fn free_port_base(n: u16) -> std::io::Result<u16> {
    for _ in 0..200 {
        let probe = UdpSocket::bind("127.0.0.1:0")?;
        let base = probe.local_addr()?.port().saturating_sub(1);
        drop(probe);
        if base < 1024 || base > u16::MAX - n {
            continue;
        }
        let held: Result<Vec<UdpSocket>, _> =
            (1..=n).map(|i| UdpSocket::bind(("127.0.0.1", base + i))).collect();
        if held.is_ok() {
            return Ok(base);
        }
    }
    Err(std::io::Error::other("no free run of UDP ports found"))
}

/// A cluster of server processes under one root directory.
#[derive(Debug)]
pub struct ServerCluster {
    binary: PathBuf,
    root: PathBuf,
    /// The cluster description every node shares.
    pub spec: ClusterSpec,
    children: BTreeMap<NodeId, Child>,
}

impl ServerCluster {
    /// Writes certificates, `cluster.toml` and one `node.toml` per node under `root` for
    /// `ClusterSpec::local(nodes, participant_groups, <free ports>)`, with test timings (50 ms
    /// heartbeats, 300-600 ms election timeouts). Starts nothing.
    pub fn prepare(
        binary: PathBuf,
        root: &Path,
        nodes: u64,
        participant_groups: u64,
    ) -> std::io::Result<ServerCluster> {
        let base = free_port_base(nodes as u16)?;
        let spec = ClusterSpec::local(nodes, participant_groups, base);
        let ids: Vec<NodeId> = (1..=nodes).map(NodeId).collect();
        write_dir(&root.join("certs"), &ids, &[CLIENT_NAME.to_string()], &[], false)
            .map_err(std::io::Error::other)?;
        let text = toml::to_string(&spec).map_err(std::io::Error::other)?;
        fs::write(root.join("cluster.toml"), text)?;
        for n in &spec.nodes {
            let node = format!(
                "node_id = {id}\nlisten = \"{addr}\"\ndata_dir = \"n{id}\"\ncerts_dir = \"certs\"\n\
                 cluster = \"cluster.toml\"\n\n[timing]\nheartbeat_ms = 50\n\
                 election_timeout_min_ms = 300\nelection_timeout_max_ms = 600\n",
                id = n.id,
                addr = n.addr
            );
            fs::write(root.join(format!("node-{}.toml", n.id)), node)?;
        }
        Ok(ServerCluster { binary, root: root.to_path_buf(), spec, children: BTreeMap::new() })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `node`'s configuration file.
    pub fn node_config(&self, node: NodeId) -> PathBuf {
        self.root.join(format!("node-{}.toml", node.0))
    }

    /// `node`'s log file (appended to across restarts).
    pub fn log_file(&self, node: NodeId) -> PathBuf {
        self.root.join(format!("n{}.log", node.0))
    }

    /// The command line `decree start --config <node.toml>` of `node`.
    pub fn command(&self, node: NodeId) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("start").arg("--config").arg(self.node_config(node));
        cmd
    }

    /// Runs `decree start` for `node` to completion with a deadline (for commands expected to
    /// fail at once); `None` if it still ran after `timeout` (it is then killed).
    pub fn run_to_exit(&self, mut cmd: Command, timeout: Duration) -> Option<Output> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.env("RUST_LOG", "warn");
        let mut child = cmd.spawn().ok()?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return child.wait_with_output().ok(),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    /// Starts every node.
    pub fn start_all(&mut self) -> std::io::Result<()> {
        let ids: Vec<NodeId> = self.spec.nodes.iter().map(|n| NodeId(n.id)).collect();
        for id in ids {
            self.start_node(id)?;
        }
        Ok(())
    }

    /// Starts (or restarts) `node` on its data directory.
    pub fn start_node(&mut self, node: NodeId) -> std::io::Result<()> {
        let log = OpenOptions::new().create(true).append(true).open(self.log_file(node))?;
        let mut cmd = self.command(node);
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        self.children.insert(node, cmd.spawn()?);
        Ok(())
    }

    /// SIGKILLs `node` and reaps it.
    pub fn kill_node(&mut self, node: NodeId) {
        if let Some(mut child) = self.children.remove(&node) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM to `node` and waits at most `timeout`; its exit code, or `None` if it
    /// did not exit in time (it is then SIGKILLed) or died of a signal.
    pub fn terminate_node(&mut self, node: NodeId, timeout: Duration) -> Option<i32> {
        let mut child = self.children.remove(&node)?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.code(),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    /// Every node's log tail, for failure messages.
    pub fn log_tails(&self, bytes: u64) -> String {
        let mut out = String::new();
        for n in &self.spec.nodes {
            let mut text = String::new();
            if let Ok(mut f) = File::open(self.log_file(NodeId(n.id))) {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = f.seek(SeekFrom::Start(len.saturating_sub(bytes)));
                let _ = f.read_to_string(&mut text);
            }
            out.push_str(&format!("----- n{} log tail -----\n{text}\n", n.id));
        }
        out
    }

    /// The client configuration for the harness's client certificate.
    pub fn client_config(&self) -> Result<decree_client::ClientConfig, decree_client::Error> {
        Ok(decree_client::ClientConfig::load(
            &self.root.join("cluster.toml"),
            &self.root.join("certs"),
            CLIENT_NAME,
        )?)
    }

    /// A raw proto link to every node, as the client library's own link.
    pub fn link(&self) -> std::io::Result<decree_client::QuicLink> {
        let identity = load_identity(&self.root.join("certs"), &Peer::Client(CLIENT_NAME.into()))
            .map_err(std::io::Error::other)?;
        let nodes = self.spec.addresses();
        decree_client::QuicLink::new(identity, nodes).map_err(std::io::Error::other)
    }
}

impl Drop for ServerCluster {
    fn drop(&mut self) {
        let ids: Vec<NodeId> = self.children.keys().copied().collect();
        for id in ids {
            self.kill_node(id);
        }
    }
}

/// Asks `node` for its `ClusterStatus` (a node-level request) over `link`.
pub async fn cluster_status(
    link: &dyn decree_client::Link,
    node: NodeId,
) -> Result<ClusterStatusReply, String> {
    let envelope = Envelope {
        from: NodeId(0),
        group: NODE_GROUP,
        sender_clock: HlcTimestamp::default(),
        payload: Payload::Request {
            request_id: RequestId(1),
            request: Request::ClusterStatus(ClusterStatus { in_doubt_max: 100 }),
        },
    };
    let reply =
        link.call(node, envelope, Duration::from_secs(2)).await.map_err(|e| e.to_string())?;
    match reply.payload {
        Payload::Response { request_id: RequestId(1), response: Response::ClusterStatus(s) } => {
            Ok(s)
        }
        other => Err(format!("unexpected answer {other:?}")),
    }
}
