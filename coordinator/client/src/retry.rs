//! [`Client::transact`]: run a transaction closure until it commits, FoundationDB's
//! `@transactional` for decree.
//!
//! One run: start a transaction, run the closure, commit. Then:
//!
//! - committed → return the closure's value and the [`CommitInfo`];
//! - a retryable error ([`Error::is_retryable`]: a conflict, an uncertainty restart, an
//!   unavailable group) → back off (exponential, jittered, never past the deadline) and run
//!   again with a fresh transaction — at the restart timestamp after an uncertainty restart
//!   (U-1);
//! - [`Error::Ambiguous`] → **nothing is rerun until the outcome is known.** The helper asks
//!   [`Client::txn_status`] (which follows the coordinator group's leader changes, or re-sends
//!   a 1PC commit to its group) until the answer is decided: committed → return it as if the
//!   commit had answered; aborted → the transaction had no effect, rerun it. Only if no
//!   decision can be learned before the deadline does the caller see `Ambiguous`. So a
//!   transfer is never applied twice by a retry;
//! - any other error → return it.
//!
//! [`Client::read_only_transact`] is the same loop for a body that only reads: no commit, and
//! an uncertainty restart reruns at once (no backoff) at the restart timestamp with the first
//! run's uncertainty limit, so a snapshot over keys that are being written converges within
//! `max_offset` instead of meeting a fresh window every run.

use std::future::Future;
use std::sync::atomic::Ordering;

use decree_types::{HlcTimestamp, TxnId};
use tokio::time::Instant;

use crate::client::{deadline_after, sleep_at_most, Client, TxnState};
use crate::error::{ConflictReason, Error};
use crate::txn::{CommitInfo, Snapshot, Txn, TxnOptions};

/// What resolving an ambiguous commit found.
enum Resolution {
    Committed(CommitInfo),
    Aborted(Error),
    Unknown,
}

impl Client {
    /// Runs `body` in a transaction and commits it, rerunning on retryable errors with
    /// jittered exponential backoff, at most [`crate::RetryPolicy::attempts_max`] runs and
    /// none started after [`crate::RetryPolicy::deadline`] (see the module docs).
    ///
    /// `body` gets a handle to the transaction; it reads and buffers writes, and must not
    /// commit (the helper does). It may run several times, so it must not have effects
    /// outside the transaction that cannot be repeated. To give up without writing, return
    /// `Ok` with a value that says so and buffer no writes.
    pub async fn transact<T, F, Fut>(&self, body: F) -> Result<(T, CommitInfo), Error>
    where
        F: FnMut(Txn) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        self.transact_with(self.settings().txn, body).await
    }

    /// [`Client::transact`] with transactions of the given isolation and commit-wait options.
    pub async fn transact_with<T, F, Fut>(
        &self,
        options: TxnOptions,
        mut body: F,
    ) -> Result<(T, CommitInfo), Error>
    where
        F: FnMut(Txn) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let policy = self.settings().retry;
        let deadline = deadline_after(policy.deadline);
        let mut backoff = policy.backoff_initial;
        let mut restart: Option<(HlcTimestamp, HlcTimestamp)> = None;
        let mut runs = 0u32;
        loop {
            runs += 1;
            let txn = match restart.take() {
                Some((read_ts, limit)) => self.begin_restarted(read_ts, limit, options),
                None => self.begin_with(options),
            };
            let error = match body(txn.clone()).await {
                Ok(value) => match txn.commit().await {
                    Ok(info) => return Ok((value, info)),
                    Err(Error::Ambiguous { txn_id, read_ts }) => {
                        match self.resolve(txn_id, deadline).await {
                            Resolution::Committed(info) => {
                                self.inner.ambiguous_resolved.fetch_add(1, Ordering::Relaxed);
                                return Ok((value, info));
                            }
                            Resolution::Aborted(e) => {
                                self.inner.ambiguous_resolved.fetch_add(1, Ordering::Relaxed);
                                e
                            }
                            Resolution::Unknown => {
                                return Err(Error::Ambiguous { txn_id, read_ts })
                            }
                        }
                    }
                    Err(e) => e,
                },
                Err(e) => {
                    txn.rollback();
                    e
                }
            };
            if !error.is_retryable() || runs >= policy.attempts_max {
                return Err(error);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(error);
            }
            restart = error.restart_point();
            tracing::debug!(run = runs, error = %error, "rerunning transaction");
            let wait = self.jitter(backoff);
            sleep_at_most(wait, deadline).await;
            backoff = backoff.saturating_mul(2).min(policy.backoff_max);
            if Instant::now() >= deadline {
                return Err(error);
            }
        }
    }

    /// Runs `body` on a read-only snapshot at the current time (see [`Client::read_only`]),
    /// rerunning it until it succeeds: after an uncertainty restart at once, at the restart
    /// timestamp and keeping the first run's uncertainty limit (U-1), so the reruns converge
    /// however busy the keys are; after another retryable error with jittered backoff, on a
    /// fresh snapshot. Restarts are bounded by the uncertainty window; other reruns by
    /// [`crate::RetryPolicy::attempts_max`] and [`crate::RetryPolicy::deadline`].
    ///
    /// Every value `body` returns comes from one snapshot: a rerun starts over with a new
    /// one, so `body` must not keep what an earlier run read.
    pub async fn read_only_transact<T, F, Fut>(&self, mut body: F) -> Result<T, Error>
    where
        F: FnMut(Snapshot) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let policy = self.settings().retry;
        let options = self.settings().txn;
        let deadline = deadline_after(policy.deadline);
        let mut backoff = policy.backoff_initial;
        let mut restart: Option<(HlcTimestamp, HlcTimestamp)> = None;
        let mut runs = 0u32;
        loop {
            let snapshot = match restart.take() {
                Some((read_ts, limit)) => {
                    Snapshot::new(self.begin_restarted(read_ts, limit, options))
                }
                None => self.read_only(),
            };
            let error = match body(snapshot).await {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            if let Some(point) = error.restart_point() {
                // U-1: the read timestamp only moves up inside the first run's window.
                restart = Some(point);
                continue;
            }
            runs += 1;
            if !error.is_retryable() || runs >= policy.attempts_max || Instant::now() >= deadline {
                return Err(error);
            }
            tracing::debug!(run = runs, error = %error, "rerunning read-only transaction");
            sleep_at_most(self.jitter(backoff), deadline).await;
            backoff = backoff.saturating_mul(2).min(policy.backoff_max);
        }
    }

    /// Learns the outcome of an ambiguous commit, asking until it is decided. Keeps asking
    /// until `deadline`, or for one `operation_timeout` if that is later, so a commit that
    /// used up the budget still gets a full round of questions.
    async fn resolve(&self, txn_id: TxnId, deadline: Instant) -> Resolution {
        let settings = self.settings();
        let deadline = deadline.max(deadline_after(settings.operation_timeout));
        let mut backoff = settings.retry.backoff_initial;
        loop {
            match self.txn_status_until(txn_id, deadline).await {
                Ok(TxnState::Committed(info)) => return Resolution::Committed(info),
                Ok(TxnState::Aborted { reason }) => {
                    // Decided abort: the transaction had no effect, so running it again is
                    // safe whatever the reason was.
                    let e = Error::Conflict { reason: ConflictReason::Aborted { txn_id, reason } };
                    return Resolution::Aborted(e);
                }
                Ok(TxnState::Expired) => return Resolution::Unknown,
                Ok(TxnState::Pending) | Err(Error::Unavailable { .. }) => {}
                Err(e) => {
                    tracing::warn!(%txn_id, error = %e, "cannot resolve an ambiguous commit");
                    return Resolution::Unknown;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Resolution::Unknown;
            }
            sleep_at_most(self.jitter(backoff), deadline).await;
            backoff = backoff.saturating_mul(2).min(settings.retry.backoff_max);
        }
    }
}
