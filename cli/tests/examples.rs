//! End-to-end: the runnable examples do what they say.

mod common;

use common::*;
use std::process::Command;

#[test]
fn quickstart_runs_on_the_embedded_default_and_stops_it() {
    let state = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("DTASK", DTASK)
        .env("TASKS_WASM", tasks_wasm())
        .env("DTASK_STATE_DIR", state.path())
        .env("DTASK_DASHBOARD_PORT", "0")
        .env("XDG_CONFIG_HOME", state.path())
        .env_remove("DTASK_SCHEDULER")
        .env_remove("DTASK_TOKEN")
        .output()
        .unwrap();
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "stdout:\n{o}\nstderr:\n{e}");
    assert!(e.contains("started a local cluster"), "{e}");
    let lines: Vec<&str> = o.lines().collect();
    for expected in ["11", "16", "501500", "5.0"] {
        assert!(lines.contains(&expected), "{expected} missing from:\n{o}");
    }
    assert!(o.contains("division by zero: 1 / 0"), "{o}");
    assert!(o.ends_with("# done\n"), "{o}");
    // The script's exit trap shut the cluster down.
    assert!(!state.path().join("local.toml").exists());
}

fn run_example(c: &Cluster, script: &str, args: &[&str]) -> std::process::Output {
    let path = format!("{}/../examples/{script}", env!("CARGO_MANIFEST_DIR"));
    Command::new("bash")
        .arg(path)
        .args(args)
        .env("DTASK", DTASK)
        .env("TASKS_WASM", tasks_wasm())
        .env("DTASK_STATE_DIR", c.state.path())
        .env("DTASK_DASHBOARD_PORT", "0")
        .env("DTASK_SCHEDULER", &c.addr)
        .output()
        .unwrap()
}

#[test]
fn word_frequency_map_reduce_over_a_folder() {
    let c = Cluster::start(2, 1);
    let docs = tempfile::tempdir().unwrap();
    let texts = [
        "It was the best of times, it was the worst of times",
        "It was the age of wisdom",
        "it was the age of foolishness",
        "The end",
        "Of course",
    ];
    for (i, t) in texts.iter().enumerate() {
        std::fs::write(docs.path().join(format!("{i}.txt")), t).unwrap();
    }
    let out = run_example(
        &c,
        "word-frequency.sh",
        &[docs.path().to_str().unwrap(), "3"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let top: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(top, serde_json::json!([["of", 5], ["the", 5], ["it", 4]]));
}

#[test]
fn monte_carlo_stops_early_and_cancels_the_rest() {
    let c = Cluster::start(2, 1);
    let out = run_example(&c, "monte-carlo-pi.sh", &["400", "200000", "1000000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    let pi: f64 = line
        .split_whitespace()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no estimate in {line:?}"));
    assert!((pi - std::f64::consts::PI).abs() < 0.01, "{line}");
    // Everything was cancelled or released: no work is left behind.
    let workers = c.ok(&["workers", "--json"]);
    for w in workers.lines() {
        let w: serde_json::Value = serde_json::from_str(w).unwrap();
        assert_eq!(w["processing"], 0, "{workers}");
    }
}

#[test]
fn flaky_task_made_reliable_with_retries() {
    let c = Cluster::start(1, 1);
    let out = run_example(&c, "flaky-retries.sh", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let o = stdout(&out);
    assert!(o.contains("without retries: error"), "{o}");
    assert!(o.contains("with --retries 300: "), "{o}");
}

#[test]
fn coordination_tour_runs_from_the_shell() {
    let c = Cluster::start(2, 1);
    let path = format!("{}/../examples/coordination.sh", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(path)
        .env("DTASK", DTASK)
        .env("COORD_WASM", dtask_guests::COORD_WASM)
        .env("DTASK_STATE_DIR", c.state.path())
        .env("DTASK_DASHBOARD_PORT", "0")
        .env("DTASK_SCHEDULER", &c.addr)
        .output()
        .unwrap();
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "stdout:\n{o}\nstderr:\n{e}");
    let sum: u64 = (0..1000).sum();
    for expected in [
        "fib(20) = 6765".to_string(),
        "counter after 20 locked increments: 20".into(),
        "a task took 41 from the shell".into(),
        "the shell took 42 from a task".into(),
        "the monitor counted 3 events".into(),
        format!("fan-out sums: [{sum},{sum},{sum}]"),
    ] {
        assert!(o.contains(&expected), "{expected:?} missing from:\n{o}");
    }
}

/// The `pi` example binary, built if this run did not build it.
fn pi_example() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let release = exe.parent().unwrap().parent().unwrap();
    let pi = release.join("examples").join("pi");
    if !pi.exists() {
        let built = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "-p",
                "dtask",
                "--example",
                "pi",
                "--target-dir",
            ])
            .arg(release.parent().unwrap())
            .status()
            .unwrap();
        assert!(built.success(), "cannot build the pi example");
    }
    pi
}

#[test]
fn the_rust_example_runs_with_nothing_running_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = start_with_stdin(
        Command::new(pi_example())
            .arg(tasks_wasm())
            .current_dir(dir.path())
            .env("DTASK_STATE_DIR", dir.path().join("state"))
            .env("DTASK_DASHBOARD_PORT", "0")
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env_remove("DTASK_SCHEDULER")
            .env_remove("DTASK_TOKEN"),
        "",
    )
    .output_within(std::time::Duration::from_secs(120), "the pi example");
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "stdout:\n{o}\nstderr:\n{e}");
    let pi: f64 = o
        .strip_prefix("pi ~ ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no estimate in {o:?}"));
    assert!((pi - std::f64::consts::PI).abs() < 0.05, "{pi}");
    // No background cluster was started, and none is left: the program ran
    // its own and it ended with it.
    assert!(!dir.path().join("state").join("local.toml").exists());
    assert!(!e.contains("started a local cluster"), "{e}");
    eprintln!("pi example: {:?}", started.elapsed());
}
