//! Every bound in decree, named, with its unit last (STYLE.md principle 6).
//!
//! Anything that grows with peer or user input has a limit here, and every timeout lives here,
//! so that one file answers "how big / how long can this get?". Each constant says why it has
//! the value it has. These are the *defaults*: the node's config struct starts from them and
//! may override the tunable ones (timeouts, sizes of logs and snapshots), but the wire and
//! safety bounds (frame size, key and value size, `MAX_OFFSET_NS`) must be identical on every
//! node of a cluster.
//!
//! Naming: the protocol parameter's name from protocol.md §1.3 where it has one
//! (`max_offset`, `prepare_timeout`, `max_txn_lifetime`), otherwise *what*, then the unit,
//! then `_MAX` / `_MIN` for a bound (TigerStyle: `FRAME_BYTES_MAX`). Durations are in
//! milliseconds (`_MS`) except the HLC bounds, which are in nanoseconds (`_NS`) because
//! [`crate::HlcTimestamp::wall_ns`] is.

// ---------------------------------------------------------------------------------------------
// Clocks (protocol.md §1)
// ---------------------------------------------------------------------------------------------

/// Nanoseconds per millisecond, for converting the `_MS` constants to HLC wall time.
pub const NS_PER_MS: u64 = 1_000_000;

/// `max_offset`: the largest clock offset between any two nodes we tolerate (HLC-3, §5.3
/// uncertainty intervals, §6.3 commit-wait). 250 ms: NTP keeps healthy machines within a few
/// milliseconds, so this leaves two orders of magnitude of headroom while keeping uncertainty
/// restarts and commit-wait short (CockroachDB uses 500 ms; our clusters are small and local).
pub const MAX_OFFSET_NS: u64 = 250 * NS_PER_MS;

/// HLC-6: a node whose measured offset from a majority of its peers exceeds this stops
/// itself. `0.8 × max_offset` (CockroachDB's factor): the node leaves *before* the offset
/// reaches `max_offset`, where the uncertainty-interval argument stops holding.
pub const OFFSET_FATAL_NS: u64 = MAX_OFFSET_NS / 5 * 4;

/// HLC-6: an offset measurement older than this is ignored by the offset monitor. Ten
/// heartbeat intervals: a peer we have not heard from for a second says nothing about our
/// clock now, and a partitioned peer must not keep voting with a stale reading.
pub const OFFSET_MEASUREMENT_TTL_MS: u64 = 10 * HEARTBEAT_INTERVAL_MS;

/// HLC-5: how far ahead of issued wall time the persisted upper bound is placed. One second:
/// refreshed when half of it is used up, so the remaining 500 ms always exceed a jump by
/// `max_offset` (an `update` from a peer) plus a tick and an fsync; and a restart waits at most
/// this long for physical time to pass the bound.
pub const WALL_BOUND_WINDOW_NS: u64 = 1_000 * NS_PER_MS;

/// `read_hwm_delta` (LC-1, §3.6): a new participant leader refuses prepares at or below
/// `now + read_hwm_delta`, because reads served by the old leader may be up to `max_offset`
/// ahead of our clock.
pub const READ_HWM_DELTA_NS: u64 = MAX_OFFSET_NS;

/// `closed_ts_lag` (§5.4): how far behind its clock a participant leader closes timestamps
/// for follower reads. One second: far enough that active writers are rarely pushed, close
/// enough that follower reads are fresh (CockroachDB closes ~3 s behind).
pub const CLOSED_TS_LAG_MS: u64 = 1_000;

// ---------------------------------------------------------------------------------------------
// Raft (protocol.md §8, DESIGN.md §6)
// ---------------------------------------------------------------------------------------------

/// Leader heartbeat period. 50 ms: six heartbeats fit in the shortest election timeout, so a
/// follower sees several lost in a row before it campaigns, and one small frame per follower
/// per group every 50 ms costs nothing measurable (the heartbeats of all groups between two
/// nodes share one envelope).
pub const HEARTBEAT_INTERVAL_MS: u64 = 50;

/// Lower end of the randomized election timeout. 300 ms: the time a dead leader's groups
/// (and so its in-doubt transactions, REC-1) wait before anyone campaigns, and the largest
/// term of the recovery-time budget (≤ 1 s at p99 from a coordinator leader's crash to its
/// last in-doubt transaction resolved, BENCHMARKS.md). On a LAN it is three orders of
/// magnitude above a round trip and above this disk's fsync (0.14–0.26 ms p50); a stall
/// longer than it costs an election, never safety (RAFT-4), and PreVote with check-quorum
/// keep a partitioned or slow node from deposing a healthy leader.
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 300;

/// Upper end (exclusive) of the randomized election timeout. Twice the minimum: a spread wide
/// enough that split votes are rare (Raft §5.2 recommends randomizing over such an interval).
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 600;

/// AppendEntries messages in flight to one follower (Request Pipeline). Eight batches hide
/// a round trip at our batch sizes while bounding the memory a slow follower can pin.
pub const APPEND_ENTRIES_IN_FLIGHT_MAX: usize = 8;

/// Total entry payload bytes in one AppendEntries. 1 MiB: big enough to amortize a round
/// trip, small enough that `IN_FLIGHT × this` (8 MiB) fits well inside one frame budget and
/// a follower's memory, and that one message never nears `FRAME_BYTES_MAX`.
pub const APPEND_ENTRIES_BYTES_MAX: usize = 1024 * 1024;

/// Bytes of snapshot data in one InstallSnapshot chunk. 1 MiB: streams large snapshots
/// without ever building a frame near `FRAME_BYTES_MAX`, and lets a receiver ack progress.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// Log entries in one Raft `AppendEntries`. 4096: at the 128-byte entries of a busy group a
/// full append is half a MiB, under the 1 MiB a leader puts in one append by default; a
/// leader cuts its appends at this count as well as at its byte budget, so small entries
/// never make an append the wire refuses.
pub const RAFT_ENTRIES_PER_APPEND_MAX: usize = 4_096;

/// Largest snapshot chunk in one Raft `InstallSnapshot`, in bytes (the wire bound; a leader's
/// configured chunk size must not exceed it).
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Voting members of one Raft group. 64: groups have 3 or 5 voters (DESIGN.md §3); the bound
/// keeps a snapshot's configuration, which travels on the wire, small.
pub const VOTERS_MAX: usize = 64;

/// Raft messages of different groups in one envelope between two nodes (the coalesced
/// heartbeats, acknowledgements and votes of one driver iteration, DESIGN.md §6). 4096: a node
/// hosts far fewer groups than that, each sending a handful of such messages per iteration to
/// a peer; a sender splits a larger batch over several envelopes. It also bounds what one
/// frame can make a receiver build (4096 decoded messages are under half a MiB), where the
/// frame size alone would allow millions of 3-byte messages.
pub const RAFT_BATCH_MESSAGES_MAX: usize = 4_096;

/// A group takes a snapshot after this many bytes of log since the last one, then deletes the
/// WAL segments below it (DESIGN.md §5). 64 MiB: one segment's worth, so at most about two
/// segments are ever kept and recovery replays a bounded log.
pub const SNAPSHOT_EVERY_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// A host snapshots a group's state machine after this many applied entries since its last
/// snapshot (the host's one snapshot policy). 100,000 entries of a few hundred bytes each is
/// about one WAL segment of log (see [`SNAPSHOT_EVERY_LOG_BYTES`]).
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 100_000;

/// Requests one host keeps waiting for their answers at once (proposals, kept requests,
/// reads); more are refused with a `Busy` error.
pub const HOST_WAITERS_MAX: usize = 16 * 1024;

/// Requests one host's machines may have outstanding at other nodes at once; the oldest is
/// forgotten (its answer, if it comes, is dropped and the machine retries on its deadline).
pub const HOST_OUTSTANDING_REQUESTS_MAX: usize = 16 * 1024;

/// Rounds of envelopes a host delivers to its own node in one `Host::process` (a machine's
/// request to a group led on the same node is one round, its answer the next). Eight rounds
/// serve every exchange the machines make within one iteration; what a longer chain leaves is
/// delivered by the next one, so a pair of machines that keep asking each other cannot hold
/// an iteration forever.
pub const HOST_LOCAL_ROUNDS_MAX: usize = 8;

/// WAL segment file size at which a new segment is started (DESIGN.md §5). 64 MiB: few files,
/// and whole segments can be deleted once a snapshot covers them.
pub const WAL_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// One WAL record's payload. Equal to the frame bound: a record holds at most one proposed
/// command, which arrived in one frame.
pub const WAL_RECORD_BYTES_MAX: usize = FRAME_BYTES_MAX;

// ---------------------------------------------------------------------------------------------
// Transport (DESIGN.md §8)
// ---------------------------------------------------------------------------------------------

/// Largest frame accepted on any stream; a longer length prefix is refused before allocation.
/// 16 MiB: above the largest legitimate message (a transaction at `TXN_KEYS_MAX` keys of
/// `KEY_BYTES_MAX` plus values, an AppendEntries batch, a snapshot chunk) with headroom, yet
/// small enough that a hostile length prefix cannot exhaust memory.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Deadline for one request/response exchange between nodes or from a client before it is
/// retried or reported `Unavailable`. 2 s: longer than an election timeout's low end plus a
/// round trip, so a leader change usually completes within one retry.
pub const RPC_TIMEOUT_MS: u64 = 2_000;

/// Bytes of request frames one connection may have announced and not yet seen answered: a
/// request is charged its announced body length when its frame header arrives, before any of
/// the body is read, and released when its handler is done with it or the stream dies. Beyond
/// this a new request stream is refused. 64 MiB: four maximum-size frames, so a client can
/// pipeline several of the largest transactions, and no more than the connection's QUIC receive
/// window; without it 1,024 streams each announcing 16 MiB could pin 16 GiB per connection.
pub const REQUEST_BYTES_PER_CONNECTION_MAX: usize = 64 * 1024 * 1024;

/// The same charge summed over every connection of one certificate identity (a node, or a named
/// client). 128 MiB: two connections' worth, so opening more connections does not buy a client
/// more memory on the node, while a node peer whose dial raced ours (two connections for the
/// grace period) is never squeezed.
pub const REQUEST_BYTES_PER_IDENTITY_MAX: usize = 2 * REQUEST_BYTES_PER_CONNECTION_MAX;

/// Live connections one certificate identity may hold to a node; one more is closed right
/// after the handshake. 16: a node peer needs one (two while a simultaneous dial is retired)
/// and a client process one, but connections of a process that died linger until the idle
/// timeout, and several short-lived CLI runs may share a certificate. Each connection costs
/// QUIC state and receive buffers, so the count must be bounded too.
pub const CONNECTIONS_PER_IDENTITY_MAX: usize = 16;

/// Refused streams and connections are logged at most once per peer per this interval; the
/// next line carries the number left out, and every refusal is counted in the transport's
/// stats. One second: a misbehaving peer costs at most one line per second instead of one per
/// stream (30,000 bad streams used to write 5.7 MB of log), and an operator still sees it at
/// once.
pub const REFUSAL_LOG_INTERVAL_MS: u64 = 1_000;

/// Peers whose refusal-log interval is tracked at once. Beyond it, refusals by peers not yet
/// tracked are counted but not logged until entries expire. 4096: far more distinct identities
/// than misbehave at once, and a few hundred KiB at most.
pub const REFUSAL_LOG_PEERS_MAX: usize = 4_096;

// ---------------------------------------------------------------------------------------------
// Transactions (protocol.md §3, §4)
// ---------------------------------------------------------------------------------------------

/// Largest key. 4 KiB: keys are copied into every index, intent and read lock; a bound keeps
/// that cheap. Larger than any sensible application key (FoundationDB allows 10 KB).
pub const KEY_BYTES_MAX: usize = 4 * 1024;

/// Largest value. 1 MiB: a whole transaction still fits in one frame even at a few hundred
/// such values, and one value never dominates a snapshot chunk (FoundationDB allows 100 KB).
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;

/// Keys written plus keys read in one transaction. 1024: bounds a prepare's validation work
/// and the intents and read locks one transaction can hold in a group.
pub const TXN_KEYS_MAX: usize = 1024;

/// Sum of key and value bytes a transaction writes. 8 MiB: half a frame, leaving room for
/// the read set and encoding overhead in the commit request.
pub const TXN_WRITE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Prepared (in-doubt) transactions one participant group holds at once; further prepares are
/// refused (the client sees a retryable error). 10 000: bounds the intent table a stalled
/// coordinator can leave behind, far above the concurrency of our workloads.
pub const PREPARED_TXNS_PER_GROUP_MAX: usize = 10_000;

/// `prepare_timeout` (C-4): the coordinator aborts a transaction whose votes have not all
/// arrived in 5 s. Several election timeouts, so a participant leader change does not abort
/// every transaction in flight.
pub const PREPARE_TIMEOUT_MS: u64 = 5_000;

/// `in_doubt_query_after` (REC-3): a participant asks the coordinator about a transaction it
/// has held prepared for 2 s, then backs off exponentially. Long enough that the normal
/// `Commit`/`Abort` almost always arrives first, short enough that a coordinator crash is
/// resolved within seconds (DESIGN.md §1 "Recovery").
pub const IN_DOUBT_QUERY_AFTER_MS: u64 = 2_000;

/// Cap on the exponential backoff of in-doubt queries (REC-3). 30 s: a long coordinator
/// outage costs one query per prepared transaction per half minute.
pub const IN_DOUBT_QUERY_BACKOFF_MAX_MS: u64 = 30_000;

/// `liveness_threshold` (REC-5): a transaction whose coordinator has shown no sign of life
/// for five 1 s heartbeats may be pushed (CockroachDB's value).
pub const LIVENESS_THRESHOLD_MS: u64 = 5_000;

/// `max_txn_lifetime` (REC-7): the longest a transaction may run from begin to decision;
/// abort tombstones and client dedupe entries are kept at least this long (INV-A6). 10 min:
/// far above any real transaction, short enough that retention stays small.
pub const MAX_TXN_LIFETIME_MS: u64 = 10 * 60 * 1_000;

/// MVCC GC TTL: versions older than this below a newer version are garbage-collected, and
/// reads below the GC threshold are rejected. 1 h of history (DESIGN.md §5): long enough for
/// any snapshot read or audit, while memory stays bounded under a steady write rate.
pub const MVCC_GC_TTL_MS: u64 = 60 * 60 * 1_000;

// Compile-time checks of the relations the comments above rely on.
const _: () = {
    assert!(ELECTION_TIMEOUT_MIN_MS < ELECTION_TIMEOUT_MAX_MS);
    assert!(HEARTBEAT_INTERVAL_MS * 5 <= ELECTION_TIMEOUT_MIN_MS);
    assert!(OFFSET_FATAL_NS < MAX_OFFSET_NS);
    assert!(WALL_BOUND_WINDOW_NS / 2 > MAX_OFFSET_NS + HEARTBEAT_INTERVAL_MS * NS_PER_MS);
    assert!(APPEND_ENTRIES_BYTES_MAX * 2 <= FRAME_BYTES_MAX);
    assert!(SNAPSHOT_CHUNK_BYTES * 2 <= FRAME_BYTES_MAX);
    assert!(TXN_WRITE_BYTES_MAX < FRAME_BYTES_MAX);
    assert!(REQUEST_BYTES_PER_CONNECTION_MAX >= FRAME_BYTES_MAX);
    assert!(REQUEST_BYTES_PER_IDENTITY_MAX >= REQUEST_BYTES_PER_CONNECTION_MAX);
    assert!(VALUE_BYTES_MAX + KEY_BYTES_MAX <= TXN_WRITE_BYTES_MAX);
    assert!(PREPARE_TIMEOUT_MS > ELECTION_TIMEOUT_MAX_MS);
    assert!(MAX_TXN_LIFETIME_MS > PREPARE_TIMEOUT_MS);
    assert!(MVCC_GC_TTL_MS > MAX_TXN_LIFETIME_MS);
};
