//! Values as bytes: MessagePack, with nesting bounded, and byte strings
//! without a copy.

use super::*;

/// Encodes a value as MessagePack (into one buffer sized for its strings
/// and byte strings, backed by huge pages when they are big).
pub fn encode(v: &Value) -> Vec<u8> {
    let mut buf = huge::buffer(payload_bytes(v) as u64 + 16).unwrap_or_default();
    rmpv::encode::write_value(&mut buf, v).expect("writing to a Vec cannot fail");
    buf
}

/// Decodes exactly one MessagePack value, rejecting trailing bytes and
/// nesting deeper than [`MAX_DECODE_DEPTH`]; safe on hostile input.
pub fn decode(bytes: &[u8]) -> Result<Value, ConvertError> {
    let mut rest = bytes;
    // rmpv's depth budget bounds its recursion, but it spends two units per
    // level of nesting (the value and the container's body) and more on
    // leaves; give it room for MAX_DECODE_DEPTH levels, then count exactly.
    let v = rmpv::decode::read_value_with_max_depth(&mut rest, 2 * MAX_DECODE_DEPTH + 5).map_err(
        |e| match e {
            rmpv::decode::Error::DepthLimitExceeded => too_deep(),
            e => ConvertError::new(format!("invalid MessagePack: {e}")),
        },
    )?;
    if !rest.is_empty() {
        return Err(ConvertError::new(format!(
            "invalid MessagePack: {} after the value",
            plural(rest.len(), "trailing byte")
        )));
    }
    if nesting(&v) > MAX_DECODE_DEPTH {
        return Err(too_deep());
    }
    Ok(v)
}

pub(super) fn too_deep() -> ConvertError {
    ConvertError::new(format!(
        "invalid MessagePack: arrays and maps nested more than {MAX_DECODE_DEPTH} deep"
    ))
}

/// How many arrays and maps are nested in `v` at its deepest.
pub fn nesting(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| nesting(k).max(nesting(v)))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

/// The bytes held by a value's strings and byte strings, nested ones
/// included: what copying it into a guest needs at least.
pub fn payload_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.as_bytes().len(),
        Value::Binary(b) => b.len(),
        Value::Ext(_, b) => b.len(),
        Value::Array(items) => items.iter().map(payload_bytes).sum(),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| payload_bytes(k) + payload_bytes(v))
            .sum(),
        Value::Nil | Value::Boolean(_) | Value::Integer(_) | Value::F32(_) | Value::F64(_) => 0,
    }
}

/// The MessagePack encoding of the byte string `b` (as `encode` of
/// `Value::Binary` gives), built with one copy of `b`.
pub fn encode_binary(b: &[u8]) -> bytes::Bytes {
    let mut out = huge::buffer(b.len() as u64 + 5).unwrap_or_default();
    push_binary_header(&mut out, b.len() as u32);
    out.extend_from_slice(b);
    out.into()
}

/// Appends the header [`encode_binary`] gives a byte string of `len` bytes
/// (the shortest).
pub fn push_binary_header(out: &mut Vec<u8>, len: u32) {
    push_sized(out, len, [0xc4, 0xc5, 0xc6]);
}

/// Appends the MessagePack header of a string of `len` bytes, the shortest
/// that holds it (as encoding a string value writes it).
pub fn push_str_header(out: &mut Vec<u8>, len: u32) {
    match len {
        n if n < 32 => out.push(0xa0 | n as u8),
        n => push_sized(out, n, [0xd9, 0xda, 0xdb]),
    }
}

/// Appends the shortest of the headers `tags` (the 8-, 16- and 32-bit
/// length forms of a byte string or string) for `len` bytes.
fn push_sized(out: &mut Vec<u8>, len: u32, [tag8, tag16, tag32]: [u8; 3]) {
    match len {
        n if n < 1 << 8 => out.extend_from_slice(&[tag8, n as u8]),
        n if n < 1 << 16 => {
            out.push(tag16);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(tag32);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// The big-endian unsigned integer `bytes` hold (at most 8 of them).
fn be_uint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |n, &b| n << 8 | u64::from(b))
}

/// Room for a `bin 32` header, the one a byte string of 64 KiB or more
/// takes: a buffer that starts with this much room and goes on with a
/// byte string becomes its encoding with [`finish_binary`].
pub const BIN32_ROOM: usize = 5;

/// The `bin 32` header of a byte string of `len` bytes.
pub fn bin32_header(len: u32) -> [u8; BIN32_ROOM] {
    let mut h = [0xc6, 0, 0, 0, 0];
    h[1..].copy_from_slice(&len.to_be_bytes());
    h
}

/// `buf`, [`BIN32_ROOM`] bytes of room and then a byte string, made that
/// byte string's encoding as [`encode_binary`] gives it: the header filled
/// in place, or, under 64 KiB (where the header is shorter), encoded again
/// (a small copy). Over 4 GiB it is an error.
pub fn finish_binary(mut buf: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let n = (buf.len() - BIN32_ROOM) as u64;
    let n = fits_in_a_value(n)?;
    if n < 1 << 16 {
        return Ok(encode_binary(&buf[BIN32_ROOM..]).to_vec());
    }
    buf[..BIN32_ROOM].copy_from_slice(&bin32_header(n));
    Ok(buf)
}

/// `len` as the length of a byte string, or why no value holds it.
pub fn fits_in_a_value(len: u64) -> std::io::Result<u32> {
    u32::try_from(len).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is more than a value can hold (4 GiB)", human_bytes(len)),
        )
    })
}

/// Reads all of `r` as the MessagePack encoding of one byte string (as
/// [`encode_binary`] of the same bytes gives), the bytes landing in the
/// encoding's own buffer: one copy where reading and then encoding took
/// two. `expected` sizes the buffer (a file's length; 0 when unknown).
pub fn read_binary(r: &mut impl std::io::Read, expected: u64) -> std::io::Result<Vec<u8>> {
    let room = BIN32_ROOM as u64 + 1;
    let mut out = huge::buffer(expected.saturating_add(room)).map_err(std::io::Error::other)?;
    out.resize(BIN32_ROOM, 0);
    r.read_to_end(&mut out)?;
    finish_binary(out)
}

/// What the first bytes of a value's MessagePack encoding say about it,
/// for writing it raw without decoding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// A byte string (`text` false) or a string: `len` bytes of payload
    /// follow `at` bytes of header.
    Payload {
        /// Header bytes.
        at: usize,
        /// Payload bytes.
        len: u64,
        /// A string rather than a byte string.
        text: bool,
    },
    /// Any other value.
    Other,
    /// Too few bytes to tell.
    Short,
}

/// Reads [`Head`] off the first bytes of an encoded value (5 are always
/// enough).
pub fn head(first: &[u8]) -> Head {
    let Some(&tag) = first.first() else {
        return Head::Short;
    };
    let (width, text) = match tag {
        0xa0..=0xbf => {
            let len = u64::from(tag & 0x1f);
            return Head::Payload {
                at: 1,
                len,
                text: true,
            };
        }
        0xc4 => (1, false),
        0xc5 => (2, false),
        0xc6 => (4, false),
        0xd9 => (1, true),
        0xda => (2, true),
        0xdb => (4, true),
        _ => return Head::Other,
    };
    let Some(be) = first.get(1..1 + width) else {
        return Head::Short;
    };
    let len = be_uint(be);
    Head::Payload {
        at: 1 + width,
        len,
        text,
    }
}

/// The count of elements of an array whose encoding begins `first`, and
/// where they begin; `None` if it is not an array (or too little of it is
/// there to tell).
pub fn array_head(first: &[u8]) -> Option<(u64, usize)> {
    let (&tag, rest) = first.split_first()?;
    let width = match tag {
        0x90..=0x9f => return Some((u64::from(tag & 0x0f), 1)),
        0xdc => 2,
        0xdd => 4,
        _ => return None,
    };
    Some((be_uint(rest.get(..width)?), 1 + width))
}

/// How many bytes the first MessagePack value in `bytes` takes, found
/// without decoding it (nesting walked with a count per level, never
/// recursion); `None` if `bytes` ends before it does. An error for a byte
/// that begins no value.
pub fn encoded_len(bytes: &[u8]) -> Result<Option<usize>, ConvertError> {
    Ok(measure(bytes)?.map(|(len, _)| len))
}

/// [`encoded_len`], and how many arrays and maps are nested in the value
/// at its deepest (as [`nesting`] counts them).
pub fn measure(bytes: &[u8]) -> Result<Option<(usize, usize)>, ConvertError> {
    let mut deepest = 0;
    // Values still to be read at each open level (the outermost is the one
    // value asked for).
    let mut levels: Vec<u64> = vec![1];
    let mut at = 0usize;
    let int = |at: usize, width: usize| bytes.get(at..at.checked_add(width)?).map(be_uint);
    while let Some(left) = levels.last_mut() {
        if *left == 0 {
            levels.pop();
            continue;
        }
        *left -= 1;
        let Some(&tag) = bytes.get(at) else {
            return Ok(None);
        };
        at += 1;
        // A body of `extra` bytes and the `width`-byte length that begins
        // it; an array's or map's `width`-byte count, `per` values an entry.
        let body = |width: usize, extra: u64| int(at, width).map(|n| (extra + n, 0));
        let counted = |width: usize, per: u64| int(at, width).map(|n| (width as u64, per * n));
        // (bytes after the tag, values nested in it), if enough is there.
        let head = match tag {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Some((0, 0)),
            0x80..=0x8f => Some((0, 2 * u64::from(tag & 0x0f))),
            0x90..=0x9f => Some((0, u64::from(tag & 0x0f))),
            0xa0..=0xbf => Some((u64::from(tag & 0x1f), 0)),
            0xcc | 0xd0 => Some((1, 0)),
            0xcd | 0xd1 => Some((2, 0)),
            0xca | 0xce | 0xd2 => Some((4, 0)),
            0xcb | 0xcf | 0xd3 => Some((8, 0)),
            0xd4..=0xd8 => Some((1 + (1u64 << (tag - 0xd4)), 0)),
            0xc4 | 0xd9 => body(1, 1),
            0xc5 | 0xda => body(2, 2),
            0xc6 | 0xdb => body(4, 4),
            0xc7 => body(1, 2),
            0xc8 => body(2, 3),
            0xc9 => body(4, 5),
            0xdc => counted(2, 1),
            0xdd => counted(4, 1),
            0xde => counted(2, 2),
            0xdf => counted(4, 2),
            0xc1 => {
                return Err(ConvertError::new(
                    "invalid MessagePack: 0xc1 begins no value",
                ));
            }
        };
        let Some((skip, elements)) = head else {
            return Ok(None);
        };
        if matches!(tag, 0x80..=0x9f | 0xdc..=0xdf) {
            // An array or map, empty ones too, at this level.
            deepest = deepest.max(levels.len());
        }
        at = match usize::try_from(skip).ok().and_then(|s| at.checked_add(s)) {
            Some(end) if end <= bytes.len() => end,
            _ => return Ok(None),
        };
        if elements > 0 {
            if levels.len() > MAX_DECODE_DEPTH + 1 {
                return Err(too_deep());
            }
            levels.push(elements);
        }
    }
    Ok(Some((at, deepest)))
}

/// The payload of MessagePack `bytes` that encode one byte string (`bin`)
/// and nothing else, found without decoding or copying it.
pub fn binary_payload(bytes: &[u8]) -> Option<&[u8]> {
    match head(bytes) {
        Head::Payload {
            at,
            len,
            text: false,
        } if (bytes.len() - at) as u64 == len => Some(&bytes[at..]),
        _ => None,
    }
}
