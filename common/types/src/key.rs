//! Keys, key ranges and the range map (key -> participant group).
//!
//! A [`Key`] is an arbitrary byte string ordered lexicographically; the empty key is the
//! smallest key. A [`KeyRange`] is half-open, `[start, end)`, with `end = None` meaning
//! unbounded above. A [`RangeMap`] assigns every possible key to exactly one participant
//! group: its ranges, sorted by start, begin at the empty key, touch end to start with no gap
//! and no overlap, and the last one is unbounded.
//!
//! That totality is checked once, in [`RangeMap::new`] (and on deserialization, which goes
//! through the same check), so lookups ([`RangeMap::group_for`]) cannot fail afterwards. A
//! bad map is reported as a [`RangeMapError`] that names the offending ranges, because the
//! range map is operator-visible cluster metadata held by the coordinator group and a vague
//! "invalid map" would be useless to whoever has to fix it.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::GroupId;

/// A key: arbitrary bytes, ordered lexicographically. The empty key is the smallest key.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Key(pub Vec<u8>);

impl Key {
    /// The smallest key (the empty byte string); every range map starts here.
    pub const MIN: Key = Key(Vec::new());

    /// A key from anything that converts into bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Key(bytes.into())
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Is this the empty key ([`Key::MIN`])?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The smallest key strictly greater than `self`: `self` followed by a zero byte. Turns a
    /// point into a range: `KeyRange::new(k.clone(), Some(k.successor()))` holds only `k`.
    #[must_use]
    pub fn successor(&self) -> Key {
        let mut bytes = Vec::with_capacity(self.0.len() + 1);
        bytes.extend_from_slice(&self.0);
        bytes.push(0);
        Key(bytes)
    }

    /// An escaped, printable form: printable ASCII as is, `\\` and `"` backslash-escaped,
    /// every other byte as `\xNN`. Unambiguous, so two distinct keys never print alike.
    pub fn escaped(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        for &b in &self.0 {
            match b {
                b'\\' => out.push_str("\\\\"),
                b'"' => out.push_str("\\\""),
                0x20..=0x7e => out.push(char::from(b)),
                _ => out.push_str(&format!("\\x{b:02x}")),
            }
        }
        out
    }
}

impl fmt::Display for Key {
    /// The escaped form in double quotes, e.g. `"acct/0001"` or `"a\x00"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.escaped())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Self {
        Key(s.as_bytes().to_vec())
    }
}

impl From<String> for Key {
    fn from(s: String) -> Self {
        Key(s.into_bytes())
    }
}

impl From<&[u8]> for Key {
    fn from(b: &[u8]) -> Self {
        Key(b.to_vec())
    }
}

impl<const N: usize> From<&[u8; N]> for Key {
    fn from(b: &[u8; N]) -> Self {
        Key(b.to_vec())
    }
}

impl From<Vec<u8>> for Key {
    fn from(b: Vec<u8>) -> Self {
        Key(b)
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Lets a `BTreeMap<Key, _>` be searched with a plain `&[u8]`. Sound because `Key`'s `Eq`,
/// `Ord` and `Hash` are exactly those of its bytes.
impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

/// A half-open key range `[start, end)`; `end = None` means unbounded above.
///
/// Ranges order by `start`, then by `end` with `None` (unbounded) after every bounded end.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyRange {
    /// Inclusive lower bound.
    pub start: Key,
    /// Exclusive upper bound; `None` is +infinity.
    pub end: Option<Key>,
}

impl KeyRange {
    /// `[start, end)`; `end = None` is unbounded. Not validated: see [`KeyRange::is_empty`].
    pub fn new(start: impl Into<Key>, end: Option<Key>) -> Self {
        KeyRange { start: start.into(), end }
    }

    /// `[start, end)` with both bounds given.
    pub fn bounded(start: impl Into<Key>, end: impl Into<Key>) -> Self {
        KeyRange { start: start.into(), end: Some(end.into()) }
    }

    /// `[start, +infinity)`.
    pub fn from_start(start: impl Into<Key>) -> Self {
        KeyRange { start: start.into(), end: None }
    }

    /// The whole key space, `["", +infinity)`.
    pub fn full() -> Self {
        KeyRange { start: Key::MIN, end: None }
    }

    /// Does the range hold `key`: `start <= key < end`?
    pub fn contains(&self, key: &Key) -> bool {
        *key >= self.start && self.end.as_ref().is_none_or(|end| key < end)
    }

    /// Does the range hold no key at all (`start >= end`)?
    pub fn is_empty(&self) -> bool {
        self.end.as_ref().is_some_and(|end| self.start >= *end)
    }

    /// The keys held by both ranges; an empty range if they are disjoint.
    #[must_use]
    pub fn intersect(&self, other: &KeyRange) -> KeyRange {
        let start = self.start.clone().max(other.start.clone());
        let end = match (&self.end, &other.end) {
            (None, None) => None,
            (Some(e), None) | (None, Some(e)) => Some(e.clone()),
            (Some(a), Some(b)) => Some(a.clone().min(b.clone())),
        };
        KeyRange { start, end }
    }
}

impl Ord for KeyRange {
    fn cmp(&self, other: &Self) -> Ordering {
        self.start.cmp(&other.start).then_with(|| cmp_end(&self.end, &other.end))
    }
}

impl PartialOrd for KeyRange {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for KeyRange {
    /// `["a", "m")` or `["m", +inf)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.end {
            Some(end) => write!(f, "[{}, {})", self.start, end),
            None => write!(f, "[{}, +inf)", self.start),
        }
    }
}

/// Compares exclusive upper bounds, `None` (unbounded) being the greatest.
fn cmp_end(a: &Option<Key>, b: &Option<Key>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => a.cmp(b),
    }
}

/// Maps every key to exactly one group.
///
/// Invariant (checked by [`RangeMap::new`], the only constructor, also used by
/// deserialization): `ranges` is non-empty, sorted by start, `ranges[0].start` is the empty
/// key, each range's end equals the next range's start, no range is empty, and the last range
/// is unbounded. Hence every key lies in exactly one range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RangeMapRepr", into = "RangeMapRepr")]
pub struct RangeMap {
    ranges: Vec<(KeyRange, GroupId)>,
}

/// Why a set of ranges is not a valid range map. Every variant names the ranges at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RangeMapError {
    /// No ranges at all: no key would have a group.
    #[error("range map has no ranges")]
    Empty,
    /// A range that holds no key (`start >= end`).
    #[error("range {range} is empty (start >= end)")]
    EmptyRange {
        /// The empty range.
        range: KeyRange,
    },
    /// Two ranges share keys (after sorting by start, `first` ends after `second` starts).
    #[error("ranges {first} and {second} overlap")]
    Overlap {
        /// The range that starts first.
        first: KeyRange,
        /// The range that starts inside `first`.
        second: KeyRange,
    },
    /// Keys between two consecutive ranges have no group.
    #[error("keys between {before} and {after} belong to no range")]
    Gap {
        /// The range that ends before the gap.
        before: KeyRange,
        /// The range that starts after the gap.
        after: KeyRange,
    },
    /// The first range does not start at the empty key, so keys below it have no group.
    #[error("first range {first} does not start at the empty key")]
    DoesNotStartAtMinKey {
        /// The first range after sorting.
        first: KeyRange,
    },
    /// The last range is bounded, so keys at or above its end have no group.
    #[error("last range {last} is bounded; the last range must be unbounded")]
    DoesNotEndUnbounded {
        /// The last range after sorting.
        last: KeyRange,
    },
    /// [`RangeMap::split_at`] needs exactly one more group than split keys.
    #[error("{splits} split keys need {} groups, got {groups}", splits + 1)]
    GroupCountMismatch {
        /// Number of split keys given.
        splits: usize,
        /// Number of groups given.
        groups: usize,
    },
}

impl RangeMap {
    /// Sorts `ranges` by start and checks that they cover every key exactly once.
    ///
    /// Checks run in this order, and the first failure is returned: [`RangeMapError::Empty`],
    /// [`RangeMapError::EmptyRange`] (the first empty range in sorted order),
    /// [`RangeMapError::DoesNotStartAtMinKey`], then each consecutive pair for
    /// [`RangeMapError::Overlap`] / [`RangeMapError::Gap`], then
    /// [`RangeMapError::DoesNotEndUnbounded`].
    pub fn new(mut ranges: Vec<(KeyRange, GroupId)>) -> Result<RangeMap, RangeMapError> {
        ranges.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let (Some((first, _)), Some((last, _))) = (ranges.first(), ranges.last()) else {
            return Err(RangeMapError::Empty);
        };
        if let Some((range, _)) = ranges.iter().find(|(r, _)| r.is_empty()) {
            return Err(RangeMapError::EmptyRange { range: range.clone() });
        }
        if !first.start.is_empty() {
            return Err(RangeMapError::DoesNotStartAtMinKey { first: first.clone() });
        }
        for pair in ranges.windows(2) {
            let (prev, next) = (&pair[0].0, &pair[1].0);
            let overlap = || RangeMapError::Overlap { first: prev.clone(), second: next.clone() };
            match &prev.end {
                // An unbounded range contains every key after its start, `next.start` included.
                None => return Err(overlap()),
                Some(end) => match end.cmp(&next.start) {
                    Ordering::Greater => return Err(overlap()),
                    Ordering::Less => {
                        return Err(RangeMapError::Gap {
                            before: prev.clone(),
                            after: next.clone(),
                        })
                    }
                    Ordering::Equal => {}
                },
            }
        }
        if last.end.is_some() {
            return Err(RangeMapError::DoesNotEndUnbounded { last: last.clone() });
        }
        Ok(RangeMap { ranges })
    }

    /// The whole key space served by one group.
    pub fn single(group: GroupId) -> RangeMap {
        RangeMap { ranges: vec![(KeyRange::full(), group)] }
    }

    /// Splits the key space at `splits` (ascending) and gives the i-th piece to `groups[i]`:
    /// `["", s0) -> g0, [s0, s1) -> g1, ..., [s_last, +inf) -> g_last`.
    ///
    /// Needs `groups.len() == splits.len() + 1`. Unsorted, repeated or empty split keys yield
    /// an empty piece and so [`RangeMapError::EmptyRange`].
    pub fn split_at(splits: Vec<Key>, groups: Vec<GroupId>) -> Result<RangeMap, RangeMapError> {
        if groups.len() != splits.len() + 1 {
            return Err(RangeMapError::GroupCountMismatch {
                splits: splits.len(),
                groups: groups.len(),
            });
        }
        let starts: Vec<Key> = std::iter::once(Key::MIN).chain(splits.iter().cloned()).collect();
        let ends = splits.into_iter().map(Some).chain(std::iter::once(None));
        let ranges = starts
            .into_iter()
            .zip(ends)
            .zip(groups)
            .map(|((start, end), g)| (KeyRange { start, end }, g));
        RangeMap::new(ranges.collect())
    }

    /// The group that serves `key`. Total: every key has exactly one group (type invariant).
    pub fn group_for(&self, key: &Key) -> GroupId {
        self.range_for(key).1
    }

    /// The range holding `key` and its group, found by binary search on range starts.
    pub fn range_for(&self, key: &Key) -> (&KeyRange, GroupId) {
        // Ranges with `start <= key` form a prefix of the sorted ranges; the prefix is never
        // empty because `ranges[0].start` is the empty key (type invariant), so the last range
        // of the prefix exists and, the ranges being contiguous, contains `key`.
        let after = self.ranges.partition_point(|(r, _)| r.start <= *key);
        debug_assert!(after >= 1, "range map invariant: first range starts at the empty key");
        let (range, group) = &self.ranges[after.saturating_sub(1)];
        debug_assert!(range.contains(key), "range map invariant: ranges are contiguous");
        (range, *group)
    }

    /// The parts of `range` held by each group, in key order: each map range that overlaps
    /// `range`, cut down to the overlap. Empty if `range` is empty. A scan over `range` visits
    /// exactly these groups.
    pub fn split_range(&self, range: &KeyRange) -> Vec<(KeyRange, GroupId)> {
        if range.is_empty() {
            return Vec::new();
        }
        let first = self.ranges.partition_point(|(r, _)| r.start <= range.start).saturating_sub(1);
        self.ranges[first..]
            .iter()
            .map(|(r, g)| (r.intersect(range), *g))
            .take_while(|(part, _)| !part.is_empty())
            .collect()
    }

    /// Every group that serves at least one range, ascending.
    pub fn groups(&self) -> BTreeSet<GroupId> {
        self.ranges.iter().map(|(_, g)| *g).collect()
    }

    /// The ranges and their groups, sorted by start.
    pub fn iter(&self) -> impl Iterator<Item = (&KeyRange, GroupId)> + '_ {
        self.ranges.iter().map(|(r, g)| (r, *g))
    }

    /// The ranges and their groups as a slice, sorted by start.
    pub fn ranges(&self) -> &[(KeyRange, GroupId)] {
        &self.ranges
    }

    /// Number of ranges (at least 1).
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Always `false`: a valid range map has at least one range. Present for API symmetry
    /// with `len` (clippy `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

impl<'a> IntoIterator for &'a RangeMap {
    type Item = (&'a KeyRange, GroupId);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (KeyRange, GroupId)>,
        fn(&'a (KeyRange, GroupId)) -> (&'a KeyRange, GroupId),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.ranges.iter().map(|(r, g)| (r, *g))
    }
}

impl TryFrom<Vec<(KeyRange, GroupId)>> for RangeMap {
    type Error = RangeMapError;

    fn try_from(ranges: Vec<(KeyRange, GroupId)>) -> Result<Self, Self::Error> {
        RangeMap::new(ranges)
    }
}

impl fmt::Display for RangeMap {
    /// One `range -> group` per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (range, group) in self {
            writeln!(f, "{range} -> {group}")?;
        }
        Ok(())
    }
}

/// The serialized form of a [`RangeMap`]: the same shape the map had with plain derives, but
/// deserializing it goes through [`RangeMap::new`] so an invalid map can never be loaded.
#[derive(Serialize, Deserialize)]
struct RangeMapRepr {
    ranges: Vec<(KeyRange, GroupId)>,
}

impl TryFrom<RangeMapRepr> for RangeMap {
    type Error = RangeMapError;

    fn try_from(repr: RangeMapRepr) -> Result<Self, Self::Error> {
        RangeMap::new(repr.ranges)
    }
}

impl From<RangeMap> for RangeMapRepr {
    fn from(map: RangeMap) -> Self {
        RangeMapRepr { ranges: map.ranges }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn r(start: &str, end: &str) -> KeyRange {
        KeyRange::bounded(start, end)
    }

    fn open(start: &str) -> KeyRange {
        KeyRange::from_start(start)
    }

    #[test]
    fn key_constructors_agree_and_display_escapes() {
        assert_eq!(Key::from("ab"), Key::from(&b"ab"[..]));
        assert_eq!(Key::from("ab"), Key::from(b"ab"));
        assert_eq!(Key::from("ab"), Key::new(vec![b'a', b'b']));
        assert_eq!(Key::from(String::from("ab")), Key(b"ab".to_vec()));
        assert_eq!(Key::from("acct/0001").to_string(), "\"acct/0001\"");
        assert_eq!(Key::new(vec![b'a', 0, 0xff]).to_string(), "\"a\\x00\\xff\"");
        assert_eq!(Key::from("q\"\\").escaped(), "q\\\"\\\\");
        assert_eq!(format!("{:?}", Key::MIN), "Key(\"\")");
        assert!(Key::MIN.is_empty());
        assert_eq!(Key::from("abc").len(), 3);
    }

    #[test]
    fn key_successor_is_the_next_key() {
        let k = Key::from("a");
        assert!(k.successor() > k);
        assert_eq!(k.successor().as_bytes(), b"a\0");
        let point = KeyRange::new(k.clone(), Some(k.successor()));
        assert!(point.contains(&k));
        assert!(!point.contains(&k.successor()));
        assert!(!point.contains(&Key::from("a\u{1}")));
    }

    #[test]
    fn key_range_contains_is_half_open() {
        let range = r("b", "d");
        assert!(!range.contains(&Key::from("a")));
        assert!(range.contains(&Key::from("b")));
        assert!(range.contains(&Key::from("czzz")));
        assert!(!range.contains(&Key::from("d")));
        assert!(open("b").contains(&Key::from("zzzz")));
        assert!(!open("b").contains(&Key::from("a")));
        assert!(KeyRange::full().contains(&Key::MIN));
    }

    #[test]
    fn key_range_is_empty_iff_start_not_below_end() {
        assert!(r("b", "b").is_empty());
        assert!(r("c", "b").is_empty());
        assert!(!r("b", "c").is_empty());
        assert!(!open("zzz").is_empty());
        assert!(!KeyRange::full().is_empty());
    }

    #[test]
    fn key_range_orders_unbounded_end_last_and_displays() {
        assert!(r("a", "b") < open("a"));
        assert!(open("a") < r("b", "c"));
        assert_eq!(r("a", "m").to_string(), "[\"a\", \"m\")");
        assert_eq!(open("m").to_string(), "[\"m\", +inf)");
    }

    #[test]
    fn key_range_intersect() {
        assert_eq!(r("a", "m").intersect(&r("f", "z")), r("f", "m"));
        assert_eq!(open("f").intersect(&r("a", "m")), r("f", "m"));
        assert_eq!(open("f").intersect(&open("a")), open("f"));
        assert!(r("a", "c").intersect(&r("d", "e")).is_empty());
    }

    #[test]
    fn range_map_new_sorts_and_looks_up() {
        let map = RangeMap::new(vec![
            (open("m"), GroupId(3)),
            (r("", "f"), GroupId(1)),
            (r("f", "m"), GroupId(2)),
        ])
        .expect("valid map");
        let starts: Vec<&Key> = map.iter().map(|(range, _)| &range.start).collect();
        assert_eq!(starts, [&Key::MIN, &Key::from("f"), &Key::from("m")]);
        assert_eq!(map.group_for(&Key::MIN), GroupId(1));
        assert_eq!(map.group_for(&Key::from("e\u{7f}")), GroupId(1));
        assert_eq!(map.group_for(&Key::from("f")), GroupId(2));
        assert_eq!(map.group_for(&Key::from("m")), GroupId(3));
        assert_eq!(map.group_for(&Key::new(vec![0xff; 8])), GroupId(3));
        assert_eq!(map.range_for(&Key::from("g")), (&r("f", "m"), GroupId(2)));
        assert_eq!(map.len(), 3);
        assert!(!map.is_empty());
        assert_eq!(
            map.to_string(),
            "[\"\", \"f\") -> g1\n[\"f\", \"m\") -> g2\n[\"m\", +inf) -> g3\n"
        );
    }

    #[test]
    fn range_map_single_serves_everything() {
        let map = RangeMap::single(GroupId(9));
        assert_eq!(map.groups(), BTreeSet::from([GroupId(9)]));
        assert_eq!(map.group_for(&Key::from("anything")), GroupId(9));
        assert_eq!(map.ranges(), &[(KeyRange::full(), GroupId(9))]);
    }

    #[test]
    fn range_map_error_empty() {
        assert_eq!(RangeMap::new(vec![]), Err(RangeMapError::Empty));
    }

    #[test]
    fn range_map_error_empty_range_names_it() {
        let err = RangeMap::new(vec![
            (r("", "c"), GroupId(1)),
            (r("c", "c"), GroupId(2)),
            (open("c"), GroupId(3)),
        ]);
        assert_eq!(err, Err(RangeMapError::EmptyRange { range: r("c", "c") }));
        let inverted = RangeMap::new(vec![(r("d", "b"), GroupId(1))]);
        assert_eq!(inverted, Err(RangeMapError::EmptyRange { range: r("d", "b") }));
    }

    #[test]
    fn range_map_error_overlap_names_both_ranges() {
        let err = RangeMap::new(vec![
            (r("", "f"), GroupId(1)),
            (r("e", "m"), GroupId(2)),
            (open("m"), GroupId(3)),
        ]);
        assert_eq!(err, Err(RangeMapError::Overlap { first: r("", "f"), second: r("e", "m") }));
    }

    #[test]
    fn range_map_error_overlap_after_an_unbounded_range() {
        let err = RangeMap::new(vec![(KeyRange::full(), GroupId(1)), (open("m"), GroupId(2))]);
        assert_eq!(err, Err(RangeMapError::Overlap { first: KeyRange::full(), second: open("m") }));
    }

    #[test]
    fn range_map_error_duplicate_range_is_an_overlap() {
        let err = RangeMap::new(vec![
            (r("", "f"), GroupId(2)),
            (r("", "f"), GroupId(1)),
            (open("f"), GroupId(3)),
        ]);
        assert_eq!(err, Err(RangeMapError::Overlap { first: r("", "f"), second: r("", "f") }));
    }

    #[test]
    fn range_map_error_gap_names_both_sides() {
        let err = RangeMap::new(vec![(r("", "f"), GroupId(1)), (open("g"), GroupId(2))]);
        assert_eq!(err, Err(RangeMapError::Gap { before: r("", "f"), after: open("g") }));
    }

    #[test]
    fn range_map_error_does_not_start_at_min_key() {
        let err = RangeMap::new(vec![(r("a", "f"), GroupId(1)), (open("f"), GroupId(2))]);
        assert_eq!(err, Err(RangeMapError::DoesNotStartAtMinKey { first: r("a", "f") }));
    }

    #[test]
    fn range_map_error_does_not_end_unbounded() {
        let err = RangeMap::new(vec![(r("", "f"), GroupId(1)), (r("f", "z"), GroupId(2))]);
        assert_eq!(err, Err(RangeMapError::DoesNotEndUnbounded { last: r("f", "z") }));
    }

    #[test]
    fn range_map_error_messages_name_the_ranges() {
        let err = RangeMapError::Gap { before: r("", "f"), after: open("g") };
        assert_eq!(
            err.to_string(),
            "keys between [\"\", \"f\") and [\"g\", +inf) belong to no range"
        );
    }

    #[test]
    fn split_at_builds_contiguous_ranges() {
        let map = RangeMap::split_at(
            vec![Key::from("f"), Key::from("m")],
            vec![GroupId(1), GroupId(2), GroupId(3)],
        )
        .expect("valid splits");
        let expected =
            [(r("", "f"), GroupId(1)), (r("f", "m"), GroupId(2)), (open("m"), GroupId(3))];
        assert_eq!(map.ranges(), &expected);
    }

    #[test]
    fn split_at_rejects_wrong_group_count_and_bad_splits() {
        let count = RangeMap::split_at(vec![Key::from("f")], vec![GroupId(1)]);
        assert_eq!(count, Err(RangeMapError::GroupCountMismatch { splits: 1, groups: 1 }));
        let unsorted = RangeMap::split_at(
            vec![Key::from("m"), Key::from("f")],
            vec![GroupId(1), GroupId(2), GroupId(3)],
        );
        assert_eq!(unsorted, Err(RangeMapError::EmptyRange { range: r("m", "f") }));
        let empty_split = RangeMap::split_at(vec![Key::MIN], vec![GroupId(1), GroupId(2)]);
        assert_eq!(empty_split, Err(RangeMapError::EmptyRange { range: r("", "") }));
    }

    #[test]
    fn split_range_cuts_a_scan_at_group_boundaries() {
        let map = RangeMap::split_at(
            vec![Key::from("f"), Key::from("m")],
            vec![GroupId(1), GroupId(2), GroupId(3)],
        )
        .expect("valid splits");
        assert_eq!(
            map.split_range(&r("c", "p")),
            vec![(r("c", "f"), GroupId(1)), (r("f", "m"), GroupId(2)), (r("m", "p"), GroupId(3))]
        );
        assert_eq!(map.split_range(&r("g", "h")), vec![(r("g", "h"), GroupId(2))]);
        assert_eq!(map.split_range(&r("g", "m")), vec![(r("g", "m"), GroupId(2))]);
        assert_eq!(
            map.split_range(&open("g")),
            vec![(r("g", "m"), GroupId(2)), (open("m"), GroupId(3))]
        );
        assert_eq!(map.split_range(&r("h", "g")), vec![]);
    }

    #[test]
    fn deserialization_validates_the_map() {
        let map = RangeMap::split_at(vec![Key::from("m")], vec![GroupId(1), GroupId(2)])
            .expect("valid splits");
        let bytes = postcard::to_allocvec(&map).expect("encode");
        assert_eq!(postcard::from_bytes::<RangeMap>(&bytes), Ok(map));

        // Same wire shape (a struct with one field encodes as that field), but with a gap.
        let gap: Vec<(KeyRange, GroupId)> = vec![(r("", "f"), GroupId(1)), (open("g"), GroupId(2))];
        let bytes = postcard::to_allocvec(&gap).expect("encode");
        assert!(postcard::from_bytes::<RangeMap>(&bytes).is_err());
    }

    /// Distinct non-empty split keys, sorted (BTreeSet), over a small alphabet so that keys
    /// drawn separately often land on or next to a boundary.
    fn splits() -> impl Strategy<Value = Vec<Key>> {
        proptest::collection::btree_set(proptest::collection::vec(0u8..4, 1..4), 0..8)
            .prop_map(|set: BTreeSet<Vec<u8>>| set.into_iter().map(Key).collect())
    }

    fn keys() -> impl Strategy<Value = Vec<Key>> {
        proptest::collection::vec(proptest::collection::vec(0u8..5, 0..5).prop_map(Key), 1..32)
    }

    proptest! {
        #[test]
        fn split_map_maps_every_key_to_the_one_range_containing_it(
            splits in splits(),
            keys in keys(),
        ) {
            let groups: Vec<GroupId> = (0..=splits.len() as u64).map(GroupId).collect();
            let map = RangeMap::split_at(splits.clone(), groups).expect("sorted distinct splits");
            prop_assert_eq!(map.len(), splits.len() + 1);
            for key in keys.iter().chain(&splits).chain([&Key::MIN]) {
                let (range, group) = map.range_for(key);
                prop_assert!(range.contains(key), "{} not in {}", key, range);
                let holders: Vec<GroupId> =
                    map.iter().filter(|(r, _)| r.contains(key)).map(|(_, g)| g).collect();
                prop_assert_eq!(holders, vec![group]);
                prop_assert_eq!(map.group_for(key), group);
                // Group i serves keys in [splits[i-1], splits[i]).
                let expected = splits.iter().filter(|s| *s <= key).count() as u64;
                prop_assert_eq!(group, GroupId(expected));
            }
        }

        #[test]
        fn split_range_pieces_cover_the_range_in_order(
            splits in splits(),
            a in proptest::collection::vec(0u8..5, 0..5),
            b in proptest::collection::vec(0u8..5, 0..5),
            keys in keys(),
        ) {
            let groups: Vec<GroupId> = (0..=splits.len() as u64).map(GroupId).collect();
            let map = RangeMap::split_at(splits, groups).expect("sorted distinct splits");
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let range = KeyRange::bounded(lo, hi);
            let pieces = map.split_range(&range);
            for pair in pieces.windows(2) {
                prop_assert_eq!(pair[0].0.end.as_ref(), Some(&pair[1].0.start));
            }
            for key in &keys {
                let holders: Vec<GroupId> =
                    pieces.iter().filter(|(p, _)| p.contains(key)).map(|(_, g)| *g).collect();
                if range.contains(key) {
                    prop_assert_eq!(holders, vec![map.group_for(key)]);
                } else {
                    prop_assert!(holders.is_empty());
                }
            }
        }
    }
}
