//! The node shell's client protocol: what a client sends over the endpoint's request streams
//! and what comes back, for any replicated state machine.
//!
//! A request is either for a group's machine ([`ClientRequest::Machine`], carrying the
//! machine's own request type and the client's HLC reading) or for the shell itself
//! ([`ClientRequest::Status`]: roles, indexes and counters of the process;
//! [`ClientRequest::ReplicaState`]: one replica's state, for checkers). The shell hands the
//! first kind to the host and answers the others from the host it runs; it never looks inside
//! a machine's request, response or state.
//!
//! Bodies are postcard, one message per frame body. [`decode_request`] and [`decode_response`]
//! are total: any byte string yields a value or a typed error, never a panic, and bytes left
//! over after the message are refused (as the envelope decoder refuses them).

use decree_proto::ErrorResponse;
use decree_types::limits::FRAME_BYTES_MAX;
use decree_types::{GroupId, HlcTimestamp, LogIndex, NodeId, Term};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Largest replica state a [`ClientReply::ReplicaState`] carries, in bytes: room is left in
/// the frame for the reply's other fields (a response frame body is a tag byte, then this
/// reply). A larger state is refused with [`Refusal::StateTooLarge`].
pub const REPLICA_STATE_BYTES_MAX: usize = FRAME_BYTES_MAX - 64 * 1024;

/// A client's request to a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest<Rq> {
    /// A request for the machine of `group`; answered with [`ClientReply::Machine`] (the
    /// machine's answer, a redirect included) or a [`Refusal`].
    Machine {
        /// The group whose machine it is for.
        group: GroupId,
        /// The client's HLC reading (HLC-4): the host observes it before admitting the request
        /// and refuses a reading too far ahead of its clock (HLC-3).
        sender_clock: HlcTimestamp,
        /// The machine's request.
        request: Rq,
    },
    /// Role, term, leader and indexes of every group on the node, and the shell's counters.
    Status,
    /// This replica's applied state of `group`, encoded as its machine encodes a snapshot.
    /// Not linearizable (a follower may lag): for checkers that compare replicas once the
    /// faults stop, and for operators.
    ReplicaState {
        /// The group.
        group: GroupId,
    },
    /// A request for the node itself rather than one group's machine, in the machine's
    /// request type (decree's `NODE_GROUP` requests: the range map, the cluster status).
    /// Answered by the shell's node service ([`crate::node_shell::run::NodeService`]) with
    /// [`ClientReply::Machine`], or refused with [`Refusal::NoNodeService`] if it has none.
    Node(Rq),
}

/// A node's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientReply<Rs> {
    /// The machine's answer to a [`ClientRequest::Machine`].
    Machine {
        /// The node's HLC reading when it answered, at least every timestamp in `response`
        /// (HLC-4); a client that sends it with its next request carries causality along.
        sender_clock: HlcTimestamp,
        /// The machine's response.
        response: Rs,
    },
    /// The node's status.
    Status(NodeStatus),
    /// The answer to [`ClientRequest::ReplicaState`].
    ReplicaState {
        /// The group.
        group: GroupId,
        /// The replica's applied index: `state` holds every entry up to it.
        applied: LogIndex,
        /// The machine's encoded snapshot of its replicated state.
        state: Vec<u8>,
    },
    /// The host refused a [`ClientRequest::Machine`] without asking the machine: the clock
    /// reading is too far ahead (HLC-3), the group is not hosted here, too many requests wait,
    /// or the node stopped. Nothing happened, except after a stop (outcome unknown).
    Error {
        /// The node's HLC reading when it refused.
        sender_clock: HlcTimestamp,
        /// Why.
        error: ErrorResponse,
    },
    /// The shell refused the request before the host saw it.
    Refused(Refusal),
}

/// Why the shell refused a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The node hosts no such group. Nothing happened.
    #[error("this node hosts no group {0}")]
    UnknownGroup(GroupId),
    /// Too many requests are waiting on this node; retry later. Nothing happened.
    #[error("node overloaded: too many pending requests")]
    Overloaded,
    /// The node is shutting down, or stopped. A pending request's outcome is unknown.
    #[error("node shutting down")]
    ShuttingDown,
    /// The node answers no [`ClientRequest::Node`] requests. Nothing happened.
    #[error("this node serves no node-level requests")]
    NoNodeService,
    /// The replica's encoded state exceeds [`REPLICA_STATE_BYTES_MAX`].
    #[error("replica state of {bytes} bytes exceeds the maximum of {max} bytes")]
    StateTooLarge {
        /// The encoded state's size.
        bytes: usize,
        /// [`REPLICA_STATE_BYTES_MAX`].
        max: usize,
    },
}

/// One node's view of its groups.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node.
    pub node: NodeId,
    /// One line per hosted group, by group id.
    pub groups: Vec<GroupStatus>,
    /// Shell counters since start (for the benchmark's "where the time goes").
    pub counters: ShellCounters,
}

/// One group's state on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The group.
    pub group: GroupId,
    /// `true` if this replica leads the group.
    pub is_leader: bool,
    /// Current term.
    pub term: Term,
    /// The leader this replica knows of.
    pub leader: Option<NodeId>,
    /// Highest committed entry known here.
    pub commit: LogIndex,
    /// Highest entry applied here.
    pub applied: LogIndex,
    /// The machine's digest of its replicated state (`ReplicatedMachine::digest`): replicas
    /// that applied the same entries report the same value.
    pub digest: u64,
}

/// What the shell loop did since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellCounters {
    /// Loop iterations that called the host's `process`.
    pub iterations: u64,
    /// Iterations whose `process` synced the WAL (one fsync each).
    pub fsyncs: u64,
    /// Wall time inside `process` (persist + fsync + apply + hand-off of messages), in
    /// microseconds.
    pub process_us: u64,
    /// Wall time inside fsync (file and directory), in microseconds: part of `process_us`.
    pub sync_us: u64,
    /// Wall time of the whole loop body excluding the wait for input, in microseconds.
    pub busy_us: u64,
    /// Raft messages received from peers (a coalesced batch counts each of its messages).
    pub messages_in: u64,
    /// Raft messages sent to peers (likewise).
    pub messages_out: u64,
    /// Client requests handed to the host.
    pub client_requests: u64,
    /// Entries applied (the sum over groups of the applied index's advance, Raft's own no-op
    /// entries included).
    pub applied: u64,
    /// Envelopes not sent: undecodable by our own encoder (over a bound), a full queue or an
    /// unknown peer. Raft retransmits; a machine's request is retried by the machine.
    pub dropped_out: u64,
    /// Envelopes from peers refused by the shell: undecodable, or on a stream their kind does
    /// not belong on.
    pub refused_in: u64,
    /// Envelopes and client requests refused by the host (`decree_host::HostStats::refused`):
    /// a sender other than the certificate's node, a node-level payload naming a group, a
    /// clock reading too far ahead (HLC-3).
    pub host_refused: u64,
}

/// A message that could not be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body does not start with a message.
    #[error("undecodable client message: {0}")]
    Body(#[from] postcard::Error),
    /// The body holds a message and then more bytes.
    #[error("client message followed by {count} trailing bytes")]
    TrailingBytes {
        /// Bytes left over after the message.
        count: usize,
    },
}

/// A message that could not be encoded (a machine type that postcard cannot serialise).
#[derive(Debug, thiserror::Error)]
#[error("unencodable client message: {0}")]
pub struct EncodeError(#[from] postcard::Error);

/// Encodes a request body.
pub fn encode_request<Rq: Serialize>(request: &ClientRequest<Rq>) -> Result<Vec<u8>, EncodeError> {
    Ok(postcard::to_stdvec(request)?)
}

/// Decodes a request body that holds exactly one request. Total.
pub fn decode_request<Rq: DeserializeOwned>(
    bytes: &[u8],
) -> Result<ClientRequest<Rq>, DecodeError> {
    decode_exact(bytes)
}

/// Encodes a response body.
pub fn encode_response<Rs: Serialize>(response: &ClientReply<Rs>) -> Result<Vec<u8>, EncodeError> {
    Ok(postcard::to_stdvec(response)?)
}

/// Decodes a response body that holds exactly one response. Total.
pub fn decode_response<Rs: DeserializeOwned>(bytes: &[u8]) -> Result<ClientReply<Rs>, DecodeError> {
    decode_exact(bytes)
}

/// Decodes one value that must use every byte of `bytes`.
fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    match postcard::take_from_bytes::<T>(bytes)? {
        (value, []) => Ok(value),
        (_, rest) => Err(DecodeError::TrailingBytes { count: rest.len() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Rq = Vec<u8>;
    type Rs = (u64, String);

    #[test]
    fn requests_and_responses_round_trip() {
        let reqs: [ClientRequest<Rq>; 4] = [
            ClientRequest::Machine {
                group: GroupId(1),
                sender_clock: HlcTimestamp::new(5, 1),
                request: b"abc".to_vec(),
            },
            ClientRequest::Status,
            ClientRequest::ReplicaState { group: GroupId(4) },
            ClientRequest::Node(b"n".to_vec()),
        ];
        for r in reqs {
            assert_eq!(decode_request::<Rq>(&encode_request(&r).unwrap()).unwrap(), r);
        }
        let resps: [ClientReply<Rs>; 5] = [
            ClientReply::Machine {
                sender_clock: HlcTimestamp::new(9, 0),
                response: (7, "x".into()),
            },
            ClientReply::Status(NodeStatus {
                node: NodeId(2),
                groups: vec![GroupStatus { group: GroupId(1), digest: 3, ..Default::default() }],
                counters: ShellCounters { iterations: 4, ..Default::default() },
            }),
            ClientReply::ReplicaState { group: GroupId(4), applied: LogIndex(8), state: vec![1] },
            ClientReply::Error {
                sender_clock: HlcTimestamp::new(9, 1),
                error: ErrorResponse::UnknownGroup { group: GroupId(5) },
            },
            ClientReply::Refused(Refusal::Overloaded),
        ];
        for r in resps {
            assert_eq!(decode_response::<Rs>(&encode_response(&r).unwrap()).unwrap(), r);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in
            [&[][..], &[0xff; 3][..], &[9, 9, 9, 9, 9][..], &[0, 1, 200, 200, 200, 200][..]]
        {
            let _ = decode_request::<Rq>(bytes);
            let _ = decode_response::<Rs>(bytes);
        }
        assert!(decode_request::<Rq>(&[0xff]).is_err());
        assert!(decode_response::<Rs>(&[]).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut request = encode_request::<Rq>(&ClientRequest::Status).unwrap();
        request.extend_from_slice(&[0, 0]);
        assert_eq!(decode_request::<Rq>(&request), Err(DecodeError::TrailingBytes { count: 2 }));
        let mut response =
            encode_response::<Rs>(&ClientReply::Refused(Refusal::Overloaded)).unwrap();
        response.push(7);
        assert_eq!(decode_response::<Rs>(&response), Err(DecodeError::TrailingBytes { count: 1 }));
    }
}
