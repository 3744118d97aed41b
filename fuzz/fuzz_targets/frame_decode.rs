//! Frame decoding on arbitrary bytes, fed in arbitrary pieces.
//!
//! The first input byte picks the piece sizes and a frame limit; the rest
//! is the stream. What must hold: decoding never panics; a frame over the
//! limit is an error, never a buffer that grows without bound; every
//! message that decodes re-encodes to a frame that decodes to the same
//! message.
#![no_main]

use bytes::BytesMut;
use furrow_proto::codec::{self, FrameDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&knob, stream)) = data.split_first() else { return };
    // Small limits reach the oversize path; the default one the rest.
    let max = match knob & 3 {
        0 => 16,
        1 => 256,
        2 => 4096,
        _ => furrow_proto::DEFAULT_MAX_FRAME,
    };
    let piece = usize::from(knob >> 2).max(1);
    let mut dec = FrameDecoder::new(max);
    let mut buf = BytesMut::new();
    for chunk in stream.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= max, "frame of {} bytes passed a limit of {max}", frame.len());
                    if let Ok(msg) = codec::decode_msg(frame) {
                        let again = codec::encode_to_bytes(&msg, furrow_proto::DEFAULT_MAX_FRAME)
                            .expect("a decoded message re-encodes");
                        let mut again = BytesMut::from(&again[..]);
                        let frame2 = FrameDecoder::new(furrow_proto::DEFAULT_MAX_FRAME)
                            .decode(&mut again)
                            .expect("a re-encoded frame is well formed")
                            .expect("a re-encoded frame is whole");
                        let msg2 = codec::decode_msg(frame2).expect("a re-encoded message decodes");
                        assert_eq!(msg, msg2, "re-encoding changed the message");
                    }
                }
                Ok(None) => break,
                // A bad header ends the connection in the runtime: stop here too.
                Err(_) => return,
            }
        }
        // Nothing decodable is held back: what is left is less than one frame.
        assert!(buf.len() < codec::HEADER_LEN + max, "{} bytes held back", buf.len());
    }
});
