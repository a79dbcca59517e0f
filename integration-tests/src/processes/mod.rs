//! Real processes over real QUIC (TESTING.md §4): a harness that runs `decree-lognode`
//! clusters on loopback, a leader-following client, the leader-kill scenario, and the check
//! that every acknowledged proposal is on every replica.

pub mod bench;
pub mod check;
pub mod client;
pub mod harness;
pub mod log_machine;
pub mod quic;
pub mod server;
pub mod workload;
