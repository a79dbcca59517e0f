//! Transactions: snapshot reads at `read_ts`, buffered writes, one commit.
//!
//! A [`Txn`] reads at the timestamp it started with (T-1) and keeps every write in memory
//! until [`Txn::commit`] (T-3), so nothing needs cleaning up if it is dropped. Reads of keys it
//! wrote come from its own buffer (T-2); every other read is recorded as a span so a
//! serializable commit can be validated against later writers (§6.1). At commit the writes
//! and spans are split by group: one group commits in one Raft entry (`CommitLocal`, OPC-1),
//! several go through a coordinator group (`CommitTxn`, C-1).
//!
//! # Uncertainty restarts (§5.3)
//!
//! A read that meets a version committed in `(read_ts, read_ts + max_offset]` cannot tell
//! whether that write happened before the transaction started. If it is the transaction's
//! first read, the transaction simply moves its `read_ts` up to that version and reads again.
//! Otherwise earlier reads were at the old timestamp, and the transaction fails with
//! [`ConflictReason::Uncertainty`]: the rerun reads at the new timestamp with the same upper
//! limit (U-1), which [`crate::Client::transact`] does by itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use decree_proto::limits::SCAN_ROWS_MAX;
use decree_proto::txn::{Get, Isolation, Scan, ScanRows, TxnMode, UncertaintyRestart, ValueReply};
use decree_proto::{Bound, Request, Response};
use decree_types::{HlcTimestamp, Key, KeyRange, TxnId};
use tokio::task::JoinSet;

use crate::client::{deadline_after, lock, Client, Failure, RANGE_REFRESHES_MAX};
use crate::error::{ConflictReason, Error};

/// A committed transaction: its id (the idempotency key to log) and its commit timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CommitInfo {
    /// The transaction.
    pub txn_id: TxnId,
    /// Its commit timestamp `C` (a read-only transaction: its read timestamp). A snapshot at
    /// this timestamp sees the transaction's writes.
    pub commit_ts: HlcTimestamp,
}

/// How a transaction commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnOptions {
    /// Serializable (the default: read spans are validated at commit) or snapshot isolation.
    pub isolation: Isolation,
    /// Strict serializability: the commit answers only after commit-wait (§6.3) — done by the
    /// coordinator for a 2PC commit and by the client library for a 1PC commit.
    pub commit_wait: bool,
}

impl Default for TxnOptions {
    fn default() -> Self {
        TxnOptions { isolation: Isolation::Serializable, commit_wait: false }
    }
}

impl TxnOptions {
    pub(crate) fn mode(self) -> TxnMode {
        TxnMode {
            isolation: self.isolation,
            commit_wait: self.commit_wait,
            // Not in v1 (commit-protocol.md D-9).
            parallel_commit: false,
        }
    }
}

/// A read-write transaction. Cheap to clone: clones are the same transaction (so a retry
/// closure can own one while [`crate::Client::transact`] commits another).
#[derive(Clone)]
pub struct Txn {
    client: Client,
    state: Arc<Mutex<TxnState>>,
}

impl std::fmt::Debug for Txn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = lock(&self.state);
        f.debug_struct("Txn")
            .field("txn_id", &s.txn_id)
            .field("read_ts", &s.read_ts)
            .field("writes", &s.writes.len())
            .field("phase", &s.phase)
            .finish()
    }
}

#[derive(Debug)]
struct TxnState {
    txn_id: TxnId,
    read_ts: HlcTimestamp,
    /// `U` (TS-2); `None` for a snapshot at a chosen timestamp.
    uncertainty_limit: Option<HlcTimestamp>,
    options: TxnOptions,
    /// Buffered writes: `Some(value)` puts, `None` deletes.
    writes: BTreeMap<Key, Option<Vec<u8>>>,
    /// Spans read from the cluster, in read order.
    read_spans: Vec<KeyRange>,
    /// Reads sent so far; only the very first may move `read_ts` (module docs).
    reads_sent: u64,
    phase: Phase,
}

#[derive(Clone, Debug)]
enum Phase {
    Open,
    Committing,
    Committed(CommitInfo),
    RolledBack,
    /// Failed: every later call returns this error.
    Failed(Error),
}

/// What one read produced.
enum ReadOutcome<T> {
    Done(T),
    Restart(HlcTimestamp),
}

impl Txn {
    pub(crate) fn new(
        client: Client,
        txn_id: TxnId,
        read_ts: HlcTimestamp,
        uncertainty_limit: Option<HlcTimestamp>,
        options: TxnOptions,
    ) -> Txn {
        let state = TxnState {
            txn_id,
            read_ts,
            uncertainty_limit,
            options,
            writes: BTreeMap::new(),
            read_spans: Vec::new(),
            reads_sent: 0,
            phase: Phase::Open,
        };
        Txn { client, state: Arc::new(Mutex::new(state)) }
    }

    /// The transaction id (also the idempotency key of its commit, T-4).
    pub fn txn_id(&self) -> TxnId {
        lock(&self.state).txn_id
    }

    /// The snapshot timestamp every read uses.
    pub fn read_ts(&self) -> HlcTimestamp {
        lock(&self.state).read_ts
    }

    /// The value of `key` at the transaction's snapshot (or as this transaction wrote it);
    /// `None` if absent or deleted.
    pub async fn get(&self, key: impl Into<Key>) -> Result<Option<Vec<u8>>, Error> {
        let key = key.into();
        Bound::KeyBytes.check(key.len())?;
        loop {
            let (read_ts, limit, first) = {
                let mut s = lock(&self.state);
                s.check_open()?;
                if let Some(written) = s.writes.get(&key) {
                    return Ok(written.clone());
                }
                s.reads_sent += 1;
                (s.read_ts, s.uncertainty_limit, s.reads_sent == 1)
            };
            let request = Request::Get(Get { key: key.clone(), read_ts, uncertainty_limit: limit });
            let deadline = deadline_after(self.client.settings().operation_timeout);
            let outcome = match self.client.call_for_key(&key, request, deadline).await {
                Ok((_, Response::Value(ValueReply { value, .. }))) => ReadOutcome::Done(value),
                Ok((_, Response::UncertaintyRestart(UncertaintyRestart { new_read_ts }))) => {
                    ReadOutcome::Restart(new_read_ts)
                }
                Ok((_, other)) => {
                    return Err(Error::protocol(format!("Get answered {}", other.kind())))
                }
                Err(e) => return Err(e),
            };
            match outcome {
                ReadOutcome::Done(value) => {
                    let mut s = lock(&self.state);
                    s.read_spans.push(KeyRange::new(key.clone(), Some(key.successor())));
                    return Ok(value);
                }
                ReadOutcome::Restart(new_read_ts) => self.restart(first, read_ts, new_read_ts)?,
            }
        }
    }

    /// The values of `keys`, in the same order, read concurrently at the snapshot.
    pub async fn get_many<K: Into<Key>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let keys: Vec<Key> = keys.into_iter().map(Into::into).collect();
        let mut values: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
        let mut rest = 0;
        // Before the first read the transaction may still move its read timestamp (module
        // docs); read one key alone so the others are sent at the final timestamp.
        if lock(&self.state).reads_sent == 0 {
            if let Some(first) = keys.first() {
                values[0] = self.get(first.clone()).await?;
                rest = 1;
            }
        }
        let mut tasks = JoinSet::new();
        for (i, key) in keys.into_iter().enumerate().skip(rest) {
            let txn = self.clone();
            tasks.spawn(async move { (i, txn.get(key).await) });
        }
        while let Some(joined) = tasks.join_next().await {
            let (i, value) =
                joined.map_err(|e| Error::invalid(format!("a read task failed: {e}")))?;
            if let Some(slot) = values.get_mut(i) {
                *slot = value?;
            }
        }
        Ok(values)
    }

    /// Up to `limit` keys and values of `range`, in key order, at the snapshot, with this
    /// transaction's own writes applied. A range served by several groups is read group by
    /// group.
    pub async fn scan(&self, range: KeyRange, limit: u32) -> Result<Vec<(Key, Vec<u8>)>, Error> {
        if range.end.as_ref().is_some_and(|end| *end < range.start) {
            return Err(Error::invalid(format!("key range {range} ends before it starts")));
        }
        Bound::KeyBytes.check(range.start.len())?;
        if let Some(end) = &range.end {
            Bound::KeyBytes.check(end.len())?;
        }
        loop {
            let (read_ts, limit_ts, first) = {
                let mut s = lock(&self.state);
                s.check_open()?;
                s.reads_sent += 1;
                (s.read_ts, s.uncertainty_limit, s.reads_sent == 1)
            };
            match self.scan_at(&range, limit, read_ts, limit_ts).await? {
                ReadOutcome::Done(rows) => return Ok(rows),
                ReadOutcome::Restart(new_read_ts) => self.restart(first, read_ts, new_read_ts)?,
            }
        }
    }

    /// Buffers a write of `value` to `key`.
    pub fn put(&self, key: impl Into<Key>, value: impl Into<Vec<u8>>) -> Result<(), Error> {
        let (key, value) = (key.into(), value.into());
        Bound::ValueBytes.check(value.len())?;
        self.write(key, Some(value))
    }

    /// Buffers a delete of `key`.
    pub fn delete(&self, key: impl Into<Key>) -> Result<(), Error> {
        self.write(key.into(), None)
    }

    /// Commits: nothing to do for a transaction without writes (its reads were one snapshot);
    /// one `CommitLocal` if every write and read span lies in one group (1PC); a `CommitTxn`
    /// to the transaction's coordinator group otherwise.
    ///
    /// On [`Error::Ambiguous`] the outcome is unknown; [`crate::Client::txn_status`] resolves
    /// it — as it does if this future is dropped after the commit was sent. Calling `commit`
    /// again after success returns the same [`CommitInfo`].
    pub async fn commit(&self) -> Result<CommitInfo, Error> {
        let (txn_id, read_ts, options, writes, read_spans) = {
            let mut s = lock(&self.state);
            match &s.phase {
                Phase::Open => {}
                Phase::Committed(info) => return Ok(*info),
                Phase::Committing => return Err(Error::invalid("commit already in progress")),
                Phase::RolledBack => return Err(Error::invalid("transaction was rolled back")),
                Phase::Failed(e) => return Err(e.clone()),
            }
            if s.writes.is_empty() {
                let info = CommitInfo { txn_id: s.txn_id, commit_ts: s.read_ts };
                s.phase = Phase::Committed(info);
                return Ok(info);
            }
            s.phase = Phase::Committing;
            let spans = match s.options.isolation {
                Isolation::Serializable => coalesce(std::mem::take(&mut s.read_spans)),
                Isolation::Snapshot => Vec::new(),
            };
            (s.txn_id, s.read_ts, s.options, s.writes.clone(), spans)
        };
        let deadline = deadline_after(self.client.settings().operation_timeout);
        let result = match self.client.plan(&writes, &read_spans, deadline).await {
            Ok(plan) => self.client.commit_planned(txn_id, read_ts, options, plan, deadline).await,
            Err(e) => Err(e),
        };
        let mut s = lock(&self.state);
        s.phase = match &result {
            Ok(info) => Phase::Committed(*info),
            Err(e) => Phase::Failed(e.clone()),
        };
        result
    }

    /// Abandons the transaction. Its writes were only buffered, so nothing is sent.
    pub fn rollback(&self) {
        let mut s = lock(&self.state);
        if matches!(s.phase, Phase::Open) {
            s.phase = Phase::RolledBack;
            s.writes.clear();
        }
    }

    // --- internals ---------------------------------------------------------------------------

    fn write(&self, key: Key, value: Option<Vec<u8>>) -> Result<(), Error> {
        Bound::KeyBytes.check(key.len())?;
        let mut s = lock(&self.state);
        s.check_open()?;
        if !s.writes.contains_key(&key) {
            Bound::WritesPerTxn.check(s.writes.len() + 1)?;
        }
        s.writes.insert(key, value);
        Ok(())
    }

    /// Handles `UncertaintyRestart{new_read_ts}` for a read sent at `sent_at`: move the read
    /// timestamp if that read was the first, fail the transaction otherwise (U-1, U-2).
    fn restart(
        &self,
        first: bool,
        sent_at: HlcTimestamp,
        new_read_ts: HlcTimestamp,
    ) -> Result<(), Error> {
        let mut s = lock(&self.state);
        let limit = s.uncertainty_limit;
        let valid = limit.is_some_and(|u| new_read_ts > sent_at && new_read_ts <= u);
        if !valid {
            let e = Error::protocol(format!(
                "uncertainty restart to {new_read_ts} outside ({sent_at}, {limit:?}]"
            ));
            s.phase = Phase::Failed(e.clone());
            return Err(e);
        }
        if first && s.reads_sent == 1 && s.read_ts == sent_at {
            s.read_ts = new_read_ts;
            s.reads_sent = 0;
            return Ok(());
        }
        let uncertainty_limit = limit.unwrap_or(new_read_ts);
        let e = Error::Conflict {
            reason: ConflictReason::Uncertainty { new_read_ts, uncertainty_limit },
        };
        s.phase = Phase::Failed(e.clone());
        Err(e)
    }

    async fn scan_at(
        &self,
        range: &KeyRange,
        limit: u32,
        read_ts: HlcTimestamp,
        uncertainty_limit: Option<HlcTimestamp>,
    ) -> Result<ReadOutcome<Vec<(Key, Vec<u8>)>>, Error> {
        let deadline = deadline_after(self.client.settings().operation_timeout);
        let mut out: Vec<(Key, Vec<u8>)> = Vec::new();
        let mut cursor = range.start.clone();
        let mut refreshes = 0;
        let wanted = limit as usize;
        while out.len() < wanted && range.end.as_ref().is_none_or(|end| cursor < *end) {
            // The part of the rest of the range that the cursor's group serves.
            let (group_end, group) = self.client.route_of(&cursor, deadline).await?;
            let part_end = match (&group_end, &range.end) {
                (None, end) | (end, None) => end.clone(),
                (Some(a), Some(b)) => Some(a.clone().min(b.clone())),
            };
            let span = KeyRange { start: cursor.clone(), end: part_end.clone() };
            let rows_max = (wanted - out.len()).min(SCAN_ROWS_MAX) as u32;
            let request = Request::Scan(Scan {
                span: span.clone(),
                read_ts,
                uncertainty_limit,
                limit: rows_max,
            });
            let response = match self.client.call(group, request, deadline).await {
                Ok(response) => response,
                Err(Failure { error: Error::KeyOutOfRange { key }, .. })
                    if refreshes < RANGE_REFRESHES_MAX =>
                {
                    // The map moved under the scan: route the rest of it again.
                    let _ = key;
                    refreshes += 1;
                    self.client.refresh_routes_until(deadline).await?;
                    continue;
                }
                Err(failure) => return Err(failure.error),
            };
            let ScanRows { rows, resume_from } = match response {
                Response::ScanRows(rows) => rows,
                Response::UncertaintyRestart(UncertaintyRestart { new_read_ts }) => {
                    return Ok(ReadOutcome::Restart(new_read_ts))
                }
                other => return Err(Error::protocol(format!("Scan answered {}", other.kind()))),
            };
            // Where the group's answer stops: the resume key, or the end of the part.
            let covered_end = match resume_from {
                Some(resume) if resume > cursor && span.contains(&resume) => Some(resume),
                Some(resume) => {
                    return Err(Error::protocol(format!(
                        "scan of {span} resumes at {resume}, outside the span"
                    )))
                }
                None => part_end.clone(),
            };
            let covered = KeyRange { start: cursor.clone(), end: covered_end.clone() };
            let mut merged: BTreeMap<Key, Vec<u8>> = BTreeMap::new();
            let mut previous: Option<&Key> = None;
            for row in &rows {
                if !covered.contains(&row.key) || previous.is_some_and(|p| *p >= row.key) {
                    return Err(Error::protocol(format!(
                        "scan of {span} returned key {} out of order or outside {covered}",
                        row.key
                    )));
                }
                previous = Some(&row.key);
            }
            merged.extend(rows.into_iter().map(|r| (r.key, r.value)));
            {
                let mut s = lock(&self.state);
                s.check_open()?;
                // The transaction's own writes win over the snapshot (T-2).
                for (key, value) in s.writes.range(covered.start.clone()..) {
                    if !covered.contains(key) {
                        break;
                    }
                    match value {
                        Some(v) => merged.insert(key.clone(), v.clone()),
                        None => merged.remove(key),
                    };
                }
                s.read_spans.push(covered);
            }
            out.extend(merged);
            match covered_end {
                Some(end) => cursor = end,
                None => break,
            }
        }
        out.truncate(wanted);
        Ok(ReadOutcome::Done(out))
    }
}

impl TxnState {
    fn check_open(&self) -> Result<(), Error> {
        match &self.phase {
            Phase::Open => Ok(()),
            Phase::Committing => Err(Error::invalid("transaction is committing")),
            Phase::Committed(_) => Err(Error::invalid("transaction already committed")),
            Phase::RolledBack => Err(Error::invalid("transaction was rolled back")),
            Phase::Failed(e) => Err(e.clone()),
        }
    }
}

/// Sorts spans and merges the ones that overlap or touch, so a commit carries each key range
/// once.
fn coalesce(mut spans: Vec<KeyRange>) -> Vec<KeyRange> {
    spans.retain(|s| !s.is_empty());
    spans.sort();
    let mut out: Vec<KeyRange> = Vec::with_capacity(spans.len());
    for span in spans {
        if let Some(last) = out.last_mut() {
            match &last.end {
                None => continue,
                Some(end) if span.start <= *end => {
                    last.end = span.end.as_ref().map(|e| e.clone().max(end.clone()));
                    continue;
                }
                Some(_) => {}
            }
        }
        out.push(span);
    }
    out
}

/// A read-only transaction: every read at one timestamp, no writes, no commit, no locks
/// (§5.5). [`crate::Client::read_only`] starts one at the current time,
/// [`crate::Client::snapshot`] at a chosen timestamp.
#[derive(Clone, Debug)]
pub struct Snapshot {
    txn: Txn,
}

impl Snapshot {
    pub(crate) fn new(txn: Txn) -> Snapshot {
        Snapshot { txn }
    }

    /// The timestamp every read uses.
    pub fn read_ts(&self) -> HlcTimestamp {
        self.txn.read_ts()
    }

    /// The value of `key` at the snapshot.
    pub async fn get(&self, key: impl Into<Key>) -> Result<Option<Vec<u8>>, Error> {
        self.txn.get(key).await
    }

    /// The values of `keys` at the snapshot, in order.
    pub async fn get_many<K: Into<Key>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<Vec<u8>>>, Error> {
        self.txn.get_many(keys).await
    }

    /// Up to `limit` keys and values of `range` at the snapshot, in key order.
    pub async fn scan(&self, range: KeyRange, limit: u32) -> Result<Vec<(Key, Vec<u8>)>, Error> {
        self.txn.scan(range, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: &str, b: Option<&str>) -> KeyRange {
        KeyRange::new(a, b.map(Key::from))
    }

    #[test]
    fn coalesce_merges_overlapping_and_touching_spans() {
        let spans =
            vec![r("d", Some("f")), r("a", Some("b")), r("b", Some("c")), r("e", Some("g"))];
        assert_eq!(coalesce(spans), vec![r("a", Some("c")), r("d", Some("g"))]);
        let spans = vec![r("a", None), r("c", Some("d")), r("x", Some("x"))];
        assert_eq!(coalesce(spans), vec![r("a", None)]);
    }
}
