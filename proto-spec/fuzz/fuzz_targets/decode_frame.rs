//! Feeds arbitrary bytes to the frame decoder. Decoding must be total: `Ok` or a typed error,
//! never a panic, an abort or an out-of-memory. Whatever decodes must be within limits and
//! encode again; every refusal must become a valid error reply for the peer.

#![no_main]

use decree_proto::{decode_body, decode_frame, encode_frame, ErrorResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_frame(data) {
        Ok(env) => {
            env.validate().expect("a decoded envelope is within limits");
            let again = encode_frame(&env).expect("a decoded envelope encodes again");
            assert_eq!(decode_frame(&again).as_ref(), Ok(&env), "re-decode differs");
        }
        Err(e) => {
            ErrorResponse::from(e).validate().expect("an error reply is within limits");
        }
    }
    // The same bytes as a bare body (the transport's path after it read the header itself).
    if let Ok(env) = decode_body(data) {
        env.validate().expect("a decoded envelope is within limits");
    }
});
