//! decree shell runtime. (Being written.)
