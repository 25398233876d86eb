//! `just bench` (and `cargo bench -p dtask --bench dashboard`): what
//! watching costs. `seq N | dtask map T inc | dtask gather --release` on a
//! `dtask cluster` of 2 workers × 1 slot, alternately with nobody watching
//! and with a dashboard page's polling (`/json/status.json` every second)
//! and a Prometheus scrape (`/metrics` every second) running beside it,
//! `DASHBOARD_RUNS` times each (default 3, `DASHBOARD_TASKS` tasks each,
//! default 100,000). Prints the median rate of each with min and max, and
//! their ratio.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Cluster, DTASK, http_get, tasks_wasm};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() {
    let runs: usize = std::env::var("DASHBOARD_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let n: u64 = std::env::var("DASHBOARD_TASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let c = Cluster::start(2, 1);
    let info: serde_json::Value = serde_json::from_str(&c.ok(&["info"])).unwrap();
    let base = info["dashboard"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {}", c.token());
    let script = format!(
        "seq {n} | {DTASK} map {} inc | {DTASK} gather --release > /dev/null",
        tasks_wasm()
    );
    let pipeline = || {
        let began = Instant::now();
        let ok = common::sh(&c.cmd(), &script).status().unwrap().success();
        assert!(ok, "the pipeline failed");
        n as f64 / began.elapsed().as_secs_f64()
    };
    // Warm up: the module compiled, the workers' caches filled.
    pipeline();
    let (mut quiet, mut watched) = (Vec::new(), Vec::new());
    let polls = Arc::new(AtomicU64::new(0));
    for _ in 0..runs {
        quiet.push(pipeline());
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (stop, polls, base, bearer) =
                (stop.clone(), polls.clone(), base.clone(), bearer.clone());
            std::thread::spawn(move || {
                let auth = [("Authorization", bearer.as_str())];
                let mut after = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let tick = Instant::now();
                    let (status, body) =
                        http_get(&format!("{base}json/status.json?after={after}"), &auth);
                    assert_eq!(status, 200);
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    if let Some(last) = v["spans"].as_array().and_then(|s| s.last()) {
                        after = last["id"].as_u64().unwrap() + 1;
                    }
                    let (status, _) = http_get(&format!("{base}metrics"), &auth);
                    assert_eq!(status, 200);
                    polls.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
                }
            })
        };
        watched.push(pipeline());
        stop.store(true, Ordering::Relaxed);
        watcher.join().unwrap();
    }
    let summary = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (q, qmin, qmax) = summary(&mut quiet);
    let (w, wmin, wmax) = summary(&mut watched);
    println!(
        "seq {n} | map inc | gather --release on dtask cluster (2 workers x 1 slot), {runs} runs each"
    );
    println!("{:-<78}", "");
    println!(
        "nobody watching:                 median {q:>7.0} tasks/s (min {qmin:.0}, max {qmax:.0})"
    );
    println!(
        "status page + /metrics each 1 s: median {w:>7.0} tasks/s (min {wmin:.0}, max {wmax:.0}), {} polls",
        polls.load(Ordering::Relaxed)
    );
    println!("watched / quiet {:.2}   target >= 0.95", w / q);
    println!("{:-<78}", "");
}
