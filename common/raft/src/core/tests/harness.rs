//! A small in-memory cluster of cores with a manually delivered network, used by the golden
//! interaction scripts, the paper-section tests and the randomized test.
//!
//! Each node has a memory "disk" (hard state, snapshot, entries) updated from its `Ready`s in
//! the driver order of `ready.rs`, and a state machine that records the entries it applied.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use decree_types::{limits, DetRng, LogIndex, NodeId, Term};

use crate::core::{RaftConfig, RaftCore, Restored, Role};
use crate::msg::{Entry, EntryPayload, HardState, Message, SnapshotMeta};
use crate::ready::{ReadState, Ready, SyncToken};

pub(crate) const MS: u64 = 1_000_000;

/// What survives a crash.
#[derive(Clone, Debug, Default)]
pub(crate) struct Storage {
    pub(crate) hard_state: HardState,
    pub(crate) snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    pub(crate) entries: Vec<Entry>,
}

impl Storage {
    fn persist(&mut self, ready: &Ready) {
        if let Some(hs) = ready.hard_state {
            self.hard_state = hs;
        }
        if let Some((meta, data)) = &ready.snapshot {
            self.snapshot = Some((meta.clone(), data.clone()));
            self.entries.clear();
        }
        if let Some(first) = ready.entries.first() {
            let keep = self.entries.partition_point(|e| e.index < first.index);
            self.entries.truncate(keep);
            self.entries.extend(ready.entries.iter().cloned());
        }
    }
}

/// One simulated process.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) core: Option<RaftCore>,
    pub(crate) storage: Storage,
    /// The state machine: every entry applied, in order (rebuilt from snapshots).
    pub(crate) applied: Vec<Entry>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) failed_reads: Vec<u64>,
    pub(crate) restarts: u64,
}

impl Node {
    pub(crate) fn core(&self) -> &RaftCore {
        self.core.as_ref().expect("node is up")
    }

    pub(crate) fn core_mut(&mut self) -> &mut RaftCore {
        self.core.as_mut().expect("node is up")
    }
}

/// A message on the wire.
#[derive(Clone, Debug)]
pub(crate) struct InFlight {
    pub(crate) from: NodeId,
    pub(crate) to: NodeId,
    pub(crate) msg: Message,
}

#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) config: RaftConfig,
    pub(crate) nodes: BTreeMap<NodeId, Node>,
    pub(crate) voters: Vec<NodeId>,
    pub(crate) net: Vec<InFlight>,
    /// Links that drop every message (both directions are listed).
    pub(crate) cut: BTreeSet<(NodeId, NodeId)>,
    pub(crate) now_ns: u64,
    /// Every (index -> entry) any node applied, for INV-R5.
    pub(crate) applied_anywhere: BTreeMap<LogIndex, Entry>,
    /// For each applied index, the lowest term of a replica when it applied it: the entry was
    /// committed in that term or earlier, so every leader of a later term must hold it.
    pub(crate) committed_by_term: BTreeMap<LogIndex, Term>,
    /// Leaders seen per term, for INV-R1.
    pub(crate) leaders: BTreeMap<Term, BTreeSet<NodeId>>,
    /// Print each message as it is delivered.
    pub(crate) trace_delivery: bool,
}

pub(crate) fn test_config() -> RaftConfig {
    RaftConfig {
        heartbeat_interval: Duration::from_millis(100),
        election_timeout_min: Duration::from_millis(1000),
        election_timeout_max: Duration::from_millis(2000),
        ..RaftConfig::default()
    }
}

impl Cluster {
    pub(crate) fn new(n: u64, config: RaftConfig) -> Cluster {
        let voters: Vec<NodeId> = (1..=n).map(NodeId).collect();
        let mut c = Cluster {
            config,
            nodes: BTreeMap::new(),
            voters: voters.clone(),
            net: Vec::new(),
            cut: BTreeSet::new(),
            now_ns: 0,
            applied_anywhere: BTreeMap::new(),
            committed_by_term: BTreeMap::new(),
            leaders: BTreeMap::new(),
            trace_delivery: false,
        };
        for id in voters {
            let node = Node {
                core: None,
                storage: Storage::default(),
                applied: Vec::new(),
                read_states: Vec::new(),
                failed_reads: Vec::new(),
                restarts: 0,
            };
            c.nodes.insert(id, node);
            c.start(id);
        }
        c
    }

    fn start(&mut self, id: NodeId) {
        let now = self.now_ns;
        let config = self.config.clone();
        let voters = self.voters.clone();
        let node = self.nodes.get_mut(&id).expect("known node");
        let applied_index =
            node.storage.snapshot.as_ref().map_or(LogIndex(0), |(m, _)| m.last_index);
        node.applied = match &node.storage.snapshot {
            Some((_, data)) => decode_state(data),
            None => Vec::new(),
        };
        let restored = Restored {
            hard_state: node.storage.hard_state,
            snapshot: node.storage.snapshot.clone(),
            entries: node.storage.entries.clone(),
            applied: applied_index,
        };
        let rng = DetRng::new(id.0 * 1000 + node.restarts);
        let core = RaftCore::new(config, id, voters, restored, rng, now)
            .expect("restore from own storage");
        node.core = Some(core);
    }

    pub(crate) fn node(&self, id: u64) -> &Node {
        &self.nodes[&NodeId(id)]
    }

    pub(crate) fn core(&self, id: u64) -> &RaftCore {
        self.node(id).core()
    }

    pub(crate) fn core_mut(&mut self, id: u64) -> &mut RaftCore {
        self.nodes.get_mut(&NodeId(id)).expect("known node").core_mut()
    }

    pub(crate) fn is_up(&self, id: NodeId) -> bool {
        self.nodes[&id].core.is_some()
    }

    /// Crash: the core and everything in memory is lost; the storage keeps what was persisted.
    pub(crate) fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.core = None;
        self.net.retain(|m| m.to != id);
    }

    pub(crate) fn restart(&mut self, id: NodeId) {
        self.crash(id);
        self.nodes.get_mut(&id).expect("known node").restarts += 1;
        self.start(id);
    }

    /// The application snapshots `id`'s state at its applied index; the driver stores the
    /// snapshot and drops the log it covers.
    pub(crate) fn snapshot(
        &mut self,
        id: NodeId,
    ) -> Result<SnapshotMeta, crate::core::SnapshotError> {
        let node = self.nodes.get_mut(&id).expect("known node");
        let data = encode_state(&node.applied);
        let applied = node.core().applied();
        let meta = node.core_mut().snapshot_created(applied, data.clone())?;
        node.storage.entries.retain(|e| e.index > meta.last_index);
        node.storage.snapshot = Some((meta.clone(), data));
        Ok(meta)
    }

    /// Crash in the middle of a Ready: the plain messages left, nothing was persisted, the
    /// messages that wait for the fsync never leave (RAFT-1).
    pub(crate) fn crash_before_sync(&mut self, id: NodeId) {
        let Some(core) = self.nodes.get_mut(&id).and_then(|n| n.core.as_mut()) else { return };
        let ready = core.ready();
        for (to, msg) in ready.messages {
            self.net.push(InFlight { from: id, to, msg });
        }
        self.crash(id);
    }

    /// Records every current leader; panics if a term has two (INV-R1).
    pub(crate) fn check_election_safety(&mut self) {
        for (id, node) in &self.nodes {
            if let Some(core) = node.core.as_ref().filter(|c| c.role() == Role::Leader) {
                let leaders = self.leaders.entry(core.term()).or_default();
                leaders.insert(*id);
                assert!(
                    leaders.len() <= 1,
                    "INV-R1: two leaders in term {}: {leaders:?}",
                    core.term()
                );
            }
        }
    }

    /// INV-R3 (Log Matching): if two logs hold an entry with the same index and term, they
    /// are identical up to it. INV-R4 (Leader Completeness): every entry any replica applied is
    /// in the log of every leader of a later term (unless compacted into its snapshot).
    pub(crate) fn check_log_invariants(&self) {
        let up: Vec<&RaftCore> = self.nodes.values().filter_map(|n| n.core.as_ref()).collect();
        for (i, a) in up.iter().enumerate() {
            for b in &up[i + 1..] {
                let common = a
                    .entries()
                    .filter(|e| b.term_at(e.index) == Some(e.term))
                    .map(|e| e.index)
                    .max();
                if let Some(upto) = common {
                    for e in a.entries().filter(|e| e.index <= upto) {
                        if let Some(t) = b.term_at(e.index) {
                            assert_eq!(
                                t,
                                e.term,
                                "INV-R3: {} and {} differ at {}",
                                a.id(),
                                b.id(),
                                e.index
                            );
                        }
                    }
                }
            }
            if a.role() == Role::Leader {
                for (index, applied) in self.applied_anywhere.range(a.snapshot_index().next()..) {
                    if self.committed_by_term[index] >= a.term() {
                        continue;
                    }
                    let held = a.entries().find(|e| e.index == *index);
                    assert_eq!(
                        held,
                        Some(applied),
                        "INV-R4: leader {} lacks applied entry {index}",
                        a.id()
                    );
                }
            }
        }
    }

    pub(crate) fn isolate(&mut self, id: NodeId) {
        for &other in &self.voters {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    /// Reconnects every link; messages sent over a cut link while it was cut are lost.
    pub(crate) fn heal(&mut self) {
        let cut = std::mem::take(&mut self.cut);
        self.net.retain(|m| !cut.contains(&(m.from, m.to)));
    }

    /// Takes a Ready from `id` and processes it in the driver order; returns its rendering.
    pub(crate) fn process_ready(&mut self, id: NodeId) -> String {
        let node = self.nodes.get_mut(&id).expect("known node");
        let Some(core) = node.core.as_mut() else { return String::new() };
        let ready = core.ready();
        let text = render_ready(&ready);
        // 1. send messages; 2-3. persist and "fsync"; 4. release persisted messages.
        for (to, msg) in &ready.messages {
            self.net.push(InFlight { from: id, to: *to, msg: msg.clone() });
        }
        node.storage.persist(&ready);
        let token = SyncToken::after_fsync(crate::ready::WalPosition(0));
        let mark = ready.persist_mark();
        let Ready {
            persisted_messages,
            snapshot,
            committed_entries,
            read_states,
            failed_reads,
            ..
        } = ready;
        for (to, msg) in persisted_messages.release(&token) {
            self.net.push(InFlight { from: id, to, msg });
        }
        let core = node.core.as_mut().expect("node is up");
        if let Some((index, term)) = mark {
            core.on_persisted(index, term);
        }
        // 5. install the snapshot, apply, serve reads.
        if let Some((_, data)) = snapshot {
            node.applied = decode_state(&data);
        }
        let mut last_applied = None;
        for entry in committed_entries {
            let expected = node.applied.last().map_or(LogIndex(1), |e| e.index.next());
            assert_eq!(entry.index, expected, "{id} applies in order");
            if let Some(other) = self.applied_anywhere.get(&entry.index) {
                // INV-R5: no two replicas apply different entries at one index.
                assert_eq!(other, &entry, "INV-R5 violated at {} by {id}", entry.index);
            } else {
                self.applied_anywhere.insert(entry.index, entry.clone());
            }
            let term = core.term();
            self.committed_by_term
                .entry(entry.index)
                .and_modify(|t| *t = (*t).min(term))
                .or_insert(term);
            last_applied = Some(entry.index);
            node.applied.push(entry);
        }
        if let Some(index) = last_applied {
            core.on_applied(index);
        }
        node.read_states.extend(read_states);
        node.failed_reads.extend(failed_reads);
        text
    }

    /// Delivers one message; returns a line describing a drop or an ignored message.
    pub(crate) fn deliver(&mut self, m: InFlight) -> String {
        let mut out = String::new();
        if let Message::AppendEntries { entries, .. } = &m.msg {
            // The wire refuses longer appends: a leader must never build one.
            let max = self.config.max_append_entries.min(limits::RAFT_ENTRIES_PER_APPEND_MAX);
            assert!(entries.len() <= max, "an append of {} entries (max {max})", entries.len());
        }
        if self.trace_delivery {
            let _ = writeln!(out, "  {}->{} {}", m.from.0, m.to.0, render_msg(&m.msg));
        }
        if self.cut.contains(&(m.from, m.to)) {
            let _ = writeln!(out, "  dropped: {}->{} {}", m.from.0, m.to.0, render_msg(&m.msg));
            return out;
        }
        let now = self.now_ns;
        let Some(core) = self.nodes.get_mut(&m.to).and_then(|n| n.core.as_mut()) else {
            return out;
        };
        if let Err(reason) = core.step(now, m.from, m.msg.clone()) {
            let _ = writeln!(
                out,
                "  {} ignored {} from {}: {reason}",
                m.to.0,
                msg_name(&m.msg),
                m.from.0
            );
        }
        out
    }

    /// Delivers every in-flight message addressed to one of `to` (all if `None`).
    pub(crate) fn deliver_all(&mut self, to: Option<&BTreeSet<NodeId>>) -> String {
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.net)
            .into_iter()
            .partition(|m| to.is_none_or(|s| s.contains(&m.to)));
        self.net = later;
        let mut out = String::new();
        for m in now {
            out.push_str(&self.deliver(m));
        }
        out
    }

    /// Processes Readies and delivers messages among `ids` until nothing moves.
    pub(crate) fn stabilize(&mut self, ids: Option<&BTreeSet<NodeId>>) -> String {
        let mut out = String::new();
        loop {
            let mut moved = false;
            let targets: Vec<NodeId> = self
                .nodes
                .keys()
                .copied()
                .filter(|id| ids.is_none_or(|s| s.contains(id)))
                .collect();
            for id in &targets {
                if self.nodes[id].core.as_ref().is_some_and(|c| c.has_ready()) {
                    let text = self.process_ready(*id);
                    let _ = writeln!(out, "> {} ready", id.0);
                    out.push_str(&text);
                    moved = true;
                }
            }
            if self.net.iter().any(|m| ids.is_none_or(|s| s.contains(&m.to))) {
                let text = self.deliver_all(ids);
                if !text.is_empty() {
                    out.push_str("> network\n");
                    out.push_str(&text);
                }
                moved = true;
            }
            if !moved {
                return out;
            }
        }
    }

    /// Moves time to `id`'s next deadline (if later) and ticks it.
    pub(crate) fn fire(&mut self, id: NodeId) {
        let deadline = self.nodes[&id].core().next_deadline_ns();
        self.now_ns = self.now_ns.max(deadline);
        let now = self.now_ns;
        self.nodes.get_mut(&id).expect("known node").core_mut().tick(now);
    }

    /// Lets `ms` milliseconds pass in 10 ms steps, ticking every node and stabilizing the
    /// network after each step (output discarded).
    pub(crate) fn run_for(&mut self, ms: u64) {
        for _ in 0..ms / 10 {
            self.now_ns += 10 * MS;
            self.tick_all();
            self.stabilize(None);
        }
    }

    pub(crate) fn tick_all(&mut self) {
        let now = self.now_ns;
        for node in self.nodes.values_mut() {
            if let Some(core) = node.core.as_mut() {
                core.tick(now);
            }
        }
    }

    pub(crate) fn leader(&self) -> Option<NodeId> {
        let leaders: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.core.as_ref().is_some_and(|c| c.role() == Role::Leader))
            .map(|(id, _)| *id)
            .collect();
        leaders.iter().copied().max_by_key(|id| self.nodes[id].core().term())
    }

    /// Elects `id` by campaigning and stabilizing.
    pub(crate) fn elect(&mut self, id: u64) {
        let now = self.now_ns;
        self.core_mut(id).campaign(now);
        self.stabilize(None);
        assert_eq!(self.core(id).role(), Role::Leader, "{id} won");
    }

    pub(crate) fn propose(&mut self, id: u64, data: &str) -> LogIndex {
        let now = self.now_ns;
        self.core_mut(id).propose(now, data.as_bytes().to_vec()).expect("leader accepts")
    }

    pub(crate) fn render_state(&self) -> String {
        let mut out = String::new();
        for (id, node) in &self.nodes {
            match &node.core {
                None => {
                    let _ = writeln!(out, "{}: down", id.0);
                }
                Some(c) => {
                    let leader = c.leader().map_or("-".to_string(), |l| l.0.to_string());
                    let _ = writeln!(
                        out,
                        "{}: {:?} term={} leader={} vote={} last={} commit={} applied={}",
                        id.0,
                        c.role(),
                        c.term().0,
                        leader,
                        c.vote().map_or("-".to_string(), |v| v.0.to_string()),
                        render_pos(c.last_term(), c.last_index()),
                        c.commit_index().0,
                        c.applied().0,
                    );
                }
            }
        }
        out
    }

    pub(crate) fn render_log(&self, id: NodeId) -> String {
        let c = self.nodes[&id].core();
        let mut out = String::new();
        if c.snapshot_index() > LogIndex(0) {
            let term = c.term_at(c.snapshot_index()).unwrap_or_default();
            let _ = writeln!(out, "snapshot {}", render_pos(term, c.snapshot_index()));
        }
        let entries: Vec<String> = c.entries().map(render_entry).collect();
        if entries.is_empty() {
            let _ = writeln!(out, "(empty)");
        } else {
            let _ = writeln!(out, "{}", entries.join(" "));
        }
        out
    }
}

/// Snapshot bytes of the harness state machine: the applied entries.
pub(crate) fn encode_state(applied: &[Entry]) -> Vec<u8> {
    postcard::to_allocvec(applied).expect("entries encode")
}

fn decode_state(data: &[u8]) -> Vec<Entry> {
    postcard::from_bytes(data).expect("own snapshot decodes")
}

fn render_pos(term: Term, index: LogIndex) -> String {
    format!("{}/{}", term.0, index.0)
}

pub(crate) fn render_entry(e: &Entry) -> String {
    match &e.payload {
        EntryPayload::Noop => format!("{} noop", render_pos(e.term, e.index)),
        EntryPayload::Command(d) => {
            format!("{} {:?}", render_pos(e.term, e.index), String::from_utf8_lossy(d))
        }
    }
}

fn render_entries(entries: &[Entry]) -> String {
    entries.iter().map(render_entry).collect::<Vec<_>>().join(", ")
}

pub(crate) fn msg_name(m: &Message) -> &'static str {
    match m {
        Message::PreVote { .. } => "PreVote",
        Message::PreVoteResponse { .. } => "PreVoteResponse",
        Message::RequestVote { .. } => "RequestVote",
        Message::VoteResponse { .. } => "VoteResponse",
        Message::AppendEntries { .. } => "AppendEntries",
        Message::AppendResponse { .. } => "AppendResponse",
        Message::InstallSnapshot { .. } => "InstallSnapshot",
        Message::InstallSnapshotResponse { .. } => "InstallSnapshotResponse",
        Message::TimeoutNow { .. } => "TimeoutNow",
        Message::ReadIndexRequest { .. } => "ReadIndexRequest",
        Message::ReadIndexResponse { .. } => "ReadIndexResponse",
    }
}

pub(crate) fn render_msg(m: &Message) -> String {
    let name = msg_name(m);
    match m {
        Message::PreVote { term, last_log_index, last_log_term } => {
            format!("{name} term={} last={}", term.0, render_pos(*last_log_term, *last_log_index))
        }
        Message::PreVoteResponse { term, granted } | Message::VoteResponse { term, granted } => {
            format!("{name} term={} {}", term.0, if *granted { "granted" } else { "rejected" })
        }
        Message::RequestVote { term, last_log_index, last_log_term, transfer } => format!(
            "{name} term={} last={}{}",
            term.0,
            render_pos(*last_log_term, *last_log_index),
            if *transfer { " transfer" } else { "" }
        ),
        Message::AppendEntries {
            term,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            read_seq,
        } => {
            format!(
                "{name} term={} prev={} commit={} seq={} [{}]",
                term.0,
                render_pos(*prev_log_term, *prev_log_index),
                leader_commit.0,
                read_seq,
                render_entries(entries)
            )
        }
        Message::AppendResponse { term, success, match_index, reject_hint, read_seq } => {
            if *success {
                format!("{name} term={} ok match={} seq={}", term.0, match_index.0, read_seq)
            } else {
                let hint = match reject_hint {
                    None => String::new(),
                    Some(h) => format!(
                        " hint(last={} term={} first={})",
                        h.last_index.0,
                        h.conflict_term.map_or("-".to_string(), |t| t.0.to_string()),
                        h.conflict_first_index.0
                    ),
                };
                format!(
                    "{name} term={} reject prev={}{hint} seq={}",
                    term.0, match_index.0, read_seq
                )
            }
        }
        Message::InstallSnapshot { term, meta, offset, data, done } => format!(
            "{name} term={} snap={} offset={} len={}{}",
            term.0,
            render_pos(meta.last_term, meta.last_index),
            offset,
            data.len(),
            if *done { " done" } else { "" }
        ),
        Message::InstallSnapshotResponse { term, last_index, next_offset, done } => format!(
            "{name} term={} last={} next_offset={}{}",
            term.0,
            last_index.0,
            next_offset,
            if *done { " done" } else { "" }
        ),
        Message::TimeoutNow { term } => format!("{name} term={}", term.0),
        Message::ReadIndexRequest { term, ctx } => format!("{name} term={} ctx={ctx}", term.0),
        Message::ReadIndexResponse { term, ctx, index } => format!(
            "{name} term={} ctx={ctx} {}",
            term.0,
            index.map_or("refused".to_string(), |i| format!("index={}", i.0))
        ),
    }
}

pub(crate) fn render_ready(r: &Ready) -> String {
    let mut out = String::new();
    if let Some(ss) = r.soft_state {
        let leader = ss.leader.map_or("-".to_string(), |l| l.0.to_string());
        let _ = writeln!(
            out,
            "  state: term={} leader={}{}",
            ss.term.0,
            leader,
            if ss.is_leader { " (me)" } else { "" }
        );
    }
    if let Some(hs) = r.hard_state {
        let vote = hs.vote.map_or("-".to_string(), |v| v.0.to_string());
        let _ =
            writeln!(out, "  hard-state: term={} vote={} commit={}", hs.term.0, vote, hs.commit.0);
    }
    if let Some((meta, data)) = &r.snapshot {
        let _ = writeln!(
            out,
            "  snapshot: {} len={}",
            render_pos(meta.last_term, meta.last_index),
            data.len()
        );
    }
    if !r.entries.is_empty() {
        let _ = writeln!(out, "  entries: {}", render_entries(&r.entries));
    }
    for (to, m) in &r.messages {
        let _ = writeln!(out, "  send: ->{} {}", to.0, render_msg(m));
    }
    for (to, m) in r.persisted_messages.peek() {
        let _ = writeln!(out, "  send-after-sync: ->{} {}", to.0, render_msg(m));
    }
    if !r.committed_entries.is_empty() {
        let _ = writeln!(out, "  apply: {}", render_entries(&r.committed_entries));
    }
    for rs in &r.read_states {
        let _ = writeln!(out, "  read-state: ctx={} index={}", rs.ctx, rs.index.0);
    }
    for ctx in &r.failed_reads {
        let _ = writeln!(out, "  read-failed: ctx={ctx}");
    }
    out
}
