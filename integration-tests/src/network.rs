//! The simulated network: per-message delay, loss, duplication and reordering, partitions of
//! several shapes, and clogged links.
//!
//! The network does not hold messages itself; it decides, for a batch sent at time `t` from `a`
//! to `b`, at which times copies of it arrive (none if lost). The simulator puts those
//! deliveries in its event queue. At delivery time the network is asked again: a link cut since
//! the send drops the batch, a clogged link defers it (clogging delays, it never loses — the
//! FoundationDB meaning), an open link delivers it.
//!
//! Reordering is a consequence of independent delays: two batches on one link may arrive in
//! either order, as datagrams can. (The real shell runs one ordered QUIC stream per (peer,
//! group) for entries and snapshot chunks, and one per peer for every group's small messages,
//! unordered with respect to each other; Raft must not rely on any order, and the simulator
//! makes sure it does not.)

use decree_types::DetRng;

/// How a batch fares on the network, decided per send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetParams {
    /// Smallest one-way delay, ns.
    pub delay_min_ns: u64,
    /// Largest ordinary one-way delay, ns.
    pub delay_max_ns: u64,
    /// Chance in 1000 that a batch is held much longer (a long reordering).
    pub long_delay_per_mille: u64,
    /// Largest long delay, ns.
    pub long_delay_max_ns: u64,
    /// Chance in 1000 that a batch is lost.
    pub loss_per_mille: u64,
    /// Chance in 1000 that a batch arrives twice.
    pub dup_per_mille: u64,
}

impl NetParams {
    /// A quiet network: small delays, nothing lost or duplicated (the healing phase).
    pub fn quiet() -> Self {
        NetParams {
            delay_min_ns: 200_000,
            delay_max_ns: 2_000_000,
            long_delay_per_mille: 0,
            long_delay_max_ns: 0,
            loss_per_mille: 0,
            dup_per_mille: 0,
        }
    }

    /// A seeded faulty network: each kind of misbehaviour is on or off, and how bad, by seed.
    pub fn faulty(rng: &mut DetRng) -> Self {
        let delay_min_ns = rng.range(100_000, 2_000_000);
        NetParams {
            delay_min_ns,
            delay_max_ns: delay_min_ns + rng.range(0, 30_000_000),
            long_delay_per_mille: if rng.chance(1, 2) { rng.range(1, 50) } else { 0 },
            long_delay_max_ns: rng.range(50_000_000, 1_500_000_000),
            loss_per_mille: if rng.chance(2, 3) { rng.range(1, 150) } else { 0 },
            dup_per_mille: if rng.chance(1, 2) { rng.range(1, 100) } else { 0 },
        }
    }
}

/// The state of one directed link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Messages flow.
    Open,
    /// Messages are dropped (a partition).
    Cut,
    /// Messages wait until the link is unclogged.
    Clogged,
}

/// What happens to a batch whose delivery time has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Step it into the receiver now.
    Deliver,
    /// Lost: the link is cut.
    Drop,
    /// Try again later: the link is clogged.
    Defer,
}

/// A connectivity pattern over `n` nodes: `open[from * n + to]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// What shape this is, for the trace and for people.
    pub name: String,
    n: usize,
    open: Vec<bool>,
}

impl Partition {
    /// Everyone can reach everyone.
    pub fn healed(n: usize) -> Self {
        Partition { name: "healed".into(), n, open: vec![true; n * n] }
    }

    /// Can `from` send to `to`? Only links between two nodes are asked about: a host
    /// delivers its envelopes to itself without the network.
    pub fn allows(&self, from: usize, to: usize) -> bool {
        self.open[from * self.n + to]
    }

    /// Nodes in `side` and the rest cannot talk across the cut (both directions).
    pub fn split(n: usize, side: &[usize], name: String) -> Self {
        let mut p = Partition { name, n, open: vec![true; n * n] };
        for a in 0..n {
            for b in 0..n {
                if side.contains(&a) != side.contains(&b) {
                    p.open[a * n + b] = false;
                }
            }
        }
        p
    }

    /// One node cut off from everyone.
    pub fn isolate(n: usize, node: usize) -> Self {
        Partition::split(n, &[node], format!("isolate n{node}"))
    }

    /// A random minority (at least one node, fewer than half) cut off from the majority.
    pub fn minority(n: usize, rng: &mut DetRng) -> Self {
        let size = rng.range(1, (n.div_ceil(2)) as u64).max(1) as usize;
        let side = shuffled(n, rng).into_iter().take(size).collect::<Vec<_>>();
        Partition::split(n, &side, format!("minority {side:?}"))
    }

    /// A clean split: `floor(n/2)+1` nodes on one side, the rest on the other.
    pub fn majority_split(n: usize, rng: &mut DetRng) -> Self {
        let side = shuffled(n, rng).into_iter().take(n / 2 + 1).collect::<Vec<_>>();
        Partition::split(n, &side, format!("majority split {side:?}"))
    }

    /// Every node sees a majority (counting itself), and no two nodes see the same set.
    ///
    /// With five or more nodes the links are symmetric: each node talks to its `k` ring
    /// neighbours on each side, `2k + 1 > n/2`. With three nodes no symmetric pattern does
    /// this, so the ring is one-way: `i` may send to `i + 1` only — each node hears from one
    /// other node and is heard by a different one.
    pub fn majorities_ring(n: usize, rng: &mut DetRng) -> Self {
        let order = shuffled(n, rng);
        let mut p =
            Partition { name: format!("majorities ring {order:?}"), n, open: vec![false; n * n] };
        let pos = |node: usize| order.iter().position(|&x| x == node).unwrap_or(0);
        if n < 5 {
            for a in 0..n {
                let b = order[(pos(a) + 1) % n];
                p.open[a * n + b] = true;
            }
        } else {
            let k = (n / 2).div_ceil(2);
            for a in 0..n {
                for b in 0..n {
                    let d = (pos(a) + n - pos(b)) % n;
                    if d.min(n - d) <= k {
                        p.open[a * n + b] = true;
                    }
                }
            }
        }
        p
    }

    /// Two halves that can reach each other only through one bridge node.
    pub fn bridge(n: usize, rng: &mut DetRng) -> Self {
        let order = shuffled(n, rng);
        let bridge = order[0];
        let left: Vec<usize> = order[1..].iter().copied().step_by(2).collect();
        let mut p = Partition {
            name: format!("bridge n{bridge} between {left:?} and the rest"),
            n,
            open: vec![true; n * n],
        };
        for a in 0..n {
            for b in 0..n {
                if a != bridge && b != bridge && left.contains(&a) != left.contains(&b) {
                    p.open[a * n + b] = false;
                }
            }
        }
        p
    }

    /// The nodes `node` can hear from, itself included.
    pub fn hears(&self, node: usize) -> Vec<usize> {
        (0..self.n).filter(|&o| o == node || self.allows(o, node)).collect()
    }
}

/// The whole network: link states plus the delivery parameters.
#[derive(Debug)]
pub struct Network {
    n: usize,
    partition: Partition,
    clogged: Vec<bool>,
    params: NetParams,
    rng: DetRng,
}

impl Network {
    /// A fully connected, quiet network of `n` nodes.
    pub fn new(n: usize, rng: DetRng) -> Self {
        Network {
            n,
            partition: Partition::healed(n),
            clogged: vec![false; n],
            params: NetParams::quiet(),
            rng,
        }
    }

    /// Replaces the delivery parameters.
    pub fn set_params(&mut self, params: NetParams) {
        self.params = params;
    }

    /// Replaces the partition.
    pub fn set_partition(&mut self, partition: Partition) {
        self.partition = partition;
    }

    /// The current partition.
    pub fn partition(&self) -> &Partition {
        &self.partition
    }

    /// Clogs or unclogs every link into and out of `node`.
    pub fn set_clogged(&mut self, node: usize, clogged: bool) {
        self.clogged[node] = clogged;
    }

    /// Removes every partition and clog and makes the network quiet.
    pub fn heal(&mut self) {
        self.partition = Partition::healed(self.n);
        self.clogged.iter_mut().for_each(|c| *c = false);
        self.params = NetParams::quiet();
    }

    /// The state of the directed link `from -> to`.
    pub fn link(&self, from: usize, to: usize) -> Link {
        // Invariant: a host never sends to its own node (the world checks every send).
        debug_assert_ne!(from, to, "a node's envelopes to itself never reach the network");
        if !self.partition.allows(from, to) {
            Link::Cut
        } else if self.clogged[from] || self.clogged[to] {
            Link::Clogged
        } else {
            Link::Open
        }
    }

    /// A batch is sent at `now_ns`: the global times at which copies arrive (empty: lost).
    pub fn plan(&mut self, now_ns: u64, from: usize, to: usize) -> Vec<u64> {
        if self.link(from, to) == Link::Cut || self.rng.chance(self.params.loss_per_mille, 1000) {
            return Vec::new();
        }
        let copies = if self.rng.chance(self.params.dup_per_mille, 1000) { 2 } else { 1 };
        (0..copies).map(|_| now_ns + self.delay_ns()).collect()
    }

    /// A batch's delivery time has come.
    pub fn arrive(&self, from: usize, to: usize) -> Arrival {
        match self.link(from, to) {
            Link::Open => Arrival::Deliver,
            Link::Cut => Arrival::Drop,
            Link::Clogged => Arrival::Defer,
        }
    }

    fn delay_ns(&mut self) -> u64 {
        let p = &self.params;
        let mut d = self.rng.range(p.delay_min_ns, p.delay_max_ns + 1);
        if self.rng.chance(p.long_delay_per_mille, 1000) {
            d += self.rng.range(0, p.long_delay_max_ns + 1);
        }
        d
    }
}

/// `0..n` in a seeded random order (Fisher–Yates).
pub fn shuffled(n: usize, rng: &mut DetRng) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.range(0, i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn majority(n: usize) -> usize {
        n / 2 + 1
    }

    #[test]
    fn majorities_ring_each_node_sees_a_distinct_majority() {
        for n in [3usize, 5, 7] {
            for seed in 0..20 {
                let p = Partition::majorities_ring(n, &mut DetRng::new(seed));
                let views: Vec<Vec<usize>> = (0..n).map(|i| p.hears(i)).collect();
                for (i, v) in views.iter().enumerate() {
                    assert!(v.len() >= majority(n), "n={n} node {i} sees {v:?}");
                    for w in &views[i + 1..] {
                        assert_ne!(v, w, "n={n}: two nodes see the same set");
                    }
                }
                if n == 3 {
                    // One-way ring: no link between two nodes is two-way.
                    for a in 0..n {
                        let both =
                            (0..n).filter(|&b| b != a && p.allows(a, b) && p.allows(b, a)).count();
                        assert_eq!(both, 0, "no link is two-way");
                    }
                }
            }
        }
    }

    #[test]
    fn bridge_halves_talk_only_through_the_bridge() {
        for n in [3usize, 5] {
            let p = Partition::bridge(n, &mut DetRng::new(9));
            let bridge = (0..n).find(|&b| p.hears(b).len() == n).expect("a node sees everyone");
            let others: Vec<usize> = (0..n).filter(|&x| x != bridge).collect();
            let cut = others
                .iter()
                .flat_map(|&a| others.iter().map(move |&b| (a, b)))
                .filter(|&(a, b)| !p.allows(a, b))
                .count();
            assert!(cut > 0, "the two halves are separated");
        }
    }

    #[test]
    fn split_cuts_exactly_across_the_sides() {
        let p = Partition::split(5, &[0, 3], "t".into());
        assert!(p.allows(0, 3) && p.allows(1, 2) && !p.allows(0, 1) && !p.allows(4, 3));
        let m = Partition::majority_split(5, &mut DetRng::new(1));
        let sizes: Vec<usize> = (0..5).map(|i| m.hears(i).len()).collect();
        assert!(sizes.iter().all(|&s| s == 3 || s == 2));
    }

    #[test]
    fn clogged_links_defer_and_cut_links_drop() {
        let mut net = Network::new(3, DetRng::new(1));
        assert_eq!(net.arrive(0, 1), Arrival::Deliver);
        net.set_clogged(1, true);
        assert_eq!(net.arrive(0, 1), Arrival::Defer);
        assert_eq!(net.arrive(0, 2), Arrival::Deliver);
        net.set_partition(Partition::isolate(3, 2));
        assert_eq!(net.arrive(0, 2), Arrival::Drop);
        assert!(net.plan(0, 0, 2).is_empty());
        net.heal();
        assert_eq!(net.arrive(0, 1), Arrival::Deliver);
        assert_eq!(net.plan(10, 0, 1).len(), 1);
    }
}
