//! End-to-end: the coordination verbs — queue, var, lock, semaphore, event,
//! pub and sub — through the real binary against a real cluster, with
//! their exit codes (2 refused or bad input, 4 timeout).

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a child command may take to finish once it should.
const LIMIT: Duration = Duration::from_secs(20);

/// A `dtask` child process, killed if the test ends before it does.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `dtask ARGS` in the background with stdout and stderr piped.
fn spawn(c: &Cluster, args: &[&str]) -> Proc {
    Proc(
        c.cmd()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dtask"),
    )
}

fn read_all(r: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits (at most `limit`) for a child to exit and returns its output
/// (what is left of it on pipes not taken yet).
fn finish(mut p: Proc, limit: Duration) -> Output {
    let out = read_all(p.0.stdout.take());
    let err = read_all(p.0.stderr.take());
    let mut status = None;
    wait_until(limit, "the dtask child to exit", || {
        status = p.0.try_wait().expect("try_wait");
        status.is_some()
    });
    Output {
        status: status.expect("exited"),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// The child's stderr, line by line as it comes.
fn stderr_lines(p: &mut Proc) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = p.0.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits (at most `limit`) for the line `want`, failing on the way with
/// whatever came before it.
fn expect_line(rx: &mpsc::Receiver<String>, want: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line == want => return,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no {want:?} line on stderr; got {seen:?}"),
        }
    }
}

/// Runs `dtask ARGS` as the named client `client`.
fn run_as(c: &Cluster, client: &str, args: &[&str]) -> Output {
    run_with_stdin(c.cmd().env("DTASK_CLIENT", client).args(args), "")
}

/// Asserts the exit code and, for failures, the `dtask: error:` line.
fn assert_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: stdout {:?}, stderr {:?}",
        stdout(out),
        stderr(out)
    );
    if code != 0 {
        assert!(
            stderr(out).starts_with("dtask: error: "),
            "{what}: {}",
            stderr(out)
        );
    }
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON: {s:?}: {e}"))
}

#[test]
fn queue_is_fifo_over_mixed_values_and_futures() {
    let c = Cluster::start(1, 1);
    let key = c.submit("inc", &["1"]);
    c.ok(&["queue", "put", "q", "42"]);
    c.ok(&["queue", "put", "q", "hello"]);
    c.ok(&["queue", "put", "q", r#"{"a": [1, "x"], "b": null}"#]);
    c.ok(&["queue", "put", "q", r#""7""#]);
    c.ok(&["queue", "put", "q", "@@home"]);
    c.ok(&["queue", "put", "q", "-5"]);
    c.ok(&["queue", "put", "q", &format!("@{key}")]);
    let out = c.run(&["queue", "put", "q", "-"], "[true, 2.5]\n");
    assert_code(&out, 0, "queue put from stdin");
    assert_eq!(c.ok(&["queue", "len", "q"]), "8");

    assert_eq!(c.ok(&["queue", "get", "q"]), "42");
    assert_eq!(c.ok(&["queue", "get", "q"]), r#""hello""#);
    assert_eq!(
        json(&c.ok(&["queue", "get", "q"])),
        serde_json::json!({"a": [1, "x"], "b": null})
    );
    assert_eq!(c.ok(&["queue", "get", "q"]), r#""7""#);
    assert_eq!(c.ok(&["queue", "get", "q", "--raw"]), "@home");
    assert_eq!(c.ok(&["queue", "get", "q"]), "-5");
    // A future comes back as its key, which the CLI's client now holds.
    assert_eq!(c.ok(&["queue", "get", "q"]), key);
    assert_eq!(c.ok(&["gather", &key]), "2");
    assert_eq!(c.ok(&["queue", "get", "q"]), "[true,2.5]");
    assert_eq!(c.ok(&["queue", "len", "q"]), "0");
}

/// Bytes on stdin that are not UTF-8 go into a queue or variable as a byte
/// string, exactly (a trailing newline included), and come back with
/// `--raw` as they were; they used to be refused as "not valid UTF-8".
/// Text still loses one trailing newline.
#[test]
fn binary_stdin_is_an_item_of_bytes_kept_exactly() {
    use std::io::Write;
    let c = Cluster::start(1, 1);
    let bytes: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .chain([0xff, b'\n'])
        .collect();
    assert!(std::str::from_utf8(&bytes).is_err());
    let put = |args: &[&str]| {
        let mut child = c
            .cmd()
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_code(&out, 0, "a put of bytes from stdin");
    };
    put(&["queue", "put", "bin", "-"]);
    put(&["var", "set", "blob", "-"]);
    let got = c.run(&["queue", "get", "--raw", "bin"], "");
    assert_code(&got, 0, "queue get --raw");
    assert!(got.stdout == bytes, "{} bytes back", got.stdout.len());
    let got = c.run(&["var", "get", "--raw", "blob"], "");
    assert_code(&got, 0, "var get --raw");
    assert!(got.stdout == bytes, "{} bytes back", got.stdout.len());
    let out = c.run(&["queue", "put", "bin", "-"], "words\n");
    assert_code(&out, 0, "queue put of text");
    assert_eq!(c.ok(&["queue", "get", "bin"]), r#""words""#);
    let out = c.run(
        &["queue", "put", "bin", "-"],
        &format!("[{}", "1,".repeat(100_000)),
    );
    assert_code(&out, 2, "text that starts like JSON");
    assert!(stderr(&out).len() < 1_000, "{}", stderr(&out).len());
}

#[test]
fn full_and_empty_queues_time_out() {
    let c = Cluster::start(1, 1);
    c.ok(&["queue", "put", "q", "1", "--maxsize", "1"]);
    let out = c.run(
        &[
            "queue",
            "put",
            "q",
            "2",
            "--maxsize",
            "1",
            "--timeout",
            "300ms",
        ],
        "",
    );
    assert_code(&out, 4, "put on a full queue");
    assert!(stderr(&out).contains("still full"), "{}", stderr(&out));
    assert_eq!(c.ok(&["queue", "len", "q"]), "1");
    // Another bound for the same queue is refused.
    let out = c.run(&["queue", "put", "q", "2", "--maxsize", "5"], "");
    assert_code(&out, 2, "put with another maxsize");
    assert!(stderr(&out).contains("maxsize"), "{}", stderr(&out));
    assert_eq!(c.ok(&["queue", "len", "q"]), "1");
    assert_eq!(c.ok(&["queue", "get", "q"]), "1");

    let out = c.run(&["queue", "get", "empty", "--timeout", "200ms"], "");
    assert_code(&out, 4, "get on an empty queue");
    assert!(stderr(&out).contains("still empty"), "{}", stderr(&out));
}

#[test]
fn blocked_queue_get_takes_a_later_put() {
    let c = Cluster::start(1, 1);
    let getter = spawn(&c, &["queue", "get", "jobs"]);
    c.ok(&["queue", "put", "jobs", r#"{"job": 1}"#]);
    let out = finish(getter, LIMIT);
    assert_code(&out, 0, "blocked get");
    assert_eq!(stdout(&out), "{\"job\":1}\n");
    assert_eq!(c.ok(&["queue", "len", "jobs"]), "0");
}

#[test]
fn locks_belong_to_the_client_name() {
    let c = Cluster::start(1, 1);
    c.ok(&["lock", "acquire", "db"]);
    let out = c.run(&["lock", "acquire", "db", "--timeout", "200ms"], "");
    assert_code(&out, 4, "second acquire by the holder");
    assert!(stderr(&out).contains("still held"), "{}", stderr(&out));
    let out = run_as(&c, "other", &["lock", "release", "db"]);
    assert_code(&out, 2, "release by another client");
    assert!(stderr(&out).contains("not held"), "{}", stderr(&out));
    let out = run_as(
        &c,
        "other",
        &["lock", "acquire", "db", "--timeout", "200ms"],
    );
    assert_code(&out, 4, "acquire by another client while held");
    c.ok(&["lock", "release", "db"]);
    let out = run_as(&c, "other", &["lock", "acquire", "db", "--timeout", "10s"]);
    assert_code(&out, 0, "acquire by another client after release");
    let out = c.run(&["lock", "release", "db"], "");
    assert_code(&out, 2, "release by the former holder");
    let out = run_as(&c, "other", &["lock", "release", "db"]);
    assert_code(&out, 0, "release by the new holder");
}

#[test]
fn semaphore_bounds_its_leases() {
    let c = Cluster::start(1, 1);
    let acquire = ["semaphore", "acquire", "s", "--max-leases", "2"];
    c.ok(&acquire);
    let out = run_as(&c, "other", &acquire);
    assert_code(&out, 0, "second lease");
    let mut third = acquire.to_vec();
    third.extend(["--timeout", "200ms"]);
    let out = c.run(&third, "");
    assert_code(&out, 4, "third lease");
    assert!(stderr(&out).contains("still taken"), "{}", stderr(&out));
    let out = run_as(&c, "other", &["semaphore", "release", "s"]);
    assert_code(&out, 0, "release by a holder");
    let out = run_as(&c, "other", &["semaphore", "release", "s"]);
    assert_code(&out, 2, "release with no lease left");
    let out = c.run(&third, "");
    assert_code(&out, 0, "third lease after a release");
    let out = c.run(
        &[
            "semaphore",
            "acquire",
            "s",
            "--max-leases",
            "3",
            "--timeout",
            "200ms",
        ],
        "",
    );
    assert_code(&out, 2, "another max-leases");
    assert!(stderr(&out).contains('3'), "{}", stderr(&out));
    let out = c.run(&["semaphore", "acquire", "t", "--max-leases", "0"], "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // An existing semaphore is taken without restating its count; a new
    // one needs it.
    let out = run_as(
        &c,
        "third",
        &["semaphore", "acquire", "s", "--timeout", "300ms"],
    );
    assert_code(&out, 4, "all leases still taken");
    let out = run_as(
        &c,
        "other",
        &["semaphore", "acquire", "s", "--timeout", "300ms"],
    );
    assert_code(&out, 4, "all leases still taken");
    c.ok(&["semaphore", "release", "s"]);
    let out = run_as(&c, "third", &["semaphore", "acquire", "s"]);
    assert_code(&out, 0, "a lease of the existing semaphore, no count given");
    let out = c.run(&["semaphore", "acquire", "new-one"], "");
    assert_code(&out, 2, "a new semaphore without a count");
    assert!(stderr(&out).contains("--max-leases"), "{}", stderr(&out));
}

#[test]
fn events_wake_their_waiters() {
    let c = Cluster::start(1, 1);
    let out = c.run(&["event", "wait", "e", "--timeout", "200ms"], "");
    assert_code(&out, 4, "wait before set");
    assert!(stderr(&out).contains("still clear"), "{}", stderr(&out));
    assert_eq!(c.ok(&["event", "is-set", "e"]), "false");
    let waiter = spawn(&c, &["event", "wait", "e"]);
    c.ok(&["event", "set", "e"]);
    let out = finish(waiter, LIMIT);
    assert_code(&out, 0, "waiter after set");
    assert_eq!(stdout(&out), "");
    assert_eq!(c.ok(&["event", "is-set", "e"]), "true");
    c.ok(&["event", "wait", "e", "--timeout", "200ms"]);
    c.ok(&["event", "clear", "e"]);
    assert_eq!(c.ok(&["event", "is-set", "e"]), "false");
}

#[test]
fn variables_set_get_del() {
    let c = Cluster::start(1, 1);
    c.ok(&["var", "set", "v", "42"]);
    assert_eq!(c.ok(&["var", "get", "v"]), "42");
    c.ok(&["var", "set", "v", "hello"]);
    assert_eq!(c.ok(&["var", "get", "v", "--timeout", "1s"]), r#""hello""#);
    assert_eq!(c.ok(&["var", "get", "v", "-r"]), "hello");
    // Bytes set from Rust come back raw exactly, with nothing after them.
    runtime().block_on(async {
        let client = dtask_runtime::client::Client::connect(&c.addr, &c.token(), None)
            .await
            .unwrap();
        let bytes = dtask_runtime::value::Value::Binary(b"\x00raw\xff".to_vec());
        client.variable("v").set(value(bytes)).await.unwrap();
        client.close().await.unwrap();
    });
    let out = c.run(&["var", "get", "v", "-r"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"\x00raw\xff");
    c.ok(&["var", "del", "v"]);
    let out = c.run(&["var", "get", "v", "--timeout", "200ms"], "");
    assert_code(&out, 4, "get after del");
    assert!(stderr(&out).contains("still unset"), "{}", stderr(&out));
}

#[test]
fn a_variable_keeps_its_future_alive() {
    let c = Cluster::start(1, 1);
    // Without a variable, a released key is forgotten...
    let gone = c.submit("inc", &["5"]);
    assert_eq!(c.ok(&["gather", &gone]), "6");
    c.ok(&["release", &gone]);
    wait_until(LIMIT, "the released key to be forgotten", || {
        c.ok(&["status", &gone]).ends_with("\tunknown")
    });
    // ...but one stored in a variable lives on.
    let key = c.submit("inc", &["1"]);
    c.ok(&["var", "set", "latest", &format!("@{key}")]);
    c.ok(&["release", &key]);
    assert_eq!(c.ok(&["gather", &key]), "2");
    assert_eq!(c.ok(&["var", "get", "latest"]), key);
}

#[test]
fn sub_streams_what_pub_sends_in_order() {
    let c = Cluster::start(1, 1);
    let mut sub = spawn(&c, &["sub", "t", "--count", "3"]);
    let err = stderr_lines(&mut sub);
    expect_line(&err, "dtask: subscribed to t", LIMIT);
    let out = c.run(&["pub", "t", "-"], "1\n2\n3\n");
    assert_code(&out, 0, "pub from stdin");
    let out = finish(sub, LIMIT);
    assert_code(&out, 0, "sub --count 3");
    assert_eq!(stdout(&out), "1\n2\n3\n");
    assert!(err.try_iter().next().is_none(), "sub said more on stderr");
}

#[test]
fn sub_ends_saying_so_when_the_scheduler_is_shut_down() {
    let c = Cluster::start(1, 1);
    let mut sub = spawn(&c, &["sub", "t"]);
    let err = stderr_lines(&mut sub);
    expect_line(&err, "dtask: subscribed to t", LIMIT);
    c.ok(&["shutdown"]);
    let out = finish(sub, LIMIT);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let said: Vec<String> = err.iter().collect();
    assert!(
        said.iter()
            .any(|l| l.starts_with("dtask: error: the scheduler was shut down (dtask shutdown)")),
        "{said:?}"
    );
}

#[test]
fn sub_carries_single_messages_of_any_shape() {
    let c = Cluster::start(1, 1);
    let mut sub = spawn(&c, &["sub", "news", "--count", "3", "--timeout", "20s"]);
    let err = stderr_lines(&mut sub);
    expect_line(&err, "dtask: subscribed to news", LIMIT);
    c.ok(&["pub", "news", "hello"]);
    c.ok(&["pub", "news", r#"{"n": [1, 2]}"#]);
    c.ok(&["pub", "news", "@@mention"]);
    let out = finish(sub, LIMIT);
    assert_code(&out, 0, "sub");
    assert_eq!(stdout(&out), "\"hello\"\n{\"n\":[1,2]}\n\"@mention\"\n");
}

#[test]
fn sub_times_out_without_a_publisher() {
    let c = Cluster::start(1, 1);
    let out = c.run(&["sub", "quiet", "--timeout", "200ms"], "");
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    let mut lines = err.lines();
    assert_eq!(lines.next(), Some("dtask: subscribed to quiet"));
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("dtask: error: ")),
        "{err}"
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn bad_values_and_unknown_futures_exit_2() {
    let c = Cluster::start(1, 1);
    for args in [
        &["queue", "put", "q", r#"{"a": "#][..],
        &["queue", "put", "q", "[1, 2"],
        &["var", "set", "v", r#""unterminated"#],
        &["queue", "put", "q", "@"],
        &["queue", "put", "q", "@inc-00000000000000000000000000000000"],
        &["var", "set", "v", "@no-such-key"],
        &["pub", "t", "@inc-00000000000000000000000000000000"],
        &["pub", "t", "{oops"],
    ] {
        let out = c.run(args, "");
        assert_code(&out, 2, &format!("{args:?}"));
    }
    let out = c.run(
        &["queue", "put", "q", "@inc-00000000000000000000000000000000"],
        "",
    );
    assert!(stderr(&out).contains("names no future"), "{}", stderr(&out));
    let out = c.run(&["pub", "t", "-"], "1\n{bad\n");
    assert_code(&out, 2, "pub with a bad stdin line");
    assert!(stderr(&out).contains("stdin line 2"), "{}", stderr(&out));
    assert_eq!(c.ok(&["queue", "len", "q"]), "0");
    let out = c.run(&["var", "get", "v", "--timeout", "100ms"], "");
    assert_code(&out, 4, "nothing was set");
    // Bad input is refused before contacting anyone.
    let out = dtask_nowhere(&["queue", "put", "q", "[oops"]);
    assert_code(&out, 2, "bad value, no scheduler");
    let out = dtask_nowhere(&["queue", "len", "q"]);
    assert_code(&out, 3, "no scheduler");
}

#[test]
fn an_empty_or_overlong_name_is_refused_with_exit_2() {
    let c = Cluster::start(1, 1);
    let long = "n".repeat(2000);
    for args in [
        vec!["queue", "put", "", "1"],
        vec!["var", "set", long.as_str(), "1"],
        vec!["lock", "acquire", ""],
        vec!["event", "set", long.as_str()],
        vec!["pub", "", "1"],
        vec!["pub", long.as_str(), "1"],
    ] {
        let out = c.run(&args, "");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(" name "),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // A name at the limit works.
    let longest = "n".repeat(1024);
    c.ok(&["var", "set", &longest, "5"]);
    assert_eq!(c.ok(&["var", "get", &longest]), "5");
}
