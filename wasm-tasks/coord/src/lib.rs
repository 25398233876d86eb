//! dtask's example tasks that act as clients of the cluster and coordinate
//! through queues, variables, locks, semaphores, events, pub/sub and
//! actors, all through the guest SDK. The tests run them to exercise the
//! host side. The component also exports two actor resources, a counter
//! and a parameter server (module `actors`).

wit_bindgen::generate!({
    world: "dtask:coord/coord@0.1.0",
    path: ["../wit", "wit"],
    // The imports are the SDK's; generate only the exports here.
    with: {
        "dtask:task/types@0.1.0": dtask_sdk::bindings::dtask::task::types,
        "dtask:task/client@0.1.0": dtask_sdk::bindings::dtask::task::client,
        "dtask:task/queue@0.1.0": dtask_sdk::bindings::dtask::task::queue,
        "dtask:task/variable@0.1.0": dtask_sdk::bindings::dtask::task::variable,
        "dtask:task/lock@0.1.0": dtask_sdk::bindings::dtask::task::lock,
        "dtask:task/semaphore@0.1.0": dtask_sdk::bindings::dtask::task::semaphore,
        "dtask:task/event@0.1.0": dtask_sdk::bindings::dtask::task::event,
        "dtask:task/pubsub@0.1.0": dtask_sdk::bindings::dtask::task::pubsub,
        "dtask:task/actor@0.1.0": dtask_sdk::bindings::dtask::task::actor,
        "dtask:task/worker@0.1.0": dtask_sdk::bindings::dtask::task::worker,
    },
});

mod actors;

use std::time::Duration;

use dtask_sdk::{
    self as sdk, Error, Event, Lock, Queue, Semaphore, SubmitOptions, Subscription, Variable,
    client, current_key,
};

struct Coord;

export!(Coord);

/// The value, or a panic with the error's message: a failed call fails the
/// task.
fn must<T>(result: sdk::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// An integer variable's value, 0 while it is unset.
fn read_or_zero(var: &Variable) -> i64 {
    match var.get_timeout::<i64>(Duration::ZERO) {
        Ok(value) => value,
        Err(Error::Timeout) => 0,
        Err(e) => panic!("reading variable {}: {e}", var.name()),
    }
}

/// Options for subtasks that must run once per submission.
fn impure() -> SubmitOptions {
    SubmitOptions::new().pure(false)
}

impl Guest for Coord {
    fn fib(n: u64) -> u64 {
        if n < 2 {
            return n;
        }
        let c = client();
        let a = must(c.submit("fib", (n - 1,)));
        let b = must(c.submit("fib", (n - 2,)));
        must(c.gather::<u64>(&[a, b])).into_iter().sum()
    }

    fn tree(depth: u32) -> u64 {
        if depth == 0 {
            return 1;
        }
        let c = client();
        let kids: Vec<_> = (0..2)
            .map(|_| must(c.submit_with("tree", (depth - 1,), &impure())))
            .collect();
        must(c.gather::<u64>(&kids)).into_iter().sum()
    }

    fn produce(queue: String, n: u32) -> u32 {
        let queue = Queue::new(queue);
        for x in 1..=i64::from(n) {
            must(queue.put(&x));
        }
        n
    }

    fn consume(queue: String, n: u32) -> i64 {
        let queue = Queue::new(queue);
        (0..n).map(|_| must(queue.get::<i64>())).sum()
    }

    fn pipeline(n: u32) -> i64 {
        let name = format!("{}-queue", current_key());
        // A queue takes its size limit from the put that creates it, so
        // create it bounded (and empty it) before the subtasks use it.
        let queue = Queue::with_maxsize(name.as_str(), 4);
        must(queue.put(&0i64));
        must(queue.get::<i64>());

        let c = client();
        let consumer = must(c.submit_with("consume", (&name, n), &impure()));
        let producer = must(c.submit_with("produce", (&name, n), &impure()));
        let produced: u32 = producer.result().unwrap_or_else(|e| {
            consumer.cancel();
            panic!("the producer failed: {e}")
        });
        assert_eq!(produced, n, "the producer put {produced} of {n} items");
        must(consumer.result())
    }

    fn fails_first(counter: String, n: u32) -> u32 {
        let attempts = Variable::new(counter);
        let attempt = read_or_zero(&attempts) + 1;
        must(attempts.set(&attempt));
        if attempt <= i64::from(n) {
            panic!("attempt {attempt}: the first {n} fail");
        }
        attempt as u32
    }

    fn locked_increment(counter: String, lock: String) -> i64 {
        let guard = must(Lock::new(lock).acquire());
        let counter = Variable::new(counter);
        let value = read_or_zero(&counter) + 1;
        must(counter.set(&value));
        must(guard.release());
        value
    }

    fn sem_holder(sem: String, max_leases: u32, hold_ms: u32) -> u32 {
        let lease = must(Semaphore::new(sem.as_str(), max_leases).acquire());
        let lock = Lock::new(format!("{sem}-lock"));
        let inside = Variable::new(format!("{sem}-inside"));
        let most = Variable::new(format!("{sem}-max"));

        let guard = must(lock.acquire());
        let seen = read_or_zero(&inside) + 1;
        must(inside.set(&seen));
        must(most.set(&read_or_zero(&most).max(seen)));
        must(guard.release());

        std::thread::sleep(Duration::from_millis(u64::from(hold_ms)));

        let guard = must(lock.acquire());
        must(inside.set(&(read_or_zero(&inside) - 1)));
        must(guard.release());
        must(lease.release());
        u32::try_from(seen).unwrap_or_else(|_| panic!("{seen} holders of {sem}"))
    }

    fn panic_holding_lock(lock: String) {
        let guard = must(Lock::new(lock.as_str()).acquire());
        // Keep the lease past the panic: the host must end it when the task
        // fails, not the guard while unwinding.
        std::mem::forget(guard);
        panic!("panicking while holding {lock}");
    }

    fn hold_lock(lock: String, ms: u64) {
        let guard = must(Lock::new(lock).acquire());
        std::thread::sleep(Duration::from_millis(ms));
        must(guard.release());
    }

    fn monitor(queue: String, stop: String) -> u64 {
        let queue = Queue::new(queue);
        let stop = Event::new(stop);
        sdk::secede();
        let mut count = 0;
        while !must(stop.is_set()) {
            match queue.get_item_timeout(Duration::from_millis(20)) {
                Ok(_) => count += 1,
                Err(Error::Timeout) => {}
                Err(e) => panic!("{e}"),
            }
        }
        sdk::rejoin();
        count
    }

    fn publish(topic: String, n: u32) -> u32 {
        for x in 0..u64::from(n) {
            must(sdk::publish(&topic, &x));
        }
        n
    }

    fn subscribe(topic: String, n: u32, ready: String) -> u64 {
        let mut messages = Subscription::<u64>::new(topic.as_str());
        must(Queue::new(ready).put(&current_key()));
        let mut sum = 0;
        for expected in 0..u64::from(n) {
            let got = must(messages.next().expect("a subscription never ends"));
            assert_eq!(got, expected, "message {expected} on {topic} was {got}");
            sum += got;
        }
        sum
    }

    fn fanout(topic: String, subscribers: u32, n: u32) -> Vec<u64> {
        let ready = Queue::new(format!("{}-ready", current_key()));
        let c = client();
        let calls = (0..subscribers).map(|_| (&topic, n, ready.name()));
        let subs = must(c.map_with("subscribe", calls, &impure()));
        for _ in 0..subscribers {
            must(ready.get_item());
        }
        for x in 0..u64::from(n) {
            must(sdk::publish(&topic, &x));
        }
        must(c.gather(&subs))
    }

    fn take(queue: String) -> i64 {
        must(Queue::new(queue).get())
    }

    fn give(queue: String, x: i64) {
        must(Queue::new(queue).put(&x));
    }

    fn wait_event(name: String, timeout_ms: u64) -> bool {
        match Event::new(name).wait_timeout(Duration::from_millis(timeout_ms)) {
            Ok(()) => true,
            Err(Error::Timeout) => false,
            Err(e) => panic!("{e}"),
        }
    }

    fn busy_until(name: String) -> u32 {
        let event = Event::new(name);
        let mut looked = 1;
        while !must(event.is_set()) {
            std::thread::sleep(Duration::from_millis(2));
            looked += 1;
        }
        looked
    }

    fn count_up(actor: String, times: u32) -> i64 {
        actors::count_up(actor, times)
    }

    fn train_step(server: String, step: u32) -> u32 {
        actors::train_step(server, step)
    }

    fn make_counter(start: i64) -> String {
        actors::make_counter(start)
    }

    fn call_stored(var: String) -> i64 {
        actors::call_stored(var)
    }

    fn gather_len(key: String) -> String {
        match sdk::Future::from_key(key).result::<sdk::ByteBuf>() {
            Ok(bytes) => bytes.len().to_string(),
            Err(e) => format!("error: {e}"),
        }
    }
}
