//! `frame`: the frame decoder (luahost::codec::wire) on arbitrary byte streams, fed
//! in chunks whose sizes come from the input, and proto::parse on every
//! message it yields.
//!
//! Input layout: byte 0 = n (low 4 bits) = number of chunk-size bytes that
//! follow; then those n bytes; the rest is the byte stream. With n = 0 the
//! stream is fed in one piece. Chunk size from byte s: s + 1 for s < 0xf0,
//! else (s - 0xef) * 4096 (so a few large chunks are possible as well).
//! Bits 4-5 of byte 0 pick the decoder's max_message and bits 6-7 the limit
//! set with `set_max_message` once the first message is out (as node.rs
//! does after verify), from [1 MiB, 1024, 64, 5], so `TooLarge` is
//! reachable with small inputs; existing seeds (bits 4-7 zero) use 1 MiB.
//!
//! Checks, beyond "never panics":
//! - the same messages and the same final error come out whether the stream
//!   is fed in chunks or all at once (split points must not matter);
//! - no message is larger than the max_message in force when it came out;
//! - every message re-encoded with wire::put_message decodes to itself.
#![no_main]

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use luahost::codec::proto::{self, Envelope};
use luahost::codec::wire::{self, FrameDecoder, Message, WireError};

const MAX_MESSAGE: usize = 1 << 20;
const LIMITS: [usize; 4] = [MAX_MESSAGE, 1024, 64, 5];

type Outcome = (Vec<Message>, Option<WireError>);

fn chunk_size(s: u8) -> usize {
    if s < 0xf0 {
        s as usize + 1
    } else {
        (s as usize - 0xef) * 4096
    }
}

fn run(stream: &[u8], sizes: &[u8], limits: (usize, usize)) -> Outcome {
    let mut dec = FrameDecoder::new(limits.0);
    let mut buf = BytesMut::new();
    let mut msgs = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    loop {
        let n = if sizes.is_empty() {
            stream.len() - pos
        } else {
            chunk_size(sizes[i % sizes.len()]).min(stream.len() - pos)
        };
        i += 1;
        buf.put_slice(&stream[pos..pos + n]);
        pos += n;
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(m)) => {
                    let max = if msgs.is_empty() { limits.0 } else { limits.1 };
                    assert!(m.data.len() <= max, "message of {} > max_message {max}", m.data.len());
                    msgs.push(m);
                    if msgs.len() == 1 {
                        dec.set_max_message(limits.1);
                    }
                }
                Ok(None) => break,
                Err(e) => return (msgs, Some(e)),
            }
        }
        if pos == stream.len() {
            // Nothing more will arrive; asking again must still say "not yet".
            assert!(matches!(dec.decode(&mut buf), Ok(None)), "decode changed its mind");
            return (msgs, None);
        }
    }
}

fn check_envelope(data: &[u8]) {
    // The counts are what node.rs sizes its argument lists by: they must be
    // bounded by the message, whatever the header claims.
    match proto::parse(data) {
        Ok(Envelope::Call { nargs, args, .. } | Envelope::Send { nargs, args, .. }) => {
            assert!(nargs <= data.len(), "nargs {nargs} > message of {}", data.len());
            assert!(args.remaining() <= data.len());
        }
        Ok(Envelope::Reply { nvals, vals, .. }) => {
            assert!(nvals <= data.len(), "nvals {nvals} > message of {}", data.len());
            assert!(vals.remaining() <= data.len());
        }
        Ok(_) | Err(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let n = (head & 0x0f) as usize;
    if rest.len() < n {
        return;
    }
    let (sizes, stream) = rest.split_at(n);
    let limits = (LIMITS[((head >> 4) & 3) as usize], LIMITS[(head >> 6) as usize]);

    let chunked = run(stream, sizes, limits);
    let whole = run(stream, &[], limits);
    assert_eq!(chunked, whole, "chunked and whole decoding differ");

    for m in &chunked.0 {
        check_envelope(&m.data);
        let mut out = BytesMut::new();
        wire::put_message(&mut out, m.session, &m.data);
        let mut dec = FrameDecoder::new(MAX_MESSAGE);
        let back = dec.decode(&mut out).expect("re-encoded message decodes");
        assert_eq!(back.as_ref(), Some(m), "re-encoded message differs");
        assert!(out.is_empty(), "re-encoded message left {} bytes", out.len());
    }
});
