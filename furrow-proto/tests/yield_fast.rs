//! The `Yield` fast paths agree with the general codec.
#![allow(missing_docs)]

use bytes::BytesMut;
use furrow_proto::codec::{FrameDecoder, decode_msg, encode, encode_yield, encode_yield_payload};
use furrow_proto::{DEFAULT_MAX_FRAME, Msg, Payload};
use proptest::prelude::*;

fn one_frame(buf: &mut BytesMut) -> bytes::Bytes {
    FrameDecoder::default().decode(buf).expect("frame").expect("complete")
}

proptest! {
    #[test]
    fn encode_yield_decodes_like_a_yield(cid in any::<u64>(), v in any::<(u32, String, Vec<i64>)>()) {
        let mut buf = BytesMut::new();
        encode_yield(cid, &v, &mut buf, DEFAULT_MAX_FRAME).unwrap();
        match decode_msg(one_frame(&mut buf)).unwrap() {
            Msg::Yield { cid: c, pld } => {
                prop_assert_eq!(c, cid);
                prop_assert_eq!(pld.decode::<(u32, String, Vec<i64>)>().unwrap(), v.clone());
                // Same payload bytes as the general payload encoder.
                prop_assert_eq!(pld, Payload::encode(&v).unwrap());
            }
            other => prop_assert!(false, "decoded {:?}", other),
        }
    }

    #[test]
    fn a_pre_encoded_payload_makes_the_same_frame(cid in any::<u64>(), v in any::<(u32, String, Vec<i64>)>()) {
        let mut direct = BytesMut::new();
        encode_yield(cid, &v, &mut direct, DEFAULT_MAX_FRAME).unwrap();
        let mut via = BytesMut::new();
        encode_yield_payload(cid, &Payload::encode(&v).unwrap(), &mut via, DEFAULT_MAX_FRAME).unwrap();
        prop_assert_eq!(direct, via);
    }

    #[test]
    fn general_yield_takes_the_fast_decoder_too(cid in any::<u64>(), bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let msg = Msg::Yield { cid, pld: Payload(bytes.into()) };
        let mut buf = BytesMut::new();
        encode(&msg, &mut buf, DEFAULT_MAX_FRAME).unwrap();
        prop_assert_eq!(decode_msg(one_frame(&mut buf)).unwrap(), msg);
    }

    #[test]
    fn truncated_or_extended_yield_never_panics(cid in any::<u64>(), cut in 0usize..40, extra in proptest::collection::vec(any::<u8>(), 0..4)) {
        let mut buf = BytesMut::new();
        encode_yield(cid, &"payload", &mut buf, DEFAULT_MAX_FRAME).unwrap();
        let body = one_frame(&mut buf);
        let mut mangled = body[..body.len().saturating_sub(cut)].to_vec();
        mangled.extend_from_slice(&extra);
        let _ = decode_msg(mangled.into());
    }
}

#[test]
fn oversized_yield_is_refused_and_leaves_the_buffer() {
    let mut buf = BytesMut::from(&b"keep"[..]);
    let big = vec![0u8; 2048];
    let e = encode_yield(1, &serde_bytes::Bytes::new(&big), &mut buf, 1024).unwrap_err();
    assert!(e.to_string().contains("exceeds the limit"), "{e}");
    assert_eq!(&buf[..], b"keep");
}
