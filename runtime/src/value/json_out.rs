//! A value's JSON written straight from its MessagePack encoding, never
//! decoded whole: what printing a big result costs is the encoding it reads
//! (which may be a file mapped into memory) and a few words per entry of
//! the map being written, not three copies of the value.

use super::*;
use std::io::Write;
use std::ops::Range;

/// Bytes of a byte string base64-encoded at a time (a multiple of 3, so
/// the pieces join into the encoding of the whole).
const BASE64_STEP: usize = 48 << 10;

/// Why [`write_json`] stopped.
#[derive(Debug)]
pub enum WriteJsonError {
    /// The bytes are not one valid MessagePack value (found before anything
    /// was written).
    Invalid(ConvertError),
    /// Writing the output failed.
    Io(std::io::Error),
}

impl std::fmt::Display for WriteJsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteJsonError::Invalid(e) => e.fmt(f),
            WriteJsonError::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for WriteJsonError {}

impl From<std::io::Error> for WriteJsonError {
    fn from(e: std::io::Error) -> Self {
        WriteJsonError::Io(e)
    }
}

/// Writes the JSON of the value MessagePack `bytes` encode to `out`: the
/// same bytes as `value_to_json(&decode(bytes)?).to_string()`, but read
/// from the encoding as it is written. The bytes are checked first
/// ([`check_one_value`]), so an invalid value writes nothing. Memory
/// beyond `bytes` is a stack of the containers open at once and, for a
/// map whose keys are all strings, where its entries are (3 words each),
/// as an object's keys are written sorted, as `value_to_json` orders them.
pub fn write_json(bytes: &[u8], out: &mut impl Write) -> Result<(), WriteJsonError> {
    let checked = check_one_value(bytes).map_err(WriteJsonError::Invalid)?;
    Ok(write_checked_json(checked, out)?)
}

/// Bytes [`check_one_value`] found to be one valid value, to write with
/// [`write_checked_json`].
#[derive(Clone, Copy, Debug)]
pub struct Checked<'a>(&'a [u8]);

/// That `bytes` encode one value and nothing more, nested no deeper than
/// [`MAX_DECODE_DEPTH`] (what [`write_json`] checks first).
pub fn check_one_value(bytes: &[u8]) -> Result<Checked<'_>, ConvertError> {
    match measure(bytes)? {
        Some((_, deepest)) if deepest > MAX_DECODE_DEPTH => Err(too_deep()),
        Some((n, _)) if n == bytes.len() => Ok(Checked(bytes)),
        Some((n, _)) => Err(ConvertError::new(format!(
            "invalid MessagePack: {} after the value",
            plural(bytes.len() - n, "trailing byte")
        ))),
        None => Err(ConvertError::new(
            "invalid MessagePack: the value ends early",
        )),
    }
}

/// [`write_json`] of bytes already checked.
pub fn write_checked_json(checked: Checked<'_>, out: &mut impl Write) -> std::io::Result<()> {
    let bytes = checked.0;
    let mut open: Vec<Open> = Vec::new();
    let mut step = Step::Value(0);
    loop {
        match step {
            Step::Value(at) => {
                if let Some(container) = write_value(bytes, at, out)? {
                    open.push(container);
                }
            }
            Step::Open(container) => open.push(container),
            Step::Close => {
                open.pop();
            }
        }
        let Some(top) = open.last_mut() else {
            return Ok(());
        };
        step = top.next(bytes, out)?;
    }
}

/// What [`write_checked_json`] does next.
enum Step {
    /// Writes the value that begins here.
    Value(usize),
    /// Goes into a container whose opening bracket is written.
    Open(Open),
    /// Leaves the innermost container, whose closing bracket is written.
    Close,
}

/// A container being written.
enum Open {
    /// An array's elements, or (`pairs`) a map's entries written as an
    /// array of `[key, value]` pairs, read one after another from `at`.
    Seq {
        left: u64,
        at: usize,
        first: bool,
        pairs: bool,
    },
    /// A map written as an object: each member's key (its UTF-8) and where
    /// its value begins, sorted by key, and the next to write.
    Members {
        members: Vec<(Range<usize>, usize)>,
        next: usize,
    },
    /// One `[key, value]` pair: the values still to write.
    Pair {
        key: Option<usize>,
        value: Option<usize>,
    },
}

impl Open {
    /// Writes what goes between the last value of this container and the
    /// next, and says what comes next.
    fn next(&mut self, bytes: &[u8], out: &mut impl Write) -> std::io::Result<Step> {
        match self {
            Open::Seq {
                left,
                at,
                first,
                pairs,
            } => {
                if *left == 0 {
                    out.write_all(b"]")?;
                    return Ok(Step::Close);
                }
                if !std::mem::take(first) {
                    out.write_all(b",")?;
                }
                *left -= 1;
                let begins = *at;
                *at += skip(bytes, begins);
                if !*pairs {
                    return Ok(Step::Value(begins));
                }
                // A pair: its key began here, its value follows.
                let value = *at;
                *at += skip(bytes, value);
                out.write_all(b"[")?;
                Ok(Step::Open(Open::Pair {
                    key: Some(begins),
                    value: Some(value),
                }))
            }
            Open::Members { members, next } => {
                let Some((key, value)) = members.get(*next) else {
                    out.write_all(b"}")?;
                    return Ok(Step::Close);
                };
                if *next > 0 {
                    out.write_all(b",")?;
                }
                *next += 1;
                // Checked to be UTF-8 as the members were listed.
                let key = std::str::from_utf8(&bytes[key.clone()]).unwrap_or_default();
                serde_json::to_writer(&mut *out, key)?;
                out.write_all(b":")?;
                Ok(Step::Value(*value))
            }
            Open::Pair { key, value } => {
                if let Some(k) = key.take() {
                    return Ok(Step::Value(k));
                }
                if let Some(v) = value.take() {
                    out.write_all(b",")?;
                    return Ok(Step::Value(v));
                }
                out.write_all(b"]")?;
                Ok(Step::Close)
            }
        }
    }
}

/// How many bytes the (checked) value at `at` takes.
fn skip(bytes: &[u8], at: usize) -> usize {
    encoded_len(&bytes[at..]).ok().flatten().unwrap_or(0)
}

/// The big-endian unsigned integer of `width` bytes at `at`.
fn uint(bytes: &[u8], at: usize, width: usize) -> u64 {
    bytes[at..at + width]
        .iter()
        .fold(0u64, |n, &b| n << 8 | u64::from(b))
}

/// Writes the (checked) value at `at`: a scalar, string or byte string
/// whole, or a container's opening bracket, handing back the container to
/// write the rest of.
fn write_value(bytes: &[u8], at: usize, out: &mut impl Write) -> std::io::Result<Option<Open>> {
    let tag = bytes[at];
    let body = at + 1;
    // A string's, byte string's or extension's payload: `width` bytes of
    // length after the tag (and after that, for an extension, its type).
    let sized = |width: usize, ext: bool| {
        let len = uint(bytes, body, width) as usize;
        let from = body + width + usize::from(ext);
        (from, len)
    };
    match tag {
        0x00..=0x7f => write!(out, "{tag}")?,
        0xe0..=0xff => write!(out, "{}", tag as i8)?,
        0xc0 => out.write_all(b"null")?,
        0xc2 => out.write_all(b"false")?,
        0xc3 => out.write_all(b"true")?,
        0xcc..=0xcf => write!(out, "{}", uint(bytes, body, 1 << (tag - 0xcc)))?,
        0xd0..=0xd3 => {
            let width = 1 << (tag - 0xd0);
            let raw = uint(bytes, body, width);
            // Sign-extended from its width.
            let shift = 64 - 8 * width as u32;
            write!(out, "{}", ((raw << shift) as i64) >> shift)?
        }
        0xca => {
            let x = f32::from_bits(uint(bytes, body, 4) as u32);
            write_float(x.to_string().parse().unwrap_or(f64::NAN), out)?
        }
        0xcb => write_float(f64::from_bits(uint(bytes, body, 8)), out)?,
        0xa0..=0xbf => write_text(&bytes[body..body + usize::from(tag & 0x1f)], out)?,
        0xd9..=0xdb => {
            let (from, len) = sized(1 << (tag - 0xd9), false);
            write_text(&bytes[from..from + len], out)?
        }
        0xc4..=0xc6 => {
            let (from, len) = sized(1 << (tag - 0xc4), false);
            out.write_all(br#"{"$bytes":"#)?;
            write_base64(&bytes[from..from + len], out)?;
            out.write_all(b"}")?
        }
        0xc7..=0xc9 | 0xd4..=0xd8 => {
            let (kind_at, len) = match tag {
                0xd4..=0xd8 => (body, 1usize << (tag - 0xd4)),
                _ => {
                    let (from, len) = sized(1 << (tag - 0xc7), true);
                    (from - 1, len)
                }
            };
            write!(out, r#"{{"$ext":[{},"#, bytes[kind_at] as i8)?;
            write_base64(&bytes[kind_at + 1..kind_at + 1 + len], out)?;
            out.write_all(b"]}")?
        }
        0x90..=0x9f | 0xdc | 0xdd => {
            let (left, head) = array_head(&bytes[at..]).unwrap_or((0, 1));
            out.write_all(b"[")?;
            return Ok(Some(Open::Seq {
                left,
                at: at + head,
                first: true,
                pairs: false,
            }));
        }
        0x80..=0x8f | 0xde | 0xdf => {
            let (count, head) = match tag {
                0x80..=0x8f => (u64::from(tag & 0x0f), 1),
                0xde => (uint(bytes, body, 2), 3),
                _ => (uint(bytes, body, 4), 5),
            };
            return Ok(Some(open_map(bytes, at + head, count, out)?));
        }
        // 0xc1 begins no value: `check_one_value` refused it.
        0xc1 => {}
    }
    Ok(None)
}

/// Writes the opening bracket of the map of `count` entries whose first
/// key begins at `at` and hands it back: an object whose keys are sorted,
/// the last of equal keys kept, when every key is a UTF-8 string (as
/// `value_to_json` writes it), or else an array of `[key, value]` pairs in
/// their order.
fn open_map(bytes: &[u8], at: usize, count: u64, out: &mut impl Write) -> std::io::Result<Open> {
    // Each entry takes 2 bytes at least, so the count of a checked map
    // bounds nothing the bytes do not.
    let mut members = Vec::with_capacity(count.min(bytes.len() as u64 / 2) as usize);
    let mut next = at;
    for _ in 0..count {
        let text =
            text_range(bytes, next).filter(|r| std::str::from_utf8(&bytes[r.clone()]).is_ok());
        let Some(text) = text else {
            out.write_all(b"[")?;
            return Ok(Open::Seq {
                left: count,
                at,
                first: true,
                pairs: true,
            });
        };
        let value = next + skip(bytes, next);
        members.push((text, value));
        next = value + skip(bytes, value);
    }
    // Stable, so that of equal keys the last stays last; that one is kept.
    members.sort_by(|(a, _), (b, _)| bytes[a.clone()].cmp(&bytes[b.clone()]));
    let mut kept = 0;
    for i in 0..members.len() {
        if kept > 0 && bytes[members[kept - 1].0.clone()] == bytes[members[i].0.clone()] {
            members[kept - 1].1 = members[i].1;
        } else {
            members.swap(kept, i);
            kept += 1;
        }
    }
    members.truncate(kept);
    out.write_all(b"{")?;
    Ok(Open::Members { members, next: 0 })
}

/// The payload of the string that begins at `at`, if it is one.
fn text_range(bytes: &[u8], at: usize) -> Option<Range<usize>> {
    match head(&bytes[at..]) {
        Head::Payload {
            at: header,
            len,
            text: true,
        } => Some(at + header..at + header + len as usize),
        _ => None,
    }
}

/// A string's UTF-8 as a JSON string (invalid sequences replaced, as
/// `value_to_json` does).
fn write_text(text: &[u8], out: &mut impl Write) -> std::io::Result<()> {
    let text = String::from_utf8_lossy(text);
    serde_json::to_writer(out, &*text).map_err(std::io::Error::from)
}

/// A float as `value_to_json` writes it.
fn write_float(x: f64, out: &mut impl Write) -> std::io::Result<()> {
    serde_json::to_writer(out, &float_json(x)).map_err(std::io::Error::from)
}

/// `payload` base64-encoded inside quotes, a piece at a time.
fn write_base64(payload: &[u8], out: &mut impl Write) -> std::io::Result<()> {
    out.write_all(b"\"")?;
    let mut buf = String::with_capacity(BASE64_STEP / 3 * 4 + 4);
    for piece in payload.chunks(BASE64_STEP) {
        buf.clear();
        BASE64.encode_string(piece, &mut buf);
        out.write_all(buf.as_bytes())?;
    }
    out.write_all(b"\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `value_to_json` writes for `v`.
    fn expected(v: &Value) -> String {
        value_to_json(v).to_string()
    }

    /// What `write_json` writes for `v`'s encoding.
    fn written(v: &Value) -> String {
        written_from(&encode(v))
    }

    /// What `write_json` writes for `encoded`.
    fn written_from(encoded: &[u8]) -> String {
        let mut out = Vec::new();
        write_json(encoded, &mut out).expect("a valid value");
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    /// The encoding of a string of `bytes`, UTF-8 or not.
    fn string_of(bytes: &[u8]) -> Vec<u8> {
        let mut encoded = vec![0xa0 | bytes.len() as u8];
        encoded.extend_from_slice(bytes);
        encoded
    }

    fn map(entries: Vec<(Value, Value)>) -> Value {
        Value::Map(entries)
    }

    #[test]
    fn writes_what_value_to_json_gives_for_every_kind() {
        let big = (0..200_000u32).map(|i| (i * 7) as u8).collect::<Vec<u8>>();
        let values = vec![
            Value::Nil,
            Value::from(true),
            Value::from(false),
            Value::from(0),
            Value::from(127),
            Value::from(128),
            Value::from(-1),
            Value::from(-33),
            Value::from(-129),
            Value::from(i64::MIN),
            Value::from(u64::MAX),
            Value::from(i32::MIN),
            Value::F32(0.1),
            Value::F32(f32::NAN),
            Value::F64(1e300),
            Value::F64(-0.0),
            Value::F64(f64::INFINITY),
            Value::F64(f64::NEG_INFINITY),
            Value::from(""),
            Value::from("a \"quoted\" line\nwith \u{1} and ünïcode"),
            Value::from("x".repeat(70_000)),
            Value::Binary(Vec::new()),
            Value::Binary(vec![1, 2]),
            Value::Binary(big.clone()),
            Value::Ext(-3, vec![9; 4]),
            Value::Ext(5, vec![1; 3]),
            Value::Ext(7, vec![2; 300]),
            Value::Array(Vec::new()),
            Value::Array(vec![Value::from(1), Value::Array(vec![]), Value::Nil]),
            map(Vec::new()),
            // Sorted, the last of equal keys kept.
            map(vec![
                (Value::from("b"), Value::from(1)),
                (Value::from("a"), Value::from(2)),
                (Value::from("b"), Value::from(3)),
                (Value::from("ab"), Value::Binary(big)),
            ]),
            // A key that is not a string (or not UTF-8): pairs, in order.
            map(vec![
                (Value::from("z"), Value::from(1)),
                (Value::from(2), Value::from("two")),
                (Value::from("z"), Value::from(3)),
            ]),
            map(vec![(
                Value::Array(vec![Value::from(1)]),
                map(vec![(Value::from("ok"), Value::from("x".repeat(40)))]),
            )]),
            map(vec![(
                Value::from("ok"),
                Value::Array((0..70_000).map(Value::from).collect()),
            )]),
        ];
        for v in &values {
            assert_eq!(written(v), expected(v), "{v:?}");
        }
        // Strings that are not UTF-8, alone and as a key (which makes the
        // map pairs), as a worker could encode them.
        let text = string_of(&[0x61, 0xff, 0x62]);
        let keyed = [
            &[0x82][..],
            &string_of(&[0xc3]),
            &[0x01],
            &string_of(b"k"),
            &[0x02],
        ]
        .concat();
        for encoded in [text, keyed] {
            let decoded = decode(&encoded).expect("valid MessagePack");
            assert_eq!(written_from(&encoded), expected(&decoded), "{decoded:?}");
        }
    }

    proptest! {
        #[test]
        fn writes_what_value_to_json_gives(v in crate::fuzz::any_value()) {
            prop_assert_eq!(written(&v), expected(&v));
        }
    }

    #[test]
    fn invalid_bytes_write_nothing_and_say_why() {
        let whole = encode(&Value::Array(vec![Value::from("abc"), Value::from(1)]));
        for bad in [
            &whole[..whole.len() - 1],
            &[&whole[..], &[0xc0u8][..]].concat()[..],
            &[0xc1][..],
            &[][..],
        ] {
            let mut out = Vec::new();
            let e = write_json(bad, &mut out).expect_err("invalid");
            assert!(matches!(e, WriteJsonError::Invalid(_)), "{e}");
            assert!(out.is_empty(), "nothing written for {bad:?}");
            if bad != [0xc1] {
                assert!(decode(bad).is_err(), "decode refuses {bad:?} too");
            }
        }
        // Nesting: as deep as decode accepts, and one deeper.
        let nested = |depth: usize| {
            let mut v = Value::Array(Vec::new());
            for _ in 1..depth {
                v = Value::Array(vec![v]);
            }
            encode(&v)
        };
        let ok = nested(MAX_DECODE_DEPTH);
        assert!(decode(&ok).is_ok());
        let mut out = Vec::new();
        write_json(&ok, &mut out).expect("as deep as decode accepts");
        let deep = nested(MAX_DECODE_DEPTH + 1);
        assert!(decode(&deep).is_err());
        assert!(write_json(&deep, &mut Vec::new()).is_err());
    }
}
