//! The loop itself: see the module docs of [`crate::node_shell`] for the numbered steps.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use decree_host::{ClientTag, Fatal, Host, HostEnvelope, HostIo, ReplicatedMachine, SnapshotJob};
use decree_proto::ErrorResponse;
use decree_raft::node::Output;
use decree_raft::Disk;
use decree_types::{ClientId, GroupId, HlcTimestamp, LogIndex, NodeId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::peers::{raft_messages, QuicPeers};
use super::rpc::{
    decode_request, encode_response, ClientReply, ClientRequest, GroupStatus, NodeStatus, Refusal,
    ShellCounters, REPLICA_STATE_BYTES_MAX,
};
use super::timed_disk::TimedDisk;
use crate::certs::Peer;
use crate::transport::{HandlerError, InboundMessage, RpcHandler};

/// Client requests that may queue for the shell thread before senders wait (backpressure).
pub const CLIENT_QUEUE_LEN: usize = 4096;

/// Client requests that may wait for their answers at once; past it a request is refused with
/// [`Refusal::Overloaded`]. Bounds the table of waiting clients.
pub const CLIENTS_WAITING_MAX: usize = 64 * 1024;

/// Inputs (peer envelopes plus client requests) handled in one iteration at most, so a flood
/// cannot delay the timer or the answers of the previous iteration for long.
pub const INPUTS_PER_ITERATION_MAX: usize = 4096;

/// How often waiting clients that went away are swept from the table.
const PRUNE_PERIOD: Duration = Duration::from_secs(1);

/// The physical clock, in nanoseconds since the Unix epoch (injectable for tests).
pub type PhysicalClockFn = std::sync::Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system's wall clock, in nanoseconds since the Unix epoch (0 if it reads before 1970).
pub fn wall_clock_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// What a machine's requests and responses must be to cross the network and the shell's
/// threads: postcard-encodable, owned, sendable. Every such type is one.
pub trait Wire: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Wire for T {}

/// Answers [`ClientRequest::Node`] requests on the shell thread, from the host it runs (its
/// groups' roles and indexes, its machines' replicated state, its clock). A product that
/// speaks node-level requests (decree's range map and cluster status) installs one with
/// [`NodeShell::with_node_service`]; it must not block.
pub type NodeService<D, M> = Box<
    dyn FnMut(
            &Host<TimedDisk<D>, M>,
            <M as ReplicatedMachine>::Request,
        ) -> <M as ReplicatedMachine>::Response
        + Send,
>;

/// A client request and where to send its answer.
#[derive(Debug)]
pub struct ClientCall<Rq, Rs> {
    /// The client, named by its certificate.
    pub client: ClientId,
    /// The request.
    pub request: ClientRequest<Rq>,
    /// Its answer goes here (dropped if the client gave up).
    pub reply: oneshot::Sender<ClientReply<Rs>>,
}

/// The way into the shell thread for RPC handlers. Cheap to clone.
#[derive(Debug)]
pub struct ShellHandle<Rq, Rs> {
    calls: mpsc::Sender<ClientCall<Rq, Rs>>,
}

impl<Rq, Rs> Clone for ShellHandle<Rq, Rs> {
    fn clone(&self) -> Self {
        ShellHandle { calls: self.calls.clone() }
    }
}

impl<Rq: Wire, Rs: Wire> ShellHandle<Rq, Rs> {
    /// A handle and the receiving end the shell thread drains.
    pub fn channel() -> (Self, mpsc::Receiver<ClientCall<Rq, Rs>>) {
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE_LEN);
        (ShellHandle { calls: tx }, rx)
    }

    /// Hands `request` to the shell and waits for its answer. If the shell is gone the answer
    /// is [`Refusal::ShuttingDown`] (for a write: outcome unknown).
    pub async fn call(&self, client: ClientId, request: ClientRequest<Rq>) -> ClientReply<Rs> {
        let (reply, answer) = oneshot::channel();
        if self.calls.send(ClientCall { client, request, reply }).await.is_err() {
            return ClientReply::Refused(Refusal::ShuttingDown);
        }
        answer.await.unwrap_or(ClientReply::Refused(Refusal::ShuttingDown))
    }

    /// The endpoint's request handler: decodes a client's request body (total), hands it to
    /// the shell, and encodes the answer. Requests from nodes are refused: nodes talk to each
    /// other in envelopes on streams, never through the client protocol.
    pub fn rpc_handler(self) -> impl RpcHandler {
        move |from: Peer, body: Vec<u8>| {
            let shell = self.clone();
            async move {
                let Peer::Client(name) = from else {
                    return Err(HandlerError::Refused {
                        code: CLIENT_ONLY_CODE,
                        message: "the client protocol serves clients, not nodes".into(),
                    });
                };
                let request = decode_request::<Rq>(&body)
                    .map_err(|e| HandlerError::Undecodable { reason: e.to_string() })?;
                let reply = shell.call(client_id(&name), request).await;
                encode_response(&reply).map_err(|e| HandlerError::Refused {
                    code: UNENCODABLE_CODE,
                    message: e.to_string(),
                })
            }
        }
    }
}

/// The refusal code of a client request sent by a node.
pub const CLIENT_ONLY_CODE: u32 = 1;
/// The refusal code of an answer that could not be encoded.
pub const UNENCODABLE_CODE: u32 = 2;

/// The [`ClientId`] of a client certificate's name: its 64-bit FNV-1a hash, the same on every
/// node and across restarts.
pub fn client_id(name: &str) -> ClientId {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    ClientId(hash)
}

/// Why the shell stopped.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The host hit a fatal error (a failed fsync, a corrupt log or entry, HLC-6: its clock
    /// is off from a majority of its peers): the replica must stop.
    #[error("node stopped on a fatal error: {0}")]
    Fatal(#[from] Fatal),
    /// The shell's thread or runtime could not start.
    #[error("cannot start the shell: {0}")]
    Start(#[source] std::io::Error),
    /// The shell's thread panicked (a bug).
    #[error("the shell thread panicked")]
    Panicked,
}

/// The host (the node, its machines, the HLC) and its waiting clients, owned by one thread.
pub struct NodeShell<D: Disk, M: ReplicatedMachine> {
    host: Host<TimedDisk<D>, M>,
    peers: QuicPeers,
    clock: PhysicalClockFn,
    /// Origin of the host's monotonic `now_ns` (the host was opened at `now_ns` 0 here).
    origin: Instant,
    waiting: BTreeMap<ClientTag, oneshot::Sender<ClientReply<M::Response>>>,
    next_tag: u64,
    counters: ShellCounters,
    /// The sum of the groups' applied indexes when the shell started.
    applied_at_start: u64,
    /// Answers node-level requests, if the product has any.
    node_service: Option<NodeService<D, M>>,
    /// Snapshot jobs the last `process` handed out, for the encoder.
    snapshot_jobs: Vec<SnapshotJob<M>>,
    /// The encoder thread's queue (set while [`NodeShell::run`] runs; without it a job is
    /// encoded here, on the shell thread).
    encoder: Option<std::sync::mpsc::Sender<SnapshotJob<M>>>,
}

/// A snapshot encoded by the encoder thread, on its way back to the host.
type Encoded = (GroupId, LogIndex, Arc<[u8]>);

impl<D: Disk, M: ReplicatedMachine> std::fmt::Debug for NodeShell<D, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeShell")
            .field("node", &self.host.node().id())
            .field("waiting", &self.waiting.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<D, M> NodeShell<D, M>
where
    D: Disk,
    M: ReplicatedMachine,
    M::Request: Wire,
    M::Response: Wire,
{
    /// A shell around an opened host: `peers` carries its envelopes, `clock` is the physical
    /// clock the host's HLC reads, `origin` the instant the host's `now_ns` counts from (it
    /// was opened with `now_ns` 0 at `origin`).
    pub fn new(
        host: Host<TimedDisk<D>, M>,
        peers: QuicPeers,
        clock: PhysicalClockFn,
        origin: Instant,
    ) -> Self {
        let mut shell = NodeShell {
            host,
            peers,
            clock,
            origin,
            waiting: BTreeMap::new(),
            next_tag: 0,
            counters: ShellCounters::default(),
            applied_at_start: 0,
            node_service: None,
            snapshot_jobs: Vec::new(),
            encoder: None,
        };
        shell.applied_at_start = shell.applied_sum();
        shell
    }

    /// Answers [`ClientRequest::Node`] requests with `service` (without one they are refused
    /// with [`Refusal::NoNodeService`]).
    pub fn with_node_service(mut self, service: NodeService<D, M>) -> Self {
        self.node_service = Some(service);
        self
    }

    /// Starts the loop on a thread of its own (with a single-threaded tokio runtime), so the
    /// fsync inside `process`, which blocks that thread, never delays the endpoint's tasks on
    /// the main runtime. The loop runs until [`ShellThread::stop`] or a fatal error.
    pub fn spawn(
        self,
        inbound: mpsc::Receiver<InboundMessage>,
        calls: mpsc::Receiver<ClientCall<M::Request, M::Response>>,
    ) -> Result<ShellThread, ShellError>
    where
        D: Send + 'static,
        M: Send + 'static,
        M::Command: Send,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("node-shell".into())
            .spawn(move || {
                let result =
                    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(runtime) => runtime.block_on(self.run(inbound, calls, async {
                            // Stop on request, or when the handle is dropped.
                            let _ = stopped.await;
                        })),
                        Err(e) => Err(ShellError::Start(e)),
                    };
                let _ = done_tx.send(result);
            })
            .map_err(ShellError::Start)?;
        Ok(ShellThread { stop: Some(stop), done })
    }

    /// Runs the loop until `shutdown` completes (Ok) or the node stops (Err). The fsync inside
    /// `process` blocks the calling thread: run it where nothing else waits on that thread, as
    /// [`NodeShell::spawn`] does. Snapshots are encoded on a thread of their own, started here
    /// and ended with the loop.
    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<InboundMessage>,
        mut calls: mpsc::Receiver<ClientCall<M::Request, M::Response>>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ShellCounters, ShellError>
    where
        M: 'static,
    {
        tokio::pin!(shutdown);
        let mut encoded = self.start_encoder()?;
        let mut next_prune = Instant::now() + PRUNE_PERIOD;
        let (mut inbound_open, mut calls_open) = (true, true);
        let result = loop {
            // 1. Wait for at least one input, the host's deadline, or shutdown — unless the
            // host has work left from the last iteration (proposals its machines made while
            // applying, envelopes it delivers to its own node): then go on at once.
            // (A deadline too far to represent is no deadline.)
            let deadline = self
                .host
                .poll_timeout()
                .and_then(|ns| self.origin.checked_add(Duration::from_nanos(ns)));
            let idle = !self.host.has_work();
            tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                () = std::future::ready(()), if !idle => {}
                m = inbound.recv(), if inbound_open => match m {
                    Some(m) => self.on_envelope(m),
                    None => inbound_open = false,
                },
                c = calls.recv(), if calls_open => match c {
                    Some(c) => self.on_call(c),
                    None => calls_open = false,
                },
                // The encoder holds a sender until the loop ends: never `None` here.
                Some(e) = encoded.recv() => {
                    if let Err(e) = self.on_encoded(e) {
                        tracing::error!("node stopped: {e}");
                        break Err(e);
                    }
                }
                () = sleep_until(deadline) => {}
            }
            let busy_from = Instant::now();

            // 2. Drain what else has arrived, without waiting, within the iteration's budget.
            let mut budget = INPUTS_PER_ITERATION_MAX;
            while budget > 0 {
                let Ok(m) = inbound.try_recv() else { break };
                self.on_envelope(m);
                budget -= 1;
            }
            while budget > 0 {
                let Ok(c) = calls.try_recv() else { break };
                self.on_call(c);
                budget -= 1;
            }

            // 3. The host's deadline (elections, heartbeats, clock probes, machine timers).
            if deadline.is_some_and(|d| busy_from >= d) {
                let (now_ns, wall_ns) = self.clocks();
                self.host.handle_timeout(now_ns, wall_ns);
            }

            // 4-6. Persist + one fsync + send, apply, answer. A host that stopped (in
            // `handle_timeout` for HLC-6, or in an earlier `process`) still answers what it
            // refused meanwhile, then the loop ends with the reason.
            if self.host.has_work() || self.host.stopped().is_some() {
                if let Err(e) = self.process() {
                    tracing::error!("node stopped: {e}");
                    break Err(e);
                }
            }

            if busy_from >= next_prune {
                self.waiting.retain(|_, reply| !reply.is_closed());
                next_prune = busy_from + PRUNE_PERIOD;
            }
            self.counters.busy_us += busy_from.elapsed().as_micros() as u64;
        };

        // Shutdown (or failure): the encoder ends once its queue is dropped (a job it is
        // encoding is thrown away with the host); everyone still waiting learns that the
        // outcome is unknown.
        self.encoder = None;
        for (_, reply) in std::mem::take(&mut self.waiting) {
            let _ = reply.send(ClientReply::Refused(Refusal::ShuttingDown));
        }
        result.map(|()| self.counters)
    }

    /// Starts the thread that encodes snapshot jobs ([`SnapshotJob::encode`]: the machine's
    /// encoding and the one copy into the buffer the node keeps), off the thread that runs the
    /// host. Its queue holds at most one job per group (the host has no more out).
    fn start_encoder(&mut self) -> Result<mpsc::UnboundedReceiver<Encoded>, ShellError>
    where
        M: 'static,
    {
        let (jobs, queue) = std::sync::mpsc::channel::<SnapshotJob<M>>();
        let (done, encoded) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("snapshot-encoder".into())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    let bytes = job.encode();
                    if done.send((job.group, job.index, bytes)).is_err() {
                        return;
                    }
                }
            })
            .map_err(ShellError::Start)?;
        self.encoder = Some(jobs);
        Ok(encoded)
    }

    /// Snapshot bytes back from the encoder: to the host, which gives them to the node (or
    /// drops them if the group has moved past them).
    fn on_encoded(&mut self, (group, index, bytes): Encoded) -> Result<(), ShellError> {
        let started = Instant::now();
        let kept = self.host.snapshot_encoded(group, index, bytes)?;
        tracing::debug!(%group, %index, kept, us = started.elapsed().as_micros() as u64, "snapshot");
        Ok(())
    }

    /// Hands the jobs of the last `process` to the encoder (or, without one, encodes them
    /// here).
    fn dispatch_snapshot_jobs(&mut self) -> Result<(), ShellError> {
        for job in std::mem::take(&mut self.snapshot_jobs) {
            let job = match &self.encoder {
                Some(encoder) => match encoder.send(job) {
                    Ok(()) => continue,
                    // The encoder thread is gone (it panicked): encode here.
                    Err(std::sync::mpsc::SendError(job)) => job,
                },
                None => job,
            };
            let bytes = job.encode();
            self.on_encoded((job.group, job.index, bytes))?;
        }
        Ok(())
    }

    /// Monotonic time since `origin` and the physical clock, both in ns.
    fn clocks(&self) -> (u64, u64) {
        (self.origin.elapsed().as_nanos() as u64, (self.clock)())
    }

    fn on_envelope(&mut self, inbound: InboundMessage) {
        let Some(envelope) = self.peers.receive::<M::Request, M::Response>(&inbound) else {
            return;
        };
        self.counters.messages_in += raft_messages(&envelope.payload);
        let (now_ns, wall_ns) = self.clocks();
        self.host.handle_envelope(now_ns, wall_ns, inbound.from, envelope);
    }

    fn on_call(&mut self, call: ClientCall<M::Request, M::Response>) {
        let ClientCall { client, request, reply } = call;
        match request {
            ClientRequest::Machine { group, sender_clock, request } => {
                if self.waiting.len() >= CLIENTS_WAITING_MAX {
                    let _ = reply.send(ClientReply::Refused(Refusal::Overloaded));
                    return;
                }
                self.next_tag += 1;
                let tag = ClientTag(self.next_tag);
                self.waiting.insert(tag, reply);
                self.counters.client_requests += 1;
                let (now_ns, wall_ns) = self.clocks();
                self.host.handle_client_request(
                    now_ns,
                    wall_ns,
                    client,
                    tag,
                    sender_clock,
                    group,
                    request,
                );
            }
            ClientRequest::Status => {
                let _ = reply.send(ClientReply::Status(self.status()));
            }
            ClientRequest::ReplicaState { group } => {
                let answer = match (self.host.machine(group), self.host.applied(group)) {
                    (Some(machine), Some(applied)) => {
                        let state = M::encode_snapshot(&machine.snapshot());
                        if state.len() > REPLICA_STATE_BYTES_MAX {
                            let max = REPLICA_STATE_BYTES_MAX;
                            ClientReply::Refused(Refusal::StateTooLarge { bytes: state.len(), max })
                        } else {
                            ClientReply::ReplicaState { group, applied, state }
                        }
                    }
                    _ => ClientReply::Refused(Refusal::UnknownGroup(group)),
                };
                let _ = reply.send(answer);
            }
            ClientRequest::Node(request) => {
                let answer = match self.node_service.as_mut() {
                    Some(service) => {
                        let response = service(&self.host, request);
                        ClientReply::Machine { sender_clock: self.host.clock_last(), response }
                    }
                    None => ClientReply::Refused(Refusal::NoNodeService),
                };
                let _ = reply.send(answer);
            }
        }
    }

    /// Steps 4-6 of the loop.
    fn process(&mut self) -> Result<(), ShellError> {
        let started = Instant::now();
        let fsyncs_before = self.host.node().wal().stats().fsyncs;
        let (now_ns, wall_ns) = self.clocks();
        let mut io = ShellIo {
            me: self.host.id(),
            snapshot_jobs: &mut self.snapshot_jobs,
            peers: &mut self.peers,
            waiting: &mut self.waiting,
            messages_out: &mut self.counters.messages_out,
        };
        // The fsync inside blocks this thread, which runs nothing else; envelopes handed to
        // the endpoint before it leave on the endpoint's threads meanwhile.
        let result = self.host.process(now_ns, wall_ns, &mut io);
        self.counters.process_us += started.elapsed().as_micros() as u64;
        result?;
        self.dispatch_snapshot_jobs()?;
        self.counters.iterations += 1;
        self.counters.fsyncs += self.host.node().wal().stats().fsyncs - fsyncs_before;
        self.counters.sync_us = self.host.node().wal().disk().times().sync_us;
        Ok(())
    }

    fn applied_sum(&self) -> u64 {
        self.host.node().groups().filter_map(|g| self.host.applied(g)).map(|i| i.0).sum()
    }

    fn status(&self) -> NodeStatus {
        let node = self.host.node();
        let groups = node
            .groups()
            .filter_map(|g| {
                let core = node.core(g)?;
                Some(GroupStatus {
                    group: g,
                    is_leader: core.role() == decree_raft::core::Role::Leader,
                    term: core.term(),
                    leader: core.leader(),
                    commit: core.commit_index(),
                    applied: self.host.applied(g).unwrap_or_default(),
                    digest: self.host.machine(g).map_or(0, |m| m.digest()),
                })
            })
            .collect();
        let counters = ShellCounters {
            applied: self.applied_sum().saturating_sub(self.applied_at_start),
            dropped_out: self.peers.dropped,
            refused_in: self.peers.refused,
            host_refused: self.host.stats().refused,
            ..self.counters
        };
        NodeStatus { node: node.id(), groups, counters }
    }
}

/// What the host's `process` hands to the world: envelopes to the endpoint, answers to the
/// clients waiting on their streams.
struct ShellIo<'a, M: ReplicatedMachine> {
    me: NodeId,
    snapshot_jobs: &'a mut Vec<SnapshotJob<M>>,
    peers: &'a mut QuicPeers,
    waiting: &'a mut BTreeMap<ClientTag, oneshot::Sender<ClientReply<M::Response>>>,
    messages_out: &'a mut u64,
}

impl<M> HostIo<M> for ShellIo<'_, M>
where
    M: ReplicatedMachine,
    M::Request: Wire,
    M::Response: Wire,
{
    fn send(&mut self, to: NodeId, envelopes: Vec<HostEnvelope<M>>) {
        // The host delivers envelopes to its own node itself and asserts so; the shell only
        // moves bytes between nodes.
        debug_assert_ne!(to, self.me, "the host handed the shell an envelope to itself");
        for envelope in &envelopes {
            if self.peers.send(to, envelope) {
                *self.messages_out += raft_messages(&envelope.payload);
            }
        }
    }

    fn snapshot(&mut self, job: SnapshotJob<M>) {
        self.snapshot_jobs.push(job);
    }

    fn reply(&mut self, client: ClientTag, clock: HlcTimestamp, response: M::Response) {
        // A client swept from the table (it went away) has nobody left to answer.
        if let Some(reply) = self.waiting.remove(&client) {
            let _ = reply.send(ClientReply::Machine { sender_clock: clock, response });
        }
    }

    fn refuse(&mut self, client: ClientTag, clock: HlcTimestamp, error: ErrorResponse) {
        if let Some(reply) = self.waiting.remove(&client) {
            let _ = reply.send(ClientReply::Error { sender_clock: clock, error });
        }
    }

    /// The operator's log of what the node does: role changes and snapshot restores.
    fn observe(&mut self, output: &Output) {
        match output {
            Output::Role { group, state } => tracing::info!(
                %group,
                term = state.term.0,
                leader = ?state.leader,
                is_leader = state.is_leader,
                "role changed"
            ),
            Output::Restore { group, meta, .. } => {
                tracing::info!(%group, index = meta.last_index.0, "state restored from snapshot")
            }
            Output::Apply { .. } | Output::Read { .. } | Output::ReadFailed { .. } => {}
        }
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

    /// Waits for the loop to end: after [`ShellThread::stop`], or on its own when the node
    /// stops. Cancel-safe (may be raced in `select!` and awaited again).
    pub async fn finished(&mut self) -> Result<ShellCounters, ShellError> {
        (&mut self.done).await.unwrap_or(Err(ShellError::Panicked))
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
