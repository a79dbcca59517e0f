//! The node's link to its peers over the QUIC transport: Raft batches out as envelopes, and
//! envelopes in as [`PeerMessage`]s, with the HLC rules on both sides (HLC-2, HLC-3, HLC-4).
//!
//! # Two kinds of stream per peer
//!
//! The node hands over one batch per peer per iteration (all groups' messages to that peer).
//! It leaves on the one connection to that peer in two ways:
//!
//! - **Small messages, coalesced:** every message of the batch that carries no log entries and
//!   no snapshot data — heartbeats (empty `AppendEntries`), `AppendResponse`, pre-votes and
//!   votes, ReadIndex traffic, `TimeoutNow`, `InstallSnapshotResponse` — goes into ONE
//!   [`Payload::RaftBatch`] envelope (one frame, one HLC reading), on the peer's node-level
//!   stream: the transport stream of the reserved group id [`NODE_GROUP`]. Because the node
//!   sends every group's heartbeats in the same iteration, N groups cost one envelope per
//!   node pair per heartbeat interval, not N. A batch of exactly one small message goes the
//!   same way, so control traffic always uses the node stream. More than
//!   `RAFT_BATCH_MESSAGES_MAX` small messages are split over several envelopes.
//! - **Bulk, per group:** `AppendEntries` with entries and `InstallSnapshot` chunks go one per
//!   envelope ([`Payload::Raft`]) on their group's own ordered stream, so one group's large
//!   transfer never delays another group or the heartbeats.
//!
//! The two streams are not ordered with respect to each other: a group's heartbeat may
//! overtake its appends, or an acknowledgement an earlier one. Raft tolerates any reordering
//! (every message is safe to reorder or drop; terms fence stale ones, and the leader ignores
//! stale acknowledgements; the simulator delivers batches out of order to keep it so), so
//! nothing here restores an order.
//!
//! # Clock offsets (HLC-6)
//!
//! Every tick, [`QuicPeers::probe_and_check_clocks`] sends each peer the node talks to a
//! `ClockProbe` (at most once per heartbeat interval) and checks the offsets measured so far;
//! the peer answers at once with a `ClockEcho`, which becomes one measurement in the
//! [`OffsetMonitor`]. A node certainly more than `0.8 × max_offset` from a strict majority of
//! its peers gets an error, and the shell stops it. Probes and echoes bypass the HLC-3 check:
//! a node whose clock lags must still measure the peers whose traffic HLC-3 makes it refuse.
//!
//! On receipt, an envelope is accepted only if its claimed sender is the node its certificate
//! names, it travels on the stream its kind belongs on (a `RaftBatch` on the node stream, a
//! `Raft` on its group's stream) and its clock reading is within the offset bound; the clock
//! update happens once per envelope. A batch is then fanned out into one [`PeerMessage`] per
//! group message. Anything else is refused, counted and logged, never a panic.

use std::time::{SystemTime, UNIX_EPOCH};

use decree_proto::envelope::{Envelope, Payload, NODE_GROUP};
use decree_proto::limits::RAFT_BATCH_MESSAGES_MAX;
use decree_proto::{decode_body, encode_body};
use decree_raft::msg::Message;
use decree_raft::node::Transport as NodeTransport;
use decree_types::limits::{
    HEARTBEAT_INTERVAL_MS, MAX_OFFSET_NS, NS_PER_MS, OFFSET_MEASUREMENT_TTL_MS,
};
use decree_types::{GroupId, Hlc, NodeId, OffsetError, OffsetMeasurement, OffsetMonitor};

use super::run::{PeerLink, PeerMessage};
use crate::transport::{InboundMessage, SendError, Transport};

/// The wall clock, in nanoseconds since the Unix epoch (0 if the clock is before 1970).
pub fn wall_clock_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Does `message` carry log entries or snapshot data (bulk that travels on its group's own
/// stream), rather than being a small control message that is coalesced per node pair?
pub fn is_bulk(message: &Message) -> bool {
    match message {
        Message::AppendEntries { entries, .. } => !entries.is_empty(),
        Message::InstallSnapshot { .. } => true,
        Message::PreVote { .. }
        | Message::PreVoteResponse { .. }
        | Message::RequestVote { .. }
        | Message::VoteResponse { .. }
        | Message::AppendResponse { .. }
        | Message::InstallSnapshotResponse { .. }
        | Message::TimeoutNow { .. }
        | Message::ReadIndexRequest { .. }
        | Message::ReadIndexResponse { .. } => false,
    }
}

/// How often each peer is asked for its clock (HLC-6): every heartbeat interval.
pub const CLOCK_PROBE_INTERVAL_NS: u64 = HEARTBEAT_INTERVAL_MS * NS_PER_MS;

/// The physical clock, in nanoseconds since the Unix epoch (injectable for tests).
pub type PhysicalClockFn = std::sync::Arc<dyn Fn() -> u64 + Send + Sync>;

/// Peers over QUIC. Owned by the shell task (it holds the node's HLC and its offset monitor).
pub struct QuicPeers {
    transport: Transport,
    me: NodeId,
    hlc: Hlc,
    clock: PhysicalClockFn,
    /// HLC-6: the latest clock offset measured to each peer.
    offsets: OffsetMonitor,
    /// Every peer the node sends Raft traffic to: the peers whose clocks it measures.
    known: std::collections::BTreeSet<NodeId>,
    /// Our physical time at which the next round of probes is due (0: at the first tick).
    next_probe_ns: u64,
    /// Raft messages not handed to the transport, or refused by it (full queue, unknown
    /// peer): Raft retransmits.
    pub dropped: u64,
    /// Inbound frames refused (undecodable, over a bound, wrong sender or stream, clock too
    /// far ahead).
    pub refused: u64,
}

impl QuicPeers {
    /// Peers reached through `transport`, as node `me`.
    pub fn new(transport: Transport, me: NodeId) -> Self {
        Self::with_clock(transport, me, std::sync::Arc::new(wall_clock_ns))
    }

    /// Like [`QuicPeers::new`], reading physical time from `clock` (tests skew it).
    pub fn with_clock(transport: Transport, me: NodeId, clock: PhysicalClockFn) -> Self {
        QuicPeers {
            transport,
            me,
            hlc: Hlc::new(MAX_OFFSET_NS),
            clock,
            offsets: OffsetMonitor::new(MAX_OFFSET_NS, OFFSET_MEASUREMENT_TTL_MS * NS_PER_MS),
            known: std::collections::BTreeSet::new(),
            next_probe_ns: 0,
            dropped: 0,
            refused: 0,
        }
    }

    /// The latest offset measured to `peer`, if any.
    pub fn clock_offset(&self, peer: NodeId) -> Option<OffsetMeasurement> {
        self.offsets.measurement(peer).copied()
    }

    /// HLC-6, called every shell tick: once per [`CLOCK_PROBE_INTERVAL_NS`] it checks the
    /// offsets measured so far (from the previous round's echoes) and asks every peer the
    /// node talks to for its clock again. Between rounds it costs one comparison.
    pub fn probe_and_check_clocks(&mut self) -> Result<(), OffsetError> {
        let now = (self.clock)();
        if now < self.next_probe_ns {
            return Ok(());
        }
        self.next_probe_ns = now.saturating_add(CLOCK_PROBE_INTERVAL_NS);
        let known = std::mem::take(&mut self.known);
        for &peer in &known {
            self.send_envelope(peer, NODE_GROUP, Payload::ClockProbe { sent_pt: now }, 0);
        }
        self.known = known;
        self.offsets.check(now)
    }

    /// Decodes one inbound frame body and appends the Raft messages it carries to `out`: one
    /// for a `Raft` envelope, one per group message for a `RaftBatch`. Appends nothing (and
    /// logs why) for anything that is not Raft traffic from the node its certificate names, on
    /// the stream its kind belongs on, within the clock bound. Total: never panics on peer
    /// input.
    pub fn decode(&mut self, inbound: InboundMessage, out: &mut Vec<PeerMessage>) {
        let envelope = match decode_body(&inbound.body) {
            Ok(e) => e,
            Err(e) => {
                self.refused += 1;
                tracing::warn!(from = %inbound.from, group = %inbound.group, "undecodable peer message: {e}");
                return;
            }
        };
        if envelope.from != inbound.from || envelope.group != inbound.group {
            self.refused += 1;
            tracing::warn!(
                cert = %inbound.from,
                claimed = %envelope.from,
                stream_group = %inbound.group,
                claimed_group = %envelope.group,
                "peer message whose sender or group does not match its stream; dropped"
            );
            return;
        }
        let node_stream = inbound.group == NODE_GROUP;
        let on_its_stream = match &envelope.payload {
            Payload::Raft(_) => !node_stream,
            Payload::RaftBatch(_) | Payload::ClockProbe { .. } | Payload::ClockEcho { .. } => {
                node_stream
            }
            Payload::Request { .. } | Payload::Response { .. } | Payload::Error { .. } => false,
        };
        if !on_its_stream {
            self.refused += 1;
            let kind = envelope.kind();
            tracing::warn!(from = %inbound.from, group = %inbound.group, %kind, "payload does not belong on this stream; dropped");
            return;
        }
        // HLC-6 traffic carries physical readings, no protocol timestamps, and is handled
        // before the HLC-3 check: a node whose clock lags must still measure the peers that
        // HLC-3 makes it refuse, or it would never learn that it is the one that is off.
        match envelope.payload {
            Payload::ClockProbe { sent_pt } => {
                let echo = Payload::ClockEcho { sent_pt, remote_pt: (self.clock)() };
                self.send_envelope(envelope.from, NODE_GROUP, echo, 0);
                return;
            }
            Payload::ClockEcho { sent_pt, remote_pt } => {
                let now = (self.clock)();
                match OffsetMeasurement::from_round_trip(sent_pt, remote_pt, now) {
                    Some(m) => self.offsets.record(envelope.from, m),
                    None => self.refused += 1,
                }
                return;
            }
            _ => {}
        }
        // HLC-2/HLC-3: absorb the sender's clock once per envelope, or refuse a reading too far
        // ahead (and with it every message of a batch).
        if let Err(e) = self.hlc.update((self.clock)(), envelope.sender_clock) {
            self.refused += 1;
            tracing::warn!(from = %inbound.from, "{e}");
            return;
        }
        let from = envelope.from;
        match envelope.payload {
            Payload::Raft(message) => {
                out.push(PeerMessage { from, group: envelope.group, message })
            }
            Payload::RaftBatch(batch) => {
                out.extend(batch.into_iter().map(|(group, message)| PeerMessage {
                    from,
                    group,
                    message,
                }))
            }
            // Refused or handled above.
            Payload::Request { .. }
            | Payload::Response { .. }
            | Payload::Error { .. }
            | Payload::ClockProbe { .. }
            | Payload::ClockEcho { .. } => {}
        }
    }

    /// Encodes `payload` (carrying `count` Raft messages) in an envelope and queues it on the
    /// stream of `group` to `to`. HLC-4: the clock is read once the payload is complete.
    fn send_envelope(&mut self, to: NodeId, group: GroupId, payload: Payload, count: u64) {
        let envelope =
            Envelope { from: self.me, group, sender_clock: self.hlc.now((self.clock)()), payload };
        let body = match encode_body(&envelope) {
            Ok(b) => b,
            Err(e) => {
                // Over a limit (e.g. an oversized batch of entries): Raft retries with what the
                // core sends next; log it, since it means a limit and a config disagree.
                self.dropped += count;
                tracing::error!(%to, %group, "cannot encode Raft traffic: {e}");
                return;
            }
        };
        match self.transport.send(to, group, body) {
            Ok(()) => {}
            Err(SendError::QueueFull) => self.dropped += count,
            Err(e) => {
                self.dropped += count;
                tracing::debug!(%to, %group, "Raft traffic not sent: {e}");
            }
        }
    }
}

impl NodeTransport for QuicPeers {
    /// One iteration's batch for `to`: entries and snapshot chunks go one envelope each on their
    /// group's ordered stream; every other message goes into one `RaftBatch` envelope on the
    /// peer's node stream (split only past `RAFT_BATCH_MESSAGES_MAX`). Each stream writer packs
    /// whatever is queued into one write.
    fn send(&mut self, to: NodeId, batch: Vec<(GroupId, Message)>) {
        let mut small = Vec::new();
        for (group, message) in batch {
            if is_bulk(&message) {
                self.send_envelope(to, group, Payload::Raft(message), 1);
            } else {
                small.push((group, message));
            }
        }
        while !small.is_empty() {
            let rest = small.split_off(small.len().min(RAFT_BATCH_MESSAGES_MAX));
            let count = small.len() as u64;
            self.send_envelope(to, NODE_GROUP, Payload::RaftBatch(small), count);
            small = rest;
        }
        self.known.insert(to);
    }
}

impl std::fmt::Debug for QuicPeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicPeers")
            .field("me", &self.me)
            .field("hlc", &self.hlc)
            .field("offsets", &self.offsets)
            .field("dropped", &self.dropped)
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

impl PeerLink for QuicPeers {
    type Inbound = InboundMessage;

    fn on_tick(&mut self) -> Result<(), String> {
        self.probe_and_check_clocks().map_err(|e| e.to_string())
    }

    fn receive(&mut self, inbound: InboundMessage, out: &mut Vec<PeerMessage>) {
        self.decode(inbound, out);
    }
}
