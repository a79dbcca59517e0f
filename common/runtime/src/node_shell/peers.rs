//! The node's link to its peers over the QUIC endpoint: envelopes out as frame bodies on the
//! stream their kind belongs on, and frame bodies in as envelopes. Bytes only: the host
//! (`decree_host::Host`) builds every envelope, coalesces small Raft messages, stamps and
//! checks the HLC and the sender; this module encodes, decodes and picks streams.
//!
//! # Two kinds of stream per peer
//!
//! One connection per peer carries everything (DESIGN.md §6), on two kinds of one-way stream:
//!
//! - **The node stream** (the transport stream of the reserved group id [`NODE_GROUP`]):
//!   envelopes for the node rather than one group — a [`Payload::RaftBatch`] (every group's
//!   small Raft messages of one iteration, coalesced by the host: heartbeats, acknowledgements,
//!   votes, ReadIndex traffic) and the HLC-6 clock probes and echoes.
//! - **A group's stream**: envelopes of one group — a [`Payload::Raft`] (entries or a snapshot
//!   chunk, one per envelope) and requests, responses and errors between machines — in order
//!   per (peer, group), so one group's large transfer never delays another group or the
//!   heartbeats.
//!
//! The streams are not ordered with respect to each other; Raft tolerates any reordering, and
//! machines retry their requests, so nothing restores an order.
//!
//! On receipt an envelope is accepted only if it decodes (total decoder,
//! `decree_proto::decode_body_of`) and travels on the stream its kind belongs on; the host then
//! checks its claimed sender against the certificate's node and its clock (HLC-2/3). Anything
//! else is refused, counted and logged, never a panic; the stream stays open.

use decree_proto::envelope::{Envelope, Payload, NODE_GROUP};
use decree_proto::{decode_body_of, encode_body_of};
use decree_types::{GroupId, NodeId};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::transport::{InboundMessage, QuicEndpoint, SendError};

/// The stream an envelope travels on: [`NODE_GROUP`] for the node-level payloads (Raft
/// batches, clock probes and echoes), its own group's stream for the rest. `None` if its
/// `group` contradicts its kind (a node-level payload naming a group, or a group's payload
/// naming [`NODE_GROUP`]): such an envelope is neither sent nor accepted.
pub fn stream_of<Rq, Rs>(envelope: &Envelope<Rq, Rs>) -> Option<GroupId> {
    let node_level = match &envelope.payload {
        Payload::RaftBatch(_) | Payload::ClockProbe { .. } | Payload::ClockEcho { .. } => true,
        Payload::Raft(_)
        | Payload::Request { .. }
        | Payload::Response { .. }
        | Payload::Error { .. } => false,
    };
    (node_level == (envelope.group == NODE_GROUP)).then_some(envelope.group)
}

/// The number of Raft messages a payload carries (for the shell's counters).
pub fn raft_messages<Rq, Rs>(payload: &Payload<Rq, Rs>) -> u64 {
    match payload {
        Payload::Raft(_) => 1,
        Payload::RaftBatch(batch) => batch.len() as u64,
        Payload::Request { .. }
        | Payload::Response { .. }
        | Payload::Error { .. }
        | Payload::ClockProbe { .. }
        | Payload::ClockEcho { .. } => 0,
    }
}

/// A short name for a payload's family, for logs.
pub fn family<Rq, Rs>(payload: &Payload<Rq, Rs>) -> &'static str {
    match payload {
        Payload::Raft(_) => "Raft",
        Payload::Request { .. } => "Request",
        Payload::Response { .. } => "Response",
        Payload::Error { .. } => "Error",
        Payload::RaftBatch(_) => "RaftBatch",
        Payload::ClockProbe { .. } => "ClockProbe",
        Payload::ClockEcho { .. } => "ClockEcho",
    }
}

/// Peers over QUIC: owned by the shell thread, which hands it the host's envelopes.
#[derive(Debug)]
pub struct QuicPeers {
    endpoint: QuicEndpoint,
    /// Envelopes not sent: unencodable (over a bound), placed on no stream, a full queue, an
    /// unknown peer. Raft retransmits; machines retry.
    pub dropped: u64,
    /// Inbound frames refused: undecodable, or on a stream their kind does not belong on.
    pub refused: u64,
}

impl QuicPeers {
    /// Peers reached through `endpoint`.
    pub fn new(endpoint: QuicEndpoint) -> Self {
        QuicPeers { endpoint, dropped: 0, refused: 0 }
    }

    /// Encodes `envelope` and queues it on its stream to `to` (see [`stream_of`]). Never
    /// waits: a full queue drops it (counted in [`QuicPeers::dropped`]). Returns whether it
    /// was queued.
    pub fn send<Rq: Serialize, Rs: Serialize>(
        &mut self,
        to: NodeId,
        envelope: &Envelope<Rq, Rs>,
    ) -> bool {
        let Some(stream) = stream_of(envelope) else {
            self.dropped += 1;
            tracing::error!(
                %to,
                group = %envelope.group,
                kind = family(&envelope.payload),
                "envelope whose group contradicts its kind; not sent"
            );
            return false;
        };
        let body = match encode_body_of(envelope) {
            Ok(b) => b,
            Err(e) => {
                // Over a limit: Raft retries with what the core sends next, a machine on its
                // deadline. Logged as an error: a limit and a configuration disagree.
                self.dropped += 1;
                tracing::error!(%to, %stream, "cannot encode an envelope: {e}");
                return false;
            }
        };
        match self.endpoint.send(to, stream, body) {
            Ok(()) => true,
            Err(SendError::QueueFull) => {
                self.dropped += 1;
                false
            }
            Err(e) => {
                self.dropped += 1;
                tracing::debug!(%to, %stream, "envelope not sent: {e}");
                false
            }
        }
    }

    /// Decodes one inbound frame body into an envelope, checking that it came on the stream
    /// its kind belongs on. `None` (counted in [`QuicPeers::refused`], logged) for anything
    /// else. Total: never panics on peer input. The sender named by the certificate is
    /// `inbound.from`; checking the envelope's claim against it is the host's job.
    pub fn receive<Rq: DeserializeOwned, Rs: DeserializeOwned>(
        &mut self,
        inbound: &InboundMessage,
    ) -> Option<Envelope<Rq, Rs>> {
        let envelope: Envelope<Rq, Rs> = match decode_body_of(&inbound.body) {
            Ok(e) => e,
            Err(e) => {
                self.refused += 1;
                tracing::warn!(from = %inbound.from, stream = %inbound.group, "undecodable peer message: {e}");
                return None;
            }
        };
        if stream_of(&envelope) != Some(inbound.group) {
            self.refused += 1;
            tracing::warn!(
                from = %inbound.from,
                stream = %inbound.group,
                group = %envelope.group,
                kind = family(&envelope.payload),
                "peer message on a stream its kind does not belong on; dropped"
            );
            return None;
        }
        Some(envelope)
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &QuicEndpoint {
        &self.endpoint
    }
}

#[cfg(test)]
mod tests {
    use decree_raft::msg::Message;
    use decree_types::{HlcTimestamp, Term};

    use super::*;

    fn envelope(group: GroupId, payload: Payload<(), ()>) -> Envelope<(), ()> {
        Envelope { from: NodeId(1), group, sender_clock: HlcTimestamp::default(), payload }
    }

    #[test]
    fn every_kind_has_one_stream() {
        let vote = Message::TimeoutNow { term: Term(1) };
        let g = GroupId(3);
        let batch = Payload::RaftBatch(vec![(g, vote.clone())]);
        assert_eq!(stream_of(&envelope(NODE_GROUP, batch.clone())), Some(NODE_GROUP));
        assert_eq!(stream_of(&envelope(g, batch)), None);
        let probe = Payload::ClockProbe { sent_pt: 1 };
        assert_eq!(stream_of(&envelope(NODE_GROUP, probe.clone())), Some(NODE_GROUP));
        assert_eq!(stream_of(&envelope(g, probe)), None);
        assert_eq!(stream_of(&envelope(g, Payload::Raft(vote.clone()))), Some(g));
        assert_eq!(stream_of(&envelope(NODE_GROUP, Payload::Raft(vote))), None);
        let request = Payload::Request { request_id: decree_proto::RequestId(1), request: () };
        assert_eq!(stream_of(&envelope(g, request.clone())), Some(g));
        assert_eq!(stream_of(&envelope(NODE_GROUP, request)), None);
    }
}
