//! The host: one per process. It owns the multi-group Raft [`Node`], the replicated state
//! machine of every group the process hosts, the proposal table, the HLC with its
//! [`OffsetMonitor`], and the envelope checks. Sans-I/O and deterministic: inputs are
//! `handle_*` calls with the time (`now_ns`, monotonic) and the physical clock (`wall_ns`, ns
//! since the Unix epoch); outputs leave through [`HostIo`] during [`Host::process`].
//!
//! # One [`Host::process`] iteration
//!
//! 1. **Node** ([`Node::process_io`]): every group's `Ready` is persisted with one fsync;
//!    Raft messages leave as envelopes through [`HostIo::send`] — before the fsync those that
//!    acknowledge nothing durable, after it the rest (RAFT-1: the node's `AfterSync` makes it
//!    so). Small Raft messages of all groups for one peer travel in one
//!    [`Payload::RaftBatch`]; entries and snapshot chunks one [`Payload::Raft`] envelope each.
//! 2. **Apply, early**: committed entries this replica already holds durably are applied
//!    while the node works (the node's step 2½), and their requests answered at once.
//! 3. **Apply, the rest**, per group in the node's order: the role ([`RoleEvent`]s), a
//!    snapshot to restore, committed entries, reads that became servable.
//! 4. **Proposals** the machines asked for during apply (they need the node, which was busy).
//! 5. **Local delivery**: envelopes addressed to this node itself (below), in rounds.
//! 6. **Snapshots** of groups that applied [`HostConfig::snapshot_every_entries`] entries: the
//!    host takes the machine's view ([`ReplicatedMachine::snapshot`], O(1) for the product's
//!    machines) and hands it out as a [`SnapshotJob`] through [`HostIo::snapshot`]. It does not
//!    encode it: the embedding layer does, wherever it likes (the node shell on a worker
//!    thread, the simulator after a seeded delay, tests at once), and hands the bytes back
//!    with [`Host::snapshot_encoded`], which gives them to the node.
//! 7. **Flush**: host envelopes (requests and responses of machines, clock probes and echoes,
//!    refusals) one [`HostIo::send`] per peer, and client answers through [`HostIo::reply`]
//!    and [`HostIo::refuse`].
//!
//! # Envelopes to this node itself
//!
//! A machine's request to a group whose leader is this node, and the answer to it (a
//! coordinator's `Prepare` to a participant group led on the same node, and its vote), never
//! leave the host: [`HostIo::send`] is never called with this node's id. Such an envelope is
//! queued when a machine's effect (or an answer) produces it, and delivered in step 5 — never
//! inside the call that produced it, so a machine's [`ReplicatedMachine::handle_response`] is
//! never re-entered from its own `admit`, `apply`, `on_role` or `handle_timeout`. One round
//! delivers everything queued before it, then runs the proposals the deliveries asked for; a
//! request answered at once takes two rounds. At most [`HOST_LOCAL_ROUNDS_MAX`] rounds run per
//! [`Host::process`]; what is left waits for the next one ([`Host::has_work`] says so).
//! Envelopes queued by `handle_*` calls are delivered by the next [`Host::process`]. A local
//! envelope is not checked as a peer's is: its sender is this node, and its clock is this
//! host's own HLC, already observed.
//!
//! # Entries
//!
//! A machine's command is written to the log as `EntryPayload::Command(postcard((proposed_at,
//! command)))`: `proposed_at` is the leader's HLC reading when it proposed. Apply decodes it;
//! an entry that does not decode is corruption and stops the host. After applying, the host
//! observes `proposed_at` into its HLC.
//!
//! # The proposal table
//!
//! A request that led to a proposal waits under the `(index, term)` the node gave the entry.
//! When that index is applied with that term, what `apply` returned is the answer; with
//! another term (or a no-op), or when the replica steps down first, the answer is the
//! `on_lost` the machine gave. Requests a machine keeps ([`Admission::Later`]) are answered
//! with [`ReplicatedMachine::redirect`] when this replica stops leading their group.
//!
//! # Envelope checks
//!
//! An envelope is taken only from the node its certificate names (`from == peer`); node-level
//! payloads ([`Payload::RaftBatch`], clock probes) only with the group [`NODE_GROUP`]. Clock
//! probes and echoes come before the HLC-3 check (a node whose clock lags must still measure
//! the peers HLC-3 makes it refuse); everything else first moves the HLC above the sender's
//! clock (HLC-2) or is refused with [`ErrorResponse::ClockRejected`] without moving it (HLC-3).
//!
//! # Snapshots
//!
//! A group has at most one [`SnapshotJob`] out at a time. The view is immutable, so applies
//! that happen while it is encoded do not change it: the bytes are the state as of the job's
//! index. When they come back the group may have moved on: if it restored a newer snapshot
//! meanwhile (or is gone, or the host stopped), the node refuses the old one and
//! [`Host::snapshot_encoded`] drops it; nothing else changes.
//!
//! # Clock offsets (HLC-6)
//!
//! Once per [`HostConfig::clock_probe_interval_ns`] the host checks the offsets measured so
//! far and sends every peer a `ClockProbe`; the echo is one measurement. A host whose clock is
//! certainly off from a strict majority of its peers stops: [`Host::stopped`] says why, and
//! every later [`Host::process`] fails.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use decree_proto::envelope::{Payload, NODE_GROUP};
use decree_proto::limits::RAFT_BATCH_MESSAGES_MAX;
use decree_proto::{ErrorResponse, RequestId};
use decree_raft::msg::{Entry, EntryPayload, Message};
use decree_raft::node::{
    self, Batch, EarlyOutputs, Node, NodeConfig, Output, ProposeError, SnapshotRequestError,
    Transport,
};
use decree_raft::ready::SoftState;
use decree_raft::Disk;
use decree_types::limits::{
    HEARTBEAT_INTERVAL_MS, HOST_LOCAL_ROUNDS_MAX, HOST_OUTSTANDING_REQUESTS_MAX, HOST_WAITERS_MAX,
    MAX_OFFSET_NS, NS_PER_MS, OFFSET_MEASUREMENT_TTL_MS, SNAPSHOT_EVERY_ENTRIES,
};
use decree_types::{
    ClientId, DetRng, GroupId, HlcTimestamp, LogIndex, NodeId, OffsetError, OffsetMeasurement,
    OffsetMonitor, Term,
};

use crate::machine::{
    Admission, Applied, ApplyContext, Context, Destination, Effect, HostClock, PeerError,
    ReplicatedMachine, ReplyTo, Requester, Role, RoleEvent,
};

/// Settings of a host.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The Raft node's settings.
    pub node: NodeConfig,
    /// The HLC's maximum tolerated offset between nodes, ns (HLC-3).
    pub max_offset_ns: u64,
    /// How often each peer's clock is probed and the offsets checked (HLC-6), ns.
    pub clock_probe_interval_ns: u64,
    /// Snapshot a group after this many applied entries since its last snapshot.
    pub snapshot_every_entries: u64,
}

impl Default for HostConfig {
    /// The product's defaults, from `decree_types::limits`.
    fn default() -> Self {
        HostConfig {
            node: NodeConfig::default(),
            max_offset_ns: MAX_OFFSET_NS,
            clock_probe_interval_ns: HEARTBEAT_INTERVAL_MS * NS_PER_MS,
            snapshot_every_entries: SNAPSHOT_EVERY_ENTRIES,
        }
    }
}

/// One group this host runs a replica of: its voters and its machine.
#[derive(Debug)]
pub struct GroupSpec<M> {
    /// The group.
    pub group: GroupId,
    /// Its voters (this node among them).
    pub voters: Vec<NodeId>,
    /// Its state machine, empty (a recovered snapshot is restored into it).
    pub machine: M,
}

/// Where the groups' replicas live: for [`Destination::LeaderOf`] routing (the host keeps
/// the leader hints) and for the peers whose clocks are probed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    replicas: BTreeMap<GroupId, Vec<NodeId>>,
}

impl Directory {
    /// A directory of `(group, replicas)` pairs.
    pub fn new(groups: Vec<(GroupId, Vec<NodeId>)>) -> Self {
        Directory { replicas: groups.into_iter().collect() }
    }

    /// The replicas of `group` (empty if unknown).
    pub fn replicas(&self, group: GroupId) -> &[NodeId] {
        self.replicas.get(&group).map_or(&[], Vec::as_slice)
    }

    /// Every node named, in order.
    pub fn nodes(&self) -> BTreeSet<NodeId> {
        self.replicas.values().flatten().copied().collect()
    }
}

/// Names a waiting client request; chosen by the shell or simulator, opaque to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientTag(pub u64);

/// The envelope a host of `M` sends and receives.
pub type HostEnvelope<M> =
    decree_proto::Envelope<<M as ReplicatedMachine>::Request, <M as ReplicatedMachine>::Response>;

/// Where a host's outputs go: the QUIC shell, the simulator, or a test.
pub trait HostIo<M: ReplicatedMachine> {
    /// A snapshot view to encode (step 6). Encode it with [`SnapshotJob::encode`], anywhere
    /// (it is `Send`), and give the bytes to [`Host::snapshot_encoded`]; until then the group
    /// takes no other snapshot. A job may be dropped only together with the host.
    fn snapshot(&mut self, job: SnapshotJob<M>);

    /// Envelopes for one peer, in order (coalesced small Raft messages as one
    /// [`Payload::RaftBatch`], bulk Raft messages one envelope each, requests, responses,
    /// clock probes and echoes, errors). An iteration calls it at most once per peer before
    /// its fsync, once after it, and once at its end. `to` is never this node: the host
    /// delivers envelopes to itself (module docs).
    fn send(&mut self, to: NodeId, envelopes: Vec<HostEnvelope<M>>);

    /// The answer to a client request, with this node's HLC reading (the client's clock
    /// advances with it).
    fn reply(&mut self, client: ClientTag, clock: HlcTimestamp, response: M::Response);

    /// A client request the host refused without asking a machine: the clock reading is too
    /// far ahead (HLC-3), the group is not hosted here, too many requests wait, or the host
    /// stopped.
    fn refuse(&mut self, client: ClientTag, clock: HlcTimestamp, error: ErrorResponse);

    /// Every output of the node, just before the host acts on it (for the simulator's
    /// checkers and for traces; the shell ignores it).
    fn observe(&mut self, output: &Output) {
        let _ = output;
    }

    /// An envelope the host addressed to its own node, as it delivers it to itself (it never
    /// goes through [`HostIo::send`]); for the simulator's checkers and for traces.
    fn observe_local(&mut self, envelope: &HostEnvelope<M>) {
        let _ = envelope;
    }
}

/// A snapshot of one group's machine as of `index`, to be encoded off the node thread. See
/// the module docs, "Snapshots".
pub struct SnapshotJob<M: ReplicatedMachine> {
    /// The group.
    pub group: GroupId,
    /// The last index applied to the view.
    pub index: LogIndex,
    /// The machine's immutable view of its replicated state at `index`.
    pub view: M::Snapshot,
}

impl<M: ReplicatedMachine> SnapshotJob<M> {
    /// The encoded view, for [`Host::snapshot_encoded`]. Both the encoding and the one copy
    /// into a shared buffer happen here, on the caller's thread; the node keeps that buffer.
    pub fn encode(&self) -> Arc<[u8]> {
        Arc::from(M::encode_snapshot(&self.view))
    }
}

impl<M: ReplicatedMachine> std::fmt::Debug for SnapshotJob<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotJob")
            .field("group", &self.group)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// An error that stops the host; every later [`Host::process`] fails.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    /// The node stopped (a failed fsync, corruption in the WAL, a bug).
    #[error(transparent)]
    Node(#[from] node::Fatal),
    /// A committed entry does not decode as the machine's command: corruption.
    #[error("{group} entry {index} does not decode: {detail}")]
    CorruptEntry {
        /// The group.
        group: GroupId,
        /// The entry's index.
        index: LogIndex,
        /// The decoder's complaint.
        detail: String,
    },
    /// A snapshot does not restore into the machine: corruption.
    #[error("{group} snapshot at {index} does not restore: {detail}")]
    CorruptSnapshot {
        /// The group.
        group: GroupId,
        /// The snapshot's last index.
        index: LogIndex,
        /// The machine's complaint.
        detail: String,
    },
    /// HLC-6: this node's clock is off from a majority of its peers.
    #[error(transparent)]
    ClockOffset(#[from] OffsetError),
    /// The host had already stopped for `cause`.
    #[error("host stopped earlier: {0}")]
    Stopped(String),
}

impl Fatal {
    /// Did the disk fail (as opposed to a bug, corruption or a clock)? The simulator injects
    /// disk failures on purpose.
    pub fn is_disk_failure(&self) -> bool {
        matches!(self, Fatal::Node(f) if f.is_disk_failure())
    }

    /// Did the host stop because its clock is off from a majority of its peers (HLC-6)?
    pub fn is_clock_offset(&self) -> bool {
        matches!(self, Fatal::ClockOffset(_))
    }
}

/// Counters of what the host refused or dropped (peer input never fails a host).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Envelopes refused: wrong sender (or this node's own id from the network), wrong group
    /// for a node-level payload, clock too far ahead, a measurement that does not make sense.
    pub refused: u64,
    /// Responses that matched no outstanding request (late, duplicated, forgotten).
    pub unmatched: u64,
    /// Requests refused because too many wait already.
    pub busy: u64,
}

/// One process's host. See the module docs.
#[derive(Debug)]
pub struct Host<D: Disk, M: ReplicatedMachine> {
    node: Node<D>,
    st: State<M>,
}

/// Everything of the host but the node, so that apply can run while the node is borrowed by
/// its own iteration.
#[derive(Debug)]
struct State<M: ReplicatedMachine> {
    id: NodeId,
    config: HostConfig,
    groups: BTreeMap<GroupId, Group<M>>,
    directory: Directory,
    /// Leaders learned from machines' hints (for groups not hosted here).
    hints: BTreeMap<GroupId, NodeId>,
    clock: HostClock,
    offsets: OffsetMonitor,
    /// Monotonic time at which the next round of clock probes is due.
    next_probe_ns: u64,
    now_ns: u64,
    /// The proposal table: `(group, index)` of a proposed entry, with its term.
    proposals: BTreeMap<(GroupId, LogIndex), Waiter<M>>,
    /// Every request waiting for an answer, and where the answer goes.
    origins: BTreeMap<ReplyTo, Origin>,
    next_reply_to: u64,
    /// Shared by every machine: request ids are unique per host.
    next_request_id: u64,
    /// Requests machines sent: which group's machine the answer goes to.
    outstanding: BTreeMap<RequestId, GroupId>,
    /// Reads waiting for their read index (RAFT-3), by the context given to the node.
    reads: BTreeMap<u64, PendingRead<M>>,
    next_read_ctx: u64,
    /// Proposals machines asked for while the node was busy.
    deferred: Vec<Deferred<M>>,
    /// Proposals the node refused while its group's leadership transfer was under way
    /// (RAFT-6), in order: proposed when the transfer ends with this replica still leading,
    /// answered `on_lost` when it steps down. A machine's proposal is never dropped while it
    /// leads, so the leader-only state it keeps for one (a lock-table entry, an attempt) is
    /// always settled by the entry's apply or by a role event. Bounded by the transfer's
    /// deadline (an election timeout) and, for requests, by [`HOST_WAITERS_MAX`].
    held: Vec<Deferred<M>>,
    /// Kept requests machines handed back ([`Context::readmit`]), to admit again.
    readmits: Vec<(GroupId, Requester, ReplyTo, M::Request)>,
    /// Responses to machines' own requests that could not be routed (no replica known).
    no_route: Vec<(GroupId, RequestId, GroupId)>,
    outbox: BTreeMap<NodeId, Vec<HostEnvelope<M>>>,
    /// Envelopes to this node itself, delivered in step 5 (module docs).
    local: Vec<HostEnvelope<M>>,
    client_out: Vec<ClientOut<M>>,
    stopped: Option<String>,
    /// Set when HLC-6 stopped the host: every later `process` fails with it.
    clock_stop: Option<OffsetError>,
    stats: HostStats,
}

/// A proposal a machine asked for while the node was busy: its group, the command, and the
/// request waiting for it with its `on_lost` answer.
type Deferred<M> = (
    GroupId,
    <M as ReplicatedMachine>::Command,
    Option<(ReplyTo, <M as ReplicatedMachine>::Response)>,
);

#[derive(Debug)]
struct Group<M> {
    machine: M,
    role: Role,
    /// Last applied index (commands and no-ops).
    applied: LogIndex,
    /// Last applied index at the last snapshot (handed out to encode, or restored).
    snapshotted: LogIndex,
    /// The index of the [`SnapshotJob`] handed out and not yet back (at most one).
    encoding: Option<LogIndex>,
    /// Last applied index reported to the node (`Node::on_applied`).
    reported: LogIndex,
    /// Requests the machine keeps ([`Admission::Later`]).
    kept: BTreeSet<ReplyTo>,
}

#[derive(Debug)]
struct Waiter<M: ReplicatedMachine> {
    term: Term,
    reply_to: ReplyTo,
    on_lost: M::Response,
}

#[derive(Debug)]
struct PendingRead<M: ReplicatedMachine> {
    requester: Requester,
    reply_to: ReplyTo,
    request: M::Request,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    Client(ClientTag),
    Peer { node: NodeId, group: GroupId, request_id: RequestId },
}

#[derive(Debug)]
enum ClientOut<M: ReplicatedMachine> {
    Reply(ClientTag, HlcTimestamp, M::Response),
    Refuse(ClientTag, HlcTimestamp, ErrorResponse),
}

impl<D: Disk, M: ReplicatedMachine> Host<D, M> {
    /// Opens the host of node `id` on `disk`: recovers the node and starts one replica per
    /// group of `groups` (a recovered snapshot is restored into its machine by the first
    /// [`Host::process`], before any entry is applied).
    #[allow(clippy::too_many_arguments, reason = "the host's inputs, each named")]
    pub fn open(
        id: NodeId,
        config: HostConfig,
        groups: Vec<GroupSpec<M>>,
        directory: Directory,
        disk: D,
        rng: DetRng,
        now_ns: u64,
        wall_ns: u64,
    ) -> Result<Self, Fatal> {
        let node_groups = groups.iter().map(|g| (g.group, g.voters.clone())).collect();
        let node = Node::open(id, node_groups, disk, config.node.clone(), rng, now_ns)?;
        let groups = groups
            .into_iter()
            .map(|g| {
                let group = Group {
                    machine: g.machine,
                    role: Role::Follower { term: Term(0), leader: None },
                    applied: LogIndex(0),
                    snapshotted: LogIndex(0),
                    encoding: None,
                    reported: LogIndex(0),
                    kept: BTreeSet::new(),
                };
                (g.group, group)
            })
            .collect();
        // A measurement lives for ten probe rounds (the limits' TTL at the default interval).
        let ttl_ns = OFFSET_MEASUREMENT_TTL_MS * NS_PER_MS / (HEARTBEAT_INTERVAL_MS * NS_PER_MS)
            * config.clock_probe_interval_ns;
        let offsets = OffsetMonitor::new(config.max_offset_ns, ttl_ns);
        let st = State {
            id,
            clock: HostClock::new(config.max_offset_ns, wall_ns),
            offsets,
            next_probe_ns: now_ns,
            now_ns,
            config,
            groups,
            directory,
            hints: BTreeMap::new(),
            proposals: BTreeMap::new(),
            origins: BTreeMap::new(),
            next_reply_to: 0,
            // Ids of an earlier incarnation must not match this one's requests: start above
            // any id it can have used (one per ns at most).
            next_request_id: wall_ns,
            outstanding: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_read_ctx: 1,
            deferred: Vec::new(),
            held: Vec::new(),
            readmits: Vec::new(),
            no_route: Vec::new(),
            outbox: BTreeMap::new(),
            local: Vec::new(),
            client_out: Vec::new(),
            stopped: None,
            clock_stop: None,
            stats: HostStats::default(),
        };
        Ok(Host { node, st })
    }

    /// An envelope from `peer` (the node its certificate names). Never fails: whatever is
    /// refused is counted, and a refused request is answered with an error.
    pub fn handle_envelope(
        &mut self,
        now_ns: u64,
        wall_ns: u64,
        peer: NodeId,
        envelope: HostEnvelope<M>,
    ) {
        self.st.set_time(now_ns, wall_ns);
        if self.st.stopped.is_some() {
            return;
        }
        let decree_proto::Envelope { from, group, sender_clock, payload } = envelope;
        if peer == self.st.id {
            // This node's envelopes to itself never cross the network (module docs): one
            // that does carries a copy of this node's certificate.
            self.st.stats.refused += 1;
            tracing::warn!(%peer, "envelope from this node's own identity; dropped");
            return;
        }
        if from != peer {
            // The claimed sender is not the authenticated one: drop it, answer nobody.
            self.st.stats.refused += 1;
            tracing::warn!(cert = %peer, claimed = %from, "envelope from another sender; dropped");
            return;
        }
        // The codec checks these bounds on every decode; a host fed decoded envelopes by
        // other means (the simulator) checks them here.
        if let Err(e) = payload.validate_transport() {
            self.st.stats.refused += 1;
            tracing::warn!(%peer, "envelope over a bound: {e}");
            return;
        }
        let node_level = matches!(
            payload,
            Payload::RaftBatch(_) | Payload::ClockProbe { .. } | Payload::ClockEcho { .. }
        );
        if node_level != (group == NODE_GROUP) {
            self.st.stats.refused += 1;
            tracing::warn!(%peer, %group, "payload does not belong to this group; dropped");
            return;
        }
        // HLC-6 traffic carries physical readings only and bypasses HLC-3.
        match payload {
            Payload::ClockProbe { sent_pt } => {
                let echo = Payload::ClockEcho { sent_pt, remote_pt: wall_ns };
                self.st.queue(peer, NODE_GROUP, echo);
                return;
            }
            Payload::ClockEcho { sent_pt, remote_pt } => {
                match OffsetMeasurement::from_round_trip(sent_pt, remote_pt, wall_ns) {
                    Some(m) => {
                        if !self.st.offsets.record(peer, m) {
                            tracing::debug!(%peer, "clock echo after too long a round trip: {m:?}");
                        }
                    }
                    None => self.st.stats.refused += 1,
                }
                return;
            }
            _ => {}
        }
        // HLC-2, or HLC-3: refused without moving the clock.
        if let Err(e) = self.st.clock.hlc.update(wall_ns, sender_clock) {
            self.st.stats.refused += 1;
            tracing::warn!(%peer, "{e}");
            if let Some(request_id) = payload.request_id() {
                let error = Payload::Error { in_reply_to: Some(request_id), error: e.into() };
                self.st.queue(peer, group, error);
            }
            return;
        }
        self.dispatch(peer, group, payload);
        self.run_deferred();
    }

    /// A request from a client (named by its certificate), for `group`. The answer comes out
    /// of a later [`Host::process`] as [`HostIo::reply`] or [`HostIo::refuse`] with `tag`.
    #[allow(clippy::too_many_arguments, reason = "the request's parts, each named")]
    pub fn handle_client_request(
        &mut self,
        now_ns: u64,
        wall_ns: u64,
        client: ClientId,
        tag: ClientTag,
        sender_clock: HlcTimestamp,
        group: GroupId,
        request: M::Request,
    ) {
        self.st.set_time(now_ns, wall_ns);
        if let Some(cause) = &self.st.stopped {
            let error = ErrorResponse::Unavailable { detail: format!("node stopped: {cause}") };
            self.st.refuse_client(tag, error);
            return;
        }
        if let Err(e) = self.st.clock.hlc.update(wall_ns, sender_clock) {
            self.st.stats.refused += 1;
            self.st.refuse_client(tag, e.into());
            return;
        }
        self.admit(group, Requester::Client(client), Origin::Client(tag), request);
        self.run_deferred();
    }

    /// Time passed: Raft timers, machine deadlines, and the clock probes (HLC-6).
    pub fn handle_timeout(&mut self, now_ns: u64, wall_ns: u64) {
        self.st.set_time(now_ns, wall_ns);
        if self.st.stopped.is_some() {
            return;
        }
        self.node.tick(now_ns);
        let due: Vec<GroupId> = self
            .st
            .groups
            .iter()
            .filter(|(_, g)| g.machine.poll_timeout().is_some_and(|d| d <= now_ns))
            .map(|(&id, _)| id)
            .collect();
        for group in due {
            self.st.with_context(group, |machine, cx| machine.handle_timeout(cx));
        }
        if now_ns >= self.st.next_probe_ns {
            self.st.next_probe_ns = now_ns.saturating_add(self.st.config.clock_probe_interval_ns);
            if let Err(e) = self.st.offsets.check(wall_ns) {
                tracing::error!("{e}");
                self.st.stopped = Some(e.to_string());
                self.st.clock_stop = Some(e);
                return;
            }
            for peer in self.st.peers() {
                self.st.queue(peer, NODE_GROUP, Payload::ClockProbe { sent_pt: wall_ns });
            }
        }
        self.run_deferred();
    }

    /// The earliest monotonic time at which [`Host::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.st.stopped.is_some() {
            return None;
        }
        let machines = self.st.groups.values().filter_map(|g| g.machine.poll_timeout());
        machines
            .chain(self.node.next_deadline_ns())
            .chain(std::iter::once(self.st.next_probe_ns))
            .min()
    }

    /// One driver iteration: see the module docs for its steps. After `Err` the host has
    /// stopped; what was sent and answered before the failure stands.
    pub fn process(
        &mut self,
        now_ns: u64,
        wall_ns: u64,
        io: &mut impl HostIo<M>,
    ) -> Result<(), Fatal> {
        self.st.set_time(now_ns, wall_ns);
        if let Some(cause) = self.st.stopped.clone() {
            // Answer what was refused before the stop, then fail.
            self.st.flush(io);
            if let Some(e) = &self.st.clock_stop {
                return Err(Fatal::ClockOffset(e.clone()));
            }
            return Err(Fatal::Stopped(cause));
        }
        let result = self.process_steps(io);
        self.st.flush(io);
        if let Err(fatal) = &result {
            if self.st.stopped.is_none() {
                self.st.stopped = Some(fatal.to_string());
            }
        }
        result
    }

    /// Is there anything for [`Host::process`] to do?
    pub fn has_work(&self) -> bool {
        self.node.has_ready()
            || !self.st.outbox.is_empty()
            || !self.st.local.is_empty()
            || !self.st.client_out.is_empty()
            || !self.st.deferred.is_empty()
            || !self.st.readmits.is_empty()
            || self.st.held.iter().any(|(group, _, _)| self.transferring_to(*group).is_none())
    }

    /// The Raft node (status, inspection).
    pub fn node(&self) -> &Node<D> {
        &self.node
    }

    /// The machine of `group`, if hosted.
    pub fn machine(&self, group: GroupId) -> Option<&M> {
        self.st.groups.get(&group).map(|g| &g.machine)
    }

    /// The last index `group`'s machine applied (commands and no-ops), if hosted.
    pub fn applied(&self, group: GroupId) -> Option<LogIndex> {
        self.st.groups.get(&group).map(|g| g.applied)
    }

    /// The role `group`'s machine was last told, if hosted.
    pub fn role(&self, group: GroupId) -> Option<Role> {
        self.st.groups.get(&group).map(|g| g.role)
    }

    /// Why the host stopped, if it did.
    pub fn stopped(&self) -> Option<&str> {
        self.st.stopped.as_deref().or_else(|| self.node.stopped())
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.st.id
    }

    /// The HLC's latest reading, without advancing it.
    pub fn clock_last(&self) -> HlcTimestamp {
        self.st.clock.hlc.last()
    }

    /// The latest clock offset measured to `peer` (HLC-6), if any.
    pub fn clock_offset(&self, peer: NodeId) -> Option<OffsetMeasurement> {
        self.st.offsets.measurement(peer).copied()
    }

    /// Counters of refused and unmatched input.
    pub fn stats(&self) -> HostStats {
        self.st.stats
    }

    /// Requests waiting for their answers (proposals, kept requests, reads).
    pub fn waiting(&self) -> usize {
        self.st.origins.len()
    }

    /// The encoded bytes of the [`SnapshotJob`] of `group` at `index` (see the module docs,
    /// "Snapshots"): the node stores them and compacts its log. `Ok(true)` if the node kept
    /// them; `Ok(false)` if they were dropped, harmlessly: the group restored a newer snapshot
    /// meanwhile, is not hosted, has no job out at `index`, or the host has stopped. `Err` if
    /// persisting them failed: the host has stopped.
    pub fn snapshot_encoded(
        &mut self,
        group: GroupId,
        index: LogIndex,
        bytes: Arc<[u8]>,
    ) -> Result<bool, Fatal> {
        let Some(g) = self.st.groups.get_mut(&group) else { return Ok(false) };
        if g.encoding != Some(index) {
            tracing::debug!(%group, %index, "snapshot bytes for no job out; dropped");
            return Ok(false);
        }
        g.encoding = None;
        if self.stopped().is_some() {
            return Ok(false);
        }
        match self.node.snapshot(group, index, bytes) {
            Ok(()) => Ok(true),
            // Not newer than the current one (a snapshot restored meanwhile): the view is of
            // a state the group has moved past.
            Err(SnapshotRequestError::Refused(e)) => {
                tracing::debug!(%group, "snapshot not taken: {e}");
                Ok(false)
            }
            Err(SnapshotRequestError::UnknownGroup(_)) => Ok(false),
            Err(SnapshotRequestError::Fatal(f)) => {
                let fatal = Fatal::from(f);
                self.st.stopped = Some(fatal.to_string());
                Err(fatal)
            }
        }
    }

    /// Moves leadership of `group` to `target` (RAFT-6); see [`Node::transfer_leadership`].
    pub fn transfer_leadership(
        &mut self,
        now_ns: u64,
        group: GroupId,
        target: NodeId,
    ) -> Result<(), node::TransferRequestError> {
        self.node.transfer_leadership(now_ns, group, target)
    }

    // ----- the iteration -----

    fn process_steps(&mut self, io: &mut impl HostIo<M>) -> Result<(), Fatal> {
        // Steps 1 and 2: the node's iteration; early outputs are applied as they come.
        let late = {
            let mut pass = Pass { st: &mut self.st, io, failed: None };
            let late = self.node.process_io(&mut pass);
            if let Some(fatal) = pass.failed.take() {
                return Err(fatal);
            }
            late?
        };
        // Step 3: the rest, in the node's order; then the node learns what was applied.
        for output in late {
            io.observe(&output);
            self.st.on_output(output)?;
        }
        for (&group, g) in &mut self.st.groups {
            if g.applied > g.reported {
                self.node.on_applied(group, g.applied);
                g.reported = g.applied;
            }
        }
        // Step 4: proposals machines asked for while the node was busy.
        self.run_deferred();
        // Step 5: envelopes to this node itself.
        self.deliver_local(io);
        // Step 6: the snapshot policy.
        self.st.snapshot_policy(io);
        Ok(())
    }

    /// Step 5: delivers the envelopes this host addressed to its own node, in at most
    /// [`HOST_LOCAL_ROUNDS_MAX`] rounds; each round ends with the proposals it asked for.
    fn deliver_local(&mut self, io: &mut impl HostIo<M>) {
        for _ in 0..HOST_LOCAL_ROUNDS_MAX {
            if self.st.local.is_empty() {
                return;
            }
            for envelope in std::mem::take(&mut self.st.local) {
                io.observe_local(&envelope);
                let decree_proto::Envelope { from, group, payload, .. } = envelope;
                self.dispatch(from, group, payload);
            }
            self.run_deferred();
        }
    }

    /// Hands a checked envelope's payload from `peer` (or from this node itself, step 5) to
    /// the node or the machines.
    fn dispatch(
        &mut self,
        peer: NodeId,
        group: GroupId,
        payload: Payload<M::Request, M::Response>,
    ) {
        match payload {
            Payload::Raft(message) => self.node.step(self.st.now_ns, peer, group, message),
            Payload::RaftBatch(batch) => {
                for (group, message) in batch {
                    self.node.step(self.st.now_ns, peer, group, message);
                }
            }
            Payload::Request { request_id, request } => {
                let origin = Origin::Peer { node: peer, group, request_id };
                self.admit(group, Requester::Node(peer), origin, request);
            }
            Payload::Response { request_id, response } => {
                self.st.on_response(request_id, peer, Ok(response));
            }
            Payload::Error { in_reply_to: Some(request_id), error } => {
                let error = PeerError::Refused(error.to_string());
                self.st.on_response(request_id, peer, Err(error));
            }
            Payload::Error { in_reply_to: None, error } => {
                tracing::debug!(%peer, "peer refused a frame: {error}");
            }
            // Clock probes and echoes are node-to-node; `handle_envelope` answers them
            // before the HLC check, and a host never probes itself.
            Payload::ClockProbe { .. } | Payload::ClockEcho { .. } => {}
        }
    }

    /// Admission of a request from a client or a peer.
    fn admit(&mut self, group: GroupId, requester: Requester, origin: Origin, request: M::Request) {
        let st = &mut self.st;
        let Some(g) = st.groups.get(&group) else {
            st.refuse(origin, ErrorResponse::UnknownGroup { group });
            return;
        };
        let Role::Leader { term, .. } = g.role else {
            let leader = match g.role {
                Role::Follower { leader, .. } => leader,
                Role::Leader { .. } => None,
            };
            st.answer_origin(origin, M::redirect(group, leader));
            return;
        };
        if st.origins.len() >= HOST_WAITERS_MAX {
            st.stats.busy += 1;
            st.refuse(origin, ErrorResponse::Busy { retry_after_ms: HEARTBEAT_INTERVAL_MS });
            return;
        }
        let reply_to = st.new_reply_to(origin);
        self.admit_as(group, term, requester, reply_to, request);
    }

    /// The target of `group`'s leadership transfer, while one is under way here.
    fn transferring_to(&self, group: GroupId) -> Option<NodeId> {
        self.node.core(group).and_then(|c| c.transfer_target())
    }

    /// Admission of a request already named `reply_to`, on the leader of `term`.
    fn admit_as(
        &mut self,
        group: GroupId,
        term: Term,
        requester: Requester,
        reply_to: ReplyTo,
        request: M::Request,
    ) {
        // RAFT-6: a leader handing over takes no proposal until the transfer ends. A request
        // goes to the target, as a follower would send it, before the machine admits it and
        // keeps leader-only state for it.
        if let Some(target) = self.transferring_to(group) {
            self.st.answer(reply_to, M::redirect(group, Some(target)));
            return;
        }
        let st = &mut self.st;
        let admission = st.with_context_read(group, None, |machine, cx| {
            machine.admit(cx, requester, reply_to, request)
        });
        // Invariant: `group` is hosted (the callers checked).
        let Some(admission) = admission else { return };
        match admission {
            Admission::Read(request) => {
                let ctx = st.next_read_ctx;
                st.next_read_ctx += 1;
                match self.node.read_index(st.now_ns, group, ctx) {
                    Ok(()) => {
                        st.reads.insert(ctx, PendingRead { requester, reply_to, request });
                    }
                    Err(e) => {
                        tracing::debug!(%group, %term, "read refused: {e}");
                        st.answer(reply_to, M::redirect(group, None));
                    }
                }
            }
            other => st.settle(group, reply_to, other),
        }
    }

    /// Admits again the kept requests machines handed back, while their group's replica
    /// still leads; otherwise they are redirected.
    fn run_readmits(&mut self) {
        for (group, requester, reply_to, request) in std::mem::take(&mut self.st.readmits) {
            if !self.st.origins.contains_key(&reply_to) {
                continue; // answered meanwhile
            }
            match self.st.groups.get(&group).map(|g| g.role) {
                Some(Role::Leader { term, .. }) => {
                    self.admit_as(group, term, requester, reply_to, request)
                }
                Some(Role::Follower { leader, .. }) => {
                    self.st.answer(reply_to, M::redirect(group, leader))
                }
                None => self.st.answer(reply_to, M::redirect(group, None)),
            }
        }
    }

    /// Proposes what machines asked for, and reports sends that found no route.
    fn run_deferred(&mut self) {
        self.run_held();
        // A proposal's effects may ask for more; each round drains what the last produced.
        while !self.st.deferred.is_empty()
            || !self.st.no_route.is_empty()
            || !self.st.readmits.is_empty()
        {
            self.run_readmits();
            for (group, command, waiter) in std::mem::take(&mut self.st.deferred) {
                self.propose(group, command, waiter);
            }
            for (group, request_id, to) in std::mem::take(&mut self.st.no_route) {
                let error = Err(PeerError::NoRoute(to));
                let id = self.st.id;
                self.st.with_context(group, |machine, cx| {
                    machine.handle_response(cx, request_id, id, error)
                });
            }
        }
    }

    /// Proposes the held proposals of every group whose leadership transfer ended with this
    /// replica leading (the others wait; a step-down answered them).
    fn run_held(&mut self) {
        if self.st.held.is_empty() {
            return;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.st.held)
            .into_iter()
            .partition(|(group, _, _)| self.transferring_to(*group).is_none());
        self.st.held = waiting;
        for (group, command, waiter) in ready {
            self.propose(group, command, waiter);
        }
    }

    /// Writes `command` to `group`'s log, stamped with the leader's HLC reading, and files
    /// its waiter under the entry's `(index, term)`.
    fn propose(
        &mut self,
        group: GroupId,
        command: M::Command,
        waiter: Option<(ReplyTo, M::Response)>,
    ) {
        let st = &mut self.st;
        if let Some((reply_to, _)) = &waiter {
            if let Some(g) = st.groups.get_mut(&group) {
                g.kept.remove(reply_to);
            }
        }
        let proposed_at = st.clock.now();
        // Encoding plain data into a Vec fails only for types serde cannot represent, which
        // a machine's command is not; such a proposal is answered as lost.
        let bytes = match postcard::to_allocvec(&(proposed_at, &command)) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(%group, "command does not encode: {e}");
                if let Some((reply_to, on_lost)) = waiter {
                    st.answer(reply_to, on_lost);
                }
                return;
            }
        };
        match self.node.propose(st.now_ns, group, bytes) {
            Ok((index, term)) => {
                let Some((reply_to, on_lost)) = waiter else { return };
                let old = st.proposals.insert((group, index), Waiter { term, reply_to, on_lost });
                // An older waiter at this index: this leader's entry replaced its entry.
                if let Some(old) = old {
                    st.answer(old.reply_to, old.on_lost);
                }
            }
            Err(ProposeError::TransferInProgress { .. }) => {
                // Held until the transfer ends (see `held`): kept, not answered.
                if let Some((reply_to, _)) = &waiter {
                    if let Some(g) = st.groups.get_mut(&group) {
                        g.kept.insert(*reply_to);
                    }
                }
                st.held.push((group, command, waiter));
            }
            Err(e) => {
                let Some((reply_to, on_lost)) = waiter else { return };
                let response = match e {
                    ProposeError::NotLeader { leader_hint, .. } => M::redirect(group, leader_hint),
                    ProposeError::TransferInProgress { .. } => unreachable!("held above"),
                    // Nothing was appended; "unknown" is a safe answer.
                    ProposeError::UnknownGroup(_)
                    | ProposeError::Backpressure { .. }
                    | ProposeError::TooLarge { .. }
                    | ProposeError::Stopped(_) => on_lost,
                };
                st.answer(reply_to, response);
            }
        }
    }
}

/// The node's view of the host during [`Node::process_io`]: Raft batches become envelopes,
/// early outputs are applied at once.
struct Pass<'a, M: ReplicatedMachine, IO> {
    st: &'a mut State<M>,
    io: &'a mut IO,
    failed: Option<Fatal>,
}

impl<M: ReplicatedMachine, IO: HostIo<M>> Transport for Pass<'_, M, IO> {
    fn send(&mut self, to: NodeId, batch: Batch) {
        let mut envelopes = self.st.outbox.remove(&to).unwrap_or_default();
        self.st.raft_envelopes(batch, &mut envelopes);
        self.st.emit(self.io, to, envelopes);
    }
}

impl<M: ReplicatedMachine, IO: HostIo<M>> EarlyOutputs for Pass<'_, M, IO> {
    fn early(&mut self, output: Output) {
        if self.failed.is_some() {
            return;
        }
        self.io.observe(&output);
        if let Err(fatal) = self.st.on_output(output) {
            self.failed = Some(fatal);
            return;
        }
        // Answers to clients leave now, while the node waits for the disk.
        self.st.flush_clients(self.io);
    }
}

impl<M: ReplicatedMachine> State<M> {
    fn set_time(&mut self, now_ns: u64, wall_ns: u64) {
        self.now_ns = self.now_ns.max(now_ns);
        self.clock.set_wall_ns(wall_ns);
    }

    /// Every node of the directory but this one.
    fn peers(&self) -> Vec<NodeId> {
        self.directory.nodes().into_iter().filter(|&n| n != self.id).collect()
    }

    fn new_reply_to(&mut self, origin: Origin) -> ReplyTo {
        self.next_reply_to += 1;
        let reply_to = ReplyTo(self.next_reply_to);
        self.origins.insert(reply_to, origin);
        reply_to
    }

    /// Queues a host envelope for `to` (sent with its next Raft batch or at the end), or, if
    /// `to` is this node, for delivery in step 5.
    fn queue(&mut self, to: NodeId, group: GroupId, payload: Payload<M::Request, M::Response>) {
        let envelope = decree_proto::Envelope {
            from: self.id,
            group,
            sender_clock: HlcTimestamp::ZERO,
            payload,
        };
        if to == self.id {
            self.local.push(envelope);
        } else {
            self.outbox.entry(to).or_default().push(envelope);
        }
    }

    /// One peer's Raft batch as envelopes: every small message in [`Payload::RaftBatch`]es
    /// (split past [`RAFT_BATCH_MESSAGES_MAX`]), entries and snapshot chunks one each.
    fn raft_envelopes(&mut self, batch: Batch, out: &mut Vec<HostEnvelope<M>>) {
        let mut small = Vec::new();
        for (group, message) in batch {
            if is_bulk(&message) {
                let sender_clock = self.clock.now();
                out.push(decree_proto::Envelope {
                    from: self.id,
                    group,
                    sender_clock,
                    payload: Payload::Raft(message),
                });
            } else {
                small.push((group, message));
            }
        }
        while !small.is_empty() {
            let rest = small.split_off(small.len().min(RAFT_BATCH_MESSAGES_MAX));
            let sender_clock = self.clock.now();
            out.push(decree_proto::Envelope {
                from: self.id,
                group: NODE_GROUP,
                sender_clock,
                payload: Payload::RaftBatch(small),
            });
            small = rest;
        }
        // Queued host envelopes carry no clock yet: HLC-4 reads it once the payload is final.
        for envelope in out.iter_mut() {
            if envelope.sender_clock == HlcTimestamp::ZERO {
                envelope.sender_clock = self.clock.now();
            }
        }
    }

    /// Step 7: host envelopes one send per peer, then client answers.
    fn flush(&mut self, io: &mut impl HostIo<M>) {
        for (to, mut envelopes) in std::mem::take(&mut self.outbox) {
            self.raft_envelopes(Vec::new(), &mut envelopes);
            self.emit(io, to, envelopes);
        }
        self.flush_clients(io);
    }

    /// Hands `envelopes` for peer `to` to the I/O: the one way out of the host.
    fn emit(&self, io: &mut impl HostIo<M>, to: NodeId, envelopes: Vec<HostEnvelope<M>>) {
        // Invariant: envelopes to this node are delivered in step 5 (`queue` routes them
        // there) and Raft never addresses its own node.
        assert_ne!(to, self.id, "the host delivers envelopes to its own node itself");
        if !envelopes.is_empty() {
            io.send(to, envelopes);
        }
    }

    fn flush_clients(&mut self, io: &mut impl HostIo<M>) {
        for out in std::mem::take(&mut self.client_out) {
            match out {
                ClientOut::Reply(tag, clock, response) => io.reply(tag, clock, response),
                ClientOut::Refuse(tag, clock, error) => io.refuse(tag, clock, error),
            }
        }
    }

    fn refuse_client(&mut self, tag: ClientTag, error: ErrorResponse) {
        let clock = self.clock.now();
        self.client_out.push(ClientOut::Refuse(tag, clock, error));
    }

    /// Refuses a request that never reached a machine.
    fn refuse(&mut self, origin: Origin, error: ErrorResponse) {
        match origin {
            Origin::Client(tag) => self.refuse_client(tag, error),
            Origin::Peer { node, group, request_id } => {
                let payload = Payload::Error { in_reply_to: Some(request_id), error };
                self.queue(node, group, payload);
            }
        }
    }

    fn answer_origin(&mut self, origin: Origin, response: M::Response) {
        match origin {
            Origin::Client(tag) => {
                let clock = self.clock.now();
                self.client_out.push(ClientOut::Reply(tag, clock, response));
            }
            Origin::Peer { node, group, request_id } => {
                self.queue(node, group, Payload::Response { request_id, response });
            }
        }
    }

    /// Carries out an admission that needs no read confirmation (or one after it: a second
    /// `Read` is answered with a redirect, see [`Admission::Read`]).
    fn settle(&mut self, group: GroupId, reply_to: ReplyTo, admission: Admission<M>) {
        match admission {
            Admission::Reply(response) => self.answer(reply_to, response),
            Admission::Propose { command, on_lost } => {
                self.deferred.push((group, command, Some((reply_to, on_lost))));
            }
            Admission::Read(_) => {
                tracing::warn!(%group, "a confirmed read asked for confirmation again");
                self.answer(reply_to, M::redirect(group, None));
            }
            Admission::Later => {
                if let Some(g) = self.groups.get_mut(&group) {
                    g.kept.insert(reply_to);
                }
            }
        }
    }

    /// Answers the waiting request `reply_to` (once: a second answer is dropped).
    fn answer(&mut self, reply_to: ReplyTo, response: M::Response) {
        if let Some(origin) = self.origins.remove(&reply_to) {
            self.answer_origin(origin, response);
        }
    }

    /// Calls `f` with `group`'s machine and a context, then carries out its effects.
    fn with_context<R>(
        &mut self,
        group: GroupId,
        f: impl FnOnce(&mut M, &mut Context<'_, M>) -> R,
    ) -> Option<R> {
        self.with_context_read(group, None, f)
    }

    /// [`Self::with_context`] with the read index of a confirmed read
    /// ([`Context::read_confirmed`]).
    fn with_context_read<R>(
        &mut self,
        group: GroupId,
        read_index: Option<LogIndex>,
        f: impl FnOnce(&mut M, &mut Context<'_, M>) -> R,
    ) -> Option<R> {
        let g = self.groups.get_mut(&group)?;
        let mut effects = Vec::new();
        let result = {
            let mut cx = Context {
                group,
                node: self.id,
                role: g.role,
                now_ns: self.now_ns,
                clock: &mut self.clock,
                effects: &mut effects,
                next_request_id: &mut self.next_request_id,
                read_index,
            };
            f(&mut g.machine, &mut cx)
        };
        self.effects(group, effects);
        Some(result)
    }

    /// Carries out a machine's effects, in order.
    fn effects(&mut self, group: GroupId, effects: Vec<Effect<M>>) {
        for effect in effects {
            match effect {
                Effect::Reply(reply_to, response) => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.kept.remove(&reply_to);
                    }
                    self.answer(reply_to, response);
                }
                Effect::Propose { command, waiter } => self.deferred.push((group, command, waiter)),
                Effect::Send { request_id, to, request } => {
                    self.send(group, request_id, to, request)
                }
                Effect::Readmit { requester, reply_to, request } => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.kept.remove(&reply_to);
                    }
                    self.readmits.push((group, requester, reply_to, request));
                }
                Effect::LeaderHint { group, leader } => {
                    self.hints.insert(group, leader);
                }
            }
        }
    }

    /// A machine's request to another node, or to this one (queued and delivered in step 5,
    /// so the answer is never re-entrant).
    fn send(&mut self, from: GroupId, request_id: RequestId, to: Destination, request: M::Request) {
        let (node, group) = match to {
            Destination::Replica { node, group } => (Some(node), group),
            Destination::LeaderOf(group) => {
                let own = self.groups.get(&group).and_then(|g| match g.role {
                    Role::Leader { .. } => Some(self.id),
                    Role::Follower { leader, .. } => leader,
                });
                let hinted = own.or_else(|| self.hints.get(&group).copied());
                (hinted.or_else(|| self.directory.replicas(group).first().copied()), group)
            }
        };
        let Some(node) = node else {
            self.no_route.push((from, request_id, group));
            return;
        };
        if self.outstanding.len() >= HOST_OUTSTANDING_REQUESTS_MAX {
            self.outstanding.pop_first();
        }
        self.outstanding.insert(request_id, from);
        self.queue(node, group, Payload::Request { request_id, request });
    }

    /// The answer to a machine's request.
    fn on_response(
        &mut self,
        request_id: RequestId,
        from: NodeId,
        response: Result<M::Response, PeerError>,
    ) {
        let Some(group) = self.outstanding.remove(&request_id) else {
            self.stats.unmatched += 1;
            return;
        };
        self.with_context(group, |machine, cx| {
            machine.handle_response(cx, request_id, from, response)
        });
    }

    /// Step 6: a snapshot job for every group that applied enough since its last snapshot
    /// and has none out. Only the view is taken here, on the node thread.
    fn snapshot_policy(&mut self, io: &mut impl HostIo<M>) {
        let every = self.config.snapshot_every_entries.max(1);
        for (&group, g) in &mut self.groups {
            if g.encoding.is_some() || g.applied.0 < g.snapshotted.0.saturating_add(every) {
                continue;
            }
            g.encoding = Some(g.applied);
            g.snapshotted = g.applied;
            io.snapshot(SnapshotJob { group, index: g.applied, view: g.machine.snapshot() });
        }
    }

    /// Step 3 for one output of the node.
    fn on_output(&mut self, output: Output) -> Result<(), Fatal> {
        match output {
            Output::Role { group, state } => self.on_role(group, state),
            Output::Restore { group, meta, data } => {
                let Some(g) = self.groups.get_mut(&group) else { return Ok(()) };
                g.machine.restore(&data).map_err(|e| Fatal::CorruptSnapshot {
                    group,
                    index: meta.last_index,
                    detail: e.to_string(),
                })?;
                g.applied = meta.last_index;
                g.snapshotted = meta.last_index;
                // The node installed it: it counts as applied there already.
                g.reported = meta.last_index;
                // Entries the snapshot covers are settled, but not known to be ours.
                let lost: Vec<_> = self
                    .proposals
                    .range((group, LogIndex(0))..=(group, meta.last_index))
                    .map(|(&k, _)| k)
                    .collect();
                for key in lost {
                    if let Some(w) = self.proposals.remove(&key) {
                        self.answer(w.reply_to, w.on_lost);
                    }
                }
            }
            Output::Apply { group, entries } => {
                for entry in entries {
                    self.apply(group, entry)?;
                }
            }
            Output::Read { group, ctx, index } => {
                let Some(read) = self.reads.remove(&ctx) else { return Ok(()) };
                let Some(g) = self.groups.get(&group) else { return Ok(()) };
                // Invariant: the node reports a read only once its index is applied here.
                assert!(g.applied >= index, "RAFT-3: a read is served only once applied");
                if !g.role.is_leader() {
                    let leader = match g.role {
                        Role::Follower { leader, .. } => leader,
                        Role::Leader { .. } => None,
                    };
                    self.answer(read.reply_to, M::redirect(group, leader));
                    return Ok(());
                }
                let PendingRead { requester, reply_to, request } = read;
                let admission = self.with_context_read(group, Some(index), |machine, cx| {
                    machine.admit(cx, requester, reply_to, request)
                });
                if let Some(admission) = admission {
                    self.settle(group, reply_to, admission);
                }
            }
            Output::ReadFailed { group, ctx } => {
                let Some(read) = self.reads.remove(&ctx) else { return Ok(()) };
                let leader = self.groups.get(&group).and_then(|g| match g.role {
                    Role::Follower { leader, .. } => leader,
                    Role::Leader { .. } => None,
                });
                self.answer(read.reply_to, M::redirect(group, leader));
            }
        }
        Ok(())
    }

    /// A role change: the machine hears of it (module docs of [`crate::machine`], step 3),
    /// and a leader stepping down answers everything it was keeping.
    fn on_role(&mut self, group: GroupId, state: SoftState) {
        let Some(g) = self.groups.get_mut(&group) else { return };
        let before = g.role;
        let event = if state.is_leader {
            if before.is_leader() && before.term() == state.term {
                return;
            }
            g.role = Role::Leader { term: state.term, ready: false };
            RoleEvent::Leader { term: state.term }
        } else {
            g.role = Role::Follower { term: state.term, leader: state.leader };
            RoleEvent::Follower { term: state.term, leader: state.leader }
        };
        if before.is_leader() {
            self.step_down(group, state.leader);
        }
        self.with_context(group, |machine, cx| machine.on_role(cx, event));
        // The other machines on this node may be waiting on this group's old leader.
        let leader = if state.is_leader { Some(self.id) } else { state.leader };
        let known = match before {
            Role::Leader { .. } => Some(self.id),
            Role::Follower { leader, .. } => leader,
        };
        if let Some(leader) = leader.filter(|&l| Some(l) != known) {
            let others: Vec<GroupId> =
                self.groups.keys().copied().filter(|&g| g != group).collect();
            for other in others {
                self.with_context(other, |machine, cx| machine.on_leader_seen(cx, group, leader));
            }
        }
    }

    /// This replica no longer leads `group`: every waiter of it is answered.
    fn step_down(&mut self, group: GroupId, leader: Option<NodeId>) {
        let lost: Vec<_> = self
            .proposals
            .range((group, LogIndex(0))..=(group, LogIndex(u64::MAX)))
            .map(|(&k, _)| k)
            .collect();
        for key in lost {
            if let Some(w) = self.proposals.remove(&key) {
                self.answer(w.reply_to, w.on_lost);
            }
        }
        // Held proposals were never appended: their requests are redirected with the kept.
        self.held.retain(|(g, _, _)| *g != group);
        let kept = self.groups.get_mut(&group).map(|g| std::mem::take(&mut g.kept));
        for reply_to in kept.into_iter().flatten() {
            self.answer(reply_to, M::redirect(group, leader));
        }
    }

    /// Applies one committed entry and answers the request that proposed it, if any.
    fn apply(&mut self, group: GroupId, entry: Entry) -> Result<(), Fatal> {
        let waiter = self.proposals.remove(&(group, entry.index));
        let Some(g) = self.groups.get_mut(&group) else { return Ok(()) };
        // Invariant (INV-R9): the node hands out each group's entries in order, without gaps.
        assert_eq!(
            entry.index,
            g.applied.next(),
            "INV-R9: {group} applied {} then {}",
            g.applied,
            entry.index
        );
        g.applied = entry.index;
        let Entry { index, term, payload } = entry;
        let bytes = match payload {
            EntryPayload::Noop => {
                let ready = g.role == (Role::Leader { term, ready: false });
                if ready {
                    g.role = Role::Leader { term, ready: true };
                }
                if let Some(w) = waiter {
                    self.answer(w.reply_to, w.on_lost);
                }
                if ready {
                    let event = RoleEvent::LeaderReady { term };
                    self.with_context(group, |machine, cx| machine.on_role(cx, event));
                }
                return Ok(());
            }
            EntryPayload::Command(bytes) => bytes,
        };
        let (proposed_at, command): (HlcTimestamp, M::Command) = postcard::from_bytes(&bytes)
            .map_err(|e| Fatal::CorruptEntry { group, index, detail: e.to_string() })?;
        let mut effects = Vec::new();
        let response = {
            let mut cx = ApplyContext {
                group,
                role: g.role,
                effects: &mut effects,
                next_request_id: &mut self.next_request_id,
            };
            g.machine.apply(&mut cx, Applied { index, term, proposed_at, command })
        };
        // HLC-2 for the log: this node's later timestamps are above every applied one. A
        // reading too far ahead came through envelopes this node already accepted, so a
        // refusal here changes nothing.
        let _ = self.clock.hlc.update(self.clock.wall_ns, proposed_at);
        if let Some(w) = waiter {
            let answer = match response {
                Some(r) if w.term == term => r,
                _ => w.on_lost,
            };
            self.answer(w.reply_to, answer);
        }
        self.effects(group, effects);
        Ok(())
    }
}

/// Does `message` carry log entries or snapshot data (one envelope each, on its group's own
/// stream), rather than being a small control message coalesced per node pair?
pub fn is_bulk(message: &Message) -> bool {
    match message {
        Message::AppendEntries { entries, .. } => !entries.is_empty(),
        Message::InstallSnapshot { .. } => true,
        Message::PreVote { .. }
        | Message::PreVoteResponse { .. }
        | Message::RequestVote { .. }
        | Message::VoteResponse { .. }
        | Message::AppendResponse { .. }
        | Message::InstallSnapshotResponse { .. }
        | Message::TimeoutNow { .. }
        | Message::ReadIndexRequest { .. }
        | Message::ReadIndexResponse { .. } => false,
    }
}
