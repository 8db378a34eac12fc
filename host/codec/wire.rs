//! The frame codec of seed 003, free of I/O.
//!
//! Every message on a luahost connection travels as one or more frames:
//!
//! ```text
//! +--------+------+-----------+----------------+
//! | len u16| flag | session   | data           |
//! |  (BE)  |  u8  | u32 (BE)  | len - 5 bytes  |
//! +--------+------+-----------+----------------+
//! ```
//!
//! `len` counts the bytes after the length field (flag, session and data).
//! A message of at most [`FRAGMENT`] bytes goes as one frame with flag
//! [`FLAG_WHOLE`]; a longer one is cut into [`FRAGMENT`]-sized pieces sent as
//! [`FLAG_FIRST`], any number of [`FLAG_MIDDLE`] and one [`FLAG_LAST`], all
//! carrying the same session. Fragments of two messages never interleave on
//! one connection: a writer always appends a whole message at once.
//!
//! The decoder treats "not enough bytes yet" as a normal outcome (`Ok(None)`),
//! and every violation of the format as a [`WireError`] that ends the
//! connection it came from.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes before the data of a frame: length, flag, session.
pub const HEADER: usize = 7;
/// The largest data carried by one frame of a fragmented message (32 KiB).
pub const FRAGMENT: usize = 32 * 1024;
/// Flag of a frame that holds a whole message.
pub const FLAG_WHOLE: u8 = 0x80;
/// Flag of the first fragment of a long message.
pub const FLAG_FIRST: u8 = 0x81;
/// Flag of a middle fragment of a long message.
pub const FLAG_MIDDLE: u8 = 0x82;
/// Flag of the last fragment of a long message.
pub const FLAG_LAST: u8 = 0x83;
/// Default limit on the size of one (reassembled) message: 16 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// A violation of the frame format. Each one closes the connection it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The flag byte is none of 0x80..=0x83.
    #[error("bad frame flag 0x{0:02x}")]
    BadFlag(u8),
    /// The length field is smaller than the flag and session it must cover.
    #[error("frame length {0} is shorter than its 5-byte header")]
    ShortFrame(usize),
    /// A fragment arrived that does not continue the message being assembled
    /// (a middle or last fragment without a first one, a first or whole frame
    /// inside a fragmented message, or a session that changed midway).
    #[error("fragment out of order: {0}")]
    FragmentOutOfOrder(&'static str),
    /// The reassembled message would exceed the configured maximum.
    #[error("message of {size} bytes or more exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Size reached so far.
        size: usize,
        /// The configured limit.
        max: usize,
    },
}

/// One whole message, reassembled if it was fragmented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The session of the frame(s): a call's id, or 0.
    pub session: u32,
    /// The payload (MessagePack in luahost).
    pub data: Bytes,
}

/// Starts a message in `out`: reserves its frame header and returns the
/// offset to hand to [`finish_message`] once the data has been appended.
pub fn begin_message(out: &mut BytesMut) -> usize {
    let start = out.len();
    out.put_slice(&[0u8; HEADER]);
    start
}

/// Drops a message begun with [`begin_message`] (its encoding failed).
pub fn abort_message(out: &mut BytesMut, start: usize) {
    out.truncate(start);
}

/// Completes a message begun at `start`: writes the header, or, when the data
/// is longer than [`FRAGMENT`], rewrites it as a sequence of fragments.
pub fn finish_message(out: &mut BytesMut, start: usize, session: u32) {
    let data_len = out.len() - start - HEADER;
    if data_len <= FRAGMENT {
        write_header(&mut out[start..start + HEADER], FLAG_WHOLE, session, data_len);
        return;
    }
    // Long message: open a 7-byte gap for a header every FRAGMENT bytes, in
    // place, moving chunks from the last to the first (no allocation, and
    // nothing queued before `start` is touched).
    let chunks = data_len.div_ceil(FRAGMENT);
    let data_start = start + HEADER;
    out.resize(out.len() + (chunks - 1) * HEADER, 0);
    for i in (0..chunks).rev() {
        let src = data_start + i * FRAGMENT;
        let len = FRAGMENT.min(data_len - i * FRAGMENT);
        let dst = start + i * (FRAGMENT + HEADER) + HEADER;
        out.copy_within(src..src + len, dst);
        let flag = if i == 0 {
            FLAG_FIRST
        } else if i + 1 == chunks {
            FLAG_LAST
        } else {
            FLAG_MIDDLE
        };
        write_header(&mut out[dst - HEADER..dst], flag, session, len);
    }
}

/// Appends a whole message (`data`) to `out`, fragmenting it if needed.
pub fn put_message(out: &mut BytesMut, session: u32, data: &[u8]) {
    let start = begin_message(out);
    out.put_slice(data);
    finish_message(out, start, session);
}

fn write_header(h: &mut [u8], flag: u8, session: u32, data_len: usize) {
    let len = (data_len + 5) as u16;
    h[0..2].copy_from_slice(&len.to_be_bytes());
    h[2] = flag;
    h[3..7].copy_from_slice(&session.to_be_bytes());
}

/// True when `buf` starts with a whole frame (its length field and all the
/// bytes it counts have arrived).
pub fn has_frame(buf: &[u8]) -> bool {
    buf.len() >= 2 && buf.len() >= 2 + u16::from_be_bytes([buf[0], buf[1]]) as usize
}

/// Reassembles messages from a byte stream.
#[derive(Debug)]
pub struct FrameDecoder {
    partial: Option<(u32, BytesMut)>,
    max_message: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE)
    }
}

impl FrameDecoder {
    /// A decoder that refuses messages larger than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        FrameDecoder {
            partial: None,
            max_message,
        }
    }

    /// Changes the largest message accepted from now on (e.g. once a
    /// connection has verified).
    pub fn set_max_message(&mut self, max_message: usize) {
        self.max_message = max_message;
    }

    /// Takes the next whole message off the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold one (more bytes are
    /// needed); consumed fragments are kept inside the decoder.
    ///
    /// # Errors
    ///
    /// A [`WireError`] when the stream breaks the frame format; the
    /// connection should then be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, WireError> {
        loop {
            if buf.len() < 2 {
                return Ok(None);
            }
            let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
            if len < 5 {
                return Err(WireError::ShortFrame(len));
            }
            if buf.len() < 3 {
                return Ok(None);
            }
            let flag = buf[2];
            if !(FLAG_WHOLE..=FLAG_LAST).contains(&flag) {
                return Err(WireError::BadFlag(flag));
            }
            if buf.len() < 2 + len {
                return Ok(None);
            }
            let session = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
            buf.advance(HEADER);
            let data = buf.split_to(len - 5);
            match flag {
                FLAG_WHOLE => {
                    if self.partial.is_some() {
                        return Err(WireError::FragmentOutOfOrder("whole frame inside a fragmented message"));
                    }
                    if data.len() > self.max_message {
                        return Err(WireError::TooLarge {
                            size: data.len(),
                            max: self.max_message,
                        });
                    }
                    return Ok(Some(Message {
                        session,
                        data: data.freeze(),
                    }));
                }
                FLAG_FIRST => {
                    if self.partial.is_some() {
                        return Err(WireError::FragmentOutOfOrder(
                            "first fragment inside a fragmented message",
                        ));
                    }
                    self.check_size(data.len())?;
                    self.partial = Some((session, data));
                }
                _ => {
                    let Some((psession, mut acc)) = self.partial.take() else {
                        return Err(WireError::FragmentOutOfOrder("continuation without a first fragment"));
                    };
                    if psession != session {
                        return Err(WireError::FragmentOutOfOrder(
                            "session changed inside a fragmented message",
                        ));
                    }
                    self.check_size(acc.len() + data.len())?;
                    acc.unsplit(data);
                    if flag == FLAG_LAST {
                        return Ok(Some(Message {
                            session,
                            data: acc.freeze(),
                        }));
                    }
                    self.partial = Some((session, acc));
                }
            }
        }
    }

    fn check_size(&self, size: usize) -> Result<(), WireError> {
        if size > self.max_message {
            Err(WireError::TooLarge {
                size,
                max: self.max_message,
            })
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], max: usize) -> Result<Vec<Message>, WireError> {
        let mut dec = FrameDecoder::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // Feed byte by byte: every split point must work.
        for b in bytes {
            buf.put_u8(*b);
            while let Some(m) = dec.decode(&mut buf)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    #[test]
    fn small_message_is_one_whole_frame() {
        let mut out = BytesMut::new();
        put_message(&mut out, 7, b"hello");
        assert_eq!(&out[..], &[0, 10, 0x80, 0, 0, 0, 7, b'h', b'e', b'l', b'l', b'o']);
        let msgs = decode_all(&out, 1 << 20).unwrap();
        assert_eq!(
            msgs,
            vec![Message {
                session: 7,
                data: Bytes::from_static(b"hello")
            }]
        );
    }

    #[test]
    fn large_message_is_fragmented_and_reassembled() {
        let data: Vec<u8> = (0..(FRAGMENT * 3 + 17)).map(|i| (i % 251) as u8).collect();
        let mut out = BytesMut::new();
        put_message(&mut out, 1, b"a");
        put_message(&mut out, 9, &data);
        put_message(&mut out, 2, b"b");
        let flags: Vec<u8> = {
            let mut v = Vec::new();
            let mut i = 0;
            while i < out.len() {
                let len = u16::from_be_bytes([out[i], out[i + 1]]) as usize;
                v.push(out[i + 2]);
                i += 2 + len;
            }
            v
        };
        assert_eq!(flags, vec![0x80, 0x81, 0x82, 0x82, 0x83, 0x80]);
        let mut dec = FrameDecoder::new(1 << 20);
        let msgs: Vec<Message> = std::iter::from_fn(|| dec.decode(&mut out).unwrap()).collect();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[1].session, 9);
        assert_eq!(&msgs[1].data[..], &data[..]);
        assert_eq!(&msgs[2].data[..], b"b");
    }

    #[test]
    fn exactly_one_fragment_is_whole() {
        let data = vec![1u8; FRAGMENT];
        let mut out = BytesMut::new();
        put_message(&mut out, 3, &data);
        assert_eq!(out[2], FLAG_WHOLE);
        assert_eq!(decode_all(&out, 1 << 20).unwrap()[0].data.len(), FRAGMENT);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(
            decode_all(&[0, 5, 0x42, 0, 0, 0, 0], 100),
            Err(WireError::BadFlag(0x42))
        );
        assert_eq!(decode_all(&[0, 2, 0x80, 0], 100), Err(WireError::ShortFrame(2)));
        assert!(matches!(
            decode_all(&[0, 6, 0x82, 0, 0, 0, 1, 9], 100),
            Err(WireError::FragmentOutOfOrder(_))
        ));
        let mut twice = BytesMut::new();
        twice.put_slice(&[0, 6, 0x81, 0, 0, 0, 1, 9]);
        twice.put_slice(&[0, 6, 0x81, 0, 0, 0, 1, 9]);
        assert!(matches!(decode_all(&twice, 100), Err(WireError::FragmentOutOfOrder(_))));
        let mut mixed = BytesMut::new();
        mixed.put_slice(&[0, 6, 0x81, 0, 0, 0, 1, 9]);
        mixed.put_slice(&[0, 6, 0x83, 0, 0, 0, 2, 9]);
        assert!(matches!(decode_all(&mixed, 100), Err(WireError::FragmentOutOfOrder(_))));
    }

    #[test]
    fn oversize_is_refused_before_reassembly_finishes() {
        let data = vec![0u8; FRAGMENT * 4];
        let mut out = BytesMut::new();
        put_message(&mut out, 1, &data);
        assert!(matches!(
            decode_all(&out, FRAGMENT * 2),
            Err(WireError::TooLarge { .. })
        ));
    }
}
