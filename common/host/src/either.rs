//! Two kinds of machine on one host: [`Either`] is a [`ReplicatedMachine`] that is one of two
//! machines speaking the same requests and responses (a participant group or a coordinator
//! group of the server: both speak `decree_proto::Request`; the toy machines
//! [`crate::machines::CommandLog`] and [`crate::machines::Register`] both speak
//! [`crate::machines::ToyRequest`]). The group a request names decides which machine sees
//! it; a machine answers a request meant for the other kind with an error of its protocol.
//! The host is generic over one machine type, so a process that hosts several kinds uses this
//! enum: static dispatch, no `dyn` on the hot path, and every group of every kind shares the
//! node's WAL and its fsyncs.
//!
//! A group's log only ever holds commands of its own kind; each command and snapshot carries
//! its kind's tag, and a tag of the other kind is corruption (apply stops the node, restore
//! fails).

use decree_proto::RequestId;
use decree_types::{GroupId, NodeId};
use serde::{Deserialize, Serialize};

use crate::machine::{
    Admission, Applied, ApplyContext, Context, Effect, PeerError, ReplicatedMachine, ReplyTo,
    Requester, RoleEvent, SnapshotError,
};

/// One of two machine kinds with the same requests and responses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Either<A, B> {
    /// The first kind.
    Left(A),
    /// The second kind.
    Right(B),
}

/// A command of one of the two kinds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EitherCommand<A, B> {
    /// A command of the first kind.
    Left(A),
    /// A command of the second kind.
    Right(B),
}

/// Snapshot tags: the first byte of an encoded [`Either`] snapshot.
const LEFT_TAG: u8 = 1;
const RIGHT_TAG: u8 = 2;

/// The kind of an encoded [`Either`] snapshot and the kind's own encoding of it (`None`: not
/// an [`Either`] snapshot). For readers of snapshots outside the machine (the simulator's
/// checkers).
pub fn snapshot_kind(bytes: &[u8]) -> Option<Either<&[u8], &[u8]>> {
    match bytes.split_first() {
        Some((&LEFT_TAG, body)) => Some(Either::Left(body)),
        Some((&RIGHT_TAG, body)) => Some(Either::Right(body)),
        _ => None,
    }
}

impl<A, B> ReplicatedMachine for Either<A, B>
where
    A: ReplicatedMachine,
    B: ReplicatedMachine<Request = A::Request, Response = A::Response>,
{
    type Command = EitherCommand<A::Command, B::Command>;
    type Request = A::Request;
    type Response = A::Response;
    type Snapshot = Either<A::Snapshot, B::Snapshot>;

    fn admit(
        &mut self,
        cx: &mut Context<'_, Self>,
        requester: Requester,
        reply_to: ReplyTo,
        request: Self::Request,
    ) -> Admission<Self> {
        match self {
            Either::Left(a) => {
                let admission = with_inner(cx, EitherCommand::Left, |inner| {
                    a.admit(inner, requester, reply_to, request)
                });
                map_admission(admission, EitherCommand::Left)
            }
            Either::Right(b) => {
                let admission = with_inner(cx, EitherCommand::Right, |inner| {
                    b.admit(inner, requester, reply_to, request)
                });
                map_admission(admission, EitherCommand::Right)
            }
        }
    }

    fn apply(
        &mut self,
        cx: &mut ApplyContext<'_, Self>,
        entry: Applied<Self::Command>,
    ) -> Option<Self::Response> {
        let Applied { index, term, proposed_at, command } = entry;
        match (self, command) {
            (Either::Left(a), EitherCommand::Left(command)) => {
                with_inner_apply(cx, EitherCommand::Left, |inner| {
                    a.apply(inner, Applied { index, term, proposed_at, command })
                })
            }
            (Either::Right(b), EitherCommand::Right(command)) => {
                with_inner_apply(cx, EitherCommand::Right, |inner| {
                    b.apply(inner, Applied { index, term, proposed_at, command })
                })
            }
            // The host wrote only this group's commands to its log; another kind's command
            // here means the log is not this group's: stop rather than guess.
            _ => panic!("{}: entry {index} holds a command of another machine kind", cx.group),
        }
    }

    fn on_role(&mut self, cx: &mut Context<'_, Self>, event: RoleEvent) {
        match self {
            Either::Left(a) => with_inner(cx, EitherCommand::Left, |inner| a.on_role(inner, event)),
            Either::Right(b) => {
                with_inner(cx, EitherCommand::Right, |inner| b.on_role(inner, event))
            }
        }
    }

    fn on_leader_seen(&mut self, cx: &mut Context<'_, Self>, group: GroupId, leader: NodeId) {
        match self {
            Either::Left(a) => {
                with_inner(cx, EitherCommand::Left, |inner| a.on_leader_seen(inner, group, leader))
            }
            Either::Right(b) => {
                with_inner(cx, EitherCommand::Right, |inner| b.on_leader_seen(inner, group, leader))
            }
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
            Either::Left(a) => with_inner(cx, EitherCommand::Left, |inner| {
                a.handle_response(inner, request_id, from, response)
            }),
            Either::Right(b) => with_inner(cx, EitherCommand::Right, |inner| {
                b.handle_response(inner, request_id, from, response)
            }),
        }
    }

    fn poll_timeout(&self) -> Option<u64> {
        match self {
            Either::Left(a) => a.poll_timeout(),
            Either::Right(b) => b.poll_timeout(),
        }
    }

    fn handle_timeout(&mut self, cx: &mut Context<'_, Self>) {
        match self {
            Either::Left(a) => with_inner(cx, EitherCommand::Left, |inner| a.handle_timeout(inner)),
            Either::Right(b) => {
                with_inner(cx, EitherCommand::Right, |inner| b.handle_timeout(inner))
            }
        }
    }

    fn redirect(group: GroupId, leader: Option<NodeId>) -> Self::Response {
        A::redirect(group, leader)
    }

    fn snapshot(&self) -> Self::Snapshot {
        match self {
            Either::Left(a) => Either::Left(a.snapshot()),
            Either::Right(b) => Either::Right(b.snapshot()),
        }
    }

    fn encode_snapshot(snapshot: &Self::Snapshot) -> Vec<u8> {
        let (tag, body) = match snapshot {
            Either::Left(s) => (LEFT_TAG, A::encode_snapshot(s)),
            Either::Right(s) => (RIGHT_TAG, B::encode_snapshot(s)),
        };
        let mut out = Vec::with_capacity(body.len() + 1);
        out.push(tag);
        out.extend_from_slice(&body);
        out
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        match (self, snapshot_kind(bytes)) {
            (Either::Left(a), Some(Either::Left(body))) => a.restore(body),
            (Either::Right(b), Some(Either::Right(body))) => b.restore(body),
            (_, Some(_)) => Err(SnapshotError("a snapshot of another machine kind".into())),
            (_, None) => Err(SnapshotError("not a snapshot of either kind".into())),
        }
    }

    fn digest(&self) -> u64 {
        match self {
            Either::Left(a) => a.digest(),
            Either::Right(b) => b.digest(),
        }
    }
}

/// Runs `f` with a context of the inner machine `M` over the outer context's clock, and moves
/// the effects it produced into the outer context, wrapping proposed commands with `wrap`.
fn with_inner<M, O, R>(
    cx: &mut Context<'_, O>,
    wrap: impl Fn(M::Command) -> O::Command,
    f: impl FnOnce(&mut Context<'_, M>) -> R,
) -> R
where
    M: ReplicatedMachine,
    O: ReplicatedMachine<Request = M::Request, Response = M::Response>,
{
    let mut effects = Vec::new();
    let result = {
        let mut inner = Context {
            group: cx.group,
            node: cx.node,
            role: cx.role,
            now_ns: cx.now_ns,
            clock: &mut *cx.clock,
            effects: &mut effects,
            next_request_id: &mut *cx.next_request_id,
            read_index: cx.read_index,
        };
        f(&mut inner)
    };
    cx.effects.extend(effects.into_iter().map(|e| map_effect(e, &wrap)));
    result
}

/// [`with_inner`] for apply contexts.
fn with_inner_apply<M, O, R>(
    cx: &mut ApplyContext<'_, O>,
    wrap: impl Fn(M::Command) -> O::Command,
    f: impl FnOnce(&mut ApplyContext<'_, M>) -> R,
) -> R
where
    M: ReplicatedMachine,
    O: ReplicatedMachine<Request = M::Request, Response = M::Response>,
{
    let mut effects = Vec::new();
    let result = {
        let mut inner = ApplyContext {
            group: cx.group,
            role: cx.role,
            effects: &mut effects,
            next_request_id: &mut *cx.next_request_id,
        };
        f(&mut inner)
    };
    cx.effects.extend(effects.into_iter().map(|e| map_effect(e, &wrap)));
    result
}

fn map_effect<M, O>(effect: Effect<M>, wrap: &impl Fn(M::Command) -> O::Command) -> Effect<O>
where
    M: ReplicatedMachine,
    O: ReplicatedMachine<Request = M::Request, Response = M::Response>,
{
    match effect {
        Effect::Reply(to, r) => Effect::Reply(to, r),
        Effect::Propose { command, waiter } => Effect::Propose { command: wrap(command), waiter },
        Effect::Send { request_id, to, request } => Effect::Send { request_id, to, request },
        Effect::Readmit { requester, reply_to, request } => {
            Effect::Readmit { requester, reply_to, request }
        }
        Effect::LeaderHint { group, leader } => Effect::LeaderHint { group, leader },
    }
}

fn map_admission<M, O>(
    admission: Admission<M>,
    wrap: impl Fn(M::Command) -> O::Command,
) -> Admission<O>
where
    M: ReplicatedMachine,
    O: ReplicatedMachine<Request = M::Request, Response = M::Response>,
{
    match admission {
        Admission::Reply(r) => Admission::Reply(r),
        Admission::Propose { command, on_lost } => {
            Admission::Propose { command: wrap(command), on_lost }
        }
        Admission::Read(request) => Admission::Read(request),
        Admission::Later => Admission::Later,
    }
}

#[cfg(test)]
mod tests {
    use decree_types::{HlcTimestamp, Term};

    use super::*;
    use crate::testing::Harness;

    /// Adds numbers; answers with the running total.
    #[derive(Debug, Default)]
    struct Sum(u64);

    /// Remembers the last string; answers with the previous one.
    #[derive(Debug, Default)]
    struct Last(String);

    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Req {
        Add(u64),
        Set(String),
    }

    impl ReplicatedMachine for Sum {
        type Command = u64;
        type Request = Req;
        type Response = String;
        type Snapshot = u64;

        fn admit(
            &mut self,
            _cx: &mut Context<'_, Self>,
            _requester: Requester,
            _reply_to: ReplyTo,
            request: Req,
        ) -> Admission<Self> {
            match request {
                Req::Add(n) => Admission::Propose { command: n, on_lost: "lost".into() },
                Req::Set(_) => Admission::Reply("wrong kind".into()),
            }
        }
        fn apply(&mut self, _cx: &mut ApplyContext<'_, Self>, e: Applied<u64>) -> Option<String> {
            self.0 += e.command;
            Some(self.0.to_string())
        }
        fn redirect(group: GroupId, leader: Option<NodeId>) -> String {
            format!("{group} is led by {leader:?}")
        }
        fn snapshot(&self) -> u64 {
            self.0
        }
        fn encode_snapshot(s: &u64) -> Vec<u8> {
            s.to_le_bytes().to_vec()
        }
        fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
            let b: [u8; 8] = bytes.try_into().map_err(|_| SnapshotError("length".into()))?;
            self.0 = u64::from_le_bytes(b);
            Ok(())
        }
        fn digest(&self) -> u64 {
            self.0
        }
    }

    impl ReplicatedMachine for Last {
        type Command = String;
        type Request = Req;
        type Response = String;
        type Snapshot = String;

        fn admit(
            &mut self,
            cx: &mut Context<'_, Self>,
            _requester: Requester,
            reply_to: ReplyTo,
            request: Req,
        ) -> Admission<Self> {
            match request {
                // Proposed through the context on behalf of the kept request.
                Req::Set(s) => {
                    cx.propose(s, Some((reply_to, "lost".into())));
                    Admission::Later
                }
                Req::Add(_) => Admission::Reply("wrong kind".into()),
            }
        }
        fn apply(
            &mut self,
            _cx: &mut ApplyContext<'_, Self>,
            e: Applied<String>,
        ) -> Option<String> {
            Some(std::mem::replace(&mut self.0, e.command))
        }
        fn redirect(_group: GroupId, _leader: Option<NodeId>) -> String {
            "elsewhere".into()
        }
        fn snapshot(&self) -> String {
            self.0.clone()
        }
        fn encode_snapshot(s: &String) -> Vec<u8> {
            s.as_bytes().to_vec()
        }
        fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
            self.0 = String::from_utf8(bytes.to_vec()).map_err(|e| SnapshotError(e.to_string()))?;
            Ok(())
        }
        fn digest(&self) -> u64 {
            self.0.len() as u64
        }
    }

    type Pair = Either<Sum, Last>;

    fn leader(machine: Pair) -> Harness<Pair> {
        let mut h = Harness::new(machine, GroupId(1), NodeId(1), 250_000_000, 1_000);
        h.become_ready_leader(Term(1));
        h
    }

    #[test]
    fn each_kind_admits_and_applies_its_own_commands() {
        let mut sum = leader(Either::Left(Sum::default()));
        assert_eq!(sum.request(Requester::Node(NodeId(2)), Req::Add(2)), Some("2".into()));
        assert_eq!(sum.request(Requester::Node(NodeId(2)), Req::Add(3)), Some("5".into()));
        assert_eq!(
            sum.request(Requester::Node(NodeId(2)), Req::Set("x".into())),
            Some("wrong kind".into())
        );

        let mut last = leader(Either::Right(Last::default()));
        assert_eq!(last.request(Requester::Node(NodeId(2)), Req::Set("a".into())), Some("".into()));
        assert_eq!(
            last.request(Requester::Node(NodeId(2)), Req::Set("b".into())),
            Some("a".into())
        );
        assert_eq!(last.machine.digest(), 1);
    }

    #[test]
    fn proposals_made_through_the_context_carry_the_kind_tag() {
        let mut last = leader(Either::Right(Last::default()));
        let (_, admission) = last.admit(Requester::Node(NodeId(2)), Req::Set("a".into()));
        assert!(matches!(admission, Admission::Later));
        match last.take_effects().as_slice() {
            [Effect::Propose { command: EitherCommand::Right(s), waiter: Some(_) }] => {
                assert_eq!(s, "a")
            }
            other => panic!("expected one tagged proposal, got {other:?}"),
        }
    }

    #[test]
    fn a_snapshot_restores_only_into_its_own_kind() {
        let mut sum = leader(Either::Left(Sum::default()));
        sum.apply(HlcTimestamp::default(), EitherCommand::Left(7));
        let bytes = Pair::encode_snapshot(&sum.machine.snapshot());

        let mut other_sum: Pair = Either::Left(Sum::default());
        other_sum.restore(&bytes).unwrap();
        assert_eq!(other_sum.digest(), 7);

        let mut last: Pair = Either::Right(Last::default());
        assert!(last.restore(&bytes).is_err());
        assert!(last.restore(&[]).is_err());
    }
}
