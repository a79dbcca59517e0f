//! Per-node simulated clocks: a monotonic clock (a fixed offset, a rate drift, forward jumps)
//! and a physical "wall" clock (ns since the Unix epoch) with a bounded skew between nodes and
//! occasional violations of the bound (an NTP step gone wrong), for the HLC (HLC-3, HLC-6).
//!
//! The simulator keeps one global time (nanoseconds since the run started). Each node reads its
//! own local monotonic time from it:
//!
//! ```text
//! local = offset + global * (1_000_000 + drift_ppm) / 1_000_000 + sum(jumps)
//! ```
//!
//! Jumps only go forward and the drift is bounded well below 100%, so local time never goes
//! backwards — the node's `now` stays monotonic, as the real shell's monotonic clock is, also
//! across a simulated restart (the clock belongs to the machine, not the process).

use decree_types::DetRng;

/// Largest drift a node's clock may have, in parts per million (±).
pub const DRIFT_PPM_MAX: i64 = 200;
/// Largest initial offset between node clocks, in nanoseconds.
pub const OFFSET_NS_MAX: u64 = 200_000_000;

/// The physical time at the start of every run (ns since the Unix epoch, November 2023).
pub const WALL_EPOCH_NS: u64 = 1_700_000_000_000_000_000;
/// Largest skew of a node's physical clock from true time, ns (±): well inside the HLC's
/// `max_offset` (250 ms), so two healthy nodes are at most 100 ms apart.
pub const WALL_SKEW_NS_MAX: u64 = 50_000_000;

/// One node's clock.
#[derive(Clone, Debug)]
pub struct SimClock {
    offset_ns: u64,
    drift_ppm: i64,
    jumped_ns: u64,
    /// The physical clock's skew from true time, within ±[`WALL_SKEW_NS_MAX`].
    wall_skew_ns: i64,
    /// A violation of the bound in force now (0: none).
    wall_step_ns: i64,
}

impl SimClock {
    /// A clock with a seeded offset and drift.
    pub fn seeded(rng: &mut DetRng) -> Self {
        let offset_ns = rng.range(0, OFFSET_NS_MAX);
        // DRIFT_PPM_MAX is a small positive constant, so the cast and the range are exact.
        let drift_ppm = rng.range(0, 2 * DRIFT_PPM_MAX as u64 + 1) as i64 - DRIFT_PPM_MAX;
        SimClock { offset_ns, drift_ppm, jumped_ns: 0, wall_skew_ns: 0, wall_step_ns: 0 }
    }

    /// A perfect clock (tests).
    pub fn perfect() -> Self {
        SimClock { offset_ns: 0, drift_ppm: 0, jumped_ns: 0, wall_skew_ns: 0, wall_step_ns: 0 }
    }

    /// Gives the physical clock a seeded skew within ±[`WALL_SKEW_NS_MAX`].
    pub fn skew_wall(&mut self, rng: &mut DetRng) {
        // WALL_SKEW_NS_MAX is a small constant: the casts are exact.
        self.wall_skew_ns = rng.range(0, 2 * WALL_SKEW_NS_MAX + 1) as i64 - WALL_SKEW_NS_MAX as i64;
    }

    /// The node's physical time at global time `global_ns`, ns since the Unix epoch. It may
    /// go backwards (when a violation ends); the HLC does not.
    pub fn wall_ns(&self, global_ns: u64) -> u64 {
        let scaled = i128::from(global_ns) * i128::from(1_000_000 + self.drift_ppm) / 1_000_000;
        let wall = i128::from(WALL_EPOCH_NS)
            + scaled
            + i128::from(self.wall_skew_ns)
            + i128::from(self.wall_step_ns);
        u64::try_from(wall).unwrap_or(0)
    }

    /// The physical clock steps by `delta_ns` beyond its bound (0 ends the violation).
    pub fn step_wall(&mut self, delta_ns: i64) {
        self.wall_step_ns = delta_ns;
    }

    /// Is the physical clock out of its bound now?
    pub fn wall_violated(&self) -> bool {
        self.wall_step_ns != 0
    }

    /// The node's local monotonic time at global time `global_ns`.
    pub fn local_ns(&self, global_ns: u64) -> u64 {
        let scaled = i128::from(global_ns) * i128::from(1_000_000 + self.drift_ppm) / 1_000_000;
        // |drift| <= 200 ppm, so `scaled` is positive and at most ~1.0002 * global: fits u64
        // for any run shorter than centuries.
        let scaled = u64::try_from(scaled).unwrap_or(u64::MAX);
        self.offset_ns.saturating_add(scaled).saturating_add(self.jumped_ns)
    }

    /// Moves the clock forward by `delta_ns` at once (an NTP step, a VM pause).
    pub fn jump(&mut self, delta_ns: u64) {
        self.jumped_ns = self.jumped_ns.saturating_add(delta_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_time_is_monotonic_under_drift_and_jumps() {
        let mut rng = DetRng::new(3);
        for _ in 0..50 {
            let mut clock = SimClock::seeded(&mut rng);
            let mut last = 0;
            for step in 0..1000u64 {
                if step % 97 == 0 {
                    clock.jump(rng.range(0, 1_000_000_000));
                }
                let now = clock.local_ns(step * 1_000_000);
                assert!(now >= last);
                last = now;
            }
        }
    }
}
