//! Small machines for tests, the simulator and the replicated-log node, and [`Either`], which
//! hosts two kinds of machine side by side on one host (one node, one WAL) without `dyn`.
//!
//! - [`CommandLog`]: the list of commands a group applied, in log order: appends are
//!   proposed, reads are linearizable ReadIndex reads ([`Admission::Read`]).
//! - [`Register`]: one `u64` per group that can be set and read: the second kind of machine.

use decree_types::{GroupId, LogIndex, NodeId, Term};
use serde::{Deserialize, Serialize};

use crate::machine::{
    Admission, Applied, ApplyContext, Context, PeerError, ReplicatedMachine, ReplyTo, Requester,
    RoleEvent, SnapshotError,
};
use decree_proto::RequestId;

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

/// A request to a [`CommandLog`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogRequest {
    /// Append these bytes.
    Append(Vec<u8>),
    /// How far the log is, read linearizably.
    Read,
}

/// An answer from a [`CommandLog`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogResponse {
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
    type Request = LogRequest;
    type Response = LogResponse;
    type Snapshot = CommandLog;

    fn admit(
        &mut self,
        cx: &mut Context<'_, Self>,
        _requester: Requester,
        _reply_to: ReplyTo,
        request: LogRequest,
    ) -> Admission<Self> {
        match (request, cx.read_confirmed()) {
            (LogRequest::Append(bytes), _) => {
                Admission::Propose { command: bytes, on_lost: LogResponse::Unknown }
            }
            (LogRequest::Read, None) => Admission::Read(LogRequest::Read),
            (LogRequest::Read, Some(read_index)) => Admission::Reply(LogResponse::Contents {
                read_index,
                count: self.commands.len() as u64,
                last: self.commands.last().map_or(LogIndex(0), |c| c.0),
            }),
        }
    }

    fn apply(
        &mut self,
        _cx: &mut ApplyContext<'_, Self>,
        entry: Applied<Vec<u8>>,
    ) -> Option<LogResponse> {
        if let Some(&(last, _)) = self.commands.last() {
            // Invariant (INV-R9): the host applies in index order.
            assert!(entry.index > last, "INV-R9: applied {} after {last}", entry.index);
        }
        self.commands.push((entry.index, entry.command));
        Some(LogResponse::Appended { index: entry.index, term: entry.term })
    }

    fn redirect(_group: GroupId, leader: Option<NodeId>) -> LogResponse {
        LogResponse::NotLeader { leader }
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

/// A request to a [`Register`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegisterRequest {
    /// Set the value.
    Set(u64),
    /// Read the value linearizably.
    Get,
}

/// An answer from a [`Register`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegisterResponse {
    /// The write is applied at `index`.
    Written {
        /// Its index.
        index: LogIndex,
    },
    /// The value, and how many writes made it, read at `read_index` (RAFT-3).
    Value {
        /// The value.
        value: u64,
        /// Writes applied.
        writes: u64,
        /// The read index the read was served at.
        read_index: LogIndex,
    },
    /// Not the leader.
    NotLeader {
        /// The leader this replica knows of.
        leader: Option<NodeId>,
    },
    /// The outcome is unknown.
    Unknown,
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
    type Request = RegisterRequest;
    type Response = RegisterResponse;
    type Snapshot = Register;

    fn admit(
        &mut self,
        cx: &mut Context<'_, Self>,
        _requester: Requester,
        _reply_to: ReplyTo,
        request: RegisterRequest,
    ) -> Admission<Self> {
        match (request, cx.read_confirmed()) {
            (RegisterRequest::Set(v), _) => {
                Admission::Propose { command: v, on_lost: RegisterResponse::Unknown }
            }
            (RegisterRequest::Get, None) => Admission::Read(RegisterRequest::Get),
            (RegisterRequest::Get, Some(read_index)) => Admission::Reply(RegisterResponse::Value {
                value: self.value,
                writes: self.writes,
                read_index,
            }),
        }
    }

    fn apply(
        &mut self,
        _cx: &mut ApplyContext<'_, Self>,
        entry: Applied<u64>,
    ) -> Option<RegisterResponse> {
        self.value = entry.command;
        self.writes += 1;
        Some(RegisterResponse::Written { index: entry.index })
    }

    fn redirect(_group: GroupId, leader: Option<NodeId>) -> RegisterResponse {
        RegisterResponse::NotLeader { leader }
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

/// One of two kinds of machine: how one host runs groups of different kinds side by side
/// (participant and coordinator groups, or [`CommandLog`] and [`Register`]), statically
/// dispatched. Commands, requests and responses are tagged with the kind; a request of the
/// other kind is answered [`Tagged::Mismatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Either<A, B> {
    /// A group of the first kind.
    A(A),
    /// A group of the second kind.
    B(B),
}

/// A command, request, response or snapshot of an [`Either`] machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tagged<A, B> {
    /// Of the first kind.
    A(A),
    /// Of the second kind.
    B(B),
    /// A redirect (the host answers it without knowing the group's kind).
    NotLeader {
        /// The group.
        group: GroupId,
        /// The leader this replica knows of.
        leader: Option<NodeId>,
    },
    /// A request or snapshot of the other kind than the group's.
    Mismatch,
}

fn wrap_admission<X: ReplicatedMachine, Y: ReplicatedMachine>(
    admission: Admission<X>,
    command: impl Fn(X::Command) -> Y::Command,
    wrap: impl Fn(X::Response) -> Y::Response,
    request: impl Fn(X::Request) -> Y::Request,
) -> Admission<Y> {
    match admission {
        Admission::Reply(r) => Admission::Reply(wrap(r)),
        Admission::Propose { command: c, on_lost } => {
            Admission::Propose { command: command(c), on_lost: wrap(on_lost) }
        }
        Admission::Read(r) => Admission::Read(request(r)),
        Admission::Later => Admission::Later,
    }
}

impl<A: ReplicatedMachine, B: ReplicatedMachine> ReplicatedMachine for Either<A, B> {
    type Command = Tagged<A::Command, B::Command>;
    type Request = Tagged<A::Request, B::Request>;
    type Response = Tagged<A::Response, B::Response>;
    type Snapshot = Tagged<A::Snapshot, B::Snapshot>;

    fn admit(
        &mut self,
        cx: &mut Context<'_, Self>,
        requester: Requester,
        reply_to: ReplyTo,
        request: Self::Request,
    ) -> Admission<Self> {
        match (self, request) {
            (Either::A(a), Tagged::A(r)) => {
                let admission = with_side_a(cx, a, |a, c| a.admit(c, requester, reply_to, r));
                wrap_admission(admission, Tagged::A, Tagged::A, Tagged::A)
            }
            (Either::B(b), Tagged::B(r)) => {
                let admission = with_side_b(cx, b, |b, c| b.admit(c, requester, reply_to, r));
                wrap_admission(admission, Tagged::B, Tagged::B, Tagged::B)
            }
            _ => Admission::Reply(Tagged::Mismatch),
        }
    }

    fn apply(
        &mut self,
        cx: &mut ApplyContext<'_, Self>,
        entry: Applied<Self::Command>,
    ) -> Option<Self::Response> {
        let Applied { index, term, proposed_at, command } = entry;
        match (self, command) {
            (Either::A(a), Tagged::A(command)) => {
                let mut effects = Vec::new();
                let r = {
                    let mut c = ApplyContext {
                        group: cx.group,
                        role: cx.role,
                        effects: &mut effects,
                        next_request_id: &mut *cx.next_request_id,
                    };
                    a.apply(&mut c, Applied { index, term, proposed_at, command })
                };
                cx.effects.extend(effects.into_iter().map(|e| map_a::<A, B>(e)));
                r.map(Tagged::A)
            }
            (Either::B(b), Tagged::B(command)) => {
                let mut effects = Vec::new();
                let r = {
                    let mut c = ApplyContext {
                        group: cx.group,
                        role: cx.role,
                        effects: &mut effects,
                        next_request_id: &mut *cx.next_request_id,
                    };
                    b.apply(&mut c, Applied { index, term, proposed_at, command })
                };
                cx.effects.extend(effects.into_iter().map(|e| map_b::<A, B>(e)));
                r.map(Tagged::B)
            }
            // A command of the other kind in this group's log: only a machine's own
            // proposals reach its log, so this is a bug in the host or corruption.
            (_, _) => panic!("{}: a command of another kind of machine was applied", cx.group),
        }
    }

    fn on_role(&mut self, cx: &mut Context<'_, Self>, event: RoleEvent) {
        match self {
            Either::A(a) => with_side_a(cx, a, |a, c| a.on_role(c, event)),
            Either::B(b) => with_side_b(cx, b, |b, c| b.on_role(c, event)),
        }
    }

    fn handle_response(
        &mut self,
        cx: &mut Context<'_, Self>,
        request_id: RequestId,
        from: NodeId,
        response: Result<Self::Response, PeerError>,
    ) {
        match self {
            Either::A(a) => {
                let response = match response {
                    Ok(Tagged::A(r)) => Ok(r),
                    Ok(_) => Err(PeerError::Refused("a response of another kind".into())),
                    Err(e) => Err(e),
                };
                with_side_a(cx, a, |a, c| a.handle_response(c, request_id, from, response))
            }
            Either::B(b) => {
                let response = match response {
                    Ok(Tagged::B(r)) => Ok(r),
                    Ok(_) => Err(PeerError::Refused("a response of another kind".into())),
                    Err(e) => Err(e),
                };
                with_side_b(cx, b, |b, c| b.handle_response(c, request_id, from, response))
            }
        }
    }

    fn poll_timeout(&self) -> Option<u64> {
        match self {
            Either::A(a) => a.poll_timeout(),
            Either::B(b) => b.poll_timeout(),
        }
    }

    fn handle_timeout(&mut self, cx: &mut Context<'_, Self>) {
        match self {
            Either::A(a) => with_side_a(cx, a, |a, c| a.handle_timeout(c)),
            Either::B(b) => with_side_b(cx, b, |b, c| b.handle_timeout(c)),
        }
    }

    fn redirect(group: GroupId, leader: Option<NodeId>) -> Self::Response {
        Tagged::NotLeader { group, leader }
    }

    fn snapshot(&self) -> Self::Snapshot {
        match self {
            Either::A(a) => Tagged::A(a.snapshot()),
            Either::B(b) => Tagged::B(b.snapshot()),
        }
    }

    fn encode_snapshot(snapshot: &Self::Snapshot) -> Vec<u8> {
        let (tag, mut bytes) = match snapshot {
            Tagged::A(s) => (0u8, A::encode_snapshot(s)),
            Tagged::B(s) => (1u8, B::encode_snapshot(s)),
            Tagged::NotLeader { .. } | Tagged::Mismatch => (2u8, Vec::new()),
        };
        bytes.insert(0, tag);
        bytes
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        match (self, bytes.split_first()) {
            (Either::A(a), Some((0, rest))) => a.restore(rest),
            (Either::B(b), Some((1, rest))) => b.restore(rest),
            _ => Err(SnapshotError("a snapshot of another kind of machine".into())),
        }
    }

    fn digest(&self) -> u64 {
        match self {
            Either::A(a) => a.digest(),
            Either::B(b) => b.digest(),
        }
    }
}

fn map_a<A: ReplicatedMachine, B: ReplicatedMachine>(
    effect: crate::machine::Effect<A>,
) -> crate::machine::Effect<Either<A, B>> {
    use crate::machine::Effect;
    match effect {
        Effect::Reply(to, r) => Effect::Reply(to, Tagged::A(r)),
        Effect::Propose { command, waiter } => Effect::Propose {
            command: Tagged::A(command),
            waiter: waiter.map(|(to, r)| (to, Tagged::A(r))),
        },
        Effect::Send { request_id, to, request } => {
            Effect::Send { request_id, to, request: Tagged::A(request) }
        }
        Effect::Readmit { requester, reply_to, request } => {
            Effect::Readmit { requester, reply_to, request: Tagged::A(request) }
        }
        Effect::LeaderHint { group, leader } => Effect::LeaderHint { group, leader },
    }
}

fn map_b<A: ReplicatedMachine, B: ReplicatedMachine>(
    effect: crate::machine::Effect<B>,
) -> crate::machine::Effect<Either<A, B>> {
    use crate::machine::Effect;
    match effect {
        Effect::Reply(to, r) => Effect::Reply(to, Tagged::B(r)),
        Effect::Propose { command, waiter } => Effect::Propose {
            command: Tagged::B(command),
            waiter: waiter.map(|(to, r)| (to, Tagged::B(r))),
        },
        Effect::Send { request_id, to, request } => {
            Effect::Send { request_id, to, request: Tagged::B(request) }
        }
        Effect::Readmit { requester, reply_to, request } => {
            Effect::Readmit { requester, reply_to, request: Tagged::B(request) }
        }
        Effect::LeaderHint { group, leader } => Effect::LeaderHint { group, leader },
    }
}

/// Runs `f` on the first kind's machine with a context over the same host.
fn with_side_a<A: ReplicatedMachine, B: ReplicatedMachine, R>(
    cx: &mut Context<'_, Either<A, B>>,
    a: &mut A,
    f: impl FnOnce(&mut A, &mut Context<'_, A>) -> R,
) -> R {
    let mut effects = Vec::new();
    let r = {
        let mut c = Context {
            group: cx.group,
            node: cx.node,
            role: cx.role,
            now_ns: cx.now_ns,
            clock: &mut *cx.clock,
            effects: &mut effects,
            next_request_id: &mut *cx.next_request_id,
            read_index: cx.read_index,
        };
        f(a, &mut c)
    };
    cx.effects.extend(effects.into_iter().map(map_a::<A, B>));
    r
}

/// Runs `f` on the second kind's machine with a context over the same host.
fn with_side_b<A: ReplicatedMachine, B: ReplicatedMachine, R>(
    cx: &mut Context<'_, Either<A, B>>,
    b: &mut B,
    f: impl FnOnce(&mut B, &mut Context<'_, B>) -> R,
) -> R {
    let mut effects = Vec::new();
    let r = {
        let mut c = Context {
            group: cx.group,
            node: cx.node,
            role: cx.role,
            now_ns: cx.now_ns,
            clock: &mut *cx.clock,
            effects: &mut effects,
            next_request_id: &mut *cx.next_request_id,
            read_index: cx.read_index,
        };
        f(b, &mut c)
    };
    cx.effects.extend(effects.into_iter().map(map_b::<A, B>));
    r
}
