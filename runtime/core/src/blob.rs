//! Out-of-band bytes: big byte strings in protocol messages (values, modules,
//! published messages) travel after the encoded messages of a frame instead
//! of inside the encoding, so a sender never copies them into an encoding
//! buffer and a receiver hands out big ones as slices of the frame it read.
//!
//! A frame on an established connection is laid out as
//!
//! ```text
//! u32 frame length (big-endian, read by the length-delimited codec)
//! u32 header length (big-endian)
//! header: the postcard encoding of the batch of messages
//! tail: the out-of-band byte strings, back to back, in encoding order
//! ```
//!
//! A field marked `#[serde(with = "crate::blob")]` (or one of the sibling
//! modules for `Option`, `Vec` and pairs) encodes as `Inline(bytes)` or, at
//! [`OUT_OF_BAND`] bytes and more while a frame is being encoded,
//! `Tail(len)`. Decoding takes tails in order and checks every length
//! against the frame: a hostile frame is an error, never a panic or an
//! allocation of what it claims.

use bytes::Bytes;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;

/// Byte strings this long or longer go to the frame's tail.
pub const OUT_OF_BAND: usize = 64 << 10;

/// Tails this long or longer are handed out as slices of the frame (which
/// they keep alive); shorter ones are copied so that a small value kept for
/// long does not pin a large frame.
const SLICE_AT: usize = 1 << 20;

thread_local! {
    /// Tails set aside by the frame being encoded on this thread.
    static SENDING: RefCell<Option<Vec<Bytes>>> = const { RefCell::new(None) };
    /// The frame being decoded on this thread and the next tail's offset.
    static RECEIVING: RefCell<Option<(Bytes, usize)>> = const { RefCell::new(None) };
}

/// The wire form of one byte string (encoding side).
#[derive(Serialize)]
enum Out<'a> {
    Inline(#[serde(with = "serde_bytes")] &'a [u8]),
    Tail(u64),
}

/// The wire form of one byte string (decoding side; same variant order).
#[derive(Deserialize)]
enum In {
    Inline(serde_bytes::ByteBuf),
    Tail(u64),
}

/// Serializes `b` inline, or to the tail of the frame being encoded.
pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    let tail = b.len() >= OUT_OF_BAND
        && SENDING.with(|t| match t.borrow_mut().as_mut() {
            Some(tails) => {
                tails.push(b.clone());
                true
            }
            None => false,
        });
    if tail {
        Out::Tail(b.len() as u64).serialize(s)
    } else {
        Out::Inline(b).serialize(s)
    }
}

/// Deserializes a byte string written by [`serialize`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    match In::deserialize(d)? {
        In::Inline(b) => Ok(Bytes::from(b.into_vec())),
        In::Tail(len) => RECEIVING.with(|r| {
            let mut r = r.borrow_mut();
            let Some((frame, at)) = r.as_mut() else {
                return Err(D::Error::custom("out-of-band bytes outside a frame"));
            };
            let end = usize::try_from(len)
                .ok()
                .and_then(|len| at.checked_add(len))
                .filter(|&end| end <= frame.len())
                .ok_or_else(|| D::Error::custom("out-of-band bytes past the end of the frame"))?;
            let b = if end - *at >= SLICE_AT {
                frame.slice(*at..end)
            } else {
                Bytes::copy_from_slice(&frame[*at..end])
            };
            *at = end;
            Ok(b)
        }),
    }
}

/// `#[serde(with)]` for `Option<Bytes>`.
pub mod opt {
    use super::*;

    #[derive(Serialize)]
    struct Ref<'a>(#[serde(with = "super")] &'a Bytes);
    #[derive(Deserialize)]
    struct Own(#[serde(with = "super")] Bytes);

    /// See [`super::serialize`].
    pub fn serialize<S: Serializer>(b: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
        b.as_ref().map(Ref).serialize(s)
    }

    /// See [`super::deserialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
        Ok(Option::<Own>::deserialize(d)?.map(|o| o.0))
    }
}

/// `#[serde(with)]` for `Vec<Bytes>`.
pub mod list {
    use super::*;

    #[derive(Serialize)]
    struct Ref<'a>(#[serde(with = "super")] &'a Bytes);
    #[derive(Deserialize)]
    struct Own(#[serde(with = "super")] Bytes);

    /// See [`super::serialize`].
    pub fn serialize<S: Serializer>(v: &[Bytes], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(Ref))
    }

    /// See [`super::deserialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Bytes>, D::Error> {
        Ok(Vec::<Own>::deserialize(d)?
            .into_iter()
            .map(|o| o.0)
            .collect())
    }
}

/// `#[serde(with)]` for `Vec<(String, Bytes)>`.
pub mod pairs {
    use super::*;

    #[derive(Serialize)]
    struct Ref<'a>(&'a str, #[serde(with = "super")] &'a Bytes);
    #[derive(Deserialize)]
    struct Own(String, #[serde(with = "super")] Bytes);

    /// See [`super::serialize`].
    pub fn serialize<S: Serializer>(v: &[(String, Bytes)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(k, b)| Ref(k, b)))
    }

    /// See [`super::deserialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, Bytes)>, D::Error> {
        Ok(Vec::<Own>::deserialize(d)?
            .into_iter()
            .map(|o| (o.0, o.1))
            .collect())
    }
}

/// `#[serde(with)]` for `Vec<(String, Option<Bytes>)>`.
pub mod opt_pairs {
    use super::*;

    #[derive(Serialize)]
    struct Ref<'a>(&'a str, #[serde(with = "super::opt")] &'a Option<Bytes>);
    #[derive(Deserialize)]
    struct Own(String, #[serde(with = "super::opt")] Option<Bytes>);

    /// See [`super::serialize`].
    pub fn serialize<S: Serializer>(
        v: &[(String, Option<Bytes>)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(k, b)| Ref(k, b)))
    }

    /// See [`super::deserialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, Option<Bytes>)>, D::Error> {
        Ok(Vec::<Own>::deserialize(d)?
            .into_iter()
            .map(|o| (o.0, o.1))
            .collect())
    }
}

/// Resets a thread-local slot when dropped, so a panic mid-encoding cannot
/// leave it set for the next frame.
struct Reset<T: 'static>(&'static std::thread::LocalKey<RefCell<Option<T>>>);

impl<T> Drop for Reset<T> {
    fn drop(&mut self) {
        self.0.with(|slot| slot.borrow_mut().take());
    }
}

/// Encodes `msg` as a frame: the first part holds the frame length, the
/// header length and the header; the others are the tail, to be written
/// as they are.
pub fn encode_frame<M: Serialize + ?Sized>(
    msg: &M,
    encode: impl FnOnce(&mut Vec<u8>, &M),
) -> Vec<Bytes> {
    let _reset = Reset(&SENDING);
    SENDING.with(|t| *t.borrow_mut() = Some(Vec::new()));
    let mut head = vec![0u8; 8];
    encode(&mut head, msg);
    let tails = SENDING.with(|t| t.borrow_mut().take()).unwrap_or_default();
    let header = (head.len() - 8) as u32;
    let total = head.len() - 4 + tails.iter().map(Bytes::len).sum::<usize>();
    head[..4].copy_from_slice(&(total as u32).to_be_bytes());
    head[4..8].copy_from_slice(&header.to_be_bytes());
    let mut parts = Vec::with_capacity(1 + tails.len());
    parts.push(Bytes::from(head));
    parts.extend(tails);
    parts
}

/// Decodes a frame (without its length prefix) written by
/// [`encode_frame`], with `decode` for the header.
pub fn decode_frame<M: DeserializeOwned, E>(
    frame: Bytes,
    decode: impl FnOnce(&[u8]) -> Result<M, E>,
    malformed: impl Fn(&str) -> E,
) -> Result<M, E> {
    let header = frame
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("four bytes")) as usize)
        .and_then(|n| n.checked_add(4))
        .filter(|&end| end <= frame.len())
        .ok_or_else(|| malformed("frame shorter than its header"))?;
    let _reset = Reset(&RECEIVING);
    RECEIVING.with(|r| *r.borrow_mut() = Some((frame.clone(), header)));
    let msg = decode(&frame[4..header])?;
    let used = RECEIVING.with(|r| r.borrow().as_ref().map_or(0, |(_, at)| *at));
    if used != frame.len() {
        return Err(malformed("frame has bytes after its out-of-band data"));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Msg {
        #[serde(with = "super")]
        a: Bytes,
        #[serde(with = "opt")]
        b: Option<Bytes>,
        #[serde(with = "pairs")]
        c: Vec<(String, Bytes)>,
        n: u32,
    }

    fn enc(m: &Msg) -> Bytes {
        let parts = encode_frame(m, |buf, m| {
            postcard::to_io(m, buf).unwrap();
        });
        let mut all = Vec::new();
        for p in parts {
            all.extend_from_slice(&p);
        }
        let len = u32::from_be_bytes(all[..4].try_into().unwrap()) as usize;
        assert_eq!(len, all.len() - 4, "frame length covers the rest");
        Bytes::from(all).slice(4..)
    }

    fn dec(frame: Bytes) -> Result<Msg, String> {
        decode_frame(
            frame,
            |h| postcard::from_bytes(h).map_err(|e| e.to_string()),
            |m| m.to_string(),
        )
    }

    fn sample() -> Msg {
        Msg {
            a: Bytes::from(vec![7u8; 3 << 20]),
            b: Some(Bytes::from_static(b"small")),
            c: vec![
                ("x".into(), Bytes::from(vec![1u8; OUT_OF_BAND])),
                ("y".into(), Bytes::from_static(b"")),
            ],
            n: 42,
        }
    }

    #[test]
    fn big_byte_strings_travel_in_the_tail_and_come_back_equal() {
        let m = sample();
        let frame = enc(&m);
        let header = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert!(header < 200, "big bytes are not in the header ({header})");
        let back = dec(frame.clone()).unwrap();
        assert_eq!(back, m);
        // The big one is a slice of the frame, not a copy.
        let inside = frame.as_ptr_range();
        assert!(inside.contains(&back.a.as_ptr()));
    }

    #[test]
    fn hostile_frames_are_errors() {
        let frame = enc(&sample());
        for cut in [0, 3, 4, 10, frame.len() / 2, frame.len() - 1] {
            assert!(dec(frame.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut longer = frame.to_vec();
        longer.push(0);
        assert!(dec(Bytes::from(longer)).is_err());
        // A header claiming more than the frame holds.
        let mut lying = frame.to_vec();
        lying[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(dec(Bytes::from(lying)).is_err());
        // A tail outside any frame.
        let plain = postcard::to_allocvec(&sample()).unwrap();
        assert!(
            postcard::from_bytes::<Msg>(&plain).is_ok(),
            "inline outside frames"
        );
    }
}
