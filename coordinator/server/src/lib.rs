//! The coordinator group: the Raft-replicated decision log, the two-phase-commit driver,
//! in-doubt recovery and the cluster map (protocol.md §3-§4, C-1..C-7, REC-1..REC-7;
//! `proto-spec/spec/commit-protocol.md` is normative).
//!
//! A pure library: [`CoordinatorGroup`] implements the host's
//! [`ReplicatedMachine`](decree_host::ReplicatedMachine), so it reads no clock, does no I/O
//! and decides nothing from `HashMap` order. Time enters through the host's context and the
//! `proposed_at` stamp of every entry.
//!
//! - [`log`]: the replicated records and the commands that change them (§3.1, INV-A3).
//! - [`group`]: the machine — admission, apply, the leader's driver and recovery.
//! - [`cluster_map`]: the range map, replicas, addresses and coordinator groups.
//! - [`placement`]: [`coordinator_for`], which coordinator group decides a transaction.
//! - [`config`]: timeouts and bounds, with units.

//! # Not here yet
//!
//! - The optional push of RI-3 (`QueryTxn::push_above` is ignored; `Pending` is answered),
//!   parallel commit (D-9) and commit-wait (§6.3): such `CommitTxn`s are refused.
//! - Range-map changes are replicated per coordinator group (`ReplaceClusterMap`); keeping
//!   several coordinator groups' copies in step is for the milestone that splits ranges.
//! - `ClusterStatus` lists only this group's in-doubt transactions; the host adds the groups.

#![warn(missing_docs)]

pub mod cluster_map;
pub mod config;
pub mod group;
pub mod log;
pub mod placement;

pub use cluster_map::{ClusterMap, ClusterMapError};
pub use config::CoordinatorConfig;
pub use group::{CoordinatorGroup, CoordinatorSnapshot, InDoubtRecord, Reply};
pub use log::{Answer, CoordinatorCommand, Decision, DecisionLog, Outcome, Record, TxnView};
pub use placement::coordinator_for;
