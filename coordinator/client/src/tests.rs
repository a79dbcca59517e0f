//! Behaviour of the client against the in-memory cluster of [`crate::fake`]: routing (1PC vs
//! 2PC, leaders, range map refresh), the client HLC, reads, and the retry helper's handling of
//! ambiguous commits. Time is tokio's paused clock, so backoff costs nothing and deadlines are
//! exact.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use decree_proto::txn::{AbortReason, Isolation, NoReason, Redirect};
use decree_proto::{ErrorResponse, Request, Response};
use decree_types::{GroupId, HlcTimestamp, Key, KeyRange, NodeId, Term, TxnId};
use tokio::time::Instant;

use crate::fake::{FakeCluster, Fault};
use crate::{
    coordinator_for, Client, ClientSettings, ConflictReason, Error, RetryPolicy, TxnOptions,
    TxnState,
};

const MS: u64 = 1_000_000;

fn settings() -> ClientSettings {
    ClientSettings {
        attempt_timeout: Duration::from_millis(500),
        operation_timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            attempts_max: 10,
            deadline: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(2),
            backoff_max: Duration::from_millis(50),
        },
        jitter_seed: Some(7),
        ..ClientSettings::default()
    }
}

async fn connect(fake: &FakeCluster, settings: ClientSettings) -> Client {
    let client = Client::with_link(Arc::new(fake.clone()), vec![NodeId(31)], settings);
    client.refresh_routes().await.expect("fake answers FetchRangeMap");
    client
}

/// A balance as stored by the transfer tests.
fn balance(v: &Option<Vec<u8>>) -> i64 {
    v.as_deref().and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, i64::from_be_bytes)
}

/// Moves 10 from `a` to `b`, counting runs.
async fn transfer(
    client: &Client,
    a: &'static str,
    b: &'static str,
    runs: &AtomicU32,
) -> Result<(bool, crate::CommitInfo), Error> {
    client
        .transact(|txn| async move {
            runs.fetch_add(1, Ordering::SeqCst);
            let v = txn.get_many([a, b]).await?;
            let (from, to) = (balance(&v[0]), balance(&v[1]));
            if from < 10 {
                return Ok(false);
            }
            txn.put(a, (from - 10).to_be_bytes())?;
            txn.put(b, (to + 10).to_be_bytes())?;
            Ok(true)
        })
        .await
}

fn seed_accounts(fake: &FakeCluster) {
    fake.seed("alice", &100i64.to_be_bytes(), HlcTimestamp::new(1, 0));
    fake.seed("zed", &100i64.to_be_bytes(), HlcTimestamp::new(1, 0));
    fake.seed("bob", &100i64.to_be_bytes(), HlcTimestamp::new(1, 0));
}

fn total(fake: &FakeCluster) -> i64 {
    ["alice", "bob", "zed"].iter().map(|k| balance(&fake.latest(k))).sum()
}

// --- routing ---------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn t4_single_group_commit_is_1pc_with_session_and_seq() {
    let fake = FakeCluster::two_groups();
    let client = connect(&fake, settings()).await;
    let txn = client.begin();
    assert_eq!(txn.get("apple").await, Ok(None));
    txn.put("apple", b"1".to_vec()).unwrap();
    txn.put("banana", b"2".to_vec()).unwrap();
    let info = txn.commit().await.unwrap();
    assert_eq!(fake.latest("banana"), Some(b"2".to_vec()));
    assert!(fake.sent("Request::CommitTxn").is_empty(), "no coordinator for one group");
    let local = fake.sent("Request::CommitLocal");
    assert_eq!(local.len(), 1);
    assert_eq!((local[0].node, local[0].group), (NodeId(11), GroupId(1)));
    let Request::CommitLocal(c) = &local[0].request else { unreachable!() };
    assert_eq!(c.txn_id, info.txn_id);
    assert_eq!(c.writes.len(), 2);
    // The serializable read set: the point read of "apple".
    assert_eq!(c.read_spans, vec![KeyRange::new("apple", Some(Key::from("apple").successor()))]);
    // A second 1PC commit uses the same session with the next sequence number.
    let txn = client.begin();
    txn.put("cherry", b"3".to_vec()).unwrap();
    txn.commit().await.unwrap();
    let local = fake.sent("Request::CommitLocal");
    let Request::CommitLocal(second) = &local[1].request else { unreachable!() };
    assert_eq!((second.client_id, second.seq), (c.client_id, c.seq + 1));
}

#[tokio::test(start_paused = true)]
async fn opc_2_a_session_carries_one_commit_at_a_time() {
    let fake = FakeCluster::two_groups();
    let client = connect(
        &fake,
        ClientSettings { operation_timeout: Duration::from_millis(300), ..settings() },
    )
    .await;
    // An undecided 1PC commit keeps its session: the next commit must not use a later `seq`
    // of it, or the group would answer the first one's re-send with the second's result.
    fake.rule("Request::CommitLocal", None, usize::MAX, Fault::LoseReply);
    let lost = client.begin();
    lost.put("x", b"1".to_vec()).unwrap();
    let Err(Error::Ambiguous { txn_id, .. }) = lost.commit().await else { panic!("ambiguous") };
    fake.lock().rules.clear();
    let next = client.begin();
    next.put("y", b"1".to_vec()).unwrap();
    next.commit().await.unwrap();
    let sessions = |fake: &FakeCluster| -> Vec<(decree_types::ClientId, u64)> {
        fake.sent("Request::CommitLocal")
            .iter()
            .map(|l| match &l.request {
                Request::CommitLocal(c) => (c.client_id, c.seq),
                _ => unreachable!(),
            })
            .collect()
    };
    let sent = sessions(&fake);
    let (first, last) = (sent[0], *sent.last().unwrap());
    assert_ne!(first.0, last.0, "a new session while the first is undecided");
    // Resolving the first commit frees its session for the next commit, at the next seq.
    assert!(matches!(client.txn_status(txn_id).await, Ok(TxnState::Committed(_))));
    let again = client.begin();
    again.put("z", b"1".to_vec()).unwrap();
    again.commit().await.unwrap();
    let used = *sessions(&fake).last().unwrap();
    assert!(used == (first.0, first.1 + 1) || used == (last.0, last.1 + 1), "{used:?}");
    // Concurrent 1PC commits never share a session.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let client = client.clone();
        tasks.spawn(async move {
            let txn = client.begin();
            txn.put(format!("k{i}"), b"v".to_vec()).unwrap();
            txn.commit().await.unwrap();
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let all = sessions(&fake);
    let recent: Vec<_> = all[all.len() - 8..].iter().map(|(id, _)| *id).collect();
    let unique: std::collections::BTreeSet<_> = recent.iter().collect();
    assert_eq!(unique.len(), 8, "eight commits in flight at once, eight sessions");
}

#[tokio::test(start_paused = true)]
async fn t4_cross_group_commit_goes_to_the_txn_coordinator_group() {
    let fake = FakeCluster::two_groups();
    // A second coordinator group, so the choice by txn id matters.
    fake.lock().groups.insert(
        GroupId(101),
        crate::fake::FakeGroup {
            replicas: vec![NodeId(41)],
            leader: NodeId(41),
            term: Term(1),
            advertised: Some(NodeId(41)),
        },
    );
    let client = connect(&fake, settings()).await;
    for _ in 0..4 {
        let txn = client.begin();
        txn.get("alice").await.unwrap();
        txn.put("alice", b"a".to_vec()).unwrap();
        txn.put("zed", b"z".to_vec()).unwrap();
        let info = txn.commit().await.unwrap();
        let sent = fake.sent("Request::CommitTxn");
        let last = sent.last().unwrap();
        let want = coordinator_for(info.txn_id, &[GroupId(100), GroupId(101)]).unwrap();
        assert_eq!(last.group, want);
        let Request::CommitTxn(c) = &last.request else { unreachable!() };
        assert_eq!(c.txn_id, info.txn_id);
        let groups: Vec<GroupId> = c.per_group.iter().map(|g| g.group).collect();
        assert_eq!(groups, vec![GroupId(1), GroupId(2)]);
        assert_eq!(c.per_group[0].read_spans.len(), 1, "the read of alice, on g1");
        assert!(c.per_group[1].read_spans.is_empty());
    }
    assert!(fake.sent("Request::CommitLocal").is_empty());
    // Snapshot isolation sends no read spans.
    let txn = client.begin_with(TxnOptions { isolation: Isolation::Snapshot, commit_wait: false });
    txn.get("alice").await.unwrap();
    txn.put("alice", b"b".to_vec()).unwrap();
    txn.put("zed", b"y".to_vec()).unwrap();
    txn.commit().await.unwrap();
    let sent = fake.sent("Request::CommitTxn");
    let Request::CommitTxn(c) = &sent.last().unwrap().request else { unreachable!() };
    assert!(c.per_group.iter().all(|g| g.read_spans.is_empty()));
    assert_eq!(c.mode.isolation, Isolation::Snapshot);
}

#[tokio::test(start_paused = true)]
async fn read_only_commit_sends_nothing() {
    let fake = FakeCluster::two_groups();
    let client = connect(&fake, settings()).await;
    let txn = client.begin();
    txn.get("a").await.unwrap();
    let before = fake.kinds().len();
    let info = txn.commit().await.unwrap();
    assert_eq!(info.commit_ts, txn.read_ts());
    assert_eq!(fake.kinds().len(), before);
}

#[tokio::test(start_paused = true)]
async fn not_leader_hint_is_followed_and_cached() {
    let fake = FakeCluster::two_groups();
    {
        let mut s = fake.lock();
        let g1 = s.groups.get_mut(&GroupId(1)).unwrap();
        g1.leader = NodeId(12);
        g1.term = Term(2);
        // The range map still names the old leader.
        g1.advertised = Some(NodeId(11));
    }
    fake.seed("a", b"v", HlcTimestamp::new(1, 0));
    let client = connect(&fake, settings()).await;
    assert_eq!(client.begin().get("a").await, Ok(Some(b"v".to_vec())));
    let gets: Vec<NodeId> = fake.sent("Request::Get").iter().map(|l| l.node).collect();
    assert_eq!(gets, vec![NodeId(11), NodeId(12)]);
    // The hint is cached: the next request goes straight to the leader.
    client.begin().get("b").await.unwrap();
    assert_eq!(fake.sent("Request::Get").last().unwrap().node, NodeId(12));
}

#[tokio::test(start_paused = true)]
async fn redirect_response_and_unreachable_nodes_are_routed_around() {
    let fake = FakeCluster::two_groups();
    fake.seed("x", b"v", HlcTimestamp::new(1, 0));
    let client = connect(&fake, settings()).await;
    // The cached leader n21 redirects the read to n23 (as a follower would, F-3); n23 is not
    // the leader either and names n22, which serves it.
    fake.rule(
        "Request::Get",
        Some(NodeId(21)),
        1,
        Fault::Answer(Response::Redirect(Redirect { leader: Some(NodeId(23)) })),
    );
    {
        let mut s = fake.lock();
        s.groups.get_mut(&GroupId(2)).unwrap().leader = NodeId(22);
    }
    assert_eq!(client.begin().get("x").await, Ok(Some(b"v".to_vec())));
    let gets: Vec<NodeId> = fake.sent("Request::Get").iter().map(|l| l.node).collect();
    assert_eq!(gets, vec![NodeId(21), NodeId(23), NodeId(22)]);
    // Unreachable leader: forgotten, replicas tried in turn.
    fake.lock().down.insert(NodeId(22));
    fake.lock().groups.get_mut(&GroupId(2)).unwrap().leader = NodeId(23);
    assert_eq!(client.begin().get("x").await, Ok(Some(b"v".to_vec())));
    assert_eq!(fake.sent("Request::Get").last().unwrap().node, NodeId(23));
}

#[tokio::test(start_paused = true)]
async fn key_out_of_range_refreshes_the_range_map() {
    let fake = FakeCluster::two_groups();
    fake.seed("k", b"v", HlcTimestamp::new(1, 0));
    let client = connect(&fake, settings()).await;
    // The cluster splits differently now: "k" moves to g2.
    {
        let mut s = fake.lock();
        s.version = 2;
        s.ranges = vec![
            (KeyRange::new("", Some(Key::from("f"))), GroupId(1)),
            (KeyRange::from_start("f"), GroupId(2)),
        ];
    }
    assert_eq!(client.begin().get("k").await, Ok(Some(b"v".to_vec())));
    let gets: Vec<GroupId> = fake.sent("Request::Get").iter().map(|l| l.group).collect();
    assert_eq!(gets, vec![GroupId(1), GroupId(2)]);
    assert_eq!(fake.sent("Request::FetchRangeMap").len(), 2);
    // A 1PC commit refused with KeyOutOfRange is known not to have happened: retryable, and
    // the map is refreshed for the rerun.
    fake.rule(
        "Request::CommitLocal",
        None,
        1,
        Fault::Refuse(ErrorResponse::KeyOutOfRange { key: Key::from("k") }),
    );
    let txn = client.begin();
    txn.put("k", b"w".to_vec()).unwrap();
    let err = txn.commit().await.unwrap_err();
    assert!(matches!(err, Error::KeyOutOfRange { .. }) && err.is_retryable(), "{err:?}");
    assert_eq!(fake.sent("Request::FetchRangeMap").len(), 3);
}

// --- the client HLC ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn rec_6_client_reads_its_own_writes_through_the_commit_timestamp() {
    let fake = FakeCluster::two_groups();
    // The cluster's clocks run 100 ms ahead of ours, and we claim a 1 ms max offset, so an
    // uncertainty window would not save a read at our own clock: only HLC updates can.
    fake.lock().skew_ns = 100 * MS;
    let client = connect(&fake, ClientSettings { max_offset_ns: MS, ..settings() }).await;
    let reply_clock = fake.lock().hlc.last();
    assert!(client.now() > reply_clock, "the reply's clock was observed (HLC-2)");
    let txn = client.begin();
    txn.put("mine", b"1".to_vec()).unwrap();
    txn.put("zzz", b"2".to_vec()).unwrap();
    let info = txn.commit().await.unwrap();
    let next = client.begin();
    assert!(next.read_ts() > info.commit_ts);
    assert_eq!(next.get("mine").await, Ok(Some(b"1".to_vec())));
    // Every request carries a clock at least the client's last reading (HLC-4).
    let get = fake.sent("Request::Get").pop().unwrap();
    assert!(get.sender_clock >= next.read_ts());
    // A snapshot at the commit timestamp sees the commit; one just below does not.
    let at = client.snapshot(info.commit_ts);
    assert_eq!(at.get("zzz").await, Ok(Some(b"2".to_vec())));
    let before = client.snapshot(HlcTimestamp::new(info.commit_ts.wall_ns - 1, 0));
    assert_eq!(before.get("zzz").await, Ok(None));
}

// --- reads ------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn u_1_uncertainty_restart_moves_the_first_read_and_fails_a_later_one() {
    let fake = FakeCluster::two_groups();
    let client = connect(&fake, settings()).await;
    let txn = client.begin();
    let start = txn.read_ts();
    // A version inside (read_ts, read_ts + max_offset]: the first read just moves up.
    let uncertain = HlcTimestamp::new(start.wall_ns + 10 * MS, 0);
    fake.seed("a", b"new", uncertain);
    assert_eq!(txn.get("a").await, Ok(Some(b"new".to_vec())));
    assert_eq!(txn.read_ts(), uncertain);
    // A later read meeting another uncertain version cannot move: restart at its timestamp,
    // with the original limit.
    let second = HlcTimestamp::new(start.wall_ns + 20 * MS, 0);
    fake.seed("b", b"x", second);
    let err = txn.get("b").await.unwrap_err();
    let limit = start.add_wall_ns(client.settings().max_offset_ns);
    assert_eq!(
        err,
        Error::Conflict {
            reason: ConflictReason::Uncertainty { new_read_ts: second, uncertainty_limit: limit }
        }
    );
    assert!(err.is_retryable());
    // The failed transaction stays failed.
    assert_eq!(txn.put("c", b"1".to_vec()), Err(err.clone()));
    // The retry helper reruns at the new timestamp with the same limit.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (seen2, fake2) = (Arc::clone(&seen), fake.clone());
    let (value, _) = client
        .transact(move |txn| {
            let (seen, fake) = (Arc::clone(&seen2), fake2.clone());
            async move {
                let run = {
                    let mut seen = seen.lock().unwrap();
                    seen.push((txn.read_ts(), txn.txn_id()));
                    seen.len()
                };
                txn.get("p").await?;
                if run == 1 {
                    fake.seed("q", b"late", txn.read_ts().add_wall_ns(20 * MS));
                }
                txn.get("q").await
            }
        })
        .await
        .unwrap();
    assert_eq!(value, Some(b"late".to_vec()));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].0, seen[0].0.add_wall_ns(20 * MS), "rerun at the uncertain version");
    assert_ne!(seen[0].1, seen[1].1, "with a fresh txn id");
}

#[tokio::test(start_paused = true)]
async fn u_1_a_read_only_rerun_keeps_the_first_limit_so_it_converges_under_writes() {
    let fake = FakeCluster::two_groups();
    let client = connect(&fake, settings()).await;
    let max_offset = client.settings().max_offset_ns;
    let step = max_offset * 2 / 5;
    // Every run reads "p", then a writer commits "q" `step` above the run's read timestamp:
    // runs 1 and 2 meet it inside the first run's window and restart there; run 3's lands
    // beyond that window's limit, so run 3 reads run 2's version and succeeds.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (seen2, fake2) = (Arc::clone(&seen), fake.clone());
    let value = client
        .read_only_transact(move |snapshot| {
            let (seen, fake) = (Arc::clone(&seen2), fake2.clone());
            async move {
                let run = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(snapshot.read_ts());
                    seen.len()
                };
                snapshot.get("p").await?;
                let value = format!("v{run}").into_bytes();
                fake.seed("q", &value, snapshot.read_ts().add_wall_ns(step));
                snapshot.get_many(["p", "q"]).await
            }
        })
        .await
        .unwrap();
    assert_eq!(value, vec![None, Some(b"v2".to_vec())]);
    let seen = seen.lock().unwrap().clone();
    let t0 = seen[0];
    assert_eq!(seen, vec![t0, t0.add_wall_ns(step), t0.add_wall_ns(2 * step)]);

    // A non-retryable error is returned at once.
    let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let runs2 = Arc::clone(&runs);
    let err = client
        .read_only_transact(move |_| {
            runs2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async { Err::<(), _>(Error::invalid("no")) }
        })
        .await
        .unwrap_err();
    assert_eq!(err, Error::invalid("no"));
    assert_eq!(runs.load(std::sync::atomic::Ordering::Relaxed), 1);
}

// --- the retry helper and ambiguous outcomes ---------------------------------------------------

#[tokio::test(start_paused = true)]
async fn rec_6_lost_commit_reply_is_resolved_committed_and_not_rerun() {
    let fake = FakeCluster::two_groups();
    seed_accounts(&fake);
    let client = connect(&fake, settings()).await;
    // Every CommitTxn is handled but its reply lost: the commit cannot learn its outcome.
    fake.rule("Request::CommitTxn", None, usize::MAX, Fault::LoseReply);
    let runs = AtomicU32::new(0);
    let (moved, info) = transfer(&client, "alice", "zed", &runs).await.unwrap();
    assert!(moved);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "never rerun after an ambiguous commit");
    assert_eq!(client.ambiguous_resolved(), 1, "counted as resolved");
    assert_eq!(balance(&fake.latest("alice")), 90);
    assert_eq!(total(&fake), 300);
    // The status came from the coordinator group that got the commit.
    let status = fake.sent("Request::TxnStatus");
    assert!(!status.is_empty());
    assert!(status.iter().all(|l| l.group == GroupId(100)));
    let Request::TxnStatus(s) = &status[0].request else { unreachable!() };
    assert_eq!(s.txn_id, info.txn_id);
    // The commit timestamp reached the client HLC (REC-6).
    assert!(client.now() > info.commit_ts);
}

#[tokio::test(start_paused = true)]
async fn lost_commit_request_is_rerun_only_after_a_confirmed_abort() {
    let fake = FakeCluster::two_groups();
    seed_accounts(&fake);
    let client = connect(&fake, settings()).await;
    // The first commit request never arrives, but the client cannot know that: the commit
    // ends Ambiguous. The coordinator then says Pending twice, then presumes the abort.
    fake.rule_until("Request::CommitTxn", "Request::TxnStatus", Fault::LoseRequest);
    fake.lock().status_pending = 2;
    let runs = AtomicU32::new(0);
    let (_, info) = transfer(&client, "alice", "zed", &runs).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // Order: the second run's reads come only after the abort was confirmed.
    let kinds = fake.kinds();
    let last_status = kinds.iter().rposition(|k| *k == "Request::TxnStatus").unwrap();
    let first_status = kinds.iter().position(|k| *k == "Request::TxnStatus").unwrap();
    let gets_before: usize = kinds[..first_status].iter().filter(|k| **k == "Request::Get").count();
    let gets_between: usize =
        kinds[first_status..last_status].iter().filter(|k| **k == "Request::Get").count();
    assert_eq!(gets_before, 2, "one run's reads before resolution");
    assert_eq!(gets_between, 0, "nothing reruns while the outcome is pending");
    assert_eq!(fake.sent("Request::TxnStatus").len(), 3, "pending, pending, aborted");
    assert_eq!(client.ambiguous_resolved(), 1, "the resolved abort is counted");
    // Applied exactly once, by the second run.
    assert_eq!(balance(&fake.latest("alice")), 90);
    assert_eq!(total(&fake), 300);
    assert!(fake.lock().records.contains_key(&info.txn_id));
}

#[tokio::test(start_paused = true)]
async fn ambiguous_reaches_the_caller_only_when_the_coordinator_stays_unreachable() {
    let fake = FakeCluster::two_groups();
    seed_accounts(&fake);
    let client = connect(&fake, settings()).await;
    fake.rule("Request::CommitTxn", None, usize::MAX, Fault::LoseReply);
    fake.rule("Request::TxnStatus", None, usize::MAX, Fault::Unreachable);
    let runs = AtomicU32::new(0);
    let started = Instant::now();
    let err = transfer(&client, "alice", "zed", &runs).await.unwrap_err();
    let Error::Ambiguous { txn_id, .. } = err else { panic!("want Ambiguous, got {err:?}") };
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // It kept asking until the deadline (5 s), not beyond one more operation timeout.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(5), "{elapsed:?}");
    assert!(
        elapsed <= Duration::from_secs(5) + Duration::from_secs(2) + Duration::from_millis(100)
    );
    // The caller can resolve it later, once the coordinator is back.
    fake.lock().rules.clear();
    let state = client.txn_status(txn_id).await.unwrap();
    let TxnState::Committed(info) = state else { panic!("want Committed, got {state:?}") };
    assert_eq!(info.txn_id, txn_id);
    // Resolved transactions are forgotten.
    assert!(matches!(client.txn_status(txn_id).await, Err(Error::InvalidArgument { .. })));
    assert_eq!(total(&fake), 300);
}

#[tokio::test(start_paused = true)]
async fn opc_2_ambiguous_1pc_commit_is_resolved_at_its_group_not_the_coordinator() {
    let fake = FakeCluster::two_groups();
    let client = connect(
        &fake,
        ClientSettings { operation_timeout: Duration::from_millis(300), ..settings() },
    )
    .await;
    fake.rule("Request::CommitLocal", None, usize::MAX, Fault::LoseReply);
    let txn = client.begin();
    txn.put("one", b"1".to_vec()).unwrap();
    let err = txn.commit().await.unwrap_err();
    let Error::Ambiguous { txn_id, .. } = err else { panic!("want Ambiguous, got {err:?}") };
    assert_eq!(txn.commit().await, Err(err.clone()), "a failed commit stays failed");
    fake.lock().rules.clear();
    let state = client.txn_status(txn_id).await.unwrap();
    assert!(matches!(state, TxnState::Committed(info) if info.txn_id == txn_id), "{state:?}");
    assert!(fake.sent("Request::TxnStatus").is_empty(), "the coordinator would presume abort");
    // The resolution re-sent the same session request (OPC-2).
    let sent = fake.sent("Request::CommitLocal");
    let seqs: Vec<u64> = sent
        .iter()
        .map(|l| match &l.request {
            Request::CommitLocal(c) => c.seq,
            _ => unreachable!(),
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(fake.lock().data.get(&Key::from("one")).map(Vec::len), Some(1), "applied once");
}

#[tokio::test(start_paused = true)]
async fn conflicts_are_retried_and_backoff_stops_at_the_deadline() {
    let fake = FakeCluster::two_groups();
    let client = connect(&fake, settings()).await;
    let runs = AtomicU32::new(0);
    let policy = RetryPolicy {
        attempts_max: 1_000_000,
        deadline: Duration::from_secs(2),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(700),
    };
    let client = Client::with_link(
        Arc::new(fake.clone()),
        vec![NodeId(31)],
        ClientSettings { retry: policy, ..client.settings().clone() },
    );
    let started = Instant::now();
    let conflict = Error::Conflict {
        reason: ConflictReason::Aborted { txn_id: TxnId(9), reason: AbortReason::PrepareTimeout },
    };
    let err = client
        .transact(|_txn| {
            runs.fetch_add(1, Ordering::SeqCst);
            let e = conflict.clone();
            async move { Err::<(), _>(e) }
        })
        .await
        .unwrap_err();
    assert_eq!(err, conflict);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "the last backoff is cut at the deadline"
    );
    let n = runs.load(Ordering::SeqCst);
    assert!((4..=12).contains(&n), "exponential backoff: {n} runs in 2 s");
    // The bound on runs holds too.
    let runs = AtomicU32::new(0);
    let client = Client::with_link(
        Arc::new(fake.clone()),
        vec![NodeId(31)],
        ClientSettings { retry: RetryPolicy { attempts_max: 3, ..policy }, ..settings() },
    );
    let _ = client
        .transact(|_txn| {
            runs.fetch_add(1, Ordering::SeqCst);
            let e = conflict.clone();
            async move { Err::<(), _>(e) }
        })
        .await;
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn reply_about_another_txn_is_resolved_before_a_rerun() {
    let fake = FakeCluster::two_groups();
    seed_accounts(&fake);
    let client = connect(&fake, settings()).await;
    let runs = AtomicU32::new(0);
    // The first commit is answered with an outcome for another transaction.
    let no = decree_proto::txn::TxnOutcome::Aborted {
        reason: AbortReason::VotedNo { group: GroupId(1), reason: NoReason::WriteTooOld },
        retryable: true,
    };
    fake.rule(
        "Request::CommitTxn",
        None,
        1,
        Fault::Answer(Response::Outcome(decree_proto::txn::OutcomeReply {
            txn_id: TxnId(0),
            outcome: no,
        })),
    );
    // The scripted answer names txn 0, not ours: a reply about another transaction is a
    // protocol violation after which the outcome is unknown, so the helper resolves it.
    let (_, info) = transfer(&client, "alice", "zed", &runs).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let ids: Vec<TxnId> = fake
        .sent("Request::CommitTxn")
        .iter()
        .map(|l| match &l.request {
            Request::CommitTxn(c) => c.txn_id,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1], "a rerun is a new commit request (T-4)");
    assert_eq!(ids[1], info.txn_id);
    assert_eq!(total(&fake), 300);
}

#[tokio::test(start_paused = true)]
async fn real_write_conflicts_retry_until_they_commit() {
    let fake = FakeCluster::two_groups();
    seed_accounts(&fake);
    let client = connect(&fake, settings()).await;
    // A transaction that read alice, then someone else wrote alice: its commit is refused.
    let txn = client.begin();
    txn.get("alice").await.unwrap();
    let other = client.begin();
    other.put("alice", 50i64.to_be_bytes()).unwrap();
    other.put("zed", 150i64.to_be_bytes()).unwrap();
    other.commit().await.unwrap();
    txn.put("alice", 0i64.to_be_bytes()).unwrap();
    txn.put("zed", 0i64.to_be_bytes()).unwrap();
    let err = txn.commit().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                reason: ConflictReason::Aborted { reason: AbortReason::VotedNo { .. }, .. }
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(total(&fake), 300);
    // Through the helper: the first run loses to a writer that commits between its reads and
    // its commit; the rerun reads the new balances and commits.
    let runs = AtomicU32::new(0);
    let sneaky = client.clone();
    let (moved, _) = client
        .transact(|txn| {
            let (runs, sneaky) = (&runs, sneaky.clone());
            async move {
                let run = runs.fetch_add(1, Ordering::SeqCst);
                let v = txn.get_many(["alice", "zed"]).await?;
                if run == 0 {
                    let other = sneaky.begin();
                    other.put("alice", 40i64.to_be_bytes())?;
                    other.put("zed", 160i64.to_be_bytes())?;
                    other.commit().await?;
                }
                txn.put("alice", (balance(&v[0]) - 10).to_be_bytes())?;
                txn.put("zed", (balance(&v[1]) + 10).to_be_bytes())?;
                Ok(balance(&v[0]))
            }
        })
        .await
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(moved, 40, "the rerun read the winner's write");
    assert_eq!(balance(&fake.latest("alice")), 30);
    assert_eq!(total(&fake), 300);
}

// --- typed errors ------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn errors_are_typed() {
    let fake = FakeCluster::two_groups();
    let client = connect(&fake, settings()).await;
    // Misuse.
    let txn = client.begin();
    txn.put("a", b"1".to_vec()).unwrap();
    txn.commit().await.unwrap();
    assert!(matches!(txn.put("a", b"2".to_vec()), Err(Error::InvalidArgument { .. })));
    assert_eq!(txn.commit().await.map(|i| i.txn_id), Ok(txn.txn_id()), "commit is idempotent");
    let rolled = client.begin();
    rolled.rollback();
    assert!(matches!(rolled.get("a").await, Err(Error::InvalidArgument { .. })));
    assert!(matches!(client.txn_status(TxnId(42)).await, Err(Error::InvalidArgument { .. })));
    // Limits, checked before anything is sent.
    let big = vec![0u8; decree_proto::limits::KEY_BYTES_MAX + 1];
    assert!(matches!(client.begin().put(big.clone(), b"".to_vec()), Err(Error::LimitExceeded(_))));
    assert!(matches!(client.begin().get(big).await, Err(Error::LimitExceeded(_))));
    // Refusals a retry does not fix.
    let gc = HlcTimestamp::new(5, 0);
    fake.rule(
        "Request::Get",
        None,
        1,
        Fault::Refuse(ErrorResponse::BelowGcThreshold { gc_threshold: gc }),
    );
    assert_eq!(
        client.snapshot(HlcTimestamp::new(1, 0)).get("a").await,
        Err(Error::BelowGcThreshold { group: GroupId(1), gc_threshold: gc })
    );
    fake.rule(
        "Request::Get",
        None,
        1,
        Fault::Refuse(ErrorResponse::ClockRejected { remote: gc, ahead_ns: 9, max_offset_ns: 1 }),
    );
    assert_eq!(
        client.begin().get("a").await,
        Err(Error::ClockRejected { ahead_ns: 9, max_offset_ns: 1 })
    );
    // A commit refused as invalid: not retryable, and known not to have happened.
    fake.rule(
        "Request::CommitLocal",
        None,
        1,
        Fault::Refuse(ErrorResponse::invalid_argument("no")),
    );
    let txn = client.begin();
    txn.put("a", b"3".to_vec()).unwrap();
    assert_eq!(txn.commit().await, Err(Error::InvalidArgument { detail: "no".into() }));
    // A group that never answers: Unavailable, after the operation timeout.
    for n in [11, 12, 13] {
        fake.lock().down.insert(NodeId(n));
    }
    let started = Instant::now();
    let err = client.begin().get("a").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }) && err.is_retryable(), "{err:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    // A busy node is waited for as long as it asks, but never past the deadline, however
    // long it asks for.
    fake.lock().down.clear();
    fake.rule("Request::Get", None, 1, Fault::Refuse(ErrorResponse::Busy { retry_after_ms: 300 }));
    let started = Instant::now();
    assert_eq!(client.begin().get("a").await, Ok(Some(b"1".to_vec())));
    assert!(started.elapsed() >= Duration::from_millis(300));
    fake.rule(
        "Request::Get",
        None,
        1,
        Fault::Refuse(ErrorResponse::Busy { retry_after_ms: u64::MAX }),
    );
    let started = Instant::now();
    assert!(matches!(client.begin().get("a").await, Err(Error::Unavailable { .. })));
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    // A reply to another request is a protocol error, not a panic.
    fake.rule(
        "Request::Get",
        None,
        1,
        Fault::Answer(Response::Outcome(decree_proto::txn::OutcomeReply {
            txn_id: TxnId(1),
            outcome: decree_proto::txn::TxnOutcome::Pending,
        })),
    );
    assert!(matches!(client.begin().get("a").await, Err(Error::Protocol { .. })));
}

#[tokio::test(start_paused = true)]
async fn tls_failure_is_reported_at_once() {
    struct TlsRefusing;
    impl crate::Link for TlsRefusing {
        fn call(
            &self,
            node: NodeId,
            _envelope: decree_proto::Envelope,
            _timeout: Duration,
        ) -> crate::LinkFuture<'_> {
            Box::pin(
                async move { Err(crate::LinkError::Tls { node, reason: "unknown issuer".into() }) },
            )
        }
    }
    let refused = Client::with_link(Arc::new(TlsRefusing), vec![NodeId(31)], settings());
    let started = Instant::now();
    let err = refused.refresh_routes().await.unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_commit_dropped_in_flight_can_still_be_resolved() {
    let fake = FakeCluster::two_groups();
    let client = connect(&fake, settings()).await;
    fake.rule("Request::CommitTxn", None, usize::MAX, Fault::LoseReply);
    let txn = client.begin();
    txn.put("a", b"1".to_vec()).unwrap();
    txn.put("z", b"2".to_vec()).unwrap();
    let txn_id = txn.txn_id();
    let committing = tokio::spawn(async move { txn.commit().await });
    while fake.sent("Request::CommitTxn").is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The application gives up on the commit (a timeout, a cancelled request).
    committing.abort();
    assert!(committing.await.unwrap_err().is_cancelled());
    fake.lock().rules.clear();
    let state = client.txn_status(txn_id).await.unwrap();
    assert!(matches!(state, TxnState::Committed(info) if info.txn_id == txn_id), "{state:?}");
}

#[tokio::test(start_paused = true)]
async fn a_read_set_too_large_for_the_wire_is_covered_by_fewer_wider_spans() {
    let fake = FakeCluster::two_groups();
    let client = connect(&fake, settings()).await;
    let txn = client.begin();
    let keys: Vec<String> =
        (0..3_000).map(|i| format!("{}{i:05}", if i % 2 == 0 { "a" } else { "n" })).collect();
    for chunk in keys.chunks(500) {
        txn.get_many(chunk.iter().cloned()).await.unwrap();
    }
    txn.put("a", b"1".to_vec()).unwrap();
    txn.put("z", b"1".to_vec()).unwrap();
    txn.commit().await.unwrap();
    let commit = fake.sent("Request::CommitTxn").pop().unwrap();
    let Request::CommitTxn(c) = commit.request else { unreachable!() };
    let spans: Vec<(GroupId, KeyRange)> = c
        .per_group
        .iter()
        .flat_map(|g| g.read_spans.iter().map(move |s| (g.group, s.clone())))
        .collect();
    assert!(spans.len() <= decree_proto::limits::READ_SPANS_PER_TXN_MAX, "{}", spans.len());
    assert!(spans.len() > 100, "coarsened only as much as needed");
    // Every key read is still covered, by a span of its own group.
    for key in &keys {
        let key = Key::from(key.as_str());
        let group = if key < Key::from("m") { GroupId(1) } else { GroupId(2) };
        assert!(spans.iter().any(|(g, s)| *g == group && s.contains(&key)), "{key} uncovered");
    }
}

#[tokio::test(start_paused = true)]
async fn txn_status_at_asks_the_coordinator_that_txn_id_picks() {
    let fake = FakeCluster::two_groups();
    let client = connect(&fake, settings()).await;
    assert_eq!(
        client.groups_for(&KeyRange::new("c", Some(Key::from("p")))).await,
        Ok(vec![GroupId(1), GroupId(2)])
    );
    // Never heard of: presumed aborted (REC-4), from the coordinator group.
    let state = client.txn_status_at(TxnId(77), client.now()).await.unwrap();
    assert_eq!(state, TxnState::Aborted { reason: AbortReason::PresumedAbort });
    let asked = fake.sent("Request::TxnStatus");
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].group, GroupId(100));
    assert_eq!(asked[0].node, NodeId(31));
}

#[tokio::test(start_paused = true)]
async fn commit_wait_holds_a_1pc_commit_until_max_offset_past_its_timestamp() {
    let fake = FakeCluster::two_groups();
    let client = connect(&fake, settings()).await;
    let strict = TxnOptions { isolation: Isolation::Serializable, commit_wait: true };
    let started = Instant::now();
    let (_, info) = client
        .transact_with(strict, |txn| async move { txn.put("w", b"1".to_vec()) })
        .await
        .unwrap();
    let waited = started.elapsed();
    let max_offset = Duration::from_nanos(client.settings().max_offset_ns);
    assert!(waited >= max_offset - Duration::from_millis(5), "{waited:?}");
    assert!(waited <= max_offset + Duration::from_millis(5), "{waited:?}");
    let Request::CommitLocal(c) = &fake.sent("Request::CommitLocal")[0].request else {
        unreachable!()
    };
    assert_eq!(c.txn_id, info.txn_id);
    // Without commit-wait there is no pause.
    let started = Instant::now();
    let txn = client.begin();
    txn.put("w", b"2".to_vec()).unwrap();
    txn.commit().await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(5));
    // A 2PC commit leaves the wait to the coordinator and says so in its mode.
    let txn = client.begin_with(strict);
    txn.put("a", b"1".to_vec()).unwrap();
    txn.put("z", b"1".to_vec()).unwrap();
    txn.commit().await.unwrap();
    let Request::CommitTxn(c) = &fake.sent("Request::CommitTxn")[0].request else { unreachable!() };
    assert!(c.mode.commit_wait);
}

#[tokio::test(start_paused = true)]
async fn resolution_follows_the_coordinator_groups_leader_changes() {
    let fake = FakeCluster::two_groups();
    seed_accounts(&fake);
    let client = connect(&fake, settings()).await;
    // The coordinator group elected n33 after the client fetched the map (which names n31).
    {
        let mut s = fake.lock();
        let g = s.groups.get_mut(&GroupId(100)).unwrap();
        g.leader = NodeId(33);
        g.term = Term(2);
    }
    fake.rule("Request::CommitTxn", None, usize::MAX, Fault::LoseReply);
    // The first status query meets a replica that has not heard of the election yet.
    fake.rule(
        "Request::TxnStatus",
        None,
        1,
        Fault::Refuse(ErrorResponse::NotLeader { hint: None, term: Term(1) }),
    );
    let runs = AtomicU32::new(0);
    let (moved, _) = transfer(&client, "alice", "zed", &runs).await.unwrap();
    assert!(moved);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let status = fake.sent("Request::TxnStatus");
    assert!(status.len() >= 2, "the refused query was asked again elsewhere");
    assert_eq!(status.last().unwrap().node, NodeId(33));
    assert_eq!(total(&fake), 300);
    assert_eq!(balance(&fake.latest("zed")), 110);
}

#[tokio::test(start_paused = true)]
async fn bank_transfers_under_random_loss_are_applied_at_most_once_each() {
    let fake = FakeCluster::two_groups();
    let accounts = ["alice", "bob", "nina", "zed"];
    for a in accounts {
        fake.seed(a, &1_000i64.to_be_bytes(), HlcTimestamp::new(1, 0));
    }
    fake.lock().chaos = Some(crate::fake::Chaos {
        rng: decree_types::DetRng::new(2026),
        lose_request_pct: 30,
        lose_reply_pct: 40,
    });
    let client = connect(
        &fake,
        // Short enough that a commit often gives up re-sending and ends ambiguous.
        ClientSettings { operation_timeout: Duration::from_millis(25), ..settings() },
    )
    .await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24usize {
        let client = client.clone();
        // Offsets 1, 2, 3 in turn: a mix of one-group (1PC) and two-group (2PC) transfers.
        let (from, to) = (accounts[i % 4], accounts[(i + 1 + (i / 4) % 3) % 4]);
        tasks.spawn(async move {
            let tried = Arc::new(std::sync::Mutex::new(Vec::new()));
            let tried2 = Arc::clone(&tried);
            let result = client
                .transact(move |txn| {
                    tried2.lock().unwrap().push(txn.txn_id());
                    async move {
                        let v = txn.get_many([from, to]).await?;
                        txn.put(from, (balance(&v[0]) - 1).to_be_bytes())?;
                        txn.put(to, (balance(&v[1]) + 1).to_be_bytes())?;
                        Ok(())
                    }
                })
                .await;
            let tried = tried.lock().unwrap().clone();
            (result, tried, from == to)
        });
    }
    let (mut ok, mut ambiguous) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (result, tried, _) = done.unwrap();
        let s = fake.lock();
        let committed = |id: &TxnId| {
            let outcome = s.records.get(id).or_else(|| s.local_results.get(id));
            matches!(outcome, Some(decree_proto::txn::TxnOutcome::Committed { .. }))
        };
        let n = tried.iter().filter(|id| committed(id)).count();
        assert!(n <= 1, "a transfer was applied {n} times");
        match result {
            Ok((_, info)) => {
                ok += 1;
                assert_eq!(n, 1);
                assert!(committed(&info.txn_id), "the reported commit is the applied one");
            }
            Err(Error::Ambiguous { .. }) => ambiguous += 1,
            Err(e) => assert_eq!(n, 0, "{e:?} but a run committed"),
        }
    }
    assert!(ok >= 12, "most transfers complete despite the loss: {ok} ok, {ambiguous} ambiguous");
    // The loss did force resolutions (the test is not vacuous).
    let status = fake.sent("Request::TxnStatus").len();
    assert!(status > 0);
    let sum: i64 = accounts.iter().map(|a| balance(&fake.latest(a))).sum();
    assert_eq!(sum, 4_000);
}
