//! End-to-end: the README's runnable examples, run as written against a
//! real cluster, so the README cannot drift from the code.
//!
//! A block fenced as ```` ```sh test ```` runs in bash (`-e`, `pipefail`)
//! from the repository's root, with `dtask` on the PATH and `$T` and `$C`
//! set to the example guests; lines that build those guests with cargo are
//! left out. A line ending in `# → TEXT` must print TEXT (output lines
//! joined by spaces).

mod common;

use common::*;
use std::process::Command;

const README: &str = include_str!("../../README.md");

/// The `sh test` blocks, each with the README line number it starts on.
fn blocks() -> Vec<(usize, Vec<&'static str>)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, Vec<&str>)> = None;
    for (i, line) in README.lines().enumerate() {
        match current.take() {
            None if line.trim() == "```sh test" => current = Some((i + 2, Vec::new())),
            None => {}
            Some(block) if line.trim() == "```" => out.push(block),
            Some((start, mut lines)) => {
                lines.push(line);
                current = Some((start, lines));
            }
        }
    }
    assert!(current.is_none(), "an unclosed block in the README");
    out
}

/// A bash script for a block: each `# → TEXT` line checks its output.
fn script(start: usize, lines: &[&str]) -> String {
    let mut s = String::from("set -eo pipefail\nout=$(mktemp)\n");
    for (i, line) in lines.iter().enumerate() {
        let at = start + i;
        let trimmed = line.trim_start();
        if trimmed.starts_with("T=$(cargo") || trimmed.starts_with("C=$(cargo") {
            continue;
        }
        match line.split_once("# → ") {
            Some((command, want)) => {
                let want = want.trim().replace('\'', r"'\''");
                s.push_str(&format!(
                    "{{ {command}\n}} > \"$out\"\n\
                     got=$(tr '\\n' ' ' < \"$out\" | sed 's/ *$//')\n\
                     if [ \"$got\" != '{want}' ]; then \
                     printf 'README.md:{at} printed %s, not %s\\n' \"$got\" '{want}' >&2; exit 1; fi\n"
                ));
            }
            None => {
                s.push_str(line);
                s.push('\n');
            }
        }
    }
    s
}

#[test]
fn the_readme_examples_run_as_written() {
    let blocks = blocks();
    assert!(blocks.len() >= 6, "found {} runnable blocks", blocks.len());
    let c = Cluster::start(2, 1);
    let bin = std::path::Path::new(DTASK).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for (start, lines) in blocks {
        let out = Command::new("bash")
            .arg("-c")
            .arg(script(start, &lines))
            .current_dir(root)
            .env("PATH", &path)
            .env("T", tasks_wasm())
            .env("C", dtask_guests::COORD_WASM)
            .env("DTASK_STATE_DIR", c.state.path())
            .env("DTASK_DASHBOARD_PORT", "0")
            .env("DTASK_SCHEDULER", &c.addr)
            .env_remove("DTASK_TOKEN")
            .env_remove("DTASK_CLIENT")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the README block at line {start} failed:\n{}\nstdout:\n{}\nstderr:\n{}",
            lines.join("\n"),
            stdout(&out),
            stderr(&out)
        );
    }
}
