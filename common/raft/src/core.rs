//! The sans-I/O Raft core. (Being written: see the crate docs for its contract.)
