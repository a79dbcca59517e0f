//! A harness for machine unit tests: one replica of one machine, no Raft, no network. Tests
//! call admission, apply, role changes and timeouts directly and assert the exact effects.
//!
//! [`Harness::commit_proposals`] plays a one-replica log: every proposal in the effects is
//! applied in order, as the leader, and the waiting request is answered with what `apply`
//! returned — the host's proposal matching in its simplest form.

use std::collections::VecDeque;

use decree_proto::RequestId;
use decree_types::{GroupId, HlcTimestamp, LogIndex, NodeId, Term};

use crate::machine::{
    Admission, Applied, ApplyContext, Context, Effect, HostClock, PeerError, ReplicatedMachine,
    ReplyTo, Requester, Role, RoleEvent,
};

/// One replica of one machine, driven by hand. See the module docs.
#[derive(Debug)]
pub struct Harness<M: ReplicatedMachine> {
    /// The machine under test.
    pub machine: M,
    /// Its group.
    pub group: GroupId,
    /// Its node.
    pub node: NodeId,
    /// The role the harness reports.
    pub role: Role,
    /// Monotonic time, ns.
    pub now_ns: u64,
    /// The HLC and physical time.
    pub clock: HostClock,
    /// Effects not yet taken by the test.
    pub effects: Vec<Effect<M>>,
    /// The last log index used by [`Harness::apply`] / [`Harness::commit_proposals`].
    pub last_index: LogIndex,
    next_request_id: u64,
    next_reply_to: u64,
}

impl<M: ReplicatedMachine> Harness<M> {
    /// A follower of term 0 at time 0 and physical time `wall_ns`.
    pub fn new(machine: M, group: GroupId, node: NodeId, max_offset_ns: u64, wall_ns: u64) -> Self {
        Harness {
            machine,
            group,
            node,
            role: Role::Follower { term: Term(0), leader: None },
            now_ns: 0,
            clock: HostClock::new(max_offset_ns, wall_ns),
            effects: Vec::new(),
            last_index: LogIndex(0),
            next_request_id: 0,
            next_reply_to: 0,
        }
    }

    /// Makes this replica the leader of `term` with its no-op applied: reports
    /// [`RoleEvent::Leader`] then [`RoleEvent::LeaderReady`], and counts the no-op as an index.
    pub fn become_ready_leader(&mut self, term: Term) {
        self.role = Role::Leader { term, ready: false };
        self.on_role(RoleEvent::Leader { term });
        self.last_index = self.last_index.next();
        self.role = Role::Leader { term, ready: true };
        self.on_role(RoleEvent::LeaderReady { term });
    }

    /// Makes this replica a follower of `term`.
    pub fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.role = Role::Follower { term, leader };
        self.on_role(RoleEvent::Follower { term, leader });
    }

    /// Reports a role event to the machine (the role itself is the test's to set).
    pub fn on_role(&mut self, event: RoleEvent) {
        self.with_context(|machine, cx| machine.on_role(cx, event));
    }

    /// Admission of `request`; returns the `ReplyTo` the request was given and the decision.
    /// A read ([`Admission::Read`]) is confirmed at once (one replica leads for sure, and has
    /// applied everything) and admitted again: the decision returned is the second one's.
    pub fn admit(&mut self, requester: Requester, request: M::Request) -> (ReplyTo, Admission<M>) {
        self.next_reply_to += 1;
        let reply_to = ReplyTo(self.next_reply_to);
        (reply_to, self.admit_as(requester, reply_to, request))
    }

    /// Admission of `request` named `reply_to`, reads confirmed at once.
    fn admit_as(
        &mut self,
        requester: Requester,
        reply_to: ReplyTo,
        request: M::Request,
    ) -> Admission<M> {
        match self.with_context(|machine, cx| machine.admit(cx, requester, reply_to, request)) {
            Admission::Read(request) => {
                let read_index = Some(self.last_index);
                self.with_context_read(read_index, |machine, cx| {
                    machine.admit(cx, requester, reply_to, request)
                })
            }
            other => other,
        }
    }

    /// Admits again, in order, the requests the machine handed back ([`Context::readmit`]);
    /// their decisions become effects (a reply, or a proposal with its waiter).
    fn run_readmits(&mut self) {
        loop {
            let Some(at) = self.effects.iter().position(|e| matches!(e, Effect::Readmit { .. }))
            else {
                return;
            };
            let Effect::Readmit { requester, reply_to, request } = self.effects.remove(at) else {
                return;
            };
            let mut before = std::mem::take(&mut self.effects);
            let admission = self.admit_as(requester, reply_to, request);
            match admission {
                Admission::Reply(r) => before.push(Effect::Reply(reply_to, r)),
                Admission::Propose { command, on_lost } => {
                    before.push(Effect::Propose { command, waiter: Some((reply_to, on_lost)) })
                }
                Admission::Read(_) | Admission::Later => {}
            }
            before.append(&mut self.effects);
            self.effects = before;
        }
    }

    /// Applies `command` as the next entry, stamped `proposed_at`, in the current term.
    pub fn apply(&mut self, proposed_at: HlcTimestamp, command: M::Command) -> Option<M::Response> {
        self.last_index = self.last_index.next();
        let entry =
            Applied { index: self.last_index, term: self.role.term(), proposed_at, command };
        let mut effects = std::mem::take(&mut self.effects);
        let reply = {
            let mut cx = ApplyContext {
                group: self.group,
                role: self.role,
                effects: &mut effects,
                next_request_id: &mut self.next_request_id,
            };
            self.machine.apply(&mut cx, entry)
        };
        self.effects = effects;
        reply
    }

    /// The answer to a request the machine sent.
    pub fn respond(
        &mut self,
        request_id: RequestId,
        from: NodeId,
        response: Result<M::Response, PeerError>,
    ) {
        self.with_context(|machine, cx| machine.handle_response(cx, request_id, from, response));
    }

    /// Another group hosted on the node saw `group`'s new `leader`.
    pub fn leader_seen(&mut self, group: GroupId, leader: NodeId) {
        self.with_context(|machine, cx| machine.on_leader_seen(cx, group, leader));
    }

    /// Advances monotonic time to `now_ns` and physical time by the same amount, then calls
    /// `handle_timeout` if the machine's deadline has passed. Returns whether it was called.
    pub fn advance_to(&mut self, now_ns: u64) -> bool {
        let delta = now_ns.saturating_sub(self.now_ns);
        self.now_ns = now_ns;
        self.clock.wall_ns += delta;
        match self.machine.poll_timeout() {
            Some(deadline) if deadline <= now_ns => {
                self.with_context(|machine, cx| machine.handle_timeout(cx));
                true
            }
            _ => false,
        }
    }

    /// Takes every effect collected so far.
    pub fn take_effects(&mut self) -> Vec<Effect<M>> {
        std::mem::take(&mut self.effects)
    }

    /// Admits `request` and, if it proposes, commits and applies the proposal (and any
    /// proposals that follow from it) at once, as a one-replica leader. Returns the answer
    /// the requester got, if it got one; the effects other than replies to this request and
    /// proposals stay for the test to take.
    pub fn request(&mut self, requester: Requester, request: M::Request) -> Option<M::Response> {
        let (reply_to, admission) = self.admit(requester, request);
        let mut replies = Vec::new();
        match admission {
            Admission::Reply(r) => return Some(r),
            // Confirmed inside `admit`; a second `Read` is not answered.
            Admission::Read(_) => return None,
            Admission::Later => {}
            Admission::Propose { command, on_lost } => {
                self.effects
                    .insert(0, Effect::Propose { command, waiter: Some((reply_to, on_lost)) });
            }
        }
        replies.extend(self.commit_proposals());
        replies.into_iter().find(|(to, _)| *to == reply_to).map(|(_, r)| r)
    }

    /// Applies every proposal among the effects, in order, until none is left (a one-replica
    /// log, entries stamped with fresh HLC readings). Returns every reply produced (to
    /// waiting requests and by `Effect::Reply`); other effects stay.
    pub fn commit_proposals(&mut self) -> Vec<(ReplyTo, M::Response)> {
        let mut replies = Vec::new();
        let mut queue: VecDeque<Effect<M>> = self.take_effects().into();
        let mut kept = Vec::new();
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Propose { command, waiter } => {
                    let proposed_at = self.clock.now();
                    let reply = self.apply(proposed_at, command);
                    if let (Some((to, on_lost)), r) = (waiter, reply) {
                        replies.push((to, r.unwrap_or(on_lost)));
                    }
                    queue.extend(self.take_effects());
                }
                Effect::Reply(to, r) => replies.push((to, r)),
                other => kept.push(other),
            }
        }
        self.effects = kept;
        replies
    }

    /// Calls `f` with the machine and a context over the harness's clock and effects.
    fn with_context<R>(&mut self, f: impl FnOnce(&mut M, &mut Context<'_, M>) -> R) -> R {
        self.with_context_read(None, f)
    }

    /// [`Self::with_context`] for the confirmed admission of a read.
    fn with_context_read<R>(
        &mut self,
        read_index: Option<LogIndex>,
        f: impl FnOnce(&mut M, &mut Context<'_, M>) -> R,
    ) -> R {
        let result = {
            let mut cx = Context {
                group: self.group,
                node: self.node,
                role: self.role,
                now_ns: self.now_ns,
                clock: &mut self.clock,
                effects: &mut self.effects,
                next_request_id: &mut self.next_request_id,
                read_index,
            };
            f(&mut self.machine, &mut cx)
        };
        self.run_readmits();
        result
    }
}
