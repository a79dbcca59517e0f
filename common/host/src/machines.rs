//! Small machines for tests, the simulator and the replicated-log node. Both speak one toy
//! protocol ([`ToyRequest`], [`ToyResponse`]), as participant and coordinator groups both speak
//! `decree_proto`'s, so that one host runs both kinds side by side through
//! [`crate::Either`], the product's own mechanism; each answers the other kind's requests with
//! [`ToyResponse::WrongKind`].
//!
//! - [`CommandLog`]: the list of commands a group applied, in log order: appends are
//!   proposed, reads are linearizable ReadIndex reads ([`Admission::Read`]).
//! - [`Register`]: one `u64` per group that can be set and read: the second kind of machine.

use decree_types::{GroupId, LogIndex, NodeId, Term};
use serde::{Deserialize, Serialize};

use crate::machine::{
    Admission, Applied, ApplyContext, Context, ReplicatedMachine, ReplyTo, Requester, SnapshotError,
};

/// FNV-1a over bytes: the digests of the test machines.
fn fnv(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// An append-only list of applied commands, each with the index it was applied at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandLog {
    commands: Vec<(LogIndex, Vec<u8>)>,
}

/// A request to a toy machine: the first two are a [`CommandLog`]'s, the last two a
/// [`Register`]'s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToyRequest {
    /// Append these bytes (a [`CommandLog`]).
    Append(Vec<u8>),
    /// How far the log is, read linearizably (a [`CommandLog`]).
    Read,
    /// Set the value (a [`Register`]).
    Set(u64),
    /// Read the value linearizably (a [`Register`]).
    Get,
}

/// An answer from a toy machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToyResponse {
    /// The command is applied at `index` (proposed in `term`).
    Appended {
        /// Its index.
        index: LogIndex,
        /// Its term.
        term: Term,
    },
    /// A linearizable read: at read index `read_index`, the log held `count` commands, the
    /// last one at `last`.
    Contents {
        /// The read index the read was served at (RAFT-3).
        read_index: LogIndex,
        /// Commands applied.
        count: u64,
        /// The index of the last one (0 if none).
        last: LogIndex,
    },
    /// This replica does not lead the group; try `leader`.
    NotLeader {
        /// The leader this replica knows of.
        leader: Option<NodeId>,
    },
    /// The outcome is unknown (leadership changed before the entry applied).
    Unknown,
    /// A register's write is applied at `index`.
    Written {
        /// Its index.
        index: LogIndex,
    },
    /// A register's value, and how many writes made it, read at `read_index` (RAFT-3).
    Value {
        /// The value.
        value: u64,
        /// Writes applied.
        writes: u64,
        /// The read index the read was served at.
        read_index: LogIndex,
    },
    /// The request is the other kind of machine's (a [`Register`]'s sent to a
    /// [`CommandLog`], or the reverse); nothing was done.
    WrongKind,
}

impl CommandLog {
    /// An empty log.
    pub fn new() -> Self {
        CommandLog::default()
    }

    /// Every applied command with its index, in log order.
    pub fn commands(&self) -> &[(LogIndex, Vec<u8>)] {
        &self.commands
    }

    /// Decodes an encoded snapshot (the simulator's checkers read them).
    pub fn decode_snapshot(bytes: &[u8]) -> Result<CommandLog, SnapshotError> {
        postcard::from_bytes(bytes).map_err(|e| SnapshotError(e.to_string()))
    }
}

impl ReplicatedMachine for CommandLog {
    type Command = Vec<u8>;
    type Request = ToyRequest;
    type Response = ToyResponse;
    type Snapshot = CommandLog;

    fn admit(
        &mut self,
        cx: &mut Context<'_, Self>,
        _requester: Requester,
        _reply_to: ReplyTo,
        request: ToyRequest,
    ) -> Admission<Self> {
        match (request, cx.read_confirmed()) {
            (ToyRequest::Append(bytes), _) => {
                Admission::Propose { command: bytes, on_lost: ToyResponse::Unknown }
            }
            (ToyRequest::Read, None) => Admission::Read(ToyRequest::Read),
            (ToyRequest::Read, Some(read_index)) => Admission::Reply(ToyResponse::Contents {
                read_index,
                count: self.commands.len() as u64,
                last: self.commands.last().map_or(LogIndex(0), |c| c.0),
            }),
            (ToyRequest::Set(_) | ToyRequest::Get, _) => Admission::Reply(ToyResponse::WrongKind),
        }
    }

    fn apply(
        &mut self,
        _cx: &mut ApplyContext<'_, Self>,
        entry: Applied<Vec<u8>>,
    ) -> Option<ToyResponse> {
        if let Some(&(last, _)) = self.commands.last() {
            // Invariant (INV-R9): the host applies in index order.
            assert!(entry.index > last, "INV-R9: applied {} after {last}", entry.index);
        }
        self.commands.push((entry.index, entry.command));
        Some(ToyResponse::Appended { index: entry.index, term: entry.term })
    }

    fn redirect(_group: GroupId, leader: Option<NodeId>) -> ToyResponse {
        ToyResponse::NotLeader { leader }
    }

    fn snapshot(&self) -> CommandLog {
        self.clone()
    }

    fn encode_snapshot(snapshot: &CommandLog) -> Vec<u8> {
        // Encoding plain data into a Vec cannot fail.
        postcard::to_allocvec(snapshot).unwrap_or_default()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        *self = CommandLog::decode_snapshot(bytes)?;
        Ok(())
    }

    fn digest(&self) -> u64 {
        self.commands.iter().fold(FNV_START, |h, (i, c)| fnv(fnv(h, &i.0.to_le_bytes()), c))
    }
}

/// One value per group: the second kind of test machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    value: u64,
    /// How many writes it applied.
    writes: u64,
}

impl Register {
    /// The value.
    pub fn value(&self) -> u64 {
        self.value
    }

    /// Writes applied.
    pub fn writes(&self) -> u64 {
        self.writes
    }
}

impl ReplicatedMachine for Register {
    type Command = u64;
    type Request = ToyRequest;
    type Response = ToyResponse;
    type Snapshot = Register;

    fn admit(
        &mut self,
        cx: &mut Context<'_, Self>,
        _requester: Requester,
        _reply_to: ReplyTo,
        request: ToyRequest,
    ) -> Admission<Self> {
        match (request, cx.read_confirmed()) {
            (ToyRequest::Set(v), _) => {
                Admission::Propose { command: v, on_lost: ToyResponse::Unknown }
            }
            (ToyRequest::Get, None) => Admission::Read(ToyRequest::Get),
            (ToyRequest::Get, Some(read_index)) => Admission::Reply(ToyResponse::Value {
                value: self.value,
                writes: self.writes,
                read_index,
            }),
            (ToyRequest::Append(_) | ToyRequest::Read, _) => {
                Admission::Reply(ToyResponse::WrongKind)
            }
        }
    }

    fn apply(
        &mut self,
        _cx: &mut ApplyContext<'_, Self>,
        entry: Applied<u64>,
    ) -> Option<ToyResponse> {
        self.value = entry.command;
        self.writes += 1;
        Some(ToyResponse::Written { index: entry.index })
    }

    fn redirect(_group: GroupId, leader: Option<NodeId>) -> ToyResponse {
        ToyResponse::NotLeader { leader }
    }

    fn snapshot(&self) -> Register {
        self.clone()
    }

    fn encode_snapshot(snapshot: &Register) -> Vec<u8> {
        // Encoding plain data into a Vec cannot fail.
        postcard::to_allocvec(snapshot).unwrap_or_default()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        *self = postcard::from_bytes(bytes).map_err(|e| SnapshotError(e.to_string()))?;
        Ok(())
    }

    fn digest(&self) -> u64 {
        fnv(fnv(FNV_START, &self.value.to_le_bytes()), &self.writes.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use decree_types::HlcTimestamp;

    use super::*;
    use crate::testing::Harness;
    use crate::{Either, EitherCommand};

    type Toy = Either<CommandLog, Register>;

    fn leader(machine: Toy) -> Harness<Toy> {
        let mut h = Harness::new(machine, GroupId(1), NodeId(1), 250_000_000, 1_000);
        h.become_ready_leader(Term(1));
        h
    }

    #[test]
    fn each_toy_machine_serves_its_own_requests_and_refuses_the_others() {
        let client = Requester::Node(NodeId(2));
        let mut log = leader(Either::Left(CommandLog::new()));
        let appended = log.request(client, ToyRequest::Append(b"a".to_vec()));
        assert!(matches!(appended, Some(ToyResponse::Appended { .. })), "{appended:?}");
        assert_eq!(log.request(client, ToyRequest::Set(5)), Some(ToyResponse::WrongKind));
        assert_eq!(log.request(client, ToyRequest::Get), Some(ToyResponse::WrongKind));

        let mut register = leader(Either::Right(Register::default()));
        let written = register.request(client, ToyRequest::Set(5));
        assert!(matches!(written, Some(ToyResponse::Written { .. })), "{written:?}");
        let value = register.request(client, ToyRequest::Get);
        assert!(matches!(value, Some(ToyResponse::Value { value: 5, writes: 1, .. })), "{value:?}");
        let wrong = register.request(client, ToyRequest::Append(b"a".to_vec()));
        assert_eq!(wrong, Some(ToyResponse::WrongKind));
        assert_eq!(register.request(client, ToyRequest::Read), Some(ToyResponse::WrongKind));
    }

    #[test]
    fn a_toy_snapshot_restores_only_into_its_own_kind() {
        let mut register = leader(Either::Right(Register::default()));
        register.apply(HlcTimestamp::default(), EitherCommand::Right(9));
        let bytes = Toy::encode_snapshot(&register.machine.snapshot());
        let mut other: Toy = Either::Right(Register::default());
        other.restore(&bytes).unwrap();
        assert_eq!(other.digest(), register.machine.digest());
        let mut log: Toy = Either::Left(CommandLog::new());
        assert!(log.restore(&bytes).is_err());
    }
}
