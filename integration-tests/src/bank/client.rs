//! The simulated bank clients: small deterministic state machines (the real `decree-client`
//! is async and cannot run inside the simulator). Each client does one thing at a time: a
//! transfer (read both balances at `read_ts`, then commit) or an audit (read every account
//! at one `read_ts`). A commit whose answer is lost or ambiguous is resolved before the client
//! decides anything: a 1PC commit by sending the very same `CommitLocal` again (OPC-2 answers
//! a known `(client_id, seq)` with its stored result), a 2PC commit with `TxnStatus`. A
//! transfer of unknown outcome is never run again.

use std::collections::BTreeMap;

use decree_client::bank::{decode_balance, encode_balance, Bank, Transfer};
use decree_coordinator::coordinator_for;
use decree_proto::txn::{
    CommitLocal, CommitTxn, Get, GroupWork, Isolation, OutcomeReply, Redirect, TxnMode, TxnOutcome,
    TxnStatus, UncertaintyRestart, ValueReply, Write,
};
use decree_proto::{ErrorResponse, Request, Response};
use decree_types::{
    ClientId, DetRng, GroupId, HlcTimestamp, Key, KeyRange, NodeId, RangeMap, TxnId,
};

use crate::check::Violation;
use crate::clock::WALL_EPOCH_NS;

/// A request gets no answer for this long: it is lost (resent, or resolved).
const REQUEST_TIMEOUT_NS: u64 = 1_000_000_000;
/// Wait before retrying after a redirect without a hint, `Busy` or an unavailable leader.
const RETRY_NS: u64 = 50_000_000;
/// The most a transfer moves.
const MAX_AMOUNT: i64 = 30;

/// What became of a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferOutcome {
    /// Not decided yet (commit sent, or being resolved).
    Unknown,
    /// Committed: its writes must be in every later audit.
    Committed,
    /// Aborted: it changed nothing.
    Aborted,
}

/// One transfer a client committed (or tried to).
#[derive(Clone, Debug)]
pub struct TransferRecord {
    /// The transaction.
    pub txn_id: TxnId,
    /// What it moves.
    pub transfer: Transfer,
    /// The accounts' keys.
    pub from: Key,
    /// See `from`.
    pub to: Key,
    /// What became of it.
    pub outcome: TransferOutcome,
    /// One participant group (1PC) or two (2PC).
    pub local: bool,
}

#[derive(Clone, Debug)]
enum Phase {
    Idle,
    /// Reading `keys` at `read_ts`; `transfer` is `None` for an audit.
    Reading {
        transfer: Option<(Transfer, Key, Key)>,
        read_ts: HlcTimestamp,
        keys: Vec<Key>,
        values: BTreeMap<Key, i64>,
    },
    /// The commit (or the same `CommitLocal` again) of `transfers[index]` is out.
    Committing {
        index: usize,
        group: GroupId,
        request: Request,
    },
    /// Asking the coordinator what became of `transfers[index]`.
    Resolving {
        index: usize,
        group: GroupId,
        status: TxnStatus,
    },
}

#[derive(Clone, Debug)]
struct Client {
    id: ClientId,
    phase: Phase,
    seq: u64,
    /// The request out: its tag, when it was sent, and not before when to send it again.
    out: Option<u64>,
    sent_at: u64,
    wait_until: u64,
}

/// Every simulated client.
#[derive(Debug)]
pub struct Clients {
    bank: Bank,
    ranges: RangeMap,
    coordinators: Vec<GroupId>,
    nodes: Vec<NodeId>,
    rng: DetRng,
    clock: HlcTimestamp,
    leaders: BTreeMap<GroupId, NodeId>,
    clients: Vec<Client>,
    next_tag: u64,
    /// Tag of each request out, and its client.
    tags: BTreeMap<u64, usize>,
    transfers: Vec<TransferRecord>,
    audits: usize,
    next_txn: u128,
}

impl Clients {
    /// The coordinator group that owns `txn_id`.
    fn coordinator_of(&self, txn_id: TxnId) -> GroupId {
        // Invariant: a bank run has at least one coordinator group (`run` takes `coordinator_groups.max(1)`).
        coordinator_for(txn_id, &self.coordinators).expect("a bank run has a coordinator group")
    }

    /// `n` clients of `bank`.
    pub fn new(
        n: usize,
        bank: Bank,
        ranges: RangeMap,
        coordinators: Vec<GroupId>,
        nodes: Vec<NodeId>,
        rng: DetRng,
    ) -> Self {
        let clients = (0..n)
            .map(|i| Client {
                id: ClientId(1000 + i as u64),
                phase: Phase::Idle,
                seq: 0,
                out: None,
                sent_at: 0,
                wait_until: 0,
            })
            .collect();
        Clients {
            bank,
            ranges,
            coordinators,
            nodes,
            rng,
            clock: HlcTimestamp::ZERO,
            leaders: BTreeMap::new(),
            clients,
            next_tag: 0,
            tags: BTreeMap::new(),
            transfers: Vec::new(),
            audits: 0,
            next_txn: 1,
        }
    }

    /// The clients' HLC reading (the latest any answer carried).
    pub fn clock(&self) -> HlcTimestamp {
        self.clock
    }

    /// Transfers with `outcome`.
    pub fn count(&self, outcome: TransferOutcome) -> usize {
        self.transfers.iter().filter(|t| t.outcome == outcome).count()
    }

    /// Audits checked.
    pub fn audits(&self) -> usize {
        self.audits
    }

    /// Every transfer.
    pub fn transfers(&self) -> &[TransferRecord] {
        &self.transfers
    }

    /// The bank.
    pub fn bank(&self) -> &Bank {
        &self.bank
    }

    /// Is every transfer's outcome known and every client idle?
    pub fn all_resolved(&self) -> bool {
        self.transfers.iter().all(|t| t.outcome != TransferOutcome::Unknown)
            && self.clients.iter().all(|c| matches!(c.phase, Phase::Idle))
    }

    /// What is still unresolved, for a violation's detail.
    pub fn unresolved_detail(&self) -> String {
        let unknown: Vec<String> = self
            .transfers
            .iter()
            .filter(|t| t.outcome == TransferOutcome::Unknown)
            .map(|t| format!("{}", t.txn_id))
            .collect();
        let busy: Vec<String> = self
            .clients
            .iter()
            .filter(|c| !matches!(c.phase, Phase::Idle))
            .map(|c| format!("{}: {:?}", c.id, c.phase))
            .collect();
        format!("unknown outcomes {unknown:?}; busy clients {busy:?}")
    }

    /// A node went down: requests out to it are lost (their timeout handles them).
    pub fn node_down(&mut self, node: NodeId) {
        self.leaders.retain(|_, n| *n != node);
    }

    /// The request `tag` could not be sent (the node is down).
    pub fn unreachable(&mut self, tag: u64) {
        if let Some(c) = self.tags.remove(&tag) {
            let client = &mut self.clients[c];
            client.out = None;
            client.wait_until = 0;
        }
    }

    fn wall_now(now_ns: u64) -> HlcTimestamp {
        HlcTimestamp::new(WALL_EPOCH_NS + now_ns, 0)
    }

    fn node_for(&mut self, group: GroupId) -> NodeId {
        match self.leaders.get(&group) {
            Some(n) => *n,
            None => self.nodes[self.rng.range(0, self.nodes.len() as u64) as usize],
        }
    }

    /// One round: every idle client starts something (unless `quiesce`), every client whose
    /// request is due (re)sends it. Returns the requests to send: `(node, tag, group, request)`.
    pub fn step(
        &mut self,
        now_ns: u64,
        quiesce: bool,
    ) -> Result<Vec<(NodeId, u64, GroupId, Request)>, Violation> {
        let mut sends = Vec::new();
        for c in 0..self.clients.len() {
            if let Some(tag) = self.clients[c].out {
                if now_ns < self.clients[c].sent_at + REQUEST_TIMEOUT_NS {
                    continue;
                }
                // Lost: forget it; a commit's fate is then resolved, never guessed.
                self.tags.remove(&tag);
                self.clients[c].out = None;
                self.on_lost(c);
            }
            if now_ns < self.clients[c].wait_until {
                continue;
            }
            if matches!(self.clients[c].phase, Phase::Idle) {
                if quiesce {
                    continue;
                }
                self.start(c, now_ns);
            }
            if let Some((group, request)) = self.next_request(c) {
                let node = self.node_for(group);
                self.next_tag += 1;
                let tag = self.next_tag;
                self.tags.insert(tag, c);
                let client = &mut self.clients[c];
                client.out = Some(tag);
                client.sent_at = now_ns;
                sends.push((node, tag, group, request));
            }
        }
        Ok(sends)
    }

    fn start(&mut self, c: usize, now_ns: u64) {
        let read_ts = Self::wall_now(now_ns).max(self.clock);
        let phase = if self.rng.chance(1, 6) {
            Phase::Reading {
                transfer: None,
                read_ts,
                keys: self.bank.accounts().to_vec(),
                values: BTreeMap::new(),
            }
        } else {
            let transfer = self.bank.plan_transfer(&mut self.rng, MAX_AMOUNT);
            let key =
                |name: &str| self.bank.accounts().iter().find(|k| k.escaped() == name).cloned();
            let (Some(from), Some(to)) = (key(&transfer.from), key(&transfer.to)) else {
                return;
            };
            Phase::Reading {
                transfer: Some((transfer, from.clone(), to.clone())),
                read_ts,
                keys: vec![from, to],
                values: BTreeMap::new(),
            }
        };
        self.clients[c].phase = phase;
    }

    /// The request client `c` needs answered next, and its group.
    fn next_request(&mut self, c: usize) -> Option<(GroupId, Request)> {
        match &self.clients[c].phase {
            Phase::Idle => None,
            Phase::Reading { read_ts, keys, values, .. } => {
                let key = keys.iter().find(|k| !values.contains_key(*k))?.clone();
                let group = self.ranges.group_for(&key);
                let get = Get { key, read_ts: *read_ts, uncertainty_limit: None };
                Some((group, Request::Get(get)))
            }
            Phase::Committing { group, request, .. } => Some((*group, request.clone())),
            Phase::Resolving { group, status, .. } => Some((*group, Request::TxnStatus(*status))),
        }
    }

    /// The request out of client `c` got no answer in time.
    fn on_lost(&mut self, c: usize) {
        if let Phase::Committing { index, request: Request::CommitTxn(commit), .. } =
            &self.clients[c].phase
        {
            let status = TxnStatus { txn_id: commit.txn_id, read_ts: commit.read_ts };
            let group = self.coordinator_of(commit.txn_id);
            self.clients[c].phase = Phase::Resolving { index: *index, group, status };
        }
        // Reads, a CommitLocal (answered from OPC-2's session table when sent again) and a
        // TxnStatus are simply sent again.
    }

    /// An answer (or a refusal) to request `tag`.
    pub fn on_reply(
        &mut self,
        now_ns: u64,
        tag: u64,
        clock: HlcTimestamp,
        reply: Result<Result<Response, ErrorResponse>, ErrorResponse>,
    ) -> Result<(), Violation> {
        self.clock = self.clock.max(clock);
        let Some(c) = self.tags.remove(&tag) else { return Ok(()) };
        if self.clients[c].out != Some(tag) {
            return Ok(());
        }
        self.clients[c].out = None;
        let reply = match reply {
            Ok(r) => r,
            Err(e) => Err(e),
        };
        match reply {
            Err(ErrorResponse::NotLeader { hint, .. })
            | Ok(Response::Redirect(Redirect { leader: hint })) => {
                let group = self.group_of(c);
                match (group, hint) {
                    (Some(g), Some(n)) => {
                        self.leaders.insert(g, n);
                    }
                    (Some(g), None) => {
                        self.leaders.remove(&g);
                        self.clients[c].wait_until = now_ns + RETRY_NS;
                    }
                    _ => {}
                }
                Ok(())
            }
            Ok(response) => self.on_response(c, now_ns, response),
            Err(e) => self.on_error(c, now_ns, e),
        }
    }

    fn group_of(&self, c: usize) -> Option<GroupId> {
        match &self.clients[c].phase {
            Phase::Idle => None,
            Phase::Reading { keys, values, .. } => {
                keys.iter().find(|k| !values.contains_key(*k)).map(|k| self.ranges.group_for(k))
            }
            Phase::Committing { group, .. } | Phase::Resolving { group, .. } => Some(*group),
        }
    }

    fn on_error(&mut self, c: usize, now_ns: u64, e: ErrorResponse) -> Result<(), Violation> {
        let phase = self.clients[c].phase.clone();
        match phase {
            Phase::Committing { index, request: Request::CommitTxn(commit), .. } => {
                // The coordinator refused or lost track: resolve, never guess.
                let status = TxnStatus { txn_id: commit.txn_id, read_ts: commit.read_ts };
                let group = self.coordinator_of(commit.txn_id);
                self.clients[c].phase = Phase::Resolving { index, group, status };
            }
            Phase::Committing { index, request: Request::CommitLocal(_), .. } => {
                if let ErrorResponse::InvalidArgument { .. } = e {
                    // A refusal of the request itself: nothing was written.
                    self.transfers[index].outcome = TransferOutcome::Aborted;
                    self.clients[c].phase = Phase::Idle;
                }
            }
            Phase::Reading { .. } if matches!(e, ErrorResponse::BelowGcThreshold { .. }) => {
                self.clients[c].phase = Phase::Idle;
            }
            _ => {}
        }
        self.clients[c].wait_until = now_ns + RETRY_NS;
        Ok(())
    }

    fn on_response(&mut self, c: usize, now_ns: u64, response: Response) -> Result<(), Violation> {
        let phase = std::mem::replace(&mut self.clients[c].phase, Phase::Idle);
        match (phase, response) {
            (
                Phase::Reading { transfer, read_ts, keys, mut values },
                Response::Value(ValueReply { value, .. }),
            ) => {
                let Some(key) = keys.iter().find(|k| !values.contains_key(*k)).cloned() else {
                    return Ok(());
                };
                let balance = match value {
                    None => self.bank.initial_balance(),
                    Some(bytes) => decode_balance(&bytes).unwrap_or(i64::MIN),
                };
                values.insert(key, balance);
                if values.len() < keys.len() {
                    self.clients[c].phase = Phase::Reading { transfer, read_ts, keys, values };
                    return Ok(());
                }
                match transfer {
                    None => {
                        self.audits += 1;
                        let named = values.iter().map(|(k, v)| (k.escaped(), Some(*v))).collect();
                        crate::check::bank_conservation::check(&self.bank, read_ts, &named)
                    }
                    Some((transfer, from, to)) => {
                        self.commit(c, transfer, from, to, read_ts, &values);
                        Ok(())
                    }
                }
            }
            (Phase::Reading { .. }, Response::UncertaintyRestart(UncertaintyRestart { .. })) => {
                // Start over at a later read_ts (the phase is Idle now).
                self.clients[c].wait_until = now_ns;
                Ok(())
            }
            (
                Phase::Committing { index, group, request },
                Response::Outcome(OutcomeReply { outcome, .. }),
            ) => {
                let local = matches!(request, Request::CommitLocal(_));
                self.on_outcome(c, index, group, request, outcome, local, now_ns);
                Ok(())
            }
            (
                Phase::Resolving { index, group, status },
                Response::Outcome(OutcomeReply { outcome, .. }),
            ) => {
                match outcome {
                    TxnOutcome::Committed { .. } => {
                        self.transfers[index].outcome = TransferOutcome::Committed
                    }
                    TxnOutcome::Aborted { .. } => {
                        self.transfers[index].outcome = TransferOutcome::Aborted
                    }
                    TxnOutcome::Ambiguous | TxnOutcome::Pending | TxnOutcome::Expired => {
                        self.clients[c].phase = Phase::Resolving { index, group, status };
                        self.clients[c].wait_until = now_ns + RETRY_NS;
                    }
                }
                Ok(())
            }
            (phase, other) => {
                // An answer of another kind: keep going, send again later.
                self.clients[c].phase = phase;
                self.clients[c].wait_until = now_ns + RETRY_NS;
                let _ = other;
                Ok(())
            }
        }
    }

    #[allow(clippy::too_many_arguments, reason = "one commit's answer, each part named")]
    fn on_outcome(
        &mut self,
        c: usize,
        index: usize,
        group: GroupId,
        request: Request,
        outcome: TxnOutcome,
        local: bool,
        now_ns: u64,
    ) {
        match outcome {
            TxnOutcome::Committed { .. } => {
                self.transfers[index].outcome = TransferOutcome::Committed
            }
            TxnOutcome::Aborted { .. } => self.transfers[index].outcome = TransferOutcome::Aborted,
            TxnOutcome::Ambiguous | TxnOutcome::Pending | TxnOutcome::Expired => {
                self.clients[c].wait_until = now_ns + RETRY_NS;
                self.clients[c].phase = if local {
                    // The same CommitLocal again: OPC-2 answers it from the session table.
                    Phase::Committing { index, group, request }
                } else {
                    let txn_id = self.transfers[index].txn_id;
                    let Request::CommitTxn(commit) = &request else { return };
                    let status = TxnStatus { txn_id, read_ts: commit.read_ts };
                    Phase::Resolving { index, group, status }
                };
            }
        }
    }

    fn commit(
        &mut self,
        c: usize,
        transfer: Transfer,
        from: Key,
        to: Key,
        read_ts: HlcTimestamp,
        values: &BTreeMap<Key, i64>,
    ) {
        let (Some(&a), Some(&b)) = (values.get(&from), values.get(&to)) else { return };
        if a < transfer.amount {
            return; // insufficient funds: nothing to do
        }
        let txn_id = TxnId(self.next_txn);
        self.next_txn += 1;
        let writes_of = |key: &Key, balance: i64| Write {
            key: key.clone(),
            value: Some(encode_balance(balance)),
        };
        let span = |key: &Key| KeyRange::bounded(key.clone(), key.successor());
        let (g_from, g_to) = (self.ranges.group_for(&from), self.ranges.group_for(&to));
        let local = g_from == g_to;
        let (group, request) = if local {
            let client = &mut self.clients[c];
            client.seq += 1;
            let request = Request::CommitLocal(CommitLocal {
                txn_id,
                client_id: client.id,
                seq: client.seq,
                read_ts,
                writes: vec![
                    writes_of(&from, a - transfer.amount),
                    writes_of(&to, b + transfer.amount),
                ],
                read_spans: vec![span(&from), span(&to)],
                isolation: Isolation::Serializable,
            });
            (g_from, request)
        } else {
            let per_group = vec![
                GroupWork {
                    group: g_from,
                    writes: vec![writes_of(&from, a - transfer.amount)],
                    read_spans: vec![span(&from)],
                },
                GroupWork {
                    group: g_to,
                    writes: vec![writes_of(&to, b + transfer.amount)],
                    read_spans: vec![span(&to)],
                },
            ];
            let mode = TxnMode {
                isolation: Isolation::Serializable,
                commit_wait: false,
                parallel_commit: false,
            };
            let request = Request::CommitTxn(CommitTxn { txn_id, read_ts, per_group, mode });
            (self.coordinator_of(txn_id), request)
        };
        self.transfers.push(TransferRecord {
            txn_id,
            transfer,
            from,
            to,
            outcome: TransferOutcome::Unknown,
            local,
        });
        let index = self.transfers.len() - 1;
        self.clients[c].phase = Phase::Committing { index, group, request };
    }
}
