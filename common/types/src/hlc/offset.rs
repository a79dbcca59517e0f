//! HLC-6: clock offset monitoring, as pure logic.
//!
//! HLC and everything built on it (uncertainty intervals, §5.3; commit-wait, §6.3) is only
//! correct while every pair of physical clocks is within `max_offset`. HLC-3 refuses single
//! readings too far ahead, but a node whose own clock drifts away from the cluster must notice
//! and stop itself before the bound is broken. [`OffsetMonitor`] does the bookkeeping:
//!
//! 1. Once per heartbeat interval the node shell asks each peer for its clock (a
//!    `ClockProbe` carrying its physical time `send_pt`, answered at once by a `ClockEcho`
//!    carrying the peer's physical clock reading `remote_pt`; `decree_runtime`'s
//!    `node_shell::peers`), and notes its physical time when the reply arrives (`recv_pt`). [`OffsetMeasurement::from_round_trip`] estimates
//!    `offset = remote_pt - (send_pt + rtt/2)` with uncertainty `rtt/2`: the peer read its
//!    clock at some instant within the round trip, and we assume the middle.
//! 2. The shell [`OffsetMonitor::record`]s it under the peer's [`NodeId`].
//! 3. Periodically (every heartbeat tick), the shell calls [`OffsetMonitor::check`]. If this
//!    node's clock is *definitely* (even allowing for each measurement's uncertainty) more
//!    than `0.8 × max_offset` away from a strict majority of the peers with a fresh
//!    measurement, it returns [`OffsetError::FarFromMajority`], a fatal error: the shell logs
//!    it and terminates the process [CRDB-TXN "Max clock offset enforcement"].
//!
//! Deliberate choices, following CockroachDB's `RemoteClockMonitor`: a measurement whose
//! uncertainty straddles the threshold counts as healthy (do not kill a node on ambiguous
//! evidence); a round trip longer than `2 × max_offset` is not kept at all (a message held up
//! that long may carry a reading from a moment that is over); measurements older than a TTL
//! are ignored (a partitioned peer says nothing about
//! our clock now). Unlike CockroachDB, a tie (half the peers far) is not fatal: with two peers
//! and one of them off, it is the peer that is wrong, and the peer's own monitor, which sees
//! both others far away, stops it.

use std::collections::BTreeMap;

use crate::NodeId;

/// One estimate of a peer's clock offset from ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetMeasurement {
    /// Peer's physical clock minus ours, estimated (positive: the peer is ahead).
    pub offset_ns: i64,
    /// The true offset lies in `offset_ns ± uncertainty_ns` (half the round-trip time).
    pub uncertainty_ns: u64,
    /// Our physical time when the reply arrived; the measurement's age is judged from it.
    pub measured_at_ns: u64,
}

impl OffsetMeasurement {
    /// The estimate from one round trip: we sent at `send_pt_ns`, the peer's physical clock
    /// read `remote_pt_ns` while answering, and the answer arrived at `recv_pt_ns`.
    ///
    /// `None` if `recv_pt_ns < send_pt_ns`: our own clock stepped back during the round trip,
    /// so the two readings do not bracket the peer's and the measurement means nothing.
    pub fn from_round_trip(send_pt_ns: u64, remote_pt_ns: u64, recv_pt_ns: u64) -> Option<Self> {
        let rtt_ns = recv_pt_ns.checked_sub(send_pt_ns)?;
        let uncertainty_ns = rtt_ns / 2;
        let midpoint_ns = send_pt_ns + uncertainty_ns;
        let offset = i128::from(remote_pt_ns) - i128::from(midpoint_ns);
        let offset_ns =
            i64::try_from(offset).unwrap_or(if offset < 0 { i64::MIN } else { i64::MAX });
        Some(OffsetMeasurement { offset_ns, uncertainty_ns, measured_at_ns: recv_pt_ns })
    }

    /// Is the peer's clock certainly more than `tolerated_ns` away from ours, even at the
    /// near end of the uncertainty interval (`|offset| - uncertainty > tolerated`)?
    pub fn is_certainly_beyond(&self, tolerated_ns: u64) -> bool {
        self.offset_ns.unsigned_abs().saturating_sub(self.uncertainty_ns) > tolerated_ns
    }
}

/// HLC-6 fatal error: this node's clock is too far from the cluster's; it must stop.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OffsetError {
    /// A strict majority of the peers with a fresh measurement are certainly further than
    /// `tolerated_ns` (`0.8 × max_offset`) from this node's clock.
    #[error(
        "clock offset from {} of {fresh_peers} peers exceeds {tolerated_ns} ns \
         (0.8 x max_offset); this node's clock is unreliable, stopping (HLC-6): {far:?}",
        far.len()
    )]
    FarFromMajority {
        /// The peers found too far away, with their measurements, in `NodeId` order.
        far: Vec<(NodeId, OffsetMeasurement)>,
        /// Number of peers with a measurement younger than the TTL.
        fresh_peers: usize,
        /// The offset threshold, `0.8 × max_offset`.
        tolerated_ns: u64,
    },
}

/// Per-peer clock offsets and the HLC-6 verdict over them. See the module docs for the loop.
#[derive(Clone, Debug)]
pub struct OffsetMonitor {
    tolerated_ns: u64,
    ttl_ns: u64,
    /// Round trips longer than this say too little to be kept: `2 × max_offset`.
    rtt_max_ns: u64,
    /// Latest measurement per peer; a `BTreeMap` so reports list peers in a stable order.
    peers: BTreeMap<NodeId, OffsetMeasurement>,
}

impl OffsetMonitor {
    /// A monitor enforcing `0.8 × max_offset_ns`, ignoring measurements older than `ttl_ns`
    /// (`limits::OFFSET_MEASUREMENT_TTL_MS` in ns).
    pub fn new(max_offset_ns: u64, ttl_ns: u64) -> Self {
        // 0.8 × max_offset, computed without overflow or floating point.
        let tolerated = u128::from(max_offset_ns) * 4 / 5;
        // Fits: tolerated <= max_offset_ns, a u64.
        let tolerated_ns = u64::try_from(tolerated).unwrap_or(u64::MAX);
        OffsetMonitor {
            tolerated_ns,
            ttl_ns,
            rtt_max_ns: max_offset_ns.saturating_mul(2),
            peers: BTreeMap::new(),
        }
    }

    /// The offset beyond which a peer counts as far: `0.8 × max_offset`.
    pub fn tolerated_ns(&self) -> u64 {
        self.tolerated_ns
    }

    /// Records a measurement for `peer`, replacing an older one; returns whether it was kept.
    /// A measurement older than the one held (replies overtaking each other) is dropped, and
    /// so is one whose round trip took longer than `2 × max_offset` (CockroachDB's
    /// `maximumPingDurationMult`): a probe or echo held up that long in the network may carry
    /// a reading from a moment the peer's clock has long left, and its uncertainty is too wide
    /// to tell anything about the clocks now.
    pub fn record(&mut self, peer: NodeId, measurement: OffsetMeasurement) -> bool {
        if measurement.uncertainty_ns.saturating_mul(2) > self.rtt_max_ns {
            return false;
        }
        let entry = self.peers.entry(peer).or_insert(measurement);
        if measurement.measured_at_ns >= entry.measured_at_ns {
            *entry = measurement;
        }
        true
    }

    /// Forgets `peer` (it left the cluster).
    pub fn forget(&mut self, peer: NodeId) {
        self.peers.remove(&peer);
    }

    /// The latest measurement for `peer`, if any.
    pub fn measurement(&self, peer: NodeId) -> Option<&OffsetMeasurement> {
        self.peers.get(&peer)
    }

    /// All held measurements, in `NodeId` order (for `decree status`).
    pub fn measurements(&self) -> impl Iterator<Item = (NodeId, &OffsetMeasurement)> + '_ {
        self.peers.iter().map(|(id, m)| (*id, m))
    }

    /// HLC-6 at physical time `now_pt_ns`: `Err` (fatal) if a strict majority of the peers
    /// with a fresh measurement are certainly further than `0.8 × max_offset` away. With no
    /// fresh measurement there is no evidence either way, and the answer is `Ok`.
    pub fn check(&self, now_pt_ns: u64) -> Result<(), OffsetError> {
        let fresh = self
            .peers
            .iter()
            .filter(|(_, m)| now_pt_ns.saturating_sub(m.measured_at_ns) <= self.ttl_ns);
        let mut fresh_peers = 0;
        let mut far = Vec::new();
        for (peer, m) in fresh {
            fresh_peers += 1;
            if m.is_certainly_beyond(self.tolerated_ns) {
                far.push((*peer, *m));
            }
        }
        if far.len() * 2 > fresh_peers {
            return Err(OffsetError::FarFromMajority {
                far,
                fresh_peers,
                tolerated_ns: self.tolerated_ns,
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
    const TOLERATED_NS: u64 = 200_000_000;
    const TTL_NS: u64 = 1_000_000_000;

    fn m(offset_ns: i64, uncertainty_ns: u64, measured_at_ns: u64) -> OffsetMeasurement {
        OffsetMeasurement { offset_ns, uncertainty_ns, measured_at_ns }
    }

    #[test]
    fn hlc6_round_trip_estimate_uses_the_midpoint() {
        // Sent at 1000, peer read 1600, reply at 1200: midpoint 1100, peer 500 ahead ± 100.
        assert_eq!(
            OffsetMeasurement::from_round_trip(1_000, 1_600, 1_200),
            Some(m(500, 100, 1_200))
        );
        // Peer behind.
        assert_eq!(
            OffsetMeasurement::from_round_trip(1_000, 900, 1_200),
            Some(m(-200, 100, 1_200))
        );
        // Our clock stepped back during the round trip: no measurement.
        assert_eq!(OffsetMeasurement::from_round_trip(1_000, 900, 999), None);
        // Extremes saturate instead of wrapping.
        let far = OffsetMeasurement::from_round_trip(0, u64::MAX, 0).expect("rtt 0");
        assert_eq!(far.offset_ns, i64::MAX);
    }

    #[test]
    fn hlc6_tolerance_is_four_fifths_of_max_offset() {
        assert_eq!(OffsetMonitor::new(MAX_OFFSET_NS, TTL_NS).tolerated_ns(), TOLERATED_NS);
        let defaults = OffsetMonitor::new(crate::limits::MAX_OFFSET_NS, TTL_NS);
        assert_eq!(defaults.tolerated_ns(), crate::limits::OFFSET_FATAL_NS);
        assert_eq!(OffsetMonitor::new(u64::MAX, TTL_NS).tolerated_ns(), u64::MAX / 5 * 4);
    }

    #[test]
    fn hlc6_uncertainty_counts_in_the_nodes_favour() {
        let t = TOLERATED_NS;
        assert!(!m(t as i64, 0, 0).is_certainly_beyond(t), "exactly at the threshold is fine");
        assert!(m(t as i64 + 1, 0, 0).is_certainly_beyond(t));
        assert!(m(-(t as i64) - 1, 0, 0).is_certainly_beyond(t));
        assert!(!m(t as i64 + 50, 50, 0).is_certainly_beyond(t), "ambiguous: healthy");
        assert!(m(t as i64 + 51, 50, 0).is_certainly_beyond(t));
    }

    #[test]
    fn hlc6_far_from_a_strict_majority_is_fatal() {
        let mut mon = OffsetMonitor::new(MAX_OFFSET_NS, TTL_NS);
        let far = m(300_000_000, 1_000, 10);
        mon.record(NodeId(2), far);
        mon.record(NodeId(3), m(1_000, 1_000, 10));
        assert_eq!(mon.check(10), Ok(()), "one of two peers far: not a majority");
        mon.record(NodeId(4), far);
        assert_eq!(
            mon.check(10),
            Err(OffsetError::FarFromMajority {
                far: vec![(NodeId(2), far), (NodeId(4), far)],
                fresh_peers: 3,
                tolerated_ns: TOLERATED_NS,
            })
        );
        mon.forget(NodeId(4));
        assert_eq!(mon.check(10), Ok(()));
    }

    #[test]
    fn hlc6_single_peer_far_is_fatal_and_no_peer_is_fine() {
        let mut mon = OffsetMonitor::new(MAX_OFFSET_NS, TTL_NS);
        assert_eq!(mon.check(0), Ok(()));
        mon.record(NodeId(2), m(-250_000_000, 0, 0));
        assert!(matches!(mon.check(0), Err(OffsetError::FarFromMajority { fresh_peers: 1, .. })));
    }

    #[test]
    fn hlc6_a_round_trip_beyond_two_max_offsets_is_not_kept() {
        // An echo held up 2.6 s in the network, carrying a reading from when the peer's clock
        // was 2 s behind: certainly far (|-1.7 s| - 1.3 s > 0.8 x max_offset) if it were kept.
        let late = OffsetMeasurement::from_round_trip(0, 0, 2_600_000_000).unwrap();
        let late = OffsetMeasurement { offset_ns: -1_697_000_000, ..late };
        assert!(late.is_certainly_beyond(MAX_OFFSET_NS * 4 / 5));
        let mut mon = OffsetMonitor::new(MAX_OFFSET_NS, TTL_NS);
        assert!(!mon.record(NodeId(3), late));
        assert_eq!(mon.measurement(NodeId(3)), None);
        assert_eq!(mon.check(2_600_000_000), Ok(()));
        // A round trip of exactly 2 x max_offset is kept.
        let slow = OffsetMeasurement::from_round_trip(0, MAX_OFFSET_NS, 2 * MAX_OFFSET_NS).unwrap();
        assert!(mon.record(NodeId(3), slow));
    }

    #[test]
    fn hlc6_stale_measurements_are_ignored() {
        let mut mon = OffsetMonitor::new(MAX_OFFSET_NS, TTL_NS);
        mon.record(NodeId(2), m(300_000_000, 0, 0));
        assert!(mon.check(TTL_NS).is_err(), "exactly TTL old is still fresh");
        assert_eq!(mon.check(TTL_NS + 1), Ok(()));
    }

    #[test]
    fn hlc6_older_measurement_does_not_replace_newer() {
        let mut mon = OffsetMonitor::new(MAX_OFFSET_NS, TTL_NS);
        mon.record(NodeId(2), m(5, 0, 100));
        mon.record(NodeId(2), m(300_000_000, 0, 50));
        assert_eq!(mon.measurement(NodeId(2)), Some(&m(5, 0, 100)));
        mon.record(NodeId(2), m(7, 0, 150));
        assert_eq!(mon.measurements().collect::<Vec<_>>(), vec![(NodeId(2), &m(7, 0, 150))]);
    }

    proptest! {
        /// HLC-6: the true offset of a simulated peer always lies within the measurement's
        /// uncertainty, whatever the split of the round trip between the two directions.
        #[test]
        fn hlc6_true_offset_lies_within_uncertainty(
            send in 0u64..1 << 50,
            out_ns in 0u64..1_000_000_000,
            back_ns in 0u64..1_000_000_000,
            true_offset in -1_000_000_000i64..1_000_000_000,
        ) {
            let remote = (send + out_ns).saturating_add_signed(true_offset);
            let recv = send + out_ns + back_ns;
            let est = OffsetMeasurement::from_round_trip(send, remote, recv).expect("recv >= send");
            // +1: rtt/2 rounds down.
            prop_assert!(est.offset_ns.abs_diff(true_offset) <= est.uncertainty_ns + 1);
        }

        /// HLC-6: the verdict is fatal exactly when more than half the fresh peers are far.
        #[test]
        fn hlc6_fatal_iff_strict_majority_far(
            offsets in proptest::collection::vec(-400_000_000i64..400_000_000, 0..9),
        ) {
            let mut mon = OffsetMonitor::new(MAX_OFFSET_NS, TTL_NS);
            for (i, off) in offsets.iter().enumerate() {
                mon.record(NodeId(i as u64), m(*off, 0, 0));
            }
            let far = offsets.iter().filter(|o| o.unsigned_abs() > TOLERATED_NS).count();
            prop_assert_eq!(mon.check(0).is_err(), far * 2 > offsets.len());
        }
    }
}
