//! The run's fingerprint: a hash of every event the simulator processes, in order.
//!
//! Two runs of one seed must produce the same hash (replay is exact); a run whose hash differs
//! took a different path somewhere. Events are encoded with postcard (a fixed, documented byte
//! format) and folded into 64-bit FNV-1a, so the hash does not depend on `Debug` formatting or on
//! anything the standard library may change between versions.

use std::fmt::Debug;

use decree_types::{GroupId, LogIndex, NodeId, Term};
use serde::Serialize;

/// Envelopes on the network, of whatever machines the hosts run.
#[derive(Debug, Serialize)]
pub enum Traffic<'a, E> {
    /// Envelopes left `from` for `to`; `copies` is how many deliveries the network scheduled.
    Send { from: NodeId, to: NodeId, copies: u8, batch: &'a [E] },
    /// Envelopes arrived and were handed to `to`'s host.
    Deliver { from: NodeId, to: NodeId, batch: &'a [E] },
}

/// One thing that happened in a simulated run. Times are global simulated nanoseconds.
#[derive(Debug, Serialize)]
pub enum TraceEvent<'a> {
    /// A batch was dropped (partition or loss).
    Drop { from: NodeId, to: NodeId },
    /// The node ticked.
    Tick { node: NodeId, local_ns: u64 },
    /// The node applied a committed entry.
    Apply { node: NodeId, group: GroupId, index: LogIndex, term: Term },
    /// The node installed a snapshot up to `index`.
    Restore { node: NodeId, group: GroupId, index: LogIndex },
    /// The node saw a new role or leader.
    Role { node: NodeId, group: GroupId, term: Term, leader: Option<NodeId>, is_leader: bool },
    /// The client sent request `tag` (a command to append or write, or a read) to `node`.
    Request { node: NodeId, group: GroupId, tag: u64, read: bool },
    /// `node` answered request `tag` (`ok`: applied or served; otherwise redirected,
    /// refused or unknown).
    Reply { node: NodeId, tag: u64, ok: bool },
    /// The client learned that `command` is applied: acknowledged.
    Ack { group: GroupId, command: u64, index: LogIndex },
    /// A fault or a phase change, described in words.
    Fault { what: &'a str },
    /// A node stopped on a fatal error.
    Fatal { node: NodeId, error: &'a str },
}

/// The running FNV-1a hash of a run, with an optional human-readable log.
#[derive(Debug)]
pub struct Trace {
    hash: u64,
    events: u64,
    buf: Vec<u8>,
    verbose: bool,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Trace {
    /// An empty trace; `verbose` prints every event to stdout as it is recorded.
    pub fn new(verbose: bool) -> Self {
        Trace { hash: FNV_OFFSET, events: 0, buf: Vec::with_capacity(256), verbose }
    }

    /// Folds one event at global time `at_ns` into the hash.
    pub fn record(&mut self, at_ns: u64, event: &(impl Serialize + Debug)) {
        self.buf.clear();
        self.buf.extend_from_slice(&at_ns.to_le_bytes());
        // Encoding into a Vec cannot fail: every field is plain data, and `Vec` grows as needed.
        let buf = std::mem::take(&mut self.buf);
        self.buf = postcard::to_extend(event, buf).unwrap_or_default();
        for &b in &self.buf {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(FNV_PRIME);
        }
        self.events += 1;
        if self.verbose {
            println!("{:>6}.{:06} ms  {event:?}", at_ns / 1_000_000, at_ns % 1_000_000);
        }
    }

    /// The hash of every event so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// How many events were recorded.
    pub fn events(&self) -> u64 {
        self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_events_same_hash_and_order_matters() {
        let a_ev = TraceEvent::Tick { node: NodeId(1), local_ns: 5 };
        let b_ev = TraceEvent::Tick { node: NodeId(2), local_ns: 5 };
        let mut a = Trace::new(false);
        a.record(1, &a_ev);
        a.record(2, &b_ev);
        let mut b = Trace::new(false);
        b.record(1, &a_ev);
        b.record(2, &b_ev);
        let mut c = Trace::new(false);
        c.record(1, &b_ev);
        c.record(2, &a_ev);
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
        assert_eq!(a.events(), 2);
    }
}
