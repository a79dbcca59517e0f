//! The typed error reply: what a node sends instead of an answer when it cannot or will not
//! process a frame, so a peer always learns why (DESIGN.md §1 "Bad input", STYLE.md
//! principle 5).
//!
//! These are the errors a *caller* handles (retry elsewhere, retry later, give up). Fatal
//! errors that stop a replica (corruption, failed fsync) never cross the wire as a reply; the
//! peer sees `Unavailable` or a closed connection.

use std::fmt::Display;

use decree_types::{ClockError, GroupId, HlcTimestamp, Key, NodeId, Term};
use serde::{Deserialize, Serialize};

use crate::frame::FrameError;
use crate::limits::{Bound, LimitError, ERROR_DETAIL_BYTES_MAX};
use crate::txn::check_key;

/// Why a request (or any frame) was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ErrorResponse {
    /// This replica is not the group's leader; `hint` is the leader it knows of (retry there).
    #[error("not the leader of this group (term {term}); leader hint: {hint:?}")]
    NotLeader {
        /// The leader this replica knows of, if any.
        hint: Option<NodeId>,
        /// This replica's current term (a newer hint wins over an older one).
        term: Term,
    },
    /// The envelope names a group this node does not host.
    #[error("group {group} is not hosted here")]
    UnknownGroup {
        /// The group asked for.
        group: GroupId,
    },
    /// A key of the request lies outside the group's range: refresh the range map.
    #[error("key is outside this group's range; refresh the range map")]
    KeyOutOfRange {
        /// The first offending key.
        key: Key,
    },
    /// HLC-3: the sender's clock reading is more than `max_offset` ahead of ours. The message
    /// was not processed and our clock was not updated.
    #[error(
        "sender clock {remote} is {ahead_ns} ns ahead of ours, more than max_offset \
         {max_offset_ns} ns (HLC-3)"
    )]
    ClockRejected {
        /// The refused `sender_clock`.
        remote: HlcTimestamp,
        /// How far ahead of our physical clock it was.
        ahead_ns: u64,
        /// Our configured bound.
        max_offset_ns: u64,
    },
    /// The frame could not be decoded.
    #[error("malformed frame: {detail}")]
    Malformed {
        /// What was wrong, for the operator's log.
        detail: String,
    },
    /// The frame's protocol version is not one this node speaks.
    #[error("unsupported protocol version {got}; this node speaks {supported}")]
    UnsupportedVersion {
        /// The version the frame carried.
        got: u16,
        /// The version this node speaks.
        supported: u16,
    },
    /// The frame exceeds [`crate::frame::FRAME_BYTES_MAX`].
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The maximum.
        max: u64,
    },
    /// The message exceeds a bound of [`crate::limits`].
    #[error("{0}")]
    LimitExceeded(LimitError),
    /// The request is well-formed but makes no sense here (wrong node role, duplicate group in
    /// one `CommitTxn`, a range whose end precedes its start, ...).
    #[error("invalid argument: {detail}")]
    InvalidArgument {
        /// What was wrong.
        detail: String,
    },
    /// `read_ts` is below the MVCC GC threshold: those versions are gone.
    #[error("read timestamp is below the GC threshold {gc_threshold}")]
    BelowGcThreshold {
        /// The oldest readable timestamp.
        gc_threshold: HlcTimestamp,
    },
    /// A bounded queue is full; retry after the given delay.
    #[error("busy; retry after {retry_after_ms} ms")]
    Busy {
        /// Suggested delay before a retry, in milliseconds.
        retry_after_ms: u64,
    },
    /// The node cannot serve now (no quorum, shutting down, still recovering).
    #[error("unavailable: {detail}")]
    Unavailable {
        /// Why.
        detail: String,
    },
}

impl ErrorResponse {
    /// A [`ErrorResponse::Malformed`] with `detail` cut to [`ERROR_DETAIL_BYTES_MAX`].
    pub fn malformed(detail: impl Display) -> Self {
        ErrorResponse::Malformed { detail: bounded_detail(detail) }
    }

    /// An [`ErrorResponse::InvalidArgument`] with `detail` cut to [`ERROR_DETAIL_BYTES_MAX`].
    pub fn invalid_argument(detail: impl Display) -> Self {
        ErrorResponse::InvalidArgument { detail: bounded_detail(detail) }
    }

    /// An [`ErrorResponse::Unavailable`] with `detail` cut to [`ERROR_DETAIL_BYTES_MAX`].
    pub fn unavailable(detail: impl Display) -> Self {
        ErrorResponse::Unavailable { detail: bounded_detail(detail) }
    }

    /// Whether the same request may succeed if sent again (possibly elsewhere or later)
    /// without change.
    pub fn is_retryable(&self) -> bool {
        match self {
            ErrorResponse::NotLeader { .. }
            | ErrorResponse::UnknownGroup { .. }
            | ErrorResponse::KeyOutOfRange { .. }
            | ErrorResponse::ClockRejected { .. }
            | ErrorResponse::Busy { .. }
            | ErrorResponse::Unavailable { .. } => true,
            ErrorResponse::Malformed { .. }
            | ErrorResponse::UnsupportedVersion { .. }
            | ErrorResponse::TooLarge { .. }
            | ErrorResponse::LimitExceeded(_)
            | ErrorResponse::InvalidArgument { .. }
            | ErrorResponse::BelowGcThreshold { .. } => false,
        }
    }

    /// A short name for the variant (for logs, metrics and the golden file).
    pub fn kind(&self) -> &'static str {
        match self {
            ErrorResponse::NotLeader { .. } => "Error::NotLeader",
            ErrorResponse::UnknownGroup { .. } => "Error::UnknownGroup",
            ErrorResponse::KeyOutOfRange { .. } => "Error::KeyOutOfRange",
            ErrorResponse::ClockRejected { .. } => "Error::ClockRejected",
            ErrorResponse::Malformed { .. } => "Error::Malformed",
            ErrorResponse::UnsupportedVersion { .. } => "Error::UnsupportedVersion",
            ErrorResponse::TooLarge { .. } => "Error::TooLarge",
            ErrorResponse::LimitExceeded(_) => "Error::LimitExceeded",
            ErrorResponse::InvalidArgument { .. } => "Error::InvalidArgument",
            ErrorResponse::BelowGcThreshold { .. } => "Error::BelowGcThreshold",
            ErrorResponse::Busy { .. } => "Error::Busy",
            ErrorResponse::Unavailable { .. } => "Error::Unavailable",
        }
    }

    /// Checks [`crate::limits`].
    pub fn validate(&self) -> Result<(), LimitError> {
        match self {
            ErrorResponse::KeyOutOfRange { key } => check_key(key),
            ErrorResponse::Malformed { detail }
            | ErrorResponse::InvalidArgument { detail }
            | ErrorResponse::Unavailable { detail } => Bound::ErrorDetailBytes.check(detail.len()),
            ErrorResponse::NotLeader { .. }
            | ErrorResponse::UnknownGroup { .. }
            | ErrorResponse::ClockRejected { .. }
            | ErrorResponse::UnsupportedVersion { .. }
            | ErrorResponse::TooLarge { .. }
            | ErrorResponse::LimitExceeded(_)
            | ErrorResponse::BelowGcThreshold { .. }
            | ErrorResponse::Busy { .. } => Ok(()),
        }
    }
}

/// Every name [`ErrorResponse::kind`] can return.
pub const KINDS: &[&str] = &[
    "Error::NotLeader",
    "Error::UnknownGroup",
    "Error::KeyOutOfRange",
    "Error::ClockRejected",
    "Error::Malformed",
    "Error::UnsupportedVersion",
    "Error::TooLarge",
    "Error::LimitExceeded",
    "Error::InvalidArgument",
    "Error::BelowGcThreshold",
    "Error::Busy",
    "Error::Unavailable",
];

impl From<ClockError> for ErrorResponse {
    fn from(e: ClockError) -> Self {
        match e {
            ClockError::RemoteTooFarAhead { remote, ahead_ns, max_offset_ns } => {
                ErrorResponse::ClockRejected { remote, ahead_ns, max_offset_ns }
            }
        }
    }
}

impl From<LimitError> for ErrorResponse {
    fn from(e: LimitError) -> Self {
        ErrorResponse::LimitExceeded(e)
    }
}

impl From<FrameError> for ErrorResponse {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge { len, max } => {
                ErrorResponse::TooLarge { len: len as u64, max: max as u64 }
            }
            FrameError::UnsupportedVersion { got, supported } => {
                ErrorResponse::UnsupportedVersion { got, supported }
            }
            FrameError::TooShort { .. } => ErrorResponse::malformed(e),
        }
    }
}

/// `detail` rendered and cut to at most [`ERROR_DETAIL_BYTES_MAX`] bytes on a char boundary.
fn bounded_detail(detail: impl Display) -> String {
    let mut s = detail.to_string();
    if s.len() > ERROR_DETAIL_BYTES_MAX {
        let mut end = ERROR_DETAIL_BYTES_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_is_cut_on_a_char_boundary() {
        let long = "é".repeat(ERROR_DETAIL_BYTES_MAX);
        let ErrorResponse::Malformed { detail } = ErrorResponse::malformed(long) else {
            panic!("malformed() must build Malformed");
        };
        assert!(detail.len() <= ERROR_DETAIL_BYTES_MAX);
        assert!(detail.chars().all(|c| c == 'é'));
        assert_eq!(ErrorResponse::malformed("x").validate(), Ok(()));
    }

    #[test]
    fn clock_error_maps_to_clock_rejected() {
        let remote = HlcTimestamp::new(10, 0);
        let e = ClockError::RemoteTooFarAhead { remote, ahead_ns: 5, max_offset_ns: 1 };
        assert_eq!(
            ErrorResponse::from(e),
            ErrorResponse::ClockRejected { remote, ahead_ns: 5, max_offset_ns: 1 }
        );
    }
}
