//! The multi-group node: every Raft replica one process hosts, the one write-ahead log they
//! share, and the driver loop that turns their `Ready`s into sends, appends and fsyncs.
//!
//! A [`Node`] is synchronous and deterministic. It owns all of its state (`&mut self`, one
//! thread: the Singular Update Queue pattern) and performs no I/O of its own: bytes reach the
//! disk through the [`Wal`] over a [`Disk`], messages leave through a [`Transport`] the caller
//! passes in, and time is the `now_ns` argument of every call (monotonic nanoseconds). The
//! QUIC shell (`decree-runtime`) and the simulator (`decree-sim`) run this same code.
//!
//! # Inputs
//!
//! [`Node::step`] (a message from a peer), [`Node::tick`] (time passed), [`Node::propose`]
//! and [`Node::read_index`] (client requests) only feed the cores; nothing leaves the node
//! until the next [`Node::process`]. Everything that arrives between two `process` calls
//! shares that iteration's single fsync (group commit across groups).
//!
//! # The driver loop: one [`Node::process`] iteration
//!
//! 1. Collect the `Ready` of every group that has one, in `GroupId` order.
//! 2. **Send** each `Ready::messages` (a leader's appends and heartbeats: they acknowledge
//!    nothing durable, so they may overlap our own fsync — Raft thesis §10.2.1). All groups'
//!    messages to one peer go out in one [`Transport::send`] batch.
//!
//!    2½. **Hand out early** (through [`Node::process_with`]'s callback; [`Node::process`]
//!    puts them first in its result) the committed entries this replica already holds
//!    durably — all of a leader's, and a follower's below the first entry it appends now —
//!    so the caller applies them and answers its clients while the node waits for the disk:
//!    at high load a reply no longer waits for the fsync of the next batch.
//! 3. **Append** every group's new term and vote (`Wal::set_hard_state`), snapshot
//!    (`Wal::save_snapshot`, which fsyncs on its own: RAFT-8's temp file + rename), entries
//!    (`Wal::append`) and finally its new commit index to the shared WAL. A power cut can keep
//!    any prefix of unsynced writes; in this order every prefix is a valid Raft state.
//! 4. **One `Wal::sync_for_ack()` for all groups.** It returns the [`SyncToken`] that proves
//!    the fsync; a failed fsync is [`Fatal`]: the node stops for good and every later call
//!    fails (it never carries on as if the write happened). An iteration whose only change
//!    is a commit index does no fsync: that record reaches the disk with the next one (the
//!    commit index is an optimisation; a restarted replica relearns it from its leader), so
//!    a committed entry is handed out for applying without waiting for a second fsync.
//! 5. **Release** every group's `persisted_messages` with that token (vote grants, append
//!    acknowledgements: RAFT-1, INV-R6) and send them, again one batch per peer.
//! 6. Tell each core what is durable (`on_persisted`).
//! 7. **Hand out** per group, in this order: the new role ([`Output::Role`]), a snapshot to
//!    install ([`Output::Restore`]), the remaining committed entries to apply
//!    ([`Output::Apply`]), and reads that failed ([`Output::ReadFailed`]). The caller reports
//!    what it applied with [`Node::on_applied`]; reads whose index is then applied are handed
//!    out first by the next iteration ([`Output::Read`]).
//!
//! Each step is a method of its own (`collect_readies`, `send_unacknowledging`,
//! `hand_out_durable`, `append`, `sync`, `release_acknowledgements`, `hand_out`) that asserts
//! what it leaves behind; the held acknowledgements are sealed with the WAL position of the
//! iteration's writes, and only a [`SyncToken`] through that position releases them.
//!
//! When nothing needs persisting in an iteration, steps 2 and 5 merge into one send per peer.
//!
//! Heartbeats (coalesced per node pair): a leader's heartbeats fall due on a grid, the
//! multiples of the heartbeat interval of `now_ns`, which is one clock for every group of the
//! node (see the core's "Timers"). So every group this node leads sends its heartbeats in the
//! same iteration, whenever it was elected, and they all travel in that peer's one batch: N
//! groups cost one [`Transport::send`] per peer per interval, not N. Inside the batch they
//! stay N small `AppendEntries`, one per group (each core judges its own group's heartbeat);
//! the QUIC shell puts every such small message of the batch into one envelope, one frame on
//! the node pair's connection (`decree_proto::Payload::RaftBatch`).
//!
//! The state machines belong to the caller (the host, `decree-host`): the node returns what
//! to apply and takes snapshots the caller made ([`Node::snapshot`]).
//!
//! # Restart
//!
//! [`Node::open`] recovers every group from the WAL (hard state, newest snapshot, entries),
//! rebuilds the cores, and queues an [`Output::Restore`] per recovered snapshot, which the
//! first `process` hands out before anything else; entries after the snapshot are then
//! applied again as they are (re-)committed.

#[cfg(test)]
mod command_list;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use decree_types::{DetRng, GroupId, LogIndex, NodeId, Term};

use crate::core::{
    self, RaftConfig, RaftCore, ReadIndexError, RestoreError, Restored, SnapshotError, Status,
    TransferError,
};
use crate::disk::Disk;
use crate::msg::{Entry, HardState, Message, SnapshotMeta};
use crate::ready::{Ready, SoftState, SyncToken, WalPosition};
use crate::wal::{FatalError, InvalidRequest, Wal, WalConfig, WalError};

/// The largest command a client may propose, in bytes. Well below the WAL's per-record limit
/// so that a proposal can never make the WAL refuse an append (which would stop the node).
pub const PROPOSAL_BYTES_MAX: usize = 1 << 20;

/// The messages of one [`Transport::send`]: `(group, message)` pairs for one peer, in order.
pub type Batch = Vec<(GroupId, Message)>;

/// Where the node's messages go. The shell implements it over one QUIC connection per peer
/// (a stream per group); the simulator puts batches into its seeded network.
pub trait Transport {
    /// Sends every message of this iteration for peer `to`, of all groups, in order.
    /// Delivery is best effort: Raft retries whatever is lost.
    fn send(&mut self, to: NodeId, batch: Batch);
}

/// Where [`Node::process_io`] hands the outputs that need no fsync of the iteration (step 2½
/// in the module docs), while the iteration is under way. The host implements it together
/// with [`Transport`] on one value, so applying an entry may send at once.
pub trait EarlyOutputs {
    /// An output of this iteration that may be acted on before its fsync.
    fn early(&mut self, output: Output);
}

/// A `Transport` that keeps what was sent, for tests and simple drivers.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Every batch, in send order.
    pub sent: Vec<(NodeId, Batch)>,
}

impl Transport for Outbox {
    fn send(&mut self, to: NodeId, batch: Batch) {
        self.sent.push((to, batch));
    }
}

/// Settings of a node.
#[derive(Clone, Debug, Default)]
pub struct NodeConfig {
    /// Every group's Raft settings.
    pub raft: RaftConfig,
    /// The WAL's settings.
    pub wal: WalConfig,
}

/// What one `process` iteration hands to the caller, per group in the order listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// This replica's role or known leader changed.
    Role {
        /// The group.
        group: GroupId,
        /// The new state.
        state: SoftState,
    },
    /// Replace the group's state machine with this snapshot (RAFT-8): after a restart, or
    /// when the leader sent one because we were too far behind.
    Restore {
        /// The group.
        group: GroupId,
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// The state machine's bytes, as the caller's `snapshot` produced them.
        data: Vec<u8>,
    },
    /// Apply these committed entries, in order, before the next call into the node.
    Apply {
        /// The group.
        group: GroupId,
        /// Consecutive committed entries.
        entries: Vec<Entry>,
    },
    /// The read `ctx` may be served: the state machine has applied `index` (RAFT-3).
    Read {
        /// The group.
        group: GroupId,
        /// The context given to `read_index`.
        ctx: u64,
        /// The read index.
        index: LogIndex,
    },
    /// The read `ctx` cannot be served here (leadership lost, refused): retry.
    ReadFailed {
        /// The group.
        group: GroupId,
        /// The context given to `read_index`.
        ctx: u64,
    },
}

/// Why a proposal was refused. The caller may retry elsewhere or later.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node hosts no replica of the group.
    #[error("no replica of {0} on this node")]
    UnknownGroup(GroupId),
    /// This replica does not lead the group; `leader_hint` is where to retry, if known.
    #[error("not the leader of {group} (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The group.
        group: GroupId,
        /// The leader this replica knows of.
        leader_hint: Option<NodeId>,
    },
    /// Leadership is moving to `target` (RAFT-6); retry there shortly.
    #[error("leadership of {group} is moving to {target}")]
    TransferInProgress {
        /// The group.
        group: GroupId,
        /// The replica becoming leader.
        target: NodeId,
    },
    /// Flow control: too many of the leader's bytes await commit; retry shortly.
    #[error("{group}: {uncommitted_bytes} bytes await commit; retry later")]
    Backpressure {
        /// The group.
        group: GroupId,
        /// Payload bytes above the commit index.
        uncommitted_bytes: u64,
    },
    /// The command is larger than [`PROPOSAL_BYTES_MAX`].
    #[error("proposal of {bytes} bytes is over the limit of {PROPOSAL_BYTES_MAX}")]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// The node stopped on a fatal error.
    #[error("node stopped: {0}")]
    Stopped(String),
}

/// Why a read index was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// This node hosts no replica of the group.
    #[error("no replica of {0} on this node")]
    UnknownGroup(GroupId),
    /// The core refused (no known leader, too many pending reads).
    #[error(transparent)]
    Refused(#[from] ReadIndexError),
    /// The node stopped on a fatal error.
    #[error("node stopped: {0}")]
    Stopped(String),
}

/// Why a leadership transfer was not started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferRequestError {
    /// This node hosts no replica of the group.
    #[error("no replica of {0} on this node")]
    UnknownGroup(GroupId),
    /// The core refused (not the leader, target not a voter).
    #[error(transparent)]
    Refused(#[from] TransferError),
    /// The node stopped on a fatal error.
    #[error("node stopped: {0}")]
    Stopped(String),
}

/// Why a snapshot was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotRequestError {
    /// This node hosts no replica of the group.
    #[error("no replica of {0} on this node")]
    UnknownGroup(GroupId),
    /// The core refused it (not applied yet, not newer than the current one); nothing changed.
    #[error(transparent)]
    Refused(#[from] SnapshotError),
    /// Persisting it failed; the node has stopped.
    #[error(transparent)]
    Fatal(#[from] Fatal),
}

/// An error that stops the node. It never continues after one: every later call fails.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    /// The WAL failed: an fsync or disk error, or corruption found while recovering.
    #[error("write-ahead log: {0}")]
    Wal(#[from] FatalError),
    /// The WAL refused what the driver asked it to write: the core and the WAL disagree about
    /// the log, which is a bug; continuing could lose acknowledged entries.
    #[error("write-ahead log refused a write (driver or core bug): {0}")]
    Rejected(InvalidRequest),
    /// A group's recovered state is not a valid Raft state.
    #[error("{group}: recovered state is invalid: {error}")]
    Restore {
        /// The group.
        group: GroupId,
        /// Why.
        error: RestoreError,
    },
    /// The node had already stopped for `cause`.
    #[error("node stopped earlier: {0}")]
    Stopped(String),
}

impl From<WalError> for Fatal {
    fn from(e: WalError) -> Self {
        match e {
            WalError::Fatal(f) => Fatal::Wal(f),
            WalError::Invalid(i) => Fatal::Rejected(i),
        }
    }
}

impl Fatal {
    /// Did the disk fail (as opposed to a bug in the node or core)? A failed fsync or a disk
    /// error is something the environment does; the simulator injects those on purpose.
    pub fn is_disk_failure(&self) -> bool {
        matches!(self, Fatal::Wal(FatalError::SyncFailed(_) | FatalError::Disk(_)))
    }
}

/// One process's replicas of every group it hosts, sharing one WAL. See the module docs.
#[derive(Debug)]
pub struct Node<D: Disk> {
    id: NodeId,
    wal: Wal<D>,
    groups: BTreeMap<GroupId, Replica>,
    /// Outputs produced outside `process` (recovered snapshots), handed out first.
    pending: Vec<Output>,
    /// Set by the first fatal error; the node never does anything again.
    stopped: Option<String>,
}

#[derive(Debug)]
struct Replica {
    core: RaftCore,
    /// Reads whose index the state machine has not applied yet.
    waiting_reads: Vec<(u64, LogIndex)>,
}

impl<D: Disk> Node<D> {
    /// Opens the node `id` on `disk`: recovers the WAL and starts one replica per entry of
    /// `groups` (group and its voters), fresh or from its recovered state. Groups the WAL
    /// knows but `groups` does not list are left on disk untouched.
    pub fn open(
        id: NodeId,
        groups: Vec<(GroupId, Vec<NodeId>)>,
        disk: D,
        config: NodeConfig,
        mut rng: DetRng,
        now_ns: u64,
    ) -> Result<Node<D>, Fatal> {
        let (wal, mut recovered) = Wal::open(disk, config.wal.clone())?;
        let mut replicas = BTreeMap::new();
        let mut pending = Vec::new();
        for (group, voters) in groups {
            let state = recovered.groups.remove(&group).unwrap_or_default();
            let applied = state.snapshot.as_ref().map_or(LogIndex(0), |(m, _)| m.last_index);
            if let Some((meta, data)) = &state.snapshot {
                pending.push(Output::Restore { group, meta: meta.clone(), data: data.clone() });
            }
            let restored = Restored {
                hard_state: state.hard_state,
                snapshot: state.snapshot,
                entries: state.entries,
                applied,
            };
            let core = RaftCore::new(config.raft.clone(), id, voters, restored, rng.fork(), now_ns)
                .map_err(|error| Fatal::Restore { group, error })?;
            replicas.insert(group, Replica { core, waiting_reads: Vec::new() });
        }
        Ok(Node { id, wal, groups: replicas, pending, stopped: None })
    }

    /// Handles a message from peer `from` for `group`. Messages for groups this node does
    /// not host, and messages the core ignores, are dropped: peers' input never fails a node.
    pub fn step(&mut self, now_ns: u64, from: NodeId, group: GroupId, msg: Message) {
        if self.stopped.is_some() {
            return;
        }
        if let Some(r) = self.groups.get_mut(&group) {
            // `Ignored` explains why a message had no effect; Raft recovers from any of them.
            let _ = r.core.step(now_ns, from, msg);
        }
    }

    /// Time passed: every group's timers are checked against `now_ns`.
    pub fn tick(&mut self, now_ns: u64) {
        if self.stopped.is_some() {
            return;
        }
        for r in self.groups.values_mut() {
            r.core.tick(now_ns);
        }
    }

    /// Appends `data` to `group`'s log if this replica leads it, and returns the entry's
    /// `(index, term)`. The entry is committed and applied when an [`Output::Apply`] carries
    /// an entry with this index *and* this term (a new leader may have replaced it).
    pub fn propose(
        &mut self,
        now_ns: u64,
        group: GroupId,
        data: Vec<u8>,
    ) -> Result<(LogIndex, Term), ProposeError> {
        if let Some(cause) = &self.stopped {
            return Err(ProposeError::Stopped(cause.clone()));
        }
        if data.len() > PROPOSAL_BYTES_MAX {
            return Err(ProposeError::TooLarge { bytes: data.len() });
        }
        let r = self.groups.get_mut(&group).ok_or(ProposeError::UnknownGroup(group))?;
        let index = r.core.propose(now_ns, data).map_err(|e| match e {
            core::AppendError::NotLeader { leader_hint } => {
                ProposeError::NotLeader { group, leader_hint }
            }
            core::AppendError::TransferInProgress { target } => {
                ProposeError::TransferInProgress { group, target }
            }
            core::AppendError::TooManyUncommitted { uncommitted_bytes } => {
                ProposeError::Backpressure { group, uncommitted_bytes }
            }
        })?;
        // A successful proposal was appended by the leader of the current term.
        Ok((index, r.core.term()))
    }

    /// Asks for a linearizable read of `group` (RAFT-3); the answer is an [`Output::Read`] or
    /// [`Output::ReadFailed`] carrying `ctx`.
    pub fn read_index(&mut self, now_ns: u64, group: GroupId, ctx: u64) -> Result<(), ReadError> {
        if let Some(cause) = &self.stopped {
            return Err(ReadError::Stopped(cause.clone()));
        }
        let r = self.groups.get_mut(&group).ok_or(ReadError::UnknownGroup(group))?;
        Ok(r.core.read_index(now_ns, ctx)?)
    }

    /// The caller applied `group`'s committed entries up to `index` (everything the node
    /// handed out, or a prefix of it). Reads waiting for that index become servable: they
    /// are handed out first by the next `process` ([`Output::Read`]).
    pub fn on_applied(&mut self, group: GroupId, index: LogIndex) {
        let Some(r) = self.groups.get_mut(&group) else { return };
        r.core.on_applied(index);
        let applied = r.core.applied();
        let pending = &mut self.pending;
        r.waiting_reads.retain(|&(ctx, read_index)| {
            let servable = read_index <= applied;
            if servable {
                pending.push(Output::Read { group, ctx, index: read_index });
            }
            !servable
        });
    }

    /// Moves leadership of `group` to `target` (RAFT-6): the leader stops taking proposals,
    /// brings `target` up to date and tells it to start an election at once.
    pub fn transfer_leadership(
        &mut self,
        now_ns: u64,
        group: GroupId,
        target: NodeId,
    ) -> Result<(), TransferRequestError> {
        if let Some(cause) = &self.stopped {
            return Err(TransferRequestError::Stopped(cause.clone()));
        }
        let r = self.groups.get_mut(&group).ok_or(TransferRequestError::UnknownGroup(group))?;
        Ok(r.core.transfer_leadership(now_ns, target)?)
    }

    /// One driver iteration; see the module docs for its steps. Returns what the caller must
    /// apply and serve, per group, in order. After `Err` the node has stopped.
    pub fn process(&mut self, transport: &mut impl Transport) -> Result<Vec<Output>, Fatal> {
        let mut early = Vec::new();
        let late = self.process_with(transport, &mut |o| early.push(o))?;
        early.extend(late);
        Ok(early)
    }

    /// [`Node::process`], handing the outputs that need no fsync of this iteration to `early`
    /// as soon as the iteration's messages are sent and before its fsync (step 2½ in the
    /// module docs): recovered snapshots, and committed entries this replica already holds
    /// durably. The caller applies them (and answers its clients) while the node waits for the
    /// disk. The rest is returned; apply `early`'s outputs first, then the returned ones.
    ///
    /// If the iteration fails, the early outputs stand: they were committed and durable here
    /// before it began. After `Err` the node has stopped.
    pub fn process_with(
        &mut self,
        transport: &mut impl Transport,
        early: &mut dyn FnMut(Output),
    ) -> Result<Vec<Output>, Fatal> {
        struct Split<'a, T, F: ?Sized> {
            transport: &'a mut T,
            early: &'a mut F,
        }
        impl<T: Transport, F: FnMut(Output) + ?Sized> Transport for Split<'_, T, F> {
            fn send(&mut self, to: NodeId, batch: Batch) {
                self.transport.send(to, batch);
            }
        }
        impl<T, F: FnMut(Output) + ?Sized> EarlyOutputs for Split<'_, T, F> {
            fn early(&mut self, output: Output) {
                (self.early)(output);
            }
        }
        self.process_io(&mut Split { transport, early })
    }

    /// [`Node::process_with`] over one value that both sends and takes the early outputs.
    pub fn process_io(
        &mut self,
        io: &mut (impl Transport + EarlyOutputs),
    ) -> Result<Vec<Output>, Fatal> {
        if let Some(cause) = &self.stopped {
            return Err(Fatal::Stopped(cause.clone()));
        }
        match self.drive(io) {
            Ok(out) => Ok(out),
            Err(fatal) => {
                self.stopped = Some(fatal.to_string());
                Err(fatal)
            }
        }
    }

    /// The caller saved `group`'s state machine as of `index` (≤ what it applied) as `data`:
    /// the core drops its log up to `index`, the WAL stores the snapshot durably (temp file,
    /// fsync, rename, directory fsync) and deletes segments below the low-water mark.
    /// Snapshot transfers to followers under way are not disturbed: each goes on with the
    /// snapshot it started with (RAFT-8).
    pub fn snapshot(
        &mut self,
        group: GroupId,
        index: LogIndex,
        data: Vec<u8>,
    ) -> Result<(), SnapshotRequestError> {
        if let Some(cause) = &self.stopped {
            return Err(Fatal::Stopped(cause.clone()).into());
        }
        let r = self.groups.get_mut(&group).ok_or(SnapshotRequestError::UnknownGroup(group))?;
        let meta = r.core.snapshot_created(index, data.clone())?;
        let persisted = self
            .wal
            .save_snapshot(group, meta, &data)
            .and_then(|()| self.wal.compact().map(drop))
            .map_err(Fatal::from);
        if let Err(fatal) = persisted {
            self.stopped = Some(fatal.to_string());
            return Err(fatal.into());
        }
        Ok(())
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The groups this node hosts.
    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.keys().copied()
    }

    /// A summary of the replica of `group`.
    pub fn status(&self, group: GroupId) -> Option<Status> {
        self.groups.get(&group).map(|r| r.core.status())
    }

    /// Read-only access to the replica of `group`, for inspection (status pages, checkers).
    pub fn core(&self, group: GroupId) -> Option<&RaftCore> {
        self.groups.get(&group).map(|r| &r.core)
    }

    /// The earliest local time at which some group's `tick` has something to do.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        self.groups.values().map(|r| r.core.next_deadline_ns()).min()
    }

    /// Does some group have work for [`Node::process`]?
    pub fn has_ready(&self) -> bool {
        !self.pending.is_empty() || self.groups.values().any(|r| r.core.has_ready())
    }

    /// Why the node stopped, if it did.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// The WAL (counters, and the disk for the simulator).
    pub fn wal(&self) -> &Wal<D> {
        &self.wal
    }

    /// The driver loop of the module docs, one named step per method; each step asserts
    /// what it leaves behind.
    fn drive(&mut self, io: &mut (impl Transport + EarlyOutputs)) -> Result<Vec<Output>, Fatal> {
        // Recovered snapshots, and reads that became servable since the last iteration, come
        // before anything else of their group.
        for output in std::mem::take(&mut self.pending) {
            io.early(output);
        }
        let mut readies = self.collect_readies();
        if readies.is_empty() {
            return Ok(Vec::new());
        }
        let needs_fsync = self.needs_fsync(&readies);
        let mut batches: BTreeMap<NodeId, Batch> = BTreeMap::new();
        self.send_unacknowledging(&mut readies, &mut batches, needs_fsync, io);
        self.hand_out_durable(&mut readies, io);
        let needs = self.append(&mut readies)?;
        let token = self.sync(needs)?;
        Self::release_acknowledgements(&mut readies, &token, &mut batches, io);
        Ok(self.hand_out(readies))
    }

    /// Step 1: the `Ready` of every group that has one, in `GroupId` order.
    fn collect_readies(&mut self) -> Vec<(GroupId, Ready)> {
        let readies: Vec<(GroupId, Ready)> = self
            .groups
            .iter_mut()
            .filter(|(_, r)| r.core.has_ready())
            .map(|(&group, r)| (group, r.core.ready()))
            .collect();
        debug_assert!(self.groups.values().all(|r| !r.core.has_ready()), "every Ready taken");
        readies
    }

    /// Does this iteration write anything an acknowledgement depends on (RAFT-1)?
    fn needs_fsync(&self, readies: &[(GroupId, Ready)]) -> bool {
        readies.iter().any(|(group, r)| {
            let old = self.wal.hard_state(*group);
            r.hard_state.is_some_and(|hs| hs.changes_term_or_vote(&old))
                || r.snapshot.is_some()
                || !r.entries.is_empty()
        })
    }

    /// Step 2: messages that acknowledge nothing durable. If nothing needs an fsync they wait
    /// and leave with the step-5 batch, so each peer gets one send.
    fn send_unacknowledging(
        &mut self,
        readies: &mut [(GroupId, Ready)],
        batches: &mut BTreeMap<NodeId, Batch>,
        needs_fsync: bool,
        io: &mut impl Transport,
    ) {
        for (group, ready) in readies.iter_mut() {
            for (to, msg) in ready.messages.drain(..) {
                batches.entry(to).or_default().push((*group, msg));
            }
        }
        if needs_fsync {
            flush(io, batches);
            debug_assert!(batches.is_empty());
        }
        debug_assert!(readies.iter().all(|(_, r)| r.messages.is_empty()), "step 2 sent all");
    }

    /// Step 2½: committed entries this replica already holds durably need nothing from this
    /// iteration's fsync: hand them out now, so they are applied and answered while the disk
    /// works. That is every committed entry below the first one this `Ready` appends —
    /// entries of earlier iterations were fsynced before those returned. A leader only
    /// commits what it persisted, so there it is all of them; a follower may learn that an
    /// entry it is appending right now is committed, and that one waits for the fsync. A
    /// group installing a snapshot hands everything out after it.
    fn hand_out_durable(&mut self, readies: &mut [(GroupId, Ready)], io: &mut impl EarlyOutputs) {
        for (group, ready) in readies.iter_mut() {
            if ready.snapshot.is_some() || ready.committed_entries.is_empty() {
                continue;
            }
            let first_new = ready.entries.first().map_or(LogIndex(u64::MAX), |e| e.index);
            let durable = ready.committed_entries.partition_point(|e| e.index < first_new);
            let rest = ready.committed_entries.split_off(durable);
            let entries = std::mem::replace(&mut ready.committed_entries, rest);
            if !entries.is_empty() {
                io.early(Output::Apply { group: *group, entries });
            }
            // Postcondition: what is left is not durable here yet.
            debug_assert!(ready.committed_entries.first().is_none_or(|e| e.index >= first_new));
        }
    }

    /// Step 3: append everything to the one WAL. A power cut (or a failed fsync of a later
    /// segment) may keep any prefix of the unsynced writes, so the order makes every prefix a
    /// valid state:
    ///   a. the new term and vote, with the commit index that was already durable — no entry
    ///      below may carry a term above the durable term;
    ///   b. the snapshot, which replaces the log (RAFT-8);
    ///   c. the entries;
    ///   d. the new commit index — never durable before the entries it covers, or a restart
    ///      could apply a stale entry that the lost write was replacing (INV-R5).
    ///
    /// Returns the WAL position the acknowledgements of this iteration need durable, and
    /// seals each group's held messages with it.
    fn append(&mut self, readies: &mut [(GroupId, Ready)]) -> Result<WalPosition, Fatal> {
        for (group, ready) in readies.iter() {
            let old = self.wal.hard_state(*group);
            if let Some(hs) = ready.hard_state.filter(|hs| hs.changes_term_or_vote(&old)) {
                let commit = hs.commit.min(old.commit);
                self.wal.set_hard_state(*group, HardState { commit, ..hs })?;
            }
            if let Some((meta, data)) = &ready.snapshot {
                self.wal.save_snapshot(*group, meta.clone(), data)?;
            }
            self.wal.append(*group, &ready.entries)?;
            if let Some(hs) = ready.hard_state {
                self.wal.set_hard_state(*group, hs)?;
            }
            // Postcondition: the WAL holds the group's new hard state.
            debug_assert!(ready.hard_state.is_none_or(|hs| self.wal.hard_state(*group) == hs));
        }
        let needs = self.wal.ack_position();
        for (_, ready) in readies.iter_mut() {
            ready.persisted_messages.seal(needs);
        }
        Ok(needs)
    }

    /// Step 4: one fsync for all groups, unless only commit indexes changed (the WAL writes
    /// those with the next fsync: `Wal::sync_for_ack`). A failure is fatal: nothing after it
    /// runs.
    fn sync(&mut self, needs: WalPosition) -> Result<SyncToken, Fatal> {
        let token: SyncToken = self.wal.sync_for_ack()?;
        // Postcondition (RAFT-1): every write an acknowledgement depends on is durable.
        assert!(token.through() >= needs, "the fsync covers this iteration's writes");
        Ok(token)
    }

    /// Step 5: the durable acknowledgements may leave now (RAFT-1), with whatever waited.
    fn release_acknowledgements(
        readies: &mut [(GroupId, Ready)],
        token: &SyncToken,
        batches: &mut BTreeMap<NodeId, Batch>,
        io: &mut impl Transport,
    ) {
        for (group, ready) in readies.iter_mut() {
            let persisted = std::mem::take(&mut ready.persisted_messages);
            for (to, msg) in persisted.release(token) {
                batches.entry(to).or_default().push((*group, msg));
            }
        }
        flush(io, batches);
        debug_assert!(batches.is_empty(), "step 5 sent all");
    }

    /// Steps 6 and 7, per group: tell the core what is durable, then hand out the role, a
    /// snapshot to install, the remaining committed entries and the reads that failed. Reads
    /// are served once the caller reports them applied ([`Node::on_applied`]).
    fn hand_out(&mut self, readies: Vec<(GroupId, Ready)>) -> Vec<Output> {
        let mut out = Vec::new();
        for (group, ready) in readies {
            // Invariant: `readies` was built from `self.groups`, which has not changed since.
            let r = self.groups.get_mut(&group).expect("ready came from a hosted group");
            if let Some((index, term)) = ready.persist_mark() {
                r.core.on_persisted(index, term);
            }
            let Ready {
                soft_state, snapshot, committed_entries, read_states, failed_reads, ..
            } = ready;
            if let Some(state) = soft_state {
                out.push(Output::Role { group, state });
            }
            if let Some((meta, data)) = snapshot {
                out.push(Output::Restore { group, meta, data });
            }
            if !committed_entries.is_empty() {
                out.push(Output::Apply { group, entries: committed_entries });
            }
            r.waiting_reads.extend(read_states.iter().map(|rs| (rs.ctx, rs.index)));
            let applied = r.core.applied();
            r.waiting_reads.retain(|&(ctx, index)| {
                let servable = index <= applied;
                if servable {
                    out.push(Output::Read { group, ctx, index });
                }
                !servable
            });
            out.extend(failed_reads.into_iter().map(|ctx| Output::ReadFailed { group, ctx }));
        }
        out
    }
}

/// Sends each peer's batch (one `Transport::send` per peer) and empties the map.
fn flush(transport: &mut impl Transport, batches: &mut BTreeMap<NodeId, Batch>) {
    for (to, batch) in std::mem::take(batches) {
        if !batch.is_empty() {
            transport.send(to, batch);
        }
    }
}
