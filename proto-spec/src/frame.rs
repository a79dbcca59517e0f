//! The frame: how one message is delimited on a QUIC stream.
//!
//! ```text
//! +----------------+-------------------+------------------------------+
//! | body_len u32LE | version u16LE     | body: postcard-encoded value |
//! +----------------+-------------------+------------------------------+
//!   4 bytes          2 bytes             body_len - 2 bytes
//! ```
//!
//! `body_len` counts the version and the body. The transport reads the 6-byte header first and
//! refuses a frame whose length exceeds [`FRAME_BYTES_MAX`] or whose version it does not speak
//! *before* reading the body, so a hostile peer cannot make it buffer an oversize frame.

/// The only protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Bytes in a frame header: `body_len` then `version`.
pub const FRAME_HEADER_BYTES: usize = 6;

/// Largest accepted `body_len`, in bytes: bounds memory per stream. Snapshots travel in chunks
/// well below it. Defined with the other bounds in `decree_types::limits`.
pub use decree_types::limits::FRAME_BYTES_MAX;

/// A frame that must be refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header announces more than [`FRAME_BYTES_MAX`] bytes.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The header's `body_len` cannot even hold the version.
    #[error("frame length {len} is shorter than the 2-byte version field")]
    TooShort { len: usize },
    /// The peer speaks a protocol version we do not.
    #[error("unsupported protocol version {got}; this node speaks version {supported}")]
    UnsupportedVersion { got: u16, supported: u16 },
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes of postcard body that follow the header.
    pub body_bytes: usize,
    /// The frame's protocol version (always [`PROTOCOL_VERSION`] once parsed successfully).
    pub version: u16,
}

/// Parses and validates a frame header. Total: never panics.
pub fn parse_header(header: [u8; FRAME_HEADER_BYTES]) -> Result<FrameHeader, FrameError> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge { len, max: FRAME_BYTES_MAX });
    }
    if len < 2 {
        return Err(FrameError::TooShort { len });
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion { got: version, supported: PROTOCOL_VERSION });
    }
    Ok(FrameHeader { body_bytes: len - 2, version })
}

/// Builds a complete frame (header + body) around an already-encoded postcard body.
pub fn frame_body(body: &[u8]) -> Result<Vec<u8>, FrameError> {
    let len = body.len() + 2;
    if len > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge { len, max: FRAME_BYTES_MAX });
    }
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of(frame: &[u8]) -> [u8; FRAME_HEADER_BYTES] {
        let mut h = [0u8; FRAME_HEADER_BYTES];
        h.copy_from_slice(&frame[..FRAME_HEADER_BYTES]);
        h
    }

    #[test]
    fn round_trip_header() {
        let frame = frame_body(b"hello").unwrap();
        let h = parse_header(header_of(&frame)).unwrap();
        assert_eq!(h, FrameHeader { body_bytes: 5, version: PROTOCOL_VERSION });
        assert_eq!(&frame[FRAME_HEADER_BYTES..], b"hello");
    }

    #[test]
    fn oversize_is_refused_before_reading_body() {
        let mut h = [0u8; FRAME_HEADER_BYTES];
        h[..4].copy_from_slice(&((FRAME_BYTES_MAX + 1) as u32).to_le_bytes());
        assert!(matches!(parse_header(h), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn unknown_version_is_refused() {
        let mut frame = frame_body(b"x").unwrap();
        frame[4] = 9;
        assert_eq!(
            parse_header(header_of(&frame)),
            Err(FrameError::UnsupportedVersion { got: 9, supported: PROTOCOL_VERSION })
        );
    }

    #[test]
    fn too_short_is_refused() {
        let h = [1, 0, 0, 0, 1, 0];
        assert_eq!(parse_header(h), Err(FrameError::TooShort { len: 1 }));
    }
}
