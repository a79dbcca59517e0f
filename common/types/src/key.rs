//! Keys, key ranges and the range map (key -> participant group).
//!
//! The `decree-types` owner completes this module: `Key`, `KeyRange`, `RangeMap`, and the
//! typed `RangeMapError` for gaps and overlaps.

use serde::{Deserialize, Serialize};

/// A key: arbitrary bytes, ordered lexicographically.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Key(pub Vec<u8>);

/// A half-open key range `[start, end)`; `end = None` means unbounded above.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyRange {
    /// Inclusive lower bound.
    pub start: Key,
    /// Exclusive upper bound; `None` is +infinity.
    pub end: Option<Key>,
}

/// Maps every key to exactly one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeMap {
    ranges: Vec<(KeyRange, crate::GroupId)>,
}

/// Why a set of ranges is not a valid range map.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RangeMapError {
    /// Placeholder until the module is completed.
    #[error("empty range map")]
    Empty,
}
