//! Newtype identifiers. Each is a distinct type so that a `Term` can never be passed where a
//! `LogIndex` is expected (STYLE.md principle 7).

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_newtype!(
    /// One OS process of the cluster (a participant node, a coordinator node).
    NodeId(u64), "n"
);
id_newtype!(
    /// One Raft group: a participant group (one key range) or the coordinator group.
    GroupId(u64), "g"
);
id_newtype!(
    /// Raft's generation clock.
    Term(u64), "t"
);
id_newtype!(
    /// Position of an entry in a group's Raft log; the first entry has index 1, and index 0
    /// means "before the first entry".
    LogIndex(u64), "i"
);
id_newtype!(
    /// A client library instance, for exactly-once sessions (OPC-2, RAFT-10).
    ClientId(u64), "c"
);

impl Term {
    /// The term after this one.
    #[must_use]
    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

impl LogIndex {
    /// The index after this one.
    #[must_use]
    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The index before this one, saturating at 0.
    #[must_use]
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

/// A transaction id: 128 random bits chosen by the client library (T-1). It names exactly one
/// immutable commit request.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct TxnId(pub u128);

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}
