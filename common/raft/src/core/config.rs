//! Configuration of a Raft core, and the errors its calls return.

use std::time::Duration;

use decree_types::{limits, LogIndex, NodeId, Term};

/// Tuning of one Raft replica. Defaults are the named bounds of `decree_types::limits`
/// (DESIGN.md §10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftConfig {
    /// A leader sends a heartbeat to each follower this often.
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomized election timeout; also the leader lease a follower
    /// honours before it considers a vote request (RAFT-5) and the check-quorum period (RAFT-4).
    pub election_timeout_min: Duration,
    /// Upper bound (exclusive) of the randomized election timeout.
    pub election_timeout_max: Duration,
    /// AppendEntries messages in flight to one follower in replicate mode (Request Pipeline).
    pub max_inflight_appends: usize,
    /// Payload bytes per AppendEntries (at least one entry is always sent).
    pub max_append_bytes: u64,
    /// Entries per AppendEntries, at most `limits::RAFT_ENTRIES_PER_APPEND_MAX` (the wire's
    /// bound): with small entries the byte budget alone would allow more.
    pub max_append_entries: usize,
    /// Bytes of a committed-entries batch handed out in one `Ready` (at least one entry).
    pub max_apply_bytes: u64,
    /// Bytes per InstallSnapshot chunk.
    pub snapshot_chunk_bytes: u64,
    /// Largest snapshot a follower accepts from a leader.
    pub max_snapshot_bytes: u64,
    /// Payload bytes a leader accepts beyond its commit index before it refuses proposals
    /// (flow control while followers are slow or away). One proposal is always accepted.
    pub max_uncommitted_bytes: u64,
    /// ReadIndex requests a leader (or a follower forwarding them) keeps pending.
    pub max_pending_reads: usize,
    /// RAFT-4: a leader steps down after an election timeout without hearing from a majority.
    pub check_quorum: bool,
    /// RAFT-5: a node asks for pre-votes before it increments its term.
    pub pre_vote: bool,
    /// A deliberate bug, for showing that the simulator's checkers catch it. Only tests and
    /// the simulator set it; it is always [`Mutation::None`] otherwise.
    #[doc(hidden)]
    pub mutation: Mutation,
}

/// A deliberately broken rule of the protocol (see [`RaftConfig::mutation`]). Each one is
/// a known way to lose committed entries, which a checker must report.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mutation {
    /// The protocol as written.
    #[default]
    None,
    /// RAFT-2 / INV-R7 broken (Figure 8): a leader commits an entry of an earlier term by
    /// counting the replicas that hold it.
    CommitOldTermByCounting,
    /// §5.4.1 broken: votes and pre-votes are granted whatever the candidate's log.
    NoElectionRestriction,
    /// §5.3 broken: a follower truncates its log after the last entry of every append, even
    /// one whose entries it already holds (a delayed or duplicated append shortens its log).
    TruncateOnDuplicateAppend,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval: Duration::from_millis(limits::HEARTBEAT_INTERVAL_MS),
            election_timeout_min: Duration::from_millis(limits::ELECTION_TIMEOUT_MIN_MS),
            election_timeout_max: Duration::from_millis(limits::ELECTION_TIMEOUT_MAX_MS),
            max_inflight_appends: limits::APPEND_ENTRIES_IN_FLIGHT_MAX,
            max_append_bytes: limits::APPEND_ENTRIES_BYTES_MAX as u64,
            max_append_entries: limits::RAFT_ENTRIES_PER_APPEND_MAX,
            max_apply_bytes: 16 << 20,
            snapshot_chunk_bytes: limits::SNAPSHOT_CHUNK_BYTES as u64,
            max_snapshot_bytes: 8 << 30,
            max_uncommitted_bytes: 64 << 20,
            max_pending_reads: 4096,
            check_quorum: true,
            pre_vote: true,
            mutation: Mutation::None,
        }
    }
}

impl RaftConfig {
    /// Checks the relations between the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError::Invalid("heartbeat_interval must be positive"));
        }
        if self.election_timeout_min <= self.heartbeat_interval {
            return Err(ConfigError::Invalid(
                "election_timeout_min must exceed heartbeat_interval",
            ));
        }
        if self.election_timeout_max <= self.election_timeout_min {
            return Err(ConfigError::Invalid(
                "election_timeout_max must exceed election_timeout_min",
            ));
        }
        if self.max_inflight_appends == 0 {
            return Err(ConfigError::Invalid("max_inflight_appends must be at least 1"));
        }
        if self.snapshot_chunk_bytes == 0 || self.max_append_bytes == 0 || self.max_apply_bytes == 0
        {
            return Err(ConfigError::Invalid("byte limits must be positive"));
        }
        if self.max_append_entries == 0
            || self.max_append_entries > limits::RAFT_ENTRIES_PER_APPEND_MAX
        {
            return Err(ConfigError::Invalid(
                "max_append_entries must be between 1 and RAFT_ENTRIES_PER_APPEND_MAX",
            ));
        }
        if self.snapshot_chunk_bytes > limits::SNAPSHOT_CHUNK_BYTES_MAX as u64 {
            return Err(ConfigError::Invalid(
                "snapshot_chunk_bytes must not exceed SNAPSHOT_CHUNK_BYTES_MAX",
            ));
        }
        if self.max_pending_reads == 0 {
            return Err(ConfigError::Invalid("max_pending_reads must be at least 1"));
        }
        Ok(())
    }

    pub(crate) fn heartbeat_ns(&self) -> u64 {
        duration_ns(self.heartbeat_interval)
    }

    pub(crate) fn election_min_ns(&self) -> u64 {
        duration_ns(self.election_timeout_min)
    }

    pub(crate) fn election_max_ns(&self) -> u64 {
        duration_ns(self.election_timeout_max)
    }
}

fn hint(leader: Option<NodeId>) -> String {
    leader.map_or_else(|| "none".to_string(), |l| l.to_string())
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Which relation is violated.
    #[error("invalid raft configuration: {0}")]
    Invalid(&'static str),
}

/// Why the state handed to [`RaftCore::new`](super::RaftCore::new) cannot be a replica's state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No voters.
    #[error("the voter set is empty")]
    NoVoters,
    /// More voters than `limits::VOTERS_MAX` (a snapshot of this group could not be sent).
    #[error("{0} voters; a group has at most VOTERS_MAX")]
    TooManyVoters(usize),
    /// The recovered entries have a hole or are out of order.
    #[error("recovered entries are not contiguous: expected index {expected}, found {found}")]
    EntriesNotContiguous {
        /// The index that should come next.
        expected: LogIndex,
        /// The index found there.
        found: LogIndex,
    },
    /// An entry's term is lower than its predecessor's, or above the hard state's term.
    #[error("recovered entry {index} has term {term}, which is out of order")]
    EntryTermOutOfOrder {
        /// The entry.
        index: LogIndex,
        /// Its term.
        term: Term,
    },
    /// The state machine claims to have applied entries the log does not have.
    #[error("applied index {applied} is beyond the last recovered index {last}")]
    AppliedBeyondLog {
        /// Applied index given.
        applied: LogIndex,
        /// Last index of the recovered log.
        last: LogIndex,
    },
    /// The snapshot's data is missing or its index is zero.
    #[error("snapshot at index {0} is invalid")]
    InvalidSnapshot(LogIndex),
}

/// Why the core did not append a proposal to its log (`decree_raft::node::ProposeError` is what
/// the node reports for it, with the group). The caller may retry elsewhere or later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// Only the leader appends; `leader_hint` is the leader this replica knows of.
    #[error("not the leader (leader hint: {})", hint(*.leader_hint))]
    NotLeader {
        /// Where to retry, if known.
        leader_hint: Option<NodeId>,
    },
    /// A leadership transfer is under way (RAFT-6): proposals are refused until it ends.
    #[error("leadership transfer to {target} in progress")]
    TransferInProgress {
        /// The replica that is becoming leader.
        target: NodeId,
    },
    /// Flow control: `max_uncommitted_bytes` of this leader's entries await commit.
    #[error("{uncommitted_bytes} bytes await commit; retry later")]
    TooManyUncommitted {
        /// Payload bytes above the commit index.
        uncommitted_bytes: u64,
    },
}

/// Why a read index could not be requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadIndexError {
    /// A follower that knows no leader cannot ask one.
    #[error("no known leader to ask for a read index")]
    NoLeader,
    /// Too many reads are already pending (`max_pending_reads`).
    #[error("too many pending reads")]
    TooManyPendingReads,
}

/// Why a leadership transfer was not started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Only the leader can transfer leadership.
    #[error("not the leader (leader hint: {})", hint(*.leader_hint))]
    NotLeader {
        /// The leader this replica knows of.
        leader_hint: Option<NodeId>,
    },
    /// The target is not a voter of this group.
    #[error("{0} is not a voter")]
    NotAVoter(NodeId),
}

/// Why a snapshot could not be registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The state machine has not applied the index the snapshot claims to cover.
    #[error("snapshot index {index} is beyond the applied index {applied}")]
    NotApplied {
        /// Snapshot index given.
        index: LogIndex,
        /// Applied index.
        applied: LogIndex,
    },
    /// A snapshot at or beyond this index already exists.
    #[error("snapshot index {index} is not above the current snapshot {current}")]
    Stale {
        /// Snapshot index given.
        index: LogIndex,
        /// Current snapshot index.
        current: LogIndex,
    },
}

/// Why a message had no effect (beyond, perhaps, a reply that tells the sender our term).
/// Returned by [`RaftCore::step`](super::RaftCore::step) for tracing and tests; a driver may
/// ignore it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    /// The sender is not a voter of this group (or is this replica itself).
    #[error("sender is not a peer of this group")]
    UnknownPeer,
    /// The message's term is older than ours.
    #[error("message from an older term")]
    StaleTerm,
    /// A vote request within the leader lease (RAFT-5).
    #[error("vote request while a leader is known to be alive")]
    InLease,
    /// The message does not apply to our role (e.g. an append response to a follower).
    #[error("message does not apply in this role")]
    WrongRole,
    /// The message answers a request we no longer wait for.
    #[error("stale or duplicate response")]
    Stale,
    /// The message contradicts itself or Raft's invariants; the sender is buggy or hostile.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}
