//! End-to-end: process lifecycle — the embedded local default, shutdown,
//! and no process outliving its cluster.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

/// Kills a pid on drop, so a failing test leaves nothing behind.
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let workers = worker_pids(pid);
            // SAFETY: signalling processes this test started.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
                for w in workers {
                    libc::kill(w as i32, libc::SIGKILL);
                }
            }
        }
    }
}

/// `dtask ARGS` aimed at the local default of the state directory `state`.
fn local_default_command(state: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(DTASK);
    c.args(args)
        .env("DTASK_STATE_DIR", state)
        .env("DTASK_DASHBOARD_PORT", "0")
        .env("XDG_CONFIG_HOME", state)
        .env_remove("DTASK_SCHEDULER")
        .env_remove("DTASK_TOKEN");
    c
}

/// Runs `dtask ARGS` on the local default of the state directory `state`.
fn on_local_default(state: &std::path::Path, args: &[&str]) -> std::process::Output {
    local_default_command(state, args).output().unwrap()
}

/// Runs `dtask ARGS`, which starts the local default of `state`: what it
/// printed, and the pid the cluster recorded.
fn start_local_default(state: &std::path::Path, args: &[&str]) -> (String, u32) {
    let out = on_local_default(state, args);
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = recorded_pid(state).expect("the local cluster recorded its pid");
    (stdout(&out).trim().to_string(), pid)
}

/// `dtask ARGS` started on the local default of `state`, its stdout and
/// stderr piped.
fn spawn_on_local_default(state: &std::path::Path, args: &[&str]) -> std::process::Child {
    local_default_command(state, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn submit_starts_the_local_default_and_shutdown_stops_it() {
    let state = tempfile::tempdir().unwrap();
    let dtask = |args: &[&str]| on_local_default(state.path(), args);
    let out = dtask(&["submit", tasks_wasm(), "inc", "1"]);
    let pid = recorded_pid(state.path());
    let _guard = KillOnDrop(pid);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("started a local cluster"),
        "{}",
        stderr(&out)
    );
    // Its workers were on their way as the task was submitted.
    assert!(!stderr(&out).contains("no worker"), "{}", stderr(&out));
    let pid = pid.expect("the local cluster recorded its pid");
    let key = stdout(&out).trim().to_string();
    // This machine's commands and the cluster's workers reach it on its
    // Unix socket, the owner's alone.
    let sock = state.path().join("scheduler.sock");
    assert!(
        stderr(&out).contains(&format!("unix:{}", sock.display())),
        "{}",
        stderr(&out)
    );
    let mode = std::fs::metadata(&sock).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let out = dtask(&["config"]);
    assert!(
        stdout(&out).contains(&format!(
            "scheduler = unix:{} (and 127.0.0.1:",
            sock.display()
        )),
        "{}",
        stdout(&out)
    );

    // The next command finds the running cluster instead of starting one.
    let out = dtask(&["gather", &key]);
    assert_eq!(stdout(&out).trim(), "2", "{}", stderr(&out));
    assert!(!stderr(&out).contains("started"), "{}", stderr(&out));
    let mode = std::fs::metadata(state.path().join("token")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    let workers = worker_pids(pid);
    assert!(!workers.is_empty());
    for w in &workers {
        let cmdline = std::fs::read(format!("/proc/{w}/cmdline")).unwrap_or_default();
        let dial = format!("unix:{}", sock.display());
        assert!(
            cmdline.split(|b| *b == 0).any(|a| a == dial.as_bytes()),
            "worker {w} does not dial {dial}: {}",
            String::from_utf8_lossy(&cmdline)
        );
    }
    let out = dtask(&["shutdown"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(Duration::from_secs(20), "the local cluster to exit", || {
        !alive(pid) && workers.iter().all(|w| !alive(*w))
    });
    assert!(!state.path().join("local.toml").exists());
    assert!(!sock.exists(), "the socket file outlived its cluster");
    // Its log is plain text, without a warning for each command's check
    // that the cluster is there.
    let log = std::fs::read_to_string(state.path().join("local.log")).unwrap();
    assert!(log.contains("scheduler on"), "{log}");
    assert!(!log.contains('\x1b'), "colour codes in the log: {log:?}");
    assert!(!log.contains("WARN"), "{log}");
    // The next local cluster adds to the log instead of replacing it.
    let out = dtask(&["submit", tasks_wasm(), "inc", "2"]);
    let second = recorded_pid(state.path());
    let _guard = KillOnDrop(second);
    assert!(out.status.success(), "{}", stderr(&out));
    let again = std::fs::read_to_string(state.path().join("local.log")).unwrap();
    assert!(again.starts_with(&log), "{again}");
    assert_eq!(again.matches("scheduler on").count(), 2, "{again}");
    let out = dtask(&["shutdown"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let second = second.expect("the second local cluster recorded its pid");
    wait_until(
        Duration::from_secs(20),
        "the second cluster to exit",
        || !alive(second),
    );
    // With nothing running, reading verbs say so rather than start one.
    let out = dtask(&["gather", &key]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("no local cluster is running"),
        "{}",
        stderr(&out)
    );
}

/// The pid in a state directory's local cluster record.
fn recorded_pid(state: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(state.join("local.toml"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("pid = "))
        .and_then(|p| p.trim().parse().ok())
}

/// Rewrites the local cluster's record as another dtask version would
/// have written it: `protocol` in place of its own (none at all for 0).
fn record_as_another_version(state: &std::path::Path, protocol: u32) {
    let path = state.join("local.toml");
    let record = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = record
        .lines()
        .filter(|l| !l.starts_with("protocol"))
        .map(str::to_string)
        .collect();
    if protocol != 0 {
        lines.push(format!("protocol = {protocol}"));
    }
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn a_local_cluster_of_another_version_is_stopped_for_one_of_this_version() {
    let state = tempfile::tempdir().unwrap();
    let dtask = |args: &[&str]| on_local_default(state.path(), args);
    let out = dtask(&["submit", tasks_wasm(), "inc", "1"]);
    let old = recorded_pid(state.path());
    let _old = KillOnDrop(old);
    assert!(out.status.success(), "{}", stderr(&out));
    let old = old.expect("the local cluster recorded its pid");
    let old_workers = worker_pids(old);

    // After an upgrade: the running cluster speaks another protocol.
    record_as_another_version(state.path(), 1);
    let out = dtask(&["submit", tasks_wasm(), "inc", "5"]);
    let new = recorded_pid(state.path());
    let _new = KillOnDrop(new);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another dtask version started it (protocol 1;"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("started a local cluster"),
        "{}",
        stderr(&out)
    );
    let new = new.expect("the new local cluster recorded its pid");
    assert_ne!(new, old);
    wait_until(Duration::from_secs(20), "the old cluster to exit", || {
        !alive(old) && old_workers.iter().all(|w| !alive(*w))
    });
    let key = stdout(&out).trim().to_string();
    assert_eq!(stdout(&dtask(&["gather", &key])).trim(), "6");

    // `dtask shutdown` stops one too, even from before records named a
    // protocol.
    record_as_another_version(state.path(), 0);
    let out = dtask(&["shutdown"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("an older protocol"),
        "{}",
        stderr(&out)
    );
    wait_until(
        Duration::from_secs(20),
        "the second cluster to exit",
        || !alive(new),
    );
    assert!(!state.path().join("local.toml").exists());
}

#[test]
fn workers_exit_when_their_cluster_is_killed() {
    let c = Cluster::start(2, 1);
    let workers = worker_pids(c.pid());
    assert_eq!(workers.len(), 2);
    // SAFETY: killing the cluster process this test started.
    unsafe {
        libc::kill(c.pid() as i32, libc::SIGKILL);
    }
    wait_until(Duration::from_secs(20), "orphaned workers to exit", || {
        workers.iter().all(|w| !alive(*w))
    });
}

/// Whether the kernel may give `pid` transparent huge pages, as its
/// `/proc/PID/status` says (`None`: this kernel does not say).
fn thp_enabled(pid: u32) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("THP_enabled:"))?;
    Some(line.split_whitespace().nth(1)? == "1")
}

#[test]
fn only_workers_run_on_huge_pages() {
    let c = Cluster::start(2, 1);
    let Some(scheduler) = thp_enabled(c.pid()) else {
        eprintln!(
            "SKIPPED only_workers_run_on_huge_pages: this kernel's /proc/PID/status has no THP_enabled line"
        );
        return;
    };
    assert!(
        !scheduler,
        "the cluster's scheduler process allows huge pages"
    );
    let workers = worker_pids(c.pid());
    assert_eq!(workers.len(), 2);
    for w in workers {
        // Inherited "no" from the cluster, taken back by the worker.
        assert_eq!(
            thp_enabled(w),
            Some(true),
            "worker {w} runs without huge pages"
        );
    }
    // A client verb, alive while it waits for messages.
    let mut sub = c
        .cmd()
        .args(["sub", "huge-pages"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("dtask sub starts");
    let pid = sub.id();
    wait_until(
        Duration::from_secs(20),
        "the client to decline huge pages",
        || thp_enabled(pid) == Some(false),
    );
    let _ = sub.kill();
    let _ = sub.wait();
}

#[test]
fn shutdown_stops_a_cluster_and_its_workers() {
    let c = Cluster::start(2, 1);
    let pid = c.pid();
    let workers = worker_pids(pid);
    c.ok(&["shutdown"]);
    wait_until(Duration::from_secs(20), "the cluster to exit", || {
        !alive(pid) && workers.iter().all(|w| !alive(*w))
    });
}

/// `dtask scheduler --port 0 ARGS` on the state directory `state`.
fn scheduler_cmd(state: &std::path::Path, args: &[&std::ffi::OsStr]) -> Command {
    let mut c = Command::new(DTASK);
    c.args(["scheduler", "--port", "0"])
        .args(args)
        .env("DTASK_STATE_DIR", state)
        .env("DTASK_DASHBOARD_PORT", "0")
        .env_remove("DTASK_TOKEN");
    c
}

#[test]
fn scheduler_and_workers_as_separate_commands() {
    let state = tempfile::tempdir().unwrap();
    let mut sched = scheduler_cmd(state.path(), &[])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _g1 = KillOnDrop(Some(sched.id()));
    let addr = first_line(sched.stdout.take().unwrap(), Duration::from_secs(20)).unwrap();
    let mut worker = Command::new(DTASK)
        .args([
            "worker",
            "--nthreads",
            "2",
            "--task-timeout",
            "1s",
            "--scheduler",
            &addr,
        ])
        .env("DTASK_STATE_DIR", state.path())
        .env("DTASK_DASHBOARD_PORT", "0")
        .env_remove("DTASK_TOKEN")
        .spawn()
        .unwrap();
    let _g2 = KillOnDrop(Some(worker.id()));
    let run = |args: &[&str]| {
        let out = Command::new(DTASK)
            .args(args)
            .env("DTASK_STATE_DIR", state.path())
            .env("DTASK_DASHBOARD_PORT", "0")
            .env("DTASK_SCHEDULER", &addr)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out).trim().to_string()
    };
    let key = run(&["submit", tasks_wasm(), "add", "2", "3"]);
    assert_eq!(run(&["gather", &key]), "5");
    // The worker's --task-timeout caps a task that asked for no limit.
    let long = run(&["submit", tasks_wasm(), "spin", "60000"]);
    let out = Command::new(DTASK)
        .args(["gather", &long])
        .env("DTASK_STATE_DIR", state.path())
        .env("DTASK_DASHBOARD_PORT", "0")
        .env("DTASK_SCHEDULER", &addr)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("time limit of 1s"),
        "{}",
        stderr(&out)
    );
    run(&["shutdown"]);
    wait_until(
        Duration::from_secs(20),
        "scheduler and worker to exit",
        || !alive(sched.id()) && !alive(worker.id()),
    );
    let _ = sched.wait();
    let _ = worker.wait();
}

#[test]
fn a_scheduler_on_a_unix_socket_serves_workers_and_clients_there() {
    let state = tempfile::tempdir().unwrap();
    let sock = state.path().join("s.sock");
    let unix = format!("unix:{}", sock.display());
    let start = || {
        let mut sched = scheduler_cmd(state.path(), &["--socket".as_ref(), sock.as_ref()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        first_line(sched.stdout.take().unwrap(), Duration::from_secs(20)).unwrap();
        sched
    };
    let mut sched = start();
    let mut guard = KillOnDrop(Some(sched.id()));
    let mode = std::fs::metadata(&sock).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600,
        "the socket is its owner's alone"
    );
    // A data port socket left by a worker that was killed.
    let dead = {
        let mut gone = Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        gone.id()
    };
    let stale = state.path().join(format!("worker-{dead}-0.sock"));
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let mut worker = Command::new(DTASK)
        .args(["worker", "--nthreads", "1", "--scheduler", &unix])
        .env("DTASK_STATE_DIR", state.path())
        .env_remove("DTASK_TOKEN")
        .spawn()
        .unwrap();
    let _g2 = KillOnDrop(Some(worker.id()));
    let dtask = |args: &[&str], token: Option<&str>| {
        let mut c = Command::new(DTASK);
        c.args(args)
            .env("DTASK_STATE_DIR", state.path())
            .env("DTASK_SCHEDULER", &unix)
            .env_remove("DTASK_TOKEN");
        if let Some(t) = token {
            c.env("DTASK_TOKEN", t);
        }
        c.output().unwrap()
    };
    let out = dtask(&["submit", tasks_wasm(), "add", "2", "3"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let key = stdout(&out).trim().to_string();
    let out = dtask(&["gather", &key], None);
    assert_eq!(stdout(&out).trim(), "5", "{}", stderr(&out));
    // The worker's data port is a socket beside the scheduler's (the
    // result above came through it), its owner's alone; the stale one went.
    let data = state.path().join(format!("worker-{}-0.sock", worker.id()));
    let out = dtask(&["workers"], None);
    assert!(
        stdout(&out).contains(&format!("unix:{}", data.display())),
        "{}",
        stdout(&out)
    );
    let mode = std::fs::metadata(&data).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    assert!(!stale.exists(), "a dead worker's socket file was kept");
    // The token is checked on the socket as on the port.
    let out = dtask(&["status", &key], Some("not-the-token"));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("authentication failed"),
        "{}",
        stderr(&out)
    );

    // Killed, it leaves its socket file; the next scheduler replaces it,
    // and the worker rejoins through it.
    sched.kill().unwrap();
    sched.wait().unwrap();
    assert!(sock.exists());
    sched = start();
    guard.0 = Some(sched.id());
    let out = dtask(&["submit", tasks_wasm(), "add", "4", "5"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = dtask(&["gather", stdout(&out).trim()], None);
    assert_eq!(stdout(&out).trim(), "9", "{}", stderr(&out));
    // Another scheduler given the path is refused, saying why (exit 2).
    let refused = |why: &str| {
        let out = scheduler_cmd(state.path(), &["--socket".as_ref(), sock.as_ref()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
    };
    // While it listens, another scheduler may not take the path.
    refused("already listens");
    let out = dtask(&["shutdown"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(Duration::from_secs(20), "the scheduler to exit", || {
        !alive(sched.id())
    });
    let _ = sched.wait();
    assert!(!sock.exists(), "the socket file outlived its scheduler");
    wait_until(Duration::from_secs(20), "the worker to exit", || {
        !alive(worker.id())
    });
    let _ = worker.wait();
    assert!(!data.exists(), "the data port's file outlived its worker");

    // The socket of a process still exiting (killed a moment ago, with
    // much memory to give back) is waited for, not refused.
    let dying = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let exits = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(dying);
    });
    let mut sched = start();
    exits.join().unwrap();
    sched.kill().unwrap();
    sched.wait().unwrap();
    std::fs::remove_file(&sock).unwrap();

    // A path that is not a socket is left alone, and said so.
    std::fs::write(&sock, "notes").unwrap();
    refused("is not a socket");
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "notes");
    // Nothing listening there: a clear error, exit 3.
    std::fs::remove_file(&sock).unwrap();
    let out = Command::new(DTASK)
        .args(["status", &key])
        .env("DTASK_STATE_DIR", state.path())
        .env("DTASK_SCHEDULER", &unix)
        .env("DTASK_RECONNECT_GRACE", "0s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains(&unix), "{}", stderr(&out));
}

#[test]
fn a_wrong_token_is_refused_with_exit_3() {
    let c = Cluster::start(1, 1);
    let out = c
        .cmd()
        .env("DTASK_TOKEN", "not-the-token")
        .args(["status", "x-1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("authentication failed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn killing_a_worker_mid_run_reschedules_its_tasks_elsewhere() {
    let c = Cluster::start(2, 1);
    // 40 tasks of 50 ms: both workers are busy when one dies.
    let input: String = (0..40).map(|i| format!("{}\n", 50 + i % 2)).collect();
    let keys = c.run(&["map", "--pure=false", tasks_wasm(), "spin"], &input);
    assert!(keys.status.success(), "{}", stderr(&keys));
    let keys = stdout(&keys);
    let first = keys.lines().next().unwrap().to_string();
    wait_until(Duration::from_secs(20), "work to start", || {
        c.ok(&["status", &first]).ends_with("processing")
            || c.ok(&["status", &first]).ends_with("finished")
    });
    let victim = worker_pids(c.pid())[0];
    // SAFETY: killing a worker process this test's cluster started.
    unsafe {
        libc::kill(victim as i32, libc::SIGKILL);
    }
    let out = c.run(&["gather"], &keys);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected: String = (0..40).map(|i| format!("{}\n", 50 + i % 2)).collect();
    assert_eq!(stdout(&out), expected);
    assert!(!alive(victim));
}

#[test]
fn a_hung_worker_is_noticed_by_its_missed_heartbeats_and_its_tasks_run_elsewhere() {
    let c = Cluster::start_with(2, 1, &["--worker-timeout", "2s"]);
    let input: String = (0..20).map(|i| format!("{}\n", 100 + i % 2)).collect();
    let keys = c.run(&["map", "--pure=false", tasks_wasm(), "spin"], &input);
    assert!(keys.status.success(), "{}", stderr(&keys));
    let keys = stdout(&keys);
    let first = keys.lines().next().unwrap().to_string();
    wait_until(Duration::from_secs(20), "work to start", || {
        !c.ok(&["status", &first]).ends_with("pending")
    });
    // Stopped, not killed: its connection stays open, only silence tells.
    let victim = worker_pids(c.pid())[0];
    // SAFETY: stopping a worker process this test's cluster started.
    unsafe {
        libc::kill(victim as i32, libc::SIGSTOP);
    }
    let out = c.run(&["gather"], &keys);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected: String = (0..20).map(|i| format!("{}\n", 100 + i % 2)).collect();
    assert_eq!(stdout(&out), expected);
    assert_eq!(
        c.ok(&["workers"]).lines().count(),
        1,
        "the hung worker was dropped"
    );
    // Woken up, it finds its connection closed and joins again, afresh.
    // SAFETY: as above.
    unsafe {
        libc::kill(victim as i32, libc::SIGCONT);
    }
    wait_until(
        Duration::from_secs(20),
        "the revived worker to rejoin",
        || c.ok(&["workers"]).lines().count() == 2,
    );
    let again = c.submit("inc", &["41"]);
    assert_eq!(c.ok(&["gather", &again]), "42");
}

#[test]
fn a_small_result_lives_at_the_scheduler_and_outlives_its_worker() {
    let c = Cluster::start(1, 1);
    let k = c.submit("inc", &["41"]);
    c.ok(&["wait", &k]);
    // No worker keeps a copy: it holds nothing and is named by no one.
    let workers = json_lines(&c.ok(&["workers", "--json"]));
    assert_eq!(workers[0]["holding"], 0, "{workers:?}");
    assert_eq!(c.ok(&["who-has", &k]), k);
    let info =
        |c: &Cluster| -> serde_json::Value { serde_json::from_str(&c.ok(&["info"])).unwrap() };
    let dispatched = info(&c)["dispatched"].clone();
    // Its worker dies; the result is still there, and not computed again.
    let pid = worker_pids(c.pid())[0];
    // SAFETY: killing a worker process this test's cluster started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    wait_until(Duration::from_secs(20), "the scheduler to notice", || {
        !alive(pid) && c.ok(&["workers"]).lines().count() == 0
    });
    assert_eq!(c.ok(&["gather", &k]), "42");
    let after = info(&c);
    assert_eq!(after["reruns"], 0, "{after}");
    assert_eq!(after["dispatched"], dispatched, "not run again: {after}");
}

#[test]
fn a_result_lost_with_its_worker_is_computed_again_from_lineage() {
    let c = Cluster::start(2, 1);
    let base = c.submit("repeat", &["ab", "3000"]);
    // Large enough to live only on its worker (no inline copy).
    let big = c.submit("repeat", &[&format!("@{base}"), "2"]);
    c.ok(&["wait", &big]);
    let holder = c.ok(&["who-has", &big]);
    let addr = holder
        .split('\t')
        .nth(1)
        .expect("held somewhere")
        .to_string();
    let workers = c.ok(&["workers", "--json"]);
    let pid: i32 = workers
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|w| w["address"] == addr.as_str())
        .and_then(|w| w["name"].as_str()?.rsplit(':').next()?.parse().ok())
        .expect("the holder's pid");
    // SAFETY: killing a worker process this test's cluster started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    wait_until(Duration::from_secs(20), "the scheduler to notice", || {
        c.ok(&["workers"]).lines().count() == 1
    });
    let len = c.submit("len", &[&format!("@{big}")]);
    assert_eq!(c.ok(&["gather", &len]), "12000");
    assert_eq!(c.ok(&["gather", "-r", &big]).len(), 12_000);
}

#[test]
fn a_task_memory_limit_set_at_submit_ends_it_with_a_memory_error() {
    let c = Cluster::start(1, 1);
    // About 6 MB of string: fine under the worker's limit, not under 4 MiB.
    let capped = c.ok(&[
        "submit",
        "--memory-limit-mib",
        "4",
        "--pure=false",
        tasks_wasm(),
        "repeat",
        "ab",
        "3000000",
    ]);
    let out = c.run(&["gather", &capped], "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ran out of memory"),
        "{}",
        stderr(&out)
    );
    let free = c.submit("repeat", &["ab", "3000000"]);
    let out = c.run(&["gather", "--raw", &free], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), 6_000_001);
}

#[test]
fn a_worker_process_that_dies_is_started_again() {
    let c = Cluster::start(2, 1);
    let before = worker_pids(c.pid());
    assert_eq!(before.len(), 2);
    // SAFETY: killing a worker process of the cluster this test started.
    unsafe {
        libc::kill(before[0] as i32, libc::SIGKILL);
    }
    wait_until(
        Duration::from_secs(30),
        "a replacement worker process",
        || {
            let now = worker_pids(c.pid());
            now.len() == 2 && !now.contains(&before[0])
        },
    );
    // `dtask workers` says which one came back, and how often.
    wait_until(Duration::from_secs(30), "two workers joined", || {
        let lines = c.ok(&["workers", "--json"]);
        let restarts: Vec<u64> = lines
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["restarts"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        restarts.len() == 2 && restarts.iter().sum::<u64>() == 1
    });
    assert!(c.ok(&["workers"]).contains("restarts=1"));
    let key = c.submit("inc", &["1"]);
    assert_eq!(c.ok(&["gather", &key]), "2");
}

/// Busy polling is on by default: every process (scheduler, workers, the
/// CLI's verbs) spins for its next message before sleeping. With it off
/// (`DTASK_BUSY_POLL=off`), what they do stays the same: tasks and their
/// dependencies, a queue, an actor, a pipeline. `dtask config` shows the
/// setting and where it came from, and refuses a spin too long to make
/// sense; anywhere else a bad value leaves busy polling off, saying so.
#[test]
fn with_busy_polling_off_everything_works_as_with_it() {
    let c = Cluster::start_env(2, 1, &[], &[("DTASK_BUSY_POLL", "off")]);
    let config = c.ok(&["config"]);
    assert!(
        config
            .lines()
            .any(|l| l.starts_with("busy-poll = off") && l.ends_with("DTASK_BUSY_POLL")),
        "{config}"
    );
    let unset = c
        .cmd()
        .env_remove("DTASK_BUSY_POLL")
        .arg("config")
        .output()
        .unwrap();
    assert!(
        stdout(&unset)
            .lines()
            .any(|l| l.starts_with("busy-poll = 50us") && l.ends_with("default")),
        "{}",
        stdout(&unset)
    );
    let first = c.submit("inc", &["1"]);
    let second = c.submit("add", &[&format!("@{first}"), "10"]);
    assert_eq!(c.ok(&["gather", &second]), "12");
    c.ok(&["queue", "put", "jobs", "41"]);
    assert_eq!(c.ok(&["queue", "get", "jobs", "--timeout", "10s"]), "41");
    let actor = c.ok(&["actor", "new", dtask_guests::COORD_WASM, "counter", "5"]);
    assert_eq!(c.ok(&["actor", "call", &actor, "increment", "3"]), "8");
    let keys = c.run(&["map", tasks_wasm(), "inc"], "1\n2\n3\n4\n5\n");
    assert!(keys.status.success(), "{}", stderr(&keys));
    let out = c.run(&["gather", "--release"], &stdout(&keys));
    assert_eq!(stdout(&out), "2\n3\n4\n5\n6\n", "{}", stderr(&out));

    let refused = c
        .cmd()
        .env("DTASK_BUSY_POLL", "5s")
        .arg("config")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("DTASK_BUSY_POLL"),
        "{}",
        stderr(&refused)
    );
    let out = c
        .cmd()
        .env("DTASK_BUSY_POLL", "soon")
        .env("DTASK_LOG", "warn")
        .args(["gather", &second])
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), "12", "{}", stderr(&out));
    assert!(
        stderr(&out).contains("busy polling stays off") && stderr(&out).contains("DTASK_BUSY_POLL"),
        "{}",
        stderr(&out)
    );
}

/// The README's first pipeline on a state directory with nothing running:
/// `gather` and `as-completed` start beside the `map` that starts the local
/// cluster, and find it rather than failing for want of one.
#[test]
fn a_pipeline_on_a_fresh_state_directory_finds_the_cluster_its_map_starts() {
    let state = tempfile::tempdir().unwrap();
    let mut like = Command::new(DTASK);
    like.env("DTASK_STATE_DIR", state.path())
        .env("DTASK_DASHBOARD_PORT", "0")
        .env("XDG_CONFIG_HOME", state.path())
        .env("D", DTASK)
        .env("T", tasks_wasm())
        .env_remove("DTASK_SCHEDULER")
        .env_remove("DTASK_TOKEN");
    let out = sh(
        &like,
        r#"seq 30 | "$D" map "$T" inc | "$D" gather | tail -1"#,
    )
    .output()
    .unwrap();
    let pid = recorded_pid(state.path());
    let _guard = KillOnDrop(pid);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "31", "{}", stderr(&out));
    // With the cluster it started gone again, the same for as-completed.
    let out = on_local_default(state.path(), &["shutdown"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = pid.expect("the local cluster recorded its pid");
    wait_until(Duration::from_secs(20), "the local cluster to exit", || {
        !alive(pid)
    });
    let out = sh(
        &like,
        r#"seq 5 | "$D" map "$T" inc | "$D" as-completed --with-results | cut -f2 | sort -n | tr '\n' ' '"#,
    )
    .output()
    .unwrap();
    let _guard = KillOnDrop(recorded_pid(state.path()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "2 3 4 5 6", "{}", stderr(&out));
    let out = on_local_default(state.path(), &["shutdown"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_map_interrupted_prints_the_key_of_every_line_it_submitted() {
    use std::io::{BufRead, Write};
    use std::process::Stdio;
    let c = Cluster::start(1, 1);
    let mut map = c
        .cmd()
        .args(["map", tasks_wasm(), "inc"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(Some(map.id()));
    // Lines come faster than they are answered: batches are always on
    // their way when the interrupt comes.
    let mut stdin = map.stdin.take().unwrap();
    std::thread::spawn(move || {
        for i in 0u64.. {
            if writeln!(stdin, "{i}").is_err() {
                break;
            }
        }
    });
    let out = map.stdout.take().unwrap();
    let (first, printed) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut n = 0usize;
        for line in std::io::BufReader::new(out).lines() {
            if line.is_err() {
                break;
            }
            n += 1;
            if n == 1 {
                let _ = first.send(());
            }
        }
        n
    });
    printed
        .recv_timeout(Duration::from_secs(30))
        .expect("a first key");
    // SAFETY: signalling the process this test started.
    unsafe { libc::kill(map.id() as i32, libc::SIGINT) };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut map.stderr.take().unwrap(), &mut err).unwrap();
    let status = map.wait().unwrap();
    let printed = reader.join().unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let info: serde_json::Value = serde_json::from_str(&c.ok(&["info"])).unwrap();
    assert_eq!(
        info["held"].as_u64(),
        Some(printed as u64),
        "keys held but never printed"
    );
}

/// A local cluster killed outright (no `dtask shutdown`) leaves its keys in
/// its journal: a reading verb starts it again, which resumes them, and
/// answers (a small result from the journal, a big one computed again, as
/// its worker died with the cluster).
#[test]
fn a_reading_verb_resumes_a_killed_local_default() {
    let state = tempfile::tempdir().unwrap();
    let dtask = |args: &[&str]| on_local_default(state.path(), args);
    let (small, first) = start_local_default(state.path(), &["submit", tasks_wasm(), "inc", "1"]);
    let guard = KillOnDrop(Some(first));
    let big = dtask(&["submit", tasks_wasm(), "count-bytes", "5000", "0"]);
    let big = stdout(&big).trim().to_string();
    assert!(dtask(&["wait", &small, &big]).status.success());
    drop(guard);
    wait_until(
        Duration::from_secs(20),
        "the killed cluster to exit",
        || !alive(first),
    );
    let out = dtask(&["gather", "--json", &small, &big]);
    let _guard = KillOnDrop(recorded_pid(state.path()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("started a local cluster"),
        "{}",
        stderr(&out)
    );
    let lines = json_lines(&stdout(&out));
    assert_eq!(lines[0]["result"], 2, "{lines:?}");
    assert_eq!(lines[1]["status"], "finished", "{lines:?}");
    assert!(dtask(&["shutdown"]).status.success());
}

/// Interrupted, `gather --release` still lets go of the results it printed
/// (and of no others), then exits 130.
#[test]
fn a_releasing_gather_interrupted_releases_what_it_printed() {
    use std::io::BufRead;
    use std::process::Stdio;
    let c = Cluster::start(1, 2);
    let quick = |i: u32| c.submit("inc", &[&i.to_string()]);
    let mut keys: Vec<String> = (0..3).map(quick).collect();
    // Printed in order: the gather waits here until interrupted.
    keys.push(c.submit("spin", &["60000"]));
    keys.extend((10..16).map(quick));
    let mut gather = c
        .cmd()
        .args(["gather", "--release"])
        .args(&keys)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(Some(gather.id()));
    let mut out = std::io::BufReader::new(gather.stdout.take().unwrap());
    for _ in 0..3 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "a result before the spin");
    }
    // SAFETY: signalling the process this test started.
    unsafe { libc::kill(gather.id() as i32, libc::SIGINT) };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut gather.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(gather.wait().unwrap().code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let info: serde_json::Value = serde_json::from_str(&c.ok(&["info"])).unwrap();
    assert_eq!(info["held"].as_u64(), Some(7), "the 3 printed are released");
    c.ok(&["cancel", "--force", &keys[3]]);
}

/// A command waiting on the local default when it is killed (not shut
/// down) starts it again itself, which resumes its journal, and gets its
/// answer: it used to wait out its reconnect grace and exit 3.
#[test]
fn a_command_waiting_on_a_killed_local_default_starts_it_again() {
    use std::io::Read;
    let state = tempfile::tempdir().unwrap();
    let dtask = |args: &[&str]| on_local_default(state.path(), args);
    let (key, first) = start_local_default(
        state.path(),
        &["submit", "--pure=false", tasks_wasm(), "spin", "3000"],
    );
    let guard = KillOnDrop(Some(first));
    // Clients connected, as the scheduler's metrics count them (read over
    // HTTP, by no client), once `info`'s own connection has gone.
    let info: serde_json::Value = serde_json::from_slice(&dtask(&["info"]).stdout).unwrap();
    let metrics = format!(
        "{}metrics",
        info["dashboard"].as_str().expect("a dashboard")
    );
    let bearer = format!("Bearer {}", token_in(state.path()));
    let clients = || -> u64 {
        let (_, text) = http_get(&metrics, &[("Authorization", bearer.as_str())]);
        text.lines()
            .find_map(|l| l.strip_prefix("dtask_scheduler_clients "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    wait_until(Duration::from_secs(20), "no client to be connected", || {
        clients() == 0
    });
    let mut gather = spawn_on_local_default(state.path(), &["gather", &key]);
    let _gather = KillOnDrop(Some(gather.id()));
    // The gather is connected (and waiting: the spin has seconds to go)
    // once the scheduler counts a client: the dashboard's metrics are read
    // over HTTP, by no client.
    wait_until(Duration::from_secs(20), "the gather to connect", || {
        clients() >= 1
    });
    drop(guard);
    wait_until(
        Duration::from_secs(20),
        "the killed cluster to exit",
        || !alive(first),
    );
    let began = std::time::Instant::now();
    let status = loop {
        if let Some(status) = gather.try_wait().unwrap() {
            break status;
        }
        assert!(
            began.elapsed() < Duration::from_secs(25),
            "the gather did not come back from the kill"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut out, mut err) = (String::new(), String::new());
    gather
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    gather
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _again = KillOnDrop(recorded_pid(state.path()));
    assert!(status.success(), "{err}");
    assert_eq!(out.trim(), "3000", "{err}");
    assert!(err.contains("started a local cluster"), "{err}");
    assert_ne!(recorded_pid(state.path()), Some(first));
    assert!(dtask(&["shutdown"]).status.success());
}

/// A `dtask sub` on the local default outlives a kill of it: it starts it
/// again, subscribes again (saying what it missed) and prints what is
/// published from then on.
#[test]
fn a_subscriber_to_a_killed_local_default_starts_it_again_and_goes_on() {
    let state = tempfile::tempdir().unwrap();
    let dtask = |args: &[&str]| on_local_default(state.path(), args);
    let (_, first) = start_local_default(state.path(), &["submit", tasks_wasm(), "inc", "1"]);
    let guard = KillOnDrop(Some(first));
    let mut sub = spawn_on_local_default(state.path(), &["sub", "news"]);
    let _sub = KillOnDrop(Some(sub.id()));
    let out = lines_of(sub.stdout.take().unwrap());
    let err = lines_of(sub.stderr.take().unwrap());
    let said = err.recv_timeout(Duration::from_secs(30));
    assert!(
        said.as_ref().is_ok_and(|l| l.contains("subscribed")),
        "{said:?}"
    );
    drop(guard);
    wait_until(
        Duration::from_secs(20),
        "the killed cluster to exit",
        || !alive(first),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let mut stderr_lines = Vec::new();
    while !stderr_lines.iter().any(|l: &String| l.contains("missed")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match err.recv_timeout(left) {
            Ok(l) => stderr_lines.push(l),
            Err(_) => panic!("the subscriber never subscribed again: {stderr_lines:?}"),
        }
    }
    let _again = KillOnDrop(recorded_pid(state.path()));
    assert_ne!(recorded_pid(state.path()), Some(first));
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the subscriber got nothing published after the restart"
        );
        assert!(dtask(&["pub", "news", "after"]).status.success());
        if out
            .recv_timeout(Duration::from_millis(200))
            .is_ok_and(|l| l == "\"after\"")
        {
            break;
        }
    }
    assert!(sub.try_wait().unwrap().is_none(), "the subscriber ended");
    assert!(dtask(&["shutdown"]).status.success());
}

/// Actors live on the local default's workers, which end with it: after a
/// kill, a call on one says it is lost (exit 1), not that no actor has
/// that name, and it can be made again under its key.
#[test]
fn an_actor_of_a_killed_local_default_is_lost_and_can_be_made_again() {
    let state = tempfile::tempdir().unwrap();
    let dtask = |args: &[&str]| on_local_default(state.path(), args);
    let (_, first) = start_local_default(
        state.path(),
        &[
            "actor",
            "new",
            "--key",
            "tally",
            dtask_guests::COORD_WASM,
            "counter",
            "4",
        ],
    );
    let guard = KillOnDrop(Some(first));
    wait_until(
        Duration::from_secs(30),
        "the journal to record the actor",
        || {
            journal_records(&state.path().join("journal"))
                .iter()
                .any(|r| r.get("ActorMade").is_some_and(|a| a["key"] == "tally"))
        },
    );
    drop(guard);
    wait_until(
        Duration::from_secs(20),
        "the killed cluster to exit",
        || !alive(first),
    );
    let call = dtask(&["actor", "call", "tally", "get"]);
    let _again = KillOnDrop(recorded_pid(state.path()));
    assert_eq!(call.status.code(), Some(1), "{}", stderr(&call));
    assert!(stderr(&call).contains("actor lost"), "{}", stderr(&call));
    let made = dtask(&[
        "actor",
        "new",
        "--key",
        "tally",
        dtask_guests::COORD_WASM,
        "counter",
        "9",
    ]);
    assert!(made.status.success(), "{}", stderr(&made));
    let got = dtask(&["actor", "call", "tally", "get"]);
    assert_eq!(stdout(&got).trim(), "9", "{}", stderr(&got));
    assert!(dtask(&["shutdown"]).status.success());
}

/// Connections waiting to be accepted on the listening Unix socket `sock`
/// (its Recv-Q, as `ss` shows it); `None` if `ss` cannot tell.
fn accept_queue(sock: &std::path::Path) -> Option<usize> {
    let out = Command::new("ss")
        .args(["-xlH", "src"])
        .arg(sock)
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.split_whitespace().nth(2)?.parse().ok()
}

/// A command that finds the local default running, and connects to it
/// just as it dies, starts it again (as a command already waiting on it
/// does) instead of retrying the dead socket for its 30 s grace and
/// exiting 3. The cluster is stopped (SIGSTOP: its socket still takes
/// connections) until the command is connecting, then killed.
#[test]
fn a_command_connecting_as_the_local_default_dies_starts_it_again() {
    let state = tempfile::tempdir().unwrap();
    let (key, pid) = start_local_default(state.path(), &["submit", tasks_wasm(), "inc", "1"]);
    let guard = KillOnDrop(Some(pid));
    let sock = state.path().join("scheduler.sock");
    if accept_queue(&sock).is_none() {
        eprintln!(
            "SKIPPED: `ss` cannot show the local default's socket, so the test cannot tell when the command connects"
        );
        return;
    }
    assert_eq!(
        on_local_default(state.path(), &["gather", &key])
            .status
            .code(),
        Some(0)
    );
    // SAFETY: a plain signal to the cluster this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
    let gather = start_with_stdin(
        &mut local_default_command(state.path(), &["gather", &key]),
        "",
    );
    // It checked that the cluster answers (one connection), and so took
    // it for running, and now connects (a second).
    wait_until(
        Duration::from_secs(20),
        "the gather to connect to the stopped cluster",
        || accept_queue(&sock).is_some_and(|n| n >= 2),
    );
    drop(guard);
    let out = gather.output_within(
        Duration::from_secs(25),
        "the gather (it waited out its grace?)",
    );
    let _again = KillOnDrop(recorded_pid(state.path()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "2", "{}", stderr(&out));
    assert!(
        stderr(&out).contains("started a local cluster"),
        "{}",
        stderr(&out)
    );
    assert!(
        on_local_default(state.path(), &["shutdown"])
            .status
            .success()
    );
}
