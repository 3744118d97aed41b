//! Helpers shared by the integration tests: proptest strategies for every
//! protocol type, and a dynamic msgpack value to build frames by hand.

pub mod strategies;
pub mod val;

use bytes::{Bytes, BytesMut};
use furrow_proto::codec::{self, FrameDecoder};
use furrow_proto::{DEFAULT_MAX_FRAME, Msg};

/// The frame body (length prefix removed) of `msg`.
pub fn body_of(msg: &Msg) -> Bytes {
    let frame = codec::encode_to_bytes(msg, DEFAULT_MAX_FRAME).expect("message encodes");
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(len, frame.len() - codec::HEADER_LEN, "header announces the body length");
    frame.slice(codec::HEADER_LEN..)
}

/// A frame (header and body) around arbitrary body bytes.
pub fn frame_around(body: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(body.len() + codec::HEADER_LEN);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Encode, split with a `FrameDecoder`, decode.
pub fn round_trip(msg: &Msg) -> Msg {
    let mut buf = BytesMut::new();
    codec::encode(msg, &mut buf, DEFAULT_MAX_FRAME).expect("message encodes");
    let frame = FrameDecoder::default().decode(&mut buf).expect("frame accepted").expect("frame complete");
    assert!(buf.is_empty(), "the decoder took the whole frame");
    codec::decode_msg(frame).expect("frame decodes")
}
