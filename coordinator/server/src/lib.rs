//! The coordinator group: the Raft-replicated decision log, the two-phase-commit driver and
//! in-doubt recovery (protocol.md §3-§4, C-1..C-7, REC-1..REC-7).
//!
//! This crate is the next milestone's work; the protocol it will implement is written down and
//! model-checked in `proto-spec/` (see `VERIFICATION.md`).
