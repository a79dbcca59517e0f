//! The decree client library. (Being written.)
