//! Frame decoding on arbitrary bytes, fed in arbitrary pieces.
//!
//! The first input byte picks the piece sizes and a frame limit; the rest
//! is the stream. What must hold: decoding never panics; a frame over the
//! limit is an error, never a buffer that grows without bound; every
//! message that decodes re-encodes to a frame that decodes to the same
//! message; and the stream fast paths (a run of `Yield`/`Yields` frames
//! found by `scan_yield_run` and read back by `YieldFrames`, a frame
//! decoded by `decode_yield`/`decode_yields`) give exactly the values the
//! general decoder gives.
#![no_main]

use bytes::BytesMut;
use furrow_proto::codec::{self, FrameDecoder};
use furrow_proto::{Msg, Payload};
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
        check_run(&buf, max);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= max, "frame of {} bytes passed a limit of {max}", frame.len());
                    let fast = codec::decode_yield(&frame)
                        .map(|(cid, pld)| Msg::Yield { cid, pld })
                        .or_else(|| codec::decode_yields(&frame).map(|(cid, plds)| Msg::Yields { cid, plds }));
                    if let Some(fast) = fast {
                        assert_eq!(codec::decode_msg(frame.clone()).ok(), Some(fast), "fast and general decoders differ");
                    }
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

/// A run at the front of `buf`, if any, holds exactly the values the
/// general decoder finds in its frames.
fn check_run(buf: &BytesMut, max: usize) {
    let Some(run) = codec::scan_yield_run(buf, max, 8) else { return };
    assert!(run.len <= buf.len() && run.values >= 2);
    let frames = bytes::Bytes::copy_from_slice(&buf[..run.len]);
    let fast: Vec<Payload> = codec::YieldFrames::new(frames.clone()).collect();
    let mut general = Vec::new();
    let mut b = BytesMut::from(&frames[..]);
    let mut dec = FrameDecoder::new(max);
    while let Some(f) = dec.decode(&mut b).expect("a run's frames are well formed") {
        match codec::decode_msg(f).expect("a run's frames decode") {
            Msg::Yield { cid, pld } => general.push((cid, pld)),
            Msg::Yields { cid, plds } => general.extend(plds.into_iter().map(|p| (cid, p))),
            other => panic!("a run holds a {:?}", other.kind()),
        }
    }
    assert!(general.iter().all(|(cid, _)| *cid == run.cid), "a run of one dialog holds another's values");
    let general: Vec<Payload> = general.into_iter().map(|(_, p)| p).collect();
    assert_eq!(fast, general, "a run read back differs from its frames decoded");
    assert_eq!(fast.len() as u64, run.values);
    assert_eq!(fast.iter().map(|p| p.len() as u64).sum::<u64>(), run.payload_bytes);
}
