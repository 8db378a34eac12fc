//! Minimal MessagePack writer and reader used on the hot path.
//!
//! Values are written straight from Lua values into the output buffer and read
//! straight back into Lua values (see `schema`), so no intermediate tree and no
//! serde pass sits between the socket and the Lua state. Only the subset
//! luahost emits is produced; the reader accepts every MessagePack form of the
//! kinds it is asked for and reports anything else as a [`ReadError`].

use bytes::{BufMut, BytesMut};

/// Appends `nil`.
pub fn put_nil(out: &mut BytesMut) {
    out.put_u8(0xc0);
}

/// Appends a boolean.
pub fn put_bool(out: &mut BytesMut, b: bool) {
    out.put_u8(if b { 0xc3 } else { 0xc2 });
}

/// Appends a signed integer in its shortest form.
pub fn put_int(out: &mut BytesMut, v: i64) {
    if v >= 0 {
        put_uint(out, v as u64);
    } else if v >= -32 {
        out.put_i8(v as i8);
    } else if v >= i8::MIN as i64 {
        out.put_u8(0xd0);
        out.put_i8(v as i8);
    } else if v >= i16::MIN as i64 {
        out.put_u8(0xd1);
        out.put_i16(v as i16);
    } else if v >= i32::MIN as i64 {
        out.put_u8(0xd2);
        out.put_i32(v as i32);
    } else {
        out.put_u8(0xd3);
        out.put_i64(v);
    }
}

/// Appends an unsigned integer in its shortest form.
pub fn put_uint(out: &mut BytesMut, v: u64) {
    if v < 128 {
        out.put_u8(v as u8);
    } else if v <= u8::MAX as u64 {
        out.put_u8(0xcc);
        out.put_u8(v as u8);
    } else if v <= u16::MAX as u64 {
        out.put_u8(0xcd);
        out.put_u16(v as u16);
    } else if v <= u32::MAX as u64 {
        out.put_u8(0xce);
        out.put_u32(v as u32);
    } else {
        out.put_u8(0xcf);
        out.put_u64(v);
    }
}

/// Appends a 32-bit float.
pub fn put_f32(out: &mut BytesMut, v: f32) {
    out.put_u8(0xca);
    out.put_f32(v);
}

/// Appends a 64-bit float.
pub fn put_f64(out: &mut BytesMut, v: f64) {
    out.put_u8(0xcb);
    out.put_f64(v);
}

/// Appends a string (raw bytes; Lua strings need not be UTF-8).
pub fn put_str(out: &mut BytesMut, s: &[u8]) {
    let n = s.len();
    if n < 32 {
        out.put_u8(0xa0 | n as u8);
    } else if n <= u8::MAX as usize {
        out.put_u8(0xd9);
        out.put_u8(n as u8);
    } else if n <= u16::MAX as usize {
        out.put_u8(0xda);
        out.put_u16(n as u16);
    } else {
        out.put_u8(0xdb);
        out.put_u32(n as u32);
    }
    out.put_slice(s);
}

/// Appends a binary blob.
pub fn put_bin(out: &mut BytesMut, s: &[u8]) {
    let n = s.len();
    if n <= u8::MAX as usize {
        out.put_u8(0xc4);
        out.put_u8(n as u8);
    } else if n <= u16::MAX as usize {
        out.put_u8(0xc5);
        out.put_u16(n as u16);
    } else {
        out.put_u8(0xc6);
        out.put_u32(n as u32);
    }
    out.put_slice(s);
}

/// Appends an array header for `n` elements.
pub fn put_array_len(out: &mut BytesMut, n: usize) {
    if n < 16 {
        out.put_u8(0x90 | n as u8);
    } else if n <= u16::MAX as usize {
        out.put_u8(0xdc);
        out.put_u16(n as u16);
    } else {
        out.put_u8(0xdd);
        out.put_u32(n as u32);
    }
}

/// Appends a map header for `n` pairs.
pub fn put_map_len(out: &mut BytesMut, n: usize) {
    if n < 16 {
        out.put_u8(0x80 | n as u8);
    } else if n <= u16::MAX as usize {
        out.put_u8(0xde);
        out.put_u16(n as u16);
    } else {
        out.put_u8(0xdf);
        out.put_u32(n as u32);
    }
}

/// Why a MessagePack value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The data ended inside a value.
    #[error("truncated MessagePack data")]
    Truncated,
    /// The next value is of another kind than expected.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// What the schema asked for.
        expected: &'static str,
        /// What the data holds.
        found: &'static str,
    },
    /// Bytes were left over after the last expected value.
    #[error("{0} unexpected bytes after the message")]
    Trailing(usize),
}

/// A number read from MessagePack.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// Any integer that fits in i64.
    Int(i64),
    /// An unsigned integer above `i64::MAX`.
    BigUint(u64),
    /// A float (32-bit values are widened).
    Float(f64),
}

/// A cursor over MessagePack bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

fn kind_name(m: u8) -> &'static str {
    match m {
        0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xd3 => "integer",
        0x80..=0x8f | 0xde | 0xdf => "map",
        0x90..=0x9f | 0xdc | 0xdd => "array",
        0xa0..=0xbf | 0xd9..=0xdb => "string",
        0xc0 => "nil",
        0xc2 | 0xc3 => "boolean",
        0xc4..=0xc6 => "binary",
        0xca | 0xcb => "float",
        0xc7..=0xc9 | 0xd4..=0xd8 => "extension",
        _ => "invalid byte",
    }
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), ReadError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ReadError::Trailing(self.buf.len()))
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        if self.buf.len() < n {
            return Err(ReadError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, ReadError> {
        Ok(self.take(1)?[0])
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// The kind of the next value, without consuming it.
    pub fn peek_kind(&self) -> Result<&'static str, ReadError> {
        self.buf.first().map(|m| kind_name(*m)).ok_or(ReadError::Truncated)
    }

    /// True when the next value is `nil` (not consumed).
    pub fn peek_nil(&self) -> bool {
        self.buf.first() == Some(&0xc0)
    }

    fn unexpected(&self, expected: &'static str) -> ReadError {
        match self.buf.first() {
            None => ReadError::Truncated,
            Some(m) => ReadError::Unexpected {
                expected,
                found: kind_name(*m),
            },
        }
    }

    /// Reads `nil`.
    pub fn read_nil(&mut self) -> Result<(), ReadError> {
        if self.peek_nil() {
            self.buf = &self.buf[1..];
            Ok(())
        } else {
            Err(self.unexpected("nil"))
        }
    }

    /// Reads a boolean.
    pub fn read_bool(&mut self) -> Result<bool, ReadError> {
        match self.buf.first() {
            Some(0xc2) => {
                self.buf = &self.buf[1..];
                Ok(false)
            }
            Some(0xc3) => {
                self.buf = &self.buf[1..];
                Ok(true)
            }
            _ => Err(self.unexpected("boolean")),
        }
    }

    /// Reads any integer or float.
    pub fn read_num(&mut self) -> Result<Num, ReadError> {
        let Some(&m) = self.buf.first() else {
            return Err(ReadError::Truncated);
        };
        let v = match m {
            0x00..=0x7f => {
                self.u8()?;
                Num::Int(m as i64)
            }
            0xe0..=0xff => {
                self.u8()?;
                Num::Int(m as i8 as i64)
            }
            0xcc => {
                self.u8()?;
                Num::Int(self.u8()? as i64)
            }
            0xcd => {
                self.u8()?;
                Num::Int(u16::from_be_bytes(self.be()?) as i64)
            }
            0xce => {
                self.u8()?;
                Num::Int(u32::from_be_bytes(self.be()?) as i64)
            }
            0xcf => {
                self.u8()?;
                let v = u64::from_be_bytes(self.be()?);
                if v > i64::MAX as u64 {
                    Num::BigUint(v)
                } else {
                    Num::Int(v as i64)
                }
            }
            0xd0 => {
                self.u8()?;
                Num::Int(self.u8()? as i8 as i64)
            }
            0xd1 => {
                self.u8()?;
                Num::Int(i16::from_be_bytes(self.be()?) as i64)
            }
            0xd2 => {
                self.u8()?;
                Num::Int(i32::from_be_bytes(self.be()?) as i64)
            }
            0xd3 => {
                self.u8()?;
                Num::Int(i64::from_be_bytes(self.be()?))
            }
            0xca => {
                self.u8()?;
                Num::Float(f32::from_be_bytes(self.be()?) as f64)
            }
            0xcb => {
                self.u8()?;
                Num::Float(f64::from_be_bytes(self.be()?))
            }
            _ => return Err(self.unexpected("number")),
        };
        Ok(v)
    }

    /// Reads a string or a binary blob and returns its bytes.
    pub fn read_bytes(&mut self) -> Result<&'a [u8], ReadError> {
        let Some(&m) = self.buf.first() else {
            return Err(ReadError::Truncated);
        };
        let n = match m {
            0xa0..=0xbf => {
                self.u8()?;
                (m & 0x1f) as usize
            }
            0xd9 | 0xc4 => {
                self.u8()?;
                self.u8()? as usize
            }
            0xda | 0xc5 => {
                self.u8()?;
                u16::from_be_bytes(self.be()?) as usize
            }
            0xdb | 0xc6 => {
                self.u8()?;
                u32::from_be_bytes(self.be()?) as usize
            }
            _ => return Err(self.unexpected("string")),
        };
        self.take(n)
    }

    /// Reads an array header and returns the element count. The count is
    /// checked against the bytes left, so a forged header cannot make the
    /// caller allocate more than the message could hold.
    pub fn read_array_len(&mut self) -> Result<usize, ReadError> {
        let Some(&m) = self.buf.first() else {
            return Err(ReadError::Truncated);
        };
        let n = match m {
            0x90..=0x9f => {
                self.u8()?;
                (m & 0x0f) as usize
            }
            0xdc => {
                self.u8()?;
                u16::from_be_bytes(self.be()?) as usize
            }
            0xdd => {
                self.u8()?;
                u32::from_be_bytes(self.be()?) as usize
            }
            _ => return Err(self.unexpected("array")),
        };
        if n > self.buf.len() {
            return Err(ReadError::Truncated);
        }
        Ok(n)
    }

    /// Reads a map header and returns the pair count (checked like arrays).
    pub fn read_map_len(&mut self) -> Result<usize, ReadError> {
        let Some(&m) = self.buf.first() else {
            return Err(ReadError::Truncated);
        };
        let n = match m {
            0x80..=0x8f => {
                self.u8()?;
                (m & 0x0f) as usize
            }
            0xde => {
                self.u8()?;
                u16::from_be_bytes(self.be()?) as usize
            }
            0xdf => {
                self.u8()?;
                u32::from_be_bytes(self.be()?) as usize
            }
            _ => return Err(self.unexpected("map")),
        };
        if n.saturating_mul(2) > self.buf.len() {
            return Err(ReadError::Truncated);
        }
        Ok(n)
    }

    /// Reads an unsigned integer that must fit in u32.
    pub fn read_u32(&mut self) -> Result<u32, ReadError> {
        match self.read_num()? {
            Num::Int(v) if (0..=u32::MAX as i64).contains(&v) => Ok(v as u32),
            _ => Err(ReadError::Unexpected {
                expected: "u32",
                found: "other number",
            }),
        }
    }

    /// Reads an unsigned integer (any u64).
    pub fn read_u64(&mut self) -> Result<u64, ReadError> {
        match self.read_num()? {
            Num::Int(v) if v >= 0 => Ok(v as u64),
            Num::BigUint(v) => Ok(v),
            _ => Err(ReadError::Unexpected {
                expected: "u64",
                found: "other number",
            }),
        }
    }

    /// Reads an integer that must fit in i64.
    pub fn read_i64(&mut self) -> Result<i64, ReadError> {
        match self.read_num()? {
            Num::Int(v) => Ok(v),
            _ => Err(ReadError::Unexpected {
                expected: "integer",
                found: "other number",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_round_trip_in_shortest_form() {
        for v in [
            0i64,
            1,
            127,
            128,
            255,
            256,
            65535,
            65536,
            -1,
            -32,
            -33,
            -128,
            -129,
            -32768,
            -32769,
            i64::MIN,
            i64::MAX,
        ] {
            let mut b = BytesMut::new();
            put_int(&mut b, v);
            let mut r = Reader::new(&b);
            assert_eq!(r.read_num().unwrap(), Num::Int(v), "{v}");
            r.finish().unwrap();
        }
        let mut b = BytesMut::new();
        put_int(&mut b, 5);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn agrees_with_rmp_serde() {
        let v = (1u8, "héllo", vec![1i64, -70000, 1 << 40], 2.5f64, true);
        let bytes = rmp_serde::to_vec(&v).unwrap();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.read_array_len().unwrap(), 5);
        assert_eq!(r.read_num().unwrap(), Num::Int(1));
        assert_eq!(r.read_bytes().unwrap(), "héllo".as_bytes());
        assert_eq!(r.read_array_len().unwrap(), 3);
        assert_eq!(r.read_i64().unwrap(), 1);
        assert_eq!(r.read_i64().unwrap(), -70000);
        assert_eq!(r.read_i64().unwrap(), 1 << 40);
        assert_eq!(r.read_num().unwrap(), Num::Float(2.5));
        assert!(r.read_bool().unwrap());
        r.finish().unwrap();

        let mut b = BytesMut::new();
        put_array_len(&mut b, 3);
        put_str(&mut b, b"x");
        put_int(&mut b, -300);
        put_f64(&mut b, 0.5);
        let back: (String, i32, f64) = rmp_serde::from_slice(&b).unwrap();
        assert_eq!(back, ("x".to_string(), -300, 0.5));
    }

    #[test]
    fn forged_lengths_are_refused() {
        let mut r = Reader::new(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(r.read_array_len(), Err(ReadError::Truncated));
        let mut r = Reader::new(&[0xdb, 0, 0, 1, 0, 1, 2]);
        assert_eq!(r.read_bytes(), Err(ReadError::Truncated));
        let mut r = Reader::new(&[0xc3]);
        assert!(matches!(r.read_num(), Err(ReadError::Unexpected { .. })));
    }
}
