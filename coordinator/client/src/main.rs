//! The `decree` command-line tool. (Being written.)
fn main() {}
