//! Busy polling: a runtime thread that runs out of work spins for a while,
//! watching its connections, before it sleeps.
//!
//! A message to a process that sleeps costs a wake-up, and on a VM waking a
//! process whose vCPU went idle goes through the hypervisor: tens of
//! microseconds per hop, most of a round trip between dtask's processes on
//! one machine (PERFORMANCE.md). With `DTASK_BUSY_POLL=50us` in their
//! environment, dtask's processes (scheduler, workers, the CLI's verbs, and
//! Rust clients whose runtime [`install`]s it) spin up to that long for the
//! next message on any of their connections instead, so an answer that
//! comes within it finds them awake. The price is CPU: up to that long per
//! time a thread runs out of work, taken from whatever else the machine
//! runs. Off unless asked for.

use std::os::fd::{AsRawFd, FromRawFd as _, OwnedFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The environment variable that turns busy polling on: how long to spin,
/// e.g. `50us` (`0` or unset: off).
pub const ENV: &str = "DTASK_BUSY_POLL";

/// The longest spin accepted: beyond it, sleeping costs less than it saves.
pub const MAX_SPIN: Duration = Duration::from_millis(1);

/// What a runtime thread spins on: an epoll set of this process's
/// connections (a second registration beside the runtime's own, level
/// triggered, so a message the runtime has not read yet shows).
struct Poller {
    epoll: OwnedFd,
    spin: Duration,
}

/// The spin `DTASK_BUSY_POLL` asks for: `None` when unset or zero.
pub fn configured() -> Result<Option<Duration>, String> {
    let Ok(value) = std::env::var(ENV) else {
        return Ok(None);
    };
    let spin = crate::config::parse_duration(&value).map_err(|e| format!("{ENV}: {e}"))?;
    if spin > MAX_SPIN {
        return Err(format!(
            "{ENV}: {value} is longer than the {MAX_SPIN:?} a spin may take; try 50us"
        ));
    }
    Ok((!spin.is_zero()).then_some(spin))
}

/// This process's poller, set up on first use: `None` when busy polling is
/// off, or on a bad `DTASK_BUSY_POLL` (said once on stderr).
fn poller() -> Option<&'static Poller> {
    static POLLER: OnceLock<Option<Poller>> = OnceLock::new();
    POLLER
        .get_or_init(|| {
            let spin = match configured() {
                Ok(Some(spin)) => spin,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!("busy polling stays off: {e}");
                    return None;
                }
            };
            // SAFETY: epoll_create1 has no memory arguments; a non-negative
            // result is a new descriptor this process owns.
            let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if fd < 0 {
                let e = std::io::Error::last_os_error();
                tracing::warn!("busy polling stays off: cannot create an epoll set: {e}");
                return None;
            }
            // SAFETY: `fd` was just created and is owned by nothing else.
            let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
            Some(Poller { epoll, spin })
        })
        .as_ref()
}

/// Adds a connection to what runtime threads spin on. It leaves the set by
/// itself when the connection closes.
pub fn watch(conn: &impl AsRawFd) {
    let Some(p) = poller() else { return };
    let mut event = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0,
    };
    // SAFETY: both descriptors are open; `event` outlives the call. A
    // failure (a descriptor epoll cannot watch) only means no spinning for
    // that connection.
    unsafe {
        libc::epoll_ctl(
            p.epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            conn.as_raw_fd(),
            &mut event,
        )
    };
}

/// Makes the runtime's threads spin for their connections before sleeping,
/// when busy polling is on; otherwise leaves the builder as it is.
pub fn install(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    match poller() {
        Some(p) => builder.on_thread_park(move || p.wait()),
        None => builder,
    }
}

impl Poller {
    /// Spins until a watched connection has something to read or the spin
    /// is over: the runtime then sleeps as usual, and wakes at once for
    /// what arrived.
    fn wait(&self) {
        wait_readable(&self.epoll, self.spin);
    }
}

/// Spins until something in the epoll set `epoll` is ready, or `spin` has
/// passed; true if something is ready.
fn wait_readable(epoll: &OwnedFd, spin: Duration) -> bool {
    let deadline = Instant::now() + spin;
    let mut event = libc::epoll_event { events: 0, u64: 0 };
    loop {
        // SAFETY: one event's room, which `event` is; timeout 0 never
        // blocks.
        let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), &mut event, 1, 0) };
        if n > 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        // Whatever else is runnable on this CPU (a worker computing, on a
        // machine with fewer CPUs than dtask processes) goes first.
        // SAFETY: no arguments.
        unsafe { libc::sched_yield() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn epoll_of(conn: &impl AsRawFd) -> OwnedFd {
        // SAFETY: as in `poller`.
        let epoll = unsafe { OwnedFd::from_raw_fd(libc::epoll_create1(libc::EPOLL_CLOEXEC)) };
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        // SAFETY: both descriptors are open.
        let added = unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                conn.as_raw_fd(),
                &mut event,
            )
        };
        assert_eq!(added, 0);
        epoll
    }

    #[test]
    fn a_spin_ends_when_a_watched_connection_has_a_message() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let epoll = epoll_of(&b);
        // Nothing to read: the spin runs out.
        assert!(!wait_readable(&epoll, Duration::from_micros(200)));
        // A message waiting: it ends at once (well before a minute).
        a.write_all(b"x").unwrap();
        let start = Instant::now();
        assert!(wait_readable(&epoll, Duration::from_secs(60)));
        assert!(start.elapsed() < Duration::from_secs(30));
        // One sent from another thread while spinning ends it too.
        let mut buf = [0u8; 1];
        std::io::Read::read_exact(&mut &b, &mut buf).unwrap();
        let sender = std::thread::spawn(move || a.write_all(b"y").unwrap());
        assert!(wait_readable(&epoll, Duration::from_secs(60)));
        sender.join().unwrap();
    }

    #[test]
    fn a_closed_connection_leaves_the_set() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let epoll = epoll_of(&b);
        drop(a);
        // The peer's hang-up reads as ready while `b` is open...
        assert!(wait_readable(&epoll, Duration::from_secs(60)));
        // ...and once it closes, nothing is watched.
        drop(b);
        assert!(!wait_readable(&epoll, Duration::from_micros(200)));
    }
}
