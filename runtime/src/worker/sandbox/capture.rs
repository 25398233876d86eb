//! What a task writes to stdout and stderr, kept (bounded) for the task's
//! result, error and `dtask logs`.

use super::*;

/// What a task wrote to stdout and stderr, the last [`STDERR_CAP`] bytes of
/// each.
#[derive(Clone, Default)]
pub struct Captured {
    pub(super) stdout: Capture,
    pub(super) stderr: Capture,
}

impl std::fmt::Debug for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Captured").finish_non_exhaustive()
    }
}

impl Captured {
    /// What it wrote to stdout (a component's; a command's stdout is its
    /// result), marked where earlier output was dropped.
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// What it wrote to stderr, marked where earlier output was dropped.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Whether it wrote nothing.
    pub fn is_empty(&self) -> bool {
        self.stdout.is_empty() && self.stderr.is_empty()
    }
}

/// A guest's output stream (stderr, or a component's stdout): keeps the
/// last [`STDERR_CAP`] bytes, for its error report (where a failing program
/// says why) and `dtask logs`, and drops what came before, so a chatty
/// program never sees a write fail.
#[derive(Clone, Default)]
pub(super) struct Capture(Arc<Mutex<Vec<u8>>>);

/// What starts a guest's stderr report when earlier output was dropped.
pub(super) const STDERR_DROPPED: &str = "[… earlier output dropped]\n";

impl Capture {
    pub(super) fn is_empty(&self) -> bool {
        self.0.lock().expect("capture lock").is_empty()
    }

    pub(super) fn push(&self, bytes: &[u8]) {
        let mut kept = self.0.lock().expect("stderr lock");
        kept.extend_from_slice(bytes);
        // Dropping only past twice the cap keeps the copying amortised.
        if kept.len() > 2 * STDERR_CAP {
            let excess = kept.len() - STDERR_CAP;
            kept.drain(..excess);
        }
    }

    pub(super) fn text(&self) -> String {
        let kept = self.0.lock().expect("stderr lock");
        match kept.len().checked_sub(STDERR_CAP) {
            Some(excess) if excess > 0 => {
                let tail = String::from_utf8_lossy(&kept[excess..]);
                format!("{STDERR_DROPPED}{tail}")
            }
            _ => String::from_utf8_lossy(&kept).into_owned(),
        }
    }
}

impl OutputSink for Capture {
    fn push(&self, bytes: &[u8]) -> Result<(), String> {
        Capture::push(self, bytes);
        Ok(())
    }

    fn permit(&self) -> Result<usize, String> {
        Ok(STDERR_CAP)
    }
}

/// Where a guest's output stream writes: a [`Capture`], or a command's
/// stdout.
pub(super) trait OutputSink: Clone + Send + Sync + 'static {
    /// Takes `bytes`, or says why not (the guest's write then traps).
    fn push(&self, bytes: &[u8]) -> Result<(), String>;

    /// How much may be written next, or why nothing may.
    fn permit(&self) -> Result<usize, String>;
}

/// A guest's output stream (stdout or stderr) writing to a sink.
#[derive(Clone)]
pub(super) struct Out<S>(pub(super) S);

impl<S: OutputSink> IsTerminal for Out<S> {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl<S: OutputSink> StdoutStream for Out<S> {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

fn trap(why: String) -> StreamError {
    StreamError::Trap(wasmtime::format_err!("{why}"))
}

#[wasmtime_wasi::async_trait]
impl<S: OutputSink> OutputStream for Out<S> {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.0.push(&bytes).map_err(trap)
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.0.permit().map_err(trap)
    }
}

#[wasmtime_wasi::async_trait]
impl<S: OutputSink> Pollable for Out<S> {
    async fn ready(&mut self) {}
}

impl<S: OutputSink> AsyncWrite for Out<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let pushed = self.0.push(buf).map_err(std::io::Error::other);
        Poll::Ready(pushed.map(|()| buf.len()))
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
