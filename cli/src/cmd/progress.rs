//! Progress bars on stderr for long waits — only on a terminal, so
//! pipelines and scripts see nothing but data.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// A progress bar that exists only when stderr is a terminal (and
/// `DTASK_NO_PROGRESS` is unset); otherwise every call does nothing.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A bar for `label`, counting towards `total` (grown with
    /// [`Progress::add_total`] as work streams in).
    pub fn new(label: &str, total: u64) -> Self {
        if !std::io::stderr().is_terminal() || std::env::var_os("DTASK_NO_PROGRESS").is_some() {
            return Self(None);
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} eta {eta}",
            )
            .expect("a valid template"),
        );
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Self(Some(bar))
    }

    /// More work to wait for.
    pub fn add_total(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc_length(n);
        }
    }

    /// Work done.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// Runs `f` (which writes output) with the bar hidden meanwhile.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.0 {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}
