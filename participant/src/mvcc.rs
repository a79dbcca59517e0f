//! The MVCC store of one participant group: committed versions, intents of prepared
//! transactions, read locks (serializable mode) and the GC threshold (protocol.md §2, §3.3).
//!
//! Like TiKV's `txn/actions`, every per-key step is one small function here, with no
//! knowledge of Raft, leaders or clocks: [`MvccStore::check_prepare`] (the replicated part of
//! P-2/P-5), [`MvccStore::write_intents`], [`MvccStore::commit_intents`] (P-8),
//! [`MvccStore::remove_intents`] (P-9), [`MvccStore::write_versions`] (1PC, OPC-1),
//! [`MvccStore::read`] / [`MvccStore::scan`] and [`MvccStore::gc`] (REC-7(c)). The
//! group state machine (`crate::state`) composes them when it applies an entry.
//!
//! Layout: versions live in one ordered map per group keyed by key, each key holding its
//! versions in increasing commit-timestamp order. INV-M1 says versions of a key are written in
//! increasing timestamp order, so a new version is always pushed at the end of its key's list
//! (asserted), a point read is a short reverse walk, and GC drains from the front.
//!
//! The maps are persistent B-trees (`imbl::OrdMap`): a clone shares every node with the
//! original and a later write copies only the nodes on its path. So cloning the store — the
//! snapshot view the host takes on the node thread — is O(1), and the view stays as it was
//! while apply goes on (it is encoded elsewhere). Iteration is in key order, as with
//! `BTreeMap`, and the encoding is the same.
//!
//! Invariants (asserted where they are established):
//! - **INV-M1** at most one intent per key; a key's versions are strictly increasing in
//!   timestamp; a committed version's timestamp is above every older version of its key.
//! - **INV-M3** reads return versions only; an intent is never returned as a value.
//! - **REC-7(c)** GC never removes the newest version at or below the GC threshold (unless it
//!   is a delete, which reads at or above the threshold see as "absent" either way).

use std::ops::Bound;

use decree_proto::txn::{NoReason, Write};
use decree_types::{GroupId, HlcTimestamp, Key, KeyRange, TxnId};
use imbl::OrdMap;
use serde::{Deserialize, Serialize};

/// One committed version of a key (TS-5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The commit timestamp `C` of the transaction that wrote it.
    pub ts: HlcTimestamp,
    /// The value, or `None` for a delete (a tombstone version).
    pub value: Option<Vec<u8>>,
}

/// The provisional write of a prepared transaction (P-5): at most one per key (INV-M1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// The owner.
    pub txn_id: TxnId,
    /// The coordinator group that decides the owner (asked by readers, RI-3).
    pub coord_group: GroupId,
    /// The owner's prepare timestamp `P`.
    pub prepare_ts: HlcTimestamp,
    /// The value it will write if committed (`None`: a delete).
    pub value: Option<Vec<u8>>,
}

/// What a point read found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOutcome<'a> {
    /// The newest committed version at or below the read timestamp; `None`s if there is none.
    Value {
        /// The value (`None`: absent or deleted).
        value: Option<&'a [u8]>,
        /// Its timestamp (`None`: no version at all at or below the read timestamp).
        version_ts: Option<HlcTimestamp>,
    },
    /// A committed version lies in `(read_ts, uncertainty_limit]` (R-5, §5.3).
    Uncertain {
        /// The uncertain version's timestamp: the reader restarts there.
        ts: HlcTimestamp,
    },
    /// A prepared intent with `P ≤` the limit blocks the read until its owner is decided
    /// (R-5, RI-1..RI-3).
    Blocked(Blocker),
}

/// The prepared transaction a read waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Blocker {
    /// The intent's owner.
    pub txn_id: TxnId,
    /// The owner's coordinator group.
    pub coord_group: GroupId,
    /// The owner's prepare timestamp.
    pub prepare_ts: HlcTimestamp,
}

/// What a scan found (R-5 per key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanOutcome {
    /// Rows in key order (deleted keys omitted), and where to resume if `max_rows` was hit.
    Rows {
        /// `(key, value, version_ts)` rows.
        rows: Vec<(Key, Vec<u8>, HlcTimestamp)>,
        /// The first key not examined, if the scan stopped at `max_rows`.
        resume_from: Option<Key>,
    },
    /// Some examined key has a version in `(read_ts, uncertainty_limit]`; the largest such
    /// timestamp.
    Uncertain {
        /// The timestamp to restart at.
        ts: HlcTimestamp,
    },
    /// Some examined key has a blocking intent (the first in key order).
    Blocked(Blocker),
}

/// The committed versions, intents and read locks of one group. See the module docs. A clone
/// is O(1) and shares structure with the original.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MvccStore {
    /// Committed versions, per key in increasing timestamp order (INV-M1).
    versions: OrdMap<Key, Vec<Version>>,
    /// Intents of prepared transactions, at most one per key (INV-M1).
    intents: OrdMap<Key, Intent>,
    /// Read locks of prepared serializable transactions (§6.1), held from prepare to decision.
    read_locks: OrdMap<TxnId, Vec<KeyRange>>,
    /// Reads below this timestamp are refused: older versions may be gone (REC-7(c)).
    gc_threshold: HlcTimestamp,
    /// The largest version timestamp in the store (derived; lets span checks skip the scan
    /// when nothing newer than `read_ts` exists anywhere).
    newest_version_ts: HlcTimestamp,
}

/// The store as it is encoded (snapshots and the digest), borrowed. A map encodes exactly as
/// the list of its entries in key order, so [`MvccImage`] decodes these bytes.
#[derive(Debug, Serialize)]
pub(crate) struct MvccView<'a> {
    versions: &'a OrdMap<Key, Vec<Version>>,
    intents: &'a OrdMap<Key, Intent>,
    read_locks: &'a OrdMap<TxnId, Vec<KeyRange>>,
    gc_threshold: HlcTimestamp,
}

/// The store decoded from a snapshot: the fields of [`MvccView`], maps as entry lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MvccImage {
    pub(crate) versions: Vec<(Key, Vec<Version>)>,
    pub(crate) intents: Vec<(Key, Intent)>,
    pub(crate) read_locks: Vec<(TxnId, Vec<KeyRange>)>,
    pub(crate) gc_threshold: HlcTimestamp,
}

impl MvccStore {
    /// An empty store.
    pub fn new() -> Self {
        MvccStore::default()
    }

    /// Reads below this timestamp are refused (`BelowGcThreshold`).
    pub fn gc_threshold(&self) -> HlcTimestamp {
        self.gc_threshold
    }

    /// The versions of `key`, oldest first.
    pub fn versions(&self, key: &Key) -> &[Version] {
        self.versions.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every key with at least one version, in key order, with its versions.
    pub fn iter_versions(&self) -> impl Iterator<Item = (&Key, &[Version])> + '_ {
        self.versions.iter().map(|(k, v)| (k, v.as_slice()))
    }

    /// The intent on `key`, if any.
    pub fn intent(&self, key: &Key) -> Option<&Intent> {
        self.intents.get(key)
    }

    /// Number of intents.
    pub fn intent_count(&self) -> usize {
        self.intents.len()
    }

    /// Number of keys with versions.
    pub fn key_count(&self) -> usize {
        self.versions.len()
    }

    /// The read locks `txn_id` holds.
    pub fn read_locks_of(&self, txn_id: TxnId) -> &[KeyRange] {
        self.read_locks.get(&txn_id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Number of transactions holding read locks.
    pub fn read_lock_holders(&self) -> usize {
        self.read_locks.len()
    }

    // -----------------------------------------------------------------------------------------
    // Reads
    // -----------------------------------------------------------------------------------------

    /// A snapshot read of `key` at `read_ts` with uncertainty limit `limit` (`U`, or `read_ts`
    /// itself for a stale read without one). Lock-free: it never looks at read locks, and an
    /// intent blocks it only when the intent's `P ≤ limit` (conflict matrix, protocol.md §3.3),
    /// because a transaction prepared at `P` commits at `C ≥ P`.
    pub fn read(&self, key: &Key, read_ts: HlcTimestamp, limit: HlcTimestamp) -> ReadOutcome<'_> {
        if let Some(intent) = self.intents.get(key) {
            if intent.prepare_ts <= limit {
                return ReadOutcome::Blocked(blocker(intent));
            }
        }
        let versions = self.versions(key);
        // Newest first: the first version at or below read_ts wins; one in (read_ts, limit]
        // seen before it makes the read uncertain (R-5, §5.3).
        for version in versions.iter().rev() {
            if version.ts <= read_ts {
                return ReadOutcome::Value {
                    value: version.value.as_deref(),
                    version_ts: Some(version.ts),
                };
            }
            if version.ts <= limit {
                // The newest version in (read_ts, limit]: the restarted read sees them all.
                return ReadOutcome::Uncertain { ts: version.ts };
            }
        }
        ReadOutcome::Value { value: None, version_ts: None }
    }

    /// A snapshot scan of `span` at `read_ts` with limit `limit` (see [`MvccStore::read`]),
    /// returning at most `max_rows` rows. Only the keys it examines can block it or make it
    /// uncertain: those before the resume key.
    pub fn scan(
        &self,
        span: &KeyRange,
        read_ts: HlcTimestamp,
        limit: HlcTimestamp,
        max_rows: usize,
    ) -> ScanOutcome {
        let mut rows = Vec::new();
        let mut resume_from = None;
        let mut uncertain: Option<HlcTimestamp> = None;
        for (key, versions) in self.versions.range::<_, [u8]>(bounds(span)) {
            let newest_visible = versions.iter().rev().find(|v| v.ts <= read_ts);
            // Newest first, so this is the largest uncertain timestamp of the key.
            if let Some(v) = versions.iter().rev().find(|v| v.ts > read_ts && v.ts <= limit) {
                uncertain = Some(uncertain.map_or(v.ts, |u| u.max(v.ts)));
                continue;
            }
            if let Some(Version { ts, value: Some(value) }) = newest_visible {
                if rows.len() == max_rows {
                    resume_from = Some(key.clone());
                    break;
                }
                rows.push((key.clone(), value.clone(), *ts));
            }
        }
        // Intents on the examined keys (those before the resume key) block the scan.
        let examined = match &resume_from {
            Some(resume) => KeyRange { start: span.start.clone(), end: Some(resume.clone()) },
            None => span.clone(),
        };
        if let Some((_, intent)) =
            self.intents.range::<_, [u8]>(bounds(&examined)).find(|(_, i)| i.prepare_ts <= limit)
        {
            return ScanOutcome::Blocked(blocker(intent));
        }
        match uncertain {
            Some(ts) => ScanOutcome::Uncertain { ts },
            None => ScanOutcome::Rows { rows, resume_from },
        }
    }

    // -----------------------------------------------------------------------------------------
    // Prepare checks (the replicated half of P-2, re-run at apply by P-5)
    // -----------------------------------------------------------------------------------------

    /// The conflict matrix (protocol.md §3.3) for a prepare of `txn_id` at `read_ts` that
    /// writes `writes` and reads `read_spans`, against replicated state. `Err` names the first
    /// conflict, checked in a fixed order (writes in order, then spans in order) so every
    /// replica gives the same reason.
    pub fn check_prepare(
        &self,
        txn_id: TxnId,
        read_ts: HlcTimestamp,
        writes: &[Write],
        read_spans: &[KeyRange],
    ) -> Result<(), NoReason> {
        for write in writes {
            let key = &write.key;
            // Prepared intent (other txn) x prepare that writes k: No.
            if self.intents.get(key).is_some_and(|i| i.txn_id != txn_id) {
                return Err(NoReason::IntentConflict);
            }
            // Read lock (other txn) x prepare that writes k: No.
            if self.read_locked_by_other(key, txn_id) {
                return Err(NoReason::ReadLockConflict);
            }
            // Committed version v.ts > read_ts x prepare that writes k: No (first committer
            // wins).
            if self.versions(key).last().is_some_and(|v| v.ts > read_ts) {
                return Err(NoReason::WriteTooOld);
            }
        }
        for span in read_spans {
            // Prepared intent (other txn) x prepare that reads k: No.
            if self.intents.range::<_, [u8]>(bounds(span)).any(|(_, i)| i.txn_id != txn_id) {
                return Err(NoReason::IntentConflict);
            }
            // Committed version v.ts > read_ts x prepare that reads k: No (stale read).
            if self.newest_version_ts > read_ts
                && self
                    .versions
                    .range::<_, [u8]>(bounds(span))
                    .any(|(_, vs)| vs.last().is_some_and(|v| v.ts > read_ts))
            {
                return Err(NoReason::StaleRead);
            }
        }
        Ok(())
    }

    /// Does a transaction other than `txn_id` hold a read lock covering `key`? A linear walk
    /// over the read-locking transactions: their number is bounded by
    /// `PREPARED_TXNS_PER_GROUP_MAX` and in practice small.
    pub fn read_locked_by_other(&self, key: &Key, txn_id: TxnId) -> bool {
        self.read_locks
            .iter()
            .any(|(owner, spans)| *owner != txn_id && spans.iter().any(|s| s.contains(key)))
    }

    // -----------------------------------------------------------------------------------------
    // Actions (each one step of applying an entry)
    // -----------------------------------------------------------------------------------------

    /// P-5 on success: an intent per write and read locks for `read_spans`. The caller has
    /// run [`MvccStore::check_prepare`]; a second intent on a key would break INV-M1.
    pub fn write_intents(
        &mut self,
        txn_id: TxnId,
        coord_group: GroupId,
        prepare_ts: HlcTimestamp,
        writes: &[Write],
        read_spans: &[KeyRange],
    ) {
        for write in writes {
            let intent = Intent { txn_id, coord_group, prepare_ts, value: write.value.clone() };
            let previous = self.intents.insert(write.key.clone(), intent);
            assert!(
                previous.is_none_or(|p| p.txn_id == txn_id),
                "INV-M1: a second intent on key {} (prepare of {txn_id} applied past a conflict)",
                write.key
            );
            assert!(
                self.versions(&write.key).last().is_none_or(|v| v.ts < prepare_ts),
                "INV-M1: intent of {txn_id} at {prepare_ts} is not above the newest version of {}",
                write.key
            );
        }
        if !read_spans.is_empty() {
            self.read_locks.insert(txn_id, read_spans.to_vec());
        }
    }

    /// P-8: the intents of `txn_id` on `keys` become versions at `commit_ts`; its read locks
    /// are dropped.
    pub fn commit_intents(&mut self, txn_id: TxnId, keys: &[Key], commit_ts: HlcTimestamp) {
        for key in keys {
            let intent = self.intents.remove(key);
            let intent = match intent {
                Some(intent) if intent.txn_id == txn_id => intent,
                other => panic!(
                    "INV-M1: committing {txn_id} found no intent of it on {key} (found {other:?})"
                ),
            };
            assert!(
                intent.prepare_ts <= commit_ts,
                "INV-A2: {txn_id} commits at {commit_ts}, below its prepare timestamp {}",
                intent.prepare_ts
            );
            self.push_version(key.clone(), Version { ts: commit_ts, value: intent.value });
        }
        self.read_locks.remove(&txn_id);
    }

    /// P-9: the intents of `txn_id` on `keys` and its read locks disappear.
    pub fn remove_intents(&mut self, txn_id: TxnId, keys: &[Key]) {
        for key in keys {
            if self.intents.get(key).is_some_and(|i| i.txn_id == txn_id) {
                self.intents.remove(key);
            }
        }
        self.read_locks.remove(&txn_id);
    }

    /// OPC-1: a 1PC transaction's writes become versions at `commit_ts` at once (no intents).
    pub fn write_versions(&mut self, writes: &[Write], commit_ts: HlcTimestamp) {
        for write in writes {
            self.push_version(
                write.key.clone(),
                Version { ts: commit_ts, value: write.value.clone() },
            );
        }
    }

    /// Raises the GC threshold to `threshold` (never lowers it) and drops every version a read
    /// at or above the threshold can no longer see: all but the newest version at or below
    /// it, and that one too if it is a delete (REC-7(c)). Returns the number of versions
    /// dropped.
    pub fn gc(&mut self, threshold: HlcTimestamp) -> usize {
        if threshold <= self.gc_threshold {
            return 0;
        }
        self.gc_threshold = threshold;
        // Found first, then changed: a write copies the nodes on its path when a snapshot view
        // shares them, so only keys that lose versions are written.
        let mut trims = Vec::new();
        for (key, versions) in self.versions.iter() {
            // Index of the newest version at or below the threshold.
            let Some(newest_old) = versions.iter().rposition(|v| v.ts <= threshold) else {
                continue;
            };
            let keep_from =
                if versions[newest_old].value.is_none() { newest_old + 1 } else { newest_old };
            if keep_from > 0 {
                trims.push((key.clone(), keep_from, keep_from == versions.len()));
            }
        }
        let mut dropped = 0;
        for (key, keep_from, emptied) in trims {
            dropped += keep_from;
            if emptied {
                self.versions.remove(&key);
            } else if let Some(versions) = self.versions.get_mut(&key) {
                versions.drain(..keep_from);
            }
        }
        dropped
    }

    /// Appends a version to its key, keeping INV-M1 (strictly increasing timestamps). One
    /// walk down the tree for a key that has versions (the map's `entry` takes two).
    fn push_version(&mut self, key: Key, version: Version) {
        self.newest_version_ts = self.newest_version_ts.max(version.ts);
        let Some(versions) = self.versions.get_mut(&key) else {
            // Most keys hold one version: exactly one slot for it (a plain push would
            // allocate four); further versions grow the list by doubling.
            self.versions.insert(key, vec![version]);
            return;
        };
        if let Some(last) = versions.last() {
            assert!(
                last.ts < version.ts,
                "INV-M1: version at {} written after a version at {} of the same key",
                version.ts,
                last.ts
            );
        }
        versions.push(version);
    }

    // -----------------------------------------------------------------------------------------
    // Canonical form
    // -----------------------------------------------------------------------------------------

    pub(crate) fn view(&self) -> MvccView<'_> {
        MvccView {
            versions: &self.versions,
            intents: &self.intents,
            read_locks: &self.read_locks,
            gc_threshold: self.gc_threshold,
        }
    }

    /// Rebuilds a store from its image, checking what the live store asserts: keys strictly
    /// increasing, versions strictly increasing per key, no empty version lists.
    pub(crate) fn from_image(image: MvccImage) -> Result<MvccStore, String> {
        if !strictly_increasing(image.versions.iter().map(|(k, _)| k)) {
            return Err("version keys are not strictly increasing".into());
        }
        if !strictly_increasing(image.intents.iter().map(|(k, _)| k)) {
            return Err("intent keys are not strictly increasing".into());
        }
        if !strictly_increasing(image.read_locks.iter().map(|(t, _)| t)) {
            return Err("read-lock owners are not strictly increasing".into());
        }
        let mut newest_version_ts = HlcTimestamp::ZERO;
        for (key, versions) in &image.versions {
            if versions.is_empty() || !strictly_increasing(versions.iter().map(|v| &v.ts)) {
                return Err(format!("versions of {key} are empty or out of order (INV-M1)"));
            }
            newest_version_ts = newest_version_ts.max(versions[versions.len() - 1].ts);
        }
        Ok(MvccStore {
            versions: image.versions.into_iter().collect(),
            intents: image.intents.into_iter().collect(),
            read_locks: image.read_locks.into_iter().collect(),
            gc_threshold: image.gc_threshold,
            newest_version_ts,
        })
    }
}

/// The `range` bounds of a key range in a map keyed by [`Key`].
pub(crate) fn bounds(span: &KeyRange) -> (Bound<&[u8]>, Bound<&[u8]>) {
    let end = match &span.end {
        Some(end) => Bound::Excluded(end.as_bytes()),
        None => Bound::Unbounded,
    };
    // An inverted span is refused at admission; an empty one must not make `range` panic.
    if let Some(end) = &span.end {
        if *end <= span.start {
            return (
                Bound::Included(span.start.as_bytes()),
                Bound::Excluded(span.start.as_bytes()),
            );
        }
    }
    (Bound::Included(span.start.as_bytes()), end)
}

fn blocker(intent: &Intent) -> Blocker {
    Blocker {
        txn_id: intent.txn_id,
        coord_group: intent.coord_group,
        prepare_ts: intent.prepare_ts,
    }
}

fn strictly_increasing<'a, T: Ord + 'a>(mut items: impl Iterator<Item = &'a T>) -> bool {
    let Some(mut prev) = items.next() else { return true };
    for item in items {
        if item <= prev {
            return false;
        }
        prev = item;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(wall_ns: u64) -> HlcTimestamp {
        HlcTimestamp::new(wall_ns, 0)
    }

    fn w(key: &str, value: Option<&str>) -> Write {
        Write { key: Key::from(key), value: value.map(|v| v.as_bytes().to_vec()) }
    }

    /// A store with `b`@10="b1", `b`@20="b2", `c`@15=delete, `d`@30="d1".
    fn store() -> MvccStore {
        let mut s = MvccStore::new();
        s.write_versions(&[w("b", Some("b1"))], ts(10));
        s.write_versions(&[w("c", None)], ts(15));
        s.write_versions(&[w("b", Some("b2"))], ts(20));
        s.write_versions(&[w("d", Some("d1"))], ts(30));
        s
    }

    #[test]
    fn read_returns_the_newest_version_at_or_below_t() {
        let s = store();
        let b = Key::from("b");
        assert_eq!(s.read(&b, ts(5), ts(5)), ReadOutcome::Value { value: None, version_ts: None });
        assert_eq!(
            s.read(&b, ts(10), ts(10)),
            ReadOutcome::Value { value: Some(b"b1"), version_ts: Some(ts(10)) }
        );
        assert_eq!(
            s.read(&b, ts(25), ts(25)),
            ReadOutcome::Value { value: Some(b"b2"), version_ts: Some(ts(20)) }
        );
        // A delete reads as absent, with its timestamp.
        assert_eq!(
            s.read(&Key::from("c"), ts(15), ts(15)),
            ReadOutcome::Value { value: None, version_ts: Some(ts(15)) }
        );
    }

    #[test]
    fn read_in_the_uncertainty_window_restarts_at_the_newest_uncertain_version() {
        let mut s = store();
        s.write_versions(&[w("b", Some("b3"))], ts(25));
        assert_eq!(s.read(&Key::from("b"), ts(12), ts(30)), ReadOutcome::Uncertain { ts: ts(25) });
        assert_eq!(s.read(&Key::from("b"), ts(12), ts(22)), ReadOutcome::Uncertain { ts: ts(20) });
    }

    #[test]
    fn scan_returns_rows_in_key_order_without_deletes_and_resumes_at_the_limit() {
        let s = store();
        let all = KeyRange::new("a", None);
        let ScanOutcome::Rows { rows, resume_from } = s.scan(&all, ts(40), ts(40), 10) else {
            panic!()
        };
        let keys: Vec<_> = rows.iter().map(|r| r.0.clone()).collect();
        assert_eq!(keys, vec![Key::from("b"), Key::from("d")]);
        assert_eq!(resume_from, None);
        let ScanOutcome::Rows { rows, resume_from } = s.scan(&all, ts(40), ts(40), 1) else {
            panic!()
        };
        assert_eq!(rows.len(), 1);
        assert_eq!(resume_from, Some(Key::from("d")));
        // An uncertain version on an examined key restarts the scan.
        assert_eq!(s.scan(&all, ts(25), ts(35), 10), ScanOutcome::Uncertain { ts: ts(30) });
        // An intent past the resume key does not block; one before it does.
        let mut s = s;
        s.write_intents(TxnId(1), GroupId(9), ts(50), &[w("e", Some("x"))], &[]);
        assert!(
            matches!(s.scan(&all, ts(60), ts(60), 2), ScanOutcome::Blocked(b) if b.txn_id == TxnId(1))
        );
        assert!(matches!(
            s.scan(&KeyRange::bounded("a", "e"), ts(60), ts(60), 5),
            ScanOutcome::Rows { .. }
        ));
    }

    #[test]
    fn gc_keeps_the_newest_version_at_or_below_the_threshold_and_drops_deleted_keys() {
        let mut s = store();
        assert_eq!(s.gc(ts(22)), 2, "b@10 shadowed by b@20; c's delete");
        assert_eq!(s.versions(&Key::from("b")).len(), 1);
        assert!(s.versions(&Key::from("c")).is_empty());
        assert_eq!(s.versions(&Key::from("d")).len(), 1, "above the threshold: untouched");
        assert_eq!(s.gc_threshold(), ts(22));
        // Reads at or above the threshold see what they saw before.
        assert_eq!(
            s.read(&Key::from("b"), ts(22), ts(22)),
            ReadOutcome::Value { value: Some(b"b2"), version_ts: Some(ts(20)) }
        );
        // The threshold never goes back.
        assert_eq!(s.gc(ts(5)), 0);
        assert_eq!(s.gc_threshold(), ts(22));
    }

    #[test]
    fn commit_and_remove_intents_keep_inv_m1() {
        let mut s = store();
        s.write_intents(
            TxnId(1),
            GroupId(9),
            ts(35),
            &[w("b", Some("x")), w("e", None)],
            &[KeyRange::bounded("x", "y")],
        );
        assert_eq!(
            s.check_prepare(TxnId(2), ts(40), &[w("e", Some("y"))], &[]),
            Err(NoReason::IntentConflict)
        );
        assert_eq!(
            s.check_prepare(TxnId(2), ts(40), &[w("x1", Some("y"))], &[]),
            Err(NoReason::ReadLockConflict)
        );
        assert_eq!(
            s.check_prepare(TxnId(1), ts(40), &[w("e", Some("y"))], &[]),
            Ok(()),
            "its own intent"
        );
        s.commit_intents(TxnId(1), &[Key::from("b"), Key::from("e")], ts(36));
        assert_eq!(s.versions(&Key::from("b")).last().unwrap().ts, ts(36));
        assert_eq!(s.intent_count(), 0);
        assert_eq!(s.read_lock_holders(), 0);
        s.write_intents(TxnId(2), GroupId(9), ts(40), &[w("b", Some("y"))], &[]);
        s.remove_intents(TxnId(2), &[Key::from("b")]);
        assert_eq!(s.intent_count(), 0);
        assert_eq!(s.versions(&Key::from("b")).len(), 3);
    }

    #[test]
    fn an_image_round_trips_and_a_disordered_one_is_refused() {
        let s = store();
        let bytes = postcard::to_allocvec(&s.view()).unwrap();
        let image: MvccImage = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(postcard::to_allocvec(&image).unwrap(), bytes, "the view encodes as the image");
        assert_eq!(MvccStore::from_image(image.clone()).unwrap(), s);
        let mut bad = image;
        bad.versions.swap(0, 1);
        assert!(MvccStore::from_image(bad).is_err());
    }
}
