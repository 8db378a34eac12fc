//! The relay prefix: how a message between two nodes travels through a
//! Router (`topology = "router"`) that reads only where it goes.
//!
//! A relayed message is an ordinary message of seed 003's frames
//! ([`crate::codec::wire`]) whose data starts with a fixed 9-byte prefix in
//! front of the envelope ([`crate::codec::proto`]) it carries:
//!
//! ```text
//! +--------+-----------+-----------+---------------------------+
//! | marker | dst u32   | src u32   | envelope (MessagePack)    |
//! |  0xC1  |   (BE)    |   (BE)    | copied, never decoded     |
//! +--------+-----------+-----------+---------------------------+
//! ```
//!
//! - **marker** `0xC1` is the one byte MessagePack never uses, and every
//!   envelope starts with an array marker (`0x90..=0x9f`, `0xdc`, `0xdd`):
//!   one byte tells a relayed message from a hop-level one (the handshake
//!   with the Router, pings and pongs of that connection) on the same
//!   connection, and a relayed message can never be mistaken for an
//!   envelope.
//! - **dst** and **src** are server ids (`sid`): the node the message is
//!   for and the node that wrote it.
//! - The frame **session** is the envelope's own (call id, send sequence
//!   number, 0); the Router keeps it. Calls, replies, sends and their acks
//!   are end to end (the sequence numbers and acks are per sender and
//!   receiver exactly as over a direct connection); the handshake, pings and
//!   pongs are per hop and never relayed.
//!
//! **What a Router does with a message** ([`route`]): it reads the 7-byte
//! frame header and the 9-byte prefix, checks that `src` is the sid the
//! sending connection verified with (a node cannot speak for another: a
//! mismatch is refused with [`RelayError::Spoofed`], and the Router closes
//! that connection), and appends the same data with the same session to the
//! connection of `dst`, unchanged. The prefix is validated, not rewritten, so
//! the bytes it forwards are the bytes it received (a `Bytes` slice, no
//! copy into a new buffer is needed for the data).
//!
//! **Long messages** (over [`wire::FRAGMENT`], sent as `0x81`, `0x82`...,
//! `0x83`): only the first fragment holds the prefix. The Router relays
//! *whole* messages: each incoming connection's `FrameDecoder` reassembles
//! (one connection is one source, and fragments never interleave on a
//! connection), then the message is appended to `dst`'s connection at once
//! with [`wire::put_message`], which fragments it again. Forwarding fragments
//! as they come would interleave fragments of two sources on the connection
//! to `dst`, which the frame format forbids; per-message reassembly costs a
//! buffer of at most the message limit per incoming connection, which the
//! decoder already has. A Router's limit is the nodes' message limit plus
//! [`PREFIX`].
//!
//! Nodes write the prefix with [`put_prefix`] between
//! [`wire::begin_message`] and the envelope, or a finished payload with
//! [`put_relayed`]; they read a relayed message with [`parse_relayed`].

use bytes::{BufMut, BytesMut};

use crate::codec::wire;

/// First byte of a relayed message (MessagePack's never-used byte).
pub const MARKER: u8 = 0xC1;
/// Bytes of the relay prefix: marker, dst, src.
pub const PREFIX: usize = 9;

/// A relayed message that cannot be relayed or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// Fewer bytes than the prefix.
    #[error("relayed message of {0} bytes is shorter than its 9-byte prefix")]
    Truncated(usize),
    /// The first byte is not [`MARKER`] (an envelope, or garbage).
    #[error("not a relayed message (first byte 0x{0:02x})")]
    NotRelayed(u8),
    /// The source id is not the one the sending connection verified with.
    #[error("source {claimed} spoofed on the connection of {verified}")]
    Spoofed {
        /// The `src` the message claims.
        claimed: u32,
        /// The sid of the connection it came on.
        verified: u32,
    },
    /// A message addressed to the node that sent it.
    #[error("node {0} relays a message to itself")]
    ToItself(u32),
}

/// The addresses of a relayed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The node it is for.
    pub dst: u32,
    /// The node that wrote it.
    pub src: u32,
}

/// True when the message data is a relayed message (its first byte is the
/// marker); nothing else is checked.
pub fn is_relayed(data: &[u8]) -> bool {
    data.first() == Some(&MARKER)
}

/// Appends the 9-byte prefix to `out` (between [`wire::begin_message`] and
/// the envelope).
pub fn put_prefix(out: &mut BytesMut, dst: u32, src: u32) {
    out.put_u8(MARKER);
    out.put_u32(dst);
    out.put_u32(src);
}

/// Appends the data of a relayed message to `out`: the prefix, then
/// `payload` (an encoded envelope). Frame it with [`put_relayed_message`] or
/// `wire::begin_message` / `finish_message`.
pub fn put_relayed(out: &mut BytesMut, dst: u32, src: u32, payload: &[u8]) {
    out.reserve(PREFIX + payload.len());
    put_prefix(out, dst, src);
    out.put_slice(payload);
}

/// Appends a whole relayed message to `out` as frames with `session`.
pub fn put_relayed_message(out: &mut BytesMut, session: u32, dst: u32, src: u32, payload: &[u8]) {
    let start = wire::begin_message(out);
    put_relayed(out, dst, src, payload);
    wire::finish_message(out, start, session);
}

/// Rewrites whole messages (as frames, e.g. what a node queued for a peer)
/// into relayed messages to `dst` from `src`, appended to `out`, sessions
/// kept. Returns the bytes of `frames` consumed: every whole message (a
/// message cut short at the end, or bytes that are not frames, stay).
///
/// A message whose data fits one frame with the prefix is copied frame by
/// frame; a longer one is reassembled and fragmented again.
pub fn relay_frames(out: &mut BytesMut, frames: &[u8], dst: u32, src: u32) -> usize {
    let mut at = 0;
    let header = |i: usize| -> Option<(usize, u8, u32)> {
        let h = frames.get(i..i + wire::HEADER)?;
        let len = u16::from_be_bytes([h[0], h[1]]) as usize;
        if len < 5 || frames.len() < i + 2 + len {
            return None;
        }
        Some((len - 5, h[2], u32::from_be_bytes([h[3], h[4], h[5], h[6]])))
    };
    while let Some((len, flag, session)) = header(at) {
        let data = &frames[at + wire::HEADER..at + wire::HEADER + len];
        if flag == wire::FLAG_WHOLE {
            put_relayed_message(out, session, dst, src, data);
            at += wire::HEADER + len;
            continue;
        }
        if flag != wire::FLAG_FIRST {
            break;
        }
        // a long message: gather its fragments
        let mut whole = data.to_vec();
        let mut next = at + wire::HEADER + len;
        let end = loop {
            match header(next) {
                Some((l, f, s)) if s == session && (f == wire::FLAG_MIDDLE || f == wire::FLAG_LAST) => {
                    whole.extend_from_slice(&frames[next + wire::HEADER..next + wire::HEADER + l]);
                    next += wire::HEADER + l;
                    if f == wire::FLAG_LAST {
                        break Some(next);
                    }
                }
                _ => break None,
            }
        };
        let Some(end) = end else { break };
        put_relayed_message(out, session, dst, src, &whole);
        at = end;
    }
    at
}

/// Reads the prefix of a relayed message's data: `(dst, src, payload)`.
///
/// # Errors
///
/// [`RelayError::Truncated`] or [`RelayError::NotRelayed`].
pub fn parse_relayed(data: &[u8]) -> Result<(u32, u32, &[u8]), RelayError> {
    let Some(&first) = data.first() else {
        return Err(RelayError::Truncated(0));
    };
    if first != MARKER {
        return Err(RelayError::NotRelayed(first));
    }
    if data.len() < PREFIX {
        return Err(RelayError::Truncated(data.len()));
    }
    let dst = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
    let src = u32::from_be_bytes([data[5], data[6], data[7], data[8]]);
    Ok((dst, src, &data[PREFIX..]))
}

/// The Router's check of a message that came on the connection verified as
/// `verified`: where it goes. The payload is not looked at.
///
/// # Errors
///
/// Those of [`parse_relayed`]; [`RelayError::Spoofed`] when `src` is not
/// `verified`; [`RelayError::ToItself`] when `dst` is `src`. The Router
/// closes the connection on any of them.
pub fn route(data: &[u8], verified: u32) -> Result<Route, RelayError> {
    let (dst, src, _) = parse_relayed(data)?;
    if src != verified {
        return Err(RelayError::Spoofed { claimed: src, verified });
    }
    if dst == src {
        return Err(RelayError::ToItself(src));
    }
    Ok(Route { dst, src })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::wire::{FrameDecoder, FLAG_FIRST, FLAG_WHOLE, FRAGMENT};
    use crate::rpc::ring::mix64;

    #[test]
    fn prefix_bytes_are_marker_dst_src() {
        let mut out = BytesMut::new();
        put_relayed(&mut out, 0x0102_0304, 7, &[0x91, 0x06]);
        assert_eq!(&out[..], &[0xC1, 1, 2, 3, 4, 0, 0, 0, 7, 0x91, 0x06]);
        assert_eq!(parse_relayed(&out), Ok((0x0102_0304, 7, &[0x91u8, 0x06][..])));
        assert!(is_relayed(&out));
        assert!(!is_relayed(&[0x91, 0x06]));
        assert!(!is_relayed(&[]));
    }

    #[test]
    fn empty_payload_round_trips() {
        let mut out = BytesMut::new();
        put_relayed(&mut out, u32::MAX, 0, &[]);
        assert_eq!(parse_relayed(&out), Ok((u32::MAX, 0, &[][..])));
    }

    #[test]
    fn truncated_prefix_is_an_error() {
        let mut out = BytesMut::new();
        put_relayed(&mut out, 5, 6, b"x");
        for n in 1..PREFIX {
            assert_eq!(parse_relayed(&out[..n]), Err(RelayError::Truncated(n)));
        }
        assert_eq!(parse_relayed(&[]), Err(RelayError::Truncated(0)));
    }

    #[test]
    fn an_envelope_is_not_a_relayed_message() {
        // [6] (ping) and a 16-element array: what hop-level messages start with
        assert_eq!(parse_relayed(&[0x91, 0x06]), Err(RelayError::NotRelayed(0x91)));
        assert_eq!(parse_relayed(&[0xdc, 0, 16]), Err(RelayError::NotRelayed(0xdc)));
    }

    #[test]
    fn the_router_refuses_a_spoofed_source() {
        let mut out = BytesMut::new();
        put_relayed(&mut out, 2, 3, b"payload");
        assert_eq!(route(&out, 3), Ok(Route { dst: 2, src: 3 }));
        assert_eq!(
            route(&out, 4),
            Err(RelayError::Spoofed {
                claimed: 3,
                verified: 4
            })
        );
        let mut me = BytesMut::new();
        put_relayed(&mut me, 3, 3, b"");
        assert_eq!(route(&me, 3), Err(RelayError::ToItself(3)));
        assert_eq!(
            RelayError::Spoofed {
                claimed: 3,
                verified: 4
            }
            .to_string(),
            "source 3 spoofed on the connection of 4"
        );
    }

    #[test]
    fn a_whole_frame_is_relayed_by_reading_16_bytes() {
        let mut out = BytesMut::new();
        put_relayed_message(&mut out, 42, 9, 8, b"\x93\x03\x00\x07");
        assert_eq!(out[2], FLAG_WHOLE);
        // the router reads the frame header and the prefix, nothing more
        let r = route(&out[wire::HEADER..wire::HEADER + PREFIX], 8).unwrap();
        assert_eq!(r, Route { dst: 9, src: 8 });
        let msg = FrameDecoder::default().decode(&mut out).unwrap().unwrap();
        assert_eq!(msg.session, 42);
        assert_eq!(parse_relayed(&msg.data).unwrap().2, b"\x93\x03\x00\x07");
    }

    #[test]
    fn a_long_message_keeps_its_prefix_in_the_first_fragment_and_relays_whole() {
        let payload: Vec<u8> = (0..FRAGMENT * 2 + 5).map(|i| (i % 253) as u8).collect();
        let mut inbound = BytesMut::new();
        put_relayed_message(&mut inbound, 77, 2, 1, &payload);
        assert_eq!(inbound[2], FLAG_FIRST);
        assert_eq!(inbound[wire::HEADER], MARKER);
        // the router: reassemble per incoming connection, check, append whole
        let mut dec = FrameDecoder::new(FRAGMENT * 4 + PREFIX);
        let msg = dec.decode(&mut inbound).unwrap().unwrap();
        assert!(inbound.is_empty());
        let r = route(&msg.data, 1).unwrap();
        assert_eq!(r.dst, 2);
        let mut to_dst = BytesMut::new();
        wire::put_message(&mut to_dst, msg.session, &msg.data);
        // the destination reads what the source wrote
        let got = FrameDecoder::new(FRAGMENT * 4 + PREFIX)
            .decode(&mut to_dst)
            .unwrap()
            .unwrap();
        assert_eq!(got.session, 77);
        assert_eq!(parse_relayed(&got.data), Ok((2, 1, &payload[..])));
    }

    #[test]
    fn queued_messages_are_rewritten_as_relayed_ones_short_and_long() {
        let long: Vec<u8> = (0..FRAGMENT + 100).map(|i| (i % 251) as u8).collect();
        // a frame whose data fills a whole fragment: with the prefix it
        // takes two
        let full = vec![7u8; FRAGMENT];
        let mut queued = BytesMut::new();
        wire::put_message(&mut queued, 1, b"\x91\x06");
        wire::put_message(&mut queued, 2, &long);
        wire::put_message(&mut queued, 3, &full);
        let whole_len = queued.len();
        // a message cut short stays
        wire::put_message(&mut queued, 4, b"\x91\x07");
        let cut = queued.len() - 1;
        let mut out = BytesMut::new();
        assert_eq!(relay_frames(&mut out, &queued[..cut], 9, 5), whole_len);
        let mut dec = FrameDecoder::new(usize::MAX);
        let mut got = Vec::new();
        while let Some(m) = dec.decode(&mut out).unwrap() {
            let (dst, src, payload) = parse_relayed(&m.data).unwrap();
            assert_eq!((dst, src), (9, 5));
            got.push((m.session, payload.to_vec()));
        }
        assert_eq!(got, vec![(1, b"\x91\x06".to_vec()), (2, long), (3, full)]);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 1u64;
        for n in 0..2000usize {
            let len = n % 24;
            let mut data = Vec::with_capacity(len);
            for _ in 0..len {
                x = mix64(x);
                data.push(x as u8);
            }
            if n % 3 == 0 && len > 0 {
                data[0] = MARKER;
            }
            let verified = (x >> 40) as u32 % 4;
            match parse_relayed(&data) {
                Ok((dst, src, payload)) => {
                    assert_eq!(data[0], MARKER);
                    assert_eq!(payload.len(), len - PREFIX);
                    let mut again = BytesMut::new();
                    put_relayed(&mut again, dst, src, payload);
                    assert_eq!(&again[..], &data[..]);
                }
                Err(RelayError::Truncated(k)) => assert!(k < PREFIX),
                Err(RelayError::NotRelayed(b)) => assert_ne!(b, MARKER),
                Err(e) => panic!("parse_relayed: {e}"),
            }
            let _ = route(&data, verified);
        }
    }
}
