//! End-to-end: garbage on the scheduler's and workers' ports gets the
//! connection dropped, never a crash, and other work goes on.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

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
    let limit = 170 * 1024;
    let size = |p: &str| std::fs::metadata(p).unwrap().len() as usize;
    assert!(size(tasks_wasm()) < limit && size(dtask_guests::COORD_WASM) > limit);
    let c = Cluster::start_with(
        1,
        1,
        &["--max-value-size", "64KiB", "--max-module-size", "170KiB"],
    );
    let out = c.run(&["submit", dtask_guests::COORD_WASM, "fib", "3"], "");
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
    // Small ones still pass; the scheduler is unharmed.
    let small = c.ok(&["submit", "--pure=false", tasks_wasm(), "len", "-"]);
    assert_eq!(c.ok(&["gather", &small]), "0");
    c.ok(&["queue", "put", "q", "1"]);
    assert_eq!(c.ok(&["queue", "get", "q"]), "1");
}

#[test]
fn a_task_reaches_no_file_directory_environment_or_network() {
    let c = Cluster::start(1, 1);
    for what in ["file", "dir", "net"] {
        let key = c.submit("probe", &[what]);
        let got = c.ok(&["gather", "--raw", &key]);
        assert!(got.starts_with("denied: "), "{what}: {got}");
    }
    let key = c.submit("probe", &["env"]);
    assert_eq!(c.ok(&["gather", "--raw", &key]), "0 environment variables");
    // The worker goes on serving.
    let key = c.submit("inc", &["1"]);
    assert_eq!(c.ok(&["gather", &key]), "2");
}
