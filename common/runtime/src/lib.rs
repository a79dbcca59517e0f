//! decree shell runtime. (Being written.)

pub mod fs_disk;
