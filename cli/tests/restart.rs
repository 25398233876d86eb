//! End-to-end: a scheduler killed outright and started again on its journal
//! loses nothing it had recorded; its workers rejoin it.

mod common;

use common::*;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn a_scheduler_killed_and_restarted_on_its_journal_keeps_finished_keys_and_finishes_the_rest() {
    let mut p = Pieces::start(2);
    let tasks = tasks_wasm();
    let small = p.ok(&["submit", tasks, "inc", "10"]);
    // 6,000 bytes: too big to travel inline, so it lives on a worker.
    let big = p.ok(&["submit", tasks, "repeat", "ab", "3000"]);
    assert_eq!(p.ok(&["gather", &small]), "11");
    p.ok(&["wait", &big]);
    let input: String = (0..8).map(|i| format!("{}\n", 2000 + i)).collect();
    let slow = run_with_stdin(
        p.command().args(["map", "--pure=false", tasks, "spin"]),
        &input,
    );
    assert!(slow.status.success(), "{}", stderr(&slow));
    let slow = stdout(&slow);
    // A gather waiting across the restart keeps waiting, and gets them all.
    let mut waiting = p
        .command()
        .arg("gather")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut keys = waiting.stdin.take().unwrap();
        keys.write_all(slow.as_bytes()).unwrap();
    }
    let lines = {
        use std::io::BufRead;
        let (tx, rx) = std::sync::mpsc::channel();
        let out = waiting.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let _ = tx.send(line.unwrap());
            }
        });
        rx
    };
    // So does a queue get waiting on an empty queue (connected long before
    // the restart: the gather's first result takes two seconds).
    let getter = p
        .command()
        .args(["queue", "get", "later"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once it has a result, it is surely connected and watching.
    let first = lines.recv_timeout(Duration::from_secs(30)).unwrap();
    let after = p.ok(&["submit", tasks, "add", &format!("@{small}"), "5"]);
    p.ok(&["queue", "put", "jobs", "42"]);
    p.ok(&["var", "set", "model", &format!("@{big}")]);
    p.ok(&["event", "set", "ready"]);
    p.ok(&["lock", "acquire", "db"]);
    // The lock was taken last: once the journal has it, it has the rest.
    wait_until(Duration::from_secs(30), "the journal to catch up", || {
        journal_records(&p.journal())
            .iter()
            .any(|r| r["Leases"]["name"] == "db" && r["Leases"]["holders"][0] == "default")
    });

    p.restart_scheduler();
    let status = waiting.wait().unwrap();
    let mut got = vec![first];
    got.extend(lines.iter());
    assert!(status.success(), "the waiting gather failed");
    assert_eq!(got.join("\n") + "\n", input);
    wait_until(Duration::from_secs(30), "the workers to rejoin", || {
        p.run(&["workers"]).status.success() && p.ok(&["workers"]).lines().count() == 2
    });

    assert_eq!(p.ok(&["gather", &small]), "11");
    let long = p.ok(&["gather", "--raw", &big]);
    assert_eq!(long, "ab".repeat(3000));
    assert_eq!(p.ok(&["gather", &after]), "16");
    assert_eq!(p.ok(&["queue", "get", "jobs"]), "42");
    p.ok(&["queue", "put", "later", "7"]);
    let got = getter.wait_with_output().unwrap();
    assert!(got.status.success(), "{}", stderr(&got));
    assert_eq!(stdout(&got).trim(), "7");
    assert_eq!(p.ok(&["var", "get", "model"]), big);
    assert_eq!(p.ok(&["event", "is-set", "ready"]), "true");
    let held = p.run(&["lock", "acquire", "db", "--timeout", "200ms"]);
    assert_eq!(
        held.status.code(),
        Some(4),
        "still held by the CLI's client"
    );
    p.ok(&["lock", "release", "db"]);
}

#[test]
fn what_a_client_was_told_survives_the_scheduler_killed_right_after() {
    // The journal's writer lags a second behind the scheduler, as on a
    // slow disk: the answers wait for it, so a kill right after them finds
    // their changes in the journal.
    let mut p = Pieces::start_env(1, &[("DTASK_FAULT_SLOW_JOURNAL_MS", "1000")]);
    let tasks = tasks_wasm();
    p.ok(&["queue", "put", "told", "7"]);
    let key = p.ok(&["submit", tasks, "inc", "41"]);
    p.restart_scheduler();
    assert_eq!(p.ok(&["queue", "get", "told", "--timeout", "20s"]), "7");
    // Known after the restart (an unknown key fails to gather).
    assert_eq!(p.ok(&["gather", &key]), "42");
}

#[test]
fn shutdown_clears_the_journal_so_a_new_scheduler_starts_empty() {
    let mut p = Pieces::start(1);
    let key = p.ok(&["submit", tasks_wasm(), "inc", "1"]);
    assert_eq!(p.ok(&["gather", &key]), "2");
    p.wait_journaled(std::slice::from_ref(&key));
    p.ok(&["shutdown"]);
    let _ = p.scheduler.wait();
    let left: Vec<_> = std::fs::read_dir(p.journal())
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    p.restart_scheduler();
    assert_eq!(p.ok(&["status", &key]), format!("{key}\tunknown"));
}

#[test]
fn the_journal_is_private_to_the_scheduler_user() {
    use std::os::unix::fs::PermissionsExt;
    let p = Pieces::start(1);
    let key = p.ok(&[
        "submit",
        "--env",
        "SECRET=hunter2",
        tasks_wasm(),
        "inc",
        "1",
    ]);
    assert_eq!(p.ok(&["gather", &key]), "2");
    p.wait_journaled(std::slice::from_ref(&key));
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&p.journal()), 0o700);
    for entry in std::fs::read_dir(p.journal()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
}

#[test]
fn a_command_started_while_the_scheduler_is_down_waits_for_it_to_return() {
    let mut p = Pieces::start(1);
    let key = p.ok(&["submit", tasks_wasm(), "inc", "1"]);
    assert_eq!(p.ok(&["gather", &key]), "2");
    p.wait_journaled(std::slice::from_ref(&key));
    p.kill_scheduler();
    let mut gather = p
        .command()
        .args(["gather", &key])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let said = first_line(gather.stderr.take().unwrap(), Duration::from_secs(30))
        .expect("the command says it is waiting");
    assert!(said.contains("retrying"), "{said}");
    p.start_scheduler();
    let out = gather.wait_with_output().unwrap();
    assert!(out.status.success(), "the gather failed");
    assert_eq!(stdout(&out).trim(), "2");
}

/// A map whose input goes on while the scheduler restarts submits what
/// comes meanwhile once it is back, rather than failing mid-pipeline.
#[test]
fn a_map_fed_across_a_scheduler_restart_submits_every_line() {
    use std::io::{BufRead, Write};
    let mut p = Pieces::start(1);
    let mut map = p
        .command()
        .args(["map", tasks_wasm(), "inc"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = map.stdin.take().unwrap();
    let (tx, keys) = std::sync::mpsc::channel();
    let out = map.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let (etx, said) = std::sync::mpsc::channel();
    let err = map.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines() {
            let _ = etx.send(line.unwrap());
        }
    });
    let mut got = Vec::new();
    for n in 1..=3 {
        writeln!(input, "{n}").unwrap();
        got.push(keys.recv_timeout(Duration::from_secs(30)).expect("a key"));
    }
    p.wait_journaled(&got);
    p.kill_scheduler();
    // Once the map has seen the connection break, lines that come while
    // the scheduler is down wait for it.
    let mut stderr_lines = Vec::new();
    while !stderr_lines
        .last()
        .is_some_and(|l: &String| l.contains("reconnecting"))
    {
        stderr_lines.push(
            said.recv_timeout(Duration::from_secs(30))
                .expect("the map says it is reconnecting"),
        );
    }
    for n in 4..=6 {
        writeln!(input, "{n}").unwrap();
    }
    input.flush().unwrap();
    p.start_scheduler();
    drop(input);
    let status = map.wait().unwrap();
    got.extend(keys.iter());
    stderr_lines.extend(said.iter());
    assert!(
        status.success(),
        "the map failed: {}",
        stderr_lines.join("\n")
    );
    assert_eq!(got.len(), 6, "{got:?}");
    let mut args = vec!["gather"];
    args.extend(got.iter().map(String::as_str));
    let results = p.ok(&args);
    let results: Vec<&str> = results.lines().collect();
    assert_eq!(results, ["2", "3", "4", "5", "6", "7"]);
}

#[test]
fn scattered_data_whose_worker_never_returns_is_lost_after_the_rejoin_grace() {
    let mut p = Pieces::start(1);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.bin");
    // Past the inline limit: the only copy is on the worker.
    std::fs::write(&file, vec![3u8; 64 << 10]).unwrap();
    let key = p.ok(&["scatter", file.to_str().unwrap()]);
    p.wait_journaled(std::slice::from_ref(&key));
    p.kill_scheduler();
    p.kill_worker(0);
    p.start_scheduler_with(&["--rejoin-grace", "1s"]);
    // gather answers (lost) instead of waiting for a worker that is gone.
    let out = start_with_stdin(p.command().args(["gather", &key]), "")
        .output_within(Duration::from_secs(30), "gather to answer");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("lost"), "{}", stderr(&out));
}

#[test]
fn gather_as_completed_and_wait_waiting_on_a_cluster_that_stops_exit_3() {
    let c = Cluster::start(1, 1);
    let key = c.ok(&["submit", "--pure=false", tasks_wasm(), "spin", "60000"]);
    let waiting: Vec<_> = [
        vec!["gather", key.as_str()],
        vec!["as-completed", key.as_str()],
        vec!["wait", key.as_str()],
    ]
    .into_iter()
    .map(|args| start_with_stdin(c.cmd().args(&args).env("DTASK_RECONNECT_GRACE", "1s"), ""))
    .collect();
    // Both are waiting on the task (it runs for a minute).
    wait_until(Duration::from_secs(30), "the spin to start", || {
        c.ok(&["workers", "--json"]).contains("\"executing\":1")
    });
    c.ok(&["shutdown"]);
    for w in waiting {
        let out = w.output_within(Duration::from_secs(30), "the waiting command to give up");
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        // (One slow to start, on a busy machine, may not have connected
        // before the shutdown: it says it cannot reach the scheduler.)
        let err = stderr(&out);
        assert!(
            err.contains("the scheduler was shut down")
                || err.contains("cannot reach the scheduler"),
            "{err}"
        );
    }
}

#[test]
fn a_command_waiting_when_the_cluster_is_shut_down_ends_at_once() {
    let c = Cluster::start(1, 1);
    let done = c.submit("inc", &["1"]);
    c.ok(&["wait", &done]);
    let spin = c.ok(&["submit", "--pure=false", tasks_wasm(), "spin", "60000"]);
    // The default grace: a scheduler that merely went away is waited for
    // 30 s; one shut down is not.
    let gather = gather_waiting(&c, &done, &spin, None);
    let began = std::time::Instant::now();
    c.ok(&["shutdown"]);
    let out = ended_within(gather, Duration::from_secs(60), "the gather did not end");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the scheduler was shut down (dtask shutdown)"),
        "a shutdown is told from a scheduler that did not come back: {}",
        stderr(&out)
    );
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "the gather waited {:?} for a scheduler that was shut down",
        began.elapsed()
    );
}

#[test]
fn exporting_a_directory_whose_journal_dtask_cannot_read_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("snapshot.bin"), b"not a journal at all").unwrap();
    let out = dtask_nowhere(&["journal", "export", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!stderr(&out).is_empty());
    assert!(out.stdout.is_empty());
}

/// After a restart, a result that lived on a worker is not computed again
/// when that worker rejoins and reports it: a task still waiting for it
/// when the scheduler was killed runs on the reported copy (until this,
/// the first worker back was sent a recomputation of it at once).
#[test]
fn a_result_its_worker_reports_after_a_restart_is_not_computed_again() {
    let mut p = Pieces::start(1);
    let tasks = tasks_wasm();
    // 100,000 bytes: it lives on the worker.
    let a = p.ok(&["submit", tasks, "count-bytes", "100000", "1"]);
    p.ok(&["wait", &a]);
    // The worker's one slot is held; a dependent of `a` waits behind it.
    let hold = p.ok(&["submit", dtask_guests::COORD_WASM, "busy-until", "gate"]);
    wait_until(
        Duration::from_secs(20),
        "the slot-holding task to begin",
        || json_lines(&p.ok(&["status", "--json", &hold]))[0]["started"].is_string(),
    );
    let b = p.ok(&["submit", tasks, "sum-bytes", &format!("@{a}")]);
    wait_journal(&p.journal(), std::slice::from_ref(&b), false);
    let reruns = |p: &Pieces| {
        serde_json::from_str::<serde_json::Value>(&p.ok(&["info"])).unwrap()["reruns"]
            .as_u64()
            .unwrap()
    };
    let before = reruns(&p);
    p.restart_scheduler();
    wait_until(Duration::from_secs(30), "the worker to rejoin", || {
        p.run(&["workers"]).status.success() && p.ok(&["workers"]).lines().count() == 1
    });
    p.ok(&["event", "set", "gate"]);
    let want: u64 = (0..100_000u64).map(|i| (i + 1) % 256).sum();
    assert_eq!(p.ok(&["gather", &b]), want.to_string());
    assert_eq!(reruns(&p), before, "a result was computed again");
}

/// An unnamed client (a program using the library) holds a lock when the
/// scheduler is killed and started again: after the restart the lock is
/// still its own (its session has the grace to come back, and does), so
/// another client's acquire waits until the first lets go of it. Until
/// sessions' leases were journaled, the lock was free after a restart:
/// two holders of one lock.
#[test]
fn an_unnamed_clients_lock_is_still_its_own_after_a_restart() {
    let mut p = Pieces::start(1);
    let rt = runtime();
    let client = unnamed_client(&rt, &p.addr, &p.token());
    let lock = client.lock("db");
    rt.block_on(lock.acquire(None)).unwrap();
    wait_until(
        Duration::from_secs(30),
        "the journal to have the session's lease",
        || {
            journal_records(&p.journal()).iter().any(|r| {
                r["Leases"]["name"] == "db"
                    && r["Leases"]["holders"][0]
                        .as_str()
                        .is_some_and(|h| h.starts_with("session-"))
            })
        },
    );
    p.restart_scheduler();
    let held = p.run(&["lock", "acquire", "db", "--timeout", "300ms"]);
    assert_eq!(held.status.code(), Some(4), "{}", stderr(&held));
    // Back on the restarted scheduler, the client lets go of it.
    rt.block_on(lock.release()).unwrap();
    p.ok(&["lock", "acquire", "db", "--timeout", "10s"]);
}

/// A gather and a lock acquire wait on a scheduler whose process is then
/// stopped (SIGSTOP: its host's kernel still answers TCP for it, so
/// keepalive notices nothing). Each client asks whether the scheduler is
/// there after 10 s without a word from it, takes the connection as lost
/// 10 s later, and gives up once its reconnect grace has passed: the
/// gather exits 3 saying so, and the acquire fails. Until clients asked,
/// both waited for as long as the scheduler stayed stopped.
#[test]
fn clients_waiting_on_a_stopped_scheduler_give_up_and_say_so() {
    let c = Cluster::start(1, 1);
    let done = c.submit("inc", &["1"]);
    c.ok(&["wait", &done]);
    let spin = c.ok(&["submit", "--pure=false", tasks_wasm(), "spin", "120000"]);
    c.ok(&["lock", "acquire", "held"]);
    let gather = gather_waiting(&c, &done, &spin, Some("1s"));
    let rt = runtime();
    let client = unnamed_client(&rt, &c.addr, &c.token());
    client.set_reconnect_grace(Duration::from_secs(1));
    let lock = client.lock("held");
    let acquire = rt.spawn(async move { lock.acquire(Some(Duration::from_secs(300))).await });
    // Answered after it on the same connection: the acquire has arrived.
    rt.block_on(client.stats()).unwrap();
    assert!(!acquire.is_finished(), "the lock was the CLI's");
    let began = std::time::Instant::now();
    let pid = c.pid() as i32;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let _go_on = GoOn(pid);
    let out = ended_within(
        gather,
        Duration::from_secs(90),
        "the gather was still waiting after 90 s",
    );
    let acquired =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), acquire).await });
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("has not answered"),
        "{}",
        stderr(&out)
    );
    assert!(
        began.elapsed() >= Duration::from_secs(20),
        "gave up after {:?}, before the scheduler was silent 20 s",
        began.elapsed()
    );
    let acquired = acquired.expect("the acquire was still waiting").unwrap();
    assert!(acquired.is_err(), "{acquired:?}");
}

/// `dtask gather DONE SPIN` on `c` (with `grace` as its reconnect grace,
/// else the default), once it has printed DONE's result (`inc 1`'s, 2): it
/// is connected, and waits on SPIN.
fn gather_waiting(c: &Cluster, done: &str, spin: &str, grace: Option<&str>) -> std::process::Child {
    use std::io::BufRead;
    let mut cmd = c.cmd();
    cmd.args(["gather", done, spin]);
    match grace {
        Some(grace) => cmd.env("DTASK_RECONNECT_GRACE", grace),
        None => cmd.env_remove("DTASK_RECONNECT_GRACE"),
    };
    let mut gather = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(gather.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "2");
    gather
}

/// `child`'s output once it ends, within `limit`; if it does not, it is
/// killed and the test fails saying `what`.
fn ended_within(child: std::process::Child, limit: Duration, what: &str) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(limit) else {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        panic!("{what}");
    };
    out.unwrap()
}

/// An actor lives on its worker: a scheduler killed and started again
/// finds it there, state and all, once the worker rejoins and says so; a
/// call made as soon as the scheduler is back waits for that rather than
/// failing as "lost".
#[test]
fn an_actor_outlives_a_scheduler_restart_on_the_worker_that_holds_it() {
    let mut p = Pieces::start(1);
    let key = p.ok(&["actor", "new", dtask_guests::COORD_WASM, "counter", "5"]);
    assert_eq!(p.ok(&["actor", "call", &key, "increment", "2"]), "7");
    wait_until(
        Duration::from_secs(30),
        "the journal to record the actor",
        || {
            journal_records(&p.journal())
                .iter()
                .any(|r| r.get("ActorMade").is_some_and(|a| a["key"] == key.as_str()))
        },
    );
    // The worker is held back from rejoining (stopped) while a client
    // asks for the actor of the restarted scheduler.
    let worker = p.workers[0].id() as i32;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(worker, libc::SIGSTOP) }, 0);
    let go_on = GoOn(worker);
    p.restart_scheduler();
    let rt = runtime();
    let client = unnamed_client(&rt, &p.addr, &p.token());
    let asking = client.clone();
    let wanted = key.clone();
    let located = rt.spawn(async move { asking.actor(&wanted).await.map(|a| a.info().clone()) });
    // Answered after it on the same connection: the question has arrived.
    rt.block_on(client.stats()).unwrap();
    drop(go_on);
    let found = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), located).await })
        .expect("still waiting 30 s after the worker went on")
        .unwrap()
        .expect("the actor was found where it lived");
    assert_eq!(found.state, dtask_runtime::protocol::ActorState::Ready);
    assert_eq!(p.ok(&["actor", "call", &key, "increment", "1"]), "8");
}

/// An unnamed client of the scheduler at `addr`, connected on `rt`.
fn unnamed_client(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    token: &str,
) -> dtask_runtime::client::Client {
    rt.block_on(dtask_runtime::client::Client::connect(addr, token, None))
        .unwrap()
}

/// Lets a process this test stopped (SIGSTOP) go on when dropped, when
/// the test ends, passed or not.
struct GoOn(i32);

impl Drop for GoOn {
    fn drop(&mut self) {
        // SAFETY: a plain signal to a process the test started.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}
