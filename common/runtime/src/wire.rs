//! What the transport itself puts on a stream, around the frame bodies it carries.
//!
//! Every message is a frame of `decree_proto::frame` (`[body_len u32][version u16][body]`).
//! On top of that the transport defines:
//!
//! - **RPC** (one bidirectional stream per request): the requester writes one frame holding the
//!   request body and finishes its side; the responder writes one frame whose body is a
//!   [`ResponseTag`] byte followed by either the response body (`Ok`) or an error
//!   (`Err`: code `u32 LE`, then a UTF-8 message), and finishes.
//! - **Group stream** (one unidirectional stream per (peer, group)): the first frame's body is
//!   the group id, `u64 LE`; every later frame's body is one message for that group. (The
//!   node shell reserves the id `decree_proto::envelope::NODE_GROUP` for its node-level
//!   stream, whose messages are for the peer node and name their groups inside.)
//! - **Stream error codes** ([`StreamErrorCode`]): the QUIC application error code a stream is
//!   reset or stopped with when its input is refused.
//!
//! Everything here that reads peer input is total: it returns an error, never panics. And it
//! is exact: a frame body holds exactly the one value its place calls for (a group id, a
//! response), with no bytes left over or read past.

use bytes::{Buf, BytesMut};
use decree_proto::frame::{
    parse_header, FrameError, FRAME_BYTES_MAX, FRAME_HEADER_BYTES, PROTOCOL_VERSION,
};
use decree_types::GroupId;

/// Why a stream was reset or stopped: the QUIC application error code carried in
/// `RESET_STREAM` / `STOP_SENDING`. Values are part of the protocol; never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum StreamErrorCode {
    /// Bytes that do not form a frame: a truncated header or body, or bytes after the frame.
    FrameMalformed = 0x10,
    /// A frame header announcing more than `FRAME_BYTES_MAX` bytes.
    FrameTooLarge = 0x11,
    /// A frame header with a protocol version this node does not speak.
    VersionUnsupported = 0x12,
    /// A well-formed frame whose body the handler could not decode.
    BodyUndecodable = 0x13,
    /// A group stream whose first frame is not a group id.
    GroupHeaderInvalid = 0x14,
    /// A group stream opened by a peer that is not a cluster node (clients may only do RPC).
    NotANode = 0x15,
    /// The endpoint is shutting down.
    ShuttingDown = 0x16,
    /// A request frame did not arrive completely within the read timeout.
    RequestTooSlow = 0x17,
    /// A request whose announced length would take the bytes of requests in flight on its
    /// connection, or of its certificate identity, past their bound
    /// (`decree_types::limits::REQUEST_BYTES_PER_CONNECTION_MAX`, `..._PER_IDENTITY_MAX`).
    /// Refused before its body is read; the requester may retry once earlier requests finish.
    RequestBudgetExceeded = 0x18,
}

impl StreamErrorCode {
    /// Every code, for lookups.
    pub const ALL: [StreamErrorCode; 9] = [
        StreamErrorCode::FrameMalformed,
        StreamErrorCode::FrameTooLarge,
        StreamErrorCode::VersionUnsupported,
        StreamErrorCode::BodyUndecodable,
        StreamErrorCode::GroupHeaderInvalid,
        StreamErrorCode::NotANode,
        StreamErrorCode::ShuttingDown,
        StreamErrorCode::RequestTooSlow,
        StreamErrorCode::RequestBudgetExceeded,
    ];

    /// The code as a QUIC varint.
    pub fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self as u32)
    }

    /// The code for a QUIC application error code, if it is one of ours.
    pub fn from_varint(code: quinn::VarInt) -> Option<StreamErrorCode> {
        StreamErrorCode::ALL.into_iter().find(|c| u64::from(c.varint()) == code.into_inner())
    }

    /// The code for a refused frame header.
    pub fn for_frame_error(error: &FrameError) -> StreamErrorCode {
        match error {
            FrameError::TooLarge { .. } => StreamErrorCode::FrameTooLarge,
            FrameError::TooShort { .. } => StreamErrorCode::FrameMalformed,
            FrameError::UnsupportedVersion { .. } => StreamErrorCode::VersionUnsupported,
        }
    }
}

/// QUIC connection close codes used by the transport.
pub mod close_code {
    /// Orderly shutdown of the endpoint.
    pub const SHUTDOWN: u32 = 0;
    /// A second connection between the same two nodes, closed in favour of the preferred one.
    pub const DUPLICATE: u32 = 1;
    /// The peer's certificate does not name the node we dialed, or names no node or client.
    pub const WRONG_PEER: u32 = 2;
    /// The peer's certificate identity already holds the most connections allowed
    /// (`decree_types::limits::CONNECTIONS_PER_IDENTITY_MAX`).
    pub const TOO_MANY_CONNECTIONS: u32 = 3;
}

/// First byte of an RPC response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ResponseTag {
    /// The handler succeeded; the response body follows.
    Ok = 0,
    /// The handler refused the request; code and message follow.
    Err = 1,
}

/// A decoded RPC response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The handler's reply.
    Ok(Vec<u8>),
    /// The handler's refusal.
    Err {
        /// The handler's refusal code.
        code: u32,
        /// The handler's message.
        message: String,
    },
}

/// A frame header for a body of `body_len` bytes. The caller checked `body_len` against
/// [`max_body_bytes`].
pub fn header(body_len: usize) -> [u8; FRAME_HEADER_BYTES] {
    let len = (body_len + 2) as u32;
    let mut h = [0u8; FRAME_HEADER_BYTES];
    h[..4].copy_from_slice(&len.to_le_bytes());
    h[4..].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    h
}

/// Largest body a frame can carry.
pub const fn max_body_bytes() -> usize {
    FRAME_BYTES_MAX - 2
}

/// Appends one frame holding `body` to `out`.
pub fn push_frame(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&header(body.len()));
    out.extend_from_slice(body);
}

/// The frame that opens a group stream.
pub fn group_stream_header(group: GroupId) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + 8);
    push_frame(&mut out, &group.0.to_le_bytes());
    out
}

/// Decodes the body of a group stream's first frame.
pub fn parse_group_header(body: &[u8]) -> Option<GroupId> {
    let bytes: [u8; 8] = body.try_into().ok()?;
    Some(GroupId(u64::from_le_bytes(bytes)))
}

/// The prefix of a success response frame (header + tag) for a body of `body_len` bytes.
pub fn ok_response_prefix(body_len: usize) -> [u8; FRAME_HEADER_BYTES + 1] {
    let mut out = [0u8; FRAME_HEADER_BYTES + 1];
    out[..FRAME_HEADER_BYTES].copy_from_slice(&header(body_len + 1));
    out[FRAME_HEADER_BYTES] = ResponseTag::Ok as u8;
    out
}

/// Longest message an error response carries, in bytes; longer ones are cut (at a character
/// boundary) when written and refused when read. 4 KiB: room for any refusal's explanation,
/// and a misbehaving peer cannot make a requester keep a 16 MiB "message".
pub const ERROR_MESSAGE_BYTES_MAX: usize = 4096;

/// A complete error response frame. Long messages are cut to keep the frame small.
pub fn error_response(code: u32, message: &str) -> Vec<u8> {
    let mut cut = message.len().min(ERROR_MESSAGE_BYTES_MAX);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut body = Vec::with_capacity(5 + cut);
    body.push(ResponseTag::Err as u8);
    body.extend_from_slice(&code.to_le_bytes());
    body.extend_from_slice(&message.as_bytes()[..cut]);
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
    push_frame(&mut out, &body);
    out
}

/// Decodes a response frame body. Total. An error response is exactly a code and a UTF-8
/// message of at most [`ERROR_MESSAGE_BYTES_MAX`] bytes, as [`error_response`] writes it.
pub fn parse_response(mut body: Vec<u8>) -> Result<Response, StreamErrorCode> {
    match body.split_first() {
        Some((&t, _)) if t == ResponseTag::Ok as u8 => {
            body.remove(0);
            Ok(Response::Ok(body))
        }
        Some((&t, rest)) if t == ResponseTag::Err as u8 => {
            let Some((code, message)) = rest.split_first_chunk::<4>() else {
                return Err(StreamErrorCode::FrameMalformed);
            };
            if message.len() > ERROR_MESSAGE_BYTES_MAX {
                return Err(StreamErrorCode::FrameMalformed);
            }
            let message =
                std::str::from_utf8(message).map_err(|_| StreamErrorCode::FrameMalformed)?;
            Ok(Response::Err { code: u32::from_le_bytes(*code), message: message.to_owned() })
        }
        _ => Err(StreamErrorCode::FrameMalformed),
    }
}

/// Splits a byte stream into frames, checking each header as soon as its 6 bytes arrive (so an
/// oversize or unknown-version frame is refused before its body is buffered).
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: BytesMut,
    /// The validated header of the frame being assembled, once its bytes were consumed.
    pending_body_bytes: Option<usize>,
}

impl FrameReader {
    /// Adds bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame body, `Ok(None)` if more bytes are needed, or the refusal.
    pub fn next_body(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let body_bytes = match self.pending_body_bytes {
            Some(n) => n,
            None => {
                if self.buf.len() < FRAME_HEADER_BYTES {
                    return Ok(None);
                }
                let mut h = [0u8; FRAME_HEADER_BYTES];
                h.copy_from_slice(&self.buf[..FRAME_HEADER_BYTES]);
                let parsed = parse_header(h)?;
                self.buf.advance(FRAME_HEADER_BYTES);
                self.pending_body_bytes = Some(parsed.body_bytes);
                parsed.body_bytes
            }
        };
        if self.buf.len() < body_bytes {
            return Ok(None);
        }
        self.pending_body_bytes = None;
        let body = self.buf.split_to(body_bytes).to_vec();
        Ok(Some(body))
    }

    /// True when no partial frame is buffered (a clean place for the stream to end).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.pending_body_bytes.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_reader_splits_and_refuses() {
        let mut stream = Vec::new();
        push_frame(&mut stream, b"one");
        push_frame(&mut stream, b"");
        push_frame(&mut stream, b"three");
        let mut reader = FrameReader::default();
        // Feed byte by byte: frames come out whole and in order.
        let mut out = Vec::new();
        for b in &stream {
            reader.extend(std::slice::from_ref(b));
            while let Some(body) = reader.next_body().unwrap() {
                out.push(body);
            }
        }
        assert_eq!(out, vec![b"one".to_vec(), Vec::new(), b"three".to_vec()]);
        assert!(reader.is_empty());

        let mut reader = FrameReader::default();
        reader.extend(&[0xff, 0xff, 0xff, 0xff, 1, 0]);
        assert!(matches!(reader.next_body(), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn responses_round_trip() {
        let mut frame = ok_response_prefix(3).to_vec();
        frame.extend_from_slice(b"abc");
        assert_eq!(
            parse_response(frame[FRAME_HEADER_BYTES..].to_vec()),
            Ok(Response::Ok(b"abc".to_vec()))
        );
        let frame = error_response(7, "nope");
        assert_eq!(
            parse_response(frame[FRAME_HEADER_BYTES..].to_vec()),
            Ok(Response::Err { code: 7, message: "nope".into() })
        );
        assert_eq!(parse_response(vec![]), Err(StreamErrorCode::FrameMalformed));
        assert_eq!(parse_response(vec![1, 0]), Err(StreamErrorCode::FrameMalformed));
        assert_eq!(parse_response(vec![9]), Err(StreamErrorCode::FrameMalformed));
        // An error message is valid UTF-8 and no longer than the writer makes it.
        let mut bad_utf8 = vec![1, 7, 0, 0, 0];
        bad_utf8.extend_from_slice(&[0xff, 0xfe]);
        assert_eq!(parse_response(bad_utf8), Err(StreamErrorCode::FrameMalformed));
        let long = "é".repeat(ERROR_MESSAGE_BYTES_MAX);
        let frame = error_response(9, &long);
        let Ok(Response::Err { code: 9, message }) =
            parse_response(frame[FRAME_HEADER_BYTES..].to_vec())
        else {
            panic!("a cut message still parses");
        };
        assert_eq!(message.len(), ERROR_MESSAGE_BYTES_MAX);
        let mut too_long = vec![1, 9, 0, 0, 0];
        too_long.extend_from_slice(&[b'x'; ERROR_MESSAGE_BYTES_MAX + 1]);
        assert_eq!(parse_response(too_long), Err(StreamErrorCode::FrameMalformed));
    }

    #[test]
    fn error_codes_round_trip() {
        for code in StreamErrorCode::ALL {
            assert_eq!(StreamErrorCode::from_varint(code.varint()), Some(code));
        }
        assert_eq!(StreamErrorCode::from_varint(quinn::VarInt::from_u32(0)), None);
        assert_eq!(parse_group_header(&7u64.to_le_bytes()), Some(GroupId(7)));
        assert_eq!(parse_group_header(&[1, 2]), None);
    }
}
