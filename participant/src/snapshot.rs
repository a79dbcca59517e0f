//! The snapshot encoding and the digest of a participant group's replicated state.
//!
//! Encoding: `MAGIC` (8 bytes), then the postcard encoding of the canonical state image (every
//! map as a key-ordered list), then the CRC-32C of that postcard body (4 bytes, little
//! endian). A snapshot that fails the magic, the checksum, decoding or the state's own
//! consistency checks is refused (the host stops: that is corruption, RAFT-8).
//!
//! Digest: 64-bit FNV-1a over the same postcard body, so two replicas that applied the same
//! entries have equal digests, and a restored snapshot has the digest of the state it was
//! taken from.

use crate::state::StateImage;

/// Identifies a participant-group snapshot, format 1.
const MAGIC: &[u8; 8] = b"decreeP1";

pub(crate) fn encode(image: &StateImage) -> Vec<u8> {
    // Serializing plain owned data into a Vec cannot fail: no I/O, no non-string map keys.
    let body = postcard::to_allocvec(image).expect("a state image always encodes");
    let mut out = Vec::with_capacity(MAGIC.len() + body.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out
}

pub(crate) fn decode(bytes: &[u8]) -> Result<StateImage, String> {
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or("not a participant-group snapshot (bad magic)")?;
    if rest.len() < 4 {
        return Err("snapshot truncated".into());
    }
    let (body, crc) = rest.split_at(rest.len() - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(body) != crc {
        return Err("snapshot checksum mismatch".into());
    }
    let (image, tail) =
        postcard::take_from_bytes::<StateImage>(body).map_err(|e| format!("snapshot: {e}"))?;
    if !tail.is_empty() {
        return Err(format!("snapshot: {} trailing bytes", tail.len()));
    }
    Ok(image)
}

pub(crate) fn digest(image: &StateImage) -> u64 {
    let body = postcard::to_allocvec(image).expect("a state image always encodes");
    fnv1a64(&body)
}

/// 64-bit FNV-1a.
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}
