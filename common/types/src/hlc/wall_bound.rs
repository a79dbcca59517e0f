//! HLC-5: strictly monotonic timestamps across restarts, as pure logic.
//!
//! The problem: after a crash, the physical clock may read *earlier* than the wall time the
//! previous incarnation already handed out (the clock was stepped back, or the previous
//! incarnation had absorbed a peer's clock that was ahead). A fresh `Hlc::new` would then
//! issue timestamps below ones already seen by others, breaking INV-H1.
//!
//! The fix (CockroachDB's "persist an upper bound on wall time"): keep on disk a bound `B`
//! such that every timestamp that ever left the process has `wall_ns < B`. On restart, start
//! the clock at `Hlc::with_floor(max_offset, (B, 0))`, so the first `now()` is above every
//! timestamp of every earlier incarnation. [`WallBound`] decides *when* to raise `B` and
//! *whether* a timestamp is covered yet; the shell does the writing.
//!
//! Driver loop (shell):
//!
//! 1. On start, read `B` from disk (0 if the file does not exist) and build
//!    `WallBound::new(B, limits::WALL_BOUND_WINDOW_NS)` and
//!    `Hlc::with_floor(max_offset_ns, bound.restart_floor())`.
//! 2. Before serving, wait until physical time exceeds [`WallBound::serve_after_pt_ns`].
//!    INV-H1 does not need this (the floor already guarantees it), but until `pt` passes `B`
//!    the clock runs ahead of physical time by up to the window, which INV-H2 forbids and
//!    which peers would refuse under HLC-3 if the window exceeds `max_offset`.
//! 3. On every tick, and after issuing timestamps, call [`WallBound::poll_persist`]. When it
//!    returns `Some(b)`, write `b` durably (temp file, fsync, rename, fsync directory), then
//!    call [`WallBound::on_persisted`]`(b)`.
//! 4. Before a timestamp leaves the process (in a message, or in a WAL record another
//!    replica could receive), check [`WallBound::covers`]; if it is not covered yet, hold it
//!    until step 3 completes. With the default window this never happens in practice: the
//!    bound is refreshed when half the window remains, and the clock can only jump ahead by
//!    `max_offset` at once (HLC-3).

use crate::hlc::{Hlc, HlcTimestamp};

/// The persisted upper bound of issued wall time, and when to raise it (HLC-5).
///
/// Invariant: `persisted_ns` is durable, and every timestamp the caller let leave the process
/// (after [`WallBound::covers`] said yes) has `wall_ns < persisted_ns`. `persisted_ns` never
/// decreases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WallBound {
    persisted_ns: u64,
    window_ns: u64,
    /// A bound handed to the shell to persist whose completion has not been reported.
    in_flight_ns: Option<u64>,
}

impl WallBound {
    /// The bound read from disk at start (`0` if none was ever written) and the window by
    /// which a new bound leads issued wall time (`limits::WALL_BOUND_WINDOW_NS`).
    pub fn new(persisted_ns: u64, window_ns: u64) -> Self {
        WallBound { persisted_ns, window_ns, in_flight_ns: None }
    }

    /// The floor for [`Hlc::with_floor`] on restart: `(B, 0)`. Every earlier incarnation's
    /// escaped timestamps have `wall_ns < B`, so the restarted clock's first `now()` (at least
    /// `(B, 1)`) exceeds all of them (INV-H1 across restarts).
    pub fn restart_floor(&self) -> HlcTimestamp {
        HlcTimestamp::new(self.persisted_ns, 0)
    }

    /// Physical time the shell should wait past before serving after a restart, so the clock
    /// again follows physical time (INV-H2). Equal to the persisted bound.
    pub fn serve_after_pt_ns(&self) -> u64 {
        self.persisted_ns
    }

    /// The durable bound.
    pub fn persisted_ns(&self) -> u64 {
        self.persisted_ns
    }

    /// The bound being persisted, if any.
    pub fn in_flight_ns(&self) -> Option<u64> {
        self.in_flight_ns
    }

    /// May `ts` leave the process? Only if a restart could never issue a timestamp at or
    /// below it: `ts.wall_ns < persisted bound`.
    pub fn covers(&self, ts: HlcTimestamp) -> bool {
        ts.wall_ns < self.persisted_ns
    }

    /// Should a new bound be persisted now? Returns `Some(b)` (and remembers it as in flight)
    /// when the wall time the clock has issued or will issue next (`max(hlc.last().wall_ns,
    /// pt)`) is within half a window of the persisted bound; `b` is that wall time plus a
    /// window. Returns `None` while a previous bound is still being persisted: one write at a
    /// time, and the next poll after it completes asks again if needed.
    pub fn poll_persist(&mut self, pt_ns: u64, hlc: &Hlc) -> Option<u64> {
        if self.in_flight_ns.is_some() {
            return None;
        }
        let wall_ns = hlc.last().wall_ns.max(pt_ns);
        if wall_ns.saturating_add(self.window_ns / 2) < self.persisted_ns {
            return None;
        }
        let bound_ns = wall_ns.saturating_add(self.window_ns);
        self.in_flight_ns = Some(bound_ns);
        Some(bound_ns)
    }

    /// The shell reports that `bound_ns` is durable. The bound only moves up: a stale or
    /// duplicate report is harmless.
    pub fn on_persisted(&mut self, bound_ns: u64) {
        self.persisted_ns = self.persisted_ns.max(bound_ns);
        if self.in_flight_ns.is_some_and(|b| b <= self.persisted_ns) {
            self.in_flight_ns = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MAX_OFFSET_NS: u64 = 250;
    const WINDOW_NS: u64 = 1_000;

    #[test]
    fn hlc5_fresh_node_persists_before_anything_is_covered() {
        let mut bound = WallBound::new(0, WINDOW_NS);
        let mut hlc = Hlc::with_floor(MAX_OFFSET_NS, bound.restart_floor());
        let ts = hlc.now(10_000);
        assert!(!bound.covers(ts));
        assert_eq!(bound.poll_persist(10_000, &hlc), Some(11_000));
        assert_eq!(bound.poll_persist(10_000, &hlc), None, "one persist in flight at a time");
        bound.on_persisted(11_000);
        assert!(bound.covers(ts));
        assert_eq!(bound.in_flight_ns(), None);
    }

    #[test]
    fn hlc5_refreshes_only_when_half_the_window_is_used() {
        let mut bound = WallBound::new(0, WINDOW_NS);
        let hlc = Hlc::new(MAX_OFFSET_NS);
        let first = bound.poll_persist(10_000, &hlc).expect("nothing persisted yet");
        bound.on_persisted(first);
        assert_eq!(bound.poll_persist(10_499, &hlc), None);
        assert_eq!(bound.poll_persist(10_500, &hlc), Some(11_500));
    }

    #[test]
    fn hlc5_refresh_follows_clock_jumps_from_peers() {
        let mut bound = WallBound::new(0, WINDOW_NS);
        let mut hlc = Hlc::new(MAX_OFFSET_NS);
        let first = bound.poll_persist(10_000, &hlc).expect("first bound");
        bound.on_persisted(first);
        let ts = hlc.update(10_000, HlcTimestamp::new(10_250, 0)).expect("within max_offset");
        assert!(bound.covers(ts), "a max_offset jump stays inside half a window");
        assert_eq!(bound.poll_persist(10_000, &hlc), None);
    }

    #[test]
    fn hlc5_stale_persist_reports_do_not_lower_the_bound() {
        let mut bound = WallBound::new(5_000, WINDOW_NS);
        bound.on_persisted(4_000);
        assert_eq!(bound.persisted_ns(), 5_000);
        assert_eq!(bound.restart_floor(), HlcTimestamp::new(5_000, 0));
        assert_eq!(bound.serve_after_pt_ns(), 5_000);
    }

    #[test]
    fn hlc5_restart_with_clock_stepped_back_stays_above_earlier_timestamps() {
        let mut bound = WallBound::new(0, WINDOW_NS);
        let mut hlc = Hlc::new(MAX_OFFSET_NS);
        let first = bound.poll_persist(50_000, &hlc).expect("first bound");
        bound.on_persisted(first);
        let before_crash = hlc.now(50_000);
        assert!(bound.covers(before_crash));

        // Crash; the physical clock comes back 40 µs earlier.
        let bound = WallBound::new(bound.persisted_ns(), WINDOW_NS);
        let mut hlc = Hlc::with_floor(MAX_OFFSET_NS, bound.restart_floor());
        assert!(hlc.now(10_000) > before_crash);
    }

    #[derive(Clone, Debug)]
    enum Step {
        /// Physical time moves by this many ns (negative: the clock is stepped back).
        Advance(i64),
        Now,
        Update(u64),
        Persist,
        Crash,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (-2_000i64..3_000).prop_map(Step::Advance),
            4 => Just(Step::Now),
            2 => (0u64..=MAX_OFFSET_NS).prop_map(Step::Update),
            2 => Just(Step::Persist),
            1 => Just(Step::Crash),
        ]
    }

    proptest! {
        /// INV-H1 across restarts (HLC-5): with the shell following the driver loop, every
        /// timestamp let out of the process is greater than every one let out before it, by
        /// this or any earlier incarnation, whatever the physical clock does.
        #[test]
        fn inv_h1_hlc5_escaped_timestamps_increase_across_restarts(
            steps in proptest::collection::vec(step(), 1..200),
        ) {
            let mut pt: u64 = 1_000_000;
            let mut disk: u64 = 0;
            let mut bound = WallBound::new(disk, WINDOW_NS);
            let mut hlc = Hlc::with_floor(MAX_OFFSET_NS, bound.restart_floor());
            let mut pending: Option<u64> = None;
            let mut last_escaped = HlcTimestamp::ZERO;
            for step in steps {
                match step {
                    Step::Advance(d) => pt = pt.saturating_add_signed(d),
                    Step::Now => {
                        let ts = hlc.now(pt);
                        if bound.covers(ts) {
                            prop_assert!(ts > last_escaped, "{} after {}", ts, last_escaped);
                            last_escaped = ts;
                        }
                    }
                    Step::Update(lead) => {
                        let remote = HlcTimestamp::new(pt + lead, 7);
                        let ts = hlc.update(pt, remote).expect("lead <= max_offset");
                        if bound.covers(ts) {
                            prop_assert!(ts > last_escaped);
                            last_escaped = ts;
                        }
                    }
                    Step::Persist => {
                        if let Some(b) = pending.take() {
                            disk = disk.max(b);
                            bound.on_persisted(b);
                        }
                        pending = pending.or(bound.poll_persist(pt, &hlc));
                    }
                    Step::Crash => {
                        // An in-flight write may or may not have reached the disk.
                        if let Some(b) = pending.take() {
                            if b % 2 == 0 {
                                disk = disk.max(b);
                            }
                        }
                        bound = WallBound::new(disk, WINDOW_NS);
                        hlc = Hlc::with_floor(MAX_OFFSET_NS, bound.restart_floor());
                    }
                }
            }
        }
    }
}
