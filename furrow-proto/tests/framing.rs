//! The frame layer: reassembly from arbitrary fragments, truncation, the
//! size limit (checked before any allocation) and the encoder's limit.

#![allow(missing_docs, unreachable_pub, dead_code, clippy::unwrap_used)]

mod common;

use bytes::{Bytes, BytesMut};
use common::{body_of, frame_around, strategies};
use furrow_proto::codec::{self, EncodeError, FrameDecoder, FrameError, HEADER_LEN};
use furrow_proto::{DEFAULT_MAX_FRAME, Msg};
use proptest::collection::vec;
use proptest::prelude::*;

/// Encode `msgs` back to back into one byte stream.
fn stream_of(msgs: &[Msg]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for m in msgs {
        codec::encode(m, &mut buf, DEFAULT_MAX_FRAME).unwrap();
    }
    buf.to_vec()
}

/// Feed `stream` to a decoder in pieces of the given sizes (cycled; a size
/// of 0 feeds nothing before the decoder is polled again) and collect every
/// frame it yields. Returns the frames and the leftover buffer.
fn feed_in_chunks(stream: &[u8], sizes: &[usize], max: usize) -> Result<(Vec<Bytes>, BytesMut), FrameError> {
    let mut d = FrameDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    loop {
        while let Some(f) = d.decode(&mut buf)? {
            frames.push(f);
        }
        // A pending incomplete frame gets no room reserved for the rest of
        // it: a peer announcing a large frame and sending nothing must not
        // make the receiver allocate it (issue 14, defect 2).
        let cap = buf.capacity();
        assert!(d.decode(&mut buf)?.is_none());
        assert_eq!(buf.capacity(), cap, "an incomplete frame reserves nothing");
        if pos == stream.len() {
            return Ok((frames, buf));
        }
        let n = sizes[i % sizes.len()].min(stream.len() - pos);
        i += 1;
        buf.extend_from_slice(&stream[pos..pos + n]);
        pos += n;
    }
}

/// What a decoder must do with `buf`, from the frame format alone.
enum Expect {
    NeedMore,
    Frame(usize),
    Err(FrameError),
}

fn expected(buf: &[u8], max: usize) -> Expect {
    if buf.len() < HEADER_LEN {
        return Expect::NeedMore;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max {
        Expect::Err(FrameError::TooLarge { len, max })
    } else if len == 0 {
        Expect::Err(FrameError::Empty)
    } else if buf.len() < HEADER_LEN + len {
        Expect::NeedMore
    } else {
        Expect::Frame(len)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Several frames, cut anywhere: the same frames come out, in order,
    /// and nothing is left over.
    #[test]
    fn fragments_of_any_size_reassemble(
        msgs in vec(strategies::msg(), 1..6),
        sizes in vec(prop_oneof![Just(0usize), Just(1), 1..8usize, 1..600usize], 1..12),
    ) {
        let stream = stream_of(&msgs);
        prop_assume!(sizes.iter().any(|&s| s > 0));
        let (frames, rest) = feed_in_chunks(&stream, &sizes, DEFAULT_MAX_FRAME).unwrap();
        prop_assert!(rest.is_empty());
        prop_assert_eq!(frames.len(), msgs.len());
        for (frame, msg) in frames.into_iter().zip(&msgs) {
            prop_assert_eq!(&frame, &body_of(msg));
            prop_assert_eq!(&codec::decode_msg(frame).unwrap(), msg);
        }
    }

    #[test]
    fn one_byte_at_a_time(msgs in vec(strategies::msg(), 1..5)) {
        let stream = stream_of(&msgs);
        let (frames, rest) = feed_in_chunks(&stream, &[1], DEFAULT_MAX_FRAME).unwrap();
        prop_assert!(rest.is_empty());
        let decoded: Vec<Msg> = frames.into_iter().map(|f| codec::decode_msg(f).unwrap()).collect();
        prop_assert_eq!(decoded, msgs);
    }

    /// Every strict prefix of a valid frame is "need more", and the bytes
    /// already there are left alone.
    #[test]
    fn truncated_frame_needs_more(msg in strategies::msg()) {
        let frame = codec::encode_to_bytes(&msg, DEFAULT_MAX_FRAME).unwrap();
        let mut d = FrameDecoder::default();
        for k in 0..frame.len() {
            let mut buf = BytesMut::from(&frame[..k]);
            prop_assert_eq!(d.decode(&mut buf), Ok(None), "prefix of {} bytes", k);
            prop_assert_eq!(&buf[..], &frame[..k]);
            if k >= HEADER_LEN {
                prop_assert_eq!(FrameDecoder::frame_len(&buf), Some(frame.len()));
            }
        }
        let mut buf = BytesMut::from(&frame[..]);
        prop_assert_eq!(d.decode(&mut buf).unwrap().unwrap(), frame.slice(HEADER_LEN..));
    }

    /// Arbitrary bytes: never a panic, and each step does exactly what the
    /// format says (frame, need more, or a typed error with the buffer
    /// untouched).
    #[test]
    fn arbitrary_bytes_to_frame_decoder(
        bytes in vec(any::<u8>(), 0..300),
        max in prop_oneof![0..8usize, 0..300usize, Just(DEFAULT_MAX_FRAME)],
    ) {
        let mut d = FrameDecoder::new(max);
        prop_assert_eq!(d.max_frame(), max);
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            let before = buf.clone();
            let cap = buf.capacity();
            let got = d.decode(&mut buf);
            match expected(&before, max) {
                Expect::NeedMore => {
                    prop_assert_eq!(got, Ok(None));
                    prop_assert_eq!(&buf, &before);
                    break;
                }
                Expect::Err(e) => {
                    prop_assert_eq!(got, Err(e));
                    prop_assert_eq!(&buf, &before);
                    prop_assert_eq!(buf.capacity(), cap, "an error reserves nothing");
                    break;
                }
                Expect::Frame(len) => {
                    let f = got.unwrap().unwrap();
                    prop_assert_eq!(&f[..], &before[HEADER_LEN..HEADER_LEN + len]);
                    prop_assert_eq!(&buf[..], &before[HEADER_LEN + len..]);
                    // And the frame content itself never panics the decoder.
                    let _ = codec::decode_msg(f);
                }
            }
        }
    }

    /// Chunked feeding of arbitrary bytes gives the same result as feeding
    /// everything at once.
    #[test]
    fn chunking_does_not_change_arbitrary_streams(
        bytes in vec(any::<u8>(), 0..200),
        sizes in vec(1..20usize, 1..8),
        max in 0..64usize,
    ) {
        let whole = feed_in_chunks(&bytes, &[bytes.len().max(1)], max);
        let chunked = feed_in_chunks(&bytes, &sizes, max);
        match (whole, chunked) {
            (Ok((f1, r1)), Ok((f2, r2))) => {
                prop_assert_eq!(f1, f2);
                prop_assert_eq!(r1, r2);
            }
            (Err(e1), Err(e2)) => prop_assert_eq!(e1, e2),
            (a, b) => prop_assert!(false, "whole: {:?}, chunked: {:?}", a, b),
        }
    }

    /// A declared length above the limit is refused at once, whatever
    /// follows, and no memory is reserved for it.
    #[test]
    fn oversized_header_is_refused_without_reserving(
        max in prop_oneof![0..16usize, 0..(1usize << 20)],
        extra in 1..=u32::MAX as u64,
        tail in vec(any::<u8>(), 0..32),
    ) {
        let len = (max as u64 + extra).min(u32::MAX as u64) as usize;
        prop_assume!(len > max);
        let mut buf = BytesMut::from(&(len as u32).to_le_bytes()[..]);
        buf.extend_from_slice(&tail);
        let before = buf.clone();
        let cap = buf.capacity();
        prop_assert_eq!(FrameDecoder::new(max).decode(&mut buf), Err(FrameError::TooLarge { len, max }));
        prop_assert_eq!(buf.capacity(), cap);
        prop_assert_eq!(buf, before);
    }

    /// The encoder refuses a message one byte over the limit, leaving the
    /// output exactly as it was, and accepts it at the limit.
    #[test]
    fn encode_respects_max_frame(msg in strategies::msg(), prefix in vec(any::<u8>(), 0..16)) {
        let len = body_of(&msg).len();
        for max in [0, len / 2, len - 1] {
            let mut out = BytesMut::from(&prefix[..]);
            prop_assert_eq!(
                codec::encode(&msg, &mut out, max),
                Err(EncodeError::Frame(FrameError::TooLarge { len, max }))
            );
            prop_assert_eq!(&out[..], &prefix[..]);
            prop_assert_eq!(
                codec::encode_to_bytes(&msg, max),
                Err(EncodeError::Frame(FrameError::TooLarge { len, max }))
            );
        }
        let mut out = BytesMut::from(&prefix[..]);
        codec::encode(&msg, &mut out, len).unwrap();
        prop_assert_eq!(out.len(), prefix.len() + HEADER_LEN + len);
        let mut frame = out.split_off(prefix.len());
        prop_assert_eq!(&out[..], &prefix[..]);
        // A peer whose limit is one byte smaller refuses it; at the limit it passes.
        prop_assert_eq!(
            FrameDecoder::new(len - 1).decode(&mut frame.clone()),
            Err(FrameError::TooLarge { len, max: len - 1 })
        );
        let body = FrameDecoder::new(len).decode(&mut frame).unwrap().unwrap();
        prop_assert_eq!(codec::decode_msg(body).unwrap(), msg);
    }
}

#[test]
fn four_gib_header_with_one_mib_limit() {
    let max = 1 << 20;
    let mut buf = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
    let cap = buf.capacity();
    let err = FrameDecoder::new(max).decode(&mut buf).unwrap_err();
    assert_eq!(err, FrameError::TooLarge { len: u32::MAX as usize, max });
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    assert_eq!(buf.capacity(), cap);
    assert!(buf.capacity() < 1024, "capacity {} after a refused 4 GiB header", buf.capacity());
    assert_eq!(buf.len(), HEADER_LEN);

    // Same through the default (32 MiB) limit.
    let mut buf = BytesMut::from(&((DEFAULT_MAX_FRAME + 1) as u32).to_le_bytes()[..]);
    assert_eq!(
        FrameDecoder::default().decode(&mut buf),
        Err(FrameError::TooLarge { len: DEFAULT_MAX_FRAME + 1, max: DEFAULT_MAX_FRAME })
    );
    assert!(buf.capacity() < 1024);
}

#[test]
fn oversized_header_is_refused_even_after_good_frames() {
    let mut buf = BytesMut::new();
    codec::encode(&Msg::Stop { cid: 9 }, &mut buf, 64).unwrap();
    buf.extend_from_slice(&(65u32).to_le_bytes());
    let mut d = FrameDecoder::new(64);
    assert_eq!(codec::decode_msg(d.decode(&mut buf).unwrap().unwrap()).unwrap(), Msg::Stop { cid: 9 });
    assert_eq!(d.decode(&mut buf), Err(FrameError::TooLarge { len: 65, max: 64 }));
}

#[test]
fn frame_exactly_at_the_limit_is_accepted() {
    let body = [0xa5u8; 16];
    let frame = frame_around(&body);
    let mut d = FrameDecoder::new(16);
    let mut buf = BytesMut::from(&frame[..HEADER_LEN + 3]);
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert_eq!(FrameDecoder::frame_len(&buf), Some(HEADER_LEN + 16), "the whole length is known from the header");
    buf.extend_from_slice(&frame[HEADER_LEN + 3..]);
    assert_eq!(&d.decode(&mut buf).unwrap().unwrap()[..], &body[..]);
    assert!(buf.is_empty());
}

#[test]
fn zero_length_frame_is_empty_error() {
    for max in [0, 1, 16, DEFAULT_MAX_FRAME] {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert_eq!(FrameDecoder::new(max).decode(&mut buf), Err(FrameError::Empty));
        assert_eq!(buf.len(), HEADER_LEN, "nothing consumed");
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 0x80, 1, 2][..]);
        assert_eq!(FrameDecoder::new(max).decode(&mut buf), Err(FrameError::Empty));
    }
    // An incomplete zero header is just "need more".
    let mut buf = BytesMut::from(&[0u8, 0, 0][..]);
    assert_eq!(FrameDecoder::default().decode(&mut buf), Ok(None));
    // After a good frame.
    let mut buf = frame_around(&[0x80]);
    buf.extend_from_slice(&[0, 0, 0, 0]);
    let mut d = FrameDecoder::default();
    assert_eq!(&d.decode(&mut buf).unwrap().unwrap()[..], &[0x80]);
    assert_eq!(d.decode(&mut buf), Err(FrameError::Empty));
    assert_eq!(FrameError::Empty.to_string(), "empty frame");
}

#[test]
fn default_decoder_uses_default_limit() {
    assert_eq!(FrameDecoder::default().max_frame(), DEFAULT_MAX_FRAME);
    assert_eq!(FrameDecoder::new(5).max_frame(), 5);
}

/// A frame in two parts (`codec::encode_parts`) is exactly one frame when
/// written one part after the other: the same message decodes from it, for
/// every kind whose payload ends it, at and around the size from which it
/// is split; the payload part is the payload's own buffer; and the frame
/// limit still applies to the whole.
#[test]
fn a_frame_in_two_parts_is_one_frame() {
    use furrow_proto::codec::{Encoded, PARTS_MIN, encode_parts};
    use furrow_proto::{Aid, Payload};
    for len in [PARTS_MIN - 100, PARTS_MIN, PARTS_MIN + 1, 1 << 20] {
        let pld = Payload(Bytes::from(vec![0x5a; len]));
        let msgs = [
            Msg::Start { cid: 5, ns: "m".into(), func: "f".into(), uid: Aid::new("caller", 7), kwargs: pld.clone() },
            Msg::Started { cid: 5, pld: pld.clone() },
            Msg::Yield { cid: 5, pld: pld.clone() },
            Msg::Return { cid: 5, pld: pld.clone() },
        ];
        for msg in msgs {
            let encoded = encode_parts(&msg, DEFAULT_MAX_FRAME).unwrap();
            match &encoded {
                Encoded::Parts { body, .. } => {
                    assert!(len >= PARTS_MIN, "{len} bytes were split");
                    assert_eq!(body.as_ptr(), pld.0.as_ptr(), "the payload part is not the payload's buffer");
                }
                Encoded::Whole(_) => assert!(len < PARTS_MIN, "{len} bytes were not split"),
                Encoded::Gather(_) => panic!("a payload is never gathered"),
            }
            let wire_len = encoded.len();
            let mut wire = BytesMut::from(&encoded.into_whole()[..]);
            assert_eq!(wire.len(), wire_len);
            let frame = FrameDecoder::default().decode(&mut wire).unwrap().unwrap();
            assert!(wire.is_empty(), "more than one frame");
            assert_eq!(codec::decode_msg(frame).unwrap(), msg);
        }
    }
    // The limit is on the whole frame, payload included.
    let big = Msg::Return { cid: 1, pld: Payload(Bytes::from(vec![1u8; 1 << 20])) };
    let err = encode_parts(&big, 1 << 19).unwrap_err();
    assert!(matches!(err, EncodeError::Frame(FrameError::TooLarge { max: 524_288, .. })), "{err:?}");
}

/// A stream value holding large `furrow_proto::Bytes` among other fields.
#[derive(serde::Serialize, Debug, Clone)]
enum Item {
    N(u32),
    S(String),
    B(furrow_proto::Bytes),
}

fn item() -> impl Strategy<Value = Item> {
    use furrow_proto::codec::PARTS_MIN;
    prop_oneof![
        any::<u32>().prop_map(Item::N),
        "[a-z]{0,12}".prop_map(Item::S),
        prop::sample::select(vec![0, 100, PARTS_MIN - 1, PARTS_MIN, PARTS_MIN + 7, 200_000])
            .prop_map(|len| Item::B(furrow_proto::Bytes::from(vec![(len % 251) as u8; len]))),
    ]
}

/// Whether `items` holds a `Bytes` large enough to be lent, and their
/// buffers' addresses.
fn lendable(items: &[Item]) -> Vec<*const u8> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::B(b) if b.len() >= furrow_proto::codec::PARTS_MIN => Some(b.as_ptr()),
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A `Yield` gathered from its parts is byte for byte the frame
    /// `encode_yield` copies together; each large `Bytes` in the value is
    /// a part of its own, its sender's buffer; and the lane's encoder
    /// (`append_yield_inline`) declines exactly the values that hold one,
    /// leaving its buffer as it was, and otherwise writes what
    /// `append_yield_value` writes.
    #[test]
    fn a_gathered_yield_is_the_frame_encode_yield_writes(
        items in vec(item(), 0..6),
        tail in any::<u8>(),
        cid in any::<u64>(),
    ) {
        use furrow_proto::codec::{Encoded, append_yield_inline, append_yield_value, encode_yield, encode_yield_gathered};
        let value = (items.clone(), tail);
        let mut copied = BytesMut::new();
        let n = encode_yield(cid, &value, &mut copied, DEFAULT_MAX_FRAME).unwrap();
        let (gathered, m) = encode_yield_gathered(cid, &value, 0, DEFAULT_MAX_FRAME).unwrap();
        prop_assert_eq!(n, m);
        let lent = lendable(&items);
        match &gathered {
            Encoded::Whole(_) => prop_assert!(lent.is_empty(), "nothing was lent"),
            Encoded::Gather(parts) => {
                let shared: Vec<_> = parts.iter().map(|p| p.as_ptr()).filter(|p| lent.contains(p)).collect();
                prop_assert_eq!(shared.len(), lent.len(), "each large Bytes is one part");
                prop_assert!(parts.iter().all(|p| !p.is_empty()), "an empty part");
            }
            Encoded::Parts { .. } => prop_assert!(false, "a Yield is not split in two"),
        }
        prop_assert_eq!(&gathered.into_whole()[..], &copied[..]);

        let (mut out, mut open) = (BytesMut::from(&b"before"[..]), None);
        let inline = append_yield_inline(&mut out, &mut open, cid, &value, DEFAULT_MAX_FRAME).unwrap();
        if lent.is_empty() {
            prop_assert!(inline.is_some());
            let (mut want, mut open2) = (BytesMut::from(&b"before"[..]), None);
            let _ = append_yield_value(&mut want, &mut open2, cid, &value, DEFAULT_MAX_FRAME).unwrap();
            prop_assert_eq!(out, want);
        } else {
            prop_assert!(inline.is_none());
            prop_assert_eq!(&out[..], b"before");
            prop_assert!(open.is_none());
        }
    }
}

/// The frame limit holds for a gathered frame as a whole, lent bytes
/// included.
#[test]
fn a_gathered_yield_over_the_limit_is_refused() {
    let big = furrow_proto::Bytes::from(vec![1u8; 1 << 20]);
    let err = codec::encode_yield_gathered(1, &big, 0, 1 << 19).unwrap_err();
    assert!(matches!(err, EncodeError::Frame(FrameError::TooLarge { max, len }) if max == 1 << 19 && len > 1 << 20));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A message written from a payload in parts
    /// (`codec::encode_with_parts`) is byte for byte the frame
    /// `encode_parts` writes for the message carrying that payload whole,
    /// for every kind a payload ends; each large `Bytes` in the value is a
    /// part of its own, its sender's buffer; and `PayloadParts` is exactly
    /// what `Payload::encode` makes, joined.
    #[test]
    fn a_payload_in_parts_makes_the_same_frame(items in vec(item(), 0..6), tail in any::<u8>()) {
        use furrow_proto::codec::{Encoded, encode_parts, encode_with_parts};
        use furrow_proto::{Aid, Payload, PayloadParts};
        let value = (items.clone(), tail);
        let parts = PayloadParts::encode(&value).unwrap();
        let whole = Payload::encode(&value).unwrap();
        prop_assert_eq!(parts.len(), whole.len());
        prop_assert_eq!(&parts.clone().into_payload(), &whole);
        let lent = lendable(&items);
        let shared = parts.parts().iter().filter(|p| lent.contains(&p.as_ptr())).count();
        prop_assert_eq!(shared, lent.len(), "each large Bytes is one part");
        let uid = Aid::new("caller", 7);
        let msgs = |p: Payload| [
            Msg::Start { cid: 5, ns: "m".into(), func: "f".into(), uid: uid.clone(), kwargs: p.clone() },
            Msg::Started { cid: 5, pld: p.clone() },
            Msg::Yield { cid: 5, pld: p.clone() },
            Msg::Return { cid: 5, pld: p },
        ];
        for (empty, full) in msgs(Payload::default()).iter().zip(msgs(whole.clone())) {
            let frame = encode_with_parts(empty, &parts, DEFAULT_MAX_FRAME).unwrap();
            if !lent.is_empty() {
                prop_assert!(matches!(frame, Encoded::Gather(_)), "lent values were copied");
            }
            let want = encode_parts(&full, DEFAULT_MAX_FRAME).unwrap().into_whole();
            prop_assert_eq!(frame.into_whole(), want);
        }
    }
}

/// Only a message whose payload is empty takes one in parts; the frame
/// limit holds for the whole.
#[test]
fn encode_with_parts_checks_its_message_and_the_limit() {
    use furrow_proto::codec::encode_with_parts;
    use furrow_proto::{Payload, PayloadParts};
    let big = PayloadParts::encode(&furrow_proto::Bytes::from(vec![1u8; 1 << 20])).unwrap();
    let empty = Msg::Return { cid: 1, pld: Payload::default() };
    let err = encode_with_parts(&empty, &big, 1 << 19).unwrap_err();
    assert!(matches!(err, EncodeError::Frame(FrameError::TooLarge { .. })), "{err:?}");
    let full = Msg::Return { cid: 1, pld: Payload::encode(&1u8).unwrap() };
    assert!(matches!(encode_with_parts(&full, &big, DEFAULT_MAX_FRAME), Err(EncodeError::Serialize(_))));
    assert!(matches!(
        encode_with_parts(&Msg::Stop { cid: 1 }, &big, DEFAULT_MAX_FRAME),
        Err(EncodeError::Serialize(_))
    ));
}
