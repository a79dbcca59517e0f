//! decree's wire protocol. (Being written.)
