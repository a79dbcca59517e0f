//! The fault schedule of the faulty phase.
//!
//! Each seed switches every kind of fault on or off and picks how often faults strike (as
//! FoundationDB's BUGGIFY does per run), so some seeds hammer one mechanism and others mix
//! everything. The simulator asks [`FaultPlan::next`] for the next fault whenever the previous
//! one has been scheduled.

use decree_types::DetRng;

use crate::network::{shuffled, NetParams, Partition};

/// One thing that goes wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `node` goes down in the way `kind` says; it restarts after `down_ns`.
    Crash { node: usize, kind: CrashKind, down_ns: u64 },
    /// Every node loses power at once (a data-centre outage); each restarts after `down_ns`.
    CrashAll { kind: CrashKind, down_ns: u64 },
    /// The next fsync on `node` fails: the node must stop; it restarts after `down_ns`.
    FsyncFailure { node: usize, down_ns: u64 },
    /// A partition of some shape, lifted after `hold_ns`.
    Partition { partition: Partition, hold_ns: u64 },
    /// Swizzle-clogging: clog every node's links one by one in `order`, `step_ns` apart, then
    /// unclog them in `unclog_order`, `step_ns` apart.
    Swizzle { order: Vec<usize>, unclog_order: Vec<usize>, step_ns: u64 },
    /// `node`'s clock jumps forward by `delta_ns`.
    ClockJump { node: usize, delta_ns: u64 },
    /// The leader of group number `group` (0-based) hands leadership to `target` (RAFT-6).
    Transfer { group: usize, target: usize },
    /// The network's delay, loss and duplication change.
    NetParams(NetParams),
}

/// How a node goes down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashKind {
    /// The process is killed; the OS keeps its page cache, so unsynced writes survive (and
    /// the restarted node's recovery must make them durable before relying on them).
    Kill,
    /// Power loss: every unsynced write is lost.
    PowerLoss,
    /// Power loss in the middle of the last write: a random prefix of it survives.
    TornWrite,
}

impl CrashKind {
    fn seeded(rng: &mut DetRng) -> Self {
        [CrashKind::Kill, CrashKind::PowerLoss, CrashKind::TornWrite][rng.range(0, 3) as usize]
    }
}

/// Which faults a seed uses and how often.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    nodes: usize,
    /// Mean gap between faults, ns.
    gap_ns: (u64, u64),
    crash: bool,
    fsync: bool,
    partition: bool,
    swizzle: bool,
    clock: bool,
    net: bool,
    transfer: bool,
}

impl FaultPlan {
    /// A seeded plan for `nodes` nodes.
    pub fn seeded(nodes: usize, rng: &mut DetRng) -> Self {
        let gap_min = rng.range(100_000_000, 1_000_000_000);
        FaultPlan {
            nodes,
            gap_ns: (gap_min, gap_min + rng.range(100_000_000, 3_000_000_000)),
            crash: rng.chance(3, 4),
            fsync: rng.chance(1, 3),
            partition: rng.chance(3, 4),
            swizzle: rng.chance(1, 3),
            clock: rng.chance(1, 2),
            net: rng.chance(1, 2),
            transfer: rng.chance(1, 2),
        }
    }

    /// A plan with no faults at all (for determinism and smoke tests).
    pub fn none(nodes: usize) -> Self {
        FaultPlan {
            nodes,
            gap_ns: (u64::MAX / 4, u64::MAX / 4),
            crash: false,
            fsync: false,
            partition: false,
            swizzle: false,
            clock: false,
            net: false,
            transfer: false,
        }
    }

    /// Does this plan inject anything?
    pub fn any(&self) -> bool {
        self.crash
            || self.fsync
            || self.partition
            || self.swizzle
            || self.clock
            || self.net
            || self.transfer
    }

    /// The next fault and how long to wait before it; `None` if the plan has no faults.
    pub fn next(&self, rng: &mut DetRng) -> Option<(u64, Fault)> {
        let kinds: Vec<u8> = [
            (self.crash, 0u8),
            (self.fsync, 1),
            (self.partition, 2),
            (self.swizzle, 3),
            (self.clock, 4),
            (self.net, 5),
            (self.transfer, 6),
        ]
        .into_iter()
        .filter_map(|(on, k)| on.then_some(k))
        .collect();
        if kinds.is_empty() {
            return None;
        }
        let wait_ns = rng.range(self.gap_ns.0, self.gap_ns.1);
        let n = self.nodes;
        let node = rng.range(0, n as u64) as usize;
        let fault = match kinds[rng.range(0, kinds.len() as u64) as usize] {
            0 if rng.chance(1, 10) => Fault::CrashAll {
                kind: CrashKind::seeded(rng),
                down_ns: rng.range(10_000_000, 2_000_000_000),
            },
            0 => Fault::Crash {
                node,
                kind: CrashKind::seeded(rng),
                down_ns: rng.range(10_000_000, 4_000_000_000),
            },
            1 => Fault::FsyncFailure { node, down_ns: rng.range(10_000_000, 2_000_000_000) },
            2 => {
                let partition = match rng.range(0, 5) {
                    0 => Partition::isolate(n, node),
                    1 => Partition::minority(n, rng),
                    2 => Partition::majority_split(n, rng),
                    3 => Partition::majorities_ring(n, rng),
                    _ => Partition::bridge(n, rng),
                };
                Fault::Partition { partition, hold_ns: rng.range(200_000_000, 5_000_000_000) }
            }
            3 => Fault::Swizzle {
                order: shuffled(n, rng),
                unclog_order: shuffled(n, rng),
                step_ns: rng.range(20_000_000, 800_000_000),
            },
            4 => Fault::ClockJump { node, delta_ns: rng.range(1_000_000, 3_000_000_000) },
            5 => Fault::NetParams(NetParams::faulty(rng)),
            _ => Fault::Transfer { group: rng.range(0, 8) as usize, target: node },
        };
        Some((wait_ns, fault))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_differ_by_seed_and_repeat_by_seed() {
        let draw = |seed| {
            let mut rng = DetRng::new(seed);
            let plan = FaultPlan::seeded(3, &mut rng);
            (0..20).filter_map(|_| plan.next(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
        assert!(FaultPlan::none(3).next(&mut DetRng::new(1)).is_none());
    }
}
