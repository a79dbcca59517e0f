//! Snapshots (RAFT-8): compaction on request of the application, chunked InstallSnapshot to
//! followers that need compacted entries, and installation on the follower side.
//!
//! A transfer sends the snapshot that was current when it started, to the end, even if the
//! application compacts again meanwhile: the follower's progress holds that snapshot (shared,
//! not copied) until the follower has it. Restarting with the newer snapshot instead would
//! never finish a large transfer while snapshots are taken more often than one takes to send.
//! Once done, the follower continues after the sent snapshot; if the leader has compacted
//! those entries too, a transfer of its current snapshot follows. The follower's match index
//! only grows along the way.
//!
//! Memory: the leader holds its current snapshot plus at most one older snapshot per follower
//! in transfer. A follower silent for a whole check-quorum round (RAFT-4) is considered lost:
//! its transfer, and the older snapshot it holds, is dropped (it starts over with the current
//! snapshot when the follower answers again).

use std::sync::Arc;

use decree_types::{LogIndex, NodeId, Term};

use super::{Ignored, RaftCore, ReplicationState, Role, SnapshotError};
use crate::msg::{Message, SnapshotMeta};

/// A snapshot being received, chunk by chunk.
#[derive(Debug)]
pub(super) struct IncomingSnapshot {
    /// The term of the leader sending it: within one term, `(term, meta)` names one sequence
    /// of bytes (a leader never changes the snapshot it holds for an index).
    term: Term,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl RaftCore {
    /// The application saved its state as of `index` (≤ applied) as `data`. The core drops
    /// the log up to `index` and keeps `data` to send to followers that need those entries.
    /// Returns the snapshot's metadata, which the driver stores with the data.
    /// The bytes are shared, not copied: pass an `Arc<[u8]>` and the core keeps a reference.
    pub fn snapshot_created(
        &mut self,
        index: LogIndex,
        data: impl Into<Arc<[u8]>>,
    ) -> Result<SnapshotMeta, SnapshotError> {
        let applied = self.log.applied();
        if index > applied {
            return Err(SnapshotError::NotApplied { index, applied });
        }
        let current = self.log.snapshot_index();
        if index <= current {
            return Err(SnapshotError::Stale { index, current });
        }
        // Invariant: snapshot index < index <= applied <= last index, so the log holds it.
        let last_term =
            self.log.term_at(index).expect("entry between snapshot and applied is in the log");
        let meta = SnapshotMeta {
            last_index: index,
            last_term,
            voters: self.voters.iter().copied().collect(),
        };
        self.log.compact_to(index);
        self.snapshot = Some((meta.clone(), data.into()));
        Ok(meta)
    }

    /// Sends the next chunk of the snapshot being transferred to `peer` (stop-and-wait: one
    /// chunk unanswered at a time; a heartbeat retransmits it). The chunk comes from the
    /// snapshot the transfer started with, whatever the current snapshot is now.
    pub(super) fn send_snapshot_chunk(&mut self, peer: NodeId) {
        let chunk_bytes = self.config.snapshot_chunk_bytes;
        let term = self.term;
        let Some(p) = self.progress.get_mut(&peer) else { return };
        let Some(send) = p.snapshot.as_mut().filter(|s| !s.awaiting) else { return };
        let len = send.data.len() as u64;
        let start = send.offset.min(len);
        let end = start.saturating_add(chunk_bytes).min(len);
        // Both bounds are at most data.len(), which is a usize.
        let chunk = send.data[start as usize..end as usize].to_vec();
        send.awaiting = true;
        let msg = Message::InstallSnapshot {
            term,
            meta: send.meta.clone(),
            offset: start,
            data: chunk,
            done: end == len,
        };
        self.send(peer, msg);
    }

    /// Follower side of InstallSnapshot, after `accept_leader`.
    pub(super) fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    ) -> Result<(), Ignored> {
        let commit = self.log.commit();
        if meta.last_index <= commit {
            // We already have everything it covers (and everything a snapshot being assembled
            // covers, if that one is not newer).
            if self.incoming_snapshot.as_ref().is_some_and(|inc| inc.meta.last_index <= commit) {
                self.incoming_snapshot = None;
            }
            let reply = Message::InstallSnapshotResponse {
                term: self.term,
                last_index: commit,
                next_offset: 0,
                done: true,
            };
            self.send_after_sync(from, reply);
            return Ok(());
        }
        let term = self.term;
        match &self.incoming_snapshot {
            Some(inc) if inc.term == term && inc.meta == meta => {}
            Some(inc) if inc.term == term && inc.meta.last_index > meta.last_index => {
                // A late copy of a chunk of an earlier transfer: within its term, a leader's
                // transfers to one follower never go back to an older snapshot. Keep the one
                // being assembled.
                return Err(Ignored::Stale);
            }
            _ if offset == 0 => {
                // A new transfer: it replaces whatever was being assembled.
                self.incoming_snapshot =
                    Some(IncomingSnapshot { term, meta: meta.clone(), data: Vec::new() });
            }
            _ => {
                // We lack the beginning of this snapshot: ask for it from offset 0.
                let reply = Message::InstallSnapshotResponse {
                    term,
                    last_index: meta.last_index,
                    next_offset: 0,
                    done: false,
                };
                self.send(from, reply);
                return Err(Ignored::Stale);
            }
        }
        let max_bytes = self.config.max_snapshot_bytes;
        // Invariant: the match above leaves `incoming_snapshot` assembling `meta` of this term.
        let Some(inc) = self.incoming_snapshot.as_mut() else { return Err(Ignored::Stale) };
        let have = inc.data.len() as u64;
        if have != offset {
            // A duplicate or a gap: tell the leader where we are.
            let reply = Message::InstallSnapshotResponse {
                term,
                last_index: meta.last_index,
                next_offset: have,
                done: false,
            };
            self.send(from, reply);
            return Err(Ignored::Stale);
        }
        if offset.saturating_add(data.len() as u64) > max_bytes {
            self.incoming_snapshot = None;
            return Err(Ignored::Malformed("snapshot larger than max_snapshot_bytes"));
        }
        inc.data.extend_from_slice(&data);
        let received = inc.data.len() as u64;
        if !done {
            let reply = Message::InstallSnapshotResponse {
                term: self.term,
                last_index: meta.last_index,
                next_offset: received,
                done: false,
            };
            self.send(from, reply);
            return Ok(());
        }
        let Some(IncomingSnapshot { meta, data, .. }) = self.incoming_snapshot.take() else {
            return Err(Ignored::Stale); // unreachable: matched `Some` above
        };
        if self.log.term_at(meta.last_index) == Some(meta.last_term) {
            // RAFT-8: the snapshot describes a prefix of our log: keep the log, which already
            // holds every entry the snapshot covers; they commit and apply as usual.
            self.log.commit_to(meta.last_index);
        } else {
            // RAFT-8: otherwise discard the whole log and install the snapshot.
            self.log.install_snapshot(meta.last_index, meta.last_term);
            self.snapshot = Some((meta.clone(), Arc::from(data.as_slice())));
            self.snapshot_to_install = Some((meta.clone(), data));
        }
        let reply = Message::InstallSnapshotResponse {
            term: self.term,
            last_index: meta.last_index,
            next_offset: received,
            done: true,
        };
        self.send_after_sync(from, reply);
        Ok(())
    }

    /// Leader side of an InstallSnapshot answer.
    pub(super) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        last_index: LogIndex,
        next_offset: u64,
        done: bool,
    ) -> Result<(), Ignored> {
        if self.role != Role::Leader {
            return Err(Ignored::WrongRole);
        }
        let log_last = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else { return Err(Ignored::UnknownPeer) };
        p.recent_active = true;
        if done {
            if last_index > log_last {
                return Err(Ignored::Malformed("snapshot acknowledgement beyond our log"));
            }
            p.ack(last_index);
            if p.state == ReplicationState::Snapshot && p.snapshot_arrived() {
                // The transfer is over: continue after the snapshot sent, which releases it.
                // If we compacted those entries too, the next append starts a transfer of our
                // current snapshot.
                let next = p.match_index.next();
                p.become_probe(next);
            }
            self.maybe_commit();
            // RAFT-6: a snapshot of the leader's whole log catches a transfer target up.
            self.maybe_send_timeout_now();
            return Ok(());
        }
        let Some(send) = p.snapshot.as_mut().filter(|s| s.meta.last_index == last_index) else {
            return Err(Ignored::Stale);
        };
        // The follower says how much it holds (less than we thought if it lost its copy).
        send.offset = next_offset.min(send.data.len() as u64);
        send.awaiting = false;
        Ok(())
    }
}
