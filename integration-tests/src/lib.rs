//! decree's deterministic whole-cluster simulator.
//!
//! (Module docs are completed together with the event loop.)

pub mod check;
pub mod clock;
pub mod network;
pub mod trace;
