//! `cargo bench -p dtask --bench production`: what running dtask across
//! machines costs and withstands, measured here.
//!
//! 1. **TLS vs plaintext**, side by side in one run: the same local
//!    cluster shape (2 worker processes × 1 slot) started once without TLS
//!    and once with it, and the same client work on each through the public
//!    API (`Client::map` + `Client::gather`, then submit→result round
//!    trips), in a fresh client process per run (a process's TLS is set
//!    once), median of 3 runs with min and max.
//! 2. **A handshake flood**: 200 connections from 200 loopback addresses,
//!    each announcing a 2 GiB frame and then holding; the scheduler's RSS
//!    before and during, and how long a real client's submit+gather takes
//!    meanwhile.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Cluster, DTASK, tasks_wasm};
use dtask_runtime::client::{Client, SubmitOptions};
use dtask_runtime::module::LocalModule;
use dtask_runtime::protocol::Arg;
use dtask_runtime::value::{Value, encode};
use std::process::Command;
use std::time::{Duration, Instant};

const MAP: i64 = 20_000;
const TRIPS: i64 = 2_000;
const RUNS: usize = 3;

fn int(i: i64) -> Arg {
    Arg::Value(encode(&Value::from(i)).into())
}

fn main() {
    // The client side of one run, in a process of its own.
    if let Ok(addr) = std::env::var("DTASK_BENCH_CLIENT_OF") {
        let token = std::env::var("DTASK_BENCH_TOKEN").unwrap();
        let offset: i64 = std::env::var("DTASK_BENCH_OFFSET")
            .unwrap()
            .parse()
            .unwrap();
        let (rate, p50) = measure(&addr, &token, offset);
        println!("{rate} {}", p50.as_secs_f64() * 1e6);
        return;
    }
    println!("dtask production benchmarks");
    println!("{:-<78}", "");
    tls_versus_plaintext();
    println!("{:-<78}", "");
    handshake_flood();
}

/// One run's figures: map+gather tasks/s and the round trip's p50.
fn measure(addr: &str, token: &str, offset: i64) -> (f64, Duration) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::connect(addr, token, None).await.unwrap();
        let module = LocalModule::load(tasks_wasm().as_ref()).unwrap();
        let opts = SubmitOptions::default();
        // Warm up: workers compile the module.
        let f = client
            .submit(&module, "inc", vec![int(-1)], &opts)
            .await
            .unwrap();
        f.result(None).await.unwrap();
        let start = Instant::now();
        let calls = (0..MAP).map(|i| vec![int(offset + i)]).collect();
        let futures = client.map(&module, "inc", calls, &opts).await.unwrap();
        let keys: Vec<String> = futures.iter().map(|f| f.key().to_string()).collect();
        let values = client.gather(&keys).await.unwrap();
        let rate = MAP as f64 / start.elapsed().as_secs_f64();
        let sum: i64 = values.iter().map(|v| v.as_i64().unwrap()).sum();
        assert_eq!(sum, (0..MAP).map(|i| offset + i + 1).sum::<i64>());
        drop(futures);
        let mut times = Vec::with_capacity(TRIPS as usize);
        for i in 0..TRIPS {
            let t = Instant::now();
            let f = client
                .submit(&module, "inc", vec![int(offset + 10_000_000 + i)], &opts)
                .await
                .unwrap();
            let v = f.result(None).await.unwrap();
            times.push(t.elapsed());
            assert_eq!(v, Value::from(offset + 10_000_001 + i));
        }
        times.sort();
        (rate, times[times.len() / 2])
    })
}

/// Median, min and max.
fn spread(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

fn tls_versus_plaintext() {
    let certs = tempfile::tempdir().unwrap();
    let out = Command::new(DTASK)
        .args(["cert", "init"])
        .arg(certs.path())
        .args(["--host", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let ca = certs.path().join("ca.pem").display().to_string();
    let cert = certs.path().join("cert.pem").display().to_string();
    let key = certs.path().join("key.pem").display().to_string();
    let tls_env = [
        ("DTASK_TLS_CA", ca.as_str()),
        ("DTASK_TLS_CERT", cert.as_str()),
        ("DTASK_TLS_KEY", key.as_str()),
    ];
    let plain = Cluster::start(2, 1);
    let tls = Cluster::start_env(2, 1, &[], &tls_env);
    let mut figures: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    // Alternating runs, so that a slow spell of the machine hits both.
    for run in 0..RUNS {
        for (i, (cluster, ca)) in [(&plain, None), (&tls, Some(&ca))].into_iter().enumerate() {
            let mut cmd = Command::new(std::env::current_exe().unwrap());
            cmd.env("DTASK_BENCH_CLIENT_OF", &cluster.addr)
                .env("DTASK_BENCH_TOKEN", cluster.token())
                .env("DTASK_BENCH_OFFSET", (run as i64 * 100_000_000).to_string())
                .env("DTASK_STATE_DIR", cluster.state.path())
                .env_remove("DTASK_TLS_CERT")
                .env_remove("DTASK_TLS_KEY");
            match ca {
                Some(ca) => cmd.env("DTASK_TLS_CA", ca),
                None => cmd.env_remove("DTASK_TLS_CA"),
            };
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            let mut it = text.split_whitespace().map(|x| x.parse::<f64>().unwrap());
            figures[i].0.push(it.next().unwrap());
            figures[i].1.push(it.next().unwrap());
        }
    }
    println!(
        "TLS vs plaintext, 2 workers x 1 slot, {RUNS} runs each (median [min, max]), Rust client API"
    );
    let [(plain_rate, plain_trip), (tls_rate, tls_trip)] = figures;
    let (pr, pr0, pr1) = spread(plain_rate);
    let (tr, tr0, tr1) = spread(tls_rate);
    let (pt, pt0, pt1) = spread(plain_trip);
    let (tt, tt0, tt1) = spread(tls_trip);
    println!(
        "  map+gather {MAP} inc   plaintext {pr:>8.0} [{pr0:.0}, {pr1:.0}]  TLS {tr:>8.0} [{tr0:.0}, {tr1:.0}] tasks/s  TLS costs {:.1}%  (target <= 15%)",
        (1.0 - tr / pr) * 100.0
    );
    println!(
        "  round trip p50 ({TRIPS})  plaintext {pt:>8.1} [{pt0:.1}, {pt1:.1}]  TLS {tt:>8.1} [{tt0:.1}, {tt1:.1}] us       TLS adds {:.1} us (target <= 50 us)",
        tt - pt
    );
}

/// Resident memory of `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    common::mib(pid, "VmRSS") as f64
}

fn handshake_flood() {
    let cluster = Cluster::start(1, 1);
    let before = rss_mib(cluster.pid());
    let port: u16 = cluster.addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let held = rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut held = Vec::new();
        for i in 0..200u32 {
            // Each from an address of its own in 127/8: per-address caps
            // do not apply, only the global ones.
            let from = std::net::Ipv4Addr::new(127, 0, (2 + i / 250) as u8, (1 + i % 250) as u8);
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind((from, 0).into()).unwrap();
            let Ok(mut s) = socket.connect(([127, 0, 0, 1], port).into()).await else {
                continue;
            };
            // A 2 GiB frame announced, a little of it sent, then nothing.
            let _ = s
                .write_all(&(2u32 << 30).wrapping_sub(1).to_be_bytes())
                .await;
            let _ = s.write_all(&[0u8; 1024]).await;
            held.push(s);
        }
        held
    });
    // Let the scheduler read what it was sent.
    std::thread::sleep(Duration::from_millis(500));
    let during = rss_mib(cluster.pid());
    let start = Instant::now();
    let key = cluster.submit("inc", &["41"]);
    assert_eq!(cluster.ok(&["gather", &key]), "42");
    let answered = start.elapsed();
    println!(
        "handshake flood: {} connections from 200 addresses, each announcing a 2 GiB frame and holding",
        held.len()
    );
    println!(
        "  scheduler RSS {before:.0} MiB before, {during:.0} MiB during (+{:.0} MiB, target <= 50)",
        during - before
    );
    println!(
        "  a real client's submit+gather (two CLI processes) meanwhile: {:.0} ms (target < 1000)",
        answered.as_secs_f64() * 1e3
    );
    drop(held);
}
