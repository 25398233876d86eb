//! Big values through the real binary: bytes in and out of tasks in bulk
//! (every bulk shape), strings past wasmtime's default hostcall allowance,
//! byte-exact raw output, arguments over a task's memory limit refused
//! before the task starts with the limit named, and results past a worker's
//! memory budget spilled to disk and read back.

mod common;

use common::*;
use std::time::Duration;

/// 64 MiB: past what per-element conversion could carry (4 MiB failed),
/// well inside a worker's default 256 MiB.
const BIG: usize = 64 << 20;

/// `n` pseudo-random bytes (xorshift64*), so no pattern can hide a bug.
fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// `gather -r KEY`'s stdout, checked to have succeeded.
fn raw_bytes(c: &Cluster, key: &str) -> Vec<u8> {
    let out = c.run(&["gather", "-r", key], "");
    assert!(out.status.success(), "gather {key}: {}", stderr(&out));
    out.stdout
}

/// Scatters `data` as a file and returns its key.
fn scatter_file(c: &Cluster, data: &[u8]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.bin");
    std::fs::write(&path, data).unwrap();
    let key = c.ok(&["scatter", path.to_str().unwrap()]);
    (dir, key)
}

#[test]
fn sixty_four_mib_of_bytes_go_through_every_bulk_shape_byte_exact() {
    let c = Cluster::start(2, 1);
    let data = random_bytes(BIG, 0x5eed);
    let (_dir, key) = scatter_file(&c, &data);
    let at = format!("@{key}");

    // Scatter then `gather -r` reproduces the file byte for byte: nothing
    // is added after raw bytes.
    assert!(
        raw_bytes(&c, &key) == data,
        "scatter/gather -r is not exact"
    );

    // list<u8> -> list<u8>
    let rev = c.submit("reverse-bytes", &[&at]);
    let got = raw_bytes(&c, &rev);
    assert_eq!(got.len(), data.len());
    assert!(got.iter().eq(data.iter().rev()), "reverse-bytes differs");

    // list<u8> -> u64
    let sum = c.submit("sum-bytes", &[&at]);
    let want: u64 = data.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(c.ok(&["gather", &sum]), want.to_string());

    // (list<u8>, list<u8>) -> list<u8>, the second from a shell word.
    let cat = c.submit("concat-bytes", &[&at, "tail"]);
    let got = raw_bytes(&c, &cat);
    assert_eq!(got.len(), data.len() + 4);
    assert!(got[..data.len()] == data[..] && got.ends_with(b"tail"));

    // (u64, u32) -> list<u8>
    let made = c.submit("count-bytes", &[&BIG.to_string(), "7"]);
    let got = raw_bytes(&c, &made);
    assert_eq!(got.len(), BIG);
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i + 7) as u8));
}

/// Runs `dtask ARGS` under GNU time with stdout to a file; returns what it
/// wrote and its peak resident memory in MiB. (`time` forks it from a small
/// process: a child spawned from this test process would count the test's
/// own memory in its peak.)
#[test]
fn big_scatters_and_arguments_go_straight_to_workers_past_the_schedulers_limits() {
    // Through the scheduler none of this could pass: its frames stop at
    // 8 MiB and the values it takes at 1 MiB.
    let c = Cluster::start_with(
        2,
        1,
        &["--max-frame-size", "8MiB", "--max-value-size", "1MiB"],
    );
    let data = random_bytes(24 << 20, 0xb16);
    let (_dir, key) = scatter_file(&c, &data);
    assert!(
        raw_bytes(&c, &key) == data,
        "scatter/gather -r is not exact"
    );
    let sum = c.submit("sum-bytes", &[&format!("@{key}")]);
    let want: u64 = data.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(c.ok(&["gather", &sum]), want.to_string());
    // A broadcast puts a copy on each worker.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.bin");
    std::fs::write(&path, random_bytes(12 << 20, 0xb17)).unwrap();
    let copied = c.ok(&["scatter", "--broadcast", path.to_str().unwrap()]);
    let holders = c.ok(&["who-has", &copied]);
    assert_eq!(holders.split_whitespace().count(), 3, "{holders}");
    // So does a big argument: the task takes it as the scattered value,
    // and its key is still the hash of the value (the same submit, the
    // same key).
    let text: String = random_bytes(12 << 20, 5)
        .iter()
        .map(|b| char::from(b'a' + b % 26))
        .collect();
    let submit = |text: &str| {
        let out = c.run(&["submit", tasks_wasm(), "reverse-bytes", "-"], text);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_string()
    };
    let rev = submit(&text);
    assert_eq!(submit(&text), rev);
    let want: Vec<u8> = text.bytes().rev().collect();
    assert!(raw_bytes(&c, &rev) == want, "reversed bytes differ");
    // Small values still go through the scheduler, under its value limit.
    let small = c.run(&["scatter", "--text"], &"x".repeat(2 << 20));
    assert_eq!(small.status.code(), Some(2), "{}", stderr(&small));
    assert!(
        stderr(&small).contains("--max-value-size"),
        "{}",
        stderr(&small)
    );
}

/// A process's resident memory now and at its peak (`VmRSS`, `VmHWM`), in
/// bytes.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("the field in /proc/PID/status")
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn a_scattered_value_over_a_workers_memory_budget_never_sits_in_its_memory() {
    let c = Cluster::start_with(1, 1, &["--memory-budget", "8MiB"]);
    let worker = worker_pids(c.pid())[0];
    // The peak so far (compiling the module at start, say) is forgotten:
    // from here on it is this value's.
    std::fs::write(format!("/proc/{worker}/clear_refs"), "5").unwrap();
    let (before, _) = rss(worker);
    let data = random_bytes(96 << 20, 0x5911);
    let (_dir, key) = scatter_file(&c, &data);
    // Written to the spill directory range by range as it arrived: a few
    // ranges in flight, never the value (two thirds of it is the bound: a
    // worker just started still grows by some tens of MiB of its own).
    let (_, peak) = rss(worker);
    assert!(
        peak < before + (64 << 20),
        "the worker went from {} MiB to a peak of {} MiB taking a 96 MiB value",
        before >> 20,
        peak >> 20
    );
    wait_until(
        Duration::from_secs(30),
        "the spilled bytes reported",
        || workers_json(&c)[0]["spilled_bytes"].as_u64().unwrap() >= 96 << 20,
    );
    assert!(
        raw_bytes(&c, &key) == data,
        "the spilled value came back different"
    );
}

fn run_measured(c: &Cluster, args: &[&str]) -> (Vec<u8>, u64) {
    run_measured_from(c, args, std::process::Stdio::null())
}

/// [`run_measured`] with `stdin`.
fn run_measured_from(c: &Cluster, args: &[&str], stdin: std::process::Stdio) -> (Vec<u8>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (out, peak) = (dir.path().join("out"), dir.path().join("peak"));
    let dtask = c.cmd();
    let mut timed = std::process::Command::new("/usr/bin/time");
    timed
        .args(["-f", "%M", "-o"])
        .arg(&peak)
        .arg(dtask.get_program());
    for (k, v) in dtask.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let status = timed
        .args(args)
        .stdin(stdin)
        .stdout(std::fs::File::create(&out).unwrap())
        .status()
        .expect("GNU time (/usr/bin/time, Debian's `time`; .ci/run installs it)");
    assert!(status.success(), "dtask {args:?} failed");
    let kib: u64 = std::fs::read_to_string(&peak)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (std::fs::read(&out).unwrap(), kib / 1024)
}

#[test]
fn a_raw_gather_writes_a_big_value_out_as_it_arrives_without_holding_it() {
    let c = Cluster::start(1, 1);
    let made = c.submit("count-bytes", &[&BIG.to_string(), "7"]);
    let (got, peak) = run_measured(&c, &["gather", "-r", &made]);
    assert_eq!(got.len(), BIG);
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i + 7) as u8));
    // Holding the 64 MiB value would take the client past it.
    eprintln!("gather -r of {} MiB: client peak RSS {peak} MiB", BIG >> 20);
    assert!(
        peak < 48,
        "the client peaked at {peak} MiB for a 64 MiB value"
    );
    // A string streams too, with its newline after it.
    let n = BIG / 2;
    let text = c.submit("repeat", &["ab", &n.to_string()]);
    let (got, peak) = run_measured(&c, &["gather", "-r", &text]);
    assert_eq!(got.len(), 2 * n + 1);
    assert!(got[..2 * n].chunks(2).all(|p| p == b"ab") && got.ends_with(b"\n"));
    assert!(
        peak < 48,
        "the client peaked at {peak} MiB for a 64 MiB string"
    );
}

/// Gathered as JSON (plain, `--json`, and `as-completed`'s results), a big
/// byte string or string is encoded as it arrives, never held whole: the
/// same line that rendering the whole value gives, within the memory a
/// raw gather takes.
#[test]
fn big_values_print_as_json_as_they_arrive_without_being_held() {
    use base64::Engine as _;
    let c = Cluster::start(1, 1);
    let made = c.submit("count-bytes", &[&BIG.to_string(), "7"]);
    let want: Vec<u8> = (0..BIG).map(|i| (i + 7) as u8).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&want);
    drop(want);
    let (got, peak) = run_measured(&c, &["gather", &made]);
    eprintln!(
        "gather of {} MiB as JSON: client peak RSS {peak} MiB",
        BIG >> 20
    );
    assert!(got == format!("{{\"$bytes\":\"{b64}\"}}\n").as_bytes());
    assert!(
        peak < 48,
        "the client peaked at {peak} MiB for a 64 MiB value"
    );
    let (got, peak) = run_measured(&c, &["as-completed", "--with-results", &made]);
    assert!(got == format!("{made}\t{{\"$bytes\":\"{b64}\"}}\n").as_bytes());
    assert!(
        peak < 48,
        "as-completed peaked at {peak} MiB for a 64 MiB value"
    );
    drop(b64);
    // A string, with characters JSON escapes, as a `--json` line.
    let n = BIG / 4;
    let text = c.submit("repeat", &["a\"\\\n", &n.to_string()]);
    let (got, peak) = run_measured(&c, &["gather", "--json", &text]);
    assert!(
        peak < 48,
        "the client peaked at {peak} MiB for a 64 MiB string"
    );
    let line: serde_json::Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(line["key"], text);
    assert_eq!(line["status"], "finished");
    let s = line["result"].as_str().unwrap();
    assert!(s.len() == 4 * n && s.as_bytes().chunks(4).all(|p| p == b"a\"\\\n"));
}

/// A big byte string argument read from stdin (`-`), from a file or a
/// pipe, is scattered as it is read, never held whole by the client, and
/// the call keeps the key it has with the value in hand (the key the Rust
/// client gives the same call).
#[test]
fn a_big_stdin_argument_is_scattered_as_it_is_read_under_the_calls_own_key() {
    use dtask_runtime::client::{SubmitOptions, task_spec};
    use dtask_runtime::protocol::Arg;
    let c = Cluster::start(1, 1);
    let data = random_bytes(BIG, 0x57d1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.bin");
    std::fs::write(&path, &data).unwrap();
    let module = dtask_runtime::module::LocalModule::load(tasks_wasm().as_ref()).unwrap();
    let encoded = dtask_runtime::value::encode(&dtask_runtime::value::Value::Binary(data.clone()));
    let want_key = task_spec(
        module.hash(),
        "sum-bytes",
        vec![Arg::Value(encoded.into())],
        &SubmitOptions::default(),
    )
    .key;
    let want: u64 = data.iter().map(|&b| u64::from(b)).sum();
    drop(data);
    let args = ["submit", tasks_wasm(), "sum-bytes", "-"];
    let from_file = std::fs::File::open(&path).unwrap();
    let (key, peak) = run_measured_from(&c, &args, from_file.into());
    let key = String::from_utf8(key).unwrap().trim().to_string();
    eprintln!(
        "submit - of {} MiB from a file: client peak RSS {peak} MiB",
        BIG >> 20
    );
    assert_eq!(key, want_key);
    assert!(
        peak < 48,
        "the client peaked at {peak} MiB for a 64 MiB argument"
    );
    assert_eq!(c.ok(&["gather", &key]), want.to_string());
    // From a pipe: spooled to a temporary file past one range.
    let (stdin, feeder) = piped(std::fs::read(&path).unwrap());
    let (again, peak) = run_measured_from(&c, &args, stdin);
    feeder.join().unwrap();
    assert_eq!(String::from_utf8(again).unwrap().trim(), want_key);
    assert!(
        peak < 48,
        "the client peaked at {peak} MiB for a 64 MiB pipe"
    );
    // A string the same way: checked as UTF-8 as it is read, less its
    // last newline, under the key of the call with the text in hand.
    let text: String = "dtask ✓ streams\n".repeat(BIG / 18);
    let want_key = task_spec(
        module.hash(),
        "len",
        vec![Arg::Value(
            dtask_runtime::value::encode(&dtask_runtime::value::Value::from(
                text.strip_suffix('\n').unwrap(),
            ))
            .into(),
        )],
        &SubmitOptions::default(),
    )
    .key;
    let (stdin, feeder) = piped(text.clone().into_bytes());
    let (key, peak) = run_measured_from(&c, &["submit", tasks_wasm(), "len", "-"], stdin);
    feeder.join().unwrap();
    let key = String::from_utf8(key).unwrap().trim().to_string();
    assert_eq!(key, want_key);
    assert!(
        peak < 48,
        "the client peaked at {peak} MiB for a 64 MiB string"
    );
    assert_eq!(c.ok(&["gather", &key]), (text.len() - 1).to_string());
    // Not UTF-8, past the first range: refused, naming the parameter.
    let mut bad = text.into_bytes();
    let at = bad.len() - 100;
    bad[at] = 0xff;
    let (stdin, feeder) = piped(bad);
    let out = c
        .cmd()
        .args(["submit", tasks_wasm(), "len", "-"])
        .stdin(stdin)
        .output()
        .unwrap();
    feeder.join().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("len: parameter s: stdin is not UTF-8 text"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn scattering_a_file_reads_it_a_range_at_a_time_never_whole() {
    let c = Cluster::start(1, 1);
    let data = random_bytes(BIG, 0xf11e);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.bin");
    std::fs::write(&path, &data).unwrap();
    let (out, peak) = run_measured(&c, &["scatter", path.to_str().unwrap()]);
    let key = String::from_utf8(out).unwrap().trim().to_string();
    eprintln!("scatter of {} MiB: client peak RSS {peak} MiB", BIG >> 20);
    assert!(
        peak < 48,
        "the client peaked at {peak} MiB scattering a 64 MiB file"
    );
    assert!(
        raw_bytes(&c, &key) == data,
        "the scattered file came back different"
    );
    // Stdin redirected from the file is read the same way, to the same key.
    let stdin = std::fs::File::open(&path).unwrap().into();
    let (out, peak) = run_measured_from(&c, &["scatter"], stdin);
    assert_eq!(String::from_utf8(out).unwrap().trim(), key);
    assert!(
        peak < 48,
        "the client peaked at {peak} MiB scattering 64 MiB from a redirected stdin"
    );
    // Through a pipe, past one range it goes on to a temporary file and
    // from there: the same key, and never whole in memory either.
    let (stdin, feeding) = piped(data);
    let (out, peak) = run_measured_from(&c, &["scatter"], stdin);
    feeding.join().unwrap();
    assert_eq!(String::from_utf8(out).unwrap().trim(), key);
    assert!(
        peak < 48,
        "the client peaked at {peak} MiB scattering 64 MiB from a pipe"
    );
}

/// A pipe being fed `data` by a thread, for a child's stdin.
fn piped(data: Vec<u8>) -> (std::process::Stdio, std::thread::JoinHandle<()>) {
    let (reader, mut writer) = std::io::pipe().unwrap();
    let feeding = std::thread::spawn(move || {
        use std::io::Write;
        writer.write_all(&data).unwrap();
    });
    (reader.into(), feeding)
}

#[test]
fn a_commands_stdin_redirected_from_a_file_is_sent_a_range_at_a_time() {
    let c = Cluster::start(1, 1);
    let data = random_bytes(BIG, 0x57d1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.bin");
    std::fs::write(&path, &data).unwrap();
    let stdin = std::fs::File::open(&path).unwrap().into();
    let (out, peak) = run_measured_from(
        &c,
        &["submit", dtask_guests::CAT_WASM, "_start", "<-"],
        stdin,
    );
    eprintln!(
        "submit with {} MiB of stdin: client peak RSS {peak} MiB",
        BIG >> 20
    );
    assert!(
        peak < 48,
        "the client peaked at {peak} MiB submitting a command with 64 MiB of stdin from a file"
    );
    let cat = String::from_utf8(out).unwrap().trim().to_string();
    assert!(
        raw_bytes(&c, &cat) == data,
        "cat of a redirected stdin is not exact"
    );
    // The client let go of the stdin it scattered: the task holds it.
    let info: serde_json::Value = serde_json::from_str(&c.ok(&["info"])).unwrap();
    assert_eq!(info["held"], 1, "{info}");
    // From a pipe: the same task (same stdin, same key), memory bounded.
    let (stdin, feeding) = piped(data);
    let (out, peak) = run_measured_from(
        &c,
        &["submit", dtask_guests::CAT_WASM, "_start", "<-"],
        stdin,
    );
    feeding.join().unwrap();
    assert_eq!(String::from_utf8(out).unwrap().trim(), cat);
    assert!(
        peak < 48,
        "the client peaked at {peak} MiB submitting a command with 64 MiB of stdin from a pipe"
    );
    // A small stdin from a pipe still goes inline.
    let (stdin, feeding) = piped(b"three words here".to_vec());
    let (out, _) = run_measured_from(
        &c,
        &["submit", dtask_guests::WC_WASM, "_start", "-w", "<-"],
        stdin,
    );
    feeding.join().unwrap();
    let wc = String::from_utf8(out).unwrap().trim().to_string();
    assert_eq!(c.ok(&["gather", "-r", &wc]).trim(), "3");
}

#[test]
fn a_wasi_command_takes_sixty_four_mib_of_stdin_and_gives_it_back_on_stdout() {
    let c = Cluster::start(1, 1);
    let data = random_bytes(BIG, 0xca7);
    let (_dir, key) = scatter_file(&c, &data);
    // cat.wasm copies stdin to stdout through a 1 KiB buffer.
    let cat = c.ok(&[
        "submit",
        dtask_guests::CAT_WASM,
        "_start",
        &format!("<@{key}"),
    ]);
    assert!(raw_bytes(&c, &cat) == data, "cat of 64 MiB is not exact");
}

#[test]
fn a_wasi_commands_stdout_past_its_memory_limit_streams_to_the_spill_directory() {
    let c = Cluster::start_with(1, 1, &["--memory-budget", "8MiB"]);
    let data = random_bytes(40 << 20, 0x57d0);
    let (_dir, key) = scatter_file(&c, &data);
    // 40 MiB of stdout from a task allowed 16 MiB of memory, on a worker
    // that keeps 8 MiB of results in memory: past 8 MiB it goes to disk as
    // it is written, and no memory limit applies to it.
    let cat = c.ok(&[
        "submit",
        "--memory-limit-mib",
        "16",
        dtask_guests::CAT_WASM,
        "_start",
        &format!("<@{key}"),
    ]);
    assert!(
        raw_bytes(&c, &cat) == data,
        "cat's spilled stdout is not exact"
    );
    wait_until(
        Duration::from_secs(30),
        "the spilled stdout reported",
        || workers_json(&c)[0]["spilled_bytes"].as_u64().unwrap() >= 80 << 20,
    );
    // It is a task's input like any other result.
    let sum = c.submit("sum-bytes", &[&format!("@{cat}")]);
    let want: u64 = data.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(c.ok(&["gather", &sum]), want.to_string());
}

#[test]
fn a_wasi_command_reads_a_spilled_stdin_from_disk_as_it_goes() {
    let c = Cluster::start_with(1, 1, &["--memory-budget", "8MiB"]);
    let worker = worker_pids(c.pid())[0];
    let data = random_bytes(64 << 20, 0x5d1);
    // Over the budget: written to the spill directory as it arrives.
    let (_dir, key) = scatter_file(&c, &data);
    std::fs::write(format!("/proc/{worker}/clear_refs"), "5").unwrap();
    let (before, _) = rss(worker);
    let wc = c.ok(&[
        "submit",
        dtask_guests::WC_WASM,
        "_start",
        "-c",
        &format!("<@{key}"),
    ]);
    assert_eq!(c.ok(&["gather", "-r", &wc]).trim(), (64 << 20).to_string());
    // Read from its file a range at a time, never loaded whole (which
    // would take 64 MiB at least). The allowance covers compiling `wc`
    // meanwhile, which took the peak 25 MiB up once with other tests
    // running beside this one.
    let (_, peak) = rss(worker);
    assert!(
        peak < before + (40 << 20),
        "the worker went from {} MiB to a peak of {} MiB for wc of a spilled 64 MiB stdin",
        before >> 20,
        peak >> 20
    );
    // cat of the same stdin gives it back exactly.
    let cat = c.ok(&[
        "submit",
        dtask_guests::CAT_WASM,
        "_start",
        &format!("<@{key}"),
    ]);
    assert!(
        raw_bytes(&c, &cat) == data,
        "cat of a spilled stdin is not exact"
    );
}

#[test]
fn a_wasi_command_streams_a_stdin_held_on_another_worker_to_disk_and_reads_it_there() {
    // Two workers with 8 MiB budgets: 160 MiB scattered to the first, read
    // as stdin by commands pinned to the second, which streams it from the
    // first into its spill directory instead of loading it whole. (Ranges
    // in flight and freed buffers the allocator has not yet reused come to
    // 50-90 MiB at the peak, whatever the value's size.)
    let c = Cluster::start_with(2, 1, &["--memory-budget", "8MiB"]);
    let (holder, runner) = &two_workers(&c);
    let data = random_bytes(160 << 20, 0x5d2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.bin");
    std::fs::write(&path, &data).unwrap();
    let key = c.ok(&["scatter", "--workers", holder, path.to_str().unwrap()]);
    let pids = worker_pids(c.pid());
    let before: Vec<u64> = pids
        .iter()
        .map(|p| {
            std::fs::write(format!("/proc/{p}/clear_refs"), "5").unwrap();
            rss(*p).0
        })
        .collect();
    let wc = c.ok(&[
        "submit",
        "--workers",
        runner,
        dtask_guests::WC_WASM,
        "_start",
        "-c",
        &format!("<@{key}"),
    ]);
    assert_eq!(c.ok(&["gather", "-r", &wc]).trim(), data.len().to_string());
    for (pid, before) in pids.iter().zip(before) {
        let (_, peak) = rss(*pid);
        assert!(
            peak < before + (112 << 20),
            "worker {pid} went from {} MiB to a peak of {} MiB for wc of a 160 MiB stdin held on another worker",
            before >> 20,
            peak >> 20
        );
    }
    let cat = c.ok(&[
        "submit",
        "--workers",
        runner,
        dtask_guests::CAT_WASM,
        "_start",
        &format!("<@{key}"),
    ]);
    assert!(
        raw_bytes(&c, &cat) == data,
        "cat of a stdin streamed from another worker is not exact"
    );
    // The streamed copies went with their tasks: what stays on disk is the
    // scattered value and cat's result.
    let mut on_disk = 0;
    for worker in std::fs::read_dir(c.state.path().join("spill")).unwrap() {
        for file in std::fs::read_dir(worker.unwrap().path()).unwrap() {
            on_disk += file.unwrap().metadata().unwrap().len();
        }
    }
    assert!(
        on_disk < 2 * (160 << 20) + (1 << 20),
        "{on_disk} bytes spilled"
    );
}

#[test]
fn a_worker_told_to_keep_task_memory_keeps_it_mapped_for_the_next_task() {
    // The default gives a finished task's memory back (chaos.rs checks a
    // worker's idle RSS stays under 100 MiB after 200 MiB tasks); told to
    // keep 256 MiB, the worker keeps the pages the task used, zeroed.
    let c = Cluster::start_with(1, 1, &["--keep-task-memory", "256MiB"]);
    let worker = worker_pids(c.pid())[0];
    for _ in 0..2 {
        let hog = c.ok(&["submit", "--pure=false", tasks_wasm(), "hog", "200"]);
        assert_eq!(c.ok(&["gather", &hog]), (200 << 20).to_string());
    }
    let (idle, _) = rss(worker);
    assert!(
        idle > 150 << 20,
        "the worker kept only {} MiB after two 200 MiB tasks",
        idle >> 20
    );
}

#[test]
fn strings_larger_than_the_default_hostcall_allowance_come_back_whole() {
    let c = Cluster::start(1, 1);
    // 2 × 80 Mi = 160 MiB of string result, past wasmtime's default 128 MiB
    // allowance for data a guest hands the host.
    let n = 80 << 20;
    let key = c.submit("repeat", &["ab", &n.to_string()]);
    let out = c.run(&["gather", "-r", &key], "");
    assert!(out.status.success(), "{}", stderr(&out));
    // A raw string is followed by a newline.
    assert_eq!(out.stdout.len(), 2 * n + 1);
    assert!(out.stdout[..2 * n].chunks(2).all(|p| p == b"ab"));
    assert_eq!(out.stdout.last(), Some(&b'\n'));
    let len = c.submit("len", &[&format!("@{key}")]);
    assert_eq!(c.ok(&["gather", &len]), (2 * n).to_string());
}

#[test]
fn an_argument_over_the_memory_limit_is_refused_naming_the_limit() {
    let c = Cluster::start(1, 1);
    let data = random_bytes(24 << 20, 7);
    let (_dir, key) = scatter_file(&c, &data);
    let rev = c.ok(&[
        "submit",
        "--memory-limit-mib",
        "16",
        tasks_wasm(),
        "reverse-bytes",
        &format!("@{key}"),
    ]);
    let out = c.run(&["gather", &rev], "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("kind: memory"), "{err}");
    assert!(
        err.contains("24.0 MiB") && err.contains("memory limit of 16.0 MiB"),
        "{err}"
    );
    assert!(err.contains("submit --memory-limit-mib"), "{err}");

    // Under the worker's own limit the same value goes through.
    let ok = c.submit("sum-bytes", &[&format!("@{key}")]);
    let want: u64 = data.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(c.ok(&["gather", &ok]), want.to_string());
}

#[test]
fn an_input_over_the_memory_limit_is_refused_before_it_is_fetched() {
    let c = Cluster::start(2, 1);
    let (holder, runner) = &two_workers(&c);
    let dir = tempfile::tempdir().unwrap();
    let scatter_to = |name: &str, data: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        c.ok(&["scatter", "--workers", holder, path.to_str().unwrap()])
    };
    let big = scatter_to("big.bin", &random_bytes(24 << 20, 9));
    let small_data = random_bytes(100 << 10, 3);
    let small = scatter_to("small.bin", &small_data);
    let rev = c.ok(&[
        "submit",
        "--workers",
        runner,
        "--memory-limit-mib",
        "16",
        tasks_wasm(),
        "reverse-bytes",
        &format!("@{big}"),
    ]);
    let out = c.run(&["gather", &rev], "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("memory limit of 16.0 MiB"),
        "{}",
        stderr(&out)
    );
    // A small input is fetched as ever; once the runner's count shows it,
    // the big one was never among what it fetched.
    let sum = c.ok(&[
        "submit",
        "--workers",
        runner,
        tasks_wasm(),
        "sum-bytes",
        &format!("@{small}"),
    ]);
    let want: u64 = small_data.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(c.ok(&["gather", &sum]), want.to_string());
    let runner_json = || worker_json(&c, runner);
    wait_until(
        Duration::from_secs(30),
        "the runner to report its fetch",
        || runner_json()["fetched"].as_u64().unwrap_or(0) >= 1,
    );
    let fetched = runner_json()["fetched_bytes"].as_u64().unwrap();
    assert!(fetched < 1 << 20, "the runner fetched {fetched} bytes");
}

/// The addresses of `c`'s two workers.
fn two_workers(c: &Cluster) -> (String, String) {
    let addresses: Vec<String> = workers_json(c)
        .iter()
        .map(|w| w["address"].as_str().unwrap().to_string())
        .collect();
    let [holder, runner] = &addresses[..] else {
        panic!("two workers, not {addresses:?}");
    };
    (holder.clone(), runner.clone())
}

/// `dtask workers --json` of `c`, one value per worker.
fn workers_json(c: &Cluster) -> Vec<serde_json::Value> {
    c.ok(&["workers", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Spill files under the state directory's `spill`.
fn spill_files(c: &Cluster) -> usize {
    let Ok(dirs) = std::fs::read_dir(c.state.path().join("spill")) else {
        return 0;
    };
    dirs.filter_map(Result::ok)
        .filter_map(|d| std::fs::read_dir(d.path()).ok())
        .map(|files| files.count())
        .sum()
}

#[test]
fn results_past_the_memory_budget_spill_to_disk_and_come_back_byte_exact() {
    let c = Cluster::start_with(1, 1, &["--memory-budget", "8MiB"]);
    let values: Vec<Vec<u8>> = (0..6).map(|i| random_bytes(4 << 20, i + 1)).collect();
    let dirs_keys: Vec<_> = values.iter().map(|v| scatter_file(&c, v)).collect();
    let keys: Vec<&str> = dirs_keys.iter().map(|(_, k)| k.as_str()).collect();
    // 24 MiB on a worker that keeps 8 MiB in memory.
    wait_until(Duration::from_secs(30), "spilled bytes reported", || {
        workers_json(&c)[0]["spilled_bytes"].as_u64().unwrap() >= 16 << 20
    });
    let info: serde_json::Value = serde_json::from_str(&c.ok(&["info"])).unwrap();
    assert!(
        info["spilled_bytes"].as_u64().unwrap() >= 16 << 20,
        "{info}"
    );
    assert!(spill_files(&c) >= 4);
    for (key, want) in keys.iter().zip(&values) {
        assert!(raw_bytes(&c, key) == *want, "{key} read back differs");
    }
    // A spilled value as a task's input.
    let sum = c.submit("sum-bytes", &[&format!("@{}", keys[0])]);
    let want: u64 = values[0].iter().map(|&b| u64::from(b)).sum();
    assert_eq!(c.ok(&["gather", &sum]), want.to_string());
    // Released results leave the disk too.
    let mut release = vec!["release", sum.as_str()];
    release.extend(&keys);
    c.ok(&release);
    wait_until(Duration::from_secs(30), "spill files removed", || {
        spill_files(&c) == 0
    });
}

/// A spill file removed or changed behind the worker's back (a cleaner of
/// temporary files, a stray write) loses its result, as a dead worker
/// would: the worker says so, and the scheduler computes it again. Raw and
/// plain gathers, and a task taking it as input, all get the value, never
/// "no longer holds" or the changed bytes.
#[test]
fn results_whose_spill_files_are_removed_or_changed_are_computed_again() {
    let c = Cluster::start_with(1, 1, &["--memory-budget", "1MiB"]);
    let n = 2 << 20;
    let keys: Vec<String> = (0..4)
        .map(|i| c.submit("count-bytes", &[&n.to_string(), &i.to_string()]))
        .collect();
    for k in &keys {
        c.ok(&["wait", k]);
    }
    // 8 MiB on a worker that keeps 1 MiB in memory: at least three spilled.
    wait_until(Duration::from_secs(30), "three results spilled", || {
        spill_files(&c) >= 3
    });
    // Every other one removed, the rest changed in place.
    let mut nth = 0;
    for dir in std::fs::read_dir(c.state.path().join("spill")).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            nth += 1;
            if nth % 2 == 0 {
                std::fs::remove_file(path).unwrap();
            } else {
                use std::os::unix::fs::FileExt;
                let out = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                out.write_all_at(b"XXXX", 1000).unwrap();
            }
        }
    }
    let want = |i: usize| (0..n).map(|j| (j + i) as u8).collect::<Vec<u8>>();
    assert!(
        raw_bytes(&c, &keys[0]) == want(0),
        "raw gather after the loss"
    );
    let total = c.submit("sum-bytes", &[&format!("@{}", keys[1])]);
    let sum: u64 = want(1).iter().map(|&b| u64::from(b)).sum();
    assert_eq!(c.ok(&["gather", &total]), sum.to_string());
    let json = c.ok(&["gather", "--json", &keys[2]]);
    let line: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(line["status"], "finished", "{json}");
    assert!(raw_bytes(&c, &keys[3]) == want(3));
}

#[test]
fn a_full_spill_directory_refuses_new_results_and_keeps_what_is_held() {
    let c = Cluster::start_with(1, 1, &["--memory-budget", "1MiB"]);
    let spill = c.state.path().join("spill");
    std::fs::create_dir_all(&spill).unwrap();
    // A 64 KiB tmpfs fills at once; where mounting is not allowed, a spill
    // directory that cannot be created fails the same writes.
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&spill)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("NOTE: cannot mount a tmpfs here; using an unusable spill directory instead");
        std::fs::remove_dir(&spill).unwrap();
        std::fs::write(&spill, b"not a directory").unwrap();
    }
    struct Unmount(std::path::PathBuf, bool);
    impl Drop for Unmount {
        fn drop(&mut self) {
            if self.1 {
                let _ = std::process::Command::new("umount").arg(&self.0).status();
            }
        }
    }
    let _unmount = Unmount(spill.clone(), mounted);

    let small = random_bytes(512 << 10, 3);
    let (_d1, kept) = scatter_file(&c, &small);
    // Over the budget on its own, and the spill directory cannot take it.
    let (dir, _) = {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        std::fs::write(&path, random_bytes(2 << 20, 4)).unwrap();
        (dir, path)
    };
    let out = c.run(
        &["scatter", dir.path().join("big.bin").to_str().unwrap()],
        "",
    );
    // Refused by the cluster, like any scatter it cannot take: exit 2.
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("memory budget"), "{}", stderr(&out));
    // A task result that does not fit errs with kind memory.
    let made = c.submit("count-bytes", &[&(2u64 << 20).to_string(), "0"]);
    let out = c.run(&["gather", &made], "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("kind: memory") && err.contains("--memory-budget"),
        "{err}"
    );
    // Nothing already held was lost.
    assert!(raw_bytes(&c, &kept) == small);
}

/// `dtask workers --json` of worker `address` in `c`.
fn worker_json(c: &Cluster, address: &str) -> serde_json::Value {
    workers_json(c)
        .into_iter()
        .find(|w| w["address"].as_str() == Some(address))
        .expect("the worker")
}

/// Keeps `runner`'s slot busy for a while with a `spin` task, so what is
/// sent there next waits queued behind it: its key.
fn occupy(c: &Cluster, runner: &str, ms: u64) -> String {
    c.ok(&[
        "submit",
        "--workers",
        runner,
        tasks_wasm(),
        "spin",
        &ms.to_string(),
    ])
}

#[test]
fn dependents_queued_on_one_worker_fetch_their_shared_input_once() {
    let c = Cluster::start(2, 1);
    let (holder, runner) = &two_workers(&c);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    let data = random_bytes(8 << 20, 11);
    std::fs::write(&path, &data).unwrap();
    let big = c.ok(&["scatter", "--workers", holder, path.to_str().unwrap()]);
    let spin = occupy(&c, runner, 1500);
    let lines: String = (0..6).map(|i| format!("@{big} {i}\n")).collect();
    let out = c.run(
        &["map", "--workers", runner, tasks_wasm(), "concat-bytes"],
        &lines,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let keys: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(keys.len(), 6);
    for (i, key) in keys.iter().enumerate() {
        let got = raw_bytes(&c, key);
        assert_eq!(got.len(), data.len() + 1);
        assert!(got[..data.len()] == data[..], "{key} starts with the input");
        assert_eq!(got[data.len()], b'0' + i as u8);
    }
    assert_eq!(c.ok(&["gather", &spin]), "1500");
    let runner = worker_json(&c, runner);
    assert_eq!(
        runner["fetched"].as_u64(),
        Some(1),
        "six dependents fetched the input once: {runner}"
    );
}

#[test]
fn tasks_queued_on_a_worker_fetch_ahead_only_as_far_as_its_memory_budget() {
    let c = Cluster::start_with(2, 1, &["--memory-budget", "10MiB"]);
    let (holder, runner) = &two_workers(&c);
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = Vec::new();
    for i in 0..5 {
        let path = dir.path().join(format!("in-{i}.bin"));
        let data = random_bytes(4 << 20, 20 + i);
        std::fs::write(&path, &data).unwrap();
        let key = c.ok(&["scatter", "--workers", holder, path.to_str().unwrap()]);
        inputs.push((key, data));
    }
    let spin = occupy(&c, runner, 4000);
    let lines: String = inputs.iter().map(|(k, _)| format!("@{k}\n")).collect();
    let out = c.run(
        &["map", "--workers", runner, tasks_wasm(), "sum-bytes"],
        &lines,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // While the spin holds the slot, the five wait queued: room for two
    // 4 MiB inputs fits in 10 MiB, and the rest are not fetched yet.
    let mut most = 0;
    wait_until(Duration::from_secs(60), "the spin to end", || {
        let fetched = worker_json(&c, runner)["fetched"].as_u64().unwrap_or(0);
        if status(&c, &spin) != "processing" {
            return true;
        }
        most = most.max(fetched);
        false
    });
    assert!(
        most >= 1,
        "inputs were fetched ahead while the slot was busy"
    );
    assert!(most <= 2, "{most} inputs of 4 MiB fetched ahead in 10 MiB");
    let sums = c.run(&["gather"], std::str::from_utf8(&out.stdout).unwrap());
    let want: Vec<String> = inputs
        .iter()
        .map(|(_, d)| d.iter().map(|&b| u64::from(b)).sum::<u64>().to_string())
        .collect();
    assert_eq!(stdout(&sums).lines().collect::<Vec<_>>(), want);
    let fetched = || worker_json(&c, runner)["fetched"].as_u64().unwrap_or(0);
    wait_until(Duration::from_secs(30), "the runner to report", || {
        fetched() >= 5
    });
    assert_eq!(fetched(), 5, "each input fetched once");
}

#[test]
fn a_guest_gather_past_its_memory_limit_is_refused_before_anything_is_fetched() {
    let c = Cluster::start(1, 1);
    let data = random_bytes(24 << 20, 0x6a7);
    let (_dir, key) = scatter_file(&c, &data);
    let small = c.ok(&[
        "submit",
        "--memory-limit-mib",
        "16",
        coord_wasm(),
        "gather-len",
        &key,
    ]);
    let said = c.ok(&["gather", &small]);
    assert!(
        said.contains("error:")
            && said.contains("more than the 16777216 bytes allowed by this task's memory limit")
            && said.contains("submit --memory-limit-mib"),
        "{said}"
    );
    // Within its limit the same gather brings the value whole (another
    // key: the limit is not part of a task's key).
    let big = c.ok(&[
        "submit",
        "--key",
        "gather-len-within",
        "--memory-limit-mib",
        "64",
        coord_wasm(),
        "gather-len",
        &key,
    ]);
    assert_eq!(c.ok(&["gather", &big]), format!("\"{}\"", 24 << 20));
}

/// Starts `gather -r KEYS` under another client name, reads its first MiB
/// (it has begun, and, with nobody reading the rest, waits), and releases
/// the keys for their holder (applied once the scheduler counts no named
/// hold). The reader, its stdout and the MiB read.
/// `dtask gather -r KEYS` (as client `name`, if given) once it has
/// written its first MiB: the process, the rest of its stdout, and that
/// MiB.
fn raw_gather_begun(
    c: &Cluster,
    keys: &[&str],
    name: Option<&str>,
) -> (std::process::Child, std::process::ChildStdout, Vec<u8>) {
    use std::io::Read;
    let mut cmd = c.cmd();
    if let Some(name) = name {
        cmd.env("DTASK_CLIENT", name);
    }
    let mut reader = cmd
        .args(["gather", "-r"])
        .args(keys)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = reader.stdout.take().unwrap();
    let mut got = vec![0; 1 << 20];
    out.read_exact(&mut got).unwrap();
    (reader, out, got)
}

fn released_while_read(
    c: &Cluster,
    keys: &[&str],
) -> (std::process::Child, std::process::ChildStdout, Vec<u8>) {
    let (reader, out, got) = raw_gather_begun(c, keys, Some("reader"));
    let mut release = vec!["release"];
    release.extend_from_slice(keys);
    c.ok(&release);
    wait_until(
        Duration::from_secs(30),
        "the holder's release applied",
        || {
            let info: serde_json::Value = serde_json::from_str(&c.ok(&["info"])).unwrap();
            info["held"] == 0
        },
    );
    (reader, out, got)
}

/// A `gather` under another client name, which does not hold the key, is
/// reading a big spilled result when its holder releases it: the reader's
/// connection holds it until it has read it, so the reader gets all of
/// it, exact, and the spill file goes once it has.
#[test]
fn a_big_result_released_while_another_client_reads_it_is_read_to_its_end() {
    use std::io::Read;
    let c = Cluster::start_with(1, 1, &["--memory-budget", "8MiB"]);
    let made = c.submit("count-bytes", &[&BIG.to_string(), "7"]);
    c.ok(&["wait", &made]);
    let spill = c.state.path().join("spill");
    let spilled = || {
        std::fs::read_dir(&spill).map_or(0, |workers| {
            workers
                .flatten()
                .filter_map(|w| std::fs::read_dir(w.path()).ok())
                .flat_map(|files| files.flatten())
                .count()
        })
    };
    wait_until(Duration::from_secs(30), "the result spilled", || {
        spilled() == 1
    });
    let (reader, mut out, mut got) = released_while_read(&c, &[&made]);
    assert_eq!(spilled(), 1, "a result being read is kept until it is read");
    out.read_to_end(&mut got).unwrap();
    let done = reader.wait_with_output().unwrap();
    wait_until(Duration::from_secs(30), "the spill file removed", || {
        spilled() == 0
    });
    assert!(done.status.success(), "gather: {}", stderr(&done));
    assert_eq!(got.len(), BIG, "{}", stderr(&done));
    assert!(
        got.iter().enumerate().all(|(i, &b)| b == (i + 7) as u8),
        "the value read differs from the one computed"
    );
    // Released for good: a new reader is told so.
    let after = c.run(&["gather", "-r", &made], "");
    assert!(!after.status.success());
}

/// A gather under another client name is told where two big results are
/// and reads them one after the other; their holder releases both while
/// the first is still being read. The second, not begun, stays for the
/// reader (its connection holds what it was told of until it has read
/// it), and both are read exactly; then they are gone.
#[test]
fn results_released_before_a_reader_begins_them_are_read_to_the_end() {
    use std::io::Read;
    let c = Cluster::start_with(1, 1, &["--memory-budget", "8MiB"]);
    let first = c.submit("count-bytes", &[&BIG.to_string(), "7"]);
    let second = c.submit("count-bytes", &[&BIG.to_string(), "9"]);
    c.ok(&["wait", &first, &second]);
    // Told of both, it reads the first when they are released.
    let (reader, mut out, mut got) = released_while_read(&c, &[&first, &second]);
    out.read_to_end(&mut got).unwrap();
    let done = reader.wait_with_output().unwrap();
    assert!(done.status.success(), "gather: {}", stderr(&done));
    assert_eq!(got.len(), 2 * BIG, "{}", stderr(&done));
    let (a, b) = got.split_at(BIG);
    assert!(
        a.iter().enumerate().all(|(i, &x)| x == (i + 7) as u8)
            && b.iter().enumerate().all(|(i, &x)| x == (i + 9) as u8),
        "the values read differ from those computed"
    );
    // Read, and released by everyone: gone.
    for key in [&first, &second] {
        wait_until(Duration::from_secs(30), "the results forgotten", || {
            !c.run(&["gather", "-r", key], "").status.success()
        });
    }
}

/// A client that gathered big results it does not hold (through
/// `gather` and `result`) lets go of its connection's holds on them once
/// it has read them: their holder's release then frees them at once,
/// while that client is still connected.
#[test]
fn a_client_lets_go_of_big_results_it_has_read() {
    let c = Cluster::start(1, 1);
    let n = 8usize << 20;
    let keys = [
        c.submit("count-bytes", &[&n.to_string(), "1"]),
        c.submit("count-bytes", &[&n.to_string(), "2"]),
    ];
    c.ok(&["wait", &keys[0], &keys[1]]);
    runtime().block_on(async {
        let (client, _) = connect_with(&c, tasks_wasm()).await;
        let got = client.gather(&keys[..1]).await.unwrap();
        assert!(matches!(&got[0], dtask_runtime::value::Value::Binary(b) if b.len() == n));
        let got = client.result(&keys[1]).await.unwrap();
        assert!(matches!(&got, dtask_runtime::value::Value::Binary(b) if b.len() == n));
        c.ok(&["release", &keys[0], &keys[1]]);
        for key in &keys {
            wait_until(Duration::from_secs(30), "the results forgotten", || {
                !c.run(&["gather", "-r", key], "").status.success()
            });
        }
        assert!(client.is_connected());
    });
}

/// A big list (a million word counts) prints as JSON an element at a time:
/// the same line rendering the whole value gives, plain, as a `--json`
/// line and after its key in `as-completed`, without the client holding
/// the list (held whole, with its JSON tree, it took hundreds of MiB).
#[test]
fn a_big_list_prints_as_json_an_element_at_a_time() {
    let c = Cluster::start(1, 1);
    // A million different words of five letters.
    let words: Vec<String> = (0..1_000_000u32)
        .map(|mut n| {
            (0..5)
                .map(|_| {
                    let letter = char::from(b'a' + (n % 26) as u8);
                    n /= 26;
                    letter
                })
                .collect()
        })
        .collect();
    let out = c.run(
        &["submit", tasks_wasm(), "word-count", "-"],
        &words.join(" "),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let key = stdout(&out).trim().to_string();
    let mut counts: Vec<(String, u32)> = words.into_iter().map(|w| (w, 1)).collect();
    counts.sort();
    let want = serde_json::to_string(&counts).unwrap();
    drop(counts);
    let (got, peak) = run_measured(&c, &["gather", &key]);
    eprintln!(
        "gather of a {} KiB list as JSON: client peak RSS {peak} MiB",
        want.len() >> 10
    );
    assert!(
        got == format!("{want}\n").as_bytes(),
        "the list printed differs"
    );
    assert!(peak < 64, "the client peaked at {peak} MiB for the list");
    let (got, _) = run_measured(&c, &["gather", "--json", &key]);
    let line: serde_json::Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(line["key"], key);
    let parsed: serde_json::Value = serde_json::from_str(&want).unwrap();
    assert!(line["result"] == parsed, "the --json line differs");
    let (got, peak) = run_measured(&c, &["as-completed", "--with-results", &key]);
    assert!(got == format!("{key}\t{want}\n").as_bytes());
    assert!(peak < 64, "as-completed peaked at {peak} MiB for the list");
}

/// A list whose elements are themselves big lists of small values (each
/// over a range, so it arrives in pieces) prints exactly as rendering it
/// whole does.
#[test]
fn a_list_of_big_lists_prints_as_rendered_whole() {
    let c = Cluster::start(1, 1);
    runtime().block_on(async {
        let (client, _) = connect_with(&c, tasks_wasm()).await;
        use dtask_runtime::value::Value;
        let inner =
            |n: i64, step: i64| Value::Array((0..n).map(|i| Value::from(i * step)).collect());
        let value = Value::Array(vec![
            inner(1_500_000, 1_000),
            Value::from("between"),
            inner(2_000_000, -7),
            Value::Array(vec![]),
        ]);
        let want = dtask_runtime::value::value_to_json(&value).to_string();
        let futures = client.scatter(vec![value], false, vec![]).await.unwrap();
        let key = futures[0].key().to_string();
        let out = c.run(&["gather", &key], "");
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            out.stdout == format!("{want}\n").as_bytes(),
            "the list printed differs"
        );
        drop(futures);
    });
}

/// A raw gather is partway through a big result when its only holder is
/// killed: the result is computed again on the other worker, and the
/// gather goes on from that copy (its first bytes read again and checked
/// against those already written), so what it writes is the value, exact
/// and once. Until this, the gather failed: "gather it again".
#[test]
fn a_raw_gather_goes_on_from_a_copy_computed_again_when_its_holder_dies_partway() {
    use std::io::Read;
    let c = Cluster::start(2, 1);
    let made = c.submit("count-bytes", &[&BIG.to_string(), "7"]);
    c.ok(&["wait", &made]);
    let worker = |c: &Cluster| {
        json_lines(&c.ok(&["status", "--json", &made]))[0]["worker"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let holder = worker(&c);
    // A worker's name is its host and pid.
    let pid: i32 = holder.rsplit(':').next().unwrap().parse().unwrap();
    let (reader, mut out, mut got) = raw_gather_begun(&c, &[&made], None);
    // SAFETY: a plain signal to a process this test's cluster started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    out.read_to_end(&mut got).unwrap();
    let done = reader.wait_with_output().unwrap();
    assert!(done.status.success(), "gather: {}", stderr(&done));
    assert_eq!(got.len(), BIG, "{}", stderr(&done));
    assert!(
        got.iter().enumerate().all(|(i, &b)| b == (i + 7) as u8),
        "what the gather wrote differs from the value"
    );
    assert_ne!(worker(&c), holder, "computed again elsewhere");
}

/// A big result that is neither a byte string, a string nor a list (here
/// a `result<list<u8>, string>`, a map) prints as the JSON the whole
/// value renders to, written from its MessagePack as it was kept (past
/// 64 MiB, in a temporary file), never decoded whole: the client stays far
/// under the value's size. A record of byte strings under 64 MiB, kept in
/// memory, prints the same way, its keys in the same order.
#[test]
fn a_big_result_that_is_a_map_prints_as_json_without_being_decoded_whole() {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let c = Cluster::start(1, 1);
    let made = c.submit("count-bytes", &[&(BIG + 10).to_string(), "7"]);
    let rest = c.submit("skip-bytes", &[&format!("@{made}"), "10"]);
    let want: Vec<u8> = (10..BIG + 10).map(|i| (i + 7) as u8).collect();
    let json = format!(r#"{{"ok":{{"$bytes":"{}"}}}}"#, b64(&want));
    drop(want);
    let (got, peak) = run_measured(&c, &["gather", &rest]);
    eprintln!(
        "gather of a {} MiB result<list<u8>, string> as JSON: client peak RSS {peak} MiB",
        BIG >> 20
    );
    assert!(
        got == format!("{json}\n").as_bytes(),
        "not the value's JSON"
    );
    assert!(
        peak < 48,
        "the client peaked at {peak} MiB for a 64 MiB map"
    );
    let (got, peak) = run_measured(&c, &["as-completed", "--with-results", &rest]);
    assert!(got == format!("{rest}\t{json}\n").as_bytes());
    assert!(peak < 48, "as-completed peaked at {peak} MiB");
    let (got, _) = run_measured(&c, &["gather", "--json", &rest]);
    let line = format!(r#"{{"key":"{rest}","result":{json},"status":"finished"}}"#);
    assert!(got == format!("{line}\n").as_bytes());
    drop((json, line));
    // Under 64 MiB (kept in memory): a record, its keys sorted.
    let small = c.submit("count-bytes", &["1000000", "3"]);
    let halves = c.submit("split-at", &[&format!("@{small}"), "10"]);
    let bytes: Vec<u8> = (0..1_000_000u32).map(|i| (i + 3) as u8).collect();
    assert_eq!(
        c.ok(&["gather", &halves]),
        format!(
            r#"{{"ok":{{"head":{{"$bytes":"{}"}},"tail":{{"$bytes":"{}"}}}}}}"#,
            b64(&bytes[..10]),
            b64(&bytes[10..])
        )
    );
    let past = c.submit("skip-bytes", &[&format!("@{small}"), "2000000"]);
    assert_eq!(
        c.ok(&["gather", &past]),
        r#"{"err":"cannot skip 2000000 of 1000000 bytes"}"#
    );
}

/// A value scattered for one call (`submit … -` past 4 MiB) takes a hold
/// of its own and lets go of only that: an earlier `dtask scatter` of the
/// same bytes keeps its key. Once that scatter is released too, the data
/// (kept only as the input the task was computed from) is unknown to
/// `gather` and to a new submit, which say so at once (exit 2) where they
/// used to wait for good.
#[test]
fn a_scatter_made_for_a_call_leaves_an_earlier_scatter_of_the_same_bytes_held() {
    let c = Cluster::start(1, 1);
    let data = random_bytes(5 << 20, 0x5ca7);
    let (dir, key) = scatter_file(&c, &data);
    let file = std::fs::File::open(dir.path().join("data.bin")).unwrap();
    let (out, _) = run_measured_from(&c, &["submit", tasks_wasm(), "sum-bytes", "-"], file.into());
    let sum = String::from_utf8(out).unwrap().trim().to_string();
    let want: u64 = data.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(c.ok(&["gather", &sum]), want.to_string());
    assert!(
        c.ok(&["status", &key]).contains("finished"),
        "the scattered key lost its hold: {}",
        c.ok(&["status", &key])
    );
    assert!(raw_bytes(&c, &key) == data, "the scattered value changed");

    c.ok(&["release", &key]);
    let within = Duration::from_secs(20);
    let gathered = start_with_stdin(c.cmd().args(["gather", &key]), "")
        .output_within(within, "a gather of released scattered data");
    assert_eq!(gathered.status.code(), Some(2), "{}", stderr(&gathered));
    assert!(
        stderr(&gathered).contains("unknown key"),
        "{}",
        stderr(&gathered)
    );
    let submitted = start_with_stdin(
        c.cmd()
            .args(["submit", tasks_wasm(), "sum-bytes", &format!("@{key}")]),
        "",
    )
    .output_within(within, "a submit on released scattered data");
    assert_eq!(submitted.status.code(), Some(2), "{}", stderr(&submitted));
    // Scattered again, it is stored afresh.
    let (_again, key2) = scatter_file(&c, &data);
    assert_eq!(key2, key);
    assert!(raw_bytes(&c, &key) == data);
}
