//! decree's shared vocabulary.
//!
//! Everything here is plain data or a pure state machine: no I/O, no clocks, no ambient
//! randomness. Physical time enters the [`Hlc`] as an argument (see [`PhysicalClock`]), and
//! randomness enters as a seeded [`DetRng`], so the simulator controls both.

pub mod hlc;
pub mod ids;
pub mod key;
pub mod limits;
pub mod rng;

pub use hlc::{
    ClockError, Hlc, HlcTimestamp, OffsetError, OffsetMeasurement, OffsetMonitor, PhysicalClock,
    WallBound,
};
pub use ids::{ClientId, GroupId, LogIndex, NodeId, Term, TxnId};
pub use key::{Key, KeyRange, RangeMap, RangeMapError};
pub use rng::DetRng;
