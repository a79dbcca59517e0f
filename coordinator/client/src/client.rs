//! [`Client`]: one connection to a cluster, shared by every transaction it starts.
//!
//! The client owns the things that outlive a transaction: the link to the cluster, the routing
//! table (range map and leader cache), the client HLC, the session id and sequence numbers of
//! 1PC commits (OPC-2), and the commits whose outcome it could not learn.
//!
//! # One request, many attempts
//!
//! Every request to a group goes through one loop (`Client::call`), which sends it to the node the
//! routing table names and keeps trying until the group answers or the operation's deadline
//! passes:
//!
//! 1. pick the cached leader of the group, or else its replicas in turn, or else the seeds;
//! 2. send the envelope with `sender_clock = hlc.now()` (HLC-4);
//! 3. on a reply, `hlc.update(reply.sender_clock)` first (HLC-2, REC-6), then:
//!    `Redirect` / `NotLeader{hint}` → remember the hint and go to 1; `UnknownGroup`,
//!    `Unavailable` → forget that leader, back off, go to 1; `Busy{retry_after}` → back off
//!    at least that long, go to 1; `KeyOutOfRange` → the caller refreshes the range map and
//!    routes again; any other refusal is a typed error; anything else is the answer;
//! 4. on no reply, remember whether the request *may* have been delivered (a commit that may
//!    have been delivered can only end as committed, aborted or `Ambiguous`), back off, go to 1.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use decree_proto::admin::FetchRangeMap;
use decree_proto::envelope::NODE_GROUP;
use decree_proto::limits::{GROUPS_PER_TXN_MAX, READ_SPANS_PER_TXN_MAX};
use decree_proto::txn::{
    AbortReason, CommitLocal, CommitTxn, GroupWork, OutcomeReply, Redirect, TxnOutcome, TxnStatus,
};
use decree_proto::{EncodeError, Envelope, ErrorResponse, Payload, Request, RequestId, Response};
use decree_runtime::transport::TransportError;
use decree_types::{ClientId, DetRng, GroupId, Hlc, HlcTimestamp, Key, NodeId, TxnId};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::config::{ClientConfig, ClientSettings};
use crate::error::{ConfigError, ConflictReason, Error};
use crate::link::{Link, LinkError, QuicLink};
use crate::routing::{coordinator_for, Routes};
use crate::txn::{CommitInfo, Snapshot, Txn, TxnOptions};

/// Commits with an unknown outcome a client remembers for [`Client::txn_status`]. The oldest
/// is forgotten first; a 2PC commit can still be resolved with [`Client::txn_status_at`].
pub const UNRESOLVED_COMMITS_MAX: usize = 4_096;

/// Times the client fetches the range map again for one operation after `KeyOutOfRange`
/// before giving up with [`Error::KeyOutOfRange`]: a map that moves more often than this
/// during one request is not converging.
pub(crate) const RANGE_REFRESHES_MAX: u32 = 3;

/// First and largest pause between attempts of one request, in milliseconds.
const ATTEMPT_BACKOFF_INITIAL_MS: u64 = 10;
const ATTEMPT_BACKOFF_MAX_MS: u64 = 500;

/// A client of one decree cluster. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("range_map_version", &lock(&self.inner.routes).version)
            .finish_non_exhaustive()
    }
}

/// What a transaction's outcome is, as far as the cluster can say ([`Client::txn_status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnState {
    /// Decided commit.
    Committed(CommitInfo),
    /// Decided abort (or presumed aborted: it can never commit now, REC-4).
    Aborted {
        /// Why.
        reason: AbortReason,
    },
    /// Not decided yet; ask again later.
    Pending,
    /// Too old: the cluster no longer remembers the outcome (commit-protocol.md D-5).
    Expired,
}

/// How to learn the outcome of a commit whose reply was lost.
#[derive(Clone, Debug)]
enum Unresolved {
    /// Re-send the same `CommitLocal` (same `client_id`, `seq`, `txn_id`): the group answers
    /// from its session table (OPC-2). The coordinator knows nothing of 1PC transactions and
    /// would presume them aborted, so it must not be asked.
    OnePhase { group: GroupId, request: CommitLocal },
    /// Ask the coordinator group that was sent the `CommitTxn` (REC-6).
    TwoPhase { coord_group: GroupId, read_ts: HlcTimestamp },
}

/// A request that failed, and whether it may nevertheless have been handled.
#[derive(Debug)]
pub(crate) struct Failure {
    pub error: Error,
    pub maybe_delivered: bool,
}

pub(crate) struct Inner {
    link: Arc<dyn Link>,
    pub(crate) settings: ClientSettings,
    hlc: Mutex<Hlc>,
    routes: Mutex<Routes>,
    next_request_id: AtomicU64,
    /// Idle 1PC sessions (OPC-2), each with the next sequence number it will use.
    sessions: Mutex<Vec<Session>>,
    rng: Mutex<DetRng>,
    unresolved: Mutex<UnresolvedTable>,
    /// Set by [`Client::close`]: every request fails at once from then on.
    closed: AtomicBool,
    /// Ambiguous commits [`Client::transact`] resolved to a decision (see
    /// [`Client::ambiguous_resolved`]).
    pub(crate) ambiguous_resolved: AtomicU64,
}

/// Commits whose outcome is not known yet, oldest first.
#[derive(Default)]
struct UnresolvedTable {
    by_txn: BTreeMap<TxnId, Unresolved>,
    /// Insertion order; may hold ids already resolved (skipped and compacted away).
    order: VecDeque<TxnId>,
}

impl UnresolvedTable {
    /// Drops resolved ids from the front, and from everywhere once they outnumber the live
    /// ones, so `order` stays within twice the live entries.
    fn compact(&mut self) {
        while self.order.front().is_some_and(|t| !self.by_txn.contains_key(t)) {
            self.order.pop_front();
        }
        if self.order.len() > 2 * self.by_txn.len() + 16 {
            let by_txn = &self.by_txn;
            self.order.retain(|t| by_txn.contains_key(t));
        }
    }
}

/// A 1PC session (OPC-2, RAFT-10): a `client_id` whose commits are sent one at a time with
/// increasing `seq`, so the group's session table answers a repeated request with its
/// stored result. The client keeps a pool of them, one per concurrent 1PC commit.
#[derive(Clone, Copy, Debug)]
struct Session {
    id: ClientId,
    next_seq: u64,
}

impl Client {
    /// Connects to the cluster described by `config`: starts a QUIC endpoint with the client's
    /// certificate and fetches the range map and group leaders from a coordinator replica.
    ///
    /// If no node answers but `config` has a cluster file, the client starts with the file's
    /// range map (and fetches the cluster's when a request meets `KeyOutOfRange`); without one
    /// it fails with [`Error::Unavailable`]. A certificate the cluster refuses fails with
    /// [`Error::Tls`]. Must be called inside a tokio runtime.
    pub async fn connect(config: ClientConfig) -> Result<Client, Error> {
        let seeds = config.seed_nodes();
        if seeds.is_empty() {
            return Err(ConfigError::NoSeeds.into());
        }
        let link =
            QuicLink::new(config.identity.clone(), config.addresses()).map_err(|e| match e {
                TransportError::Bind { .. } => Error::Unavailable { what: e.to_string() },
                TransportError::Tls(_) | TransportError::NotANode(_) => {
                    Error::Config(ConfigError::Certificates { reason: e.to_string() })
                }
            })?;
        let client = Client::with_link(Arc::new(link), seeds, config.settings.clone());
        if let Some(cluster) = &config.cluster {
            lock(&client.inner.routes).install(&cluster.as_range_map())?;
        }
        match client.refresh_routes().await {
            Ok(()) => Ok(client),
            Err(e @ (Error::Tls { .. } | Error::Config(_) | Error::Protocol { .. })) => Err(e),
            Err(e) if config.cluster.is_some() => {
                warn!(error = %e, "no coordinator replica answered; using the cluster file's map");
                Ok(client)
            }
            Err(e) => Err(e),
        }
    }

    /// A client over any [`Link`] (the simulator, tests, another transport) that asks `seeds`
    /// for the range map. Fetches nothing yet: call [`Client::refresh_routes`], or let the
    /// first request do it.
    pub fn with_link(link: Arc<dyn Link>, seeds: Vec<NodeId>, settings: ClientSettings) -> Client {
        let seed = settings.jitter_seed.unwrap_or_else(|| random_u64().unwrap_or_else(time_seed));
        let rng = DetRng::new(seed);
        let hlc = Hlc::new(settings.max_offset_ns);
        Client {
            inner: Arc::new(Inner {
                link,
                settings,
                hlc: Mutex::new(hlc),
                routes: Mutex::new(Routes::with_seeds(seeds)),
                next_request_id: AtomicU64::new(1),
                sessions: Mutex::new(Vec::new()),
                rng: Mutex::new(rng),
                unresolved: Mutex::new(UnresolvedTable::default()),
                closed: AtomicBool::new(false),
                ambiguous_resolved: AtomicU64::new(0),
            }),
        }
    }

    /// Starts a read-write transaction with the client's default options, reading at
    /// `read_ts = hlc.now()` (T-1).
    #[must_use = "a transaction does nothing until it is used"]
    pub fn begin(&self) -> Txn {
        self.begin_with(self.inner.settings.txn)
    }

    /// Starts a read-write transaction with the given options.
    #[must_use = "a transaction does nothing until it is used"]
    pub fn begin_with(&self, options: TxnOptions) -> Txn {
        let read_ts = self.now();
        let limit = read_ts.add_wall_ns(self.inner.settings.max_offset_ns);
        Txn::new(self.clone(), self.new_txn_id(), read_ts, Some(limit), options)
    }

    /// Starts a transaction at `read_ts` keeping uncertainty limit `limit`: the rerun of a
    /// transaction after an uncertainty restart (U-1).
    pub(crate) fn begin_restarted(
        &self,
        read_ts: HlcTimestamp,
        limit: HlcTimestamp,
        options: TxnOptions,
    ) -> Txn {
        Txn::new(self.clone(), self.new_txn_id(), read_ts, Some(limit), options)
    }

    /// A fresh read-only snapshot at `hlc.now()` with an uncertainty window: it sees every
    /// transaction that committed before it started (§5.5). No commit, no locks.
    #[must_use = "a transaction does nothing until it is used"]
    pub fn read_only(&self) -> Snapshot {
        Snapshot::new(self.begin())
    }

    /// A read-only snapshot at a chosen timestamp, e.g. one returned in a [`CommitInfo`]. No
    /// uncertainty window: it reads exactly what was committed at or below `read_ts`.
    #[must_use = "a transaction does nothing until it is used"]
    pub fn snapshot(&self, read_ts: HlcTimestamp) -> Snapshot {
        let txn = Txn::new(self.clone(), self.new_txn_id(), read_ts, None, self.inner.settings.txn);
        Snapshot::new(txn)
    }

    /// The outcome of a commit of this client that ended [`Error::Ambiguous`]. A 1PC commit is
    /// resolved by re-sending its exact request to its group (OPC-2), a 2PC commit by asking
    /// its coordinator group (REC-6); either way the answer reflects decided state. A decided
    /// answer is final and the transaction is forgotten.
    ///
    /// A transaction this client does not remember (another process's, or one pushed out of
    /// the last [`UNRESOLVED_COMMITS_MAX`]) is [`Error::InvalidArgument`]: use
    /// [`Client::txn_status_at`].
    pub async fn txn_status(&self, txn_id: TxnId) -> Result<TxnState, Error> {
        let deadline = deadline_after(self.inner.settings.operation_timeout);
        self.txn_status_until(txn_id, deadline).await
    }

    /// The outcome of the 2PC transaction `txn_id` with read timestamp `read_ts`, asked of its
    /// coordinator group. Never use it for a 1PC transaction (all writes in one group): the
    /// coordinator never saw it and presumes it aborted (REC-4).
    pub async fn txn_status_at(
        &self,
        txn_id: TxnId,
        read_ts: HlcTimestamp,
    ) -> Result<TxnState, Error> {
        let deadline = deadline_after(self.inner.settings.operation_timeout);
        let group = self.coordinator_group(txn_id, deadline).await?;
        self.ask_coordinator(group, txn_id, read_ts, deadline).await
    }

    /// Fetches the range map and group leaders from a coordinator replica (or a seed).
    pub async fn refresh_routes(&self) -> Result<(), Error> {
        let deadline = deadline_after(self.inner.settings.operation_timeout);
        self.refresh_routes_until(deadline).await
    }

    /// Closes the client's connections and releases its socket. Transactions still running
    /// fail with [`Error::Unavailable`] (or [`Error::Ambiguous`] for a commit in flight).
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.link.close().await;
    }

    /// A fresh reading of the client's HLC (HLC-1).
    pub fn now(&self) -> HlcTimestamp {
        lock(&self.inner.hlc).now(physical_now_ns())
    }

    /// How many commits that ended ambiguous [`Client::transact`] has resolved to a decision
    /// (committed or aborted) by asking the cluster, since this client was made. A workload
    /// reports it beside its outcome counts: ambiguity the caller never saw.
    pub fn ambiguous_resolved(&self) -> u64 {
        self.inner.ambiguous_resolved.load(Ordering::Relaxed)
    }

    /// The settings the client runs with.
    pub fn settings(&self) -> &ClientSettings {
        &self.inner.settings
    }

    /// The groups a key range is served by, in key order (after fetching the map if needed).
    pub async fn groups_for(&self, range: &decree_types::KeyRange) -> Result<Vec<GroupId>, Error> {
        let deadline = deadline_after(self.inner.settings.operation_timeout);
        self.ensure_map(deadline).await?;
        let parts = lock(&self.inner.routes).split_range(range).unwrap_or_default();
        Ok(parts.into_iter().map(|(_, g)| g).collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Internals shared with `txn` and `retry`.

impl Client {
    /// Sends `request` to `group` until it answers or `deadline` passes (module docs).
    pub(crate) async fn call(
        &self,
        group: GroupId,
        request: Request,
        deadline: Instant,
    ) -> Result<Response, Failure> {
        let mut attempt = 0usize;
        let mut maybe_delivered = false;
        let mut backoff_ms = ATTEMPT_BACKOFF_INITIAL_MS;
        let mut last = String::from("no replica known");
        loop {
            if self.inner.closed.load(Ordering::Acquire) {
                let what = "the client was closed".to_string();
                return Err(Failure { error: Error::Unavailable { what }, maybe_delivered });
            }
            let now = Instant::now();
            if now >= deadline {
                let what = format!("group {group} ({}): {last}", request.kind());
                return Err(Failure { error: Error::Unavailable { what }, maybe_delivered });
            }
            let node = lock(&self.inner.routes).node_for(group, attempt);
            let Some(node) = node else {
                let what = format!("group {group}: no replica known");
                return Err(Failure { error: Error::Unavailable { what }, maybe_delivered });
            };
            attempt += 1;
            let request_id = RequestId(self.inner.next_request_id.fetch_add(1, Ordering::Relaxed));
            let envelope = Envelope {
                from: NodeId(0),
                group,
                sender_clock: self.now(),
                payload: Payload::Request { request_id, request: request.clone() },
            };
            if let Err(limit) = envelope.validate() {
                return Err(Failure { error: Error::LimitExceeded(limit), maybe_delivered });
            }
            let timeout = self.inner.settings.attempt_timeout.min(deadline - now);
            // Whether to pause before the next attempt (false: a fresh leader hint to follow),
            // and for at least how long (a busy node's request).
            let mut pause = true;
            let mut pause_min = Duration::ZERO;
            match self.inner.link.call(node, envelope, timeout).await {
                Ok(reply) => {
                    self.observe(reply.sender_clock);
                    match reply.payload {
                        Payload::Response { request_id: id, response } if id == request_id => {
                            let Response::Redirect(Redirect { leader }) = response else {
                                return Ok(response);
                            };
                            pause = !self.follow_hint(group, node, leader, None);
                            last = format!("{node} redirected");
                        }
                        Payload::Error { in_reply_to, error }
                            if in_reply_to.is_none_or(|id| id == request_id) =>
                        {
                            last = format!("{node}: {error}");
                            match error {
                                ErrorResponse::NotLeader { hint, term } => {
                                    pause = !self.follow_hint(group, node, hint, Some(term));
                                }
                                ErrorResponse::UnknownGroup { .. }
                                | ErrorResponse::Unavailable { .. } => {
                                    lock(&self.inner.routes).forget_leader(group, node);
                                }
                                ErrorResponse::Busy { retry_after_ms } => {
                                    pause_min = Duration::from_millis(retry_after_ms);
                                }
                                other => {
                                    return Err(Failure {
                                        error: error_from_reply(group, other),
                                        maybe_delivered,
                                    })
                                }
                            }
                        }
                        other => {
                            // A reply to some other request, or not a reply at all: this
                            // request may have been handled, and we cannot tell how.
                            let detail =
                                format!("{node} answered {} to {}", other.kind(), request.kind());
                            return Err(Failure {
                                error: Error::protocol(detail),
                                maybe_delivered: true,
                            });
                        }
                    }
                }
                Err(LinkError::NotDelivered { reason, .. }) => {
                    lock(&self.inner.routes).forget_leader(group, node);
                    last = format!("{node}: {reason}");
                }
                Err(LinkError::MaybeDelivered { reason, .. }) => {
                    maybe_delivered = true;
                    lock(&self.inner.routes).forget_leader(group, node);
                    last = format!("{node}: {reason}");
                }
                Err(LinkError::Tls { node, reason }) => {
                    let error = Error::Tls { peer: node.to_string(), reason };
                    return Err(Failure { error, maybe_delivered });
                }
                Err(LinkError::Closed) => {
                    let what = "the client was closed".to_string();
                    return Err(Failure { error: Error::Unavailable { what }, maybe_delivered });
                }
                Err(LinkError::Encode(e)) => {
                    let error = match e {
                        EncodeError::Limit(limit) => Error::LimitExceeded(limit),
                        other => Error::protocol(format!("request does not encode: {other}")),
                    };
                    return Err(Failure { error, maybe_delivered });
                }
            }
            debug!(%group, %node, attempt, reason = %last, "retrying request");
            // Leader hints are followed at once, but only for a few hops: two replicas naming
            // each other must not make us spin until the deadline.
            if pause || attempt > 3 {
                let wait = self.jitter(Duration::from_millis(backoff_ms)).max(pause_min);
                sleep_at_most(wait, deadline).await;
                backoff_ms = (backoff_ms * 2).min(ATTEMPT_BACKOFF_MAX_MS);
            }
        }
    }

    /// Sends a request addressed to whichever group owns `key`, refreshing the range map and
    /// routing again after `KeyOutOfRange`.
    pub(crate) async fn call_for_key(
        &self,
        key: &Key,
        request: Request,
        deadline: Instant,
    ) -> Result<(GroupId, Response), Error> {
        let mut refreshes = 0;
        loop {
            self.ensure_map(deadline).await?;
            let group = lock(&self.inner.routes).group_for(key);
            let Some(group) = group else {
                return Err(Error::Unavailable { what: "range map".into() });
            };
            match self.call(group, request.clone(), deadline).await {
                Ok(response) => return Ok((group, response)),
                Err(Failure { error: Error::KeyOutOfRange { key }, .. })
                    if refreshes < RANGE_REFRESHES_MAX =>
                {
                    debug!(%key, %group, "key out of range; refreshing the range map");
                    refreshes += 1;
                    self.refresh_routes_until(deadline).await?;
                }
                Err(failure) => return Err(failure.error),
            }
        }
    }

    /// The group serving `key` and the end of its range (fetching the map if needed).
    pub(crate) async fn route_of(
        &self,
        key: &Key,
        deadline: Instant,
    ) -> Result<(Option<Key>, GroupId), Error> {
        self.ensure_map(deadline).await?;
        let routes = lock(&self.inner.routes);
        match routes.map.as_ref() {
            Some(map) => {
                let (range, group) = map.range_for(key);
                Ok((range.end.clone(), group))
            }
            None => Err(Error::Unavailable { what: "range map".into() }),
        }
    }

    /// Fetches the range map unless one is held.
    pub(crate) async fn ensure_map(&self, deadline: Instant) -> Result<(), Error> {
        if lock(&self.inner.routes).map.is_some() {
            return Ok(());
        }
        self.refresh_routes_until(deadline).await
    }

    pub(crate) async fn refresh_routes_until(&self, deadline: Instant) -> Result<(), Error> {
        let (group, known_version) = {
            let routes = lock(&self.inner.routes);
            (routes.coordinator_groups.first().copied().unwrap_or(NODE_GROUP), routes.version)
        };
        let request = Request::FetchRangeMap(FetchRangeMap { known_version });
        let response = self.call(group, request, deadline).await.map_err(|f| f.error)?;
        let Response::RangeMap(reply) = response else {
            return Err(Error::protocol(format!("FetchRangeMap answered {}", response.kind())));
        };
        lock(&self.inner.routes).install(&reply)?;
        for node in &reply.nodes {
            match resolve_addr(&node.addr).await {
                Some(addr) => self.inner.link.learn_address(node.node, addr),
                None => warn!(node = %node.node, addr = %node.addr, "cannot resolve node address"),
            }
        }
        Ok(())
    }

    /// The coordinator group for `txn_id` (fetching the map if no coordinator is known).
    pub(crate) async fn coordinator_group(
        &self,
        txn_id: TxnId,
        deadline: Instant,
    ) -> Result<GroupId, Error> {
        self.ensure_map(deadline).await?;
        let groups = lock(&self.inner.routes).coordinator_groups.clone();
        coordinator_for(txn_id, &groups)
            .ok_or_else(|| Error::Unavailable { what: "no coordinator group known".into() })
    }

    /// The current range map's split of a transaction's writes and read spans by group.
    pub(crate) async fn plan(
        &self,
        writes: &BTreeMap<Key, Option<Vec<u8>>>,
        read_spans: &[decree_types::KeyRange],
        deadline: Instant,
    ) -> Result<BTreeMap<GroupId, GroupWork>, Error> {
        self.ensure_map(deadline).await?;
        let routes = lock(&self.inner.routes);
        let Some(map) = routes.map.as_ref() else {
            return Err(Error::Unavailable { what: "range map".into() });
        };
        let mut per_group: BTreeMap<GroupId, GroupWork> = BTreeMap::new();
        let work = |g: GroupId| GroupWork { group: g, writes: vec![], read_spans: vec![] };
        for (key, value) in writes {
            let group = map.group_for(key);
            let write = decree_proto::txn::Write { key: key.clone(), value: value.clone() };
            per_group.entry(group).or_insert_with(|| work(group)).writes.push(write);
        }
        for span in read_spans {
            for (part, group) in map.split_range(span) {
                per_group.entry(group).or_insert_with(|| work(group)).read_spans.push(part);
            }
        }
        fit_read_spans(&mut per_group);
        Ok(per_group)
    }

    /// Commits a planned transaction: 1PC if it touches one group, 2PC otherwise (T-4).
    pub(crate) async fn commit_planned(
        &self,
        txn_id: TxnId,
        read_ts: HlcTimestamp,
        options: TxnOptions,
        per_group: BTreeMap<GroupId, GroupWork>,
        deadline: Instant,
    ) -> Result<CommitInfo, Error> {
        let one_phase = per_group.len() == 1;
        let (group, request, unresolved) = if one_phase {
            let Some((group, work)) = per_group.into_iter().next() else {
                return Err(Error::invalid("nothing to commit"));
            };
            let session = self.take_session();
            let local = CommitLocal {
                txn_id,
                client_id: session.id,
                seq: session.next_seq,
                read_ts,
                writes: work.writes,
                read_spans: work.read_spans,
                isolation: options.isolation,
            };
            let unresolved = Unresolved::OnePhase { group, request: local.clone() };
            (group, Request::CommitLocal(local), unresolved)
        } else {
            let coord_group = self.coordinator_group(txn_id, deadline).await?;
            let commit = CommitTxn {
                txn_id,
                read_ts,
                per_group: per_group.into_values().collect(),
                mode: options.mode(),
            };
            (coord_group, Request::CommitTxn(commit), Unresolved::TwoPhase { coord_group, read_ts })
        };
        // Remembered before sending, so that even if this future is dropped mid-commit,
        // `txn_status` can still learn the outcome.
        self.remember(txn_id, unresolved);
        match self.send_commit(group, txn_id, request, deadline).await {
            CommitResult::Decided(result) => {
                self.forget(txn_id);
                if let (Ok(info), true) = (&result, one_phase && options.commit_wait) {
                    self.commit_wait(info.commit_ts).await;
                }
                result
            }
            CommitResult::NotSent(e) => {
                self.forget(txn_id);
                if let Error::KeyOutOfRange { .. } = e {
                    // The map moved; the rerun routes with the new one.
                    let _ = self.refresh_routes_until(deadline).await;
                }
                Err(e)
            }
            CommitResult::Unknown => Err(Error::Ambiguous { txn_id, read_ts }),
        }
    }

    async fn send_commit(
        &self,
        group: GroupId,
        txn_id: TxnId,
        request: Request,
        deadline: Instant,
    ) -> CommitResult {
        let mut ambiguous = false;
        let mut backoff_ms = ATTEMPT_BACKOFF_INITIAL_MS;
        loop {
            match self.call(group, request.clone(), deadline).await {
                Ok(Response::Outcome(OutcomeReply { txn_id: id, outcome })) if id == txn_id => {
                    match self.decided(txn_id, outcome) {
                        Some(result) => return CommitResult::Decided(result),
                        None if matches!(outcome, TxnOutcome::Expired) => {
                            return CommitResult::Unknown
                        }
                        // Ambiguous or Pending: the replier does not know yet. The request is
                        // idempotent (T-4, OPC-2), so asking again is how we learn.
                        None => {
                            ambiguous = true;
                            if Instant::now() >= deadline {
                                return CommitResult::Unknown;
                            }
                            let wait = self.jitter(Duration::from_millis(backoff_ms));
                            sleep_at_most(wait, deadline).await;
                            backoff_ms = (backoff_ms * 2).min(ATTEMPT_BACKOFF_MAX_MS);
                        }
                    }
                }
                // Handled, but the answer is not about this commit.
                Ok(_) => return CommitResult::Unknown,
                Err(Failure { maybe_delivered, .. }) if maybe_delivered || ambiguous => {
                    return CommitResult::Unknown
                }
                Err(Failure { error, .. }) => return CommitResult::NotSent(error),
            }
        }
    }

    /// Maps a decided outcome to the commit's result; `None` if `outcome` is not a decision.
    fn decided(&self, txn_id: TxnId, outcome: TxnOutcome) -> Option<Result<CommitInfo, Error>> {
        match outcome {
            TxnOutcome::Committed { commit_ts } => {
                // REC-6: the next transaction of this client reads at or above C.
                self.observe(commit_ts);
                Some(Ok(CommitInfo { txn_id, commit_ts }))
            }
            TxnOutcome::Aborted { reason, retryable: true } => {
                Some(Err(Error::Conflict { reason: ConflictReason::Aborted { txn_id, reason } }))
            }
            TxnOutcome::Aborted { reason, retryable: false } => {
                Some(Err(Error::Aborted { txn_id, reason }))
            }
            TxnOutcome::Ambiguous | TxnOutcome::Pending | TxnOutcome::Expired => None,
        }
    }

    pub(crate) async fn txn_status_until(
        &self,
        txn_id: TxnId,
        deadline: Instant,
    ) -> Result<TxnState, Error> {
        let entry = lock(&self.inner.unresolved).by_txn.get(&txn_id).cloned();
        let state = match entry {
            None => {
                return Err(Error::invalid(format!(
                    "transaction {txn_id} is not an unresolved commit of this client; \
                     use txn_status_at"
                )))
            }
            Some(Unresolved::TwoPhase { coord_group, read_ts }) => {
                self.ask_coordinator(coord_group, txn_id, read_ts, deadline).await?
            }
            Some(Unresolved::OnePhase { group, request }) => {
                let request = Request::CommitLocal(request);
                match self.call(group, request, deadline).await {
                    Ok(Response::Outcome(OutcomeReply { txn_id: id, outcome })) if id == txn_id => {
                        self.state_of(txn_id, outcome)
                    }
                    Ok(other) => {
                        return Err(Error::protocol(format!(
                            "CommitLocal answered {}",
                            other.kind()
                        )))
                    }
                    Err(failure) => return Err(failure.error),
                }
            }
        };
        if matches!(state, TxnState::Committed(_) | TxnState::Aborted { .. }) {
            self.forget(txn_id);
        }
        Ok(state)
    }

    async fn ask_coordinator(
        &self,
        group: GroupId,
        txn_id: TxnId,
        read_ts: HlcTimestamp,
        deadline: Instant,
    ) -> Result<TxnState, Error> {
        let request = Request::TxnStatus(TxnStatus { txn_id, read_ts });
        match self.call(group, request, deadline).await {
            Ok(Response::Outcome(OutcomeReply { txn_id: id, outcome })) if id == txn_id => {
                Ok(self.state_of(txn_id, outcome))
            }
            Ok(other) => Err(Error::protocol(format!("TxnStatus answered {}", other.kind()))),
            Err(failure) => Err(failure.error),
        }
    }

    fn state_of(&self, txn_id: TxnId, outcome: TxnOutcome) -> TxnState {
        match outcome {
            TxnOutcome::Committed { commit_ts } => {
                self.observe(commit_ts);
                TxnState::Committed(CommitInfo { txn_id, commit_ts })
            }
            TxnOutcome::Aborted { reason, .. } => TxnState::Aborted { reason },
            // The replier lost track mid-decision: not decided as far as we can tell.
            TxnOutcome::Ambiguous | TxnOutcome::Pending => TxnState::Pending,
            TxnOutcome::Expired => TxnState::Expired,
        }
    }

    fn remember(&self, txn_id: TxnId, unresolved: Unresolved) {
        let mut table = lock(&self.inner.unresolved);
        if table.by_txn.insert(txn_id, unresolved).is_none() {
            table.order.push_back(txn_id);
        }
        // Forget the oldest beyond the bound (their 1PC sessions are abandoned with them).
        while table.by_txn.len() > UNRESOLVED_COMMITS_MAX {
            match table.order.pop_front() {
                Some(old) => {
                    table.by_txn.remove(&old);
                }
                None => break,
            }
        }
        table.compact();
    }

    /// Commit-wait for a 1PC commit (§6.3), which has no coordinator to do it: return only
    /// once our physical clock is past `C.wall + max_offset`, so every node's clock is past
    /// `C` and every transaction that starts later anywhere reads above it.
    async fn commit_wait(&self, commit_ts: HlcTimestamp) {
        let until_ns = commit_ts.wall_ns.saturating_add(self.inner.settings.max_offset_ns);
        let wait_ns = until_ns.saturating_sub(physical_now_ns()).saturating_add(1);
        tokio::time::sleep(Duration::from_nanos(wait_ns)).await;
    }

    /// Drops `txn_id` from the unresolved commits. Whoever removes a 1PC entry returns its
    /// session to the pool, once: a session is never used by two commits at a time, and an
    /// undecided commit keeps its session (a later `seq` would shadow it, OPC-2).
    fn forget(&self, txn_id: TxnId) {
        let removed = {
            let mut table = lock(&self.inner.unresolved);
            let removed = table.by_txn.remove(&txn_id);
            table.compact();
            removed
        };
        if let Some(Unresolved::OnePhase { request, .. }) = removed {
            let session = Session { id: request.client_id, next_seq: request.seq + 1 };
            lock(&self.inner.sessions).push(session);
        }
    }

    /// An idle 1PC session, or a new one.
    fn take_session(&self) -> Session {
        if let Some(session) = lock(&self.inner.sessions).pop() {
            return session;
        }
        let id = random_u64().unwrap_or_else(|| lock(&self.inner.rng).next_u64());
        Session { id: ClientId(id), next_seq: 1 }
    }

    /// HLC-2 with the reply's clock: every later timestamp of this client exceeds it, so a
    /// client always reads its own writes (REC-6). A reading more than `max_offset` ahead of
    /// our physical clock is still taken — it comes from an authenticated node of the cluster,
    /// and refusing it would break read-your-writes — but it means *our* clock is behind, so
    /// it is logged.
    pub(crate) fn observe(&self, remote: HlcTimestamp) {
        let mut hlc = lock(&self.inner.hlc);
        if let Err(e) = hlc.update(physical_now_ns(), remote) {
            warn!(error = %e, "a node's clock is far ahead of ours; check this machine's clock");
            let floor = remote.max(hlc.last());
            *hlc = Hlc::with_floor(self.inner.settings.max_offset_ns, floor);
        }
    }

    /// A uniformly random duration in `[base / 2, base]` (equal jitter).
    pub(crate) fn jitter(&self, base: Duration) -> Duration {
        let base_us = base.as_micros().min(u128::from(u64::MAX)) as u64;
        let half = base_us / 2;
        let us = lock(&self.inner.rng).range(half, base_us.saturating_add(1));
        Duration::from_micros(us)
    }

    fn new_txn_id(&self) -> TxnId {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            // No OS randomness: fall back to the jitter generator, seeded once from the OS or
            // the time. Ids stay unique per client; across clients they are less sure.
            let mut rng = lock(&self.inner.rng);
            bytes[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
            bytes[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        TxnId(u128::from_le_bytes(bytes))
    }
}

/// Keeps the read set within [`READ_SPANS_PER_TXN_MAX`] by covering neighbouring spans of a
/// group with one span. A wider span only makes validation stricter (more conflicts), never
/// weaker, so the commit stays serializable; and a span between two spans of one group lies
/// inside that group's range, so it still needs no other group.
fn fit_read_spans(per_group: &mut BTreeMap<GroupId, GroupWork>) {
    let total: usize = per_group.values().map(|w| w.read_spans.len()).sum();
    if total <= READ_SPANS_PER_TXN_MAX {
        return;
    }
    // Each group gets a share of the budget in proportion to its spans, at least one; the
    // budget leaves room for that rounding up, one span for each group.
    let budget = READ_SPANS_PER_TXN_MAX - GROUPS_PER_TXN_MAX;
    for work in per_group.values_mut() {
        let share = (budget * work.read_spans.len() / total).max(1);
        work.read_spans = coarsen(std::mem::take(&mut work.read_spans), share);
    }
}

/// Merges neighbouring spans (sorted, disjoint) pairwise until at most `target` remain.
fn coarsen(mut spans: Vec<decree_types::KeyRange>, target: usize) -> Vec<decree_types::KeyRange> {
    while spans.len() > target.max(1) {
        spans = spans
            .chunks(2)
            .map(|pair| {
                let first = &pair[0];
                let last = &pair[pair.len() - 1];
                decree_types::KeyRange { start: first.start.clone(), end: last.end.clone() }
            })
            .collect();
    }
    spans
}

/// How one commit request ended.
enum CommitResult {
    /// The group or coordinator answered with a decision.
    Decided(Result<CommitInfo, Error>),
    /// Refused before it could have taken effect.
    NotSent(Error),
    /// May have taken effect; outcome not learned.
    Unknown,
}

/// The client error for a refusal that retrying elsewhere does not fix.
fn error_from_reply(group: GroupId, error: ErrorResponse) -> Error {
    match error {
        ErrorResponse::KeyOutOfRange { key } => Error::KeyOutOfRange { key },
        ErrorResponse::ClockRejected { ahead_ns, max_offset_ns, .. } => {
            Error::ClockRejected { ahead_ns, max_offset_ns }
        }
        ErrorResponse::InvalidArgument { detail } => Error::InvalidArgument { detail },
        ErrorResponse::LimitExceeded(limit) => Error::LimitExceeded(limit),
        ErrorResponse::BelowGcThreshold { gc_threshold } => {
            Error::BelowGcThreshold { group, gc_threshold }
        }
        other @ (ErrorResponse::Malformed { .. }
        | ErrorResponse::UnsupportedVersion { .. }
        | ErrorResponse::TooLarge { .. }
        | ErrorResponse::NotLeader { .. }
        | ErrorResponse::UnknownGroup { .. }
        | ErrorResponse::Busy { .. }
        | ErrorResponse::Unavailable { .. }) => Error::protocol(other.to_string()),
    }
}

impl Client {
    /// Records a leader hint; true if it names a node worth trying at once.
    fn follow_hint(
        &self,
        group: GroupId,
        from: NodeId,
        hint: Option<NodeId>,
        term: Option<decree_types::Term>,
    ) -> bool {
        let mut routes = lock(&self.inner.routes);
        match hint {
            Some(leader) if leader != from => {
                routes.leader_hint(group, Some(leader), term);
                true
            }
            _ => {
                routes.forget_leader(group, from);
                false
            }
        }
    }
}

/// Locks a mutex, recovering the data if another thread panicked while holding it: every
/// critical section here leaves the data consistent before anything can panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `timeout` from now; a timeout too long to represent means "practically never" (34 years).
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + Duration::from_secs(1 << 30))
}

/// Sleeps for `wait`, but not past `deadline` (a `wait` from the network may be huge).
pub(crate) async fn sleep_at_most(wait: Duration, deadline: Instant) {
    let until = Instant::now().checked_add(wait).map_or(deadline, |t| t.min(deadline));
    tokio::time::sleep_until(until).await;
}

fn physical_now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn random_u64() -> Option<u64> {
    getrandom::u64().ok()
}

fn time_seed() -> u64 {
    physical_now_ns() ^ u64::from(std::process::id()).rotate_left(32)
}

async fn resolve_addr(addr: &str) -> Option<std::net::SocketAddr> {
    if let Ok(parsed) = addr.parse() {
        return Some(parsed);
    }
    tokio::net::lookup_host(addr).await.ok()?.next()
}
