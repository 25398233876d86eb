//! Writing values to stdout: JSON, or raw bytes and text.

use super::*;

/// A value as one line of output: JSON, or with `raw` strings and bytes as
/// they are.
pub fn render(v: &Value, raw: bool) -> Vec<u8> {
    match v {
        Value::String(s) if raw => s.as_bytes().to_vec(),
        Value::Binary(b) if raw => b.clone(),
        _ => value::value_to_json(v).to_string().into_bytes(),
    }
}

/// [`render`] as printed alone: a line, but raw bytes exactly as they are
/// with nothing after them (so `> FILE` gives the bytes back).
pub fn render_line(v: Value, raw: bool) -> Vec<u8> {
    match v {
        Value::Binary(bytes) if raw => bytes,
        v => {
            let mut line = render(&v, raw);
            line.push(b'\n');
            line
        }
    }
}

/// Prints an item taken from a queue or variable: a value as one line
/// ([`render`]), a future as its key. The CLI's named client
/// (`DTASK_CLIENT`) now holds that key, until `dtask release KEY`.
pub fn print_item(item: Item, raw: bool) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    let written = match item {
        // Written from the value itself: a big one is not copied first.
        Item::Value(Value::String(s)) if raw => out
            .write_all(s.as_bytes())
            .and_then(|()| out.write_all(b"\n")),
        Item::Value(Value::Binary(bytes)) if raw => out.write_all(&bytes),
        Item::Value(v) => out.write_all(&render_line(v, raw)),
        Item::Future(f) => {
            let written = out
                .write_all(f.key().as_bytes())
                .and_then(|()| out.write_all(b"\n"));
            // The scheduler made the named client a holder; dropping the
            // handle would give that up.
            std::mem::forget(f);
            written
        }
    };
    written.and_then(|()| out.flush()).map_err(Failure::write)
}

/// Encodes a byte string or string arriving range by range exactly as
/// [`render`] prints it whole: raw, `{"$bytes":"<base64>"}`, or a JSON
/// string (escaped as `serde_json` escapes, invalid UTF-8 replaced as
/// `String::from_utf8_lossy` replaces it), holding at most a few bytes
/// between ranges.
pub enum Streaming {
    /// As the bytes are.
    Raw,
    /// Base64, with the 0–2 bytes of an unfinished group carried over.
    Bytes { carry: Vec<u8> },
    /// A JSON string, with an unfinished UTF-8 sequence carried over.
    Text { carry: Vec<u8> },
}

impl Streaming {
    /// The encoder for a payload that is text or not, printed raw or not.
    pub fn new(text: bool, raw: bool) -> Self {
        match (raw, text) {
            (true, _) => Streaming::Raw,
            (false, false) => Streaming::Bytes { carry: Vec::new() },
            (false, true) => Streaming::Text { carry: Vec::new() },
        }
    }

    /// What goes before the first range.
    pub fn open(&self) -> &'static [u8] {
        match self {
            Streaming::Raw => b"",
            Streaming::Bytes { .. } => br#"{"$bytes":""#,
            Streaming::Text { .. } => b"\"",
        }
    }

    /// Appends the encoding of `range` to `into`.
    pub fn encode(&mut self, range: &[u8], into: &mut Vec<u8>) {
        match self {
            Streaming::Raw => into.extend_from_slice(range),
            Streaming::Bytes { carry } => {
                let mut range = range;
                if !carry.is_empty() {
                    let take = (3 - carry.len()).min(range.len());
                    carry.extend_from_slice(&range[..take]);
                    range = &range[take..];
                    if carry.len() < 3 {
                        return;
                    }
                    push_base64(carry, into);
                    carry.clear();
                }
                let whole = range.len() / 3 * 3;
                push_base64(&range[..whole], into);
                carry.extend_from_slice(&range[whole..]);
            }
            Streaming::Text { carry } => {
                let joined;
                let mut bytes = range;
                if !carry.is_empty() {
                    joined = [std::mem::take(carry).as_slice(), range].concat();
                    bytes = &joined;
                }
                loop {
                    match std::str::from_utf8(bytes) {
                        Ok(s) => {
                            escape_json(s, into);
                            break;
                        }
                        Err(e) => {
                            let (valid, rest) = bytes.split_at(e.valid_up_to());
                            escape_json(std::str::from_utf8(valid).expect("valid"), into);
                            match e.error_len() {
                                Some(n) => {
                                    escape_json("\u{FFFD}", into);
                                    bytes = &rest[n..];
                                }
                                None => {
                                    carry.extend_from_slice(rest);
                                    break;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Appends what ends the value to `into`.
    pub fn close(&mut self, into: &mut Vec<u8>) {
        match self {
            Streaming::Raw => {}
            Streaming::Bytes { carry } => {
                push_base64(carry, into);
                carry.clear();
                into.extend_from_slice(b"\"}");
            }
            Streaming::Text { carry } => {
                if !carry.is_empty() {
                    escape_json("\u{FFFD}", into);
                    carry.clear();
                }
                into.push(b'"');
            }
        }
    }
}

/// Appends the padded base64 of `bytes` to `into`.
fn push_base64(bytes: &[u8], into: &mut Vec<u8>) {
    use base64::Engine as _;
    let at = into.len();
    into.resize(at + bytes.len().div_ceil(3) * 4, 0);
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut into[at..])
        .expect("room for the encoding");
    into.truncate(at + n);
}

/// Appends `s` escaped as inside a JSON string, as `serde_json` writes it:
/// `"` and `\`, short escapes for backspace, form feed, newline, carriage
/// return and tab, `\u00xx` for other control characters, everything else
/// as it is.
fn escape_json(s: &str, into: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0..0x20 => b'u',
            _ => continue,
        };
        into.extend_from_slice(&bytes[start..i]);
        into.push(b'\\');
        into.push(short);
        if short == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            into.extend_from_slice(&[
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        }
        start = i + 1;
    }
    into.extend_from_slice(&bytes[start..]);
}

/// Bytes of an array's rendered elements written out at once.
const ITEMS_BATCH: usize = 64 << 10;

/// What [`write_streamed`] writes around a streamed value: what goes
/// before it, and what after a byte string or a string.
pub struct Frame {
    before: Vec<u8>,
    after_bytes: Vec<u8>,
    after_text: Vec<u8>,
}

impl Frame {
    /// A value alone on its line, as [`render_line`] prints it: raw bytes
    /// have nothing after them.
    pub fn line(raw: bool) -> Self {
        Frame {
            before: Vec::new(),
            after_bytes: if raw { Vec::new() } else { b"\n".to_vec() },
            after_text: b"\n".to_vec(),
        }
    }

    /// A value after `prefix`, then a newline, whatever it is.
    pub fn after(prefix: &str) -> Self {
        Frame {
            before: prefix.as_bytes().to_vec(),
            after_bytes: b"\n".to_vec(),
            after_text: b"\n".to_vec(),
        }
    }

    /// The `result` of `{"key": KEY, "status": "finished", "result": …}`
    /// on a line, its fields in the order `serde_json` prints them.
    pub fn json_line(key: &str) -> Self {
        let line =
            serde_json::json!({"key": key, "status": "finished", "result": null}).to_string();
        let field = r#""result":"#;
        let at = line
            .find(&format!("{field}null"))
            .expect("the line names its result")
            + field.len();
        let after = format!("{}\n", &line[at + "null".len()..]).into_bytes();
        Frame {
            before: line.as_bytes()[..at].to_vec(),
            after_bytes: after.clone(),
            after_text: after,
        }
    }
}

/// Writes the finished result `key` (at `at`) to `out` as it arrives,
/// range by range, never holding it whole: a byte string or string as
/// [`render`] prints it (JSON, or raw with `raw`), an array as JSON an
/// element at a time (each held alone, as MessagePack), framed by `frame`.
/// Any other value (a map, a record, a variant, a result) is kept as
/// MessagePack as it arrives, in memory or, past [`SPOOL_IN_MEMORY`], in
/// a temporary file, and then written as JSON from there, never decoded
/// whole. Only a result that is not valid MessagePack comes back: as its
/// error, nothing of it written.
/// The outer error is output that cannot be written, or a result lost
/// after part of it was written: then its line is ended (but for raw
/// bytes), and nothing more may go on it or after it.
pub async fn write_streamed(
    client: &dtask_runtime::client::Client,
    key: &str,
    at: &dtask_runtime::protocol::Located,
    out: &mut impl Write,
    progress: &super::progress::Progress,
    raw: bool,
    frame: &Frame,
) -> Result<Result<Option<Value>, dtask_runtime::client::ClientError>, Failure> {
    use dtask_runtime::client::{Piece, Streamed};
    let mut failed: Option<std::io::Error> = None;
    let mut write = |bytes: &[u8]| {
        progress.suspend(|| out.write_all(bytes)).map_err(|e| {
            let why = e.to_string();
            failed = Some(e);
            why
        })
    };
    let mut buf = Vec::new();
    let mut encoder: Option<Streaming> = None;
    let mut spool: Option<Spool> = None;
    // Elements of an array written so far (each rendered as it comes).
    let mut items = 0u64;
    let streamed = client
        .stream_pieces(key, at, true, |piece| match piece {
            Piece::Payload(range) => {
                let encoder = encoder.get_or_insert_with(|| {
                    let encoder = Streaming::new(range.text, raw);
                    buf.extend_from_slice(&frame.before);
                    buf.extend_from_slice(encoder.open());
                    encoder
                });
                encoder.encode(range.bytes, &mut buf);
                let written = write(&buf);
                buf.clear();
                written
            }
            Piece::Item(item) => {
                if items == 0 {
                    buf.extend_from_slice(&frame.before);
                    buf.push(b'[');
                } else {
                    buf.push(b',');
                }
                items += 1;
                // Written a batch at a time, not an element at a time.
                value::write_json(item, &mut Batched::new(&mut buf, &mut write))
                    .map_err(|e| e.to_string())
            }
            Piece::Encoded { total, bytes } => spool
                .get_or_insert_with(|| Spool::new(total))
                .push(bytes)
                .map_err(|e| format!("cannot keep it to print: {e}")),
        })
        .await;
    let started = encoder.is_some() || items > 0;
    let written = match streamed {
        Ok(Streamed::Other(v)) => Ok(Ok(Some(v))),
        Ok(Streamed::Encoded) => {
            let kept = spool
                .take()
                .unwrap_or_else(|| Spool::new(0))
                .finish()
                .map_err(|e| format!("cannot read back what was kept to print: {e}"));
            match kept {
                Ok(kept) => match written_whole(&kept, frame, &mut buf, &mut |bytes| {
                    kept.written(bytes.len());
                    write(bytes)
                }) {
                    Ok(()) => Ok(Ok(None)),
                    Err(value::WriteJsonError::Invalid(e)) => {
                        Ok(Err(dtask_runtime::client::ClientError::Data {
                            key: key.to_string(),
                            reason: format!("its result is not valid MessagePack: {e}"),
                        }))
                    }
                    Err(value::WriteJsonError::Io(e)) => Err(e.to_string()),
                },
                Err(why) => Err(why),
            }
        }
        Ok(Streamed::Items) => {
            if items == 0 {
                buf.extend_from_slice(&frame.before);
                buf.push(b'[');
            }
            buf.push(b']');
            buf.extend_from_slice(&frame.after_text);
            write(&buf).map(|()| Ok(None))
        }
        Ok(kind) => {
            let text = matches!(kind, Streamed::Text);
            let mut encoder = encoder.unwrap_or_else(|| {
                let encoder = Streaming::new(text, raw);
                buf.extend_from_slice(&frame.before);
                buf.extend_from_slice(encoder.open());
                encoder
            });
            encoder.close(&mut buf);
            buf.extend_from_slice(if text {
                &frame.after_text
            } else {
                &frame.after_bytes
            });
            write(&buf).map(|()| Ok(None))
        }
        Err(e) if started => {
            // The line is ended, but for raw bytes (an array's elements
            // still waiting here go with it).
            if items > 0 {
                buf.push(b'\n');
                let _ = write(&buf);
            } else if !raw {
                let _ = write(b"\n");
            }
            Err(e.to_string())
        }
        Err(e) => Ok(Err(e)),
    };
    match (written, failed) {
        (_, Some(e)) => Err(Failure::write(e)),
        (Ok(r), None) => Ok(r),
        // Lost partway: the stream's own error.
        (Err(why), None) if started => Err(Failure::new(1, why)),
        (Err(why), None) => Err(Failure::new(2, format!("cannot write: {why}"))),
    }
}

/// Encodings up to this size are kept in memory to be printed; bigger
/// ones in a temporary file (in `TMPDIR`, or else `/var/tmp`).
pub const SPOOL_IN_MEMORY: u64 = 64 << 20;

/// A result's MessagePack kept as it arrives, to be written as JSON once
/// all of it is there.
enum Spool {
    Memory(Vec<u8>),
    /// An unnamed temporary file (gone when closed), or why none could be
    /// made.
    File(std::io::Result<std::fs::File>),
}

/// Bytes of output after which a mapped [`Kept`] lets go of the pages it
/// has read (they are read again, from the page cache, if needed again).
const RELEASE_EVERY: usize = 16 << 20;

/// What a [`Spool`] kept, to read.
enum Kept {
    Memory(Vec<u8>),
    /// The file mapped, and bytes written since its pages were last let go.
    Mapped(memmap2::Mmap, std::cell::Cell<usize>),
}

impl Kept {
    /// `n` bytes more were written from what is kept: a mapped file lets go
    /// of its pages every [`RELEASE_EVERY`], so that printing a big value
    /// from it does not keep all of it resident in this process.
    fn written(&self, n: usize) {
        let Kept::Mapped(_, since) = self else {
            return;
        };
        since.set(since.get() + n);
        if since.get() >= RELEASE_EVERY {
            since.set(0);
            self.release();
        }
    }

    /// A mapped file lets go of the pages it has read.
    fn release(&self) {
        if let Kept::Mapped(map, _) = self {
            // SAFETY: a read-only mapping of a file: the pages let go of
            // are read again from the file when touched, unchanged.
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }
}

impl std::ops::Deref for Kept {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Kept::Memory(v) => v,
            Kept::Mapped(m, _) => m,
        }
    }
}

impl Spool {
    /// A spool for an encoding of `total` bytes.
    fn new(total: u64) -> Self {
        if total <= SPOOL_IN_MEMORY {
            return Spool::Memory(Vec::with_capacity(total as usize));
        }
        // `TMPDIR` if set, or else `/var/tmp`, which is on disk where `/tmp`
        // may be memory (a tmpfs).
        let file = match std::env::var_os("TMPDIR") {
            Some(_) => tempfile::tempfile(),
            None => tempfile::tempfile_in("/var/tmp").or_else(|_| tempfile::tempfile()),
        };
        Spool::File(file)
    }

    fn push(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Spool::Memory(v) => {
                v.extend_from_slice(bytes);
                Ok(())
            }
            Spool::File(Ok(f)) => f.write_all(bytes),
            Spool::File(Err(e)) => Err(std::io::Error::new(
                e.kind(),
                format!(
                    "no temporary file ({e}): set TMPDIR to a directory with room \
                     for the result"
                ),
            )),
        }
    }

    fn finish(self) -> std::io::Result<Kept> {
        match self {
            Spool::Memory(v) => Ok(Kept::Memory(v)),
            Spool::File(f) => {
                let f = f?;
                // SAFETY: the file is this process's own, unnamed: nothing
                // else can change it while it is mapped.
                let map = unsafe { memmap2::Mmap::map(&f) }?;
                Ok(Kept::Mapped(map, Default::default()))
            }
        }
    }
}

/// Writes `kept`, a whole value's MessagePack, as JSON framed by `frame`.
fn written_whole(
    kept: &Kept,
    frame: &Frame,
    buf: &mut Vec<u8>,
    write: &mut impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), value::WriteJsonError> {
    // Checked before anything is written: an invalid value writes nothing.
    let checked = value::check_one_value(kept).map_err(value::WriteJsonError::Invalid)?;
    // The check read all of it.
    kept.release();
    let mut out = Batched::new(buf, write);
    out.write_all(&frame.before)?;
    value::write_checked_json(checked, &mut out)?;
    out.write_all(&frame.after_text)?;
    out.flush()?;
    Ok(())
}

/// Output gathered into `buf` and handed to `write` [`ITEMS_BATCH`] bytes
/// at a time (what is left, on `flush`).
struct Batched<'a, W: FnMut(&[u8]) -> Result<(), String>> {
    buf: &'a mut Vec<u8>,
    write: &'a mut W,
}

impl<'a, W: FnMut(&[u8]) -> Result<(), String>> Batched<'a, W> {
    fn new(buf: &'a mut Vec<u8>, write: &'a mut W) -> Self {
        Batched { buf, write }
    }
}

impl<W: FnMut(&[u8]) -> Result<(), String>> Write for Batched<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if bytes.len() >= ITEMS_BATCH {
            // Big (a long string written at once): passed on, not copied.
            self.flush()?;
            (self.write)(bytes).map_err(std::io::Error::other)?;
            return Ok(bytes.len());
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= ITEMS_BATCH {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = (self.write)(self.buf).map_err(std::io::Error::other);
        self.buf.clear();
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `value` streamed in ranges of `step` bytes, as [`Streaming`]
    /// encodes it.
    fn streamed(payload: &[u8], text: bool, raw: bool, step: usize) -> Vec<u8> {
        let mut e = Streaming::new(text, raw);
        let mut out = e.open().to_vec();
        for range in payload.chunks(step.max(1)) {
            e.encode(range, &mut out);
        }
        e.close(&mut out);
        out
    }

    #[test]
    fn big_writes_pass_through_a_batch_without_being_copied_into_it() {
        let mut buf = Vec::new();
        let mut sizes = Vec::new();
        let mut write = |b: &[u8]| {
            sizes.push(b.len());
            Ok(())
        };
        let mut out = Batched::new(&mut buf, &mut write);
        out.write_all(b"ab").unwrap();
        out.write_all(&vec![b'x'; ITEMS_BATCH * 4]).unwrap();
        out.write_all(b"c").unwrap();
        out.flush().unwrap();
        assert_eq!(sizes, vec![2, ITEMS_BATCH * 4, 1]);
        assert!(buf.capacity() < ITEMS_BATCH, "{}", buf.capacity());
    }

    #[test]
    fn streamed_bytes_and_strings_encode_as_rendered_whole() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let text = "plain, \"quoted\", back\\slash, tab\t, nl\n, cr\r, \u{8}\u{c}\u{1}\u{1f}\u{7f}, \
                    é, 漢字, 🦀 and more";
        for step in [1, 2, 3, 4, 5, 7, 64, 4096] {
            for n in [0, 1, 2, 3, 4, 5, 999, 1000] {
                let b = &bytes[..n];
                let whole = render(&Value::Binary(b.to_vec()), false);
                assert_eq!(
                    streamed(b, false, false, step),
                    whole,
                    "bytes {n} by {step}"
                );
                assert_eq!(streamed(b, false, true, step), b, "raw {n} by {step}");
            }
            let whole = render(&Value::from(text), false);
            assert_eq!(
                String::from_utf8(streamed(text.as_bytes(), true, false, step)).unwrap(),
                String::from_utf8(whole).unwrap(),
                "text by {step}"
            );
            // Not UTF-8 (cut sequences, stray continuation bytes, one cut
            // at the end): replaced as a lossy conversion replaces it.
            let bad = [
                b"a\xe6\xbc".as_slice(),
                b"\x80b\xf0\x9f\xa6\x80c\xff\xf0\x9f",
            ]
            .concat();
            let lossy = serde_json::Value::from(String::from_utf8_lossy(&bad).into_owned());
            assert_eq!(
                String::from_utf8(streamed(&bad, true, false, step)).unwrap(),
                lossy.to_string(),
                "invalid UTF-8 by {step}"
            );
        }
    }

    #[test]
    fn a_json_line_frame_puts_the_result_where_serde_json_would() {
        let f = Frame::json_line("inc-1");
        let mut line = f.before.clone();
        line.extend_from_slice(b"[1,2]");
        line.extend_from_slice(&f.after_text);
        let parsed: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"key": "inc-1", "status": "finished", "result": [1, 2]})
        );
        assert!(line.ends_with(b"\n"));
    }
}
