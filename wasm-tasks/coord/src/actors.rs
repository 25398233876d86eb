//! The actors this component exports (the `counter` and `params`
//! interfaces) and the tasks that use them through the SDK's [`Actor`].

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use dtask_sdk::{Actor, Bytes, Variable};

use crate::exports::dtask::coord::{counter, params};
use crate::{Coord, must};

/// The state of a `counter` actor.
pub struct Counter {
    value: Cell<i64>,
}

impl counter::Guest for Coord {
    type Counter = Counter;
}

impl counter::GuestCounter for Counter {
    fn new(start: i64) -> Counter {
        Counter {
            value: Cell::new(start),
        }
    }

    fn increment(&self, by: i64) -> i64 {
        let value = self
            .value
            .get()
            .checked_add(by)
            .unwrap_or_else(|| panic!("the counter overflows adding {by}"));
        self.value.set(value);
        value
    }

    fn get(&self) -> i64 {
        self.value.get()
    }

    fn spin(&self, ms: u64) -> i64 {
        let began = std::time::Instant::now();
        let mut turns = 0u64;
        while began.elapsed() < std::time::Duration::from_millis(ms) {
            turns = std::hint::black_box(turns.wrapping_add(1));
        }
        self.value.get()
    }
}

/// The state of a `server` actor: its blobs by name.
pub struct Server {
    blobs: RefCell<BTreeMap<String, Vec<u8>>>,
}

impl params::Guest for Coord {
    type Server = Server;
}

impl params::GuestServer for Server {
    fn new() -> Server {
        Server {
            blobs: RefCell::new(BTreeMap::new()),
        }
    }

    fn put(&self, key: String, value: Vec<u8>) {
        self.blobs.borrow_mut().insert(key, value);
    }

    fn get(&self, key: String) -> Option<Vec<u8>> {
        self.blobs.borrow().get(&key).cloned()
    }

    fn size(&self) -> u32 {
        let size = self.blobs.borrow().len();
        u32::try_from(size).unwrap_or_else(|_| panic!("the server holds {size} keys"))
    }
}

/// `count-up`: `increment(1)` on `actor`, `times` times.
pub(crate) fn count_up(actor: String, times: u32) -> i64 {
    let counter = Actor::from_key(actor);
    if times == 0 {
        return must(counter.call("get", ()));
    }
    let mut last = 0;
    for _ in 0..times {
        last = must(counter.call("increment", (1i64,)));
    }
    last
}

/// `train-step`: reads `weights`, stores and returns `step` times the sum
/// of their bytes.
pub(crate) fn train_step(server: String, step: u32) -> u32 {
    let server = Actor::from_key(server);
    let weights: Vec<u8> = must(server.call::<Option<Vec<u8>>>("get", ("weights",)))
        .unwrap_or_else(|| panic!("parameter server {server} holds no \"weights\""));
    let sum: u32 = weights.iter().map(|&b| u32::from(b)).sum();
    let grad = step
        .checked_mul(sum)
        .unwrap_or_else(|| panic!("step {step} times the weights' sum {sum} overflows a u32"));
    // Sent as a MessagePack binary; dtask turns it into the `list<u8>`.
    must(server.call::<()>(
        "put",
        (format!("grad-{step}"), Bytes::new(&grad.to_le_bytes())),
    ));
    grad
}

/// `make-counter`: a new counter actor from this module, starting at
/// `start`.
pub(crate) fn make_counter(start: i64) -> String {
    must(Actor::create("counter", (start,))).into_key()
}

/// `call-stored`: `increment(10)` on the counter whose key variable `var`
/// holds.
pub(crate) fn call_stored(var: String) -> i64 {
    let key = must(Variable::new(var.as_str()).get::<String>());
    must(Actor::from_key(key).call("increment", (10i64,)))
}
