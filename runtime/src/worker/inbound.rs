//! Inputs a worker's tasks fetch from other workers.
//!
//! Two bounds keep a backlog of tasks from fetching more than the worker
//! can hold:
//! - **One fetch per key.** Tasks needing the same input while another
//!   task fetches it, or still holds it, share that copy: ten dependents
//!   of one big value queued here fetch it once and hold it once.
//! - **Room for what was fetched.** The bytes a task's inputs take are
//!   counted against the worker's memory budget from before they are
//!   fetched until the task ends. A task whose inputs do not fit waits,
//!   without a slot, for earlier tasks to end; each takes its room at once
//!   for all its inputs, so tasks holding part of theirs never wait on each
//!   other. Tasks queued here thus fetch ahead only as far as memory allows.
//!
//! Room is counted per task (an input two tasks share counts for each),
//! which errs on the side of fetching less ahead.

use bytes::Bytes;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

/// Room is counted in units of this many bytes (a task's room is taken
/// with one `u32` count of them).
const UNIT: u64 = 1 << 10;

/// One fetch of an input: its outcome once known, shared by the tasks
/// that wait for it or hold it.
type Fetch = OnceCell<Result<Bytes, String>>;

/// The inputs being fetched or held by tasks, and the room for them.
pub(super) struct Inbound {
    room: Arc<Semaphore>,
    units: u32,
    /// Fetches by key, while a task holds them.
    fetches: Mutex<HashMap<String, Weak<Fetch>>>,
    /// Entries the map had after its last pruning of ended fetches.
    pruned_at: std::sync::atomic::AtomicUsize,
}

/// A task's share of an input fetched for it: the bytes stay shared with
/// other tasks needing them while this is held.
pub(super) struct Input(Arc<Fetch>);

impl Input {
    /// The input's encoded value.
    pub(super) fn bytes(&self) -> &Bytes {
        match self.0.get() {
            Some(Ok(bytes)) => bytes,
            _ => unreachable!("an Input is made only from a fetch that succeeded"),
        }
    }
}

/// A task's room for its inputs, given back when dropped.
pub(super) struct Room {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Inbound {
    /// Room for `budget` bytes of inputs at once.
    pub(super) fn new(budget: u64) -> Self {
        let units = (budget / UNIT).clamp(1, u64::from(u32::MAX)) as u32;
        Self {
            room: Arc::new(Semaphore::new(units as usize)),
            units,
            fetches: Mutex::new(HashMap::new()),
            pruned_at: Default::default(),
        }
    }

    /// Waits for room for `bytes` of inputs (all of the room, if they
    /// need more: such a task fetches alone).
    pub(super) async fn room(&self, bytes: u64) -> Room {
        if bytes == 0 {
            return Room { _permit: None };
        }
        let units = bytes.div_ceil(UNIT).min(u64::from(self.units)) as u32;
        let permit = self
            .room
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("the room's semaphore is never closed");
        Room {
            _permit: Some(permit),
        }
    }

    /// Input `key`: the copy another task fetched or is fetching, else
    /// one fetched now with `fetch`. A failed fetch is not kept: the next
    /// task needing `key` tries again.
    pub(super) async fn get<F, Fut>(&self, key: &str, fetch: F) -> Result<Input, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, String>>,
    {
        let cell = {
            let mut fetches = self.fetches.lock().expect("fetches lock");
            match fetches.get(key).and_then(Weak::upgrade) {
                Some(cell) => cell,
                None => {
                    let cell = Arc::new(Fetch::new());
                    fetches.insert(key.to_string(), Arc::downgrade(&cell));
                    self.prune(&mut fetches);
                    cell
                }
            }
        };
        match cell.get_or_init(fetch).await {
            Ok(_) => Ok(Input(cell)),
            Err(why) => {
                let why = why.clone();
                let mut fetches = self.fetches.lock().expect("fetches lock");
                if fetches
                    .get(key)
                    .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&cell)))
                {
                    fetches.remove(key);
                }
                Err(why)
            }
        }
    }

    /// Drops the entries of fetches no task holds any more, once the map
    /// has doubled since it was last pruned (amortised: no walk per fetch).
    fn prune(&self, fetches: &mut HashMap<String, Weak<Fetch>>) {
        use std::sync::atomic::Ordering::Relaxed;
        if fetches.len() < 2 * self.pruned_at.load(Relaxed).max(64) {
            return;
        }
        fetches.retain(|_, w| w.strong_count() > 0);
        self.pruned_at.store(fetches.len(), Relaxed);
    }

    /// Inputs being fetched or held (ended ones not yet pruned excluded).
    #[cfg(test)]
    fn live(&self) -> usize {
        let fetches = self.fetches.lock().expect("fetches lock");
        fetches.values().filter(|w| w.strong_count() > 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn tasks_needing_one_input_while_it_is_held_fetch_it_once() {
        let inbound = Inbound::new(1 << 20);
        let fetched = AtomicUsize::new(0);
        let fetch = || async {
            fetched.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok(Bytes::from_static(b"value"))
        };
        let (a, b) = tokio::join!(inbound.get("k", fetch), inbound.get("k", fetch));
        let (a, b) = (a.unwrap(), b.unwrap());
        let c = inbound.get("k", fetch).await.unwrap();
        assert_eq!(fetched.load(Ordering::SeqCst), 1);
        assert_eq!(a.bytes().as_ptr(), c.bytes().as_ptr(), "one copy");
        drop((a, b, c));
        // Held by no task, it is fetched again when next needed.
        assert_eq!(inbound.live(), 0);
        inbound.get("k", fetch).await.unwrap();
        assert_eq!(fetched.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_fetch_is_tried_again_by_the_next_task() {
        let inbound = Inbound::new(1 << 20);
        let err = inbound
            .get("k", || async { Err("holder gone".to_string()) })
            .await;
        assert_eq!(err.err().as_deref(), Some("holder gone"));
        let ok = inbound
            .get("k", || async { Ok(Bytes::from_static(b"v")) })
            .await
            .unwrap();
        assert_eq!(&ok.bytes()[..], b"v");
    }

    #[tokio::test]
    async fn a_task_waits_for_room_until_an_earlier_one_gives_its_back() {
        let inbound = Inbound::new(10 * UNIT);
        let first = inbound.room(6 * UNIT).await;
        let mut second = Box::pin(inbound.room(6 * UNIT));
        assert!(
            futures::poll!(second.as_mut()).is_pending(),
            "no room beside the first"
        );
        drop(first);
        second.await;
        // More than all the room takes all of it, and still goes.
        inbound.room(100 * UNIT).await;
        assert!(inbound.room(0).await._permit.is_none());
    }

    #[test]
    fn ended_fetches_are_pruned_as_the_map_grows() {
        let inbound = Inbound::new(1 << 20);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for i in 0..1000 {
            let key = format!("k{i}");
            rt.block_on(inbound.get(&key, || async { Ok(Bytes::new()) }))
                .unwrap();
        }
        let entries = inbound.fetches.lock().unwrap().len();
        assert!(entries < 200, "{entries} entries for no live fetch");
    }
}
