//! Participant groups: the MVCC store and the per-range state machine that prepares, commits
//! and aborts transactions (protocol.md §3, P-1..P-9).
//!
//! This crate is the next milestone's work; today it holds no code. Its state machine will sit
//! on `decree-raft`'s node, and its wire messages are already defined in `decree-proto`.
