//! End-to-end: futures from the shell against a real cluster.

mod common;

use common::*;
use std::time::Duration;

fn is_key(s: &str, function: &str) -> bool {
    s.strip_prefix(function)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|h| {
            h.len() == 32
                && h.chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        })
}

#[test]
fn submit_prints_a_key_and_gather_prints_the_result() {
    let c = Cluster::start(2, 1);
    let key = c.submit("inc", &["10"]);
    assert!(is_key(&key, "inc"), "{key}");
    assert_eq!(c.ok(&["gather", &key]), "11");
    assert_eq!(c.ok(&["status", &key]), format!("{key}\tfinished"));
}

#[test]
fn same_submit_gives_same_key_and_does_not_run_again() {
    let c = Cluster::start(1, 1);
    let key = c.submit("spin", &["50"]);
    assert_eq!(c.ok(&["gather", &key]), "50");
    let again = c.submit("spin", &["50"]);
    assert_eq!(again, key);
    // Recomputing would put it back in processing; it stays finished.
    assert_eq!(c.ok(&["status", &key]), format!("{key}\tfinished"));
    let other = c.submit("spin", &["51"]);
    assert_ne!(other, key);
}

#[test]
fn impure_submits_get_fresh_keys_and_explicit_keys_are_kept() {
    let c = Cluster::start(1, 1);
    let a = c.ok(&["submit", "--pure=false", tasks_wasm(), "inc", "1"]);
    let b = c.ok(&["submit", "--pure=false", tasks_wasm(), "inc", "1"]);
    assert_ne!(a, b);
    let k = c.ok(&["submit", "--key", "my-answer", tasks_wasm(), "inc", "41"]);
    assert_eq!(k, "my-answer");
    assert_eq!(c.ok(&["gather", "my-answer"]), "42");
    // The same key is the same future (as in Dask), whatever the call.
    let again = c.ok(&["submit", "--key", "my-answer", tasks_wasm(), "inc", "1"]);
    assert_eq!(again, "my-answer");
    assert_eq!(c.ok(&["gather", "my-answer"]), "42");
}

/// A `--key` of the form dtask gives its own keys (a pure call's, as
/// `inc 1`'s, or scattered data's) is refused, so a later call or scatter
/// never gets another's value under its key.
#[test]
fn a_chosen_key_cannot_take_the_name_of_a_call_or_value_made_later() {
    let c = Cluster::start(1, 1);
    let pure = c.submit("inc", &["1"]);
    c.ok(&["release", &pure]);
    let data = c.ok(&["scatter"]);
    for taken in [&pure, &data] {
        let out = c.run(&["submit", "--key", taken, tasks_wasm(), "inc", "999"], "");
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("dtask's own keys"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(c.ok(&["gather", &c.submit("inc", &["1"])]), "2");
}

#[test]
fn futures_as_arguments() {
    let c = Cluster::start(2, 1);
    let k1 = c.submit("inc", &["1"]);
    let k2 = c.submit("inc", &["2"]);
    let sum = c.submit("add", &[&format!("@{k1}"), &format!("@{k2}")]);
    assert_eq!(c.ok(&["gather", &sum]), "5");
    let mixed = c.submit("add", &[&format!("@{sum}"), "10"]);
    assert_eq!(c.ok(&["gather", &mixed]), "15");
}

#[test]
fn map_then_gather_streams_in_order() {
    let c = Cluster::start(2, 1);
    let input: String = (1..=10_000).map(|i| format!("{i}\n")).collect();
    let keys = c.run(&["map", tasks_wasm(), "inc"], &input);
    assert!(keys.status.success(), "{}", stderr(&keys));
    let keys = stdout(&keys);
    assert_eq!(keys.lines().count(), 10_000);
    assert!(keys.lines().all(|k| is_key(k, "inc")));
    let out = c.run(&["gather"], &keys);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected: String = (2..=10_001).map(|i| format!("{i}\n")).collect();
    assert_eq!(stdout(&out), expected);
}

#[test]
fn shell_pipeline_map_into_gather() {
    let c = Cluster::start(2, 1);
    let script = format!(
        "seq 1 500 | {DTASK} map {} inc | {DTASK} gather | tail -1",
        tasks_wasm()
    );
    let out = c.cmd().arg("--help").output().unwrap();
    assert!(out.status.success());
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("DTASK_STATE_DIR", c.state.path())
        .env("DTASK_SCHEDULER", &c.addr)
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), "501", "{}", stderr(&out));
}

#[test]
fn map_with_json_lines() {
    let c = Cluster::start(1, 1);
    let keys = c.run(
        &["map", "--json", tasks_wasm(), "add"],
        "[1, 2]\n[10, 20]\n",
    );
    assert!(keys.status.success(), "{}", stderr(&keys));
    let out = c.run(&["gather"], &stdout(&keys));
    assert_eq!(stdout(&out), "3\n30\n");
}

#[test]
fn guest_panic_is_an_error_with_its_message_and_dependents_inherit_it() {
    let c = Cluster::start(2, 1);
    let bad = c.submit("div", &["1", "0"]);
    let out = c.run(&["gather", &bad], "");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("dtask: error: "), "{err}");
    assert!(err.contains("division by zero: 1 / 0"), "{err}");
    assert!(err.contains("wasm backtrace"), "{err}");
    // The report says each thing once: no blank first line of guest
    // stderr, no second backtrace heading, no hint about an environment
    // variable tasks do not have.
    assert!(!err.contains("guest stderr:\n      \n"), "{err}");
    assert_eq!(err.matches("wasm backtrace").count(), 1, "{err}");
    assert!(!err.contains("RUST_BACKTRACE"), "{err}");
    assert_eq!(c.ok(&["status", &bad]), format!("{bad}\terror"));

    let dep = c.submit("inc", &[&format!("@{bad}")]);
    let out = c.run(&["gather", &dep], "");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("division by zero: 1 / 0"), "{err}");
    assert!(err.contains(&format!("depends on {bad}")), "{err}");
    assert_eq!(c.ok(&["status", &dep]), format!("{dep}\terror"));
    // `wait` agrees.
    assert_eq!(c.run(&["wait", &dep], "").status.code(), Some(1));
}

#[test]
fn rich_values_in_and_out_as_json() {
    let c = Cluster::start(1, 1);
    let cases: &[(&str, &[&str], &str)] = &[
        ("greet", &["wasm"], "\"Hello, wasm!\""),
        ("total", &["[1, 2, 3, 4]"], "10"),
        ("norm", &[r#"{"x": 3, "y": 4}"#], "5.0"),
        (
            "translate",
            &[r#"{"x": 1, "y": 2}"#, "0.5", "-1"],
            r#"{"x":1.5,"y":1.0}"#,
        ),
        ("parse-int", &["42"], r#"{"ok":42}"#),
        ("color-name", &["green"], "\"green\""),
        ("next-color", &["blue"], "\"red\""),
        ("area", &["dot"], "0.0"),
        ("area", &[r#"{"rectangle": {"x": 2, "y": 3}}"#], "6.0"),
        ("first", &["[]"], "null"),
        ("first", &["[7, 8]"], "7"),
        ("reverse-bytes", &["abc"], r#"{"$bytes":"Y2Jh"}"#),
    ];
    for (f, args, expected) in cases {
        let key = c.submit(f, args);
        assert_eq!(&c.ok(&["gather", &key]), expected, "{f} {args:?}");
    }
    let err = c.submit("parse-int", &["x"]);
    let got: serde_json::Value = serde_json::from_str(&c.ok(&["gather", &err])).unwrap();
    assert!(
        got["err"].as_str().unwrap().contains("not an integer"),
        "{got}"
    );
    let raw = c.submit("greet", &["raw"]);
    assert_eq!(c.ok(&["gather", "-r", &raw]), "Hello, raw!");
}

#[test]
fn arguments_from_stdin_and_literal_at_signs() {
    let c = Cluster::start(1, 1);
    let out = c.run(&["submit", tasks_wasm(), "greet", "-"], "from stdin\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        c.ok(&["gather", stdout(&out).trim()]),
        "\"Hello, from stdin!\""
    );
    let at = c.submit("greet", &["@@home"]);
    assert_eq!(c.ok(&["gather", &at]), "\"Hello, @home!\"");
    let out = c.run(&["submit", tasks_wasm(), "total", "-"], "[5, 6]");
    assert_eq!(c.ok(&["gather", stdout(&out).trim()]), "11");
}

#[test]
fn large_results_move_between_processes() {
    let c = Cluster::start(2, 1);
    let big = c.submit("repeat", &["ab", "100000"]);
    let len = c.submit("len", &[&format!("@{big}")]);
    assert_eq!(c.ok(&["gather", &len]), "200000");
    let s = c.ok(&["gather", "-r", &big]);
    assert_eq!(s.len(), 200_000);
    assert!(s.starts_with("abab"));
}

#[test]
fn the_task_knows_its_key() {
    let c = Cluster::start(1, 1);
    let key = c.submit("whoami", &[]);
    assert_eq!(c.ok(&["gather", &key]), format!("\"{key}\""));
}

#[test]
fn gather_and_wait_of_unknown_key_is_a_usage_error() {
    let c = Cluster::start(1, 1);
    let out = c.run(&["gather", "nope-0"], "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("unknown key nope-0"));
    assert_eq!(c.run(&["wait", "nope-0"], "").status.code(), Some(2));
}

#[test]
fn wait_times_out_with_exit_4() {
    let c = Cluster::start(1, 1);
    let slow = c.submit("spin", &["3000"]);
    let out = c.run(&["wait", "--timeout", "100ms", &slow], "");
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let quick = c.submit("inc", &["1"]);
    assert_eq!(c.run(&["wait", &quick], "").status.code(), Some(0));
}

#[test]
fn per_task_timeout_interrupts_the_guest() {
    let c = Cluster::start(1, 1);
    let key = c.ok(&[
        "submit",
        "--timeout",
        "200ms",
        tasks_wasm(),
        "spin",
        "60000",
    ]);
    let started = std::time::Instant::now();
    let out = c.run(&["gather", &key], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("time limit"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(30));
    // The worker goes on serving.
    let next = c.submit("inc", &["5"]);
    assert_eq!(c.ok(&["gather", &next]), "6");
}

#[test]
fn inspect_lists_exports_with_wit_signatures() {
    let c = Cluster::start(1, 1);
    let out = c.ok(&["inspect", tasks_wasm()]);
    assert!(
        out.lines().any(|l| l == "inc: func(x: s64) -> s64"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l == "add: func(a: s64, b: s64) -> s64"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("parse-int: func(s: string) -> result<s64, string>")),
        "{out}"
    );
}

#[test]
fn a_task_past_its_memory_limit_errs_and_the_worker_goes_on() {
    let c = Cluster::start(1, 1);
    // 300 MB of string against the default 256 MiB limit.
    let bomb = c.submit("repeat", &["x", "300000000"]);
    let out = c.run(&["gather", &bomb], "");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("ran out of memory") && err.contains("kind: memory"),
        "{err}"
    );
    // It names the limit and how to raise it.
    assert!(err.contains("limit of 256.0 MiB"), "{err}");
    assert!(err.contains("--memory-limit-mib"), "{err}");
    let next = c.submit("inc", &["1"]);
    assert_eq!(c.ok(&["gather", &next]), "2");
}

#[test]
fn floats_json_has_no_number_for_round_trip_apart_from_null() {
    let c = Cluster::start(1, 1);
    let moved = c.submit("translate", &[r#"{"x":1,"y":2}"#, "inf", "nan"]);
    let printed = c.ok(&["gather", &moved]);
    assert_eq!(printed, r#"{"x":"inf","y":"NaN"}"#);
    // What was printed goes back in as the same floats.
    let again = c.submit("translate", &[&printed, "-inf", "0"]);
    assert_eq!(c.ok(&["gather", &again]), r#"{"x":"NaN","y":"NaN"}"#);
    let back = c.submit("translate", &[r#"{"x":"-inf","y":1.5}"#, "0", "0"]);
    assert_eq!(c.ok(&["gather", &back]), r#"{"x":"-inf","y":1.5}"#);
    // An empty option is still null.
    let none = c.submit("first", &["[]"]);
    assert_eq!(c.ok(&["gather", &none]), "null");
}

#[test]
fn tasks_run_while_a_module_compiles_and_its_optimised_code_is_cached() {
    // A fresh cache: the first tasks run on Winch's code while Cranelift
    // compiles in the background, the rest on Cranelift's; every result is
    // right either way, and Cranelift's artifact ends up in the cache.
    let c = Cluster::start(1, 1);
    let cache = c.state.path().join("cache");
    let input: String = (0..300).map(|i| format!("{i}\n")).collect();
    let keys = c.run(&["map", tasks_wasm(), "inc"], &input);
    assert!(keys.status.success(), "{}", stderr(&keys));
    let out = c.run(&["gather"], &stdout(&keys));
    assert!(out.status.success(), "{}", stderr(&out));
    let expected: String = (1..=300).map(|i| format!("{i}\n")).collect();
    assert_eq!(stdout(&out), expected);
    wait_until(
        Duration::from_secs(60),
        "the optimised artifact in the cache",
        || compiled_artifacts(&cache).len() == 1,
    );
    assert_eq!(c.ok(&["gather", &c.submit("inc", &["41"])]), "42");
}
