//! Busy polling: a runtime thread that runs out of work spins for a while,
//! watching its connections, before it sleeps.
//!
//! A message to a process that sleeps costs a wake-up, and on a VM waking a
//! process whose vCPU went idle goes through the hypervisor: tens of
//! microseconds per hop, most of a round trip between dtask's processes on
//! one machine (PERFORMANCE.md). So dtask's single-threaded runtimes (the
//! scheduler of `dtask cluster` and of the local default, one-slot workers,
//! the CLI's verbs, and Rust clients whose runtime [`install`]s it) spin up
//! to [`DEFAULT_SPIN`] for the next message on any of their connections
//! before they sleep, and an answer that comes within it finds them awake.
//! `DTASK_BUSY_POLL` sets how long (`off` or `0`: never).
//!
//! What it costs is bounded: one thread per process spins at a time; it
//! offers the CPU to whatever else is runnable there between polls, and
//! stops spinning once something took it; and it stops as soon as a
//! message arrives or a task is woken from another thread. An idle process
//! spins once after its last message, then sleeps. And a process can
//! [`pause`] it: the scheduler of `dtask cluster` and of the local default
//! does while its workers have a task per CPU or more.
//!
//! Multi-threaded runtimes (`dtask scheduler`, a worker with several slots,
//! the embedded cluster) do not spin: a message there wakes whichever
//! thread sleeps in the runtime's own poll, not the spinner, so spinning
//! only took CPU from the guests (measured: up to a fifth fewer tasks/s
//! on a two-slot worker, and more CPU).

use std::os::fd::{AsRawFd, FromRawFd as _, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The environment variable that sets how long to spin, e.g. `50us`
/// (`off` or `0`: never; unset: [`DEFAULT_SPIN`]).
pub const ENV: &str = "DTASK_BUSY_POLL";

/// How long a process spins unless `DTASK_BUSY_POLL` says otherwise: about
/// two wake-ups of an idle vCPU, long enough to catch the answer of a
/// round trip between dtask's processes on one machine.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// The longest spin accepted: beyond it, sleeping costs less than it saves.
pub const MAX_SPIN: Duration = Duration::from_millis(1);

/// What a runtime thread spins on: an epoll set of this process's
/// connections (a second registration beside the runtime's own, level
/// triggered, so a message the runtime has not read yet shows).
struct Poller {
    epoll: OwnedFd,
    spin: Duration,
    /// Set while one of this process's threads spins: the others sleep at
    /// once (one awake thread is enough to catch a message, and spinners
    /// on every thread of a multi-threaded runtime would take the CPUs
    /// guests compute on).
    spinning: AtomicBool,
}

/// The spin `DTASK_BUSY_POLL` sets: [`DEFAULT_SPIN`] when unset, `None`
/// when `off` or zero.
pub fn configured() -> Result<Option<Duration>, String> {
    spin_of(std::env::var(ENV).ok().as_deref())
}

/// The spin a value of `DTASK_BUSY_POLL` (`None`: unset) sets.
fn spin_of(value: Option<&str>) -> Result<Option<Duration>, String> {
    let Some(value) = value else {
        return Ok(Some(DEFAULT_SPIN));
    };
    if value.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let spin = crate::config::parse_duration(value)
        .map_err(|e| format!("{ENV}: {e} (or off, to never spin)"))?;
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
            Some(Poller {
                epoll,
                spin,
                spinning: AtomicBool::new(false),
            })
        })
        .as_ref()
}

/// Set once a runtime of this process spins ([`install`]): connections
/// are watched only then, so a process that never spins (a multi-threaded
/// one) keeps no epoll set of them.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether a runtime of this process busy-polls.
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Set while this process's own work says the machine's CPUs are all
/// taken: no spinning then.
static PAUSED: AtomicBool = AtomicBool::new(false);

/// Stops (`true`) or resumes spinning in this process. The scheduler of
/// `dtask cluster` and of the local default pauses it while its workers
/// have at least as many tasks as the machine has CPUs: guests then need
/// every CPU, and a spinning scheduler took one from them (PERFORMANCE.md).
pub fn pause(paused: bool) {
    PAUSED.store(paused, Ordering::Relaxed);
}

/// Adds a connection to what runtime threads spin on, when it belongs to
/// a single-threaded runtime (only those spin; a multi-threaded one in the
/// same process, an embedded cluster say, would end their spins with its
/// own traffic). It leaves the set by itself when the connection closes,
/// or once its peer has hung up.
pub fn watch(conn: &impl AsRawFd) {
    if !installed() {
        return;
    }
    let single = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
    if !single {
        return;
    }
    let Some(p) = poller() else { return };
    // A failure (a descriptor epoll cannot watch) only means no spinning
    // for that connection.
    let _ = add(&p.epoll, conn.as_raw_fd());
}

/// Adds `fd` to the epoll set `epoll`: readable, or its peer hung up.
fn add(epoll: &OwnedFd, fd: std::os::fd::RawFd) -> std::io::Result<()> {
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
        u64: fd as u64,
    };
    // SAFETY: `epoll` is open; `fd` is the caller's open descriptor;
    // `event` outlives the call.
    let r = unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Makes a current-thread runtime spin for its connections before it
/// sleeps, when busy polling is on; otherwise leaves the builder as it is.
/// (On a multi-threaded runtime it would take CPU for nothing: see the
/// module's documentation.)
pub fn install(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    match poller() {
        Some(p) => {
            INSTALLED.store(true, Ordering::Relaxed);
            builder.on_thread_park(move || p.wait())
        }
        None => builder,
    }
}

/// Set when the future a runtime's `block_on` runs ([`noting_wakes`]) is
/// woken, cleared as it is polled.
static BLOCK_ON_WOKEN: AtomicBool = AtomicBool::new(false);

/// Runs `fut` (the future given to a runtime's `block_on`) so that a spin
/// ends when it is woken from another thread: tokio wakes a `block_on`
/// future without queueing a task, which the spinner would not see (a
/// blocking job's result, a line read from stdin by a thread of its own).
/// The CLI's verbs run in it.
pub fn noting_wakes<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    NotingWakes {
        fut: Box::pin(fut),
        waker: None,
    }
}

struct NotingWakes<F> {
    fut: std::pin::Pin<Box<F>>,
    /// The waker it was last polled with, and the one it gave `fut` in its
    /// place.
    waker: Option<(std::task::Waker, std::task::Waker)>,
}

/// A waker that notes the wake before passing it on.
struct Noting(std::task::Waker);

impl std::task::Wake for Noting {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        BLOCK_ON_WOKEN.store(true, Ordering::Release);
        self.0.wake_by_ref();
    }
}

impl<F: Future> Future for NotingWakes<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        BLOCK_ON_WOKEN.store(false, Ordering::Release);
        let ours = match &self.waker {
            Some((outer, ours)) if outer.will_wake(cx.waker()) => ours.clone(),
            _ => {
                let ours = std::task::Waker::from(std::sync::Arc::new(Noting(cx.waker().clone())));
                self.waker = Some((cx.waker().clone(), ours.clone()));
                ours
            }
        };
        self.fut
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&ours))
    }
}

impl Poller {
    /// Spins until a watched connection has something to read, a task of
    /// this runtime is woken from another thread, or the spin is over: the
    /// runtime then sleeps as usual, and wakes at once for what arrived.
    /// Only one thread spins at a time.
    fn wait(&self) {
        if PAUSED.load(Ordering::Relaxed) || self.spinning.swap(true, Ordering::Acquire) {
            return;
        }
        let runtime = tokio::runtime::Handle::try_current()
            .ok()
            .map(|h| h.metrics());
        let woken = || {
            BLOCK_ON_WOKEN.load(Ordering::Acquire)
                || runtime.as_ref().is_some_and(|m| m.global_queue_depth() > 0)
        };
        spin_until_ready(&self.epoll, self.spin, woken);
        self.spinning.store(false, Ordering::Release);
    }
}

/// A yield that took longer than this gave the CPU to someone else: the
/// machine has more to run than CPUs, and the spin ends (the thread sleeps
/// rather than take turns with work).
const CONTENDED: Duration = Duration::from_micros(10);

/// How a spin ended.
#[derive(Debug, PartialEq)]
enum Spun {
    /// Something to do: a message, or a task woken.
    Ready,
    /// Nothing came in time.
    RanOut,
    /// Another thread wanted this CPU: spinning takes CPU from work.
    Contended,
}

/// Spins until something in the epoll set `epoll` is ready or `woken()`,
/// until `spin` has passed, or until a yield shows that something else
/// wants the CPU.
fn spin_until_ready(epoll: &OwnedFd, spin: Duration, woken: impl Fn() -> bool) -> Spun {
    let deadline = Instant::now() + spin;
    let mut event = libc::epoll_event { events: 0, u64: 0 };
    loop {
        // SAFETY: one event's room, which `event` is; timeout 0 never
        // blocks.
        let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), &mut event, 1, 0) };
        if n > 0 {
            let hung_up = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
            if event.events & hung_up != 0 {
                // Its peer is gone: it would read as ready for as long as
                // it stays open (a link kept until next used), ending every
                // spin. The hang-up itself is news once.
                // SAFETY: `epoll` is open; removing a descriptor that is
                // no longer in the set only fails.
                let fd = event.u64 as std::os::fd::RawFd;
                unsafe {
                    libc::epoll_ctl(
                        epoll.as_raw_fd(),
                        libc::EPOLL_CTL_DEL,
                        fd,
                        std::ptr::null_mut(),
                    )
                };
            }
            return Spun::Ready;
        }
        if woken() {
            return Spun::Ready;
        }
        let yielded = Instant::now();
        if yielded >= deadline {
            return Spun::RanOut;
        }
        // Whatever else is runnable on this CPU (a worker computing, on a
        // machine with fewer CPUs than dtask processes) goes first; if
        // something did, the spin ends there.
        // SAFETY: no arguments.
        unsafe { libc::sched_yield() };
        if yielded.elapsed() >= CONTENDED {
            return Spun::Contended;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn never() -> bool {
        false
    }

    /// Spins (up to a minute) again each time another thread took the CPU
    /// meanwhile (tests run side by side), and says how the spin ended.
    fn spin_past_others(epoll: &OwnedFd, woken: impl Fn() -> bool) -> Spun {
        loop {
            match spin_until_ready(epoll, Duration::from_secs(60), &woken) {
                Spun::Contended => continue,
                other => return other,
            }
        }
    }

    #[test]
    fn a_spin_stops_for_a_thread_that_wants_its_cpu() {
        let (_a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let epoll = epoll_of(&b);
        let cpu0 = || {
            // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
            // sched_setaffinity only read and write it.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) == 0
            }
        };
        if !cpu0() {
            eprintln!("SKIPPED: this machine does not let a thread be pinned to CPU 0");
            return;
        }
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let busy = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                assert!(cpu0());
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        // The busy thread shares CPU 0 with this one: a minute's spin
        // stops at a yield long before.
        let start = Instant::now();
        let spun = spin_until_ready(&epoll, Duration::from_secs(60), never);
        stop.store(true, Ordering::Relaxed);
        busy.join().unwrap();
        assert_eq!(spun, Spun::Contended);
        assert!(start.elapsed() < Duration::from_secs(30));
    }

    fn epoll_of(conn: &impl AsRawFd) -> OwnedFd {
        // SAFETY: as in `poller`.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: just created, owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        add(&epoll, conn.as_raw_fd()).unwrap();
        epoll
    }

    #[test]
    fn a_spin_ends_when_a_watched_connection_has_a_message() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let epoll = epoll_of(&b);
        // Nothing to read: the spin runs out.
        assert_ne!(
            spin_until_ready(&epoll, Duration::from_micros(200), never),
            Spun::Ready
        );
        // A message waiting: it ends at once (well before a minute).
        a.write_all(b"x").unwrap();
        let start = Instant::now();
        assert_eq!(spin_past_others(&epoll, never), Spun::Ready);
        assert!(start.elapsed() < Duration::from_secs(30));
        // One sent from another thread while spinning ends it too.
        let mut buf = [0u8; 1];
        std::io::Read::read_exact(&mut &b, &mut buf).unwrap();
        let sender = std::thread::spawn(move || a.write_all(b"y").unwrap());
        assert_eq!(spin_past_others(&epoll, never), Spun::Ready);
        sender.join().unwrap();
    }

    #[test]
    fn a_connection_whose_peer_hung_up_leaves_the_set() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let epoll = epoll_of(&b);
        drop(a);
        // The peer's hang-up is news once...
        assert_eq!(spin_past_others(&epoll, never), Spun::Ready);
        // ...and then, although `b` stays open (and reads as at its end),
        // it no longer ends spins.
        assert_ne!(
            spin_until_ready(&epoll, Duration::from_micros(200), never),
            Spun::Ready
        );
        drop(b);
    }

    #[test]
    fn only_a_single_threaded_runtimes_connections_are_watched() {
        let (_a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        INSTALLED.store(true, Ordering::Relaxed);
        let watched = |rt: tokio::runtime::Runtime| {
            let _in = rt.enter();
            let p = poller()?;
            watch(&b);
            // Watched already: a second add says so.
            let again = add(&p.epoll, b.as_raw_fd());
            // SAFETY: `p.epoll` is open.
            unsafe {
                libc::epoll_ctl(
                    p.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    b.as_raw_fd(),
                    std::ptr::null_mut(),
                )
            };
            Some(again.is_err())
        };
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let single = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        match (watched(multi), watched(single)) {
            (Some(multi), Some(single)) => {
                assert!(!multi, "a multi-threaded runtime's connection was watched");
                assert!(
                    single,
                    "a single-threaded runtime's connection was not watched"
                );
            }
            _ => eprintln!("SKIPPED: busy polling is off here ({ENV})"),
        }
    }

    #[test]
    fn a_spin_ends_when_a_task_is_woken_from_another_thread() {
        let (_a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let epoll = epoll_of(&b);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let metrics = rt.handle().metrics();
        let woken = || metrics.global_queue_depth() > 0;
        assert_ne!(
            spin_until_ready(&epoll, Duration::from_micros(200), woken),
            Spun::Ready
        );
        // Spawned from outside the runtime: queued for it, as a task woken
        // by a thread of its own (a slot, a blocking job) is.
        let _task = rt.handle().spawn(async {});
        assert_eq!(spin_past_others(&epoll, woken), Spun::Ready);
    }

    #[test]
    fn a_spin_ends_when_the_block_on_future_is_woken_from_another_thread() {
        let (_a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let epoll = epoll_of(&b);
        let woken = || BLOCK_ON_WOKEN.load(Ordering::Acquire);
        // A future that keeps the waker it was polled with.
        let kept: std::sync::Arc<std::sync::Mutex<Option<std::task::Waker>>> = Default::default();
        let keep = kept.clone();
        let mut fut = Box::pin(noting_wakes(std::future::poll_fn(move |cx| {
            *keep.lock().unwrap() = Some(cx.waker().clone());
            std::task::Poll::<()>::Pending
        })));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_ne!(
            spin_until_ready(&epoll, Duration::from_micros(200), woken),
            Spun::Ready
        );
        let waker = kept.lock().unwrap().take().unwrap();
        std::thread::spawn(move || waker.wake()).join().unwrap();
        assert_eq!(spin_past_others(&epoll, woken), Spun::Ready);
        // Polled again: nothing new to note.
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(!woken());
    }

    /// Whether `poller.wait()` (a minute's spin, on a connection that
    /// never speaks) returns at once rather than after the minute.
    fn waits_no_spin(spinning: bool) -> bool {
        let (_a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let poller = Poller {
            epoll: epoll_of(&b),
            spin: Duration::from_secs(60),
            spinning: AtomicBool::new(spinning),
        };
        let start = Instant::now();
        poller.wait();
        assert_eq!(poller.spinning.load(Ordering::Relaxed), spinning);
        start.elapsed() < Duration::from_secs(30)
    }

    #[test]
    fn no_spin_while_paused() {
        pause(true);
        let at_once = waits_no_spin(false);
        pause(false);
        assert!(at_once);
    }

    #[test]
    fn one_thread_spins_at_a_time() {
        // Another thread spins already: this one sleeps at once, not a
        // minute later.
        assert!(waits_no_spin(true));
    }

    #[test]
    fn unset_spins_the_default_and_off_never() {
        assert_eq!(spin_of(None), Ok(Some(DEFAULT_SPIN)));
        assert_eq!(spin_of(Some("20us")), Ok(Some(Duration::from_micros(20))));
        for off in ["off", "OFF", " off ", "0", "0us"] {
            assert_eq!(spin_of(Some(off)), Ok(None), "{off}");
        }
        let long = spin_of(Some("2ms")).unwrap_err();
        assert!(long.contains(ENV) && long.contains("50us"), "{long}");
        let bad = spin_of(Some("soon")).unwrap_err();
        assert!(bad.contains(ENV) && bad.contains("off"), "{bad}");
    }
}
