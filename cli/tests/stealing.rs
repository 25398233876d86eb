//! End-to-end: work stealing between workers, and priority among the tasks
//! waiting for a slot on one worker. Order and placement are fixed by gates
//! (queue items the test puts), never by timing.

mod common;

use common::*;
use std::time::Duration;

/// The data addresses of the cluster's workers, once `n` joined.
fn worker_addresses(c: &Cluster, n: usize) -> Vec<String> {
    wait_until(Duration::from_secs(20), "the workers to join", || {
        json_lines(&c.ok(&["workers", "--json"])).len() == n
    });
    json_lines(&c.ok(&["workers", "--json"]))
        .iter()
        .map(|w| w["address"].as_str().unwrap().to_string())
        .collect()
}

/// Submits (with `flags`) a task that keeps its slot until the test sets
/// event `gate`; its key, once it has begun. (Assigned to a worker is not
/// enough: it takes its slot only once its module is compiled there, and a
/// task whose module is ready sooner would take the slot first.)
fn hold_slot(c: &Cluster, flags: &[&str]) -> String {
    let mut args = vec!["submit"];
    args.extend_from_slice(flags);
    args.extend([dtask_guests::COORD_WASM, "busy-until", "gate"]);
    let key = c.ok(&args);
    // On the worker it was sent to, when the flags name one.
    let on = flags
        .iter()
        .position(|f| *f == "--workers")
        .map(|i| flags[i + 1]);
    wait_until(
        Duration::from_secs(20),
        "the slot-holding task to begin",
        || {
            json_lines(&c.ok(&["workers", "--json"]))
                .iter()
                .any(|w| w["executing"] == 1 && on.is_none_or(|address| w["address"] == address))
        },
    );
    key
}

#[test]
fn an_idle_worker_takes_tasks_queued_behind_a_busy_one() {
    let c = Cluster::start(2, 1);
    let addrs = worker_addresses(&c, 2);
    let (busy, idle) = (&addrs[0], &addrs[1]);
    // The busy worker's only slot is held until the test opens a gate.
    let blocker = hold_slot(&c, &["--workers", busy]);
    // Preferring the busy worker, they queue there behind the blocker;
    // without stealing they could not finish before the gate opens.
    let keys: Vec<String> = (0..4)
        .map(|i| {
            c.ok(&[
                "submit",
                "--workers",
                busy,
                "--allow-other-workers",
                tasks_wasm(),
                "inc",
                &i.to_string(),
            ])
        })
        .collect();
    for k in &keys {
        let out = c.run(&["gather", "--timeout", "30s", k], "");
        assert!(out.status.success(), "{k}: {}", stderr(&out));
    }
    assert_eq!(status(&c, &blocker), "processing", "the gate is still shut");
    for k in &keys {
        assert_eq!(&ran_on(&c, k), idle, "{k}");
    }
    let info: serde_json::Value = serde_json::from_str(&c.ok(&["info"])).unwrap();
    assert_eq!(info["stolen"], keys.len());
    c.ok(&["event", "set", "gate"]);
    c.ok(&["wait", &blocker]);
}

#[test]
fn a_task_that_must_run_on_the_busy_worker_is_not_taken() {
    let c = Cluster::start(2, 1);
    let addrs = worker_addresses(&c, 2);
    let busy = &addrs[0];
    hold_slot(&c, &["--workers", busy]);
    let pinned = c.ok(&["submit", "--workers", busy, tasks_wasm(), "inc", "7"]);
    // A task free to go anywhere runs on the idle worker at once; by the
    // time it is gathered the scheduler has looked at the workers again.
    let free = c.ok(&["submit", tasks_wasm(), "inc", "8"]);
    assert_eq!(c.ok(&["gather", &free]), "9");
    let another = c.ok(&["submit", tasks_wasm(), "inc", "9"]);
    assert_eq!(c.ok(&["gather", &another]), "10");
    assert_eq!(status(&c, &pinned), "processing");
    c.ok(&["event", "set", "gate"]);
    assert_eq!(c.ok(&["gather", &pinned]), "8");
    assert_eq!(&ran_on(&c, &pinned), busy);
    let info: serde_json::Value = serde_json::from_str(&c.ok(&["info"])).unwrap();
    assert_eq!(info["stolen"], 0);
}

#[test]
fn a_freed_slot_goes_to_the_highest_priority_task_waiting_on_the_worker() {
    let c = Cluster::start(1, 1);
    let coord = dtask_guests::COORD_WASM;
    hold_slot(&c, &[]);
    // Each puts its number on `order` when it runs: the queue's order is
    // the order the worker ran them in, one slot, one at a time.
    let mut keys = Vec::new();
    for i in 1..=4 {
        keys.push(c.ok(&["submit", coord, "give", "order", &i.to_string()]));
    }
    keys.push(c.ok(&["submit", "--priority", "10", coord, "give", "order", "99"]));
    for k in &keys {
        wait_until(
            Duration::from_secs(20),
            "the tasks to reach the worker",
            || status(&c, k) == "processing",
        );
    }
    c.ok(&["event", "set", "gate"]);
    let order: Vec<String> = (0..5)
        .map(|_| c.ok(&["queue", "get", "--timeout", "30s", "order"]))
        .collect();
    assert_eq!(order, ["99", "1", "2", "3", "4"]);
}

/// A worker whose instances (two, all pooled) are all held by tasks
/// waiting in host calls tells the scheduler: a task sent there runs on
/// the other worker instead of waiting for an instance (until this, it
/// failed after 30 s), and once the waiting tasks end the worker takes
/// work again.
#[test]
fn a_task_sent_to_a_worker_out_of_instances_runs_on_another() {
    let c = Cluster::start_with(2, 1, &["--instances", "2", "--max-instances", "2"]);
    worker_addresses(&c, 2);
    let names: Vec<String> = json_lines(&c.ok(&["workers", "--json"]))
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_string())
        .collect();
    let (a, b) = (&names[0], &names[1]);
    // Two tasks on `a` wait for queue items, each holding one of its two
    // instances (their slot given back).
    let waiting: Vec<String> = ["gate-1", "gate-2"]
        .iter()
        .map(|q| {
            c.ok(&[
                "submit",
                "--workers",
                a,
                dtask_guests::COORD_WASM,
                "take",
                q,
            ])
        })
        .collect();
    wait_until(
        Duration::from_secs(20),
        "both waiting tasks to begin",
        || {
            waiting
                .iter()
                .all(|k| json_lines(&c.ok(&["status", "--json", k]))[0]["started"].is_string())
        },
    );
    // Sent to `a` (it prefers it, and `a`'s one slot is free), it cannot
    // begin there: it runs on `b`.
    let x = c.ok(&[
        "submit",
        "--workers",
        a,
        "--allow-other-workers",
        tasks_wasm(),
        "inc",
        "41",
    ]);
    let out = c.run(&["gather", &x], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "42");
    let ran_on = &json_lines(&c.ok(&["status", "--json", &x]))[0]["worker"];
    assert_eq!(ran_on.as_str(), Some(b.as_str()));
    // One that must run on `a` waits there for an instance, and `dtask
    // workers` says `a` has none free.
    let full = |c: &Cluster| {
        json_lines(&c.ok(&["workers", "--json"]))
            .iter()
            .find(|w| w["name"] == a.as_str())
            .map(|w| w["instances_full"].as_bool().unwrap())
            .unwrap()
    };
    let y = c.ok(&["submit", "--workers", a, tasks_wasm(), "inc", "1"]);
    wait_until(
        Duration::from_secs(20),
        "`a` to report its instances full",
        || full(&c),
    );
    // The waiting tasks end: it runs there, and `a` takes work again.
    for (q, k) in ["gate-1", "gate-2"].iter().zip(&waiting) {
        c.ok(&["queue", "put", q, "7"]);
        assert_eq!(c.ok(&["gather", k]), "7");
    }
    assert_eq!(c.ok(&["gather", &y]), "2");
    wait_until(Duration::from_secs(20), "`a` to take work again", || {
        !full(&c)
    });
    let z = c.ok(&["submit", "--workers", a, tasks_wasm(), "inc", "2"]);
    assert_eq!(c.ok(&["gather", &z]), "3");
}

/// Two `dtask` commands of one user (one client name, `default`) share the
/// workers: a task submitted while another command's map waits in line
/// runs at its client's next turn, not after the whole map.
#[test]
fn a_submit_from_another_command_does_not_wait_behind_a_queued_map() {
    let c = Cluster::start(1, 1);
    // A hundred tasks of about 50 ms each, one at a time.
    let calls: String = (0..100).map(|seed| format!("{seed} 2000000\n")).collect();
    let out = c.run(&["map", tasks_wasm(), "pi-hits"], &calls);
    assert!(out.status.success(), "{}", stderr(&out));
    let map_keys = stdout(&out);
    assert_eq!(map_keys.lines().count(), 100);
    let small = c.ok(&["submit", tasks_wasm(), "inc", "1"]);
    assert_eq!(c.ok(&["gather", "--timeout", "60s", &small]), "2");
    let finished = c
        .run(&["status"], &map_keys)
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| l.ends_with(b"\tfinished"))
        .count();
    // In one line with the map, it ran after all hundred.
    assert!(
        finished < 50,
        "{finished} of the map's 100 tasks ran before the later submit"
    );
    assert!(c.run(&["cancel"], &map_keys).status.success());
}
