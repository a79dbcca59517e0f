//! The loop itself: see the module docs of [`crate::node_shell`] for the numbered steps.

use std::future::Future;
use std::time::Duration;

use decree_raft::msg::Message;
use decree_raft::node::{Node, Output, ProposeError, Transport};
use decree_raft::Disk;
use decree_types::{GroupId, LogIndex, NodeId};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::applied::{AppliedLog, Waiters};
use super::rpc::{
    GroupStatus, LogRequest, LogResponse, NodeStatus, Refusal, ShellCounters, COMMAND_BYTES_MAX,
};
use super::timed_disk::TimedDisk;

/// Client requests that may queue for the shell task before senders wait (backpressure).
pub const CLIENT_QUEUE_LEN: usize = 4096;

/// Inputs (peer messages plus client requests) handled in one iteration at most, so a flood
/// cannot delay the timer or the answers of the previous iteration for long.
pub const INPUTS_PER_ITERATION_MAX: usize = 4096;

/// How often waiters whose client went away are swept.
const PRUNE_PERIOD: Duration = Duration::from_secs(1);

/// A client request and where to send its answer.
#[derive(Debug)]
pub struct ClientCall {
    /// The request.
    pub request: LogRequest,
    /// Its answer goes here (dropped if the client gave up).
    pub reply: oneshot::Sender<LogResponse>,
}

/// A Raft message from a peer, as the endpoint delivers it.
#[derive(Debug)]
pub struct PeerMessage {
    /// The sending node (checked by the transport against its certificate).
    pub from: NodeId,
    /// The group it is for.
    pub group: GroupId,
    /// The message.
    pub message: Message,
}

/// The node's link to its peers: the node's [`Transport`] for what goes out, and a decoder
/// for what comes in (run on the shell task, so it may hold state such as the HLC).
pub trait PeerLink: Transport {
    /// What the endpoint delivers.
    type Inbound: Send;
    /// Decodes and checks one inbound item and appends the Raft messages it carries to `out`:
    /// none if it is refused (the link logs why), one, or — for a coalesced batch of many
    /// groups' messages — one per group message, in order. Total: never panics on peer input.
    fn receive(&mut self, inbound: Self::Inbound, out: &mut Vec<PeerMessage>);

    /// Called every tick (HLC-6: probe the peers' clocks, check the offsets). `Err` says why
    /// this node's clock can no longer be trusted, and the shell stops the node. A link that
    /// measures no clocks has nothing to do.
    fn on_tick(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// The way into the shell task for RPC handlers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ShellHandle {
    calls: mpsc::Sender<ClientCall>,
}

impl ShellHandle {
    /// A handle and the receiving end the shell task drains.
    pub fn channel() -> (ShellHandle, mpsc::Receiver<ClientCall>) {
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE_LEN);
        (ShellHandle { calls: tx }, rx)
    }

    /// Hands `request` to the shell and waits for its answer. If the shell is gone the answer
    /// is `ShuttingDown` (for a proposal: outcome unknown).
    pub async fn call(&self, request: LogRequest) -> LogResponse {
        let (reply, answer) = oneshot::channel();
        if self.calls.send(ClientCall { request, reply }).await.is_err() {
            return LogResponse::Refused(Refusal::ShuttingDown);
        }
        answer.await.unwrap_or(LogResponse::Refused(Refusal::ShuttingDown))
    }
}

/// Why the shell stopped.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The node hit a fatal error (a failed fsync, a corrupt log): the replica must stop.
    #[error("node stopped on a fatal error: {0}")]
    Fatal(String),
}

/// The shell's settings.
#[derive(Clone, Copy, Debug)]
pub struct ShellConfig {
    /// How often the node is ticked (well below the heartbeat interval).
    pub tick: Duration,
    /// Snapshot a group (and let the WAL drop segments below it) after this many entries
    /// applied since its last snapshot; `None` never snapshots.
    pub snapshot_every_entries: Option<u64>,
}

/// Applies a node's outputs to the state machine and answers the clients waiting on them; the
/// first failure is kept in `failed` (the callback of `Node::process_with` cannot return it).
struct Applier<'a> {
    state: &'a mut AppliedLog,
    waiters: &'a mut Waiters<oneshot::Sender<LogResponse>>,
    counters: &'a mut ShellCounters,
    snapshotted: &'a mut std::collections::BTreeMap<GroupId, LogIndex>,
    failed: Option<ShellError>,
}

impl Applier<'_> {
    fn handle(&mut self, output: Output) {
        if self.failed.is_some() {
            return;
        }
        match output {
            Output::Role { group, state } => {
                tracing::info!(
                    %group,
                    term = state.term.0,
                    leader = ?state.leader,
                    is_leader = state.is_leader,
                    "role changed"
                );
            }
            Output::Restore { group, meta, data } => {
                if let Err(e) = self.state.restore(group, meta.last_index, &data) {
                    self.failed = Some(ShellError::Fatal(format!("restoring a snapshot: {e}")));
                    return;
                }
                self.snapshotted.insert(group, meta.last_index);
                let index = meta.last_index.0;
                tracing::info!(%group, index, "state restored from snapshot");
            }
            Output::Apply { group, entries } => {
                for entry in &entries {
                    if self.state.apply(group, entry) {
                        self.counters.applied += 1;
                    }
                    if let Some((reply, response)) = self.waiters.on_applied(group, entry) {
                        let _ = reply.send(response);
                    }
                }
            }
            Output::Read { ctx, index, .. } => self.waiters.read_confirmed(ctx, index),
            Output::ReadFailed { ctx, .. } => {
                if let Some(reply) = self.waiters.remove_read(ctx) {
                    let _ = reply.send(LogResponse::Refused(Refusal::ReadAborted));
                }
            }
        }
    }
}

/// The node, its state machine and its waiting clients, owned by one task.
#[derive(Debug)]
pub struct NodeShell<D: Disk, T: PeerLink> {
    node: Node<TimedDisk<D>>,
    peers: Counting<T>,
    config: ShellConfig,
    state: AppliedLog,
    waiters: Waiters<oneshot::Sender<LogResponse>>,
    counters: ShellCounters,
    /// Origin of the node's monotonic `now_ns`.
    origin: Instant,
    /// Applied index of each group at its last snapshot.
    snapshotted: std::collections::BTreeMap<GroupId, LogIndex>,
    /// Scratch space for the messages of one inbound item (empty between items).
    inbox: Vec<PeerMessage>,
}

impl<D: Disk, T: PeerLink> NodeShell<D, T> {
    /// A shell around an opened node; `peers` carries its outgoing batches, `origin` is the
    /// time `now_ns` counts from (the one the node was opened with).
    pub fn new(node: Node<TimedDisk<D>>, peers: T, config: ShellConfig, origin: Instant) -> Self {
        let state = AppliedLog::new(node.groups());
        NodeShell {
            node,
            peers: Counting { inner: peers, messages: 0 },
            config,
            state,
            waiters: Waiters::default(),
            counters: ShellCounters::default(),
            origin,
            snapshotted: Default::default(),
            inbox: Vec::new(),
        }
    }

    /// Starts the loop on a thread of its own (with a single-threaded tokio runtime), so the
    /// fsync inside `process`, which blocks that thread, never delays the endpoint's tasks on
    /// the main runtime. The loop runs until [`ShellThread::stop`] or a fatal error.
    pub fn spawn(
        self,
        inbound: mpsc::Receiver<T::Inbound>,
        calls: mpsc::Receiver<ClientCall>,
    ) -> std::io::Result<ShellThread>
    where
        D: Send + 'static,
        T: Send + 'static,
        T::Inbound: 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new().name("node-shell".into()).spawn(move || {
            let result = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(self.run(inbound, calls, async {
                    // Stop on request, or when the handle is dropped.
                    let _ = stopped.await;
                })),
                Err(e) => Err(ShellError::Fatal(format!("cannot start the shell runtime: {e}"))),
            };
            let _ = done_tx.send(result);
        })?;
        Ok(ShellThread { stop: Some(stop), done })
    }

    /// Runs the loop until `shutdown` completes (Ok) or the node fails (Err). The fsync inside
    /// `process` blocks the calling thread: run it where nothing else waits on that thread, as
    /// [`NodeShell::spawn`] does.
    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<T::Inbound>,
        mut calls: mpsc::Receiver<ClientCall>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ShellCounters, ShellError> {
        tokio::pin!(shutdown);
        let mut next_tick = Instant::now();
        let mut next_prune = Instant::now() + PRUNE_PERIOD;
        let (mut inbound_open, mut calls_open) = (true, true);
        let result = loop {
            // 1. Wait for at least one input (or the timer, or shutdown).
            tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                m = inbound.recv(), if inbound_open => match m {
                    Some(m) => self.on_peer_message(m),
                    None => inbound_open = false,
                },
                c = calls.recv(), if calls_open => match c {
                    Some(c) => self.on_call(c),
                    None => calls_open = false,
                },
                () = tokio::time::sleep_until(next_tick) => {}
            }
            let busy_from = Instant::now();

            // 2. Drain what else has arrived, without waiting, within the iteration's budget.
            let mut budget = INPUTS_PER_ITERATION_MAX;
            while budget > 0 {
                let Ok(m) = inbound.try_recv() else { break };
                self.on_peer_message(m);
                budget -= 1;
            }
            while budget > 0 {
                let Ok(c) = calls.try_recv() else { break };
                self.on_call(c);
                budget -= 1;
            }

            // 3. Tick when the period is up.
            if busy_from >= next_tick {
                if let Err(e) = self.peers.inner.on_tick() {
                    tracing::error!("{e}");
                    break Err(ShellError::Fatal(e));
                }
                self.node.tick(self.now_ns());
                next_tick = busy_from + self.config.tick;
            }

            // 4-6. Persist + one fsync + send, then apply and answer.
            if self.node.has_ready() {
                if let Err(e) = self.process_once() {
                    break Err(e);
                }
            }

            if busy_from >= next_prune {
                self.waiters.retain(|reply| !reply.is_closed());
                next_prune = busy_from + PRUNE_PERIOD;
            }
            self.counters.busy_us += busy_from.elapsed().as_micros() as u64;
        };

        // Shutdown (or failure): everyone still waiting learns that the outcome is unknown.
        for (reply, response) in self.waiters.drain() {
            let _ = reply.send(response);
        }
        result.map(|()| self.counters)
    }

    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn on_peer_message(&mut self, inbound: T::Inbound) {
        let now = self.now_ns();
        self.peers.inner.receive(inbound, &mut self.inbox);
        self.counters.messages_in += self.inbox.len() as u64;
        for m in self.inbox.drain(..) {
            self.node.step(now, m.from, m.group, m.message);
        }
    }

    fn on_call(&mut self, call: ClientCall) {
        let ClientCall { request, reply } = call;
        match request {
            LogRequest::Propose { group, command } => {
                if let Some(refusal) = self.propose(group, command, reply) {
                    let (reply, response) = refusal;
                    let _ = reply.send(response);
                }
            }
            LogRequest::Read { group, from } => {
                if self.state.group(group).is_none() {
                    let _ = reply.send(LogResponse::Refused(Refusal::UnknownGroup(group)));
                    return;
                }
                if self.waiters.is_full() {
                    let _ = reply.send(LogResponse::Refused(Refusal::Overloaded));
                    return;
                }
                let ctx = self.waiters.add_read(group, from, reply);
                let now = self.now_ns();
                if let Err(e) = self.node.read_index(now, group, ctx) {
                    tracing::debug!(%group, "read refused: {e}");
                    if let Some(reply) = self.waiters.remove_read(ctx) {
                        let _ = reply.send(LogResponse::Refused(Refusal::ReadAborted));
                    }
                }
            }
            LogRequest::Status => {
                let _ = reply.send(LogResponse::Status(self.status()));
            }
        }
    }

    /// Appends a proposal, or returns the refusal to send at once.
    fn propose(
        &mut self,
        group: GroupId,
        command: Vec<u8>,
        reply: oneshot::Sender<LogResponse>,
    ) -> Option<(oneshot::Sender<LogResponse>, LogResponse)> {
        if command.len() > COMMAND_BYTES_MAX {
            let refusal = Refusal::CommandTooLarge { bytes: command.len(), max: COMMAND_BYTES_MAX };
            return Some((reply, LogResponse::Refused(refusal)));
        }
        if self.waiters.is_full() {
            return Some((reply, LogResponse::Refused(Refusal::Overloaded)));
        }
        let now = self.now_ns();
        match self.node.propose(now, group, command) {
            Ok((index, term)) => {
                self.counters.proposals += 1;
                self.waiters.add_proposal(group, index, term, reply)
            }
            Err(ProposeError::NotLeader { group, leader_hint }) => {
                Some((reply, LogResponse::NotLeader { group, hint: leader_hint }))
            }
            Err(ProposeError::TransferInProgress { group, target }) => {
                Some((reply, LogResponse::NotLeader { group, hint: Some(target) }))
            }
            Err(ProposeError::UnknownGroup(g)) => {
                Some((reply, LogResponse::Refused(Refusal::UnknownGroup(g))))
            }
            Err(ProposeError::TooLarge { bytes }) => Some((
                reply,
                LogResponse::Refused(Refusal::CommandTooLarge { bytes, max: COMMAND_BYTES_MAX }),
            )),
            Err(ProposeError::Backpressure { .. }) => {
                // Flow control: too many of this leader's entries await commit. Nothing was
                // appended; the client retries after a pause.
                Some((reply, LogResponse::Refused(Refusal::Overloaded)))
            }
            Err(ProposeError::Stopped(_)) => {
                Some((reply, LogResponse::Refused(Refusal::ShuttingDown)))
            }
        }
    }

    /// Steps 4-6 of the loop.
    fn process_once(&mut self) -> Result<(), ShellError> {
        let started = Instant::now();
        let fsyncs_before = self.node.wal().stats().fsyncs;
        let messages_before = self.peers.messages;
        // 4 + 5. Persist every group's writes, one fsync, hand messages to the endpoint (which
        // queues them on its streams without blocking). The fsync blocks this thread, which
        // runs nothing else. Committed entries this node already holds durably come through
        // the callback before the fsync: they are applied and their proposers answered (the
        // answers leave on the endpoint's threads) while the disk works.
        let (node, peers) = (&mut self.node, &mut self.peers);
        let mut applier = Applier {
            state: &mut self.state,
            waiters: &mut self.waiters,
            counters: &mut self.counters,
            snapshotted: &mut self.snapshotted,
            failed: None,
        };
        let outputs = node.process_with(peers, &mut |output| applier.handle(output));
        let process_us = started.elapsed().as_micros() as u64;
        let outputs = outputs.map_err(|e| ShellError::Fatal(e.to_string()))?;
        // 6. Apply the rest in log order, acknowledge applied proposals, serve reads.
        for output in outputs {
            applier.handle(output);
        }
        if let Some(e) = applier.failed.take() {
            return Err(e);
        }
        self.counters.iterations += 1;
        self.counters.fsyncs += self.node.wal().stats().fsyncs - fsyncs_before;
        let synced = self.node.wal().disk().times();
        self.counters.sync_us = synced.sync_us;
        self.counters.messages_out += self.peers.messages - messages_before;
        self.counters.process_us += process_us;
        for (reply, response) in self.waiters.ready_reads(&self.state) {
            let _ = reply.send(response);
        }
        self.maybe_snapshot()
    }

    /// Snapshots groups that applied enough since their last snapshot (Low-Water Mark).
    fn maybe_snapshot(&mut self) -> Result<(), ShellError> {
        let Some(every) = self.config.snapshot_every_entries else {
            return Ok(());
        };
        let groups: Vec<GroupId> = self.node.groups().collect();
        for group in groups {
            let last = self.snapshotted.get(&group).copied().unwrap_or_default();
            let Some(log) = self.state.group(group) else { continue };
            if log.applied.0 < last.0 + every {
                continue;
            }
            let Some((index, data)) = self.state.snapshot(group) else { continue };
            let node = &mut self.node;
            match node.snapshot(group, index, data) {
                Ok(()) => {
                    self.snapshotted.insert(group, index);
                    tracing::info!(%group, index = index.0, "snapshot taken");
                }
                Err(decree_raft::node::SnapshotRequestError::Fatal(f)) => {
                    return Err(ShellError::Fatal(f.to_string()));
                }
                Err(e) => tracing::debug!(%group, "snapshot not taken: {e}"),
            }
        }
        Ok(())
    }

    fn status(&self) -> NodeStatus {
        let groups = self
            .node
            .groups()
            .filter_map(|g| {
                let core = self.node.core(g)?;
                let log = self.state.group(g)?;
                Some(GroupStatus {
                    group: g,
                    is_leader: core.leader() == Some(self.node.id())
                        && core.role() == decree_raft::core::Role::Leader,
                    term: core.term(),
                    leader: core.leader(),
                    commit: core.commit_index(),
                    applied: log.applied,
                    commands: log.commands.len() as u64,
                })
            })
            .collect();
        NodeStatus { node: self.node.id(), groups, counters: self.counters }
    }
}

/// A shell loop running on its own thread.
#[derive(Debug)]
pub struct ShellThread {
    stop: Option<oneshot::Sender<()>>,
    done: oneshot::Receiver<Result<ShellCounters, ShellError>>,
}

impl ShellThread {
    /// Asks the loop to stop after its current iteration.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the loop to end: after [`ShellThread::stop`], or on its own with a fatal
    /// error. Cancel-safe (may be raced in `select!` and awaited again).
    pub async fn finished(&mut self) -> Result<ShellCounters, ShellError> {
        (&mut self.done)
            .await
            .unwrap_or_else(|_| Err(ShellError::Fatal("the shell thread panicked".into())))
    }
}

/// Counts the Raft messages handed to the endpoint.
#[derive(Debug)]
struct Counting<T> {
    inner: T,
    messages: u64,
}

impl<T: Transport> Transport for Counting<T> {
    fn send(&mut self, to: NodeId, batch: Vec<(GroupId, Message)>) {
        self.messages += batch.len() as u64;
        self.inner.send(to, batch);
    }
}
