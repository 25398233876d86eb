//! A command's stdin read from a byte string held in a spill file, a range
//! at a time as the program asks for it: a command reading a value over the
//! worker's memory budget costs the worker a range of memory, not the value.

use super::*;
use crate::value::FileBytes;

/// How much is read from the file at a time.
const RANGE: usize = 1 << 20;

/// A command's standard input.
pub(super) enum Stdin {
    /// Bytes in memory.
    Bytes(bytes::Bytes),
    /// A spilled byte string, read as it is asked for.
    File(FileBytes),
}

/// A spilled byte string as stdin; clones share their place in it (as
/// every handle a guest opens on stdin must).
#[derive(Clone)]
pub(super) struct FileStdin {
    bytes: FileBytes,
    at: Arc<Mutex<Cursor>>,
}

#[derive(Default)]
struct Cursor {
    /// Where the next range starts.
    next: u64,
    /// What was read and not yet taken.
    buf: bytes::Bytes,
}

impl FileStdin {
    pub(super) fn new(bytes: FileBytes) -> Self {
        Self {
            bytes,
            at: Arc::default(),
        }
    }

    /// Up to `size` bytes, `Ok(None)` at the end.
    fn take(&self, size: usize) -> std::io::Result<Option<bytes::Bytes>> {
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        if at.buf.is_empty() {
            if at.next >= self.bytes.len() {
                return Ok(None);
            }
            let range = self.bytes.read_at(at.next, RANGE)?;
            if range.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the input's spill file ended early",
                ));
            }
            at.next += range.len() as u64;
            at.buf = range;
        }
        let n = size.min(at.buf.len());
        Ok(Some(at.buf.split_to(n)))
    }
}

impl IsTerminal for FileStdin {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for FileStdin {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncRead + Send + Sync> {
        Box::new(self.clone())
    }
}

// Reading a range blocks the async thread for as long as the file takes to
// give a megabyte: the guest is waiting on this read anyway.
#[wasmtime_wasi::async_trait]
impl InputStream for FileStdin {
    fn read(&mut self, size: usize) -> StreamResult<bytes::Bytes> {
        match self.take(size) {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err(StreamError::Closed),
            Err(e) => Err(StreamError::LastOperationFailed(wasmtime::format_err!(
                "reading stdin from the worker's spill file: {e}"
            ))),
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for FileStdin {
    async fn ready(&mut self) {}
}

impl AsyncRead for FileStdin {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.take(buf.remaining()).map(|got| {
            if let Some(b) = got {
                buf.put_slice(&b);
            }
        }))
    }
}
