//! A worker's execution slots, handed out by priority.
//!
//! A task takes a slot only while it computes (see the module above). When
//! more tasks wait than slots are free, a freed slot goes to the waiting
//! task of highest priority, the earliest to ask among equals: a
//! high-priority task sent after a backlog of low-priority ones on the same
//! worker runs next, not last.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Waiting requests past which those that gave up are swept out (then at
/// every doubling).
const SWEEP_AT: usize = 1024;

/// The slots of one worker.
#[derive(Debug)]
pub struct Slots {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    free: usize,
    /// Who waits: highest priority, then earliest, first.
    waiting: BinaryHeap<Waiter>,
    asked: u64,
}

#[derive(Debug)]
struct Waiter {
    order: (i32, Reverse<u64>),
    grant: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order.cmp(&other.order)
    }
}

/// One slot, held until dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.give_back();
    }
}

/// A request for a slot while it waits: dropped (the task was cancelled
/// or stolen) after its slot was granted, it hands the slot on.
struct Asking {
    slots: Arc<Slots>,
    grant: Option<oneshot::Receiver<()>>,
}

impl Drop for Asking {
    fn drop(&mut self) {
        if let Some(mut rx) = self.grant.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.slots.give_back();
            }
        }
    }
}

impl Slots {
    /// `n` slots (at least one).
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                free: n.max(1),
                waiting: BinaryHeap::new(),
                asked: 0,
            }),
        })
    }

    /// A slot for a task of `priority`, waiting for one if none is free.
    /// Cancel-safe: dropping the future gives up its place, or the slot.
    pub async fn acquire(self: &Arc<Self>, priority: i32) -> Slot {
        let rx = {
            let mut inner = self.inner.lock().expect("slots lock");
            if inner.free > 0 {
                inner.free -= 1;
                return Slot {
                    slots: self.clone(),
                };
            }
            let (tx, rx) = oneshot::channel();
            inner.asked += 1;
            let order = (priority, Reverse(inner.asked));
            // Waiters that gave up (cancelled, stolen) stay in the heap until
            // a freed slot reaches them; while every slot is held for long,
            // sweep them out before they pile up.
            if inner.waiting.len() >= SWEEP_AT && inner.waiting.len().is_power_of_two() {
                inner.waiting.retain(|w| !w.grant.is_closed());
            }
            inner.waiting.push(Waiter { order, grant: tx });
            rx
        };
        let mut asking = Asking {
            slots: self.clone(),
            grant: Some(rx),
        };
        let granted = asking.grant.as_mut().expect("set above").await;
        // Granted: the slot is this task's now, whatever dropping `asking`
        // would have done.
        asking.grant = None;
        debug_assert!(granted.is_ok(), "a waiter is only dropped by a grant");
        Slot {
            slots: self.clone(),
        }
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.inner.lock().expect("slots lock").free
    }

    /// Hands a slot to the first waiter still waiting, or frees it.
    fn give_back(&self) {
        let mut inner = self.inner.lock().expect("slots lock");
        while let Some(w) = inner.waiting.pop() {
            if w.grant.send(()).is_ok() {
                return;
            }
        }
        inner.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Runs `f` on a current-thread runtime.
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn a_freed_slot_goes_to_the_highest_priority_then_the_earliest() {
        block_on(async {
            let slots = Slots::new(1);
            let held = slots.acquire(0).await;
            let order = Arc::new(Mutex::new(Vec::new()));
            let mut tasks = Vec::new();
            // Asked in this order: low first, the high one last.
            for (name, priority) in [("low-a", 0), ("low-b", 0), ("mid", 5), ("high", 10)] {
                let slots = slots.clone();
                let order = order.clone();
                tasks.push(tokio::spawn(async move {
                    let _slot = slots.acquire(priority).await;
                    order.lock().unwrap().push(name);
                }));
                // Each is waiting before the next asks.
                tokio::task::yield_now().await;
            }
            assert_eq!(slots.free(), 0);
            drop(held);
            for t in tasks {
                t.await.unwrap();
            }
            assert_eq!(*order.lock().unwrap(), ["high", "mid", "low-a", "low-b"]);
            assert_eq!(slots.free(), 1);
        });
    }

    #[test]
    fn waiters_that_gave_up_do_not_pile_up_while_the_slot_is_held() {
        block_on(async {
            let slots = Slots::new(1);
            let held = slots.acquire(0).await;
            for _ in 0..10 * SWEEP_AT {
                // Asks once, finds no slot, and gives up.
                assert!(futures::FutureExt::now_or_never(slots.acquire(0)).is_none());
            }
            let left = slots.inner.lock().unwrap().waiting.len();
            assert!(left <= 2 * SWEEP_AT, "{left} waiters kept");
            drop(held);
            assert_eq!(slots.free(), 1);
        });
    }

    #[test]
    fn a_waiter_that_gives_up_loses_no_slot() {
        block_on(async {
            let slots = Slots::new(1);
            let held = slots.acquire(0).await;
            // Gives up while waiting.
            let gave_up = tokio::time::timeout(Duration::from_millis(1), slots.acquire(9)).await;
            assert!(gave_up.is_err());
            // Granted and dropped before it ran: the slot comes back.
            let waiting = tokio::spawn({
                let slots = slots.clone();
                async move { slots.acquire(0).await }
            });
            tokio::task::yield_now().await;
            drop(held);
            waiting.abort();
            let _ = waiting.await;
            assert_eq!(slots.free(), 1);
            let a = slots.acquire(0).await;
            assert_eq!(slots.free(), 0);
            drop(a);
            assert_eq!(slots.free(), 1);
        });
    }
}
