//! The log node's client protocol: what `decree-lognode` serves over the endpoint's
//! request/response streams.
//!
//! These messages are the shell's own (the replicated-log node is a test and benchmark vehicle,
//! not a product API), so they live beside the shell rather than in `decree-proto`. They travel
//! as postcard bodies inside the transport's frames; [`decode_request`] and [`decode_response`]
//! are total: any byte string yields a value or a typed error, never a panic. A body is exactly
//! one message: bytes left over after it are refused, as the envelope decoder refuses them.

use decree_types::{GroupId, LogIndex, NodeId, Term};
use serde::{Deserialize, Serialize};

/// Largest command a client may propose, in bytes. Bounds the memory one request can pin in the
/// pending-proposal table and the size of an append.
pub const COMMAND_BYTES_MAX: usize = 64 * 1024;

/// Most commands returned by one [`LogRequest::Read`] reply; a reader pages with `from`.
/// 16 Ki commands of [`COMMAND_BYTES_MAX`] would exceed a frame, so replies are also cut at
/// [`READ_REPLY_BYTES_MAX`].
pub const READ_REPLY_COMMANDS_MAX: usize = 16 * 1024;

/// Most command bytes in one read reply (well under the 16 MiB frame limit).
pub const READ_REPLY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// A client's request to a log node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogRequest {
    /// Append `command` to `group`'s log. Answered once the entry is **applied** on this node
    /// (so it is a committed entry, durable on a majority), or with a refusal.
    Propose { group: GroupId, command: Vec<u8> },
    /// A linearizable read (RAFT-3, ReadIndex) of `group`'s applied commands, starting at
    /// position `from` (0-based) of the applied list. Served by leaders and followers alike:
    /// a follower asks the leader for the read index, then serves from its own state.
    Read { group: GroupId, from: u64 },
    /// Role, term, leader and indexes of every group on the node.
    Status,
}

/// A log node's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogResponse {
    /// The proposal is applied at `index` (it was appended in `term`).
    Applied { index: LogIndex, term: Term },
    /// This node does not lead `group`; `hint` is the leader it knows of, if any.
    /// The proposal was not appended.
    NotLeader { group: GroupId, hint: Option<NodeId> },
    /// Commands of `group` at positions `from..from + commands.len()` of the applied list, read
    /// at or after `read_index`. `more` says the reply was cut and the reader should page on.
    Commands { group: GroupId, read_index: LogIndex, from: u64, commands: Vec<Vec<u8>>, more: bool },
    /// The node's status.
    Status(NodeStatus),
    /// The request was refused; see the reason for whether it may have taken effect.
    Refused(Refusal),
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The node hosts no such group. Nothing happened.
    #[error("this node hosts no group {0}")]
    UnknownGroup(GroupId),
    /// The command exceeds [`COMMAND_BYTES_MAX`]. Nothing happened.
    #[error("command of {bytes} bytes exceeds the maximum of {max} bytes")]
    CommandTooLarge { bytes: usize, max: usize },
    /// Too many requests are waiting on this node; retry later. Nothing happened.
    #[error("node overloaded: too many pending requests")]
    Overloaded,
    /// The proposal was appended but another leader's entry took its index: it will never be
    /// applied. The client may retry.
    #[error("proposal superseded at index {index} by a newer leader")]
    Superseded { index: LogIndex },
    /// The read could not be confirmed (leadership changed meanwhile); retry.
    #[error("read not confirmed: leadership changed")]
    ReadAborted,
    /// The node is shutting down. A pending proposal's outcome is unknown.
    #[error("node shutting down")]
    ShuttingDown,
    /// The request could not be decoded.
    #[error("bad request: {0}")]
    BadRequest(String),
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
    /// Commands applied (the length of the group's list).
    pub commands: u64,
}

/// What the shell loop did since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellCounters {
    /// Loop iterations that called `process`.
    pub iterations: u64,
    /// Iterations whose `process` synced the WAL (one fsync each).
    pub fsyncs: u64,
    /// Wall time inside `process` (persist + fsync + hand-off of messages), in microseconds.
    pub process_us: u64,
    /// Wall time inside fsync (file and directory), in microseconds: part of `process_us`.
    pub sync_us: u64,
    /// Wall time of the whole loop body excluding the wait for input, in microseconds.
    pub busy_us: u64,
    /// Raft messages received from peers and handed to the node (a coalesced batch counts
    /// each of its messages).
    pub messages_in: u64,
    /// Raft messages sent to peers.
    pub messages_out: u64,
    /// Proposals accepted into the log.
    pub proposals: u64,
    /// Entries applied.
    pub applied: u64,
}

/// A message that could not be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body does not start with a message.
    #[error("undecodable log-node message: {0}")]
    Body(#[from] postcard::Error),
    /// The body holds a message and then more bytes.
    #[error("log-node message followed by {count} trailing bytes")]
    TrailingBytes {
        /// Bytes left over after the message.
        count: usize,
    },
}

/// Encodes a request body.
pub fn encode_request(request: &LogRequest) -> Vec<u8> {
    // Invariant: postcard serialisation into a Vec of plain data types cannot fail.
    postcard::to_stdvec(request).expect("postcard encodes plain data into a Vec")
}

/// Decodes a request body that holds exactly one request. Total.
pub fn decode_request(bytes: &[u8]) -> Result<LogRequest, DecodeError> {
    decode_exact(bytes)
}

/// Encodes a response body.
pub fn encode_response(response: &LogResponse) -> Vec<u8> {
    // Invariant: postcard serialisation into a Vec of plain data types cannot fail.
    postcard::to_stdvec(response).expect("postcard encodes plain data into a Vec")
}

/// Decodes a response body that holds exactly one response. Total.
pub fn decode_response(bytes: &[u8]) -> Result<LogResponse, DecodeError> {
    decode_exact(bytes)
}

/// Decodes one value that must use every byte of `bytes`.
fn decode_exact<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    match postcard::take_from_bytes::<T>(bytes)? {
        (value, []) => Ok(value),
        (_, rest) => Err(DecodeError::TrailingBytes { count: rest.len() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip() {
        let reqs = [
            LogRequest::Propose { group: GroupId(1), command: b"abc".to_vec() },
            LogRequest::Read { group: GroupId(2), from: 7 },
            LogRequest::Status,
        ];
        for r in reqs {
            assert_eq!(decode_request(&encode_request(&r)).unwrap(), r);
        }
        let resp = LogResponse::Commands {
            group: GroupId(1),
            read_index: LogIndex(9),
            from: 0,
            commands: vec![b"x".to_vec()],
            more: false,
        };
        assert_eq!(decode_response(&encode_response(&resp)).unwrap(), resp);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in
            [&[][..], &[0xff; 3][..], &[9, 9, 9, 9, 9][..], &[0, 1, 200, 200, 200, 200][..]]
        {
            let _ = decode_request(bytes);
            let _ = decode_response(bytes);
        }
        assert!(decode_request(&[0xff]).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut request = encode_request(&LogRequest::Status);
        request.extend_from_slice(&[0, 0]);
        assert_eq!(decode_request(&request), Err(DecodeError::TrailingBytes { count: 2 }));
        let mut response = encode_response(&LogResponse::Refused(Refusal::Overloaded));
        response.push(7);
        assert_eq!(decode_response(&response), Err(DecodeError::TrailingBytes { count: 1 }));
    }
}
