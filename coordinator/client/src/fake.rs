//! An in-memory cluster behind the [`Link`] trait, for the client's unit tests.
//!
//! It answers the client's requests the way the protocol says the real groups do, with one
//! shared MVCC store: reads at `read_ts` with uncertainty restarts (§5.1, §5.3), 1PC commits
//! deduplicated by `txn_id` (OPC-1/2), 2PC commits recorded at "the coordinator" by `txn_id`
//! (C-1), `TxnStatus` answered from the record or by a presumed-abort tombstone (REC-4),
//! leaders (`NotLeader{hint}`), replicas (`UnknownGroup`) and ranges (`KeyOutOfRange`). Every
//! request is logged, and scripted [`Fault`]s lose requests or replies.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use decree_proto::admin::{GroupLeader, RangeMapReply};
use decree_proto::txn::{
    AbortReason, NoReason, OutcomeReply, Row, ScanRows, TxnOutcome, UncertaintyRestart, ValueReply,
    Write,
};
use decree_proto::{Envelope, ErrorResponse, Payload, Request, Response};
use decree_types::{GroupId, Hlc, HlcTimestamp, Key, KeyRange, NodeId, RangeMap, Term, TxnId};

use crate::link::{Link, LinkError, LinkFuture};

/// A key's committed versions (timestamp, value or tombstone), ascending.
pub type Versions = Vec<(HlcTimestamp, Option<Vec<u8>>)>;

/// What goes wrong with a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// The request is handled but the reply is lost (`MaybeDelivered`).
    LoseReply,
    /// The request is lost before it is handled (`MaybeDelivered`: the client cannot tell).
    LoseRequest,
    /// The node cannot be reached (`NotDelivered`).
    Unreachable,
    /// The node answers with this error instead of handling the request.
    Refuse(ErrorResponse),
    /// The node answers with this response instead of handling the request.
    Answer(Response),
}

/// A fault for requests of one kind (e.g. `"Request::CommitTxn"`), optionally at one node,
/// the next `times` times.
#[derive(Clone, Debug)]
pub struct Rule {
    pub kind: &'static str,
    pub node: Option<NodeId>,
    pub times: usize,
    pub fault: Fault,
    /// The rule stops applying once a request of this kind has been seen.
    pub until: Option<&'static str>,
}

/// Seeded random loss: each `CommitTxn`, `CommitLocal` or `TxnStatus` loses its request with
/// probability `lose_request_pct` %, else its reply with `lose_reply_pct` %.
#[derive(Debug)]
pub struct Chaos {
    pub rng: decree_types::DetRng,
    pub lose_request_pct: u64,
    pub lose_reply_pct: u64,
}

/// One group of the fake cluster.
#[derive(Clone, Debug)]
pub struct FakeGroup {
    pub replicas: Vec<NodeId>,
    pub leader: NodeId,
    pub term: Term,
    /// The leader the range map reply names (may be stale on purpose).
    pub advertised: Option<NodeId>,
}

/// One logged request.
#[derive(Clone, Debug)]
pub struct Logged {
    pub node: NodeId,
    pub group: GroupId,
    pub sender_clock: HlcTimestamp,
    pub request: Request,
}

#[derive(Debug)]
pub struct State {
    pub hlc: Hlc,
    /// How far the cluster's physical clock is ahead of the system clock.
    pub skew_ns: u64,
    pub version: u64,
    pub ranges: Vec<(KeyRange, GroupId)>,
    pub coordinator_group: GroupId,
    pub groups: BTreeMap<GroupId, FakeGroup>,
    /// Key -> versions (timestamp, value or tombstone), ascending.
    pub data: BTreeMap<Key, Versions>,
    /// 1PC results at the participants, by txn id.
    pub local_results: BTreeMap<TxnId, TxnOutcome>,
    /// Coordinator records and tombstones, by txn id.
    pub records: BTreeMap<TxnId, TxnOutcome>,
    /// `TxnStatus` answers `Pending` this many more times.
    pub status_pending: usize,
    pub rules: Vec<Rule>,
    /// Random loss of commit and status requests and replies, if set.
    pub chaos: Option<Chaos>,
    pub down: BTreeSet<NodeId>,
    pub log: Vec<Logged>,
}

/// The fake cluster. Clones share it.
#[derive(Clone, Debug)]
pub struct FakeCluster {
    pub state: Arc<Mutex<State>>,
}

impl FakeCluster {
    /// Two participant groups — g1 = ["", "m") on n11..n13, g2 = ["m", +inf) on n21..n23 —
    /// and coordinator group g100 on n31..n33; every leader is the first replica.
    pub fn two_groups() -> FakeCluster {
        let group = |ids: [u64; 3]| FakeGroup {
            replicas: ids.iter().copied().map(NodeId).collect(),
            leader: NodeId(ids[0]),
            term: Term(1),
            advertised: Some(NodeId(ids[0])),
        };
        let mut groups = BTreeMap::new();
        groups.insert(GroupId(1), group([11, 12, 13]));
        groups.insert(GroupId(2), group([21, 22, 23]));
        groups.insert(GroupId(100), group([31, 32, 33]));
        let state = State {
            hlc: Hlc::new(u64::MAX),
            skew_ns: 0,
            version: 1,
            ranges: vec![
                (KeyRange::new("", Some(Key::from("m"))), GroupId(1)),
                (KeyRange::from_start("m"), GroupId(2)),
            ],
            coordinator_group: GroupId(100),
            groups,
            data: BTreeMap::new(),
            local_results: BTreeMap::new(),
            records: BTreeMap::new(),
            status_pending: 0,
            rules: Vec::new(),
            chaos: None,
            down: BTreeSet::new(),
            log: Vec::new(),
        };
        FakeCluster { state: Arc::new(Mutex::new(state)) }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Adds a fault rule.
    pub fn rule(&self, kind: &'static str, node: Option<NodeId>, times: usize, fault: Fault) {
        self.lock().rules.push(Rule { kind, node, times, fault, until: None });
    }

    /// Adds a fault rule for every request of `kind` until one of kind `until` is seen.
    pub fn rule_until(&self, kind: &'static str, until: &'static str, fault: Fault) {
        let rule = Rule { kind, node: None, times: usize::MAX, fault, until: Some(until) };
        self.lock().rules.push(rule);
    }

    /// Stores a committed version directly.
    pub fn seed(&self, key: &str, value: &[u8], ts: HlcTimestamp) {
        let mut s = self.lock();
        let versions = s.data.entry(Key::from(key)).or_default();
        versions.push((ts, Some(value.to_vec())));
        versions.sort_by_key(|(t, _)| *t);
    }

    /// The newest committed value of `key`.
    pub fn latest(&self, key: &str) -> Option<Vec<u8>> {
        let s = self.lock();
        s.data.get(&Key::from(key)).and_then(|v| v.last()).and_then(|(_, v)| v.clone())
    }

    /// Requests of one kind, in order.
    pub fn sent(&self, kind: &str) -> Vec<Logged> {
        self.lock().log.iter().filter(|l| l.request.kind() == kind).cloned().collect()
    }

    /// Request kinds in order.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.lock().log.iter().map(|l| l.request.kind()).collect()
    }

    /// The cluster's physical time.
    pub fn physical_ns(skew_ns: u64) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        now.as_nanos() as u64 + skew_ns
    }
}

impl Link for FakeCluster {
    fn call(&self, node: NodeId, envelope: Envelope, _timeout: Duration) -> LinkFuture<'_> {
        let result = self.handle(node, envelope);
        Box::pin(async move {
            // Let other tasks run, as a network would.
            tokio::task::yield_now().await;
            result
        })
    }
}

impl FakeCluster {
    fn handle(&self, node: NodeId, envelope: Envelope) -> Result<Envelope, LinkError> {
        let mut s = self.lock();
        let Payload::Request { request_id, request } = envelope.payload else {
            panic!("the client sent a non-request payload");
        };
        s.log.push(Logged {
            node,
            group: envelope.group,
            sender_clock: envelope.sender_clock,
            request: request.clone(),
        });
        let pt = FakeCluster::physical_ns(s.skew_ns);
        s.hlc.update(pt, envelope.sender_clock).expect("fake clock accepts everything");
        for rule in &mut s.rules {
            if rule.until == Some(request.kind()) {
                rule.times = 0;
            }
        }
        let mut fault = None;
        if s.down.contains(&node) {
            fault = Some(Fault::Unreachable);
        } else if let Some(rule) = s
            .rules
            .iter_mut()
            .find(|r| r.times > 0 && r.kind == request.kind() && r.node.is_none_or(|n| n == node))
        {
            rule.times -= 1;
            fault = Some(rule.fault.clone());
        }
        let commitish = matches!(
            request,
            Request::CommitTxn(_) | Request::CommitLocal(_) | Request::TxnStatus(_)
        );
        if let (None, true, Some(chaos)) = (&fault, commitish, s.chaos.as_mut()) {
            if chaos.rng.chance(chaos.lose_request_pct, 100) {
                fault = Some(Fault::LoseRequest);
            } else if chaos.rng.chance(chaos.lose_reply_pct, 100) {
                fault = Some(Fault::LoseReply);
            }
        }
        let payload = match fault {
            Some(Fault::Unreachable) => {
                return Err(LinkError::NotDelivered { node, reason: "down".into() })
            }
            Some(Fault::LoseRequest) => {
                return Err(LinkError::MaybeDelivered { node, reason: "request lost".into() })
            }
            Some(Fault::Refuse(error)) => Payload::Error { in_reply_to: Some(request_id), error },
            Some(Fault::Answer(response)) => Payload::Response { request_id, response },
            Some(Fault::LoseReply) | None => {
                let payload = match s.serve(node, envelope.group, request) {
                    Ok(response) => Payload::Response { request_id, response },
                    Err(error) => Payload::Error { in_reply_to: Some(request_id), error },
                };
                if matches!(fault, Some(Fault::LoseReply)) {
                    return Err(LinkError::MaybeDelivered { node, reason: "reply lost".into() });
                }
                payload
            }
        };
        let pt = FakeCluster::physical_ns(s.skew_ns);
        let sender_clock = s.hlc.now(pt);
        Ok(Envelope { from: node, group: envelope.group, sender_clock, payload })
    }
}

impl State {
    fn serve(
        &mut self,
        node: NodeId,
        group: GroupId,
        request: Request,
    ) -> Result<Response, ErrorResponse> {
        if let Request::FetchRangeMap(_) = request {
            return Ok(Response::RangeMap(self.range_map()));
        }
        let Some(g) = self.groups.get(&group) else {
            return Err(ErrorResponse::UnknownGroup { group });
        };
        if !g.replicas.contains(&node) {
            return Err(ErrorResponse::UnknownGroup { group });
        }
        if g.leader != node {
            return Err(ErrorResponse::NotLeader { hint: Some(g.leader), term: g.term });
        }
        match request {
            Request::Get(get) => {
                self.check_keys(group, std::slice::from_ref(&get.key))?;
                if let Some(t) = self.uncertain(
                    &KeyRange::new(get.key.clone(), Some(get.key.successor())),
                    get.read_ts,
                    get.uncertainty_limit,
                ) {
                    return Ok(Response::UncertaintyRestart(UncertaintyRestart { new_read_ts: t }));
                }
                let (value, version_ts) = self.read(&get.key, get.read_ts);
                Ok(Response::Value(ValueReply { value, version_ts }))
            }
            Request::Scan(scan) => {
                self.check_span(group, &scan.span)?;
                if let Some(t) = self.uncertain(&scan.span, scan.read_ts, scan.uncertainty_limit) {
                    return Ok(Response::UncertaintyRestart(UncertaintyRestart { new_read_ts: t }));
                }
                let keys: Vec<Key> = self
                    .data
                    .range(scan.span.start.clone()..)
                    .map(|(k, _)| k.clone())
                    .take_while(|k| scan.span.contains(k))
                    .collect();
                let mut rows = Vec::new();
                let mut resume_from = None;
                for key in keys {
                    if let (Some(value), Some(version_ts)) = self.read(&key, scan.read_ts) {
                        if rows.len() == scan.limit as usize {
                            resume_from = Some(key);
                            break;
                        }
                        rows.push(Row { key, value, version_ts });
                    }
                }
                Ok(Response::ScanRows(ScanRows { rows, resume_from }))
            }
            Request::CommitLocal(c) => {
                let keys: Vec<Key> = c.writes.iter().map(|w| w.key.clone()).collect();
                self.check_keys(group, &keys)?;
                for span in &c.read_spans {
                    self.check_span(group, span)?;
                }
                if let Some(outcome) = self.local_results.get(&c.txn_id) {
                    return Ok(outcome_reply(c.txn_id, *outcome));
                }
                let outcome = self.try_commit(group, c.read_ts, &c.writes, &c.read_spans);
                self.local_results.insert(c.txn_id, outcome);
                Ok(outcome_reply(c.txn_id, outcome))
            }
            Request::CommitTxn(c) => {
                if let Some(outcome) = self.records.get(&c.txn_id) {
                    return Ok(outcome_reply(c.txn_id, *outcome));
                }
                // All groups validate before any writes (a vote each), then all commit at C.
                let mut outcome = None;
                for work in &c.per_group {
                    if let Some(reason) = self.conflict(c.read_ts, &work.writes, &work.read_spans) {
                        outcome = Some(TxnOutcome::Aborted {
                            reason: AbortReason::VotedNo { group: work.group, reason },
                            retryable: true,
                        });
                        break;
                    }
                }
                let outcome = outcome.unwrap_or_else(|| {
                    let commit_ts = self.hlc.now(FakeCluster::physical_ns(self.skew_ns));
                    for work in &c.per_group {
                        self.apply(commit_ts, &work.writes);
                    }
                    TxnOutcome::Committed { commit_ts }
                });
                self.records.insert(c.txn_id, outcome);
                Ok(outcome_reply(c.txn_id, outcome))
            }
            Request::TxnStatus(status) => {
                if self.status_pending > 0 {
                    self.status_pending -= 1;
                    return Ok(outcome_reply(status.txn_id, TxnOutcome::Pending));
                }
                // Presumed abort: an unknown transaction gets a tombstone (REC-4).
                let outcome = *self.records.entry(status.txn_id).or_insert(TxnOutcome::Aborted {
                    reason: AbortReason::PresumedAbort,
                    retryable: true,
                });
                Ok(outcome_reply(status.txn_id, outcome))
            }
            other => {
                Err(ErrorResponse::invalid_argument(format!("fake cannot serve {}", other.kind())))
            }
        }
    }

    fn range_map(&self) -> RangeMapReply {
        RangeMapReply {
            version: self.version,
            ranges: self.ranges.clone(),
            coordinator_group: self.coordinator_group,
            leaders: self
                .groups
                .iter()
                .map(|(id, g)| GroupLeader {
                    group: *id,
                    leader: g.advertised,
                    term: g.term,
                    replicas: g.replicas.clone(),
                })
                .collect(),
            nodes: vec![],
            coordinator_groups: self
                .groups
                .keys()
                .copied()
                .filter(|g| !self.ranges.iter().any(|(_, r)| r == g))
                .collect(),
        }
    }

    fn map(&self) -> RangeMap {
        RangeMap::new(self.ranges.clone()).expect("fake ranges are a valid map")
    }

    fn check_keys(&self, group: GroupId, keys: &[Key]) -> Result<(), ErrorResponse> {
        let map = self.map();
        match keys.iter().find(|k| map.group_for(k) != group) {
            Some(key) => Err(ErrorResponse::KeyOutOfRange { key: key.clone() }),
            None => Ok(()),
        }
    }

    fn check_span(&self, group: GroupId, span: &KeyRange) -> Result<(), ErrorResponse> {
        let parts = self.map().split_range(span);
        match parts.iter().find(|(_, g)| *g != group) {
            Some((part, _)) => Err(ErrorResponse::KeyOutOfRange { key: part.start.clone() }),
            None => Ok(()),
        }
    }

    fn read(&self, key: &Key, read_ts: HlcTimestamp) -> (Option<Vec<u8>>, Option<HlcTimestamp>) {
        let newest = self
            .data
            .get(key)
            .and_then(|versions| versions.iter().rev().find(|(ts, _)| *ts <= read_ts));
        match newest {
            Some((ts, value)) => (value.clone(), Some(*ts)),
            None => (None, None),
        }
    }

    /// The newest version in `(read_ts, limit]` of a key in `span`.
    fn uncertain(
        &self,
        span: &KeyRange,
        read_ts: HlcTimestamp,
        limit: Option<HlcTimestamp>,
    ) -> Option<HlcTimestamp> {
        let limit = limit?;
        self.data
            .range(span.start.clone()..)
            .take_while(|(k, _)| span.contains(k))
            .flat_map(|(_, versions)| versions.iter().map(|(ts, _)| *ts))
            .filter(|ts| *ts > read_ts && *ts <= limit)
            .max()
    }

    fn conflict(
        &self,
        read_ts: HlcTimestamp,
        writes: &[Write],
        spans: &[KeyRange],
    ) -> Option<NoReason> {
        let newer =
            |key: &Key| self.data.get(key).is_some_and(|v| v.iter().any(|(ts, _)| *ts > read_ts));
        if writes.iter().any(|w| newer(&w.key)) {
            return Some(NoReason::WriteTooOld);
        }
        let stale = spans.iter().any(|span| {
            self.data
                .range(span.start.clone()..)
                .take_while(|(k, _)| span.contains(k))
                .any(|(k, _)| newer(k))
        });
        stale.then_some(NoReason::StaleRead)
    }

    fn try_commit(
        &mut self,
        group: GroupId,
        read_ts: HlcTimestamp,
        writes: &[Write],
        spans: &[KeyRange],
    ) -> TxnOutcome {
        if let Some(reason) = self.conflict(read_ts, writes, spans) {
            return TxnOutcome::Aborted {
                reason: AbortReason::VotedNo { group, reason },
                retryable: true,
            };
        }
        let commit_ts = self.hlc.now(FakeCluster::physical_ns(self.skew_ns));
        self.apply(commit_ts, writes);
        TxnOutcome::Committed { commit_ts }
    }

    fn apply(&mut self, commit_ts: HlcTimestamp, writes: &[Write]) {
        for w in writes {
            self.data.entry(w.key.clone()).or_default().push((commit_ts, w.value.clone()));
        }
    }
}

fn outcome_reply(txn_id: TxnId, outcome: TxnOutcome) -> Response {
    Response::Outcome(OutcomeReply { txn_id, outcome })
}
