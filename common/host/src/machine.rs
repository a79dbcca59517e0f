//! The replicated state machine interface: what a group's state machine implements to run on
//! the host.
//!
//! A machine has two halves (the prepare/commit split of TigerBeetle's replicas):
//!
//! - **Admission** ([`ReplicatedMachine::admit`]) runs on the leader only. It may read the HLC
//!   and it may change *leader-only volatile state* (a lock table, a pending-prepare table, a
//!   coordinator's attempts), but it never changes replicated state. It answers a request at
//!   once, proposes a command, redirects, or keeps the request for later.
//! - **Apply** ([`ReplicatedMachine::apply`]) runs on every replica, for every committed entry,
//!   in log order. It is deterministic: it reads no clock and no randomness. Time enters the
//!   log when the leader proposes: the host stamps every entry with the leader's HLC reading
//!   (`proposed_at`), and apply reads time from [`Applied::proposed_at`] only.
//!
//! # Call order (the contract between host and machine)
//!
//! As in quinn-proto, inputs are `handle_*`/`on_*` calls and the host asks for deadlines with
//! [`ReplicatedMachine::poll_timeout`]. For one group, the host guarantees:
//!
//! 1. [`ReplicatedMachine::restore`] (if a snapshot exists) comes before any `apply`, and after
//!    a restore `apply` continues with the entry right after the snapshot.
//! 2. `apply` sees every committed command entry exactly once per incarnation of the state,
//!    in index order, without gaps (INV-R9); Raft's no-op entries are not shown to the machine.
//! 3. [`ReplicatedMachine::on_role`] reports every role change: [`RoleEvent::Leader`] when this
//!    replica becomes leader of a term, then [`RoleEvent::LeaderReady`] once the leader's own
//!    no-op of that term is applied (everything committed by earlier terms is then applied
//!    here — the point where a new coordinator leader starts recovery, REC-1), and
//!    [`RoleEvent::Follower`] whenever it is not (or no longer) the leader. On every event but
//!    `LeaderReady` the machine drops all of its leader-only volatile state.
//! 4. `admit` is called only while this replica is the leader of the current term; elsewhere
//!    the host answers [`ReplicatedMachine::redirect`] without asking the machine.
//! 5. A request answered with [`Admission::Read`] is admitted a second time, with
//!    [`Context::read_confirmed`] `= Some(read_index)`, once a heartbeat round begun after it
//!    arrived confirmed the leadership and this replica applied `read_index` (RAFT-3); a
//!    leader deposed meanwhile never gets that call (the host redirects). Only that second
//!    admission may reveal replicated state to a reader. A kept request handed back with
//!    [`Context::readmit`] is admitted again from the start (a read again needs
//!    confirmation).
//! 6. [`ReplicatedMachine::on_leader_seen`] reports that a replica of *another* group hosted
//!    on this node learned that group's new leader (this node included), on every replica of
//!    this node's groups, whatever their role.
//! 7. [`ReplicatedMachine::handle_timeout`] is called once `now_ns` reaches the deadline
//!    `poll_timeout` last returned; the host asks `poll_timeout` again after every call into
//!    the machine.
//! 7. No call is re-entrant. A request a machine sends ([`Context::send`]) is delivered after
//!    the call that sent it returned, even when its group is led on this very node (the host
//!    queues it and delivers it to itself in a later step of the same `Host::process`, or the
//!    next one); [`ReplicatedMachine::handle_response`] likewise comes in a call of its own.
//!
//! # Replies are matched in the host
//!
//! A request that leads to a proposal waits in the host's proposal table, keyed by the
//! `(index, term)` the Raft node assigned to the entry (TiKV raftstore's rule). When the
//! entry at that index is applied with that term, the value `apply` returns is the reply; if
//! the entry is replaced by another leader's, or this replica loses leadership first, the host
//! answers with the `on_lost` response the machine gave when it proposed (for a write whose
//! fate is unknown that is an "outcome unknown" answer, never a failure).
//!
//! # Invariants (kept by every machine; the simulator's digest checker catches violations)
//!
//! - **Apply reads no clock.** Replicated state is a function of the applied entries alone.
//! - **Leader-only state is never in a snapshot** and is reset on every role change.
//! - **A snapshot view is immutable and cheap.** [`ReplicatedMachine::snapshot`] runs on the
//!   node thread and should cost O(1) (a clone of persistent maps); the view is encoded later,
//!   possibly on another thread while apply goes on, and must encode the state as of when it
//!   was taken.
//! - **A reply that reveals replicated state is sent only after that state is applied**: a
//!   prepare vote (P-6) or a decision is the return value of `apply` (or an effect of it),
//!   never of admission. Applied entries are durable on a majority, and on this node, because
//!   the node applies only entries it has fsynced.

use std::fmt::Debug;

use decree_proto::RequestId;
use decree_types::{ClientId, GroupId, HlcTimestamp, LogIndex, NodeId, Term};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A replicated state machine: the state of one group, applied from its Raft log. See the
/// module docs for the call order and the invariants.
pub trait ReplicatedMachine: Debug {
    /// What is written to the log: the machine's own commands, encoded by the host with
    /// postcard inside an entry that also carries `proposed_at`.
    type Command: Serialize + DeserializeOwned + Clone + Debug;
    /// Requests the machine admits (from clients, and from machines on other nodes).
    type Request: Clone + Debug;
    /// Answers to requests.
    type Response: Clone + Debug;
    /// An immutable view of the whole replicated state, cheap to take, encoded later (the node
    /// shell encodes it on another thread) so that snapshotting a large state does not stall
    /// the node. Applies after it was taken must not change it.
    type Snapshot: Send + 'static;

    /// Leader-only admission of `request` from `requester`; `reply_to` identifies the request
    /// for a later [`Context::reply`] or [`Context::propose`]. Never changes replicated state.
    fn admit(
        &mut self,
        cx: &mut Context<'_, Self>,
        requester: Requester,
        reply_to: ReplyTo,
        request: Self::Request,
    ) -> Admission<Self>;

    /// Applies one committed entry (every replica, log order, deterministic). The return value
    /// answers the request that proposed it, if this replica proposed it in `entry.term`.
    /// Effects on `cx` (sends, replies, proposals) are for leader-only work; `cx.is_leader()`
    /// tells. Replicated state must not depend on the role.
    fn apply(
        &mut self,
        cx: &mut ApplyContext<'_, Self>,
        entry: Applied<Self::Command>,
    ) -> Option<Self::Response>;

    /// The role of this replica changed (see the module docs, step 3). The default is for
    /// machines that keep no leader-only state.
    fn on_role(&mut self, cx: &mut Context<'_, Self>, event: RoleEvent) {
        let _ = (cx, event);
    }

    /// A replica of another group hosted on this node learned that `group` is now led by
    /// `leader` (possibly this node): a machine waiting on answers from that group can send
    /// again at once instead of waiting out a retransmission timer — the request that went to
    /// the old leader is lost with it. A hint only: the new leader may not be ready to serve
    /// yet, and it may already be deposed. The default is for machines that send nothing.
    fn on_leader_seen(&mut self, cx: &mut Context<'_, Self>, group: GroupId, leader: NodeId) {
        let _ = (cx, group, leader);
    }

    /// The answer to a request this machine sent with [`Context::send`], or the host's
    /// report that it could not be delivered. The default is for machines that send none.
    fn handle_response(
        &mut self,
        cx: &mut Context<'_, Self>,
        request_id: RequestId,
        from: NodeId,
        response: Result<Self::Response, PeerError>,
    ) {
        let _ = (cx, request_id, from, response);
    }

    /// The earliest monotonic time (ns) at which the machine needs [`Self::handle_timeout`].
    /// The default is for machines without deadlines of their own.
    fn poll_timeout(&self) -> Option<u64> {
        None
    }

    /// A deadline given by [`Self::poll_timeout`] passed.
    fn handle_timeout(&mut self, cx: &mut Context<'_, Self>) {
        let _ = cx;
    }

    /// The answer for a request that reached a replica that does not lead the group.
    fn redirect(group: GroupId, leader: Option<NodeId>) -> Self::Response;

    /// A view of the whole replicated state (never leader-only state). Taken on the node
    /// thread: it should cost O(1) (a persistent map's clone), not a copy of the state.
    fn snapshot(&self) -> Self::Snapshot;

    /// Encodes a view taken by [`Self::snapshot`]; may run on any thread. Deterministic: equal
    /// views encode to equal bytes.
    fn encode_snapshot(snapshot: &Self::Snapshot) -> Vec<u8>;

    /// Replaces the whole replicated state with an encoded snapshot's. On error the state is
    /// unchanged and the host stops the node (a snapshot that does not decode is corruption).
    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError>;

    /// A hash over the whole replicated state: equal on replicas that applied the same
    /// entries. The simulator and tests compare it across replicas.
    fn digest(&self) -> u64;
}

/// What admission decided.
#[derive(Debug)]
pub enum Admission<M: ReplicatedMachine + ?Sized> {
    /// Answer at once.
    Reply(M::Response),
    /// Propose `command`; the request waits for it (matched by index and term). If the entry
    /// is lost (replaced, or leadership lost before it applied), answer `on_lost`.
    Propose {
        /// What to write to the log.
        command: M::Command,
        /// The answer if the entry never applies here under this leader.
        on_lost: M::Response,
    },
    /// A read that needs confirmed leadership (RAFT-3, ReadIndex): the host confirms the
    /// leadership with a heartbeat round, waits until this replica applied the read index,
    /// then calls [`ReplicatedMachine::admit`] again with the request given here and
    /// [`Context::read_confirmed`] set; that second admission answers, proposes or keeps it
    /// as usual (it must not answer `Read` again: the host would redirect). If leadership is
    /// lost first, the host answers [`ReplicatedMachine::redirect`] without asking.
    Read(M::Request),
    /// The machine keeps `reply_to` and answers later, with [`Context::reply`] or by
    /// proposing for it with [`Context::propose`]. If the replica loses leadership first,
    /// the host answers [`ReplicatedMachine::redirect`].
    Later,
}

/// Who sent a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Requester {
    /// A client, named by its certificate.
    Client(ClientId),
    /// Another node (a machine of another group, or of the same group elsewhere), named by
    /// its certificate.
    Node(NodeId),
}

/// A request waiting for its answer, named by the host. Opaque to machines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyTo(pub(crate) u64);

/// The role of a replica as the host reports it to its machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not the leader; `leader` is the leader this replica knows of.
    Follower {
        /// The term.
        term: Term,
        /// The known leader, if any.
        leader: Option<NodeId>,
    },
    /// Leader of `term`; `ready` once its own no-op is applied.
    Leader {
        /// The term.
        term: Term,
        /// Is the leader's no-op of `term` applied here?
        ready: bool,
    },
}

impl Role {
    /// Is this replica the leader?
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader { .. })
    }

    /// The term.
    pub fn term(&self) -> Term {
        match *self {
            Role::Follower { term, .. } | Role::Leader { term, .. } => term,
        }
    }
}

/// A role change, as [`ReplicatedMachine::on_role`] receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleEvent {
    /// Not the leader (any more); `leader` is the known leader.
    Follower {
        /// The term.
        term: Term,
        /// The known leader, if any.
        leader: Option<NodeId>,
    },
    /// This replica leads `term`; its no-op is not applied yet.
    Leader {
        /// The term.
        term: Term,
    },
    /// The leader's own no-op of `term` is applied: every entry of earlier terms is applied.
    LeaderReady {
        /// The term.
        term: Term,
    },
}

/// A committed command entry, as [`ReplicatedMachine::apply`] receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied<C> {
    /// Its log index.
    pub index: LogIndex,
    /// The term of the leader that proposed it.
    pub term: Term,
    /// The proposing leader's HLC reading when it proposed: the only time apply may read.
    pub proposed_at: HlcTimestamp,
    /// The command.
    pub command: C,
}

/// Why a request a machine sent got no answer from its destination.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// No node to send it to is known (no replica of the group in the directory).
    #[error("no known replica of {0}")]
    NoRoute(GroupId),
    /// The destination refused it with an error (malformed, too large, clock too far ahead).
    #[error("refused by the peer: {0}")]
    Refused(String),
}

/// A snapshot that cannot be restored (corrupt, or of another kind of machine).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("snapshot does not restore: {0}")]
pub struct SnapshotError(pub String);

/// Where a request from [`Context::send`] goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The leader of a group, as far as the host knows it (its own replica's view, or the
    /// last hint); any replica of the group otherwise.
    LeaderOf(GroupId),
    /// One node's replica of a group.
    Replica {
        /// The node.
        node: NodeId,
        /// The group.
        group: GroupId,
    },
}

/// What a machine asks the host to do; collected during one call, executed by the host
/// after the call returns (and inspected by machine unit tests through [`crate::testing`]).
#[derive(Debug)]
pub enum Effect<M: ReplicatedMachine + ?Sized> {
    /// Answer a kept request.
    Reply(ReplyTo, M::Response),
    /// Propose a command, optionally on behalf of a kept request.
    Propose {
        /// The command.
        command: M::Command,
        /// The request to answer with what `apply` returns, and the answer if it is lost.
        waiter: Option<(ReplyTo, M::Response)>,
    },
    /// Send a request to another node.
    Send {
        /// The id its response will carry.
        request_id: RequestId,
        /// Where.
        to: Destination,
        /// What.
        request: M::Request,
    },
    /// Admit a kept request again ([`Context::readmit`]).
    Readmit {
        /// Who sent it.
        requester: Requester,
        /// The request, as the host named it.
        reply_to: ReplyTo,
        /// The request.
        request: M::Request,
    },
    /// Who leads a group, as a machine learned it.
    LeaderHint {
        /// The group.
        group: GroupId,
        /// Its leader.
        leader: NodeId,
    },
}

/// The machine's access to the host during admission, role changes, responses and timeouts:
/// the clock, and the effects it may ask for.
#[derive(Debug)]
pub struct Context<'a, M: ReplicatedMachine + ?Sized> {
    pub(crate) group: GroupId,
    pub(crate) node: NodeId,
    pub(crate) role: Role,
    pub(crate) now_ns: u64,
    pub(crate) clock: &'a mut HostClock,
    pub(crate) effects: &'a mut Vec<Effect<M>>,
    pub(crate) next_request_id: &'a mut u64,
    /// Set while the host re-admits a read it confirmed ([`Admission::Read`]).
    pub(crate) read_index: Option<LogIndex>,
}

/// The HLC as the host keeps it, with the physical time (ns since the Unix epoch) of the
/// current call.
#[derive(Debug)]
pub struct HostClock {
    pub(crate) hlc: decree_types::Hlc,
    pub(crate) wall_ns: u64,
}

impl HostClock {
    /// A clock with the given maximum offset (HLC-3), at physical time `wall_ns`.
    pub fn new(max_offset_ns: u64, wall_ns: u64) -> Self {
        HostClock { hlc: decree_types::Hlc::new(max_offset_ns), wall_ns }
    }

    /// The physical time moved on to `wall_ns` (it may go backwards; the HLC does not).
    pub fn set_wall_ns(&mut self, wall_ns: u64) {
        self.wall_ns = wall_ns;
    }

    /// The HLC.
    pub fn hlc(&self) -> &decree_types::Hlc {
        &self.hlc
    }

    /// A fresh timestamp (HLC-1).
    pub fn now(&mut self) -> HlcTimestamp {
        self.hlc.now(self.wall_ns)
    }
}

impl<M: ReplicatedMachine + ?Sized> Context<'_, M> {
    /// The group this machine is.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The node this replica runs on.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// This replica's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Monotonic time of this call, ns (for the machine's deadlines; never for timestamps).
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// `Some(read_index)` when this [`ReplicatedMachine::admit`] call is the second admission
    /// of a request the machine answered with [`Admission::Read`]: a heartbeat round since
    /// the request arrived confirmed that this replica leads (RAFT-3), and it has applied
    /// everything committed at `read_index`. The machine may serve replicated state now.
    /// `None` on every other call.
    pub fn read_confirmed(&self) -> Option<LogIndex> {
        self.read_index
    }

    /// Hands a request the machine kept ([`Admission::Later`]) back to the host, which
    /// admits it again (a fresh [`ReplicatedMachine::admit`] call, after this call returns)
    /// if this replica still leads; otherwise it answers [`ReplicatedMachine::redirect`].
    /// A read re-admitted this way goes through read confirmation like a new one.
    pub fn readmit(&mut self, requester: Requester, reply_to: ReplyTo, request: M::Request) {
        self.effects.push(Effect::Readmit { requester, reply_to, request });
    }

    /// A fresh HLC timestamp, above every timestamp this node has issued or observed (HLC-1).
    pub fn clock_now(&mut self) -> HlcTimestamp {
        self.clock.hlc.now(self.clock.wall_ns)
    }

    /// The latest HLC timestamp issued or observed, without advancing the clock.
    pub fn clock_last(&self) -> HlcTimestamp {
        self.clock.hlc.last()
    }

    /// The HLC's maximum tolerated offset between nodes, ns (HLC-3).
    pub fn max_offset_ns(&self) -> u64 {
        self.clock.hlc.max_offset_ns()
    }

    /// Observes a timestamp a request carried (HLC-2): the clock moves above it. `Err` if it
    /// is further ahead of this node's physical clock than `max_offset` allows (HLC-3): the
    /// request must be refused.
    pub fn observe(&mut self, ts: HlcTimestamp) -> Result<HlcTimestamp, decree_types::ClockError> {
        self.clock.hlc.update(self.clock.wall_ns, ts)
    }

    /// Answers a request the machine kept ([`Admission::Later`]).
    pub fn reply(&mut self, to: ReplyTo, response: M::Response) {
        self.effects.push(Effect::Reply(to, response));
    }

    /// Proposes `command` (leader only; on a follower the command is dropped and `waiter`, if
    /// any, is answered with its `on_lost` response). `waiter`: the request to answer with
    /// what `apply` returns for it, and the answer if the entry is lost.
    pub fn propose(&mut self, command: M::Command, waiter: Option<(ReplyTo, M::Response)>) {
        self.effects.push(Effect::Propose { command, waiter });
    }

    /// Sends `request` to a replica of a group, on another node or this one; the answer comes
    /// to [`ReplicatedMachine::handle_response`] with the returned id, never within this call.
    /// Delivery is best effort: the machine retries on its own deadlines.
    pub fn send(&mut self, to: Destination, request: M::Request) -> RequestId {
        *self.next_request_id += 1;
        let request_id = RequestId(*self.next_request_id);
        self.effects.push(Effect::Send { request_id, to, request });
        request_id
    }

    /// Tells the host who leads `group` (learned from a redirect), for later
    /// [`Destination::LeaderOf`] sends.
    pub fn leader_hint(&mut self, group: GroupId, leader: NodeId) {
        self.effects.push(Effect::LeaderHint { group, leader });
    }
}

/// The machine's access to the host while it applies an entry: the role and effects, but no
/// clock (apply is deterministic).
#[derive(Debug)]
pub struct ApplyContext<'a, M: ReplicatedMachine + ?Sized> {
    pub(crate) group: GroupId,
    pub(crate) role: Role,
    pub(crate) effects: &'a mut Vec<Effect<M>>,
    pub(crate) next_request_id: &'a mut u64,
}

impl<M: ReplicatedMachine + ?Sized> ApplyContext<'_, M> {
    /// The group.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// This replica's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Is this replica the leader? Only leader-only work may depend on it.
    pub fn is_leader(&self) -> bool {
        self.role.is_leader()
    }

    /// Answers a request the machine kept (leader-only work).
    pub fn reply(&mut self, to: ReplyTo, response: M::Response) {
        self.effects.push(Effect::Reply(to, response));
    }

    /// Proposes a follow-up command (leader-only work, e.g. a coordinator's `Compact` once
    /// every participant acknowledged); see [`Context::propose`].
    pub fn propose(&mut self, command: M::Command, waiter: Option<(ReplyTo, M::Response)>) {
        self.effects.push(Effect::Propose { command, waiter });
    }

    /// Sends a request to another node (leader-only work); see [`Context::send`].
    pub fn send(&mut self, to: Destination, request: M::Request) -> RequestId {
        *self.next_request_id += 1;
        let request_id = RequestId(*self.next_request_id);
        self.effects.push(Effect::Send { request_id, to, request });
        request_id
    }
}
