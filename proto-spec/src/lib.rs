//! decree's wire protocol: every message that crosses a process boundary.
//!
//! - [`frame`]: how a message is delimited on a stream (length, version, max size).

pub mod frame;
