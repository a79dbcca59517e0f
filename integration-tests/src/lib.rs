//! decree deterministic simulator. (Being written.)
