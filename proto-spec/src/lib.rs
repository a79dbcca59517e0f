//! decree's wire protocol: every message that crosses a process boundary.
//!
//! - [`frame`]: how a message is delimited on a stream (length, version, max size).
//! - [`envelope`]: what every frame body is: sender, group, sender clock (HLC-4) and a
//!   [`Payload`] from one of four families:
//!   - [`raft`]: replica-to-replica Raft traffic (`decree_raft::Message`);
//!   - [`txn`]: reads, commit requests, two-phase commit and recovery (protocol.md §3–§5, §7);
//!   - [`admin`]: range map discovery and cluster status (DESIGN.md §9);
//!   - [`error`]: the typed refusal every peer gets instead of silence.
//! - [`codec`]: [`encode_frame`] / [`decode_frame`] / [`decode_body`]; decoding is total.
//! - [`limits`]: every bound on peer input, named, with units.
//!
//! `spec/messages.md` describes each message: sender, receiver, when, preconditions, reply,
//! idempotency and the protocol rules it serves. `tests/golden/` freezes the encoding of one
//! value of every variant.

pub mod admin;
pub mod codec;
pub mod envelope;
pub mod error;
pub mod frame;
pub mod limits;
pub mod placement;
pub mod raft;
pub mod txn;

pub use codec::{
    decode_body, decode_body_of, decode_frame, encode_body, encode_body_of, encode_frame,
    DecodeError, EncodeError,
};
pub use envelope::{Envelope, Payload, Request, RequestId, Response};
pub use error::ErrorResponse;
pub use frame::{FrameError, FRAME_BYTES_MAX, PROTOCOL_VERSION};
pub use limits::{Bound, LimitError};
