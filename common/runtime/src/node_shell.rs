//! The shell that runs a host (`decree_host::Host`: the Raft node, the replicated state
//! machines of its groups, the HLC) as a real OS process (DESIGN.md §3, "shell").
//!
//! The host is synchronous and deterministic; this module gives it a real disk
//! ([`crate::fs_disk::FsDisk`]), real clocks, real peers (the QUIC endpoint) and real clients,
//! and nothing else. It is generic over the state machine and owns no protocol logic: the
//! HLC and its checks, coalescing small Raft messages, matching committed entries to waiting
//! requests and the snapshot policy are the host's.
//!
//! # The loop (Singular Update Queue)
//!
//! One thread owns the host and the table of waiting clients; nothing else touches them, so
//! there are no locks. Everything reaches it through channels. Each iteration:
//!
//! 1. **Wait** for at least one input: an envelope from a peer (the endpoint's inbound
//!    channel), a client request (a bounded channel fed by the RPC handlers; each carries a
//!    oneshot for its answer), an encoded snapshot (below), the host's next deadline
//!    (`poll_timeout`), or shutdown. A host that still has work (`has_work`: proposals its
//!    machines made while applying, envelopes it delivers to its own node) is not waited
//!    for: the iteration goes on at once.
//! 2. **Drain** everything else that has already arrived, without waiting (bounded per
//!    iteration so a flood cannot starve the timer): peer envelopes are decoded (total
//!    decoder), checked to travel on the stream their kind belongs on, and handed to the host
//!    with the sender's certificate identity; client requests get a [`decree_host::ClientTag`],
//!    wait in the table, and go to the host with the client's identity and HLC reading.
//! 3. **Time**: past the host's deadline, `handle_timeout` (elections, heartbeats, HLC-6
//!    clock probes, machine timers). `now_ns` is the monotonic clock since the shell's origin,
//!    so a wall-clock step cannot fire or suppress an election; `wall_ns` is the physical
//!    clock the HLC reads (injectable, [`run::PhysicalClockFn`]).
//! 4. **Process**, once: the host runs its node — every hard-state change and entry of *all*
//!    groups from this iteration persisted to the WAL with **one fsync** (group commit across
//!    groups), the messages that acknowledge durable state released only after it (RAFT-1) —
//!    applies committed entries to the machines and hands the shell, through
//!    `decree_host::HostIo`, envelopes per peer and answers per waiting client. Envelopes a
//!    machine addresses to a group led on this node never reach the shell: the host delivers
//!    them to itself. A failed fsync
//!    is fatal: the loop returns the error and the process exits non-zero — it never carries
//!    on as if the write happened.
//! 5. **Send**: each envelope is encoded and queued on its stream to its peer ([`peers`]):
//!    Raft batches and clock traffic on the peer's node stream, entries, snapshot chunks and
//!    machine requests on their group's stream. Queuing never blocks; the endpoint's tasks
//!    write while this thread fsyncs.
//! 6. **Answer**: each answer goes back on its client's request stream. A proposal's answer
//!    comes only once its entry is applied (so a committed entry, durable on a majority); the
//!    host decides that, the shell only delivers.
//! 7. **Snapshots**: a `decree_host::SnapshotJob` the host handed out (an immutable view of a
//!    group's machine, O(1) to take) goes to the encoder thread, which encodes it
//!    (`SnapshotJob::encode`) while this thread goes on; the bytes come back as an input of
//!    step 1 and go to `Host::snapshot_encoded`, which gives them to the node (stored with its
//!    own fsync) or drops them if the group has moved past them. Encoding a large state never
//!    stalls the groups.
//!
//! If the host stops the node (a fatal disk error, HLC-6: this node's clock is off from a
//! majority of its peers), the loop ends with the reason. On SIGTERM or ctrl-c the loop stops
//! after the current iteration, answers every waiting client with `ShuttingDown` (an outcome
//! the client records as unknown), and returns.
//!
//! # Pieces
//!
//! - [`run`]: the loop ([`run::NodeShell`]), its thread ([`run::ShellThread`]) and the handle
//!   the RPC handler uses to reach it ([`run::ShellHandle`]).
//! - [`peers`]: envelopes to and from peers over [`crate::transport`], on the node stream or
//!   a group's stream.
//! - [`rpc`]: the client protocol (a machine's request for a group, or the node's status) and
//!   its total decoder.
//! - [`timed_disk`]: a `Disk` wrapper that counts and times fsyncs for the status counters.

pub mod peers;
pub mod rpc;
pub mod run;
pub mod timed_disk;
