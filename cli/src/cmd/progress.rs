//! Progress bars on stderr for long waits, for a person at a terminal
//! only: pipelines and scripts see nothing but data.
//!
//! The rules: a bar is drawn only when stderr is a terminal, stdout is not
//! a pipe or socket (the last command of `map | gather` draws; the first,
//! whose output another dtask reads, does not; nor does `gather | head`,
//! whose bar would mix with head's output) and `DTASK_NO_PROGRESS` is
//! unset. Until the first work is known it reads "waiting", never a full
//! bar of 0/0; rates are whole numbers per second.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// A progress bar that exists only where the rules above allow;
/// otherwise every call does nothing.
pub struct Progress(Option<ProgressBar>);

/// Whether stdout is a pipe or a socket (another program reads it).
fn stdout_is_piped() -> bool {
    // SAFETY: fstat fills the zeroed struct it is given; fd 1 may be
    // closed, which it reports as an error.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(1, &mut st) } != 0 {
        return false;
    }
    matches!(st.st_mode & libc::S_IFMT, libc::S_IFIFO | libc::S_IFSOCK)
}

/// Whether a bar may be drawn (the rules in the module's doc).
pub fn allowed() -> bool {
    std::io::stderr().is_terminal()
        && !stdout_is_piped()
        && std::env::var_os("DTASK_NO_PROGRESS").is_none()
}

/// The style once there is work to count.
fn counting() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {rate} eta {eta}",
    )
    .expect("a valid template")
    .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{:.0}/s", s.per_sec());
    })
}

impl Progress {
    /// A bar for `label`, counting towards `total` (grown with
    /// [`Progress::add_total`] as work streams in).
    pub fn new(label: &str, total: u64) -> Self {
        if !allowed() {
            return Self(None);
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(if total == 0 {
            ProgressStyle::with_template("{prefix} [{elapsed_precise}] {spinner} waiting")
                .expect("a valid template")
        } else {
            counting()
        });
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Self(Some(bar))
    }

    /// More work to wait for.
    pub fn add_total(&self, n: u64) {
        if let Some(b) = &self.0 {
            if b.length() == Some(0) && n > 0 {
                b.set_style(counting());
            }
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
