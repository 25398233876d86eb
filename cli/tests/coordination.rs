//! End-to-end: tasks that act as clients and coordinate through the
//! scheduler's primitives (the `coord` example guest), on real clusters.

mod common;

use common::*;
use dtask_runtime::client::{Client, ClientError, Future, Item, SubmitOptions};
use dtask_runtime::module::LocalModule;
use dtask_runtime::protocol::Arg;
use dtask_runtime::value::Value;
use std::time::Duration;

async fn connect(c: &Cluster) -> (Client, LocalModule) {
    connect_with(c, coord_wasm()).await
}

/// `n` calls of `function` with the same arguments, each its own task.
async fn many(
    client: &Client,
    module: &LocalModule,
    function: &str,
    args: Vec<Arg>,
    n: usize,
) -> Vec<Future> {
    let impure = SubmitOptions {
        pure: false,
        ..SubmitOptions::default()
    };
    client
        .map(module, function, vec![args; n], &impure)
        .await
        .unwrap()
}

fn keys(futures: &[Future]) -> Vec<String> {
    futures.iter().map(|f| f.key().to_string()).collect()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

#[test]
fn fib_by_nested_submit_and_gather_finishes_on_two_slots() {
    // Two execution slots in all: every fib task waits on its subtasks, so
    // this deadlocks unless waiting tasks give their slots back.
    let c = Cluster::start(2, 1);
    let key = c.ok(&["submit", coord_wasm(), "fib", "20"]);
    assert_eq!(c.ok(&["gather", &key]), "6765");
}

#[test]
fn thousands_of_tasks_waiting_on_their_own_subtasks_finish_on_two_slots() {
    // 4,095 tasks (and then 1,000 more) wait on subtasks, each holding
    // its instance while it waits: this finishes only while placement
    // keeps the tasks waiting at once within the workers' pooled
    // instances (264 each), by running subtasks as they come.
    let c = Cluster::start(2, 1);
    let key = c.ok(&["submit", coord_wasm(), "tree", "12"]);
    assert_eq!(c.ok(&["gather", &key]), "4096");
    let input = "2\n".repeat(1000);
    let out = c.run(&["map", "--pure=false", coord_wasm(), "tree"], &input);
    assert!(out.status.success(), "{}", stderr(&out));
    let keys = String::from_utf8_lossy(&out.stdout).to_string();
    let out = c.run(&["gather"], &keys);
    assert!(out.status.success(), "{}", stderr(&out));
    let sums: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(sums, vec!["4".to_string(); 1000]);
}

#[test]
fn two_hundred_locked_increments_leave_exactly_two_hundred() {
    let c = Cluster::start(2, 2);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let args = vec![value("counter"), value("counter-lock")];
        let futures = many(&client, &module, "locked-increment", args, 200).await;
        let mut seen: Vec<i64> = client
            .gather(&keys(&futures))
            .await
            .unwrap()
            .iter()
            .map(int)
            .collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (1..=200).collect::<Vec<_>>(),
            "each saw a distinct count"
        );
        let Item::Value(total) = client.variable("counter").get(None).await.unwrap() else {
            panic!("the counter holds a value");
        };
        assert_eq!(total, Value::from(200));
    });
}

#[test]
fn a_semaphore_with_two_leases_never_has_three_holders() {
    let c = Cluster::start(2, 4);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let args = vec![value("sem"), value(2), value(30)];
        let futures = many(&client, &module, "sem-holder", args, 16).await;
        let observed: Vec<i64> = client
            .gather(&keys(&futures))
            .await
            .unwrap()
            .iter()
            .map(int)
            .collect();
        let most = observed.iter().copied().max().unwrap();
        assert!(most <= 2, "a task saw {most} holders: {observed:?}");
        // Eight slots for sixteen tasks holding 30 ms each: two at once
        // happened.
        assert_eq!(most, 2, "{observed:?}");
    });
}

#[test]
fn a_lock_held_by_a_panicking_task_is_free_as_soon_as_it_erred() {
    let c = Cluster::start(1, 1);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let held = client
            .submit(
                &module,
                "panic-holding-lock",
                vec![value("L")],
                &SubmitOptions::default(),
            )
            .await
            .unwrap();
        let err = held.result(None).await.unwrap_err();
        assert!(
            err.to_string().contains("panicking while holding L"),
            "{err}"
        );
        // A zero timeout never waits: the lock must be free already.
        let lock = client.lock("L");
        lock.acquire(Some(Duration::ZERO)).await.unwrap();
        lock.release().await.unwrap();
    });
}

#[test]
fn a_lock_held_by_a_task_whose_worker_is_killed_is_free_once_the_death_is_noticed() {
    let c = Cluster::start(2, 1);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let lock = client.lock("L");
        let holder = client
            .submit(
                &module,
                "hold-lock",
                vec![value("L"), value(600_000)],
                &SubmitOptions::default(),
            )
            .await
            .unwrap();
        // Wait (with a deadline) until the task holds the lock.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match lock.acquire(Some(Duration::ZERO)).await {
                Err(ClientError::Timeout(_)) => break,
                Ok(()) => lock.release().await.unwrap(),
                Err(e) => panic!("{e}"),
            }
            assert!(tokio::time::Instant::now() < deadline, "never held");
            tokio::task::yield_now().await;
        }
        // Queue up for the lock first, so it comes to us rather than to the
        // task's rerun on the other worker: the first poll sends the
        // request, and the connection keeps it ahead of what follows.
        let mut waiting = Box::pin(lock.acquire(Some(Duration::from_secs(30))));
        assert!(futures::poll!(&mut waiting).is_pending());
        let busy = client
            .workers()
            .await
            .unwrap()
            .into_iter()
            .find(|w| w.processing > 0)
            .expect("a worker runs the holder");
        let pid: i32 = busy.name.rsplit(':').next().unwrap().parse().unwrap();
        // SAFETY: killing a worker process this test's cluster started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        waiting
            .await
            .expect("the lock was freed when its holder's worker died");
        lock.release().await.unwrap();
        holder.cancel(true).unwrap();
    });
}

#[test]
fn a_producer_and_a_consumer_meet_over_a_bounded_queue() {
    let c = Cluster::start(1, 2);
    let key = c.ok(&["submit", coord_wasm(), "pipeline", "50"]);
    assert_eq!(c.ok(&["gather", &key]), (1..=50).sum::<i64>().to_string());
}

#[test]
fn four_subscribers_each_receive_all_ten_thousand_messages_in_order() {
    let c = Cluster::start(2, 1);
    let key = c.ok(&["submit", coord_wasm(), "fanout", "news", "4", "10000"]);
    let sum: u64 = (0..10_000).sum();
    assert_eq!(
        c.ok(&["gather", &key]),
        format!("[{sum},{sum},{sum},{sum}]")
    );
}

#[test]
fn a_seceded_monitor_counts_what_arrives_until_told_to_stop() {
    let c = Cluster::start(1, 1);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let monitor = client
            .submit(
                &module,
                "monitor",
                vec![value("events"), value("stop")],
                &SubmitOptions::default(),
            )
            .await
            .unwrap();
        // With one slot, these run only because the monitor gave it back.
        let module_tasks = LocalModule::load(tasks_wasm().as_ref()).unwrap();
        let inc = client
            .submit(
                &module_tasks,
                "inc",
                vec![value(1)],
                &SubmitOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(inc.result(None).await.unwrap(), Value::from(2));
        let events = client.queue("events");
        for i in 0..5 {
            events.put_value(&Value::from(i), None).await.unwrap();
        }
        // Stop once the monitor has taken everything.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while events.len().await.unwrap() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "monitor stuck");
            tokio::task::yield_now().await;
        }
        client.event("stop").set().await.unwrap();
        assert_eq!(monitor.result(None).await.unwrap(), Value::from(5));
    });
}

#[test]
fn a_guest_wait_on_an_event_times_out_then_sees_it_set() {
    let c = Cluster::start(1, 1);
    let early = c.ok(&["submit", coord_wasm(), "wait-event", "go", "100"]);
    assert_eq!(c.ok(&["gather", &early]), "false");
    runtime().block_on(async {
        let (client, _) = connect(&c).await;
        client.event("go").set().await.unwrap();
    });
    let late = c.ok(&["submit", coord_wasm(), "wait-event", "go", "5000"]);
    assert_eq!(c.ok(&["gather", &late]), "true");
}

#[test]
fn values_cross_between_the_shell_and_guests_through_a_queue() {
    let c = Cluster::start(1, 1);
    c.ok(&["queue", "put", "jobs", "41"]);
    let take = c.ok(&["submit", coord_wasm(), "take", "jobs"]);
    assert_eq!(c.ok(&["gather", &take]), "41");
    let give = c.ok(&["submit", coord_wasm(), "give", "results", "7"]);
    c.ok(&["gather", &give]);
    assert_eq!(c.ok(&["queue", "get", "results", "--timeout", "10s"]), "7");
}

/// A task's `--timeout` ends it while it waits in WASI (a sleep) as well
/// as while it computes; the lock it held is let go of with it.
#[test]
fn a_task_sleeping_past_its_timeout_is_ended_and_its_lock_let_go_of() {
    let c = Cluster::start(1, 1);
    let started = std::time::Instant::now();
    let key = c.ok(&[
        "submit",
        "--timeout",
        "300ms",
        coord_wasm(),
        "hold-lock",
        "slept",
        "600000",
    ]);
    let out = c.run(&["gather", &key], "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("time limit"), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the sleep was not cut short"
    );
    let out = c.run(&["lock", "acquire", "slept", "--timeout", "10s"], "");
    assert!(out.status.success(), "{}", stderr(&out));
}

/// More tasks waiting (seceded, polling a queue until an event is set)
/// than a one-slot worker may hold instances (its pool, 264 for one slot,
/// and none set up on demand past it): those past it wait for an instance
/// to come free instead of failing, and every task ends once the event is
/// set.
#[test]
fn a_task_past_the_worker_instances_waits_for_an_instance() {
    let c = Cluster::start_with(1, 1, &["--max-instances", "264"]);
    let n = 300;
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let args = vec![value("nothing"), value("stop")];
        let monitors = many(&client, &module, "monitor", args, n).await;
        // The pool taken: 264 seceded holding instances, more sent to the
        // worker, which wait for one (with the slot given back, which the
        // monitors need to rejoin once the event is set).
        wait_until(Duration::from_secs(60), "the pool to be taken", || {
            let line = c.ok(&["workers", "--json"]);
            let w: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
            w["executing"].as_u64() == Some(264) && w["processing"].as_u64() > Some(264)
        });
        client.event("stop").set().await.unwrap();
        let counts = client.gather(&keys(&monitors)).await.unwrap();
        assert_eq!(counts, vec![Value::from(0); n]);
    });
}

/// Tasks waiting on a queue hold both of the one worker's pooled instances
/// (`--instances 2`), and two more wait past the pool: each of those runs
/// in an instance set up on demand, as does the task that fills the queue,
/// so all of them end. Without instances past the pool, the last two
/// takers and the producer waited for a pooled instance, and failed after
/// 30 s.
#[test]
fn tasks_waiting_past_the_pool_do_not_keep_the_task_they_wait_for_from_running() {
    let c = Cluster::start_with(1, 1, &["--instances", "2"]);
    let takers: Vec<String> = (0..4)
        .map(|_| c.ok(&["submit", "--pure=false", coord_wasm(), "take", "items"]))
        .collect();
    wait_until(Duration::from_secs(20), "all four takers to begin", || {
        takers
            .iter()
            .all(|k| json_lines(&c.ok(&["status", "--json", k]))[0]["started"].is_string())
    });
    // Two pooled, two set up on demand (as of the worker's next
    // heartbeat), and the worker still takes tasks.
    wait_until(Duration::from_secs(20), "the instances reported", || {
        let w = &json_lines(&c.ok(&["workers", "--json"]))[0];
        w["instances_pooled"] == 2 && w["instances_on_demand"] == 2
    });
    let workers = json_lines(&c.ok(&["workers", "--json"]));
    assert_eq!(workers[0]["instances_full"], false, "{workers:?}");
    let producer = c.ok(&["submit", coord_wasm(), "produce", "items", "4"]);
    assert_eq!(c.ok(&["gather", &producer]), "4");
    let mut taken: Vec<i64> = takers
        .iter()
        .map(|k| c.ok(&["gather", k]).parse().unwrap())
        .collect();
    taken.sort_unstable();
    assert_eq!(taken, [1, 2, 3, 4]);
}
