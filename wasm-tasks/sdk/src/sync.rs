//! Global locks, semaphores and events.

use std::time::Duration;

use crate::bindings::dtask::task::{event, lock, semaphore};
use crate::value::timeout_ms;
use crate::{Error, Result};

/// A global mutual-exclusion lock.
///
/// A lease ends when its [`LockGuard`] is released or dropped, and also,
/// whatever the guard, when the holding task ends, fails or is cancelled,
/// or its worker dies.
///
/// ```no_run
/// # fn main() -> dtask_sdk::Result<()> {
/// use dtask_sdk::Lock;
///
/// let _guard = Lock::new("db").acquire()?;
/// // … only one task at a time runs this …
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    name: String,
}

impl Lock {
    /// The lock called `name`.
    pub fn new(name: impl Into<String>) -> Lock {
        Lock { name: name.into() }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes the lock, waiting while another holds it.
    pub fn acquire(&self) -> Result<LockGuard> {
        self.acquire_within(None)
    }

    /// Takes the lock, waiting at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<LockGuard> {
        self.acquire_within(Some(timeout))
    }

    /// Takes the lock if it is free: `None` if another holds it.
    pub fn try_acquire(&self) -> Result<Option<LockGuard>> {
        match self.acquire_within(Some(Duration::ZERO)) {
            Ok(guard) => Ok(Some(guard)),
            Err(Error::Timeout) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn acquire_within(&self, timeout: Option<Duration>) -> Result<LockGuard> {
        lock::acquire(&self.name, timeout_ms(timeout))?;
        Ok(LockGuard {
            name: self.name.clone(),
            held: true,
        })
    }
}

/// A held lease of a [`Lock`]; dropping it releases the lock.
#[derive(Debug)]
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard {
    name: String,
    held: bool,
}

impl LockGuard {
    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Releases the lock, reporting an error (such as a lease the host
    /// already ended) that dropping the guard would ignore.
    pub fn release(mut self) -> Result<()> {
        self.held = false;
        Ok(lock::release(&self.name)?)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.held {
            let _ = lock::release(&self.name);
        }
    }
}

/// A global counting semaphore: at most `max_leases` holders at once.
/// Leases end like [`Lock`] leases.
///
/// ```no_run
/// # fn main() -> dtask_sdk::Result<()> {
/// use dtask_sdk::Semaphore;
///
/// let _lease = Semaphore::new("downloads", 4).acquire()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Semaphore {
    name: String,
    max_leases: u32,
}

impl Semaphore {
    /// The semaphore called `name` with `max_leases` leases. The number
    /// applies when an acquire through this handle creates the semaphore;
    /// acquiring is an error if it exists with another number.
    pub fn new(name: impl Into<String>, max_leases: u32) -> Semaphore {
        Semaphore {
            name: name.into(),
            max_leases,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its number of leases.
    pub fn max_leases(&self) -> u32 {
        self.max_leases
    }

    /// Takes one lease, waiting while all are taken.
    pub fn acquire(&self) -> Result<SemaphoreGuard> {
        self.acquire_within(None)
    }

    /// Takes one lease, waiting at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<SemaphoreGuard> {
        self.acquire_within(Some(timeout))
    }

    /// Takes a lease if one is free: `None` if all are taken.
    pub fn try_acquire(&self) -> Result<Option<SemaphoreGuard>> {
        match self.acquire_within(Some(Duration::ZERO)) {
            Ok(guard) => Ok(Some(guard)),
            Err(Error::Timeout) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn acquire_within(&self, timeout: Option<Duration>) -> Result<SemaphoreGuard> {
        semaphore::acquire(&self.name, self.max_leases, timeout_ms(timeout))?;
        Ok(SemaphoreGuard {
            name: self.name.clone(),
            held: true,
        })
    }
}

/// A held lease of a [`Semaphore`]; dropping it gives the lease back.
#[derive(Debug)]
#[must_use = "the lease is given back as soon as the guard is dropped"]
pub struct SemaphoreGuard {
    name: String,
    held: bool,
}

impl SemaphoreGuard {
    /// The semaphore's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Gives the lease back, reporting an error that dropping the guard
    /// would ignore.
    pub fn release(mut self) -> Result<()> {
        self.held = false;
        Ok(semaphore::release(&self.name)?)
    }
}

impl Drop for SemaphoreGuard {
    fn drop(&mut self) {
        if self.held {
            let _ = semaphore::release(&self.name);
        }
    }
}

/// A global event: a flag that tasks can wait on.
///
/// ```no_run
/// # fn main() -> dtask_sdk::Result<()> {
/// use std::time::Duration;
/// use dtask_sdk::Event;
///
/// let ready = Event::new("ready");
/// ready.wait_timeout(Duration::from_secs(10))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    name: String,
}

impl Event {
    /// The event called `name`.
    pub fn new(name: impl Into<String>) -> Event {
        Event { name: name.into() }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the event, waking every waiter.
    pub fn set(&self) -> Result<()> {
        Ok(event::set(&self.name)?)
    }

    /// Clears the event.
    pub fn clear(&self) -> Result<()> {
        Ok(event::clear(&self.name)?)
    }

    /// Waits until the event is set.
    pub fn wait(&self) -> Result<()> {
        Ok(event::wait(&self.name, None)?)
    }

    /// Waits at most `timeout` for the event to be set:
    /// [`Error::Timeout`] if it is not.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        Ok(event::wait(&self.name, timeout_ms(Some(timeout)))?)
    }

    /// Whether the event is set.
    pub fn is_set(&self) -> Result<bool> {
        Ok(event::is_set(&self.name)?)
    }
}
