//! End-to-end: dtask.toml, environment overrides and `dtask config`.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn config_file_is_found_and_env_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dtask.toml"),
        "scheduler = \"10.1.2.3:9999\"\n[task]\nretries = 3\n",
    )
    .unwrap();
    let config = |env: Option<&str>| {
        let mut c = Command::new(DTASK);
        c.args(["config", "--json"])
            .current_dir(dir.path())
            .env("DTASK_STATE_DIR", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("none"))
            .env_remove("DTASK_SCHEDULER");
        if let Some(addr) = env {
            c.env("DTASK_SCHEDULER", addr);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["name"].as_str().unwrap().to_string(), v))
            .collect::<std::collections::HashMap<_, _>>()
    };
    let rows = config(None);
    assert_eq!(rows["scheduler"]["value"], "10.1.2.3:9999");
    assert_eq!(rows["scheduler"]["source"], "dtask.toml");
    assert_eq!(rows["task.retries"]["value"], "3");
    let rows = config(Some("127.0.0.1:1"));
    assert_eq!(rows["scheduler"]["value"], "127.0.0.1:1");
    assert_eq!(rows["scheduler"]["source"], "DTASK_SCHEDULER");
}

#[test]
fn a_bad_config_file_is_a_clear_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dtask.toml"), "schedular = 1\n").unwrap();
    let out = Command::new(DTASK)
        .args(["status", "x-1"])
        .current_dir(dir.path())
        .env("DTASK_STATE_DIR", dir.path())
        .env_remove("DTASK_SCHEDULER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a valid dtask config"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn worker_and_task_defaults_come_from_the_file() {
    let c = Cluster::start(1, 1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dtask.toml"),
        "[worker]\nnthreads = 3\n\n[task]\ntimeout = \"200ms\"\n",
    )
    .unwrap();
    let mut worker = c.cmd();
    let mut worker = worker
        .args(["worker"])
        .current_dir(dir.path())
        .env("DTASK_LOG", "warn")
        .spawn()
        .unwrap();
    wait_until(
        Duration::from_secs(20),
        "the configured worker to join",
        || c.ok(&["workers"]).contains("nthreads=3"),
    );
    let key = {
        let out = c
            .cmd()
            .current_dir(dir.path())
            .args(["submit", tasks_wasm(), "spin", "60000"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_string()
    };
    let out = c.run(&["gather", &key], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("time limit"), "{}", stderr(&out));
    let _ = worker.kill();
    let _ = worker.wait();
}

#[test]
fn a_cluster_gives_its_workers_the_files_worker_section_and_its_own_flags() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dtask.toml"),
        "[worker]\nnthreads = 3\nmemory-limit-mib = 300\nresources = { GPU = 2 }\n",
    )
    .unwrap();
    let c = Cluster::start_in(dir.path(), 1, &[]);
    let workers = c.ok(&["workers"]);
    assert!(
        workers.contains("nthreads=3")
            && workers.contains("memory-limit-mib=300")
            && workers.contains("GPU=2"),
        "{workers}"
    );
    drop(c);
    // Flags given to the cluster win over the file.
    let c = Cluster::start_in(
        dir.path(),
        1,
        &[
            "--nthreads",
            "2",
            "--memory-limit-mib",
            "200",
            "--resources",
            "FPGA=1",
        ],
    );
    let workers = c.ok(&["workers"]);
    assert!(
        workers.contains("nthreads=2")
            && workers.contains("memory-limit-mib=200")
            && workers.contains("FPGA=1")
            && !workers.contains("GPU"),
        "{workers}"
    );
}

#[test]
fn a_reconnect_grace_that_is_not_a_duration_is_said_not_ignored() {
    let c = Cluster::start(1, 1);
    let out = c
        .cmd()
        .env("DTASK_RECONNECT_GRACE", "bogus")
        .arg("info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("DTASK_RECONNECT_GRACE=\"bogus\" is not a duration"),
        "{err}"
    );
}
