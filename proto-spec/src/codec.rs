//! Encoding and decoding whole envelopes.
//!
//! Decoding is **total**: any byte string yields `Ok(Envelope)` or a [`DecodeError`], never a
//! panic (STYLE.md principle 4). The steps, each of which can only refuse:
//!
//! 1. header: at least [`FRAME_HEADER_BYTES`] bytes, length within [`FRAME_BYTES_MAX`], our
//!    [`PROTOCOL_VERSION`] ([`crate::frame::parse_header`]);
//! 2. the buffer holds exactly the announced body, no more, no less;
//! 3. postcard decodes the body (postcard checks every length prefix against the bytes that
//!    remain, so a length field cannot make it allocate more than the input can fill);
//! 4. no bytes are left over after the envelope;
//! 5. the envelope is within every bound of [`crate::limits`] ([`Envelope::validate`]).
//!
//! Encoding runs step 5 first, so a node never sends what its peer would refuse, and then
//! checks the frame size.
//!
//! A node that cannot decode a frame answers with `ErrorResponse::from(decode_error)` (see
//! `From<DecodeError> for ErrorResponse`) and keeps serving.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::envelope::Envelope;
use crate::error::ErrorResponse;
use crate::frame::{
    frame_body, parse_header, FrameError, FRAME_BYTES_MAX, FRAME_HEADER_BYTES, PROTOCOL_VERSION,
};
use crate::limits::LimitError;

/// Why a frame or body could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The header is refused (too large, too short, unknown version).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Fewer than [`FRAME_HEADER_BYTES`] bytes: not even a header.
    #[error("{got} bytes cannot hold the {FRAME_HEADER_BYTES}-byte frame header")]
    HeaderTruncated {
        /// Bytes given.
        got: usize,
    },
    /// The header announces a body of a different size than the bytes given.
    #[error("header announces a {announced}-byte body but {got} bytes follow it")]
    LengthMismatch {
        /// Body bytes the header announces.
        announced: usize,
        /// Body bytes present.
        got: usize,
    },
    /// The body is not a postcard-encoded envelope.
    #[error("body does not decode: {0}")]
    Body(postcard::Error),
    /// The envelope ended before the body did.
    #[error("{count} bytes left over after the envelope")]
    TrailingBytes {
        /// Bytes left over.
        count: usize,
    },
    /// The envelope decodes but breaks a bound of [`crate::limits`].
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// Why an envelope could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The envelope breaks a bound of [`crate::limits`]; the peer would refuse it.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// postcard refused the value.
    #[error("envelope does not encode: {0}")]
    Body(postcard::Error),
    /// The encoded frame would exceed [`FRAME_BYTES_MAX`].
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Encodes an envelope as a frame body (postcard only, no header).
pub fn encode_body(envelope: &Envelope) -> Result<Vec<u8>, EncodeError> {
    envelope.validate()?;
    postcard::to_allocvec(envelope).map_err(EncodeError::Body)
}

/// Encodes an envelope as a complete frame: header ([`PROTOCOL_VERSION`]) then body.
pub fn encode_frame(envelope: &Envelope) -> Result<Vec<u8>, EncodeError> {
    let body = encode_body(envelope)?;
    Ok(frame_body(&body)?)
}

/// Decodes a frame body (what follows the header) into a validated envelope. Total.
pub fn decode_body(body: &[u8]) -> Result<Envelope, DecodeError> {
    // The version field shares the frame's length budget with the body.
    let len = body.len().saturating_add(2);
    if len > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge { len, max: FRAME_BYTES_MAX }.into());
    }
    let (envelope, rest) =
        postcard::take_from_bytes::<Envelope>(body).map_err(DecodeError::Body)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { count: rest.len() });
    }
    envelope.validate()?;
    Ok(envelope)
}

/// Encodes an envelope of any request and response types as a frame body (postcard only):
/// for hosts whose machines speak their own requests. Raft traffic and errors are checked
/// against [`crate::limits`] as in [`encode_body`]; the machine's own types are bounded by the
/// frame size.
pub fn encode_body_of<Rq: Serialize, Rs: Serialize>(
    envelope: &Envelope<Rq, Rs>,
) -> Result<Vec<u8>, EncodeError> {
    envelope.payload.validate_transport()?;
    let body = postcard::to_allocvec(envelope).map_err(EncodeError::Body)?;
    let len = body.len().saturating_add(2);
    if len > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge { len, max: FRAME_BYTES_MAX }.into());
    }
    Ok(body)
}

/// Decodes a frame body into an envelope of any request and response types. Total, like
/// [`decode_body`]: refuses bodies over the frame size, bytes left over after the envelope,
/// and Raft traffic or errors over a bound of [`crate::limits`].
pub fn decode_body_of<Rq: DeserializeOwned, Rs: DeserializeOwned>(
    body: &[u8],
) -> Result<Envelope<Rq, Rs>, DecodeError> {
    let len = body.len().saturating_add(2);
    if len > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge { len, max: FRAME_BYTES_MAX }.into());
    }
    let (envelope, rest) =
        postcard::take_from_bytes::<Envelope<Rq, Rs>>(body).map_err(DecodeError::Body)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { count: rest.len() });
    }
    envelope.payload.validate_transport()?;
    Ok(envelope)
}

/// Decodes one complete frame (header and body, nothing else) into a validated envelope.
/// Total.
pub fn decode_frame(frame: &[u8]) -> Result<Envelope, DecodeError> {
    let Some((header, body)) = frame.split_first_chunk::<FRAME_HEADER_BYTES>() else {
        return Err(DecodeError::HeaderTruncated { got: frame.len() });
    };
    let header = parse_header(*header)?;
    debug_assert_eq!(header.version, PROTOCOL_VERSION);
    if body.len() != header.body_bytes {
        return Err(DecodeError::LengthMismatch { announced: header.body_bytes, got: body.len() });
    }
    decode_body(body)
}

impl From<DecodeError> for ErrorResponse {
    /// The reply a node sends for a frame it could not decode.
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Frame(f) => ErrorResponse::from(f),
            DecodeError::Limit(l) => ErrorResponse::LimitExceeded(l),
            DecodeError::HeaderTruncated { .. }
            | DecodeError::LengthMismatch { .. }
            | DecodeError::Body(_)
            | DecodeError::TrailingBytes { .. } => ErrorResponse::malformed(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use decree_types::{GroupId, HlcTimestamp, NodeId, TxnId};

    use super::*;
    use crate::envelope::{Payload, Request, RequestId};
    use crate::limits::{Bound, SCAN_ROWS_MAX};
    use crate::txn::{Abort, Scan};

    fn abort_envelope() -> Envelope {
        Envelope {
            from: NodeId(1),
            group: GroupId(2),
            sender_clock: HlcTimestamp::new(3, 4),
            payload: Payload::Request {
                request_id: RequestId(5),
                request: Request::Abort(Abort { txn_id: TxnId(6) }),
            },
        }
    }

    #[test]
    fn frame_round_trip() {
        let env = abort_envelope();
        let frame = encode_frame(&env).unwrap();
        assert_eq!(decode_frame(&frame), Ok(env));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut body = encode_body(&abort_envelope()).unwrap();
        body.push(0);
        assert_eq!(decode_body(&body), Err(DecodeError::TrailingBytes { count: 1 }));
    }

    #[test]
    fn generic_bodies_round_trip_and_refuse_trailing_bytes() {
        let env: Envelope<Vec<u8>, u64> = Envelope {
            from: NodeId(1),
            group: GroupId(2),
            sender_clock: HlcTimestamp::new(3, 4),
            payload: Payload::Request { request_id: RequestId(5), request: vec![1, 2, 3] },
        };
        let mut body = encode_body_of(&env).unwrap();
        assert_eq!(decode_body_of::<Vec<u8>, u64>(&body), Ok(env));
        body.push(0);
        assert_eq!(
            decode_body_of::<Vec<u8>, u64>(&body),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        // The default types encode exactly as `encode_body` does.
        assert_eq!(encode_body_of(&abort_envelope()), encode_body(&abort_envelope()));
    }

    #[test]
    fn short_and_mismatched_frames_are_refused() {
        assert_eq!(decode_frame(&[1, 2]), Err(DecodeError::HeaderTruncated { got: 2 }));
        let mut frame = encode_frame(&abort_envelope()).unwrap();
        frame.pop();
        let announced = frame.len() - FRAME_HEADER_BYTES + 1;
        assert_eq!(
            decode_frame(&frame),
            Err(DecodeError::LengthMismatch { announced, got: announced - 1 })
        );
    }

    #[test]
    fn over_limit_is_refused_on_encode_and_decode() {
        let mut env = abort_envelope();
        env.payload = Payload::Request {
            request_id: RequestId(1),
            request: Request::Scan(Scan {
                span: decree_types::KeyRange { start: decree_types::Key(vec![]), end: None },
                read_ts: HlcTimestamp::ZERO,
                uncertainty_limit: None,
                limit: SCAN_ROWS_MAX as u32 + 1,
            }),
        };
        let want = LimitError {
            bound: Bound::ScanRows,
            got: SCAN_ROWS_MAX as u64 + 1,
            max: SCAN_ROWS_MAX as u64,
        };
        assert_eq!(encode_frame(&env), Err(EncodeError::Limit(want)));
        // A peer that skips validation still cannot get it past our decoder.
        let body = postcard::to_allocvec(&env).unwrap();
        assert_eq!(decode_body(&body), Err(DecodeError::Limit(want)));
        assert_eq!(
            ErrorResponse::from(DecodeError::Limit(want)),
            ErrorResponse::LimitExceeded(want)
        );
    }

    #[test]
    fn decode_errors_become_clear_replies() {
        let reply = ErrorResponse::from(DecodeError::HeaderTruncated { got: 1 });
        assert!(matches!(reply, ErrorResponse::Malformed { .. }));
        let reply = ErrorResponse::from(DecodeError::Frame(FrameError::UnsupportedVersion {
            got: 7,
            supported: PROTOCOL_VERSION,
        }));
        assert_eq!(reply, ErrorResponse::UnsupportedVersion { got: 7, supported: 1 });
    }
}
