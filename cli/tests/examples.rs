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
