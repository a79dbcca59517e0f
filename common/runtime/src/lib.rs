//! decree shell runtime. (Being written.)

pub mod node_shell;
