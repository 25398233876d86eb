//! A value's MessagePack encoding to send somewhere: bytes in memory, or a
//! file's bytes as a byte string, encoded as they are read, so scattering
//! a file costs a range of memory at a time rather than the file.

use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;

/// How much of a file is read at a time to hash it.
const READ: usize = 4 << 20;

/// An encoded value, in memory or read from a file as it is sent.
#[derive(Clone, Debug)]
pub enum Encoded {
    /// The encoding itself.
    Memory(Bytes),
    /// A file's bytes as a byte string.
    File(EncodedFile),
}

/// A byte range of an open file (a spilled byte string's payload, a file
/// being scattered). The file stays readable while this is held, even if
/// it is removed meanwhile.
#[derive(Clone, Debug)]
pub struct FileBytes {
    file: Arc<std::fs::File>,
    start: u64,
    len: u64,
}

impl FileBytes {
    /// The `len` bytes of `file` from `start`.
    pub fn new(file: std::fs::File, start: u64, len: u64) -> Self {
        Self {
            file: Arc::new(file),
            start,
            len,
        }
    }

    /// Its length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills `buf` from `offset`. Blocking.
    pub fn read_into(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, self.start + offset)
    }

    /// Up to `max` bytes from `offset` (fewer at its end, none past it).
    /// Blocking.
    pub fn read_at(&self, offset: u64, max: usize) -> std::io::Result<Bytes> {
        let n = self.len.saturating_sub(offset).min(max as u64) as usize;
        let mut buf = vec![0; n];
        self.read_into(offset, &mut buf)?;
        Ok(buf.into())
    }

    /// All of it. Blocking.
    pub fn read_all(&self) -> std::io::Result<Bytes> {
        self.read_at(0, self.len as usize)
    }
}

/// A file's bytes (from an offset on) as a byte string: the encoding's
/// header, then the file.
#[derive(Clone, Debug)]
pub struct EncodedFile {
    name: String,
    header: Bytes,
    bytes: FileBytes,
}

impl EncodedFile {
    /// Opens `path` to be sent as the byte string of its bytes.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        if file.metadata()?.is_dir() {
            return Err(std::io::Error::other(
                "it is a directory: give its files (`dir/*`), or an archive of it",
            ));
        }
        Self::from_file(file, 0, path.display().to_string())
    }

    /// The bytes of the regular file open as stdin, from its current
    /// position (`dtask scatter < FILE`); `None` if stdin is not a regular
    /// file (a pipe, a terminal), which can only be read once, as it comes.
    pub fn stdin() -> Option<std::io::Result<Self>> {
        use std::io::Seek;
        use std::os::fd::AsFd;
        let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
        let mut file = std::fs::File::from(fd);
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let start = file.stream_position().ok()?;
        Some(Self::from_file(file, start, "stdin".into()))
    }

    fn from_file(file: std::fs::File, start: u64, name: String) -> std::io::Result<Self> {
        let len = file.metadata()?.len().saturating_sub(start);
        let mut header = Vec::with_capacity(super::BIN32_ROOM);
        super::push_binary_header(&mut header, super::fits_in_a_value(len)?);
        Ok(Self {
            name,
            header: header.into(),
            bytes: FileBytes::new(file, start, len),
        })
    }
}

impl Encoded {
    /// This process's stdin as one byte string, never held whole when it
    /// is big. A regular file (`< FILE`) is read a range at a time from
    /// where it stands. A pipe or terminal can only be read as it comes:
    /// into memory up to `in_memory` bytes, and past that on into an
    /// unlinked temporary file in `TMPDIR` (or `/tmp`), which is then read
    /// a range at a time like any file and gone once this is dropped.
    pub fn stdin(in_memory: usize) -> std::io::Result<Encoded> {
        use std::io::{Read, Write};
        if let Some(file) = EncodedFile::stdin() {
            return file.map(Encoded::File);
        }
        let mut stdin = std::io::stdin().lock();
        let mut head = Vec::with_capacity(super::BIN32_ROOM + in_memory.min(READ) + 1);
        head.resize(super::BIN32_ROOM, 0);
        (&mut stdin)
            .take(in_memory as u64 + 1)
            .read_to_end(&mut head)?;
        if head.len() - super::BIN32_ROOM <= in_memory {
            return super::finish_binary(head).map(|b| Encoded::Memory(b.into()));
        }
        let dir = std::env::temp_dir();
        let spooling = |e: std::io::Error| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot keep stdin in a temporary file in {}: {e}; set TMPDIR to a \
                     directory with room, or redirect stdin from a file",
                    dir.display()
                ),
            )
        };
        let mut spool = tempfile::tempfile_in(&dir).map_err(spooling)?;
        spool
            .write_all(&head[super::BIN32_ROOM..])
            .map_err(spooling)?;
        drop(head);
        std::io::copy(&mut stdin, &mut spool).map_err(spooling)?;
        EncodedFile::from_file(spool, 0, "stdin".into()).map(Encoded::File)
    }

    /// This process's stdin as one string, read as [`Encoded::stdin`]
    /// reads it (never held whole when big), less one trailing newline.
    /// Checked to be UTF-8, a range at a time; an error says if it is not.
    pub fn stdin_text(in_memory: usize) -> std::io::Result<Encoded> {
        let not_text =
            || std::io::Error::new(std::io::ErrorKind::InvalidData, "stdin is not UTF-8 text");
        let f = match Encoded::stdin(in_memory)? {
            Encoded::Memory(b) => {
                let Ok(super::Value::Binary(bytes)) = super::decode(&b) else {
                    return Err(not_text());
                };
                let mut text = String::from_utf8(bytes).map_err(|_| not_text())?;
                if text.ends_with('\n') {
                    text.pop();
                }
                return Ok(Encoded::Memory(
                    super::encode(&super::Value::from(text)).into(),
                ));
            }
            Encoded::File(f) => f,
        };
        // UTF-8 checked range by range, a sequence cut by a range's end
        // carried into the next.
        let mut carry: Vec<u8> = Vec::new();
        let mut at = 0;
        let mut last = None;
        while at < f.bytes.len {
            let range = f.bytes.read_at(at, READ)?;
            if range.is_empty() {
                return Err(std::io::Error::other("stdin ended before its length"));
            }
            at += range.len() as u64;
            last = range.last().copied();
            carry.extend_from_slice(&range);
            match std::str::from_utf8(&carry) {
                Ok(_) => carry.clear(),
                Err(e) if e.error_len().is_none() => {
                    carry.drain(..e.valid_up_to());
                }
                Err(_) => return Err(not_text()),
            }
        }
        if !carry.is_empty() {
            return Err(not_text());
        }
        let len = f.bytes.len - u64::from(last == Some(b'\n'));
        let mut header = Vec::with_capacity(super::BIN32_ROOM);
        super::push_str_header(&mut header, super::fits_in_a_value(len)?);
        Ok(Encoded::File(EncodedFile {
            name: f.name,
            header: header.into(),
            bytes: FileBytes { len, ..f.bytes },
        }))
    }

    /// The encoding's length.
    pub fn len(&self) -> u64 {
        match self {
            Encoded::Memory(b) => b.len() as u64,
            Encoded::File(f) => f.header.len() as u64 + f.bytes.len(),
        }
    }

    /// Whether the encoding is empty (never, for a valid value).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` bytes of the encoding from `offset` (fewer at its end). A file
    /// that no longer has the bytes it had when opened is an error naming
    /// it. Blocking for a file: call it off the async threads.
    pub fn range(&self, offset: u64, len: u64) -> std::io::Result<Bytes> {
        let end = offset.saturating_add(len).min(self.len());
        let offset = offset.min(end);
        let f = match self {
            Encoded::Memory(b) => return Ok(b.slice(offset as usize..end as usize)),
            Encoded::File(f) => f,
        };
        let mut out = vec![0; (end - offset) as usize];
        let head = f.header.len() as u64;
        let from_header = head.saturating_sub(offset).min(end - offset) as usize;
        if from_header > 0 {
            out[..from_header]
                .copy_from_slice(&f.header[offset as usize..offset as usize + from_header]);
        }
        let at = (offset + from_header as u64) - head;
        f.bytes
            .read_into(at, &mut out[from_header..])
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "reading {} failed (did it change while it was sent?): {e}",
                        f.name
                    ),
                )
            })?;
        Ok(out.into())
    }

    /// `work` on this encoding without blocking an async thread: at once
    /// for one in memory, on a blocking thread for a file.
    pub async fn off_thread<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Encoded) -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        match self {
            Encoded::Memory(_) => work(self),
            Encoded::File(_) => {
                let this = self.clone();
                tokio::task::spawn_blocking(move || work(&this))
                    .await
                    .map_err(std::io::Error::other)?
            }
        }
    }

    /// The whole encoding in memory. Blocking for a file.
    pub fn bytes(&self) -> std::io::Result<Bytes> {
        self.range(0, self.len())
    }

    /// Its scattered-data key (`key::pure_key("", "data", [encoding])`),
    /// a file's read a range at a time. Blocking for a file.
    pub fn data_key(&self) -> std::io::Result<String> {
        let mut key = crate::key::DataKey::new(self.len());
        match self {
            Encoded::Memory(b) => key.update(b),
            Encoded::File(_) => {
                let mut at = 0;
                while at < self.len() {
                    let range = self.range(at, READ as u64)?;
                    key.update(&range);
                    at += range.len() as u64;
                }
            }
        }
        Ok(key.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::encode_binary;

    #[test]
    fn a_file_encodes_and_hashes_as_its_bytes_would() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0usize, 5, 300, 70_000, (4 << 20) + 3] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 + i / 13) as u8).collect();
            let path = dir.path().join(format!("{n}.bin"));
            std::fs::write(&path, &data).unwrap();
            let file = Encoded::File(EncodedFile::open(&path).unwrap());
            let memory = Encoded::Memory(encode_binary(&data));
            assert_eq!(file.len(), memory.len(), "{n}");
            assert_eq!(file.bytes().unwrap(), memory.bytes().unwrap(), "{n}");
            // Ranges across the header's end and the file's.
            for (offset, len) in [
                (0, 1),
                (1, 3),
                (2, 1000),
                (n as u64 / 2, 9),
                (n as u64, 100),
            ] {
                assert_eq!(
                    file.range(offset, len).unwrap(),
                    memory.range(offset, len).unwrap(),
                    "{n} at {offset}+{len}"
                );
            }
            let want = crate::key::pure_key(
                "",
                "data",
                &[crate::protocol::Arg::Value(encode_binary(&data))],
            );
            assert_eq!(file.data_key().unwrap(), want, "{n}");
            assert_eq!(memory.data_key().unwrap(), want, "{n}");
        }
    }

    #[test]
    fn a_file_read_from_where_it_stands_sends_the_bytes_after_that() {
        // As stdin redirected from a file someone already read part of.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.bin");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let rest = Encoded::File(EncodedFile::from_file(file, 1_000, "stdin".into()).unwrap());
        let want = Encoded::Memory(encode_binary(&data[1_000..]));
        assert_eq!(rest.bytes().unwrap(), want.bytes().unwrap());
        assert_eq!(rest.data_key().unwrap(), want.data_key().unwrap());
    }

    #[test]
    fn a_file_that_shrank_since_it_was_opened_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.bin");
        std::fs::write(&path, vec![1u8; 100_000]).unwrap();
        let file = Encoded::File(EncodedFile::open(&path).unwrap());
        std::fs::write(&path, vec![1u8; 10]).unwrap();
        let e = file.bytes().unwrap_err().to_string();
        assert!(e.contains("data.bin") && e.contains("change"), "{e}");
    }
}
