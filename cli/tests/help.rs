//! Every verb's `--help`, walked through the real binary: each has an
//! example and its exit statuses, one placeholder per flag across verbs,
//! no stray escapes, and no flag that means nothing on its verb.

mod common;

use common::DTASK;
use std::collections::BTreeMap;
use std::process::Command;

/// The help text of `dtask PATH --help`.
fn help(path: &[String]) -> String {
    let out = Command::new(DTASK)
        .args(path)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "dtask {path:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a help text lists (without `help`).
fn subcommands(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// The options a help text lists, with their placeholders.
fn options(text: &str) -> Vec<(String, Option<String>)> {
    text.lines()
        .skip_while(|l| *l != "Options:")
        .skip(1)
        // The section ends at the next heading (long help puts blank
        // lines between options).
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix("-")
                .filter(|r| r.len() > 2 && &r[1..3] == ", ")
                .map_or(l, |r| &r[3..]);
            let rest = l.strip_prefix("--")?;
            let name = rest.split([' ', '\t']).next()?.to_string();
            let placeholder = rest[name.len()..]
                .trim_start()
                .strip_prefix('<')
                .and_then(|p| p.split_once('>'))
                .map(|(p, _)| p.to_string());
            Some((name, placeholder))
        })
        .collect()
}

/// Every verb path, depth first: `["submit"]`, `["queue", "put"]`, …
fn verbs() -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut stack: Vec<Vec<String>> = subcommands(&help(&[]))
        .into_iter()
        .map(|c| vec![c])
        .collect();
    while let Some(path) = stack.pop() {
        for c in subcommands(&help(&path)) {
            let mut p = path.clone();
            p.push(c);
            stack.push(p);
        }
        out.push(path);
    }
    out.sort();
    out
}

#[test]
fn every_verb_has_an_example_exit_statuses_and_consistent_flags() {
    const PLACEHOLDERS: &[&str] = &[
        "ADDR",
        "DUR",
        "SIZE",
        "MIB",
        "N",
        "KEY",
        "BOOL",
        "DIR",
        "WORKER",
        "NAME=AMOUNT",
        "NAME=VALUE",
        "HOST",
        "PORT",
        "HOW",
        "KEYS",
        "STATE",
        "NAME",
        "FILE",
    ];
    const NO_SCHEDULER: &[&str] = &["scheduler", "cluster", "inspect", "journal", "cert"];
    let verbs = verbs();
    assert!(verbs.len() > 40, "found only {verbs:?}");
    let mut placeholder_of: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    let mut problems = Vec::new();
    for path in &verbs {
        let name = path.join(" ");
        let text = help(path);
        if !text.contains("Example") {
            problems.push(format!("`{name}` has no example"));
        }
        match text.matches("Exit status").count() {
            0 => problems.push(format!("`{name}` does not give its exit statuses")),
            1 => {}
            n => problems.push(format!("`{name}` gives its exit statuses {n} times")),
        }
        if text.contains('\\') {
            problems.push(format!("`{name}` shows a literal backslash"));
        }
        let opts = options(&text);
        let offers_scheduler = opts.iter().any(|(o, _)| o == "scheduler");
        if NO_SCHEDULER.contains(&path[0].as_str()) == offers_scheduler {
            problems.push(format!(
                "`{name}` {} --scheduler",
                if offers_scheduler {
                    "offers a meaningless"
                } else {
                    "lacks"
                }
            ));
        }
        for (flag, placeholder) in opts {
            if let Some(p) = &placeholder
                && !PLACEHOLDERS.contains(&p.as_str())
            {
                problems.push(format!("`{name} --{flag}` has the placeholder <{p}>"));
            }
            match placeholder_of.get(&flag) {
                Some((other, p)) if *p != placeholder => problems.push(format!(
                    "--{flag} is <{placeholder:?}> in `{name}` but <{p:?}> in `{other}`"
                )),
                Some(_) => {}
                None => {
                    placeholder_of.insert(flag, (name.clone(), placeholder));
                }
            }
        }
    }
    // `cluster` takes every flag it passes on to its workers.
    let cluster: Vec<String> = options(&help(&["cluster".into()]))
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    for (flag, _) in options(&help(&["worker".into()])) {
        // A port of its own is one process's: a cluster's workers share a host.
        let own = [
            "host",
            "advertise",
            "data-port",
            "reconnect-grace",
            "scheduler",
            "help",
        ];
        if !own.contains(&flag.as_str()) && !cluster.contains(&flag) {
            problems.push(format!("`cluster` lacks the worker flag --{flag}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn cluster_and_worker_spell_slots_alike_and_take_the_other_spelling() {
    for verb in ["cluster", "worker"] {
        let text = help(&[verb.into()]);
        assert!(text.contains("--nthreads <N>"), "{verb}: {text}");
        assert!(!text.contains("--threads"), "{verb}: {text}");
    }
    // The old spelling still parses (a usage error would exit 2 at once):
    // `worker --threads 0` is refused for the value, not the flag.
    let out = Command::new(DTASK)
        .args(["worker", "--threads", "0", "--scheduler", "127.0.0.1:9"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--nthreads must be at least 1"), "{err}");
    // A flag that means nothing on a daemon is refused.
    let out = Command::new(DTASK)
        .args(["scheduler", "--scheduler", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
