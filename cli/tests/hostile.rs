//! End-to-end: garbage on the scheduler's and workers' ports gets the
//! connection dropped, never a crash, and other work goes on.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The example component whose tasks try to leave the sandbox.
fn probe_wasm() -> &'static str {
    dtask_guests::PROBE_WASM
}

/// Sends `bytes` to `addr` and waits for the peer to hang up (or answer).
fn send_garbage(addr: &str, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
}

fn garbage() -> Vec<Vec<u8>> {
    let mut huge_prefix = 0xFFFF_FFF0u32.to_be_bytes().to_vec();
    huge_prefix.extend_from_slice(b"tiny");
    let mut bad_payload = 16u32.to_be_bytes().to_vec();
    bad_payload.extend_from_slice(&[0xfb; 16]);
    vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        huge_prefix,
        bad_payload,
        vec![0, 0, 0, 8, 1, 2, 3],
        (0..4096).map(|i| (i * 7919 % 251) as u8).collect(),
    ]
}

#[test]
fn garbage_on_the_scheduler_port_is_dropped_and_work_goes_on() {
    let c = Cluster::start(1, 1);
    let before = c.submit("inc", &["1"]);
    for g in garbage() {
        send_garbage(&c.addr, &g);
    }
    assert!(alive(c.pid()));
    assert_eq!(c.ok(&["gather", &before]), "2");
    let after = c.submit("inc", &["2"]);
    assert_eq!(c.ok(&["gather", &after]), "3");
}

#[test]
fn garbage_on_a_worker_data_port_is_dropped_and_work_goes_on() {
    let c = Cluster::start(1, 1);
    let workers: serde_json::Value =
        serde_json::from_str(c.ok(&["workers", "--json"]).lines().next().unwrap()).unwrap();
    let data = workers["address"].as_str().unwrap().to_string();
    let big = c.submit("repeat", &["ab", "10000"]);
    for g in garbage() {
        send_garbage(&data, &g);
    }
    // The large result is served from that very port.
    assert_eq!(c.ok(&["gather", "-r", &big]).len(), 20_000);
    let len = c.submit("len", &[&format!("@{big}")]);
    assert_eq!(c.ok(&["gather", &len]), "20000");
}

#[test]
fn values_and_modules_past_the_configured_limits_are_refused_with_the_reason() {
    // The limit admits the example tasks; a module padded past it (a WASI
    // command with a large custom section) is refused.
    let tasks_size = std::fs::metadata(tasks_wasm()).unwrap().len() as usize;
    let limit = (tasks_size + 1024).to_string();
    let padded = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        padded.path(),
        with_custom_section(
            &std::fs::read(dtask_guests::CAT_WASM).unwrap(),
            tasks_size + 4096,
        ),
    )
    .unwrap();
    let c = Cluster::start_with(
        1,
        1,
        &["--max-value-size", "64KiB", "--max-module-size", &limit],
    );
    let out = c.run(&["submit", padded.path().to_str().unwrap(), "_start"], "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("was refused"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--max-module-size"),
        "{}",
        stderr(&out)
    );
    let big = "x".repeat(100 * 1024);
    let out = c.run(&["submit", "--pure=false", tasks_wasm(), "len", "-"], &big);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--max-value-size"),
        "{}",
        stderr(&out)
    );
    let out = c.run(&["queue", "put", "q", "-"], &format!("\"{big}\""));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--max-value-size"),
        "{}",
        stderr(&out)
    );
    // A publish has no answer: the client refuses it itself, from the
    // limit the scheduler told it on connecting, where it was dropped
    // with exit 0. With `-`, the lines before it went out.
    let out = c.run(&["pub", "t", &format!("\"{big}\"")], "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--max-value-size"),
        "{}",
        stderr(&out)
    );
    let out = c.run(&["pub", "t", "-"], &format!("1\n\"{big}\"\n2\n"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // Small ones still pass; the scheduler is unharmed.
    let small = c.ok(&["submit", "--pure=false", tasks_wasm(), "len", "-"]);
    assert_eq!(c.ok(&["gather", &small]), "0");
    c.ok(&["queue", "put", "q", "1"]);
    assert_eq!(c.ok(&["queue", "get", "q"]), "1");
}

#[test]
fn a_task_reaches_no_file_directory_environment_or_network() {
    let c = Cluster::start(1, 1);
    // Something listens where the task tries to connect: only the sandbox
    // can be what stops it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let net = format!("net:{}", listener.local_addr().unwrap());
    for what in ["file", "dir", net.as_str()] {
        let key = c.submit_to(probe_wasm(), "probe", &[what]);
        let got = c.ok(&["gather", "--raw", &key]);
        assert!(got.starts_with("denied: "), "{what}: {got}");
    }
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the task reached the listener"
    );
    let key = c.submit_to(probe_wasm(), "probe", &["env"]);
    assert_eq!(c.ok(&["gather", "--raw", &key]), "0 environment variables");
    // The worker goes on serving.
    let key = c.submit("inc", &["1"]);
    assert_eq!(c.ok(&["gather", &key]), "2");
}

/// What the probe's `clock` says on `c`: the smallest step it saw its
/// monotonic clock take, and how far into its second the wall clock read,
/// both in nanoseconds.
fn clock_reading(c: &Cluster) -> (u128, u128) {
    let key = c.submit_to(probe_wasm(), "probe", &["clock"]);
    let said = c.ok(&["gather", "--raw", &key]);
    let numbers: Vec<u128> = said.split(' ').filter_map(|w| w.parse().ok()).collect();
    assert_eq!(numbers.len(), 2, "{said}");
    (numbers[0], numbers[1])
}

#[test]
fn tasks_read_clocks_no_finer_than_the_workers_resolution() {
    let c = Cluster::start(1, 1);
    let (step, wall) = clock_reading(&c);
    assert!(
        step >= 100_000 && step % 100_000 == 0,
        "the monotonic clock stepped by {step} ns"
    );
    assert_eq!(wall % 100_000, 0, "the wall clock read {wall} ns");
    let coarse = Cluster::start_with(1, 1, &["--clock-resolution", "5ms"]);
    let (step, wall) = clock_reading(&coarse);
    assert!(step >= 5_000_000 && step % 5_000_000 == 0, "{step} ns");
    assert_eq!(wall % 5_000_000, 0, "{wall} ns");
    // Full precision when asked for.
    let fine = Cluster::start_with(1, 1, &["--clock-resolution", "0"]);
    let (step, _) = clock_reading(&fine);
    assert!(step < 100_000, "the monotonic clock stepped by {step} ns");
}

#[test]
fn granted_environment_and_allowed_directories_are_all_a_task_reaches() {
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("note.txt"), "granted").unwrap();
    let dir = shared.path().to_str().unwrap().to_string();
    let c = Cluster::start_with(1, 1, &["--allow-dir", &dir]);
    let file = format!("{dir}/note.txt");
    // Not granted: not there.
    let key = c.submit_to(probe_wasm(), "read-file", &[&file]);
    assert!(
        c.ok(&["gather", &key])
            .starts_with(r#"{"err":"cannot read"#)
    );
    // Granted within what the worker allows: readable.
    let key = c.ok(&["submit", "--dir", &dir, probe_wasm(), "read-file", &file]);
    assert_eq!(c.ok(&["gather", &key]), r#"{"ok":"granted"}"#);
    // Granted outside what the worker allows: refused, saying why.
    let key = c.ok(&[
        "submit",
        "--dir",
        "/etc",
        probe_wasm(),
        "read-file",
        "/etc/passwd",
    ]);
    let out = c.run(&["gather", &key], "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--allow-dir"), "{}", stderr(&out));
    // Environment variables only as granted; a grant changes the key.
    let plain = c.submit_to(probe_wasm(), "probe", &["env"]);
    let key = c.ok(&[
        "submit",
        "--env",
        "A=1",
        "--env",
        "B=2",
        probe_wasm(),
        "probe",
        "env",
    ]);
    assert_ne!(key, plain);
    assert_eq!(c.ok(&["gather", "--raw", &key]), "2 environment variables");
}

/// A core module with a custom section of `extra` bytes appended.
fn with_custom_section(module: &[u8], extra: usize) -> Vec<u8> {
    let name = b"padding";
    let mut out = module.to_vec();
    out.push(0);
    let mut len = name.len() + 1 + extra;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        out.push(if len == 0 { byte } else { byte | 0x80 });
        if len == 0 {
            break;
        }
    }
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.resize(out.len() + extra, 0);
    out
}

#[test]
fn unauthenticated_connections_cannot_make_the_scheduler_buffer_their_frames() {
    let c = Cluster::start(1, 1);
    let before = mib(c.pid(), "VmRSS");
    // Each announces a 400 MiB frame and starts sending it, never saying
    // Hello; they all stay open while a real client works.
    let mut header = (400u32 << 20).to_be_bytes().to_vec();
    header.extend(std::iter::repeat_n(7u8, 1 << 20));
    let mut open = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(&c.addr).unwrap();
        s.set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let _ = s.write_all(&header);
        open.push(s);
    }
    let key = c.submit("inc", &["41"]);
    assert_eq!(c.ok(&["gather", &key]), "42");
    let grown = mib(c.pid(), "VmRSS").saturating_sub(before);
    assert!(grown <= 50, "the scheduler grew by {grown} MiB");
    drop(open);
}

#[test]
fn a_subscriber_that_stops_reading_is_cut_off_while_others_are_served_and_then_subscribes_again() {
    let c = Cluster::start_with(1, 1, &["--client-buffer", "8MiB"]);
    let mut sub = c
        .cmd()
        .args(["sub", "flood"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines_of(sub.stdout.take().unwrap());
    let err = lines_of(sub.stderr.take().unwrap());
    let said = err.recv_timeout(Duration::from_secs(30));
    assert!(said.is_ok_and(|l| l.contains("subscribed")));
    // SAFETY: stopping the subscriber this test started.
    unsafe {
        libc::kill(sub.id() as i32, libc::SIGSTOP);
    }
    let before = mib(c.pid(), "VmRSS");
    let line = format!("\"{}\"\n", "x".repeat(1000));
    let published = c.run(&["pub", "flood", "-"], &line.repeat(200_000));
    assert!(published.status.success(), "{}", stderr(&published));
    // Everyone else is served meanwhile.
    let key = c.submit("inc", &["1"]);
    assert_eq!(c.ok(&["gather", &key]), "2");
    // 200,000 messages of 1 KB may grow the scheduler by
    // less than 100 MB. Kept for the stopped subscriber: its 8 MiB buffer;
    // the rest is what was in flight and what the allocator has not yet
    // given back. Keeping every message would be over 200 MB.
    let grown = mib(c.pid(), "VmRSS").saturating_sub(before);
    assert!(
        grown < 100,
        "the scheduler kept {grown} MiB for the stopped subscriber"
    );
    // SAFETY: as above.
    unsafe {
        libc::kill(sub.id() as i32, libc::SIGCONT);
    }
    // Resumed, it finds its connection gone, connects again and
    // subscribes again, saying it missed messages…
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let said = err
            .recv_timeout(left)
            .expect("the subscriber never said it missed messages");
        if said.contains("missed") {
            break;
        }
    }
    // …and takes what is published from then on.
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the subscriber got nothing published after it came back"
        );
        c.ok(&["pub", "flood", "after"]);
        let seen = std::iter::from_fn(|| out.recv_timeout(Duration::from_millis(200)).ok())
            .any(|l| l == "\"after\"");
        if seen {
            break;
        }
    }
    assert!(sub.try_wait().unwrap().is_none(), "the subscriber ended");
    let _ = sub.kill();
    let _ = sub.wait();
}

#[test]
fn a_message_over_the_client_buffer_reaches_a_subscriber_that_reads_and_one_over_the_value_limit_is_refused()
 {
    let c = Cluster::start_with(
        1,
        1,
        &["--client-buffer", "1MiB", "--max-value-size", "4MiB"],
    );
    let mut sub = c
        .cmd()
        .args(["sub", "big"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let said = first_line(sub.stderr.take().unwrap(), Duration::from_secs(30));
    assert!(said.is_some_and(|l| l.contains("subscribed")));
    let (tx, lines) = std::sync::mpsc::channel();
    let out = sub.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    // 2 MiB: over the client buffer, under the value limit.
    let two = format!("\"{}\"", "x".repeat(2 << 20));
    let five = format!("\"{}\"", "y".repeat(5 << 20));
    for (message, what) in [
        (&two, "2 MiB"),
        (&five, "5 MiB"),
        (&"\"small\"".to_string(), "small"),
    ] {
        let published = c.run(&["pub", "big", "-"], &format!("{message}\n"));
        if what == "5 MiB" {
            // Refused by the publisher, which the scheduler told its limit.
            assert_eq!(published.status.code(), Some(2), "{}", stderr(&published));
            assert!(stderr(&published).contains("--max-value-size"));
        } else {
            assert!(published.status.success(), "{what}: {}", stderr(&published));
        }
    }
    let got = |what| {
        lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the subscriber got no {what} message"))
    };
    assert_eq!(got("2 MiB").len(), two.len());
    // The 5 MiB one never went: next comes the small one.
    assert_eq!(got("small"), "\"small\"");
    assert!(
        sub.try_wait().unwrap().is_none(),
        "the subscriber was cut off"
    );
    let _ = sub.kill();
    let _ = sub.wait();
}
