//! Micro-benchmark of the participant group's apply path and reads (not a test; run it in
//! release: `cargo run --release -p decree-participant --example bench_mvcc [keys]`).
//!
//! 1. Loads `keys` keys (default 1,000,000; 12-byte keys, 16-byte values) through applied
//!    1PC entries of 1,000 writes each, on a follower replica of the host's test harness.
//! 2. Applies `Prepare` + `Commit` entry pairs, each writing one existing key at random, and
//!    reports pairs per second (apply only: no Raft, no fsync, no admission).
//! 3. Point reads at a fixed timestamp, through the store (`MvccStore::read`) and through
//!    leader admission (`Get` answered at once), reported as ns per read.
//! 4. The snapshot's encoded bytes per key; the time to digest the whole state, to take a
//!    snapshot view of it (what the node thread pays) and to encode that view.
//!
//! Memory per key is measured from outside, as peak resident memory with only the load step
//! (`load-only` as the second argument), against a run with 1,000 keys:
//!
//! ```sh
//! /usr/bin/time -v target/release/examples/bench_mvcc 1000000 load-only
//! /usr/bin/time -v target/release/examples/bench_mvcc 1000 load-only
//! ```
//!
//! Wall-clock timing uses `std::time::Instant` here only; the library never reads a clock.

use std::hint::black_box;
use std::time::Instant;

use decree_host::testing::Harness;
use decree_host::{Admission, ReplicatedMachine, Requester};
use decree_participant::{
    CommitLocalCmd, ParticipantCommand, ParticipantConfig, ParticipantGroup, PrepareCmd,
};
use decree_proto::txn::{Get, Write};
use decree_proto::Request;
use decree_types::{ClientId, DetRng, GroupId, HlcTimestamp, Key, KeyRange, NodeId, Term, TxnId};

const WALL0: u64 = 1_800_000_000_000_000_000;
const BATCH: usize = 1_000;

fn key(i: u64) -> Key {
    Key::from(format!("k{i:011}").as_str())
}

fn main() {
    let keys: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let load_only = std::env::args().nth(2).as_deref() == Some("load-only");
    let config = ParticipantConfig {
        close_interval_ms: 0,
        gc_interval_ms: 0,
        expire_scan_interval_ms: 0,
        ..ParticipantConfig::default()
    };
    let group = GroupId(1);
    let machine = ParticipantGroup::new(group, KeyRange::full(), 1, config);
    let mut h = Harness::new(machine, group, NodeId(1), 250_000_000, WALL0);
    h.become_follower(Term(1), None);
    // A timestamp source standing in for the leader's HLC: 1 µs apart.
    let mut wall = WALL0;
    let mut tick = || {
        wall += 1_000;
        HlcTimestamp::new(wall, 0)
    };

    // 1. Load.
    let started = Instant::now();
    let mut txn = 0u128;
    for batch_start in (0..keys).step_by(BATCH) {
        let writes: Vec<Write> = (batch_start..(batch_start + BATCH as u64).min(keys))
            .map(|i| Write { key: key(i), value: Some(vec![b'v'; 16]) })
            .collect();
        txn += 1;
        let read_ts = tick();
        let commit_ts = tick();
        let cmd = CommitLocalCmd {
            txn_id: TxnId(txn),
            client_id: ClientId(1),
            seq: txn as u64,
            read_ts,
            commit_ts,
            writes,
            read_spans: vec![],
            refused: None,
        };
        h.apply(commit_ts, ParticipantCommand::CommitLocal(cmd));
    }
    let load_s = started.elapsed().as_secs_f64();
    assert_eq!(h.machine.state().mvcc().key_count() as u64, keys);
    println!("loaded {keys} keys in {load_s:.2} s ({:.0} keys/s)", keys as f64 / load_s);
    if load_only {
        return;
    }

    // 2. Prepare + Commit pairs.
    let pairs = 200_000u64;
    let mut rng = DetRng::new(7);
    let started = Instant::now();
    for _ in 0..pairs {
        txn += 1;
        let k = key(rng.range(0, keys));
        let read_ts = tick();
        let prepare_ts = tick();
        let prepare = PrepareCmd {
            txn_id: TxnId(txn),
            coord_group: GroupId(100),
            read_ts,
            prepare_ts,
            writes: vec![Write { key: k, value: Some(vec![b'w'; 16]) }],
            read_spans: vec![],
            refused: None,
        };
        black_box(h.apply(prepare_ts, ParticipantCommand::Prepare(prepare)));
        let commit_ts = tick();
        black_box(h.apply(commit_ts, ParticipantCommand::Commit { txn_id: TxnId(txn), commit_ts }));
    }
    let pair_s = started.elapsed().as_secs_f64();
    assert_eq!(h.machine.state().mvcc().intent_count(), 0);
    println!(
        "applied {pairs} Prepare+Commit pairs in {pair_s:.2} s: {:.0} pairs/s ({:.2} µs per pair)",
        pairs as f64 / pair_s,
        pair_s * 1e6 / pairs as f64
    );

    // 3. Point reads.
    // Keys are built before the clock starts: 100,000 random ones, read 10 times over.
    let sample: Vec<Key> = (0..100_000).map(|_| key(rng.range(0, keys))).collect();
    let read_ts = tick();
    let mvcc = h.machine.state().mvcc();
    let started = Instant::now();
    for _ in 0..10 {
        for k in &sample {
            black_box(mvcc.read(k, read_ts, read_ts));
        }
    }
    let store_ns = started.elapsed().as_nanos() as f64 / (10 * sample.len()) as f64;
    println!("point read (MvccStore::read, random key of {keys}): {store_ns:.0} ns per read");

    // Through admission, as the leader, whose physical clock is past every version.
    let ahead_ns = read_ts.wall_ns - WALL0 + 1_000_000_000;
    h.advance_to(h.now_ns + ahead_ns);
    h.become_ready_leader(Term(2));
    let admitted = 200_000u64;
    let started = Instant::now();
    for i in 0..admitted {
        let k = sample[i as usize % sample.len()].clone();
        let get = Request::Get(Get { key: k, read_ts, uncertainty_limit: None });
        let (_, admission) = h.admit(Requester::Client(ClientId(2)), get);
        assert!(matches!(
            admission,
            Admission::Reply(Ok(decree_proto::Response::Value(ref v))) if v.value.is_some()
        ));
    }
    let admit_ns = started.elapsed().as_nanos() as f64 / admitted as f64;
    println!("point read (leader admission of Get, HLC update and reply built): {admit_ns:.0} ns per read");

    // 4. Memory.
    let started = Instant::now();
    let digest = h.machine.digest();
    let digest_ms = started.elapsed().as_secs_f64() * 1e3;
    println!("digest of the whole state: {digest_ms:.0} ms ({digest:016x})");
    // The view is what the node thread pays for (the host takes it inline); encoding runs
    // wherever the embedding layer puts it (the node shell: a worker thread).
    let started = Instant::now();
    let view = h.machine.snapshot();
    let view_ms = started.elapsed().as_secs_f64() * 1e3;
    println!("snapshot view (ReplicatedMachine::snapshot, on the node thread): {view_ms:.3} ms");
    let started = Instant::now();
    let snapshot = ParticipantGroup::encode_snapshot(&view);
    println!("snapshot encoded from the view in {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
    drop(view);
    println!(
        "snapshot: {} bytes, {:.1} bytes per key (after the pairs: {} versions)",
        snapshot.len(),
        snapshot.len() as f64 / keys as f64,
        h.machine.state().mvcc().iter_versions().map(|(_, v)| v.len()).sum::<usize>()
    );
}
