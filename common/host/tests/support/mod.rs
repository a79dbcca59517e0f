//! A few hosts on in-memory disks, wired by hand: every envelope is delivered at once, in
//! send order, unless a test holds it back.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::fmt::Write as _;

use decree_host::machines::CommandLog;
use decree_host::{
    ClientTag, Directory, GroupSpec, Host, HostConfig, HostEnvelope, HostIo, ReplicatedMachine,
    SnapshotJob,
};
use decree_proto::ErrorResponse;
use decree_raft::disk::MemDisk;
use decree_raft::node::Output;
use decree_types::{ClientId, DetRng, GroupId, HlcTimestamp, NodeId};

pub const MS: u64 = 1_000_000;
/// Physical time is monotonic time plus this (ns since the Unix epoch, about 2023).
pub const EPOCH_NS: u64 = 1_700_000_000_000_000_000;

pub type LogHost = Host<MemDisk, CommandLog>;

/// Everything a host handed to its I/O during one call, in order.
#[derive(Debug)]
pub struct Recorder<M: ReplicatedMachine = CommandLog> {
    pub sent: Vec<(NodeId, Vec<HostEnvelope<M>>)>,
    pub replies: Vec<(ClientTag, HlcTimestamp, M::Response)>,
    pub refusals: Vec<(ClientTag, HlcTimestamp, ErrorResponse)>,
    pub observed: Vec<Output>,
    /// Envelopes the host delivered to its own node.
    pub local: Vec<HostEnvelope<M>>,
    /// Snapshot jobs not yet encoded and handed back.
    pub snapshots: Vec<SnapshotJob<M>>,
    /// Keep snapshot jobs here instead of completing them after each `process`.
    pub hold_snapshots: bool,
    /// Every output as one line each, in order.
    pub log: Vec<String>,
}

impl<M: ReplicatedMachine> Default for Recorder<M> {
    fn default() -> Self {
        Recorder {
            sent: Vec::new(),
            replies: Vec::new(),
            refusals: Vec::new(),
            observed: Vec::new(),
            local: Vec::new(),
            snapshots: Vec::new(),
            hold_snapshots: false,
            log: Vec::new(),
        }
    }
}

impl<M: ReplicatedMachine> HostIo<M> for Recorder<M> {
    fn snapshot(&mut self, job: SnapshotJob<M>) {
        self.log.push(format!("snapshot job {} at {}", job.group, job.index));
        self.snapshots.push(job);
    }

    fn send(&mut self, to: NodeId, envelopes: Vec<HostEnvelope<M>>) {
        for e in &envelopes {
            self.log.push(format!("send {} -> {to}: {:?} {:?}", e.from, e.group, e.payload));
        }
        self.sent.push((to, envelopes));
    }

    fn reply(&mut self, client: ClientTag, clock: HlcTimestamp, response: M::Response) {
        self.log.push(format!("reply {client:?} at {clock}: {response:?}"));
        self.replies.push((client, clock, response));
    }

    fn refuse(&mut self, client: ClientTag, clock: HlcTimestamp, error: ErrorResponse) {
        self.log.push(format!("refuse {client:?} at {clock}: {error:?}"));
        self.refusals.push((client, clock, error));
    }

    fn observe(&mut self, output: &Output) {
        self.log.push(format!("observe {output:?}"));
        self.observed.push(output.clone());
    }

    fn observe_local(&mut self, e: &HostEnvelope<M>) {
        self.log.push(format!("local {}: {:?} {:?}", e.from, e.group, e.payload));
        self.local.push(e.clone());
    }
}

pub struct Cluster<M: ReplicatedMachine = CommandLog> {
    pub hosts: Vec<Host<MemDisk, M>>,
    pub disks: Vec<MemDisk>,
    pub now: u64,
    /// Envelopes not yet delivered: (from, to, envelope).
    pub mail: Vec<(NodeId, NodeId, HostEnvelope<M>)>,
    /// Nodes whose traffic is dropped (both ways).
    pub cut: Vec<NodeId>,
    pub io: Vec<Recorder<M>>,
}

pub fn config() -> HostConfig {
    HostConfig { snapshot_every_entries: 1_000, ..HostConfig::default() }
}

impl Cluster {
    /// `n` hosts, each with a replica of every group of `groups`.
    pub fn new(n: u64, groups: &[u64]) -> Cluster {
        Self::with_config(n, groups, config())
    }

    pub fn with_config(n: u64, groups: &[u64], config: HostConfig) -> Cluster {
        Cluster::with_machines(n, groups, config, |_| CommandLog::new())
    }
}

impl<M: ReplicatedMachine> Cluster<M> {
    /// `n` hosts, each with a replica of every group of `groups`, its machine made by
    /// `machine`.
    pub fn with_machines(
        n: u64,
        groups: &[u64],
        config: HostConfig,
        machine: impl Fn(GroupId) -> M,
    ) -> Cluster<M> {
        let voters: Vec<NodeId> = (1..=n).map(NodeId).collect();
        let directory =
            Directory::new(groups.iter().map(|&g| (GroupId(g), voters.clone())).collect());
        let disks: Vec<MemDisk> = (0..n).map(|_| MemDisk::new()).collect();
        let hosts = (1..=n)
            .map(|i| {
                let specs = groups
                    .iter()
                    .map(|&g| GroupSpec {
                        group: GroupId(g),
                        voters: voters.clone(),
                        machine: machine(GroupId(g)),
                    })
                    .collect();
                Host::open(
                    NodeId(i),
                    config.clone(),
                    specs,
                    directory.clone(),
                    disks[i as usize - 1].clone(),
                    DetRng::new(i),
                    0,
                    EPOCH_NS,
                )
                .expect("a fresh disk opens")
            })
            .collect();
        Cluster {
            hosts,
            disks,
            now: 0,
            mail: Vec::new(),
            cut: Vec::new(),
            io: (0..n).map(|_| Recorder::default()).collect(),
        }
    }

    pub fn wall(&self) -> u64 {
        EPOCH_NS + self.now
    }

    pub fn host(&mut self, id: u64) -> &mut Host<MemDisk, M> {
        &mut self.hosts[id as usize - 1]
    }

    /// Encodes the snapshot jobs `id` holds and hands them back; the host's answers.
    pub fn complete_snapshots(&mut self, id: u64) -> Vec<bool> {
        let jobs = std::mem::take(&mut self.io[id as usize - 1].snapshots);
        let host = &mut self.hosts[id as usize - 1];
        jobs.into_iter()
            .map(|job| {
                host.snapshot_encoded(job.group, job.index, job.encode()).expect("no fatal error")
            })
            .collect()
    }

    /// Processes every host with work, and collects its mail; snapshot jobs are completed at
    /// once unless the host's recorder holds them.
    pub fn process_all(&mut self) {
        let (now, wall) = (self.now, self.wall());
        for (i, host) in self.hosts.iter_mut().enumerate() {
            if host.stopped().is_some() || !host.has_work() {
                continue;
            }
            let io = &mut self.io[i];
            let before = io.sent.len();
            host.process(now, wall, io).expect("no fatal error");
            for (to, envelopes) in io.sent[before..].iter() {
                for e in envelopes {
                    self.mail.push((host.id(), *to, e.clone()));
                }
            }
            if !io.hold_snapshots {
                for job in std::mem::take(&mut io.snapshots) {
                    host.snapshot_encoded(job.group, job.index, job.encode())
                        .expect("no fatal error");
                }
            }
        }
    }

    /// Delivers every envelope sent so far (dropping those to or from a cut node).
    pub fn deliver_all(&mut self) {
        let (now, wall) = (self.now, self.wall());
        for (from, to, envelope) in std::mem::take(&mut self.mail) {
            if self.cut.contains(&from) || self.cut.contains(&to) {
                continue;
            }
            if let Some(host) = self.hosts.get_mut(to.0 as usize - 1) {
                host.handle_envelope(now, wall, from, envelope);
            }
        }
    }

    /// Rounds of process + deliver, until nothing moves (at most `rounds`).
    pub fn settle(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.process_all();
            if self.mail.is_empty() && self.hosts.iter().all(|h| !h.has_work()) {
                return;
            }
            self.deliver_all();
        }
    }

    /// Advances time by `ms` on every host (timeouts), then settles.
    pub fn advance(&mut self, ms: u64, only: Option<u64>) {
        self.now += ms * MS;
        let (now, wall) = (self.now, self.wall());
        for host in &mut self.hosts {
            if only.is_none_or(|o| host.id() == NodeId(o)) {
                host.handle_timeout(now, wall);
            }
        }
        self.settle(20);
    }

    /// Makes `leader` lead every group: its election timer fires first.
    pub fn elect(&mut self, leader: u64) {
        self.advance(10_000, Some(leader));
        self.settle(20);
        for g in self.hosts[0].node().groups().collect::<Vec<_>>() {
            let role = self.hosts[leader as usize - 1].role(g).unwrap();
            assert!(role.is_leader(), "{leader} leads {g}: {role:?}");
        }
    }

    /// A client request to `node`.
    pub fn request(&mut self, node: u64, tag: u64, group: u64, request: M::Request) {
        let (now, wall) = (self.now, self.wall());
        let clock = HlcTimestamp::new(wall, 0);
        self.host(node).handle_client_request(
            now,
            wall,
            ClientId(7),
            ClientTag(tag),
            clock,
            GroupId(group),
            request,
        );
    }

    /// Every log line of every host since the last call, prefixed with the host.
    pub fn take_log(&mut self) -> String {
        let mut out = String::new();
        for (i, io) in self.io.iter_mut().enumerate() {
            for line in io.log.drain(..) {
                let _ = writeln!(out, "n{}: {line}", i + 1);
            }
        }
        out
    }
}
