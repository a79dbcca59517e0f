//! Hybrid logical clock (protocol.md §1, HLC-1..HLC-6).
//!
//! [`Hlc`] is a pure state machine: every operation takes the current physical time as an
//! argument, so tests and the simulator decide what "now" is. The shell reads the system clock
//! through a [`PhysicalClock`] and passes the reading in.
//!
//! Which rule lives where:
//!
//! - HLC-1 (`now`), HLC-2 (`update`) and HLC-3 (`check_offset`, also done by `update`) are
//!   [`Hlc`]'s methods, transcribed from the rules as written.
//! - HLC-4 (every message carries `sender_clock = now()` taken after its other timestamps,
//!   and the receiver calls `update(sender_clock)` first) is the callers' duty; INV-H1 is what
//!   makes it sufficient: a later `now()` exceeds every earlier timestamp.
//! - HLC-5 (monotonic across restarts) is [`WallBound`]: when to persist an upper bound of
//!   issued wall time, and the floor to restart from ([`Hlc::with_floor`]).
//! - HLC-6 (offset monitoring) is [`OffsetMonitor`]: per-peer offsets from heartbeat round
//!   trips, and the fatal verdict when this node is too far from a majority.
//!
//! Guarantees (protocol.md §9), property-tested below: INV-H1 successive `now()` values
//! strictly increase, whatever physical time does; INV-H2 `l >= pt` after every event, and
//! `l - pt` never exceeds the largest lead of an accepted remote reading (at most
//! `max_offset`) for a clock from [`Hlc::new`] while physical time does not go backwards
//! (plus 1 ns if a logical counter ever overflows, see [`HlcTimestamp::next`]); INV-H3 after `update(m)` succeeds
//! the clock exceeds `m`, and a refused `m` leaves the clock unchanged.

use std::fmt;

use serde::{Deserialize, Serialize};

mod offset;
mod wall_bound;

pub use offset::{OffsetError, OffsetMeasurement, OffsetMonitor};
pub use wall_bound::WallBound;

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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MAX_OFFSET_NS: u64 = 250_000_000;

    #[test]
    fn hlc1_now_follows_physical_time_then_ticks_logical() {
        let mut hlc = Hlc::new(MAX_OFFSET_NS);
        assert_eq!(hlc.now(100), HlcTimestamp::new(100, 0));
        assert_eq!(hlc.now(100), HlcTimestamp::new(100, 1));
        assert_eq!(hlc.now(90), HlcTimestamp::new(100, 2), "physical clock stepped back");
        assert_eq!(hlc.now(101), HlcTimestamp::new(101, 0));
    }

    #[test]
    fn hlc2_update_cases_as_written() {
        // l == l' == l.m: c := max(c, c.m) + 1
        let mut hlc = Hlc::with_floor(MAX_OFFSET_NS, HlcTimestamp::new(100, 3));
        assert_eq!(hlc.update(50, HlcTimestamp::new(100, 7)), Ok(HlcTimestamp::new(100, 8)));
        // l == l' (local ahead of remote and pt): c := c + 1
        assert_eq!(hlc.update(50, HlcTimestamp::new(99, 70)), Ok(HlcTimestamp::new(100, 9)));
        // l == l.m (remote ahead): c := c.m + 1
        assert_eq!(hlc.update(50, HlcTimestamp::new(120, 4)), Ok(HlcTimestamp::new(120, 5)));
        // l == pt (physical time ahead of both): c := 0
        assert_eq!(hlc.update(130, HlcTimestamp::new(125, 9)), Ok(HlcTimestamp::new(130, 0)));
    }

    #[test]
    fn hlc3_remote_exactly_max_offset_ahead_is_accepted() {
        let mut hlc = Hlc::new(MAX_OFFSET_NS);
        let pt = 1_000_000_000;
        let remote = HlcTimestamp::new(pt + MAX_OFFSET_NS, 5);
        assert_eq!(hlc.check_offset(pt, remote), Ok(()));
        assert_eq!(hlc.update(pt, remote), Ok(remote.next()));
    }

    #[test]
    fn hlc3_remote_one_ns_past_max_offset_is_refused_and_clock_unchanged() {
        let mut hlc = Hlc::new(MAX_OFFSET_NS);
        let pt = 1_000_000_000;
        let before = hlc.now(pt);
        let remote = HlcTimestamp::new(pt + MAX_OFFSET_NS + 1, 0);
        let expected = ClockError::RemoteTooFarAhead {
            remote,
            ahead_ns: MAX_OFFSET_NS + 1,
            max_offset_ns: MAX_OFFSET_NS,
        };
        assert_eq!(hlc.check_offset(pt, remote), Err(expected));
        assert_eq!(hlc.update(pt, remote), Err(expected));
        assert_eq!(hlc.last(), before);
    }

    #[test]
    fn hlc3_guard_does_not_overflow_near_the_end_of_time() {
        let mut hlc = Hlc::new(MAX_OFFSET_NS);
        assert_eq!(hlc.check_offset(u64::MAX - 1, HlcTimestamp::MAX), Ok(()));
        assert!(hlc.update(0, HlcTimestamp::MAX).is_err());
    }

    #[test]
    fn timestamp_next_carries_and_display_is_seconds_dot_nanos() {
        assert_eq!(HlcTimestamp::new(5, u32::MAX).next(), HlcTimestamp::new(6, 0));
        assert_eq!(HlcTimestamp::new(1_500_000_000, 3).to_string(), "1.500000000,3");
        assert_eq!(HlcTimestamp::new(5, 9).add_wall_ns(10), HlcTimestamp::new(15, 0));
    }

    /// One input to a node's clock.
    #[derive(Clone, Debug)]
    enum Event {
        /// Physical time moves by this many ns; negative is a backward step (NTP, VM pause).
        Advance(i64),
        /// HLC-1.
        Now,
        /// HLC-2 with a remote reading `lead` ns ahead of (or behind, if negative) our `pt`.
        Receive { lead_ns: i64, logical: u32 },
        /// Process restart from a floor (HLC-5): the clock restarts at `floor = last`.
        Restart,
    }

    fn event(max_lead_ns: i64) -> impl Strategy<Value = Event> {
        prop_oneof![
            3 => (-5_000_000_000i64..5_000_000_000).prop_map(Event::Advance),
            4 => Just(Event::Now),
            3 => (-1_000_000_000..=max_lead_ns, 0u32..1_000)
                .prop_map(|(lead_ns, logical)| Event::Receive { lead_ns, logical }),
            1 => Just(Event::Restart),
        ]
    }

    /// Physical time that starts at 100 s and moves by `d`, never below zero.
    fn advance(pt: u64, d: i64) -> u64 {
        pt.saturating_add_signed(d)
    }

    proptest! {
        /// INV-H1 (HLC-1, HLC-5): successive `now()` values strictly increase under any
        /// sequence of physical times, backward jumps and received readings included, and
        /// across restarts that resume from `with_floor(last issued)`.
        #[test]
        fn inv_h1_now_strictly_increases_including_restarts(
            events in proptest::collection::vec(event(2 * MAX_OFFSET_NS as i64), 1..300),
        ) {
            let mut pt: u64 = 100_000_000_000;
            let mut hlc = Hlc::new(MAX_OFFSET_NS);
            let mut last_now = HlcTimestamp::ZERO;
            for e in events {
                match e {
                    Event::Advance(d) => pt = advance(pt, d),
                    Event::Now => {
                        let ts = hlc.now(pt);
                        prop_assert!(ts > last_now, "{} after {}", ts, last_now);
                        last_now = ts;
                    }
                    Event::Receive { lead_ns, logical } => {
                        let remote = HlcTimestamp::new(advance(pt, lead_ns), logical);
                        let _ = hlc.update(pt, remote);
                    }
                    Event::Restart => {
                        // HLC-5 persists a bound above every issued wall time; the tightest
                        // such floor is the last timestamp itself.
                        hlc = Hlc::with_floor(MAX_OFFSET_NS, hlc.last());
                    }
                }
            }
        }

        /// INV-H2: `l >= pt` after every event; while physical time does not go backwards,
        /// `l - pt` never exceeds the largest lead of a remote reading the clock accepted
        /// (which HLC-3 caps at `max_offset`).
        #[test]
        fn inv_h2_clock_at_least_physical_and_lead_bounded_by_accepted_remote_lead(
            steps in proptest::collection::vec(
                (
                    // Mostly small steps, so a lead taken from a remote reading persists
                    // over several events and the bound is exercised.
                    prop_oneof![2 => Just(0u64), 3 => 0u64..1_000_000, 1 => 0u64..2_000_000_000],
                    any::<bool>(),
                    -1_000_000_000i64..=500_000_000,
                    0u32..1_000,
                ),
                1..300,
            ),
        ) {
            let mut pt: u64 = 100_000_000_000;
            let mut hlc = Hlc::new(MAX_OFFSET_NS);
            let mut max_accepted_lead_ns: u64 = 0;
            for (forward_ns, receive, lead_ns, logical) in steps {
                pt += forward_ns;
                let l = if receive {
                    let remote = HlcTimestamp::new(advance(pt, lead_ns), logical);
                    match hlc.update(pt, remote) {
                        Ok(ts) => {
                            max_accepted_lead_ns =
                                max_accepted_lead_ns.max(remote.wall_ns.saturating_sub(pt));
                            ts
                        }
                        // A refused reading is not an event of this clock: nothing to check.
                        Err(_) => continue,
                    }
                } else {
                    hlc.now(pt)
                };
                prop_assert!(l.wall_ns >= pt, "INV-H2: l {} below pt {}", l, pt);
                prop_assert!(max_accepted_lead_ns <= MAX_OFFSET_NS, "HLC-3 caps the lead");
                prop_assert!(
                    l.wall_ns - pt <= max_accepted_lead_ns,
                    "INV-H2: l {} leads pt {} by more than {}", l, pt, max_accepted_lead_ns
                );
            }
        }

        /// INV-H3 (HLC-2, HLC-3): after `update(m)` is accepted, the clock and the next
        /// `now()` are strictly greater than `m`; a refused `m` leaves the clock unchanged.
        #[test]
        fn inv_h3_update_exceeds_remote_or_rejects_without_change(
            events in proptest::collection::vec(event(2 * MAX_OFFSET_NS as i64), 0..100),
            pt_jump in -5_000_000_000i64..5_000_000_000,
            lead_ns in -1_000_000_000i64..=600_000_000,
            logical in any::<u32>(),
        ) {
            let mut pt: u64 = 100_000_000_000;
            let mut hlc = Hlc::new(MAX_OFFSET_NS);
            for e in events {
                match e {
                    Event::Advance(d) => pt = advance(pt, d),
                    Event::Now => { hlc.now(pt); }
                    Event::Receive { lead_ns, logical } => {
                        let _ = hlc.update(pt, HlcTimestamp::new(advance(pt, lead_ns), logical));
                    }
                    Event::Restart => hlc = Hlc::with_floor(MAX_OFFSET_NS, hlc.last()),
                }
            }
            let m = HlcTimestamp::new(advance(pt, lead_ns), logical);
            let before = hlc.last();
            match hlc.update(pt, m) {
                Ok(ts) => {
                    prop_assert!(m.wall_ns <= pt + MAX_OFFSET_NS);
                    prop_assert!(ts > m && ts > before && hlc.last() == ts);
                    let later_pt = advance(pt, pt_jump);
                    prop_assert!(hlc.now(later_pt) > m, "INV-H3: next now() must exceed m");
                }
                Err(ClockError::RemoteTooFarAhead { remote, ahead_ns, max_offset_ns }) => {
                    prop_assert_eq!(remote, m);
                    prop_assert!(ahead_ns > max_offset_ns);
                    prop_assert_eq!(hlc.last(), before, "a refused m must not move the clock");
                }
            }
        }

        /// INV-H4 (HLC-4): a `sender_clock` taken with `now()` after a message's protocol
        /// timestamps were produced (by `now()` or `update()`) is >= every one of them.
        #[test]
        fn inv_h4_sender_clock_taken_last_bounds_message_timestamps(
            events in proptest::collection::vec(event(MAX_OFFSET_NS as i64), 1..100),
            sender_pt_jump in -5_000_000_000i64..5_000_000_000,
        ) {
            let mut pt: u64 = 100_000_000_000;
            let mut hlc = Hlc::new(MAX_OFFSET_NS);
            let mut in_message = Vec::new();
            for e in events {
                match e {
                    Event::Advance(d) => pt = advance(pt, d),
                    Event::Now => in_message.push(hlc.now(pt)),
                    Event::Receive { lead_ns, logical } => {
                        let remote = HlcTimestamp::new(advance(pt, lead_ns), logical);
                        if let Ok(ts) = hlc.update(pt, remote) {
                            in_message.push(ts);
                        }
                    }
                    Event::Restart => {}
                }
            }
            let sender_clock = hlc.now(advance(pt, sender_pt_jump));
            for ts in in_message {
                prop_assert!(sender_clock >= ts, "INV-H4: {} > sender_clock {}", ts, sender_clock);
            }
        }
    }
}
