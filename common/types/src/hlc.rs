//! Hybrid logical clock (protocol.md §1, HLC-1..HLC-6).
//!
//! [`Hlc`] is a pure state machine: every operation takes the current physical time as an
//! argument, so tests and the simulator decide what "now" is. The shell reads the system clock
//! through a [`PhysicalClock`] and passes the reading in.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An HLC reading: `(wall, logical)`, ordered lexicographically (wall first).
///
/// `wall` is nanoseconds since the Unix epoch. Field order matters: the derived `Ord` compares
/// `wall` first, then `logical`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct HlcTimestamp {
    /// Nanoseconds since the Unix epoch (the `l` of the HLC paper).
    pub wall_ns: u64,
    /// Logical counter within one `wall_ns` value (the `c` of the HLC paper).
    pub logical: u32,
}

impl HlcTimestamp {
    /// The smallest timestamp.
    pub const ZERO: HlcTimestamp = HlcTimestamp { wall_ns: 0, logical: 0 };
    /// The largest timestamp.
    pub const MAX: HlcTimestamp = HlcTimestamp { wall_ns: u64::MAX, logical: u32::MAX };

    /// A timestamp from its parts.
    pub const fn new(wall_ns: u64, logical: u32) -> Self {
        HlcTimestamp { wall_ns, logical }
    }

    /// The smallest timestamp strictly greater than `self`: `(wall, logical + 1)`, carrying
    /// into `wall` if the logical counter is exhausted.
    #[must_use]
    pub fn next(self) -> Self {
        match self.logical.checked_add(1) {
            Some(logical) => HlcTimestamp { wall_ns: self.wall_ns, logical },
            None => HlcTimestamp { wall_ns: self.wall_ns.saturating_add(1), logical: 0 },
        }
    }

    /// `self` moved forward by `delta_ns` of wall time (logical reset to 0), saturating.
    /// Used for uncertainty limits (`read_ts + max_offset`, TS-2) and deadlines.
    #[must_use]
    pub fn add_wall_ns(self, delta_ns: u64) -> Self {
        HlcTimestamp { wall_ns: self.wall_ns.saturating_add(delta_ns), logical: 0 }
    }
}

impl fmt::Display for HlcTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09},{}",
            self.wall_ns / 1_000_000_000,
            self.wall_ns % 1_000_000_000,
            self.logical
        )
    }
}

/// A source of physical time, in nanoseconds since the Unix epoch. The shell implements it
/// with the system clock; the simulator with a per-node skewed virtual clock.
pub trait PhysicalClock {
    /// The current physical time (the `pt` of the HLC paper).
    fn now_ns(&self) -> u64;
}

/// Why a remote clock reading was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// HLC-3: the remote reading is more than `max_offset` ahead of our physical clock.
    #[error(
        "remote clock reading {remote} is {ahead_ns} ns ahead of local physical time, \
         more than max_offset {max_offset_ns} ns; refusing it (HLC-3)"
    )]
    RemoteTooFarAhead {
        /// The refused reading.
        remote: HlcTimestamp,
        /// How far ahead of local physical time it was.
        ahead_ns: u64,
        /// The configured bound.
        max_offset_ns: u64,
    },
}

/// One node's hybrid logical clock.
///
/// Invariant (INV-H1): successive values returned by [`Hlc::now`] strictly increase.
/// Invariant (INV-H3): after a successful [`Hlc::update`] with `m`, the next `now()` is `> m`.
#[derive(Clone, Debug)]
pub struct Hlc {
    last: HlcTimestamp,
    max_offset_ns: u64,
}

impl Hlc {
    /// A clock that refuses remote readings more than `max_offset_ns` ahead (HLC-3).
    pub fn new(max_offset_ns: u64) -> Self {
        Hlc { last: HlcTimestamp::ZERO, max_offset_ns }
    }

    /// A clock that will never hand out a timestamp at or below `floor`: used on restart with
    /// a persisted upper bound of previously issued wall time (HLC-5).
    pub fn with_floor(max_offset_ns: u64, floor: HlcTimestamp) -> Self {
        Hlc { last: floor, max_offset_ns }
    }

    /// The configured maximum clock offset.
    pub fn max_offset_ns(&self) -> u64 {
        self.max_offset_ns
    }

    /// The last timestamp this clock produced or absorbed (no tick).
    pub fn last(&self) -> HlcTimestamp {
        self.last
    }

    /// HLC-1, a send or local event: `l := max(l, pt)`; `c` ticks if `l` did not move,
    /// otherwise resets to 0.
    pub fn now(&mut self, pt_ns: u64) -> HlcTimestamp {
        let prev = self.last;
        self.last = if pt_ns > prev.wall_ns { HlcTimestamp::new(pt_ns, 0) } else { prev.next() };
        debug_assert!(self.last > prev, "INV-H1: now() must strictly increase");
        self.last
    }

    /// HLC-2 with the HLC-3 guard, a receive event of a message carrying `remote`
    /// (its `sender_clock`, HLC-4).
    ///
    /// On `Err` the clock is unchanged. On `Ok` the returned timestamp is strictly greater
    /// than both `remote` and every timestamp this clock issued before (INV-H3).
    pub fn update(&mut self, pt_ns: u64, remote: HlcTimestamp) -> Result<HlcTimestamp, ClockError> {
        self.check_offset(pt_ns, remote)?;
        let prev = self.last;
        let wall = prev.wall_ns.max(remote.wall_ns).max(pt_ns);
        let next = if wall == prev.wall_ns && wall == remote.wall_ns {
            HlcTimestamp::new(wall, prev.logical.max(remote.logical)).next()
        } else if wall == prev.wall_ns {
            prev.next()
        } else if wall == remote.wall_ns {
            remote.next()
        } else {
            HlcTimestamp::new(wall, 0)
        };
        self.last = next;
        debug_assert!(next > prev && next > remote, "INV-H3");
        Ok(next)
    }

    /// HLC-3 alone: is `remote` within `max_offset` of our physical time?
    pub fn check_offset(&self, pt_ns: u64, remote: HlcTimestamp) -> Result<(), ClockError> {
        let ahead_ns = remote.wall_ns.saturating_sub(pt_ns);
        if ahead_ns > self.max_offset_ns {
            return Err(ClockError::RemoteTooFarAhead {
                remote,
                ahead_ns,
                max_offset_ns: self.max_offset_ns,
            });
        }
        Ok(())
    }
}
