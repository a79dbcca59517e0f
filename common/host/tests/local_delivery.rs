//! Envelopes a host addresses to its own node: a machine's request to a group led on the same
//! node, and the answer, are delivered inside the host — never through `HostIo::send`, never
//! within the call that sent them, and at most `HOST_LOCAL_ROUNDS_MAX` rounds per `process`.

mod support;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use decree_host::{
    Admission, Applied, ApplyContext, ClientTag, Context, Destination, PeerError,
    ReplicatedMachine, ReplyTo, Requester, SnapshotError,
};
use decree_proto::envelope::Payload;
use decree_proto::{Envelope, RequestId};
use decree_types::limits::HOST_LOCAL_ROUNDS_MAX;
use decree_types::{GroupId, HlcTimestamp, NodeId};
use support::Cluster;

const G1: GroupId = GroupId(1);
const G2: GroupId = GroupId(2);

/// The smallest machine that sends requests: it answers `Ping` at once, and asks another
/// group (`Ask`, `Chat`) with a `Ping`. Every call the host makes is written to a log the
/// test shares with every group of the node, so the order across groups shows.
#[derive(Debug)]
struct Asker {
    calls: Rc<RefCell<Vec<String>>>,
    /// Asks waiting for their answer: the client request each answers.
    asking: BTreeMap<RequestId, ReplyTo>,
    /// Pings this group again after every answer.
    chatting: Option<GroupId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Req {
    /// Answered at once.
    Ping,
    /// Ping that group and answer with its answer.
    Ask(GroupId),
    /// Ping that group again after every answer, forever.
    Chat(GroupId),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Resp {
    Pong(GroupId),
    Answered(Box<Resp>),
    Failed(String),
    Chatting,
    NotLeader(Option<NodeId>),
}

impl Asker {
    fn log(&self, cx_group: GroupId, line: String) {
        self.calls.borrow_mut().push(format!("{cx_group}: {line}"));
    }
}

impl ReplicatedMachine for Asker {
    type Command = ();
    type Request = Req;
    type Response = Resp;
    type Snapshot = ();

    fn admit(
        &mut self,
        cx: &mut Context<'_, Self>,
        requester: Requester,
        reply_to: ReplyTo,
        request: Req,
    ) -> Admission<Self> {
        self.log(cx.group(), format!("admit {request:?} from {requester:?}"));
        match request {
            Req::Ping => Admission::Reply(Resp::Pong(cx.group())),
            Req::Ask(group) => {
                let id = cx.send(Destination::LeaderOf(group), Req::Ping);
                self.asking.insert(id, reply_to);
                Admission::Later
            }
            Req::Chat(group) => {
                cx.send(Destination::LeaderOf(group), Req::Ping);
                self.chatting = Some(group);
                Admission::Reply(Resp::Chatting)
            }
        }
    }

    fn apply(&mut self, _cx: &mut ApplyContext<'_, Self>, _entry: Applied<()>) -> Option<Resp> {
        None
    }

    fn handle_response(
        &mut self,
        cx: &mut Context<'_, Self>,
        request_id: RequestId,
        from: NodeId,
        response: Result<Resp, PeerError>,
    ) {
        self.log(cx.group(), format!("response {response:?} from {from}"));
        if let Some(reply_to) = self.asking.remove(&request_id) {
            let answer = match response {
                Ok(r) => Resp::Answered(Box::new(r)),
                Err(e) => Resp::Failed(e.to_string()),
            };
            cx.reply(reply_to, answer);
        }
        if let Some(group) = self.chatting {
            cx.send(Destination::LeaderOf(group), Req::Ping);
        }
    }

    fn on_leader_seen(&mut self, cx: &mut Context<'_, Self>, group: GroupId, leader: NodeId) {
        self.log(cx.group(), format!("leader of {group} seen: {leader}"));
    }

    fn redirect(_group: GroupId, leader: Option<NodeId>) -> Resp {
        Resp::NotLeader(leader)
    }

    fn snapshot(&self) {}

    fn encode_snapshot(_snapshot: &()) -> Vec<u8> {
        Vec::new()
    }

    fn restore(&mut self, _bytes: &[u8]) -> Result<(), SnapshotError> {
        Ok(())
    }

    fn digest(&self) -> u64 {
        0
    }
}

/// Three nodes with groups 1 and 2, both led by n1; the calls of n1's machines.
fn cluster() -> (Cluster<Asker>, Rc<RefCell<Vec<String>>>) {
    let calls = Rc::new(RefCell::new(Vec::new()));
    let n1_calls = calls.clone();
    let mut c = Cluster::with_machines(3, &[1, 2], support::config(), move |_| Asker {
        // Every node's machines share one log; only n1's receive requests here.
        calls: n1_calls.clone(),
        asking: BTreeMap::new(),
        chatting: None,
    });
    c.elect(1);
    c.settle(10);
    c.mail.clear();
    for io in &mut c.io {
        *io = support::Recorder::default();
    }
    calls.borrow_mut().clear();
    (c, calls)
}

/// Every request or response any host handed to its I/O to send.
fn machine_traffic(c: &Cluster<Asker>) -> Vec<(NodeId, Envelope<Req, Resp>)> {
    c.io.iter()
        .flat_map(|io| io.sent.iter())
        .flat_map(|(to, batch)| batch.iter().map(move |e| (*to, e.clone())))
        .filter(|(_, e)| matches!(e.payload, Payload::Request { .. } | Payload::Response { .. }))
        .collect()
}

#[test]
fn a_request_to_a_group_led_on_the_same_node_is_answered_without_any_envelope_leaving() {
    let (mut c, calls) = cluster();
    c.request(1, 7, 1, Req::Ask(G2));
    // One process of n1: the ask, the ping and its answer, and the client's reply.
    c.process_all();
    let replies: Vec<_> = c.io[0].replies.iter().map(|r| (r.0, r.2.clone())).collect();
    assert_eq!(replies, vec![(ClientTag(7), Resp::Answered(Box::new(Resp::Pong(G2))))]);
    assert_eq!(
        *calls.borrow(),
        vec![
            "g1: admit Ask(GroupId(2)) from Client(ClientId(7))".to_string(),
            "g2: admit Ping from Node(NodeId(1))".to_string(),
            "g1: response Ok(Pong(GroupId(2))) from n1".to_string(),
        ]
    );
    // The two envelopes (both of g2's: the request to it, its answer) went from n1 to n1
    // inside the host; nothing of them was sent.
    let local: Vec<_> = c.io[0].local.iter().map(|e| (e.from, e.group)).collect();
    assert_eq!(local, vec![(NodeId(1), G2), (NodeId(1), G2)]);
    assert!(matches!(c.io[0].local[0].payload, Payload::Request { request: Req::Ping, .. }));
    assert!(matches!(c.io[0].local[1].payload, Payload::Response { .. }));
    assert_eq!(machine_traffic(&c), vec![]);
    c.settle(10);
    assert!(c.io[0].sent.iter().all(|(to, _)| *to != NodeId(1)), "n1 never sends to itself");
    assert_eq!(machine_traffic(&c), vec![]);
    assert_eq!(c.hosts[0].waiting(), 0);
}

#[test]
fn a_local_answer_is_never_re_entrant() {
    let (mut c, calls) = cluster();
    // The request is admitted, but the ping it sends is not delivered within this call.
    c.request(1, 7, 1, Req::Ask(G2));
    assert_eq!(*calls.borrow(), vec!["g1: admit Ask(GroupId(2)) from Client(ClientId(7))"]);
    assert!(c.hosts[0].has_work(), "the ping waits for process");
    // A group asking itself: a host that delivered at once would have to call the machine
    // while its `admit` runs. The ping comes in a call of its own, its answer in another.
    calls.borrow_mut().clear();
    c.request(1, 8, 1, Req::Ask(G1));
    assert_eq!(*calls.borrow(), vec!["g1: admit Ask(GroupId(1)) from Client(ClientId(7))"]);
    calls.borrow_mut().clear();
    c.process_all();
    // Round one delivers both pings (in the order they were sent), round two both answers.
    assert_eq!(
        *calls.borrow(),
        vec![
            "g2: admit Ping from Node(NodeId(1))".to_string(),
            "g1: admit Ping from Node(NodeId(1))".to_string(),
            "g1: response Ok(Pong(GroupId(2))) from n1".to_string(),
            "g1: response Ok(Pong(GroupId(1))) from n1".to_string(),
        ]
    );
    let replies: Vec<_> = c.io[0].replies.iter().map(|r| (r.0, r.2.clone())).collect();
    assert_eq!(
        replies,
        vec![
            (ClientTag(7), Resp::Answered(Box::new(Resp::Pong(G2)))),
            (ClientTag(8), Resp::Answered(Box::new(Resp::Pong(G1)))),
        ]
    );
}

#[test]
fn local_delivery_is_bounded_per_process_and_resumes_in_the_next() {
    let (mut c, _calls) = cluster();
    // g1 pings g2 after every answer, forever: one envelope per round.
    c.request(1, 7, 1, Req::Chat(G2));
    let (now, wall) = (c.now, c.wall());
    for _ in 0..3 {
        let mut io = support::Recorder::default();
        c.hosts[0].process(now, wall, &mut io).unwrap();
        assert_eq!(io.local.len(), HOST_LOCAL_ROUNDS_MAX, "one round per envelope, bounded");
        assert!(c.hosts[0].has_work(), "the rest waits for the next process");
        assert!(io.sent.iter().all(|(to, _)| *to != NodeId(1)));
    }
}

#[test]
fn an_envelope_from_this_nodes_own_identity_over_the_network_is_refused() {
    let (mut c, calls) = cluster();
    let (now, wall) = (c.now, c.wall());
    let ping = Payload::Request { request_id: RequestId(1), request: Req::Ping };
    let envelope = Envelope {
        from: NodeId(1),
        group: G1,
        sender_clock: HlcTimestamp::new(wall, 0),
        payload: ping,
    };
    c.hosts[0].handle_envelope(now, wall, NodeId(1), envelope);
    assert_eq!(c.hosts[0].stats().refused, 1);
    c.process_all();
    assert!(calls.borrow().is_empty(), "no machine saw it");
    assert!(c.io[0].local.is_empty());
}

#[test]
fn every_other_machine_on_a_node_hears_of_a_groups_new_leader() {
    let (mut c, calls) = cluster();
    // n2 takes both groups over: on each of the three nodes, g1's machine hears of g2's new
    // leader and g2's of g1's, once; no machine hears of its own group (on_role tells it).
    c.elect(2);
    let mut heard: Vec<String> =
        calls.borrow().iter().filter(|l| l.contains("seen")).cloned().collect();
    heard.sort();
    let expected: Vec<String> = ["g1: leader of g2 seen: n2", "g2: leader of g1 seen: n2"]
        .iter()
        .flat_map(|l| std::iter::repeat_n(l.to_string(), 3))
        .collect();
    assert_eq!(heard, expected);
    // Nothing more while the leaders stay.
    calls.borrow_mut().clear();
    c.settle(10);
    assert!(calls.borrow().iter().all(|l| !l.contains("seen")), "{:?}", calls.borrow());
}

#[test]
fn raft_6_during_a_transfer_the_machine_is_not_asked_and_the_request_goes_to_the_target() {
    let (mut c, calls) = cluster();
    // n3 is cut off: the transfer of g1 to it cannot complete.
    c.cut = vec![NodeId(3)];
    let now = c.now;
    c.host(1).transfer_leadership(now, G1, NodeId(3)).expect("the leader transfers");
    c.request(1, 7, 1, Req::Ping);
    c.settle(5);
    let replies: Vec<_> = c.io[0].replies.iter().map(|r| (r.0, r.2.clone())).collect();
    assert_eq!(replies, vec![(ClientTag(7), Resp::NotLeader(Some(NodeId(3))))]);
    // The redirect came from the host: g1's machine never admitted the request, so it could
    // keep no leader-only state for a proposal the transfer would refuse.
    assert!(calls.borrow().iter().all(|l| !l.starts_with("g1: admit")), "{:?}", calls.borrow());
    // g2, not being transferred, is still served.
    c.request(1, 8, 2, Req::Ping);
    c.settle(5);
    let last = c.io[0].replies.last().map(|r| (r.0, r.2.clone()));
    assert_eq!(last, Some((ClientTag(8), Resp::Pong(G2))));
}
