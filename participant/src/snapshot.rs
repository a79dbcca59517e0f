//! The snapshot encoding and the digest of a participant group's replicated state.
//!
//! Encoding: `MAGIC` (8 bytes), then the postcard encoding of the state (`StateView`: every map
//! as its key-ordered entry list, which `StateImage` decodes), then the CRC-32C of that postcard body (4 bytes, little
//! endian). A snapshot that fails the magic, the checksum, decoding or the state's own
//! consistency checks is refused (the host stops: that is corruption, RAFT-8).
//!
//! Digest: 64-bit FNV-1a over the same postcard body, streamed into the hash without building
//! it, so two replicas that applied the same entries have equal digests, and a restored
//! snapshot has the digest of the state it was taken from.

use crate::state::{StateImage, StateView};

/// Identifies a participant-group snapshot, format 1.
const MAGIC: &[u8; 8] = b"decreeP1";

pub(crate) fn encode(view: &StateView<'_>) -> Vec<u8> {
    // Serializing plain data into a Vec cannot fail: no I/O, every length is known.
    let body = postcard::to_allocvec(view).expect("a state always encodes");
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

pub(crate) fn digest(view: &StateView<'_>) -> u64 {
    // The hashing flavor never refuses a byte, so serializing cannot fail.
    postcard::serialize_with_flavor(view, Fnv1a64(FNV_OFFSET)).expect("a state always encodes")
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A postcard output that hashes the bytes with 64-bit FNV-1a instead of storing them.
struct Fnv1a64(u64);

impl postcard::ser_flavors::Flavor for Fnv1a64 {
    type Output = u64;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0 = data.iter().fold(self.0, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME));
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn finalize(self) -> postcard::Result<u64> {
        Ok(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_fnv1a_of_the_snapshot_body() {
        let state =
            crate::GroupState::new(decree_types::GroupId(1), decree_types::KeyRange::full(), 1);
        let bytes = encode(&state.view());
        let body = &bytes[MAGIC.len()..bytes.len() - 4];
        let expected =
            body.iter().fold(FNV_OFFSET, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME));
        assert_eq!(digest(&state.view()), expected);
        // The FNV-1a test vector: "a".
        let mut h = Fnv1a64(FNV_OFFSET);
        postcard::ser_flavors::Flavor::try_push(&mut h, b'a').unwrap();
        assert_eq!(h.0, 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn a_persistent_map_encodes_as_the_ordered_map_it_replaced() {
        // The format (and so every digest) is the entry list in key order, whichever map
        // holds the entries.
        let entries: Vec<(u64, String)> =
            (0..200).rev().map(|i| (i * 7, format!("v{i}"))).collect();
        let persistent: imbl::OrdMap<u64, String> = entries.iter().cloned().collect();
        let btree: std::collections::BTreeMap<u64, String> = entries.into_iter().collect();
        assert_eq!(
            postcard::to_allocvec(&persistent).unwrap(),
            postcard::to_allocvec(&btree).unwrap()
        );
    }
}
