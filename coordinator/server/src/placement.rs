//! Which coordinator group decides a transaction: [`coordinator_for`], defined by the wire
//! contract in `decree_proto::placement` so that the client library and every coordinator and
//! participant use the one function.

pub use decree_proto::placement::coordinator_for;
