//! Tests of the Raft core: golden interaction scripts (`golden`), paper-section tests
//! (`paper`) and a seeded randomized cluster test (`random`), all over the in-memory
//! cluster of `harness`.

mod golden;
mod harness;
mod hostile;
mod paper;
mod random;
mod scenarios;
