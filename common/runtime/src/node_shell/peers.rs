//! The node's link to its peers over the QUIC transport: Raft batches out as envelopes on the
//! per-(peer, group) streams, envelopes in as [`PeerMessage`]s, with the HLC rules on both
//! sides (HLC-3, HLC-4).

use std::time::{SystemTime, UNIX_EPOCH};

use decree_proto::envelope::{Envelope, Payload};
use decree_proto::{decode_body, encode_body};
use decree_raft::msg::Message;
use decree_raft::node::Transport as NodeTransport;
use decree_types::{GroupId, Hlc, NodeId};

use super::run::{PeerLink, PeerMessage};
use crate::transport::{InboundMessage, SendError, Transport};

/// Largest tolerated clock offset between nodes (DESIGN.md §10: 250 ms), in nanoseconds.
pub const MAX_CLOCK_OFFSET_NS: u64 = 250_000_000;

/// The wall clock, in nanoseconds since the Unix epoch (0 if the clock is before 1970).
pub fn wall_clock_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Peers over QUIC. Owned by the shell task (it holds the node's HLC).
#[derive(Debug)]
pub struct QuicPeers {
    transport: Transport,
    me: NodeId,
    hlc: Hlc,
    /// Messages the transport refused to queue (full queue: Raft retransmits).
    pub dropped: u64,
    /// Inbound frames refused (undecodable, wrong sender, clock too far ahead).
    pub refused: u64,
}

impl QuicPeers {
    /// Peers reached through `transport`, as node `me`.
    pub fn new(transport: Transport, me: NodeId) -> Self {
        QuicPeers { transport, me, hlc: Hlc::new(MAX_CLOCK_OFFSET_NS), dropped: 0, refused: 0 }
    }

    /// Decodes one inbound frame body. Returns `None` (and logs why) for anything that is not
    /// a Raft message from the node its certificate names, within the clock bound. Total:
    /// never panics on peer input.
    pub fn decode(&mut self, inbound: InboundMessage) -> Option<PeerMessage> {
        let envelope = match decode_body(&inbound.body) {
            Ok(e) => e,
            Err(e) => {
                self.refused += 1;
                tracing::warn!(from = %inbound.from, "undecodable group message: {e}");
                return None;
            }
        };
        if envelope.from != inbound.from || envelope.group != inbound.group {
            self.refused += 1;
            tracing::warn!(
                cert = %inbound.from,
                claimed = %envelope.from,
                stream_group = %inbound.group,
                claimed_group = %envelope.group,
                "group message whose sender or group does not match its stream; dropped"
            );
            return None;
        }
        // HLC-2/HLC-3: absorb the sender's clock, or refuse a reading too far ahead.
        if let Err(e) = self.hlc.update(wall_clock_ns(), envelope.sender_clock) {
            self.refused += 1;
            tracing::warn!(from = %inbound.from, "{e}");
            return None;
        }
        match envelope.payload {
            Payload::Raft(message) => {
                Some(PeerMessage { from: envelope.from, group: envelope.group, message })
            }
            other => {
                self.refused += 1;
                let kind = format!("{other:?}");
                tracing::warn!(from = %inbound.from, %kind, "non-Raft payload on a group stream");
                None
            }
        }
    }

    fn send_one(&mut self, to: NodeId, group: GroupId, message: Message) {
        let envelope = Envelope {
            from: self.me,
            group,
            sender_clock: self.hlc.now(wall_clock_ns()),
            payload: Payload::Raft(message),
        };
        let body = match encode_body(&envelope) {
            Ok(b) => b,
            Err(e) => {
                // Over a limit (e.g. an oversized batch of entries): Raft retries with what the
                // core sends next; log it, since it means a limit and a config disagree.
                self.dropped += 1;
                tracing::error!(%to, %group, "cannot encode a Raft message: {e}");
                return;
            }
        };
        match self.transport.send(to, group, body) {
            Ok(()) => {}
            Err(SendError::QueueFull) => self.dropped += 1,
            Err(e) => {
                self.dropped += 1;
                tracing::debug!(%to, %group, "message not sent: {e}");
            }
        }
    }
}

impl NodeTransport for QuicPeers {
    /// One iteration's batch for `to`: each message goes on its group's ordered stream; the
    /// stream writer packs everything queued into one write.
    fn send(&mut self, to: NodeId, batch: Vec<(GroupId, Message)>) {
        for (group, message) in batch {
            self.send_one(to, group, message);
        }
    }
}

impl PeerLink for QuicPeers {
    type Inbound = InboundMessage;

    fn receive(&mut self, inbound: InboundMessage) -> Option<PeerMessage> {
        self.decode(inbound)
    }
}
