//! The multi-group node. (Being written.)
