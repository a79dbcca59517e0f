//! decree deterministic simulator. (Being written.)

pub mod processes;
