//! The coordinator's configuration: every timeout, interval and bound, with its unit in its
//! name and its default from `decree_types::limits` (DESIGN.md §10, protocol.md §1.3,
//! commit-protocol.md §1 "Parameters").

use decree_types::limits::{MAX_TXN_LIFETIME_MS, PREPARE_TIMEOUT_MS};

/// How a coordinator group behaves. Every replica of a group must run with the same
/// `max_txn_lifetime_ms`: it is the one field that apply reads (D-3). The others shape only
/// the leader's driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// `prepare_timeout` (C-4, REC-5): votes missing this long after `CommitTxn` was admitted
    /// abort the transaction. Default 5 s, several election timeouts, so one participant
    /// leader change does not abort every transaction in flight.
    pub prepare_timeout_ms: u64,
    /// First retransmission interval of `Prepare`, `Commit` and `Abort` (C-6, REC-2). Default
    /// 50 ms: an unanswered request went to a replica that died or is cut off, and a
    /// participant group elects a new leader within an election timeout (300–600 ms), so the
    /// first retries must land inside that window rather than seconds after it.
    pub retransmit_initial_ms: u64,
    /// Cap of the exponential retransmission backoff. Default 1 s: after a few doublings an
    /// unreachable group costs one resend per transaction per second, and a group that comes
    /// back is found within a second.
    pub retransmit_max_ms: u64,
    /// `max_txn_lifetime` (D-3, REC-7(b)): tombstones and outcome stubs live this long after
    /// `created_at`, and a `StartCommit` whose `read_ts` is older is refused at apply. A
    /// `TxnStatus` for an older `read_ts` is answered `Expired` (D-5). Default 10 min.
    /// **Replicated behaviour: identical on every replica of the group.**
    pub max_txn_lifetime_ms: u64,
    /// How long acknowledgements wait to share one `RecordAcks` entry (C-7). Default 1 ms: one
    /// Raft entry (and one fsync on each replica) for every ack that arrives within it.
    pub ack_batch_delay_ms: u64,
    /// Most acknowledgements in one `RecordAcks` entry; a full batch is proposed at once.
    /// Default 1024.
    pub ack_batch_max: usize,
    /// How often the leader scans for tombstones and stubs past their lifetime (D-3). Default
    /// 10 s.
    pub expire_scan_interval_ms: u64,
    /// Most transactions in one `Expire` entry. Default 1024.
    pub expire_batch_max: usize,
    /// Most live attempts (transactions collecting votes) on one leader; further `CommitTxn`s
    /// are answered `Busy` (STYLE.md principle 6). Default 10 000, the same order as
    /// `PREPARED_TXNS_PER_GROUP_MAX`.
    pub attempts_max: usize,
    /// Most decided transactions whose phase two the leader drives at once; beyond it, the
    /// rest wait for the next retransmission round. Default 100 000.
    pub phase_two_max: usize,
    /// Most requests a leader holds between winning its election and applying its no-op
    /// (REC-1 step 1: it answers nothing before); further ones are answered `Busy`.
    /// Default 10 000.
    pub held_requests_max: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            prepare_timeout_ms: PREPARE_TIMEOUT_MS,
            retransmit_initial_ms: 50,
            retransmit_max_ms: 1_000,
            max_txn_lifetime_ms: MAX_TXN_LIFETIME_MS,
            ack_batch_delay_ms: 1,
            ack_batch_max: 1024,
            expire_scan_interval_ms: 10_000,
            expire_batch_max: 1024,
            attempts_max: 10_000,
            phase_two_max: 100_000,
            held_requests_max: 10_000,
        }
    }
}

impl CoordinatorConfig {
    /// `max_txn_lifetime` in nanoseconds, the unit of HLC wall time.
    pub fn max_txn_lifetime_ns(&self) -> u64 {
        self.max_txn_lifetime_ms.saturating_mul(NS_PER_MS)
    }

    /// The retransmission interval after `interval_ms`: doubled, capped.
    pub(crate) fn backoff_ms(&self, interval_ms: u64) -> u64 {
        interval_ms.saturating_mul(2).min(self.retransmit_max_ms).max(1)
    }
}

/// Nanoseconds per millisecond.
pub(crate) const NS_PER_MS: u64 = decree_types::limits::NS_PER_MS;
