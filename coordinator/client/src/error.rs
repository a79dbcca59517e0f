//! The errors a caller of the client library branches on (DESIGN.md §9, STYLE.md principle 5).
//!
//! Every outcome a program must react to differently is its own variant: retry the whole
//! transaction ([`Error::Conflict`], and anything else [`Error::is_retryable`] says), resolve
//! the outcome before doing anything else ([`Error::Ambiguous`]), wait or give up
//! ([`Error::Unavailable`]), or fix the program or the deployment ([`Error::InvalidArgument`],
//! [`Error::Tls`], [`Error::Config`]). Text is only ever *detail* for a person.

use std::path::PathBuf;

use decree_proto::txn::AbortReason;
use decree_proto::LimitError;
use decree_types::{GroupId, HlcTimestamp, Key, TxnId};

/// What a client operation can fail with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The transaction lost a conflict and did not commit; running it again (with a fresh
    /// transaction id, as [`crate::Client::transact`] does) may succeed.
    #[error("transaction conflict: {reason}")]
    Conflict {
        /// What happened.
        reason: ConflictReason,
    },
    /// The commit request may or may not have taken effect: the reply was lost and the outcome
    /// could not be learned before the deadline. The transaction is *not* known to be aborted;
    /// ask [`crate::Client::txn_status`] (or [`crate::Client::txn_status_at`] with this
    /// `read_ts`) before doing anything that assumes either outcome.
    #[error("outcome of transaction {txn_id} is unknown (commit request sent, no answer)")]
    Ambiguous {
        /// The transaction whose outcome is unknown (its idempotency key).
        txn_id: TxnId,
        /// Its read timestamp, which [`crate::Client::txn_status_at`] needs.
        read_ts: HlcTimestamp,
    },
    /// The transaction was aborted for a reason a rerun would not fix (or the caller asked).
    #[error("transaction {txn_id} aborted: {reason:?}")]
    Aborted {
        /// The transaction.
        txn_id: TxnId,
        /// Why the cluster aborted it.
        reason: AbortReason,
    },
    /// No replica that could serve the request answered before the deadline. Nothing was
    /// changed by this request (a commit that may have been delivered is reported as
    /// [`Error::Ambiguous`] instead).
    #[error("unavailable: {what}")]
    Unavailable {
        /// What could not be reached, for a person.
        what: String,
    },
    /// A key is outside every range the client knows even after refreshing the range map
    /// (the map kept moving under the request).
    #[error("key {key} is outside the range of the group it was routed to")]
    KeyOutOfRange {
        /// The offending key.
        key: Key,
    },
    /// The request is wrong and would be refused again: a reversed range, a write on a
    /// read-only snapshot, a transaction used after it finished, an unknown transaction id.
    #[error("invalid argument: {detail}")]
    InvalidArgument {
        /// What was wrong.
        detail: String,
    },
    /// The request exceeds a bound of the wire protocol (key or value size, keys per
    /// transaction, scan rows).
    #[error(transparent)]
    LimitExceeded(#[from] LimitError),
    /// The read timestamp is below the group's garbage-collection threshold: the versions it
    /// needs are gone. A snapshot that old cannot be read.
    #[error("read timestamp is below the GC threshold {gc_threshold} of group {group}")]
    BelowGcThreshold {
        /// The group that refused.
        group: GroupId,
        /// Its oldest readable timestamp.
        gc_threshold: HlcTimestamp,
    },
    /// A node refused our clock reading: this machine's clock is more than `max_offset` ahead
    /// of the cluster's (HLC-3). Fix the clock (NTP).
    #[error("clock refused by the cluster: ours is {ahead_ns} ns ahead, limit {max_offset_ns} ns")]
    ClockRejected {
        /// How far ahead of the node's clock ours was.
        ahead_ns: u64,
        /// The cluster's bound.
        max_offset_ns: u64,
    },
    /// The TLS handshake failed: our certificate is not from the cluster CA, or the node's is
    /// not, or it names another node.
    #[error("TLS handshake with {peer} failed: {reason}")]
    Tls {
        /// Who we tried to reach.
        peer: String,
        /// The handshake's complaint.
        reason: String,
    },
    /// The client configuration (cluster file, certificates, settings) is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A node answered something the protocol does not allow here (a bug or a version
    /// mismatch between client and cluster).
    #[error("protocol violation: {detail}")]
    Protocol {
        /// What was unexpected.
        detail: String,
    },
}

/// Why a transaction lost a conflict (all retryable).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConflictReason {
    /// The cluster aborted the transaction (a participant voted no, prepare timeout,
    /// coordinator failover, ...) and says a rerun may succeed.
    #[error("transaction {txn_id} aborted: {reason:?}")]
    Aborted {
        /// The aborted transaction.
        txn_id: TxnId,
        /// Why.
        reason: AbortReason,
    },
    /// A read met a version inside the transaction's uncertainty window after the transaction
    /// had already read something (protocol.md §5.3, U-1): it must rerun at `new_read_ts`,
    /// keeping its uncertainty limit. [`crate::Client::transact`] does exactly that.
    #[error("uncertain version at {new_read_ts}; restart at that timestamp (U-1)")]
    Uncertainty {
        /// The timestamp to restart at.
        new_read_ts: HlcTimestamp,
        /// The uncertainty limit to keep (U-1).
        uncertainty_limit: HlcTimestamp,
    },
}

/// Why a client configuration cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The cluster file is not valid TOML of the expected shape.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        reason: String,
    },
    /// A setting has a value that cannot work.
    #[error("setting `{setting}`: {reason}")]
    Invalid {
        /// The setting.
        setting: String,
        /// Why.
        reason: String,
    },
    /// The certificates could not be loaded.
    #[error("certificates: {reason}")]
    Certificates {
        /// What went wrong.
        reason: String,
    },
    /// No node to ask for the range map: neither seeds nor a cluster file were given.
    #[error("no seed nodes: give a cluster file or at least one seed address")]
    NoSeeds,
}

impl Error {
    /// Whether running the whole transaction again, from its first read, may succeed and is
    /// safe: the transaction is known not to have committed. [`Error::Ambiguous`] is *not*
    /// retryable: its outcome must be resolved first.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Conflict { .. } | Error::Unavailable { .. } | Error::KeyOutOfRange { .. } => {
                true
            }
            Error::Ambiguous { .. }
            | Error::Aborted { .. }
            | Error::InvalidArgument { .. }
            | Error::LimitExceeded(_)
            | Error::BelowGcThreshold { .. }
            | Error::ClockRejected { .. }
            | Error::Tls { .. }
            | Error::Config(_)
            | Error::Protocol { .. } => false,
        }
    }

    /// The read timestamp and uncertainty limit a rerun must use, if this is an uncertainty
    /// restart (U-1).
    pub fn restart_point(&self) -> Option<(HlcTimestamp, HlcTimestamp)> {
        match self {
            Error::Conflict {
                reason: ConflictReason::Uncertainty { new_read_ts, uncertainty_limit },
            } => Some((*new_read_ts, *uncertainty_limit)),
            _ => None,
        }
    }

    pub(crate) fn invalid(detail: impl Into<String>) -> Error {
        Error::InvalidArgument { detail: detail.into() }
    }

    pub(crate) fn protocol(detail: impl Into<String>) -> Error {
        Error::Protocol { detail: detail.into() }
    }
}

#[cfg(test)]
mod tests {
    use decree_proto::txn::NoReason;

    use super::*;

    #[test]
    fn only_known_uncommitted_outcomes_are_retryable() {
        let aborted = ConflictReason::Aborted {
            txn_id: TxnId(1),
            reason: AbortReason::VotedNo { group: GroupId(1), reason: NoReason::WriteTooOld },
        };
        assert!(Error::Conflict { reason: aborted }.is_retryable());
        assert!(Error::Unavailable { what: "g1".into() }.is_retryable());
        assert!(!Error::Ambiguous { txn_id: TxnId(1), read_ts: HlcTimestamp::ZERO }.is_retryable());
        assert!(!Error::invalid("x").is_retryable());
        assert!(!Error::Aborted { txn_id: TxnId(1), reason: AbortReason::ClientRollback }
            .is_retryable());
    }

    #[test]
    fn restart_point_only_for_uncertainty() {
        let (t, u) = (HlcTimestamp::new(5, 0), HlcTimestamp::new(9, 0));
        let e = Error::Conflict {
            reason: ConflictReason::Uncertainty { new_read_ts: t, uncertainty_limit: u },
        };
        assert_eq!(e.restart_point(), Some((t, u)));
        let aborted =
            ConflictReason::Aborted { txn_id: TxnId(1), reason: AbortReason::PrepareTimeout };
        assert_eq!(Error::Conflict { reason: aborted }.restart_point(), None);
    }
}
