//! `just bench` (and `cargo bench -p dtask --bench pipelines`): back-to-back
//! shell pipelines on the embedded local default, as a new user runs them:
//! `seq N | dtask map T inc | dtask gather --release > /dev/null`, ten times
//! (the local default keeps its journal). Prints each pipeline's rate, the
//! tenth against the first, what the scheduler's journal wrote per task,
//! and what a scheduler killed then resumed from that journal holds.
//! `PIPELINES` and `PIPELINE_TASKS` change the counts.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{DTASK, tasks_wasm};
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    let pipelines: usize = std::env::var("PIPELINES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let n: u64 = std::env::var("PIPELINE_TASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let state = tempfile::tempdir().unwrap();
    let dtask = |args: &[&str]| {
        let mut c = Command::new(DTASK);
        c.args(args)
            .env("DTASK_STATE_DIR", state.path())
            .env("XDG_CONFIG_HOME", state.path())
            .env_remove("DTASK_SCHEDULER")
            .env_remove("DTASK_TOKEN");
        c
    };
    // The first submit starts the local default (and compiles the module).
    let warm = dtask(&["submit", tasks_wasm(), "inc", "0"])
        .output()
        .unwrap();
    assert!(
        warm.status.success(),
        "{}",
        String::from_utf8_lossy(&warm.stderr)
    );
    let key = String::from_utf8(warm.stdout).unwrap();
    let gathered = dtask(&["gather", "--release", key.trim()])
        .output()
        .unwrap();
    assert!(gathered.status.success());
    println!("{pipelines} pipelines of {n} tasks on the local default (journal on)");
    println!("{:-<78}", "");
    let script = format!(
        "seq {n} | {DTASK} map {} inc | {DTASK} gather --release > /dev/null",
        tasks_wasm()
    );
    let mut rates = Vec::new();
    for i in 1..=pipelines {
        let began = Instant::now();
        let ok = common::sh(&dtask(&[]), &script)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "pipeline {i} failed");
        let rate = n as f64 / began.elapsed().as_secs_f64();
        println!("pipeline {i:>2}: {rate:>9.0} tasks/s   target >= 40,000");
        rates.push(rate);
    }
    let info = dtask(&["info"]).output().unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let bytes = info["journal"]["bytes"].as_u64().unwrap_or(0);
    let total = n * pipelines as u64 + 1;
    println!("{:-<78}", "");
    println!(
        "last / first {:.2}   target >= 0.8",
        rates.last().unwrap() / rates[0]
    );
    println!(
        "journal: {bytes} bytes for {total} tasks = {:.0} bytes per task (submitted, finished, released)   target <= 200",
        bytes as f64 / total as f64
    );
    println!(
        "afterwards: {} keys known, {} held, scheduler RSS {:.0} MB",
        info["tasks"],
        info["held"],
        info["scheduler_rss_bytes"].as_f64().unwrap_or(0.0) / 1e6
    );
    // Killed outright, the local default resumes from its journal at the
    // next command: what it holds afterwards is what it restored.
    let pid = info["scheduler"]["source"]
        .as_str()
        .and_then(|s| s.split("(pid ").nth(1))
        .and_then(|s| s.trim_end_matches(')').parse::<u32>().ok());
    if let Some(pid) = pid {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        let began = Instant::now();
        let resumed = dtask(&["submit", tasks_wasm(), "inc", "0"])
            .output()
            .unwrap();
        let took = began.elapsed();
        assert!(
            resumed.status.success(),
            "{}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        let info = dtask(&["info"]).output().unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap_or_default();
        println!(
            "killed (-9), then resumed from the journal by the next submit in {:.0} ms: {} keys known, scheduler RSS {:.0} MB",
            took.as_secs_f64() * 1e3,
            info["tasks"],
            info["scheduler_rss_bytes"].as_f64().unwrap_or(0.0) / 1e6
        );
    }
    let _ = dtask(&["shutdown"]).status();
}
