//! `just bench` (and `cargo bench -p dtask --bench bigdata`): 100 MB values
//! on a `dtask cluster` of 2 workers × 1 slot, through the shell as users
//! move them: `dtask scatter FILE`, `dtask gather -r KEY > FILE`, and
//! `reverse-bytes` of the scattered value from submit to gathered bytes;
//! then the same three through the Rust client (`Client::scatter`,
//! `Client::gather`, `Client::submit` and `Future::result`), the API that
//! matches Dask's. Best of 3 each. Then the conversion alone, in and out
//! of a guest inside a worker's sandbox. Then the same bytes through Dask
//! distributed's `client.scatter` / `client.gather` / `client.submit` on the
//! same cluster shape, measured in this run (`cli/benches/dask_bigdata.py`;
//! skipped without Dask). Before Dask: spilling, and a subscriber that
//! reads nothing while 200,000 messages are published to it.
//! `BIG_MB` changes the size; `BIG_ONLY=in-worker` runs the conversion
//! alone.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Cluster, mib, stderr, tasks_wasm, worker_pids};
use dtask_runtime::client::{Client, SubmitOptions};
use dtask_runtime::module::LocalModule;
use dtask_runtime::protocol::Arg;
use dtask_runtime::value::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};

const RUNS: usize = 3;

fn best(mut f: impl FnMut() -> Duration) -> Duration {
    (0..RUNS).map(|_| f()).min().unwrap()
}

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn main() {
    let mb: usize = std::env::var("BIG_MB")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let size = mb * 1_000_000;
    if std::env::var("BIG_ONLY").as_deref() == Ok("in-worker") {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 + i / 7) as u8).collect();
        return in_worker(&data);
    }
    let c = Cluster::start(2, 1);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.bin");
    let copy = dir.path().join("copy.bin");
    let data: Vec<u8> = (0..size).map(|i| (i * 31 + i / 7) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let file = file.to_str().unwrap().to_string();

    // Warm the module once.
    let warm = c.submit("sum-bytes", &["x"]);
    c.ok(&["gather", &warm]);

    println!("{mb} MB values, dtask cluster of 2 workers x 1 slot, best of {RUNS}");
    println!("{:-<78}", "");
    let mut key = String::new();
    let scatter = best(|| {
        let began = Instant::now();
        key = c.ok(&["scatter", &file]);
        began.elapsed()
    });
    let gather = best(|| {
        let out = std::fs::File::create(&copy).unwrap();
        let began = Instant::now();
        let status = c
            .cmd()
            .args(["gather", "-r", &key])
            .stdout(Stdio::from(out))
            .status()
            .unwrap();
        let took = began.elapsed();
        assert!(status.success());
        took
    });
    assert!(
        std::fs::read(&copy).unwrap() == data,
        "gather -r is not exact"
    );
    let at = format!("@{key}");
    let mut round = 0;
    let rev = best(|| {
        round += 1;
        let began = Instant::now();
        // --pure=false: a fresh run each time, not the cached result.
        // Gathered into a file, as `gather -r > FILE` above: what a shell
        // user does with 100 MB of bytes.
        let k = c.ok(&["submit", "--pure=false", tasks_wasm(), "reverse-bytes", &at]);
        let out = std::fs::File::create(&copy).unwrap();
        let gathered = c
            .cmd()
            .args(["gather", "-r", &k])
            .stdout(Stdio::from(out))
            .status()
            .unwrap();
        let took = began.elapsed();
        assert!(gathered.success(), "gather -r of the reversed bytes failed");
        let got = std::fs::read(&copy).unwrap();
        assert_eq!(got.len(), size);
        assert!(got.iter().eq(data.iter().rev()), "rev run {round}");
        c.ok(&["release", &k]);
        took
    });
    println!(
        "scatter {mb} MB (dtask scatter FILE)      {:>8.1} ms  {:>7.0} MB/s",
        scatter.as_secs_f64() * 1e3,
        mb_per_s(size, scatter)
    );
    println!(
        "gather  {mb} MB (dtask gather -r > FILE)  {:>8.1} ms  {:>7.0} MB/s",
        gather.as_secs_f64() * 1e3,
        mb_per_s(size, gather)
    );
    println!(
        "reverse-bytes {mb} MB, submit, gather -r > FILE {:>8.1} ms  {:>7.0} MB/s   target >= 500 MB/s",
        rev.as_secs_f64() * 1e3,
        mb_per_s(size, rev)
    );
    println!("{:-<78}", "");
    rust_client(&c, &data);
    println!("{:-<78}", "");
    in_worker(&data);
    println!("{:-<78}", "");
    drop(c);
    spill(&data, size, mb);
    println!("{:-<78}", "");
    slow_subscriber();
    println!("{:-<78}", "");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/dask_bigdata.py");
    let status = std::process::Command::new("python3")
        .arg(script)
        .arg(mb.to_string())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        println!("Dask baseline: could not run {script}");
    }
}

/// Scatter, gather and `reverse-bytes` of `data` through the Rust client,
/// each to a value in this process's memory, as Dask's client does.
fn rust_client(c: &Cluster, data: &[u8]) {
    let size = data.len();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::connect(&c.addr, &c.token(), None).await.unwrap();
        let module = LocalModule::load(tasks_wasm().as_ref()).unwrap();
        client.upload(&module).await.unwrap();
        let mut held = Vec::new();
        let mut scatter = Duration::MAX;
        for round in 0..RUNS {
            // A different value each round: the same bytes have the same
            // key, and would be held already.
            let mut v = data.to_vec();
            v[0] = round as u8;
            let value = Value::Binary(v);
            let began = Instant::now();
            let f = client.scatter(vec![value], false, vec![]).await.unwrap();
            scatter = scatter.min(began.elapsed());
            held.extend(f);
        }
        let key = held[0].key().to_string();
        let mut gather = Duration::MAX;
        for _ in 0..RUNS {
            let began = Instant::now();
            let got = client.gather(std::slice::from_ref(&key)).await.unwrap();
            gather = gather.min(began.elapsed());
            assert!(matches!(&got[0], Value::Binary(b) if b.len() == size));
        }
        let options = SubmitOptions {
            pure: false,
            ..SubmitOptions::default()
        };
        let mut rev = Duration::MAX;
        for _ in 0..RUNS {
            let began = Instant::now();
            let f = client
                .submit(
                    &module,
                    "reverse-bytes",
                    vec![Arg::Future(key.clone())],
                    &options,
                )
                .await
                .unwrap();
            let got = f.result(None).await.unwrap();
            rev = rev.min(began.elapsed());
            // The first value held is `data` with a first byte of 0.
            let Value::Binary(b) = got else {
                panic!("reverse-bytes gave {got:?}")
            };
            assert!(b.len() == size && b[size - 1] == 0);
            assert!(b.iter().rev().skip(1).eq(data[1..].iter()), "not reversed");
        }
        let mb = size / 1_000_000;
        for (what, d) in [
            (format!("scatter {mb} MB (Client::scatter)    "), scatter),
            (format!("gather  {mb} MB (Client::gather)     "), gather),
            (format!("reverse-bytes {mb} MB, Rust client  "), rev),
        ] {
            println!(
                "{what}   {:>8.1} ms  {:>7.0} MB/s",
                d.as_secs_f64() * 1e3,
                mb_per_s(size, d)
            );
        }
    });
}

/// The bytes crossing into and out of a guest inside a worker's sandbox,
/// without the network: a fresh store and instance per call, as a worker
/// runs a task. `concat-bytes` of the value and nothing does no work of its
/// own, so its figure is the conversion (both ways: the rate counts the
/// value's bytes once); `reverse-bytes` adds the guest's reversal. Once
/// with the worker's default `--keep-task-memory`, once with 256 MiB kept.
fn in_worker(data: &[u8]) {
    use dtask_runtime::worker::sandbox::KEEP_RESIDENT;
    for (keep, setting) in [(KEEP_RESIDENT, "default"), (256 << 20, "256MiB")] {
        println!("--keep-task-memory {setting}:");
        in_worker_keeping(data, keep);
    }
}

fn in_worker_keeping(data: &[u8], keep_resident: usize) {
    use dtask_runtime::worker::sandbox::{Limits, RunLimits, TaskArg};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let limits = Limits {
        memory: 1 << 30,
        keep_resident,
        ..Limits::default()
    };
    let (sandbox, ready) = common::tasks_sandbox(limits);
    let size = data.len();
    // As a worker has them: byte arguments as slices of what arrived, the
    // result straight into its encoding.
    let bytes = bytes::Bytes::from(data.to_vec());
    let calls: [(&str, &str, Vec<TaskArg>); 2] = [
        (
            "in and out, guest idle (concat-bytes with nothing)",
            "concat-bytes",
            vec![
                TaskArg::Bytes(bytes.clone()),
                TaskArg::Bytes(bytes::Bytes::new()),
            ],
        ),
        (
            "in and out, guest reversing (reverse-bytes)       ",
            "reverse-bytes",
            vec![TaskArg::Bytes(bytes)],
        ),
    ];
    let call = |function: &str, args: &Vec<TaskArg>| {
        let args = args.clone();
        rt.block_on(async {
            let began = Instant::now();
            let out = sandbox
                .run_linked(&ready, "k", function, args, RunLimits::default(), None)
                .await;
            let took = began.elapsed();
            assert!(out.is_ok(), "{function} failed");
            took
        })
    };
    // One round first: the first touch of memory this machine has not
    // used yet is not what the conversion costs.
    for (_, function, args) in &calls {
        call(function, args);
    }
    for (what, function, args) in &calls {
        let d = best(|| call(function, args));
        println!(
            "in a worker, {} MB {what} {:>7.1} ms {:>6.0} MB/s   target >= 2000 MB/s",
            size / 1_000_000,
            d.as_secs_f64() * 1e3,
            mb_per_s(size, d)
        );
    }
}

/// One worker with a 256 MiB memory budget holding ten values of `mb` MB:
/// its peak RSS, and every value gathered back byte-exact.
/// 200,000 messages of 1 KB published to a subscriber that reads nothing
/// for 30 s (stopped with SIGSTOP), on the scheduler's default client
/// buffer: how much the scheduler grows, and whether others are served.
fn slow_subscriber() {
    const MESSAGES: usize = 200_000;
    let c = Cluster::start(1, 1);
    let mut sub = c
        .cmd()
        .args(["sub", "flood"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let said = common::first_line(sub.stderr.take().unwrap(), Duration::from_secs(30));
    assert!(said.is_some_and(|l| l.contains("subscribed")));
    // SAFETY: stopping the subscriber this bench started.
    unsafe {
        libc::kill(sub.id() as i32, libc::SIGSTOP);
    }
    let stopped = Instant::now();
    let before = mib(c.pid(), "VmRSS");
    let line = format!("\"{}\"\n", "x".repeat(1000));
    let began = Instant::now();
    let published = c.run(&["pub", "flood", "-"], &line.repeat(MESSAGES));
    let took = began.elapsed();
    assert!(published.status.success(), "{}", stderr(&published));
    let served = c.ok(&["gather", &c.submit("inc", &["1"])]) == "2";
    let after_publish = mib(c.pid(), "VmRSS").saturating_sub(before);
    std::thread::sleep(Duration::from_secs(30).saturating_sub(stopped.elapsed()));
    let after_30s = mib(c.pid(), "VmRSS").saturating_sub(before);
    println!(
        "slow subscriber: {MESSAGES} messages of 1 KB published in {:.2} s to a subscriber reading nothing",
        took.as_secs_f64()
    );
    println!(
        "  scheduler RSS grew {after_publish} MiB after publishing, {after_30s} MiB at 30 s   target < 100 MB (95 MiB); \
         another client served meanwhile: {served}"
    );
    // SAFETY: as above.
    unsafe {
        libc::kill(sub.id() as i32, libc::SIGKILL);
    }
    let _ = sub.wait();
}

fn spill(data: &[u8], size: usize, mb: usize) {
    let c = Cluster::start_with(1, 1, &["--memory-budget", "256MiB"]);
    let worker = worker_pids(c.pid())[0];
    let dir = tempfile::tempdir().unwrap();
    let mut keys = Vec::new();
    let began = Instant::now();
    for i in 0..10u8 {
        let mut v = data.to_vec();
        v[0] = i;
        let path = dir.path().join(format!("{i}.bin"));
        std::fs::write(&path, &v).unwrap();
        keys.push(c.ok(&["scatter", path.to_str().unwrap()]));
    }
    let stored = began.elapsed();
    let held = mib(worker, "VmHWM");
    let began = Instant::now();
    for (i, key) in keys.iter().enumerate() {
        let out = c.cmd().args(["gather", "-r", key]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            out.stdout.len() == size && out.stdout[0] == i as u8 && out.stdout[1..] == data[1..],
            "value {i} differs"
        );
    }
    let read = began.elapsed();
    let info: serde_json::Value = serde_json::from_str(&c.ok(&["info"])).unwrap();
    println!(
        "spilling: 10 x {mb} MB on 1 worker, --memory-budget 256MiB: stored in {:.1} s, \
         all gathered back byte-exact in {:.1} s",
        stored.as_secs_f64(),
        read.as_secs_f64()
    );
    println!(
        "  worker peak RSS {held} MiB after storing, {} MiB after reading back   target < 500 MB; \
         spilled {} MB",
        mib(worker, "VmHWM"),
        info["spilled_bytes"].as_u64().unwrap_or(0) / 1_000_000
    );
    println!("{:-<78}", "");
}
