//! The thread that advances a worker's engines' epochs: every [`TICK`]
//! while a store exists (a task or an actor), asleep once none has for a
//! while, so an idle worker does not wake a hundred times a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::Duration;
use wasmtime::{Engine, EngineWeak};

/// How often the epoch advances while a store exists.
pub const TICK: Duration = Duration::from_millis(10);

/// Ticks with no store before the thread sleeps: a worker running tasks
/// one after another, each finished before the next begins, keeps its
/// ticker awake instead of waking it once per task.
const IDLE_TICKS: u32 = 50;

/// What the ticking thread and the stores share.
struct State {
    /// Stores alive.
    stores: AtomicUsize,
    /// Set while the thread sleeps (or is about to): the next store wakes it.
    asleep: AtomicBool,
    /// Set when the sandbox goes: the thread ends.
    stop: AtomicBool,
}

/// A worker's epoch ticker; the thread ends when this is dropped.
pub(super) struct Ticker {
    state: Arc<State>,
    thread: Thread,
}

/// Held by a store for its life: the ticker ticks while any is held.
pub(super) struct Running(Arc<State>);

impl Ticker {
    /// Starts the thread ticking `engines`.
    pub(super) fn start(engines: &[&Engine]) -> std::io::Result<Self> {
        let engines: Vec<EngineWeak> = engines.iter().map(|e| e.weak()).collect();
        let state = Arc::new(State {
            stores: AtomicUsize::new(0),
            asleep: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let ticking = state.clone();
        let handle = std::thread::Builder::new()
            .name("dtask-epoch".into())
            .spawn(move || tick(&ticking, &engines))?;
        Ok(Self {
            state,
            thread: handle.thread().clone(),
        })
    }

    /// Marks a store alive until the returned guard drops, waking the
    /// thread if it sleeps.
    pub(super) fn running(&self) -> Running {
        self.state.stores.fetch_add(1, Ordering::SeqCst);
        if self.state.asleep.swap(false, Ordering::SeqCst) {
            self.thread.unpark();
        }
        Running(self.state.clone())
    }

    /// Whether the thread sleeps now (for tests).
    #[cfg(test)]
    pub(super) fn asleep(&self) -> bool {
        self.state.asleep.load(Ordering::SeqCst)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.stores.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// The thread's loop: tick while stores exist, sleep after [`IDLE_TICKS`]
/// without one, end when the ticker is dropped. It holds the engines
/// weakly, so as not to keep them alive.
fn tick(state: &State, engines: &[EngineWeak]) {
    let mut idle = 0u32;
    while !state.stop.load(Ordering::SeqCst) {
        for engine in engines.iter().filter_map(EngineWeak::upgrade) {
            engine.increment_epoch();
        }
        if state.stores.load(Ordering::SeqCst) > 0 {
            idle = 0;
        } else {
            idle += 1;
        }
        if idle >= IDLE_TICKS {
            // Said before the last look, so a store created after that
            // look sees it and wakes the thread (a wake-up given before
            // `park` makes it return at once).
            state.asleep.store(true, Ordering::SeqCst);
            if state.stores.load(Ordering::SeqCst) == 0 && !state.stop.load(Ordering::SeqCst) {
                std::thread::park();
            }
            state.asleep.store(false, Ordering::SeqCst);
            idle = 0;
            continue;
        }
        std::thread::sleep(TICK);
    }
}
