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

/// Stream values as a receiver gets them: each with its dialog.
type Values = Vec<(u64, Payload)>;

/// What a receiver gets from a buffer of stream frames, both ways: every
/// frame decoded by the general codec, and the fast path (runs found by
/// `scan_yield_run`, read back by `YieldFrames`, frames outside a run by
/// the general codec).
fn both_ways(buf: &BytesMut, max_frame: usize) -> (Values, Values) {
    use furrow_proto::codec::{YieldFrames, scan_yield_run};
    let mut general = Vec::new();
    let mut b = buf.clone();
    let mut dec = FrameDecoder::new(max_frame);
    while let Some(f) = dec.decode(&mut b).expect("decodes") {
        match decode_msg(f).expect("decodes") {
            Msg::Yield { cid, pld } => general.push((cid, pld)),
            Msg::Yields { cid, plds } => general.extend(plds.into_iter().map(|p| (cid, p))),
            other => panic!("decoded {other:?}"),
        }
    }
    let mut fast = Vec::new();
    let mut b = buf.clone();
    while !b.is_empty() {
        if let Some(run) = scan_yield_run(&b, max_frame, 4) {
            let frames = b.split_to(run.len).freeze();
            let got: Vec<Payload> = YieldFrames::new(frames).collect();
            assert_eq!(got.len() as u64, run.values, "a run's count and its values");
            assert_eq!(got.iter().map(|p| p.len() as u64).sum::<u64>(), run.payload_bytes);
            fast.extend(got.into_iter().map(|p| (run.cid, p)));
        } else {
            match decode_msg(dec.decode(&mut b).expect("decodes").expect("whole frame")).expect("decodes") {
                Msg::Yield { cid, pld } => fast.push((cid, pld)),
                Msg::Yields { cid, plds } => fast.extend(plds.into_iter().map(|p| (cid, p))),
                other => panic!("decoded {other:?}"),
            }
        }
    }
    (general, fast)
}

proptest! {
    /// Values appended into `Yields` frames, some taken back at once (no
    /// credit), some of other dialogs, some large enough to cross a frame
    /// or the batch bound, read back the same both ways, in order, exactly
    /// the ones kept; and taking a value back restores the buffer byte for
    /// byte.
    #[test]
    fn appended_values_read_back_in_order_both_ways(
        ops in proptest::collection::vec((0u64..3, 0usize..70_000, any::<bool>()), 1..40),
    ) {
        use furrow_proto::codec::{append_yield_value, undo_append};
        let max_frame = 100_000;
        let (mut out, mut open) = (BytesMut::new(), None);
        let mut kept = Vec::new();
        for (i, (cid, size, undo)) in ops.into_iter().enumerate() {
            let value = vec![i as u8; size % 1000 + if size > 60_000 { size } else { 0 }];
            let before = out.clone();
            let a = append_yield_value(&mut out, &mut open, cid, serde_bytes::Bytes::new(&value), max_frame).unwrap();
            let pld = Payload::encode(serde_bytes::Bytes::new(&value)).unwrap();
            prop_assert_eq!(a.pld_len, pld.len());
            if undo {
                undo_append(&mut out, &mut open, &a);
                prop_assert_eq!(&out, &before, "taking a value back restores the buffer");
            } else {
                kept.push((cid, pld));
            }
        }
        let (general, fast) = both_ways(&out, max_frame);
        prop_assert_eq!(&general, &kept);
        prop_assert_eq!(&fast, &kept);
    }
}

#[test]
fn a_value_too_large_for_any_frame_is_refused_and_leaves_the_buffer() {
    use furrow_proto::codec::{EncodeError, FrameError, append_yield_value};
    let (mut out, mut open) = (BytesMut::new(), None);
    let _ = append_yield_value(&mut out, &mut open, 1, &1u8, 1000).expect("appends");
    let before = (out.clone(), open);
    let big = vec![0u8; 2000];
    match append_yield_value(&mut out, &mut open, 1, serde_bytes::Bytes::new(&big), 1000) {
        Err(EncodeError::Frame(FrameError::TooLarge { max: 1000, .. })) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!((out, open), before);
}

#[test]
fn a_value_that_would_overfill_the_open_frame_starts_a_new_one() {
    use furrow_proto::codec::append_yield_value;
    let (mut out, mut open) = (BytesMut::new(), None);
    let v = vec![7u8; 600];
    let first = append_yield_value(&mut out, &mut open, 1, serde_bytes::Bytes::new(&v), 1000).expect("appends");
    let second = append_yield_value(&mut out, &mut open, 1, serde_bytes::Bytes::new(&v), 1000).expect("appends");
    assert!(first.new_frame && second.new_frame, "two values of 600 bytes do not share a frame of 1000");
    let (general, _) = both_ways(&out, 1000);
    assert_eq!(general.len(), 2);
}

#[test]
fn a_yields_frame_whose_count_disagrees_is_left_to_the_general_decoder() {
    use furrow_proto::codec::{append_yield_value, scan_yield_run};
    let (mut out, mut open) = (BytesMut::new(), None);
    for v in 0..3u8 {
        let _ = append_yield_value(&mut out, &mut open, 1, &v, DEFAULT_MAX_FRAME).expect("appends");
    }
    // The count (big-endian u32 just before the first element) says 4.
    let at = out.iter().position(|&b| b == 0xdd).expect("appends") + 4;
    out[at] = 4;
    assert_eq!(scan_yield_run(&out, DEFAULT_MAX_FRAME, 4), None);
    // The general decoder reports what is wrong, and the frame boundary holds.
    let frame = one_frame(&mut out);
    assert!(decode_msg(frame).is_err());
    assert!(out.is_empty());
}
