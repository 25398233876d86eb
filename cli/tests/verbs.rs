//! End-to-end: the futures verbs beyond submit and gather — as-completed,
//! cancel, retry, retries, scatter, who-has, workers, info, fire-and-forget,
//! placement — with their exit codes and JSON output.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_status(c: &Cluster, key: &str, want: &str) {
    wait_until(
        Duration::from_secs(20),
        &format!("{key} to be {want}"),
        || status(c, key) == want,
    );
}

#[test]
fn as_completed_prints_keys_as_they_finish() {
    let c = Cluster::start(2, 1);
    // `slow` waits for an item on a queue, put only once `fast` is done: the
    // order is fixed by that, not by timing.
    let slow = c.ok(&["submit", dtask_guests::COORD_WASM, "take", "gate"]);
    let fast = c.submit("inc", &["1"]);
    // The gate opens only once as-completed has printed `fast`: had it
    // connected after both finished, it would list them in argument order.
    let mut listing = c
        .cmd()
        .args(["as-completed", &slow, &fast])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn as-completed");
    let (tx, rx) = std::sync::mpsc::channel();
    let out = listing.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("as-completed printed no {what}"))
    };
    assert_eq!(next("first key"), fast);
    c.ok(&["queue", "put", "gate", "7"]);
    assert_eq!(next("second key"), slow);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = listing.try_wait().expect("wait for as-completed") {
            break status;
        }
        assert!(Instant::now() < deadline, "as-completed did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let keys = c.run(&["map", tasks_wasm(), "inc"], "1\n2\n3\n");
    let out = c.run(&["as-completed", "--with-results"], &stdout(&keys));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut results: Vec<String> = stdout(&out)
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap().to_string())
        .collect();
    results.sort();
    assert_eq!(results, vec!["2", "3", "4"]);
    let out = c.run(&["as-completed", "--json"], &stdout(&keys));
    let lines = json_lines(&stdout(&out));
    assert_eq!(lines.len(), 3);
    assert!(
        lines
            .iter()
            .all(|l| l["status"] == "finished" && l["result"].is_i64())
    );
}

#[test]
fn as_completed_into_head_exits_quietly() {
    let c = Cluster::start(1, 1);
    let keys = c.run(
        &["map", tasks_wasm(), "inc"],
        &(1..=200).map(|i| format!("{i}\n")).collect::<String>(),
    );
    let script = format!("{DTASK} as-completed --with-results | head -1");
    // Clients dying mid-stream must never take the scheduler with them
    // (a write to a vanished peer raises SIGPIPE unless daemons ignore it).
    for _ in 0..5 {
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .env("DTASK_STATE_DIR", c.state.path())
            .env("DTASK_SCHEDULER", &c.addr)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        let _ = child.stdin.take().unwrap().write_all(&keys.stdout);
        let _ = child.wait();
    }
    assert!(alive(c.pid()), "the scheduler died with its clients");
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .env("DTASK_STATE_DIR", c.state.path())
        .env("DTASK_SCHEDULER", &c.addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&keys.stdout).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out).lines().count(), 1);
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

#[test]
fn cancel_interrupts_a_running_task_and_cancels_its_dependents() {
    let c = Cluster::start(1, 1);
    let long = c.submit("spin", &["60000"]);
    let dep = c.submit("inc", &[&format!("@{long}")]);
    wait_status(&c, &long, "processing");
    let started = Instant::now();
    c.ok(&["cancel", &long]);
    assert_eq!(status(&c, &long), "cancelled");
    assert_eq!(status(&c, &dep), "cancelled");
    let out = c.run(&["gather", &dep], "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cancelled"), "{}", stderr(&out));
    assert_eq!(c.run(&["wait", &long], "").status.code(), Some(1));
    // The only slot is free again at once, not after the 60 s spin.
    let next = c.submit("inc", &["41"]);
    assert_eq!(c.ok(&["gather", &next]), "42");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn retries_and_retry_from_the_shell() {
    let c = Cluster::start(1, 1);
    let coord = dtask_guests::COORD_WASM;
    // `fails-first COUNTER N` fails its first N attempts, counted in a
    // variable: no clock involved.
    let flaky = c.ok(&["submit", coord, "fails-first", "flaky", "1"]);
    let out = c.run(&["gather", &flaky], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("attempt 1: the first 1 fail"),
        "{}",
        stderr(&out)
    );
    let reliable = c.ok(&[
        "submit",
        "--retries",
        "3",
        coord,
        "fails-first",
        "reliable",
        "3",
    ]);
    assert_eq!(c.ok(&["gather", &reliable]), "4");
    c.ok(&["retry", &flaky]);
    assert_eq!(c.ok(&["gather", &flaky]), "2");
    let out = c.run(&["retry", &reliable], "");
    assert_eq!(
        out.status.code(),
        Some(2),
        "retrying a finished key is refused"
    );
    // A failure after retries says how many attempts ran.
    let doomed = c.ok(&["submit", "--retries", "2", tasks_wasm(), "fail", "doomed"]);
    let out = c.run(&["gather", &doomed], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("after 3 attempts"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn scatter_values_and_files_round_robin() {
    let c = Cluster::start(2, 1);
    let out = c.run(&["scatter", "--text"], "world");
    assert!(out.status.success(), "{}", stderr(&out));
    let key = stdout(&out).trim().to_string();
    let greet = c.submit("greet", &[&format!("@{key}")]);
    assert_eq!(c.ok(&["gather", "-r", &greet]), "Hello, world!");

    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("a.txt", "one two"), ("b.txt", "three")] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let a = dir.path().join("a.txt");
    let b = dir.path().join("b.txt");
    let keys = c.ok(&[
        "scatter",
        "--text",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 2);
    let who = json_lines(&c.ok(&["who-has", "--json", keys[0], keys[1]]));
    let w0 = who[0]["workers"][0].as_str().unwrap().to_string();
    let w1 = who[1]["workers"][0].as_str().unwrap().to_string();
    assert_ne!(w0, w1, "round-robin over both workers");
    assert_eq!(c.ok(&["gather", "-r", keys[1]]), "three");

    let all = c.run(&["scatter", "--broadcast", "--json"], "[1, 2, 3]");
    let all = stdout(&all).trim().to_string();
    let who = c.ok(&["who-has", &all]);
    assert_eq!(who.split('\t').count(), 3, "key and two workers: {who}");
    let total = c.submit("total", &[&format!("@{all}")]);
    assert_eq!(c.ok(&["gather", &total]), "6");
}

#[test]
fn release_frees_the_data_on_the_worker() {
    let c = Cluster::start(1, 1);
    let big = c.submit("repeat", &["x", "100000"]);
    c.ok(&["wait", &big]);
    let holding = |c: &Cluster| {
        json_lines(&c.ok(&["workers", "--json"]))[0]["holding"]
            .as_u64()
            .unwrap()
    };
    assert!(holding(&c) >= 1);
    c.ok(&["release", &big]);
    wait_until(Duration::from_secs(10), "the worker to free it", || {
        holding(&c) == 0
    });
    assert_eq!(status(&c, &big), "unknown");
}

/// Released work that has not ended is cancelled, as Dask forgets it: a
/// `release --all` of a pipeline stops it. On one slot, a long task
/// running and fifty queued behind it: once released, all are forgotten
/// and the slot is free at once for new work (the long task was
/// interrupted, not left to spin for ten minutes).
#[test]
fn release_all_stops_work_that_has_not_ended() {
    let c = Cluster::start(1, 1);
    let spin = c.submit("spin", &["600000"]);
    wait_status(&c, &spin, "processing");
    let seq: String = (0..50).map(|i| format!("{i}\n")).collect();
    let out = c.run(&["map", tasks_wasm(), "inc"], &seq);
    assert!(out.status.success(), "{}", stderr(&out));
    let queued: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(queued.len(), 50);
    let last = status(&c, &queued[49]);
    assert!(["pending", "processing"].contains(&last.as_str()), "{last}");
    c.ok(&["release", "--all"]);
    assert_eq!(status(&c, &spin), "unknown");
    for k in &queued {
        assert_eq!(status(&c, k), "unknown");
    }
    let k = c.submit("inc", &["1"]);
    assert_eq!(c.ok(&["gather", "--timeout", "30s", &k]), "2");
}

/// `release` of a key the scheduler does not know (a typo, or released
/// already) says so on stderr and still exits 0: releasing is idempotent;
/// `who-has` says so too.
#[test]
fn release_names_keys_the_scheduler_does_not_know() {
    let c = Cluster::start(1, 1);
    let k = c.submit("inc", &["1"]);
    let out = c.run(&["release", &k, "inc-00000000000000000000000000000000"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not know inc-00000000000000000000000000000000"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(&k), "{}", stderr(&out));
    let out = c.run(&["who-has", "inc-00000000000000000000000000000000"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not know inc-00000000000000000000000000000000"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn fire_and_forget_runs_although_nobody_holds_it() {
    let c = Cluster::start(1, 1);
    let key = c.ok(&["submit", "--fire-and-forget", tasks_wasm(), "spin", "2000"]);
    assert_eq!(status(&c, &key), "processing");
    wait_status(&c, &key, "unknown");
}

#[test]
fn gather_errors_skip() {
    let c = Cluster::start(1, 1);
    let ok = c.submit("inc", &["1"]);
    let bad = c.submit("div", &["1", "0"]);
    let out = c.run(&["gather", "--errors", "skip", &ok, &bad, &ok], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "2\n2\n");
}

#[test]
fn gather_errors_skip_leaves_out_failed_tasks_only() {
    let c = Cluster::start(1, 1);
    let ok = c.submit("inc", &["1"]);
    // A key nobody submitted is a mistake, not a failed task.
    let unknown = format!("inc-{}", "0".repeat(32));
    let out = c.run(&["gather", "--errors", "skip", &ok, &unknown], "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&unknown), "{}", stderr(&out));
    // A line of stdin that is not text ends the gather with an error, not
    // quietly as if the keys had ended.
    let mut like = c.cmd();
    like.env("D", DTASK);
    let out = sh(
        &like,
        &format!("printf '{ok}\\n\\377\\n{ok}\\n' | \"$D\" gather"),
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot read keys from stdin"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn gather_prints_a_key_given_again_at_each_of_its_places() {
    let c = Cluster::start(1, 1);
    // `late` waits on a task still spinning when the keys are read, so its
    // places after the first wait on the one watch; `early` and `inc` are
    // done before any of theirs.
    let spin = c.ok(&["submit", tasks_wasm(), "spin", "300"]);
    let late = c.ok(&["submit", tasks_wasm(), "add", &format!("@{spin}"), "0"]);
    let early = c.submit("add", &["1", "2"]);
    let inc = c.submit("inc", &["1"]);
    c.ok(&["wait", &early, &inc]);
    let keys = [&late, &inc, &late, &inc, &early, &late];
    let stdin: String = keys.iter().map(|k| format!("{k}\n")).collect();
    let out = c.run(&["gather", "--release", "--timeout", "20s"], &stdin);
    assert!(out.status.success(), "{}", stderr(&out));
    let n = c.ok(&["gather", &spin]);
    assert_eq!(stdout(&out), format!("{n}\n2\n{n}\n2\n3\n{n}\n"));
}

#[test]
fn placement_by_worker_and_by_resources() {
    let c = Cluster::start(1, 1);
    let gpu = c.extra_worker(&["--resources", "GPU=1"]);
    wait_until(Duration::from_secs(20), "the GPU worker to join", || {
        json_lines(&c.ok(&["workers", "--json"])).len() == 2
    });
    let workers = json_lines(&c.ok(&["workers", "--json"]));
    let gpu_addr = workers
        .iter()
        .find(|w| w["resources"]["GPU"] == 1.0)
        .expect("the GPU worker lists its resources")["address"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..4 {
        let k = c.ok(&[
            "submit",
            "--resources",
            "GPU=1",
            tasks_wasm(),
            "inc",
            &i.to_string(),
        ]);
        c.ok(&["wait", &k]);
        assert_eq!(ran_on(&c, &k), gpu_addr);
    }
    let other = workers
        .iter()
        .find(|w| w["address"] != gpu_addr.as_str())
        .unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    let k = c.ok(&["submit", "--workers", &other, tasks_wasm(), "inc", "100"]);
    c.ok(&["wait", &k]);
    assert_eq!(ran_on(&c, &k), other);
    let info: serde_json::Value = serde_json::from_str(&c.ok(&["info"])).unwrap();
    assert_eq!(info["workers"], 2);
    assert_eq!(info["nthreads"], 2);
    drop(gpu);
}

#[test]
fn a_task_no_connected_worker_can_run_is_submitted_with_a_note_saying_so() {
    let c = Cluster::start(1, 1);
    let gpu = c.run(
        &["submit", "--resources", "GPU=1", tasks_wasm(), "inc", "1"],
        "",
    );
    assert!(gpu.status.success(), "{}", stderr(&gpu));
    assert!(
        stderr(&gpu).contains("no connected worker offers GPU=1; the task waits"),
        "{}",
        stderr(&gpu)
    );
    // `status` says why it waits, in words and in JSON.
    let key = stdout(&gpu).trim().to_string();
    assert_eq!(
        c.ok(&["status", &key]),
        format!("{key}\tno-worker\tno connected worker offers GPU=1")
    );
    let line = &json_lines(&c.ok(&["status", "--json", &key]))[0];
    assert_eq!(line["status"], "no-worker");
    assert_eq!(line["reason"], "no connected worker offers GPU=1");
    // A worker that fits joins: it runs at once.
    let worker = c.extra_worker(&["--resources", "GPU=2"]);
    let out = c.run(&["gather", "--timeout", "60s", &key], "");
    drop(worker);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "2\n");
    let nowhere = c.run(
        &["map", "--workers", "127.0.0.1:9", tasks_wasm(), "inc"],
        "2\n",
    );
    assert!(nowhere.status.success(), "{}", stderr(&nowhere));
    assert!(
        stderr(&nowhere).contains("no connected worker is 127.0.0.1:9"),
        "{}",
        stderr(&nowhere)
    );
    let key = stdout(&nowhere).trim().to_string();
    wait_status(&c, &key, "no-worker");
    assert_eq!(
        c.ok(&["status", &key]),
        format!("{key}\tno-worker\tno connected worker is 127.0.0.1:9")
    );
    // One that a worker can run says nothing.
    let fine = c.run(&["submit", tasks_wasm(), "inc", "3"], "");
    assert!(stderr(&fine).is_empty(), "{}", stderr(&fine));
    // A memory limit above what any worker allows is refused, naming both.
    let big = c.run(
        &[
            "submit",
            "--memory-limit-mib",
            "1000",
            tasks_wasm(),
            "inc",
            "4",
        ],
        "",
    );
    assert_eq!(big.status.code(), Some(2), "{}", stderr(&big));
    assert!(
        stderr(&big).contains("1000 MiB") && stderr(&big).contains("(256 MiB)"),
        "{}",
        stderr(&big)
    );
}

#[test]
fn a_key_submitted_again_under_other_limits_runs_again_under_them() {
    let c = Cluster::start(1, 1);
    let short = c.run(
        &["submit", "--timeout", "300ms", tasks_wasm(), "spin", "1500"],
        "",
    );
    let key = stdout(&short).trim().to_string();
    let out = c.run(&["gather", &key], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("timeout"), "{}", stderr(&out));
    // Same call, same limits: the same (cached) failure.
    let again = c.ok(&["submit", "--timeout", "300ms", tasks_wasm(), "spin", "1500"]);
    assert_eq!(again, key);
    assert_eq!(c.run(&["gather", &key], "").status.code(), Some(1));
    // Same call, a longer timeout: the same key runs again, and finishes.
    let longer = c.ok(&["submit", "--timeout", "30s", tasks_wasm(), "spin", "1500"]);
    assert_eq!(longer, key);
    let out = c.run(&["gather", &key], "");
    assert!(out.status.success(), "{}", stderr(&out));

    // `retry` takes the same limit flags.
    let k = c.ok(&["submit", "--timeout", "300ms", tasks_wasm(), "spin", "1600"]);
    assert_eq!(c.run(&["gather", &k], "").status.code(), Some(1));
    let out = c.run(&["retry", "--memory-limit-mib", "1000", &k], "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    c.ok(&["retry", "--timeout", "30s", &k]);
    let out = c.run(&["gather", &k], "");
    assert!(out.status.success(), "{}", stderr(&out));

    // A cancelled key submitted again under other limits runs again too.
    let k = c.ok(&["submit", "--timeout", "20s", tasks_wasm(), "spin", "1700"]);
    c.ok(&["cancel", &k]);
    wait_status(&c, &k, "cancelled");
    assert_eq!(
        c.ok(&["submit", "--timeout", "30s", tasks_wasm(), "spin", "1700"]),
        k
    );
    let out = c.run(&["gather", &k], "");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_cancelled_key_submitted_again_or_retried_runs_again() {
    let c = Cluster::start(1, 1);
    // Submitted again as it was: it runs (Dask forgets a cancelled key).
    let k = c.submit("spin", &["1800"]);
    c.ok(&["cancel", &k]);
    wait_status(&c, &k, "cancelled");
    assert_eq!(c.submit("spin", &["1800"]), k);
    let out = c.run(&["gather", &k], "");
    assert!(out.status.success(), "{}", stderr(&out));
    // Retried by name: it runs too.
    let k = c.submit("spin", &["1900"]);
    c.ok(&["cancel", &k]);
    wait_status(&c, &k, "cancelled");
    c.ok(&["retry", &k]);
    let out = c.run(&["gather", &k], "");
    assert!(out.status.success(), "{}", stderr(&out));
    // A dependent whose input is still cancelled cannot: retry says so.
    let input = c.submit("spin", &["2000"]);
    let dependent = c.submit("add", &[&format!("@{input}"), "1"]);
    c.ok(&["cancel", &input]);
    wait_status(&c, &dependent, "cancelled");
    let out = c.run(&["retry", &dependent], "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("submit or retry it first"),
        "{}",
        stderr(&out)
    );
    // Finished keys have nothing to run again.
    let done = c.submit("inc", &["1"]);
    c.ok(&["wait", &done]);
    let out = c.run(&["retry", &done], "");
    assert!(
        stderr(&out).contains("neither erred nor been cancelled"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn status_json_lines() {
    let c = Cluster::start(1, 1);
    let k = c.submit("inc", &["1"]);
    c.ok(&["wait", &k]);
    let lines = json_lines(&c.ok(&["status", "--json", &k, "nope-1"]));
    assert_eq!(lines[0]["status"], "finished");
    assert_eq!(lines[1]["status"], "unknown");
}

#[test]
fn progress_bars_on_a_terminal_never_in_a_pipe() {
    let c = Cluster::start(1, 1);
    // script(1) runs the command on a pseudo-terminal and copies what it
    // shows to its own stdout.
    let slow = c.submit("spin", &["1500"]);
    let out = Command::new("script")
        .args(["-qec", &format!("{DTASK} wait {slow}"), "/dev/null"])
        .env("DTASK_STATE_DIR", c.state.path())
        .env("DTASK_SCHEDULER", &c.addr)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let screen = stdout(&out);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains("wait") && screen.contains("0/1"),
        "no progress bar on the terminal: {screen:?}"
    );

    let slow = c.submit("spin", &["1000"]);
    let out = c.run(&["wait", &slow], "");
    assert!(out.status.success());
    assert!(
        stderr(&out).is_empty() && stdout(&out).is_empty(),
        "{}",
        stderr(&out)
    );

    // In `map | gather` only the last command draws a bar; nothing reads
    // "0/0"; rates are whole numbers.
    let terminal = |line: &str| {
        let out = Command::new("script")
            .args(["-qec", line, "/dev/null"])
            .env("DTASK_STATE_DIR", c.state.path())
            .env("DTASK_SCHEDULER", &c.addr)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stdout(&out));
        stdout(&out)
    };
    let w = tasks_wasm();
    let screen = terminal(&format!(
        "printf '1200\\n1201\\n' | {DTASK} map {w} spin | {DTASK} gather"
    ));
    assert!(screen.contains("gather ["), "no gather bar: {screen:?}");
    assert!(!screen.contains("map ["), "two bars: {screen:?}");
    assert!(!screen.contains("0/0"), "{screen:?}");
    assert!(
        !screen
            .split_whitespace()
            .any(|w| w.ends_with("/s") && w.contains('.')),
        "a fractional rate: {screen:?}"
    );
    // Into a pipe (`| head`), no bar at all: it would mix with the data.
    let screen = terminal(&format!(
        "printf '1300\\n1301\\n' | {DTASK} map {w} spin | {DTASK} gather | head -1"
    ));
    assert!(screen.trim().parse::<u64>().is_ok(), "{screen:?}");
}

#[test]
fn gather_json_lines_carry_status_and_result_or_error() {
    let c = Cluster::start(1, 1);
    let ok = c.submit("greet", &["you"]);
    let bad = c.submit("div", &["1", "0"]);
    let out = c.run(&["gather", "--json", "--errors", "skip", &ok, &bad], "");
    let lines = json_lines(&stdout(&out));
    assert_eq!(lines[0]["result"], "Hello, you!");
    assert_eq!(lines[0]["status"], "finished");
    assert_eq!(lines[1]["status"], "error");
    assert!(
        lines[1]["error"]
            .as_str()
            .unwrap()
            .contains("division by zero")
    );
}

#[test]
fn json_output_of_an_erred_key_names_its_error_kind_and_origin() {
    let c = Cluster::start(1, 1);
    let bad = c.submit("div", &["1", "0"]);
    let dependent = c.submit("inc", &[&format!("@{bad}")]);
    let out = c.run(&["gather", "--json", "--errors", "skip", &dependent], "");
    let line = &json_lines(&stdout(&out))[0];
    assert_eq!(line["status"], "error", "{line}");
    assert_eq!(line["kind"], "panic", "{line}");
    assert_eq!(line["origin"], bad.as_str(), "{line}");
    let line = &json_lines(&c.ok(&["status", "--json", &dependent]))[0];
    assert_eq!(line["status"], "error", "{line}");
    assert_eq!(line["kind"], "panic", "{line}");
    assert_eq!(line["origin"], bad.as_str(), "{line}");
    assert!(
        line["error"].as_str().unwrap().contains("division by zero"),
        "{line}"
    );
}

fn info(c: &Cluster) -> serde_json::Value {
    serde_json::from_str(&c.ok(&["info"])).unwrap()
}

#[test]
fn the_shell_lets_go_of_what_it_holds_with_gather_release_and_release_all() {
    let c = Cluster::start(1, 1);
    let keys = c.run(&["map", tasks_wasm(), "inc"], "1\n2\n3\n");
    assert_eq!(info(&c)["held"], 3);
    let out = c.run(&["gather", "--release"], &stdout(&keys));
    assert_eq!(stdout(&out), "2\n3\n4\n", "{}", stderr(&out));
    let now = info(&c);
    assert_eq!(
        (now["held"].as_u64(), now["tasks"].as_u64()),
        (Some(0), Some(0))
    );
    c.run(&["map", tasks_wasm(), "inc"], "7\n8\n");
    assert_eq!(info(&c)["held"], 2);
    c.ok(&["release", "--all"]);
    let now = info(&c);
    assert_eq!(
        (now["held"].as_u64(), now["tasks"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(now["scheduler_rss_bytes"].as_u64() > Some(0));
}

/// Two pipelines under the same client name (the default) that submit
/// the same calls: each map's submit is a hold, and each gather's release
/// lets go of one, so the first pipeline to finish does not free the
/// results the other has yet to fetch (results over 1 KiB live on the
/// workers, and freeing them there made the second gather fail).
#[test]
fn two_pipelines_under_one_client_name_each_keep_what_they_submitted() {
    let c = Cluster::start(1, 1);
    let lines: String = (0..40).map(|i| format!("{i} 2000\n")).collect();
    let first = stdout(&c.run(&["map", tasks_wasm(), "count-bytes"], &lines));
    let second = stdout(&c.run(&["map", tasks_wasm(), "count-bytes"], &lines));
    assert_eq!(first, second, "the same calls, the same keys");
    assert_eq!(info(&c)["held"], 40);
    let out = c.run(&["gather", "--release", "--json"], &first);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&stdout(&out)).len(), 40);
    let out = c.run(&["gather", "--release", "--json"], &second);
    assert!(out.status.success(), "{}", stderr(&out));
    let results = json_lines(&stdout(&out));
    assert_eq!(results.len(), 40);
    assert!(
        results.iter().all(|r| r["status"] == "finished"),
        "{results:?}"
    );
    let now = info(&c);
    assert_eq!(
        (now["held"].as_u64(), now["tasks"].as_u64()),
        (Some(0), Some(0)),
        "both let go: nothing left"
    );
    // A key submitted twice is let go of by the second release.
    let k = c.submit("inc", &["5"]);
    assert_eq!(c.submit("inc", &["5"]), k);
    c.ok(&["release", &k]);
    assert_eq!(c.ok(&["gather", &k]).trim(), "6");
    c.ok(&["release", &k]);
    assert_eq!(info(&c)["tasks"], 0);
}

/// A bad line stops `map`, naming it; the lines before it are submitted
/// and their keys printed (every key it holds, it printed), the lines
/// after it are not.
#[test]
fn map_stopped_by_a_bad_line_prints_the_keys_of_every_line_before_it() {
    let c = Cluster::start(1, 1);
    let mut lines: String = (1..=10_000).map(|i| format!("{i}\n")).collect();
    lines.push_str("not-a-number\n");
    lines.extend((1..=100).map(|i| format!("{}\n", 20_000 + i)));
    let out = c.run(&["map", tasks_wasm(), "inc"], &lines);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("line 10001"), "{}", stderr(&out));
    let keys = stdout(&out);
    assert_eq!(keys.lines().count(), 10_000);
    assert_eq!(info(&c)["held"], 10_000);
    let last = keys.lines().last().unwrap();
    assert_eq!(c.ok(&["gather", last]), "10001");
}

/// A `gather --release` stopped by a failed task still lets go of what
/// it printed; the failed key and those after it stay held.
#[test]
fn gather_release_stopped_by_an_error_lets_go_of_what_it_printed() {
    let c = Cluster::start(1, 1);
    let ok = stdout(&c.run(&["map", tasks_wasm(), "inc"], "1\n2\n"));
    let bad = c.submit("div", &["1", "0"]);
    let after = c.submit("inc", &["9"]);
    assert_eq!(info(&c)["held"], 4);
    let out = c.run(&["gather", "--release"], &format!("{ok}{bad}\n{after}\n"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), "2\n3\n");
    assert_eq!(info(&c)["held"], 2, "the two printed were let go of");
    assert_eq!(status(&c, &bad), "error");
    assert_eq!(status(&c, &after), "finished");
}

#[test]
fn a_release_too_big_to_go_at_once_is_done_when_release_all_returns() {
    // More keys than the scheduler lets go of at once: the rest go a step
    // at a time between other events, and the releasing client's next
    // request (the status round trip `release` ends with) waits for them.
    let c = Cluster::start(1, 1);
    // Enough that letting go of them takes longer than starting `dtask
    // info` does.
    let n = 100_000;
    let input: String = (0..n).map(|i| format!("{i}\n")).collect();
    let keys = c.run(&["map", tasks_wasm(), "inc"], &input);
    assert!(keys.status.success(), "{}", stderr(&keys));
    let out = c.run(&["gather"], &stdout(&keys));
    assert!(out.status.success(), "{}", stderr(&out));
    // Another client name holds one of the same keys.
    let mut other = c.cmd();
    other
        .env("DTASK_CLIENT", "other")
        .args(["submit", tasks_wasm(), "inc", "5"]);
    let shared = run_with_stdin(&mut other, "");
    assert_eq!(
        stdout(&shared),
        stdout(&keys).lines().nth(5).unwrap().to_owned() + "\n"
    );
    assert_eq!(info(&c)["held"], n + 1);
    c.ok(&["release", "--all"]);
    let now = info(&c);
    assert_eq!(
        (now["held"].as_u64(), now["tasks"].as_u64()),
        (Some(1), Some(1)),
        "{now}"
    );
    assert_eq!(c.ok(&["gather", stdout(&shared).trim()]), "6");
}

#[test]
fn map_splits_words_as_a_shell_does() {
    let c = Cluster::start(1, 1);
    let keys = c.run(
        &["map", tasks_wasm(), "greet"],
        "\"hello world\"\n'single quoted'\nplain\nback\\ slash\n",
    );
    assert!(keys.status.success(), "{}", stderr(&keys));
    let out = c.run(&["gather"], &stdout(&keys));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).lines().collect::<Vec<_>>(),
        [
            "\"Hello, hello world!\"",
            "\"Hello, single quoted!\"",
            "\"Hello, plain!\"",
            "\"Hello, back slash!\"",
        ]
    );
    // An unclosed quote is a usage error that says how to quote.
    let out = c.run(&["map", tasks_wasm(), "greet"], "\"unclosed\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("quote"), "{}", stderr(&out));
}

#[test]
fn gather_and_as_completed_give_up_at_their_timeout() {
    let c = Cluster::start(1, 1);
    let quick = c.submit("inc", &["1"]);
    let slow = c.ok(&["submit", "--pure=false", tasks_wasm(), "spin", "60000"]);
    let out = c.run(&["gather", "--timeout", "300ms", &quick, &slow], "");
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    // What was ready by then was printed.
    assert_eq!(stdout(&out), "2\n");
    assert!(
        stderr(&out).contains("not every result"),
        "{}",
        stderr(&out)
    );
    let out = c.run(&["as-completed", "--timeout", "300ms", &slow, &quick], "");
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{quick}\n"));
    // Without a timeout that passes, they answer as before.
    let out = c.run(&["gather", "--timeout", "30s", &quick], "");
    assert_eq!(stdout(&out), "2\n", "{}", stderr(&out));
}

#[test]
fn workers_report_the_bytes_they_hold_and_let_go() {
    let c = Cluster::start(1, 1);
    let held = |c: &Cluster| -> u64 {
        json_lines(&c.ok(&["workers", "--json"]))[0]["nbytes"]
            .as_u64()
            .unwrap()
    };
    let key = stdout(&c.run(&["scatter", "--text"], &"x".repeat(2_000_000)))
        .trim()
        .to_string();
    assert!(!key.is_empty());
    wait_until(Duration::from_secs(20), "2 MB held", || {
        held(&c) >= 2_000_000
    });
    c.ok(&["release", &key]);
    wait_until(Duration::from_secs(20), "the bytes let go", || {
        held(&c) < 1_000_000
    });
}

#[test]
fn a_worker_bound_to_every_interface_advertises_an_address_peers_can_use() {
    let c = Cluster::start(1, 1);
    let wild = c.extra_worker(&["--host", "0.0.0.0"]);
    wait_until(Duration::from_secs(20), "the second worker", || {
        json_lines(&c.ok(&["workers", "--json"])).len() == 2
    });
    let workers = json_lines(&c.ok(&["workers", "--json"]));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    for w in &workers {
        let address = w["address"].as_str().unwrap();
        assert!(!address.starts_with("0.0.0.0"), "{address} is advertised");
        let name = w["name"].as_str().unwrap();
        assert!(name.starts_with(&format!("{}:", host.trim())), "{name}");
    }
    // A result too big to travel inline, made on one worker and taken by a
    // task on the other, goes through the advertised data port.
    let (first, second) = (
        workers[0]["address"].as_str().unwrap(),
        workers[1]["address"].as_str().unwrap(),
    );
    let big = c.ok(&[
        "submit",
        "--workers",
        first,
        tasks_wasm(),
        "repeat",
        "ab",
        "5000",
    ]);
    let len = c.ok(&[
        "submit",
        "--workers",
        second,
        tasks_wasm(),
        "len",
        &format!("@{big}"),
    ]);
    let out = c.run(&["gather", "--timeout", "60s", &len], "");
    drop(wild);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "10000\n");
}

#[test]
fn waiting_on_many_finished_keys_is_not_cut_off_by_its_own_answers() {
    // A scheduler that queues at most 4 MiB for a client: 100,000 answers
    // at once (about 6 MB) would cut the client off, and it would ask
    // again for ever. Verbs watch a window of keys at a time instead.
    let c = Cluster::start_with(2, 1, &["--client-buffer", "4MiB"]);
    let input: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
    let keys = c.run(&["map", tasks_wasm(), "inc"], &input);
    assert!(keys.status.success(), "{}", stderr(&keys));
    let keys = stdout(&keys);
    for verb in [&["wait"][..], &["as-completed"], &["gather"]] {
        let out = start_with_stdin(c.cmd().args(verb), &keys)
            .output_within(Duration::from_secs(120), &format!("{verb:?}"));
        assert!(out.status.success(), "{verb:?}: {}", stderr(&out));
        if verb == ["gather"] {
            let sum: u64 = stdout(&out)
                .lines()
                .map(|l| l.parse::<u64>().unwrap())
                .sum();
            assert_eq!(sum, (2..=100_001).sum::<u64>());
        }
    }
}

/// Runs `cmd` with a stdin that stays open, and its output once it exits
/// (killed, and a panic, past `limit`).
fn output_with_open_stdin(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let open = child.stdin.take();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(open);
    child.wait_with_output().unwrap()
}

#[test]
fn wait_timeout_covers_reading_the_keys_and_connecting() {
    let c = Cluster::start(1, 1);
    // Keys from a stdin that never ends.
    let out = output_with_open_stdin(
        c.cmd().args(["wait", "--timeout", "1s"]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("while reading keys from stdin"),
        "{}",
        stderr(&out)
    );
    // A scheduler that is not there (it would be waited for 30 s).
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = gone.local_addr().unwrap().to_string();
    drop(gone);
    let out = output_with_open_stdin(
        c.cmd()
            .env("DTASK_SCHEDULER", &addr)
            .args(["wait", "--timeout", "1s", "some-key"]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("while connecting to the scheduler"),
        "{}",
        stderr(&out)
    );
}

/// A submit to a scheduler with no worker says so on stderr (the key still
/// on stdout), and the task runs once one joins. (The local default starts
/// its own workers and says nothing while they are on their way:
/// `processes.rs`.)
#[test]
fn a_submit_to_a_scheduler_with_no_worker_says_so() {
    let mut p = Pieces::start(0);
    let out = p.run(&["submit", tasks_wasm(), "inc", "41"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key = stdout(&out).trim().to_string();
    assert!(key.starts_with("inc-"), "{key}");
    assert!(
        stderr(&out).contains("no worker is connected; the task waits until one joins"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        p.ok(&["status", &key]).trim(),
        format!("{key}\tno-worker\tno worker is connected")
    );
    p.add_worker();
    assert_eq!(p.ok(&["gather", "--timeout", "30s", &key]).trim(), "42");
}

/// `cancel` says what came of it: a key left running because another
/// client holds it is named on stderr (exit 0), and a key the scheduler
/// does not know is bad input (exit 2); `--force` cancels the first.
#[test]
fn cancel_names_what_it_left_running_and_what_it_does_not_know() {
    let c = Cluster::start(1, 1);
    let mut other = c.cmd();
    other.env("DTASK_CLIENT", "other");
    let out = other
        .args(["submit", tasks_wasm(), "spin", "60000"])
        .output()
        .unwrap();
    let spin = stdout(&out).trim().to_string();
    let out = c.run(&["cancel", &spin], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{spin} not cancelled")),
        "{}",
        stderr(&out)
    );
    let out = c.run(&["cancel", "inc-00000000000000000000000000000000"], "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not know"), "{}", stderr(&out));
    let out = c.run(&["cancel", "--force", &spin], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("not cancelled"), "{}", stderr(&out));
    assert_eq!(
        c.ok(&["status", &spin]).trim(),
        format!("{spin}\tcancelled")
    );
}
