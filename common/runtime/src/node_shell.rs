//! The shell that runs a replicated-log node as a real OS process (DESIGN.md §3, "shell").
//!
//! The node (`decree_raft::node::Node`) is synchronous and deterministic; this module gives it
//! a real disk ([`crate::fs_disk::FsDisk`]), real clocks, real peers (the QUIC endpoint) and
//! real clients, and nothing else. It owns no protocol logic.
//!
//! # The loop (Singular Update Queue)
//!
//! One tokio task owns the `Node`, the state machine ([`applied::AppliedLog`]) and the table of
//! waiting clients ([`applied::Waiters`]); nothing else touches them, so there are no locks.
//! Everything reaches it through channels. Each iteration:
//!
//! 1. **Wait** for at least one input: a Raft message from a peer (the endpoint's inbound
//!    channel), a client request (a bounded channel fed by the RPC handlers; each carries a
//!    oneshot for its reply), the timer, or shutdown.
//! 2. **Drain** everything else that has already arrived, without waiting (bounded per
//!    iteration so a flood cannot starve the timer): peer messages are stepped into the node,
//!    proposals are appended (answered at once with `NotLeader { hint }` if this replica does
//!    not lead the group), reads start a ReadIndex round (RAFT-3).
//! 3. **Tick** the node if the timer fired (elections, heartbeats, check-quorum).
//! 4. **Process**, once: the node persists every hard-state change and entry of *all* groups
//!    from this iteration to its WAL, calls **one fsync** for all of them (group commit across
//!    groups), and only then releases the messages that acknowledge durable state (RAFT-1),
//!    handing every outgoing message to the shell's outbox. It returns the entries that became
//!    applicable and the reads that were confirmed. A failed fsync is fatal: the loop returns
//!    the error and the process exits non-zero — it never carries on as if the write happened.
//! 5. **Send**: the outbox holds one batch per peer for the iteration. Its small messages
//!    (heartbeats, acknowledgements, votes, ReadIndex traffic) leave as one envelope on the
//!    peer's node-level stream — every group's heartbeats fall due in the same iteration, so
//!    they are coalesced per node pair — and entries and snapshot chunks on their ordered
//!    per-(peer, group) streams ([`peers`]).
//! 6. **Apply and answer**: applied entries go to the state machine in log order; a proposal is
//!    acknowledged to its client **only now, once its entry is applied** (so it is a committed
//!    entry, durable on a majority), and only if the applied entry at its index carries the
//!    term it was appended in (otherwise another leader's entry took the index and the client
//!    is told `Superseded`). Reads whose read index is now applied are answered.
//!
//! On SIGTERM or ctrl-c the loop stops after the current iteration, answers every waiting
//! client with `ShuttingDown` (an outcome the client records as unknown), and returns.
//!
//! # Pieces
//!
//! - [`run`]: the loop ([`run::NodeShell`]) and the handle RPC handlers use to reach it
//!   ([`run::ShellHandle`]).
//! - [`peers`]: the node's link to its peers over [`crate::transport`]: Raft messages in
//!   `decree_proto` envelopes — small ones of all groups coalesced into one per peer and
//!   iteration on a node-level stream, entries and snapshot chunks on the per-(peer, group)
//!   streams — with the HLC checks (HLC-2/3/4).
//! - [`applied`]: the state machine (an append-only list of commands per group) and the tables
//!   of waiting proposals and reads.
//! - [`rpc`]: the client protocol (propose, read, status) and its total decoder.
//! - [`timed_disk`]: a `Disk` wrapper that counts and times fsyncs for the status counters.
//!
//! # Time and randomness
//!
//! `now` for the node is the monotonic clock (`tokio::time::Instant`), so a wall-clock step
//! cannot fire or suppress an election. HLC readings on envelopes use the wall clock. The
//! node's random election timeouts come from a `DetRng` seeded from the node id and the start
//! time (reproducible from the log line that prints the seed).

pub mod applied;
pub mod peers;
pub mod rpc;
pub mod run;
pub mod timed_disk;
