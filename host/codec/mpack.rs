//! MessagePack writer and reader used on the hot path, on `rmp`'s low-level
//! `encode`/`decode` functions.
//!
//! Values are written straight from Lua values into the output buffer and read
//! straight back into Lua values (see `schema`), so no intermediate tree and no
//! serde pass sits between the socket and the Lua state. Only the subset
//! luahost emits is produced (always in the shortest form); the reader accepts
//! every MessagePack form of the kinds it is asked for and reports anything
//! else as a [`ReadError`]. Lengths read from the data are checked against the
//! bytes left before anything is sliced or allocated.

use std::io;

use bytes::{BufMut, BytesMut};
use rmp::decode::bytes::BytesReadError;
use rmp::decode::{self as dec, Bytes, ValueReadError};
use rmp::encode as enc;
use rmp::Marker;

/// `rmp`'s writer over a `BytesMut`: appending cannot fail, so every
/// `io::Result` it returns is `Ok`.
struct Out<'a>(&'a mut BytesMut);

impl io::Write for Out<'_> {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.extend_from_slice(buf);
        Ok(())
    }

    #[inline]
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs one `rmp` write into `out`. Writes into a `BytesMut` never fail, so
/// the result carries nothing.
#[inline]
fn put<T, E: std::fmt::Debug>(out: &mut BytesMut, f: impl FnOnce(&mut Out<'_>) -> Result<T, E>) {
    let r = f(&mut Out(out));
    debug_assert!(r.is_ok(), "writing into a BytesMut failed: {:?}", r.err());
}

/// Appends `nil`.
pub fn put_nil(out: &mut BytesMut) {
    put(out, |w| enc::write_nil(w));
}

/// Appends a boolean.
pub fn put_bool(out: &mut BytesMut, b: bool) {
    put(out, |w| enc::write_bool(w, b));
}

/// Appends a signed integer in its shortest form.
pub fn put_int(out: &mut BytesMut, v: i64) {
    // fixints (-32..=127) are one byte, written here: the common case on
    // the hot path (ids, kinds, small values) without a call into rmp
    if (-32..=127).contains(&v) {
        out.put_u8(v as i8 as u8);
        return;
    }
    put(out, |w| enc::write_sint(w, v));
}

/// Appends an unsigned integer in its shortest form.
pub fn put_uint(out: &mut BytesMut, v: u64) {
    if v <= 127 {
        out.put_u8(v as u8);
        return;
    }
    put(out, |w| enc::write_uint(w, v));
}

/// Appends a 32-bit float.
pub fn put_f32(out: &mut BytesMut, v: f32) {
    put(out, |w| enc::write_f32(w, v));
}

/// Appends a 64-bit float.
pub fn put_f64(out: &mut BytesMut, v: f64) {
    put(out, |w| enc::write_f64(w, v));
}

/// Appends a string (raw bytes; Lua strings need not be UTF-8, so this is
/// `write_str_len` and the bytes, not `write_str`).
pub fn put_str(out: &mut BytesMut, s: &[u8]) {
    if s.len() < 32 {
        // fixstr: the marker carries the length
        out.put_u8(0xa0 | s.len() as u8);
    } else {
        put(out, |w| enc::write_str_len(w, s.len() as u32));
    }
    out.extend_from_slice(s);
}

/// Appends a binary blob.
pub fn put_bin(out: &mut BytesMut, s: &[u8]) {
    put(out, |w| enc::write_bin(w, s));
}

/// Appends an array header for `n` elements.
pub fn put_array_len(out: &mut BytesMut, n: usize) {
    if n < 16 {
        // fixarray
        out.put_u8(0x90 | n as u8);
        return;
    }
    put(out, |w| enc::write_array_len(w, n as u32));
}

/// Appends a map header for `n` pairs.
pub fn put_map_len(out: &mut BytesMut, n: usize) {
    put(out, |w| enc::write_map_len(w, n as u32));
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
    /// Arrays and maps nested deeper than [`MAX_DEPTH`] (only
    /// [`Reader::skip_value`] checks this).
    #[error("values nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// How deep [`Reader::skip_value`] follows arrays and maps inside each
/// other before it gives up with [`ReadError::TooDeep`].
pub const MAX_DEPTH: usize = 64;

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

/// A cursor over MessagePack bytes (each read runs on `rmp::decode::Bytes`,
/// whose reads of a slice are cheaper than `std::io::Read`).
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

fn kind_name(m: Marker) -> &'static str {
    use Marker::*;
    match m {
        FixPos(_) | FixNeg(_) | U8 | U16 | U32 | U64 | I8 | I16 | I32 | I64 => "integer",
        FixMap(_) | Map16 | Map32 => "map",
        FixArray(_) | Array16 | Array32 => "array",
        FixStr(_) | Str8 | Str16 | Str32 => "string",
        Null => "nil",
        False | True => "boolean",
        Bin8 | Bin16 | Bin32 => "binary",
        F32 | F64 => "float",
        Ext8 | Ext16 | Ext32 | FixExt1 | FixExt2 | FixExt4 | FixExt8 | FixExt16 => "extension",
        Reserved => "invalid byte",
    }
}

/// Maps an `rmp` read error: a slice fails to read only where it ends.
#[cold]
fn value_err(e: ValueReadError<BytesReadError>, expected: &'static str) -> ReadError {
    match e {
        ValueReadError::TypeMismatch(m) => ReadError::Unexpected {
            expected,
            found: kind_name(m),
        },
        ValueReadError::InvalidMarkerRead(_) | ValueReadError::InvalidDataRead(_) => ReadError::Truncated,
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

    /// The bytes not read yet, from the cursor on (the cursor does not move).
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), ReadError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ReadError::Trailing(self.buf.len()))
        }
    }

    /// The marker of the next value, not consumed.
    #[inline]
    fn marker(&self) -> Result<Marker, ReadError> {
        match self.buf.first() {
            Some(&b) => Ok(Marker::from_u8(b)),
            None => Err(ReadError::Truncated),
        }
    }

    /// Runs one `rmp` read on a copy of the cursor; the cursor moves only
    /// when the read succeeds.
    #[inline]
    fn read<T>(
        &mut self,
        expected: &'static str,
        f: impl FnOnce(&mut Bytes<'a>) -> Result<T, ValueReadError<BytesReadError>>,
    ) -> Result<T, ReadError> {
        let mut rd = Bytes::new(self.buf);
        let v = f(&mut rd).map_err(|e| value_err(e, expected))?;
        self.buf = rd.remaining_slice();
        Ok(v)
    }

    /// The kind of the next value, without consuming it.
    pub fn peek_kind(&self) -> Result<&'static str, ReadError> {
        self.marker().map(kind_name)
    }

    /// True when the next value is `nil` (not consumed).
    pub fn peek_nil(&self) -> bool {
        matches!(self.marker(), Ok(Marker::Null))
    }

    /// Reads `nil`.
    pub fn read_nil(&mut self) -> Result<(), ReadError> {
        self.read("nil", dec::read_nil)
    }

    /// Reads a boolean.
    pub fn read_bool(&mut self) -> Result<bool, ReadError> {
        self.read("boolean", dec::read_bool)
    }

    /// Reads any integer or float.
    pub fn read_num(&mut self) -> Result<Num, ReadError> {
        const E: &str = "number";
        Ok(match self.marker()? {
            Marker::FixPos(_) => Num::Int(self.read(E, dec::read_pfix)? as i64),
            Marker::FixNeg(_) => Num::Int(self.read(E, dec::read_nfix)? as i64),
            Marker::U8 => Num::Int(self.read(E, dec::read_u8)? as i64),
            Marker::U16 => Num::Int(self.read(E, dec::read_u16)? as i64),
            Marker::U32 => Num::Int(self.read(E, dec::read_u32)? as i64),
            // The one integer form that may not fit in i64.
            Marker::U64 => {
                let v = self.read(E, dec::read_u64)?;
                match i64::try_from(v) {
                    Ok(i) => Num::Int(i),
                    Err(_) => Num::BigUint(v),
                }
            }
            Marker::I8 => Num::Int(self.read(E, dec::read_i8)? as i64),
            Marker::I16 => Num::Int(self.read(E, dec::read_i16)? as i64),
            Marker::I32 => Num::Int(self.read(E, dec::read_i32)? as i64),
            Marker::I64 => Num::Int(self.read(E, dec::read_i64)?),
            Marker::F32 => Num::Float(self.read(E, dec::read_f32)? as f64),
            Marker::F64 => Num::Float(self.read(E, dec::read_f64)?),
            m => {
                return Err(ReadError::Unexpected {
                    expected: E,
                    found: kind_name(m),
                })
            }
        })
    }

    /// Reads a string or a binary blob and returns its bytes. The length is
    /// checked against the bytes left.
    pub fn read_bytes(&mut self) -> Result<&'a [u8], ReadError> {
        let mut rd = Bytes::new(self.buf);
        let n = match self.marker()? {
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => dec::read_bin_len(&mut rd),
            _ => dec::read_str_len(&mut rd),
        }
        .map_err(|e| value_err(e, "string"))? as usize;
        let rest = rd.remaining_slice();
        if n > rest.len() {
            return Err(ReadError::Truncated);
        }
        let (s, rest) = rest.split_at(n);
        self.buf = rest;
        Ok(s)
    }

    /// Reads a string (the `str` forms only, not `bin`) and returns its
    /// bytes, which need not be UTF-8. The length is checked against the
    /// bytes left.
    pub fn read_str(&mut self) -> Result<&'a [u8], ReadError> {
        match self.marker()? {
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => self.read_bytes(),
            m => Err(ReadError::Unexpected {
                expected: "string",
                found: kind_name(m),
            }),
        }
    }

    /// Reads a binary blob (the `bin` forms only, not `str`) and returns its
    /// bytes. The length is checked against the bytes left.
    pub fn read_bin(&mut self) -> Result<&'a [u8], ReadError> {
        match self.marker()? {
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => self.read_bytes(),
            m => Err(ReadError::Unexpected {
                expected: "binary",
                found: kind_name(m),
            }),
        }
    }

    /// Steps over the next value, whatever its kind, checking that it is
    /// well-formed: every length fits in the bytes left, no byte is the
    /// reserved marker `0xc1`, and arrays and maps nest at most
    /// [`MAX_DEPTH`] deep. Strings are not checked for UTF-8. The work is
    /// linear in the bytes stepped over (every element takes at least one
    /// byte). On an error the cursor does not move.
    pub fn skip_value(&mut self) -> Result<(), ReadError> {
        let start = self.buf;
        let r = self.skip_nested(0);
        if r.is_err() {
            self.buf = start;
        }
        r
    }

    /// Moves the cursor `n` bytes on, or fails if fewer are left.
    fn advance(&mut self, n: usize) -> Result<(), ReadError> {
        if n > self.buf.len() {
            return Err(ReadError::Truncated);
        }
        self.buf = &self.buf[n..];
        Ok(())
    }

    /// A big-endian length of `width` bytes at `at` (after the marker).
    fn len_at(&self, at: usize, width: usize) -> Result<usize, ReadError> {
        let b = self.buf.get(at..at + width).ok_or(ReadError::Truncated)?;
        Ok(b.iter().fold(0usize, |n, &x| (n << 8) | x as usize))
    }

    /// [`Reader::skip_value`] at nesting level `depth`.
    fn skip_nested(&mut self, depth: usize) -> Result<(), ReadError> {
        use Marker::*;
        // (bytes of marker and length fields, payload bytes) or, for
        // arrays and maps, the number of values inside
        let (head, body, values) = match self.marker()? {
            FixPos(_) | FixNeg(_) | Null | True | False => (1, 0, 0),
            U8 | I8 => (2, 0, 0),
            U16 | I16 => (3, 0, 0),
            U32 | I32 | F32 => (5, 0, 0),
            U64 | I64 | F64 => (9, 0, 0),
            FixStr(n) => (1, n as usize, 0),
            Str8 | Bin8 => (2, self.len_at(1, 1)?, 0),
            Str16 | Bin16 => (3, self.len_at(1, 2)?, 0),
            Str32 | Bin32 => (5, self.len_at(1, 4)?, 0),
            // marker, type byte, data
            FixExt1 => (2, 1, 0),
            FixExt2 => (2, 2, 0),
            FixExt4 => (2, 4, 0),
            FixExt8 => (2, 8, 0),
            FixExt16 => (2, 16, 0),
            // marker, length, type byte, data
            Ext8 => (3, self.len_at(1, 1)?, 0),
            Ext16 => (4, self.len_at(1, 2)?, 0),
            Ext32 => (6, self.len_at(1, 4)?, 0),
            FixArray(n) => (1, 0, n as usize),
            Array16 => (3, 0, self.len_at(1, 2)?),
            Array32 => (5, 0, self.len_at(1, 4)?),
            FixMap(n) => (1, 0, 2 * n as usize),
            Map16 => (3, 0, 2 * self.len_at(1, 2)?),
            Map32 => (5, 0, self.len_at(1, 4)?.saturating_mul(2)),
            Reserved => {
                return Err(ReadError::Unexpected {
                    expected: "a value",
                    found: "invalid byte",
                })
            }
        };
        self.advance(head)?;
        self.advance(body)?;
        if values > 0 {
            if depth >= MAX_DEPTH {
                return Err(ReadError::TooDeep);
            }
            // each value takes at least one byte: a forged count fails here,
            // before any work
            if values > self.buf.len() {
                return Err(ReadError::Truncated);
            }
            for _ in 0..values {
                self.skip_nested(depth + 1)?;
            }
        }
        Ok(())
    }

    /// Reads an array header and returns the element count. The count is
    /// checked against the bytes left, so a forged header cannot make the
    /// caller allocate more than the message could hold.
    pub fn read_array_len(&mut self) -> Result<usize, ReadError> {
        let mut rd = Bytes::new(self.buf);
        let n = dec::read_array_len(&mut rd).map_err(|e| value_err(e, "array"))? as usize;
        let rest = rd.remaining_slice();
        if n > rest.len() {
            return Err(ReadError::Truncated);
        }
        self.buf = rest;
        Ok(n)
    }

    /// Reads a map header and returns the pair count (checked like arrays).
    pub fn read_map_len(&mut self) -> Result<usize, ReadError> {
        let mut rd = Bytes::new(self.buf);
        let n = dec::read_map_len(&mut rd).map_err(|e| value_err(e, "map"))? as usize;
        let rest = rd.remaining_slice();
        if n.saturating_mul(2) > rest.len() {
            return Err(ReadError::Truncated);
        }
        self.buf = rest;
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

    /// Every value of `bytes`, skipped one by one: how many there were.
    fn skip_all(bytes: &[u8]) -> Result<usize, ReadError> {
        let mut r = Reader::new(bytes);
        let mut n = 0;
        while r.remaining() > 0 {
            r.skip_value()?;
            n += 1;
        }
        Ok(n)
    }

    #[test]
    fn skip_value_steps_over_every_kind() {
        let mut b = BytesMut::new();
        put_nil(&mut b);
        put_bool(&mut b, true);
        for v in [0i64, -1, 200, -200, 70_000, -70_000, 1 << 40, i64::MIN] {
            put_int(&mut b, v);
        }
        put_uint(&mut b, u64::MAX);
        put_f32(&mut b, 1.5);
        put_f64(&mut b, -2.5);
        for n in [0usize, 31, 32, 255, 256, 70_000] {
            put_str(&mut b, &vec![b'x'; n]);
            put_bin(&mut b, &vec![7; n]);
        }
        put_array_len(&mut b, 20);
        for i in 0..20 {
            put_int(&mut b, i);
        }
        put_map_len(&mut b, 2);
        put_str(&mut b, b"k");
        put_array_len(&mut b, 0);
        put_int(&mut b, 1);
        put_map_len(&mut b, 0);
        let ext: &[&[u8]] = &[
            &[0xd4, 1, 0],
            &[0xd5, 1, 0, 0],
            &[0xd6, 1, 0, 0, 0, 0],
            &[0xd7, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0xd8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0xc7, 2, 1, 0, 0],
            &[0xc8, 0, 2, 1, 0, 0],
            &[0xc9, 0, 0, 0, 2, 1, 0, 0],
        ];
        for e in ext {
            b.extend_from_slice(e);
        }
        // the long forms of lengths too: array16, array32, map16, map32,
        // str8 of a short string
        b.extend_from_slice(&[0xdc, 0, 1, 0xc0]);
        b.extend_from_slice(&[0xdd, 0, 0, 0, 1, 0xc0]);
        b.extend_from_slice(&[0xde, 0, 1, 0xc0, 0xc0]);
        b.extend_from_slice(&[0xdf, 0, 0, 0, 1, 0xc0, 0xc0]);
        b.extend_from_slice(&[0xd9, 1, b'a']);
        assert_eq!(skip_all(&b), Ok(2 + 8 + 3 + 12 + 2 + 8 + 5));
    }

    #[test]
    fn skip_value_agrees_with_rmp_serde() {
        use std::collections::BTreeMap;
        let mut m = BTreeMap::new();
        m.insert("a".to_string(), vec![(1u8, -2i64, "x".to_string())]);
        m.insert("b".to_string(), vec![]);
        let v = (m, vec![vec![1.5f64]], Some(true), None::<u8>, vec![1u8, 2, 3]);
        let bytes = rmp_serde::to_vec(&v).unwrap();
        let mut r = Reader::new(&bytes);
        r.skip_value().unwrap();
        r.finish().unwrap();
    }

    #[test]
    fn skip_value_refuses_what_is_not_there() {
        let cases: &[&[u8]] = &[
            &[],
            &[0xcc],
            &[0xcd, 0],
            &[0xcf, 0, 0, 0, 0, 0, 0, 0],
            &[0xa3, b'a', b'b'],
            &[0xd9],
            &[0xd9, 2, b'a'],
            &[0xc4, 1],
            &[0xdb, 0xff, 0xff, 0xff, 0xff, 0],
            &[0x92, 1],
            &[0xdd, 0xff, 0xff, 0xff, 0xff, 1, 2, 3],
            &[0xdf, 0xff, 0xff, 0xff, 0xff, 1, 2, 3],
            &[0x81, 1],
            &[0xd4, 1],
            &[0xc7, 5, 1, 0],
        ];
        for c in cases {
            let mut r = Reader::new(c);
            assert_eq!(r.skip_value(), Err(ReadError::Truncated), "{c:02x?}");
            assert_eq!(r.remaining(), c.len(), "the cursor stays put");
        }
        let mut r = Reader::new(&[0x92, 1, 0xc1]);
        assert!(matches!(r.skip_value(), Err(ReadError::Unexpected { .. })));
        assert_eq!(r.remaining(), 3);
    }

    #[test]
    fn skip_value_limits_nesting() {
        let deep = |levels: usize| {
            let mut b = vec![0x91; levels];
            b.push(0x01);
            b
        };
        let ok = deep(MAX_DEPTH);
        let mut r = Reader::new(&ok);
        r.skip_value().unwrap();
        r.finish().unwrap();
        let mut r = Reader::new(&[0x91; MAX_DEPTH][..]);
        assert_eq!(r.skip_value(), Err(ReadError::Truncated));
        let too = deep(MAX_DEPTH + 1);
        assert_eq!(Reader::new(&too).skip_value(), Err(ReadError::TooDeep));
        // maps count as a level too
        let mut maps = Vec::new();
        for _ in 0..=MAX_DEPTH {
            maps.extend_from_slice(&[0x81, 0x01]);
        }
        maps.push(0x01);
        assert_eq!(Reader::new(&maps).skip_value(), Err(ReadError::TooDeep));
    }

    #[test]
    fn str_and_bin_are_told_apart() {
        let mut b = BytesMut::new();
        put_str(&mut b, b"s");
        put_bin(&mut b, b"b");
        let mut r = Reader::new(&b);
        assert!(matches!(
            r.read_bin(),
            Err(ReadError::Unexpected { expected: "binary", .. })
        ));
        assert_eq!(r.read_str().unwrap(), b"s");
        assert!(matches!(
            r.read_str(),
            Err(ReadError::Unexpected { expected: "string", .. })
        ));
        assert_eq!(r.rest(), &[0xc4, 1, b'b']);
        assert_eq!(r.read_bin().unwrap(), b"b");
        r.finish().unwrap();
    }
}
