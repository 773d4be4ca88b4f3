//! Protobuf's wire format as prost reads it, over a borrowed buffer: keys,
//! varints, length-delimited slices and the skipping of unknown fields
//! (groups included, with prost's recursion limit).

use super::WireError;

type Result<T> = std::result::Result<T, WireError>;

pub(super) const VARINT: u8 = 0;
pub(super) const FIXED64: u8 = 1;
pub(super) const LEN: u8 = 2;
pub(super) const START_GROUP: u8 = 3;
pub(super) const END_GROUP: u8 = 4;
pub(super) const FIXED32: u8 = 5;

/// How deep prost lets a decode nest (its `RECURSION_LIMIT`): the fields
/// of the top-level message are skipped with this budget, each message or
/// group level below takes one, and skipping any field with none left is
/// refused — so 100 groups around a varint are refused, as prost does.
pub(super) const RECURSION_LIMIT: u32 = 100;

/// A read position in one message.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    #[inline]
    pub(super) fn varint(&mut self) -> Result<u64> {
        // Tags and lengths in these messages are almost always one byte.
        if let Some((&b, rest)) = self.buf.split_first()
            && b < 0x80
        {
            self.buf = rest;
            return Ok(u64::from(b));
        }
        self.varint_slow()
    }

    fn varint_slow(&mut self) -> Result<u64> {
        let buf = self.buf;
        let mut value = 0u64;
        let mut i = 0;
        while i < buf.len().min(10) {
            let b = buf[i];
            value |= u64::from(b & 0x7f) << (7 * i);
            i += 1;
            if b < 0x80 {
                // The tenth byte may only carry the top bit of a u64.
                if i == 10 && b > 1 {
                    break;
                }
                self.buf = &buf[i..];
                return Ok(value);
            }
        }
        Err(WireError("invalid varint"))
    }

    /// A field key: (tag, wire type).
    #[inline]
    pub(super) fn key(&mut self) -> Result<(u32, u8)> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(WireError("invalid key value"));
        }
        let wire_type = (key & 7) as u8;
        if wire_type > FIXED32 {
            return Err(WireError("invalid wire type value"));
        }
        let tag = (key >> 3) as u32;
        if tag == 0 {
            return Err(WireError("invalid tag value: 0"));
        }
        Ok((tag, wire_type))
    }

    /// A length-delimited field's bytes, borrowed.
    #[inline]
    pub(super) fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.varint()?;
        if len > self.buf.len() as u64 {
            return Err(WireError("buffer underflow"));
        }
        let (value, rest) = self.buf.split_at(len as usize);
        self.buf = rest;
        Ok(value)
    }

    /// A string field, borrowed; UTF-8 checked.
    #[inline]
    pub(super) fn string(&mut self) -> Result<&'a str> {
        let bytes = self.bytes()?;
        // Checked like prost checks it: request bytes are untrusted, and
        // `from_utf8` already runs ASCII a word at a time.
        std::str::from_utf8(bytes)
            .map_err(|_| WireError("invalid string value: data is not UTF-8 encoded"))
    }

    #[inline]
    pub(super) fn fixed64(&mut self) -> Result<u64> {
        match self.buf.split_first_chunk::<8>() {
            Some((v, rest)) => {
                self.buf = rest;
                Ok(u64::from_le_bytes(*v))
            }
            None => Err(WireError("buffer underflow")),
        }
    }

    /// Refuses a known field sent with another wire type (as prost does,
    /// packed encodings of a singular scalar included).
    #[inline]
    pub(super) fn expect(wire_type: u8, expected: u8) -> Result<()> {
        if wire_type == expected {
            Ok(())
        } else {
            Err(WireError("invalid wire type"))
        }
    }

    /// Skips an unknown field with `depth` levels of nesting left, the way
    /// prost's `skip_field` does: no level left refuses any field.
    pub(super) fn skip(&mut self, tag: u32, wire_type: u8, depth: u32) -> Result<()> {
        if depth == 0 {
            return Err(WireError("recursion limit reached"));
        }
        match wire_type {
            VARINT => {
                self.varint()?;
            }
            FIXED64 => {
                self.fixed64()?;
            }
            LEN => {
                self.bytes()?;
            }
            FIXED32 => {
                if self.buf.len() < 4 {
                    return Err(WireError("buffer underflow"));
                }
                self.buf = &self.buf[4..];
            }
            START_GROUP => loop {
                if self.is_empty() {
                    return Err(WireError("buffer underflow"));
                }
                let (t, w) = self.key()?;
                if w == END_GROUP {
                    if t != tag {
                        return Err(WireError("unexpected end group tag"));
                    }
                    break;
                }
                self.skip(t, w, depth - 1)?;
            },
            _ => return Err(WireError("unexpected end group tag")),
        }
        Ok(())
    }
}
