//! End-to-end: bad input is refused with exit 2 before anything runs.
//!
//! These run against a scheduler address where nothing listens: had the CLI
//! tried to submit, it would exit 3 (cannot reach the scheduler); exit 2
//! proves it refused before contacting anyone.

mod common;

use common::*;

fn refused(args: &[&str], needle: &str) {
    let out = dtask_nowhere(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.starts_with("dtask: error: "), "{err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err}"
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn wrong_arity_names_the_signature() {
    refused(
        &["submit", tasks_wasm(), "inc"],
        "inc: func(x: s64) -> s64 takes 1 argument, 0 were given",
    );
    refused(
        &["submit", tasks_wasm(), "add", "1", "2", "3"],
        "takes 2 arguments, 3 were given",
    );
}

#[test]
fn wrong_type_names_function_parameter_and_type() {
    refused(&["submit", tasks_wasm(), "inc", "abc"], "inc: parameter x");
    refused(&["submit", tasks_wasm(), "inc", "abc"], "s64");
    refused(
        &["submit", tasks_wasm(), "norm", r#"{"x": 1}"#],
        "norm: parameter p",
    );
    refused(
        &["submit", tasks_wasm(), "color-name", "purple"],
        "unknown case `purple` (expected one of",
    );
    refused(
        &["submit", tasks_wasm(), "total", "[1, \"two\"]"],
        "total: parameter xs",
    );
}

#[test]
fn unknown_export_lists_the_exports() {
    refused(
        &["submit", tasks_wasm(), "incc", "1"],
        "export `incc` not found",
    );
    refused(&["submit", tasks_wasm(), "incc", "1"], "inc, ");
}

#[test]
fn a_file_that_is_not_wasm_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.wasm");
    std::fs::write(&path, "hello").unwrap();
    refused(
        &["submit", path.to_str().unwrap(), "inc", "1"],
        "is not a WebAssembly file",
    );
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    refused(
        &["submit", core.to_str().unwrap(), "inc", "1"],
        "core WebAssembly module",
    );
    refused(&["submit", "/no/such/file.wasm", "inc", "1"], "cannot read");
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x0d\0\x01\0garbage").unwrap();
    refused(
        &["submit", broken.to_str().unwrap(), "inc", "1"],
        "not a valid WebAssembly component",
    );
}

#[test]
fn bad_map_lines_are_refused_with_their_line_number() {
    refused(&["map", tasks_wasm(), "incc"], "export `incc` not found");
}

#[test]
fn unreachable_scheduler_exits_3() {
    let out = dtask_nowhere(&["submit", tasks_wasm(), "inc", "1"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach the scheduler"));
}

/// A scheduler address that takes the connection and never answers (a
/// listener that does not accept) gives up when the reconnect grace has
/// passed, exit 3 saying so: it used to wait out the connection's own
/// 10 s handshake timeout first.
#[test]
fn a_listener_that_never_answers_is_given_up_on_with_the_grace() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let state = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(DTASK);
    cmd.args(["submit", tasks_wasm(), "inc", "1"])
        .env("DTASK_STATE_DIR", state.path())
        .env("DTASK_TOKEN", "t")
        .env("DTASK_SCHEDULER", &addr)
        .env("DTASK_RECONNECT_GRACE", "1s");
    let out = start_with_stdin(&mut cmd, "")
        .output_within(std::time::Duration::from_secs(8), "the submit to give up");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no answer within"),
        "{}",
        stderr(&out)
    );
    drop(silent);
}

#[test]
fn a_scheduler_address_that_is_not_one_or_a_reserved_client_name_exit_2_at_once() {
    let run = |env: &[(&str, &str)]| {
        let state = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new(DTASK);
        cmd.args(["submit", tasks_wasm(), "inc", "1"])
            .env("DTASK_STATE_DIR", state.path())
            .env("DTASK_TOKEN", "t")
            .env("DTASK_SCHEDULER", "127.0.0.1:1")
            // Long enough that a retry would be seen.
            .env("DTASK_RECONNECT_GRACE", "60s")
            .envs(env.iter().copied());
        let started = std::time::Instant::now();
        let out = cmd.output().unwrap();
        (out, started.elapsed())
    };
    for (env, needle) in [
        (
            ("DTASK_SCHEDULER", "nonsense"),
            "not a scheduler address (no port)",
        ),
        (
            ("DTASK_SCHEDULER", "host:http"),
            "`http` is not a port number",
        ),
        (
            ("DTASK_CLIENT", "session-mine"),
            "choose another DTASK_CLIENT",
        ),
    ] {
        let (out, took) = run(&[env]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {err}");
        assert!(err.contains(needle), "{env:?}: {err}");
        assert!(
            took < std::time::Duration::from_secs(30),
            "{env:?} waited {took:?}"
        );
    }
}

#[test]
fn a_directory_to_scatter_is_refused_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    refused(
        &["scatter", dir.path().to_str().unwrap()],
        "it is a directory",
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = dtask_nowhere(&["submit"]);
    assert_eq!(out.status.code(), Some(2));
    let out = dtask_nowhere(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    // Flags that do nothing together are refused, not ignored: raw output
    // is of results (`--with-results`), and JSON lines are never raw.
    for args in [
        &["gather", "--json", "-r", "k"][..],
        &["as-completed", "--json", "--with-results", "-r", "k"],
        &["as-completed", "-r", "k"],
    ] {
        let out = dtask_nowhere(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    // A time limit of 0 would fail every run.
    refused(
        &["submit", "--timeout", "0s", tasks_wasm(), "inc", "1"],
        "would fail every run",
    );
}

/// A time limit under a millisecond is one, not none: the run gets the
/// least limit there is, and says so in milliseconds.
#[test]
fn a_time_limit_under_a_millisecond_counts_as_one() {
    use dtask_runtime::client::limit_ms;
    use std::time::Duration;
    assert_eq!(limit_ms(Duration::from_nanos(1)), 1);
    assert_eq!(limit_ms(Duration::from_millis(1)), 1);
    assert_eq!(limit_ms(Duration::from_micros(1500)), 2);
    assert_eq!(limit_ms(Duration::from_secs(30)), 30_000);
    assert_eq!(limit_ms(Duration::MAX), u64::MAX);
}

#[test]
fn a_missing_token_file_is_an_authentication_failure_exit_3() {
    let state = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(DTASK)
        .args(["status", "x-1"])
        .env("DTASK_STATE_DIR", state.path())
        .env("DTASK_SCHEDULER", "127.0.0.1:9")
        .env_remove("DTASK_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("token file"), "{}", stderr(&out));
}

/// A command line clap refuses is said as every other error is: `dtask:
/// error: …` on one line, the usage indented under it.
#[test]
fn usage_errors_say_dtask_error_first() {
    refused(&["gather", "--bogus"], "unexpected argument '--bogus'");
    refused(&["submit"], "the following required arguments");
    let out = dtask_nowhere(&["gather", "--bogus"]);
    assert!(
        stderr(&out).lines().skip(1).all(|l| l.starts_with("  ")),
        "{}",
        stderr(&out)
    );
}
