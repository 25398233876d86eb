//! The deployment recipes in `deploy/`: systemd units pass
//! `systemd-analyze verify`, and every flag and variable the recipes use
//! exists in the binary they run.

mod common;

use common::DTASK;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

fn help(verb: &str) -> String {
    let out = Command::new(DTASK).args([verb, "--help"]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The `--flags` among `args`, checked against `dtask VERB --help`.
fn check_flags(recipe: &str, args: &[String]) {
    let verb = args
        .first()
        .unwrap_or_else(|| panic!("{recipe}: no verb in {args:?}"));
    let text = help(verb);
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        let flag = flag.split('=').next().unwrap();
        assert!(
            text.contains(&format!("{flag} ")) || text.contains(&format!("{flag}\n")),
            "{recipe}: `dtask {verb}` has no {flag}"
        );
    }
}

/// Every `DTASK_…` variable named in `text`, checked against what dtask
/// reads (the README's table of variables and clap's `[env: …]`).
fn check_variables(recipe: &str, text: &str) {
    let readme = std::fs::read_to_string(deploy("../README.md")).unwrap();
    let mut at = 0;
    while let Some(i) = text[at..].find("DTASK_") {
        let start = at + i;
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .map_or(text.len(), |e| start + e);
        let name = &text[start..end];
        assert!(
            readme.contains(&format!("`{name}`")),
            "{recipe}: {name} is not a variable the README documents"
        );
        at = end;
    }
}

#[test]
fn systemd_units_verify_and_use_real_flags() {
    let dir = tempfile::tempdir().unwrap();
    for unit in ["dtask-scheduler.service", "dtask-worker@.service"] {
        let text = std::fs::read_to_string(deploy("systemd").join(unit)).unwrap();
        check_variables(unit, &text);
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/dtask "))
            .unwrap_or_else(|| panic!("{unit} runs /usr/local/bin/dtask"));
        let args: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
        check_flags(unit, &args);
        for hardening in ["DynamicUser=yes", "ProtectSystem=strict", "StateDirectory="] {
            assert!(text.contains(hardening), "{unit} lacks {hardening}");
        }
        // Verified as installed, with the binary under test in place of
        // /usr/local/bin/dtask (verify checks that it is executable).
        let local = text.replace("/usr/local/bin/dtask", DTASK);
        let name = if unit.contains('@') {
            "dtask-worker@1.service".to_string()
        } else {
            unit.to_string()
        };
        std::fs::write(dir.path().join(unit), local).unwrap();
        if unit.contains('@') {
            std::os::unix::fs::symlink(dir.path().join(unit), dir.path().join(&name)).unwrap();
        }
    }
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("dtask-scheduler.service"))
        .arg(dir.path().join("dtask-worker@1.service"))
        .output();
    match verify {
        Err(e) => eprintln!(
            "*** SKIPPED systemd-analyze verify: not on this machine ({e}); the units' flags \
             were still checked ***"
        ),
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "systemd-analyze verify failed: {err}");
            let ours: Vec<&str> = err.lines().filter(|l| l.contains("dtask")).collect();
            assert!(
                ours.is_empty(),
                "systemd-analyze verify complains: {ours:?}"
            );
        }
    }
}

#[test]
fn kubernetes_manifests_use_real_flags_and_variables() {
    let text = std::fs::read_to_string(deploy("kubernetes/dtask.yaml")).unwrap();
    check_variables("dtask.yaml", &text);
    let mut verbs = Vec::new();
    for line in text.lines() {
        let Some(args) = line.trim().strip_prefix("args: ") else {
            continue;
        };
        // Arguments are a flow sequence of quoted strings: JSON.
        let args: Vec<String> = serde_json::from_str(args)
            .unwrap_or_else(|e| panic!("dtask.yaml: args are not a list of strings ({e}): {args}"));
        check_flags("dtask.yaml", &args);
        verbs.push(args[0].clone());
    }
    assert_eq!(verbs, ["scheduler", "worker"]);
    // Readiness comes from the dashboard's open /health.
    assert!(text.contains("path: /health"));
    assert!(text.contains("value: \"dtask-scheduler:8786\""));
}

#[test]
fn the_slurm_script_uses_real_flags() {
    let text = std::fs::read_to_string(deploy("slurm/dtask.sbatch")).unwrap();
    check_variables("dtask.sbatch", &text);
    for line in text.lines() {
        let Some(at) = line.find("\"$DTASK\" ") else {
            continue;
        };
        let args: Vec<String> = line[at + "\"$DTASK\" ".len()..]
            .split_whitespace()
            .take_while(|w| !matches!(*w, ">" | "&" | "2>&1" | "|" | ">>"))
            .map(|w| w.trim_matches('"').to_string())
            .collect();
        if args
            .first()
            .is_some_and(|v| v == "scheduler" || v == "worker")
        {
            check_flags("dtask.sbatch", &args);
        }
    }
}

#[test]
fn the_slurm_script_runs_a_workload_in_a_real_slurm_job() {
    let root = unsafe { libc::geteuid() } == 0;
    let have = |cmd: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !root
        || !["slurmctld", "slurmd", "munged", "sbatch"]
            .iter()
            .all(|c| have(c))
    {
        eprintln!(
            "*** SKIPPED the Slurm recipe's test: it needs root and Debian's slurm-wlm \
             (slurmctld, slurmd, munged, sbatch); .ci/run installs them ***"
        );
        return;
    }
    let out = Command::new("bash")
        .arg(deploy("slurm/test.sh"))
        .arg(DTASK)
        .arg(common::tasks_wasm())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "deploy/slurm/test.sh failed:\n{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("slurm-test: ok"),
        "{err}"
    );
}
