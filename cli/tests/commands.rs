//! End-to-end: WASI programs as tasks. A core module with `_start` (here
//! built from C and from WAT) or a component exporting `wasi:cli/run`
//! (built from Rust) runs with the words after `_start` as its argv, stdin
//! from `<-` (the CLI's stdin) or `<@KEY` (a future's result), and its
//! stdout bytes as the result; a non-zero exit is a task error carrying its
//! stderr.

mod common;

use common::*;
use dtask_guests::{CAT_WASM, ECHO_WASM, UPPER_WASM, WC_WASM};
use std::process::Command;

/// Submits a command task and returns its key.
fn submit(c: &Cluster, module: &str, args: &[&str]) -> String {
    c.submit_to(module, "_start", args)
}

/// Submits a command task feeding `stdin` to the CLI and returns its key.
fn submit_with_stdin(c: &Cluster, module: &str, args: &[&str], stdin: &str) -> String {
    let mut all = vec!["submit", module, "_start"];
    all.extend_from_slice(args);
    let out = c.run(&all, stdin);
    assert!(out.status.success(), "{all:?}: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// `gather -r KEY`: a command's stdout bytes, exactly (nothing is added
/// after raw bytes).
fn raw(c: &Cluster, key: &str) -> String {
    let out = c.run(&["gather", "-r", key], "");
    assert!(out.status.success(), "gather {key}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn argv_reaches_the_program_after_its_name() {
    let c = Cluster::start(1, 1);
    // A wasi:cli/run component built from Rust.
    let key = submit(&c, ECHO_WASM, &["hello", "two words", "-n", "@x", "<<-"]);
    assert!(key.starts_with("_start-"), "{key}");
    assert_eq!(raw(&c, &key), "echo hello two words -n @x <-\n");
    // `main` is another name for `_start`.
    let key = c.ok(&["submit", ECHO_WASM, "main", "a"]);
    assert_eq!(raw(&c, &key), "echo a\n");
    // A core module built from C parses its own options.
    let key = submit_with_stdin(&c, WC_WASM, &["-l", "<-"], "a b\nc\n");
    assert_eq!(raw(&c, &key), "2\n");
}

#[test]
fn stdin_comes_from_the_cli() {
    let c = Cluster::start(1, 1);
    let key = submit_with_stdin(&c, WC_WASM, &["<-"], "one two\nthree\n");
    assert_eq!(raw(&c, &key), "2 3 14\n");
    let key = submit_with_stdin(&c, ECHO_WASM, &["x", "<-"], "from stdin\n");
    assert_eq!(raw(&c, &key), "echo x\nfrom stdin\n");
    // Without `<-` the program's stdin is empty, whatever the CLI's is.
    let key = submit_with_stdin(&c, CAT_WASM, &[], "ignored");
    assert_eq!(raw(&c, &key), "");
}

#[test]
fn stdin_from_futures_chains_commands_like_a_pipe() {
    let c = Cluster::start(2, 1);
    // A typed task's string result, then C programs: greet | upper | wc -c
    let greet = c.submit("greet", &["world"]);
    let upper = submit(&c, UPPER_WASM, &[&format!("<@{greet}")]);
    assert_eq!(raw(&c, &upper), "HELLO, WORLD!");
    let wc = submit(&c, WC_WASM, &["-w", "-c", &format!("<@{upper}")]);
    assert_eq!(raw(&c, &wc), "2 13\n");
    // A WAT program and a Rust component in the same chain; a non-string
    // result is piped in as its JSON text.
    let n = c.submit("inc", &["41"]);
    let cat = submit(&c, CAT_WASM, &[&format!("<@{n}")]);
    let echo = submit(&c, ECHO_WASM, &["got", &format!("<@{cat}")]);
    assert_eq!(raw(&c, &echo), "echo got\n42");
}

#[test]
fn stdout_is_the_result_as_bytes() {
    let c = Cluster::start(1, 1);
    let key = submit_with_stdin(&c, UPPER_WASM, &["<-"], "Hello, World!");
    let json: serde_json::Value = serde_json::from_str(&c.ok(&["gather", &key])).unwrap();
    assert_eq!(json, serde_json::json!({"$bytes": "SEVMTE8sIFdPUkxEIQ=="}));
    assert_eq!(raw(&c, &key), "HELLO, WORLD!");
}

#[test]
fn map_runs_a_command_per_line_with_the_words_as_argv() {
    let c = Cluster::start(2, 1);
    let out = c.run(&["map", ECHO_WASM, "_start"], "a b\nc\n\nd  e f\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let keys = stdout(&out);
    let out = c.run(&["gather", "-r"], &keys);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "echo a b\necho c\necho d e f\n");
}

#[test]
fn a_nonzero_exit_is_a_task_error_with_the_programs_stderr() {
    let c = Cluster::start(1, 1);
    // C: `return 3` from main.
    let key = submit(&c, UPPER_WASM, &["--fail"]);
    let out = c.run(&["gather", &key], "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("dtask: error: task {key} exited with status 3\n")),
        "{err}"
    );
    assert!(err.contains("kind: exit"), "{err}");
    assert!(err.contains("upper: failing as asked (--fail)"), "{err}");
    assert!(stdout(&out).is_empty());
    assert_eq!(c.ok(&["status", &key]), format!("{key}\terror"));

    // WAT: `proc_exit(2)`.
    let key = submit(&c, CAT_WASM, &["a", "b"]);
    let out = c.run(&["gather", &key], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("exited with status 2"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("cat.wat: exiting with the number of its arguments"));

    // Rust component: `std::process::exit(4)`.
    let key = submit(&c, ECHO_WASM, &["--exit=4"]);
    let out = c.run(&["gather", &key], "");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("task {key} exited with status")),
        "{err}"
    );
    assert!(
        err.contains("echo: exiting with status 4 as asked"),
        "{err}"
    );

    // A dependent errs with the same error.
    let after = submit(&c, WC_WASM, &[&format!("<@{key}")]);
    let out = c.run(&["gather", &after], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("{after} depends on {key}, which failed")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_core_module_without_start_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib.wasm");
    // An empty core module: valid wasm, but nothing to run.
    std::fs::write(&lib, b"\0asm\x01\0\0\0").unwrap();
    let out = dtask_nowhere(&["submit", lib.to_str().unwrap(), "_start"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "dtask: error: {} is a core WebAssembly module without a WASI `_start` entry point",
            lib.display()
        )),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn command_usage_errors_are_refused_before_anything_runs() {
    // Two stdins.
    let out = dtask_nowhere(&["submit", WC_WASM, "_start", "<-", "<@k"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a command has one stdin"),
        "{}",
        stderr(&out)
    );
    // A function other than `_start` or `main`.
    let out = dtask_nowhere(&["submit", WC_WASM, "wc", "-l"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("export `wc` not found in"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("(exports: _start)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn inspect_says_it_is_a_wasi_command() {
    for module in [WC_WASM, CAT_WASM, ECHO_WASM] {
        let out = Command::new(DTASK)
            .args(["inspect", module])
            .env("DTASK_STATE_DIR", tempfile::tempdir().unwrap().path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{module}: {}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "_start: command (argv, stdin -> stdout bytes)\n",
            "{module}"
        );
    }
}

#[test]
fn stdin_holds_maps_lines_so_a_dash_is_a_word_and_a_commands_stdin_is_refused() {
    let c = Cluster::start(1, 1);
    let out = c.run(&["map", tasks_wasm(), "len"], "a\n-\nbb\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let got = c.run(&["gather"], &stdout(&out));
    assert!(got.status.success(), "{}", stderr(&got));
    assert_eq!(stdout(&got), "1\n1\n2\n", "`-` was not taken as a word");
    // `<-` would pass the lines still unread: refused, naming the line.
    let out = c.run(&["map", CAT_WASM, "_start"], "x\n<-\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("line 2") && err.contains("<@KEY"), "{err}");
}

#[test]
fn a_map_line_that_is_not_utf8_is_refused_by_its_number() {
    use std::io::Write;
    let c = Cluster::start(1, 1);
    let mut map = c
        .cmd()
        .args(["map", tasks_wasm(), "len"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = map.stdin.take().unwrap();
    stdin.write_all(b"ab\n\xff\x01\n").unwrap();
    drop(stdin);
    let out = map.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("line 2: not UTF-8"),
        "{}",
        stderr(&out)
    );
    // The line before it was submitted, and its key printed.
    assert_eq!(stdout(&out).lines().count(), 1);
}
