//! The decree client library. (Being written.)

pub mod bank;
