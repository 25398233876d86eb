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
