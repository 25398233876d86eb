//! A value's MessagePack encoding to send somewhere: bytes in memory, or a
//! file's bytes as a byte string, encoded as they are read, so scattering
//! a file costs a range of memory at a time rather than the file.

use super::human_bytes;
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

/// A file's bytes (from an offset on) as a byte string: the encoding's
/// header, then the file.
#[derive(Clone, Debug)]
pub struct EncodedFile {
    file: Arc<std::fs::File>,
    name: String,
    header: Bytes,
    /// Where its bytes start in the file.
    start: u64,
    len: u64,
}

impl EncodedFile {
    /// Opens `path` to be sent as the byte string of its bytes.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
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
        if len > u32::MAX as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is more than a value can hold (4 GiB)", human_bytes(len)),
            ));
        }
        // The header `encode_binary` gives bytes of this length.
        let header = match len {
            n if n < 1 << 8 => Bytes::from(vec![0xc4, n as u8]),
            n if n < 1 << 16 => {
                let mut h = vec![0xc5];
                h.extend_from_slice(&(n as u16).to_be_bytes());
                h.into()
            }
            n => {
                let mut h = vec![0xc6];
                h.extend_from_slice(&(n as u32).to_be_bytes());
                h.into()
            }
        };
        Ok(Self {
            file: Arc::new(file),
            name,
            header,
            start,
            len,
        })
    }
}

impl Encoded {
    /// The encoding's length.
    pub fn len(&self) -> u64 {
        match self {
            Encoded::Memory(b) => b.len() as u64,
            Encoded::File(f) => f.header.len() as u64 + f.len,
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
        use std::os::unix::fs::FileExt;
        let mut out = vec![0; (end - offset) as usize];
        let head = f.header.len() as u64;
        let from_header = head.saturating_sub(offset).min(end - offset) as usize;
        if from_header > 0 {
            out[..from_header]
                .copy_from_slice(&f.header[offset as usize..offset as usize + from_header]);
        }
        let at = f.start + (offset + from_header as u64) - head;
        f.file
            .read_exact_at(&mut out[from_header..], at)
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
