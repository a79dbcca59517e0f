//! Snapshot files: `snap/<group>-<index>.snap`, `[magic 8][version u16][crc32c u32][body]`
//! where the CRC covers the body and the body is postcard `(group, meta, data)`.

use decree_types::{GroupId, LogIndex};

use super::Corruption;
use crate::msg::SnapshotMeta;

/// Directory of snapshot files.
pub(super) const SNAP_DIR: &str = "snap";
const MAGIC: [u8; 8] = *b"DECRSNAP";
const VERSION: u16 = 1;
const PREFIX_BYTES: usize = 8 + 2 + 4;
/// Suffix of a snapshot being written; such a file is never read back.
pub(super) const TMP_SUFFIX: &str = ".tmp";

/// The file holding `group`'s snapshot at `index`.
pub(super) fn path(group: GroupId, index: LogIndex) -> String {
    format!("{SNAP_DIR}/{:020}-{:020}.snap", group.0, index.0)
}

/// The bytes of a snapshot file.
pub(super) fn encode(group: GroupId, meta: &SnapshotMeta, data: &[u8]) -> Vec<u8> {
    // Invariant: postcard fails only on sequences of unknown length; these are derived types
    // and a byte slice.
    let body = postcard::to_stdvec(&(group, meta, data)).expect("postcard encoding is infallible");
    let mut out = Vec::with_capacity(PREFIX_BYTES + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes and checks a snapshot file; it must belong to `group` and carry `expected` meta.
pub(super) fn decode(
    bytes: &[u8],
    group: GroupId,
    expected: &SnapshotMeta,
) -> Result<Vec<u8>, Corruption> {
    if bytes.len() < PREFIX_BYTES {
        return Err(Corruption::SnapshotTruncated);
    }
    let (prefix, body) = bytes.split_at(PREFIX_BYTES);
    if prefix[..8] != MAGIC {
        return Err(Corruption::BadMagic);
    }
    let version = u16::from_le_bytes([prefix[8], prefix[9]]);
    if version != VERSION {
        return Err(Corruption::UnsupportedVersion(version));
    }
    let crc = u32::from_le_bytes([prefix[10], prefix[11], prefix[12], prefix[13]]);
    if crc32c::crc32c(body) != crc {
        return Err(Corruption::BadCrc);
    }
    match postcard::take_from_bytes::<(GroupId, SnapshotMeta, Vec<u8>)>(body) {
        Ok(((g, meta, data), [])) => {
            if g != group || &meta != expected {
                return Err(Corruption::SnapshotMismatch);
            }
            Ok(data)
        }
        _ => Err(Corruption::Undecodable("snapshot body")),
    }
}
