//! Round-trip property tests: every envelope the strategies can build encodes, decodes to
//! itself, and re-encodes to the same bytes (the encoding is canonical).

mod strategies;

use decree_proto::envelope::all_kinds;
use decree_proto::{decode_body, decode_frame, encode_body, encode_frame};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn frame_round_trips(env in strategies::envelope()) {
        let frame = encode_frame(&env).expect("strategies build values within limits");
        let back = decode_frame(&frame).expect("a frame we encoded must decode");
        prop_assert_eq!(&back, &env);
        prop_assert_eq!(encode_frame(&back).expect("re-encode"), frame);
    }

    #[test]
    fn body_round_trips(env in strategies::envelope()) {
        let body = encode_body(&env).expect("strategies build values within limits");
        prop_assert_eq!(decode_body(&body).expect("a body we encoded must decode"), env);
    }

    #[test]
    fn every_kind_is_listed(env in strategies::envelope()) {
        prop_assert!(all_kinds().contains(&env.kind()), "{} missing from all_kinds()", env.kind());
    }
}
