//! Decoding is total (STYLE.md principle 4, TESTING.md §1): arbitrary bytes, arbitrary bodies
//! behind a valid header, and mutated valid frames all give `Ok` or a typed error, never a
//! panic. Whatever decodes is within limits and encodes again. The cargo-fuzz target
//! `proto-spec/fuzz` runs the same property for longer.

mod strategies;

use decree_proto::codec::DecodeError;
use decree_proto::frame::{frame_body, FRAME_HEADER_BYTES};
use decree_proto::{decode_body, decode_frame, encode_frame, ErrorResponse, FrameError};
use proptest::prelude::*;

/// The property every input must satisfy.
fn check_total(bytes: &[u8]) {
    match decode_frame(bytes) {
        Ok(env) => {
            env.validate().expect("a decoded envelope is within limits");
            encode_frame(&env).expect("a decoded envelope encodes again");
        }
        Err(e) => {
            // Every refusal can be turned into a reply for the peer.
            let reply = ErrorResponse::from(e);
            reply.validate().expect("an error reply is within limits");
        }
    }
}

/// One way to damage a valid frame.
#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Set {
        at: usize,
        byte: u8,
    },
    Insert {
        at: usize,
        byte: u8,
    },
    Remove {
        at: usize,
    },
    Truncate {
        len: usize,
    },
    /// Overwrite with 0xFF bytes: varints that never end, or huge lengths.
    Saturate {
        at: usize,
        len: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        (any::<usize>(), 1usize..12).prop_map(|(at, len)| Mutation::Saturate { at, len }),
    ]
}

/// Applies `m` to `frame`. Mutations past the header keep the header's length field honest
/// when `fix_len` is set, so the damage reaches the postcard decoder.
fn apply(frame: &mut Vec<u8>, m: &Mutation, fix_len: bool) {
    let n = frame.len().max(1);
    match *m {
        Mutation::Flip { at, mask } => {
            if let Some(b) = frame.get_mut(at % n) {
                *b ^= mask;
            }
        }
        Mutation::Set { at, byte } => {
            if let Some(b) = frame.get_mut(at % n) {
                *b = byte;
            }
        }
        Mutation::Insert { at, byte } => frame.insert(at % (frame.len() + 1), byte),
        Mutation::Remove { at } => {
            if !frame.is_empty() {
                frame.remove(at % n);
            }
        }
        Mutation::Truncate { len } => frame.truncate(len % n),
        Mutation::Saturate { at, len } => {
            let start = at % n;
            let end = (start + len).min(frame.len());
            frame[start..end].fill(0xFF);
        }
    }
    if fix_len && frame.len() >= FRAME_HEADER_BYTES {
        let body_len = (frame.len() - FRAME_HEADER_BYTES + 2) as u32;
        frame[..4].copy_from_slice(&body_len.to_le_bytes());
        frame[4..6].copy_from_slice(&decree_proto::PROTOCOL_VERSION.to_le_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_total(&bytes);
        let _ = decode_body(&bytes);
    }

    #[test]
    fn arbitrary_body_behind_a_valid_header_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let frame = frame_body(&body).expect("small body fits a frame");
        check_total(&frame);
    }

    #[test]
    fn mutated_frames_never_panic(
        env in strategies::envelope(),
        mutations in proptest::collection::vec(mutation(), 1..4),
        fix_len in any::<bool>(),
    ) {
        let mut frame = encode_frame(&env).expect("strategies build values within limits");
        for m in &mutations {
            apply(&mut frame, m, fix_len);
        }
        check_total(&frame);
    }
}

/// A body that claims 2^64-1 Raft entries and then ends: postcard must refuse it without
/// trying to allocate them.
#[test]
fn huge_length_prefix_is_refused_without_allocating() {
    let mut body = vec![
        0, // from
        0, // group
        0, 0, // sender_clock (wall, logical)
        0, // Payload::Raft
        4, // Message::AppendEntries
        0, 0, 0, // term, prev_log_index, prev_log_term
    ];
    body.extend_from_slice(&[0xFF; 9]);
    body.push(0x01); // entries.len() = u64::MAX as a varint
    assert!(matches!(decode_body(&body), Err(DecodeError::Body(_))));
    let frame = frame_body(&body).expect("small body fits a frame");
    assert!(matches!(decode_frame(&frame), Err(DecodeError::Body(_))));
}

/// A byte string that is a full frame of an unknown version is refused by version, so the
/// peer learns to upgrade rather than that its bytes are garbage.
#[test]
fn unknown_version_is_reported_as_such() {
    let mut frame = frame_body(&[0, 0, 0, 0]).expect("small body fits a frame");
    frame[4] = 0xEE;
    let err = decode_frame(&frame).expect_err("version 0xEE is not spoken");
    assert_eq!(
        err,
        DecodeError::Frame(FrameError::UnsupportedVersion {
            got: 0xEE,
            supported: decree_proto::PROTOCOL_VERSION
        })
    );
    assert!(matches!(ErrorResponse::from(err), ErrorResponse::UnsupportedVersion { .. }));
}
