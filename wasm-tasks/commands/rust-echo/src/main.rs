//! `echo`: a WASI preview 2 command for dtask's tests.
//!
//! Writes its argv (argv[0] included) joined by spaces and a newline to
//! stdout, then copies stdin after it. An argument `--exit=N` makes it exit
//! with status N afterwards, saying so on stderr.

use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut stdin = Vec::new();
    std::io::stdin()
        .read_to_end(&mut stdin)
        .expect("stdin is readable");
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", args.join(" ")).expect("stdout is writable");
    out.write_all(&stdin).expect("stdout is writable");
    out.flush().expect("stdout is writable");
    let status = args
        .iter()
        .find_map(|a| a.strip_prefix("--exit="))
        .map(|n| n.parse::<i32>().expect("--exit=N takes a number"));
    if let Some(status) = status {
        eprintln!("echo: exiting with status {status} as asked");
        std::process::exit(status);
    }
}
