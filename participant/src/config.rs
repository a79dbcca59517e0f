//! The participant group's configuration: every timeout and bound it uses, with units in the
//! names and defaults from protocol.md §1.3, commit-protocol.md §1 and DESIGN.md §10 (taken
//! from `decree_types::limits`, where each value's reason is written).
//!
//! The fields that apply reads (`max_txn_lifetime_ms`, `mvcc_gc_ttl_ms`,
//! `prepared_txns_max`) decide replicated state, so they must be equal on every replica of a
//! group; the others only steer the leader.

use decree_types::limits;

/// Configuration of one participant group. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantConfig {
    /// `max_offset` (HLC-3), ns: the LC-2 wait after an election is `2 · max_offset` plus a
    /// drift margin of 0.1% (commit-protocol.md §6). Default 250 ms.
    pub max_offset_ns: u64,
    /// `in_doubt_query_after` (REC-3), ms: a leader holding a `PREPARED` transaction this
    /// long asks its coordinator. Default 2 s.
    pub in_doubt_query_after_ms: u64,
    /// Cap of the exponential backoff of in-doubt queries (REC-3), ms. Default 30 s.
    pub in_doubt_query_backoff_max_ms: u64,
    /// RI-2's short bound, ms: a read blocked on a prepared intent waits this long for the
    /// decision before the leader asks the intent's coordinator (RI-3). Default 50 ms.
    pub read_wait_before_query_ms: u64,
    /// `max_txn_lifetime` (D-3, REC-7(b)), ms: final `txn_table` entries and sessions expire
    /// this long after they were created, and a `Prepare`/`CommitLocal` whose `read_ts` is
    /// older than this at apply is rejected. Default 10 min. Replicated: equal on all replicas.
    pub max_txn_lifetime_ms: u64,
    /// MVCC GC TTL, ms: a `Gc` entry moves the GC threshold to its `proposed_at` minus this.
    /// Default 1 h. Replicated: equal on all replicas.
    pub mvcc_gc_ttl_ms: u64,
    /// How often the leader proposes a `Gc` entry, ms; `0` never. Default 1 min.
    pub gc_interval_ms: u64,
    /// `closed_ts_lag` (F-1), ms: how far behind its clock the leader closes timestamps.
    /// Default 1 s.
    pub closed_ts_lag_ms: u64,
    /// How often the leader proposes a `CloseTimestamp` entry, ms; `0` never. Default 1 s.
    pub close_interval_ms: u64,
    /// How often the leader scans for expired entries (D-3), ms; `0` never. Default 10 s.
    pub expire_scan_interval_ms: u64,
    /// Most transaction ids / sessions one `Expire` entry removes. Default 1024.
    pub expire_batch_max: usize,
    /// Most `PREPARED` transactions the group holds; further prepares vote
    /// `No { TooManyPrepared }` at apply. Replicated: equal on all replicas. Default 10 000.
    pub prepared_txns_max: usize,
    /// Most requests the leader keeps waiting (blocked reads and prepares held by the LC-2
    /// gate); beyond it requests are answered `Busy`. Default 10 000.
    pub waiting_requests_max: usize,
}

impl Default for ParticipantConfig {
    fn default() -> Self {
        ParticipantConfig {
            max_offset_ns: limits::MAX_OFFSET_NS,
            in_doubt_query_after_ms: limits::IN_DOUBT_QUERY_AFTER_MS,
            in_doubt_query_backoff_max_ms: limits::IN_DOUBT_QUERY_BACKOFF_MAX_MS,
            read_wait_before_query_ms: 50,
            max_txn_lifetime_ms: limits::MAX_TXN_LIFETIME_MS,
            mvcc_gc_ttl_ms: limits::MVCC_GC_TTL_MS,
            gc_interval_ms: 60_000,
            closed_ts_lag_ms: limits::CLOSED_TS_LAG_MS,
            close_interval_ms: 1_000,
            expire_scan_interval_ms: 10_000,
            expire_batch_max: 1024,
            prepared_txns_max: limits::PREPARED_TXNS_PER_GROUP_MAX,
            waiting_requests_max: 10_000,
        }
    }
}

impl ParticipantConfig {
    /// LC-2 (commit-protocol.md §6 step 2): how long a new leader evaluates no prepare,
    /// ns: `2 · max_offset` plus `drift_margin` = 1 ms per second of wait (0.1%), rounded up.
    pub fn lc2_wait_ns(&self) -> u64 {
        let wait = self.max_offset_ns.saturating_mul(2);
        wait.saturating_add(wait.div_ceil(1000))
    }

    /// `max_txn_lifetime` in ns.
    pub fn max_txn_lifetime_ns(&self) -> u64 {
        self.max_txn_lifetime_ms.saturating_mul(limits::NS_PER_MS)
    }

    /// The MVCC GC TTL in ns.
    pub fn mvcc_gc_ttl_ns(&self) -> u64 {
        self.mvcc_gc_ttl_ms.saturating_mul(limits::NS_PER_MS)
    }
}

/// Milliseconds to nanoseconds, saturating.
pub(crate) fn ms(ms: u64) -> u64 {
    ms.saturating_mul(limits::NS_PER_MS)
}
