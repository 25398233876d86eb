//! `just bench`: dtask's throughput, latency and per-task overhead on a
//! local cluster of 2 single-slot worker processes, printed as figures.
//!
//! Only figures measured here are printed: `just bench` measures Dask
//! itself next, in the same run (`cli/benches/dask_baseline.py`), when it
//! is installed.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Cluster, DTASK, tasks_wasm};
use dtask_runtime::client::{ActorOptions, Client, Item, SubmitOptions, task_spec};
use dtask_runtime::module::LocalModule;
use dtask_runtime::protocol::{Arg, CallArg};
use dtask_runtime::value::{Value, encode};
use dtask_runtime::worker::sandbox::Limits;
use std::time::{Duration, Instant};

fn int(i: i64) -> Arg {
    Arg::Value(encode(&Value::from(i)).into())
}

fn main() {
    // `cargo bench -- sandbox` measures only the in-worker cost.
    if std::env::args().any(|a| a == "sandbox") {
        in_worker_calls(50_000);
        return;
    }
    // `cargo bench -- latency [N]` runs only N (default 20,000) round
    // trips, printing their percentiles: long enough to attach `perf`,
    // `strace -c` or `perf sched` to the processes. `latency R,C,A` gives
    // each kind its own count: submit->result round trips, queue and lock
    // round trips, actor calls.
    let mut args = std::env::args().skip_while(|a| a != "latency");
    let latency_only = args.next().is_some();
    let latency_n = args
        .next()
        .map_or(Some([20_000; 3]), |n| latency_counts(&n));
    let chain_only: Option<i64> = std::env::args()
        .skip_while(|a| a != "chain")
        .nth(1)
        .and_then(|n| n.parse().ok());
    // `cargo bench -- map N`: only a map+gather of N tasks, to profile.
    let map_only: Option<i64> = std::env::args()
        .skip_while(|a| a != "map")
        .nth(1)
        .and_then(|n| n.parse().ok());
    let Some(latency_n) = latency_n else {
        eprintln!("latency takes N or R,C,A (sample counts)");
        std::process::exit(2);
    };
    // Clients and workers reach the scheduler on its Unix socket, as on
    // the local default (`DTASK_BENCH_TCP=1`: over loopback TCP).
    let cluster = Cluster::for_bench(2, 1);
    // One thread runs the client: no cross-thread wake-ups between the
    // caller and the connection's reader and writer tasks. It busy-polls
    // as the cluster's processes do, unless `DTASK_BUSY_POLL=off`.
    let rt = dtask_runtime::busy_poll::install(&mut tokio::runtime::Builder::new_current_thread())
        .enable_all()
        .build()
        .unwrap();
    println!("dtask benchmarks: local cluster, 2 worker processes x 1 slot");
    println!("{:-<78}", "");
    rt.block_on(async {
        let client = Client::connect(&cluster.addr, &cluster.token(), None).await.unwrap();
        let module = LocalModule::load(tasks_wasm().as_ref()).unwrap();
        client.upload(&module).await.unwrap();
        // Warm up: workers compile the module.
        let k = client
            .submit(&module, "inc", vec![int(-1)], &SubmitOptions::default())
            .await
            .unwrap();
        k.result(None).await.unwrap();
        if latency_only {
            latencies(&client, &module, latency_n).await;
            return;
        }
        // `cargo bench -- chain N`: only a chain of N tasks, to profile.
        if let Some(n) = map_only {
            let rate = map_gather(&client, &module, n, 0).await;
            println!("map+gather {n} inc tasks (Rust client) {rate:>10.0} tasks/s");
            return;
        }
        if let Some(n) = chain_only {
            let took = chain(&client, &module, n).await;
            println!("{n}-task dependency chain {:>10.1} ms wall", took.as_secs_f64() * 1e3);
            return;
        }

        for (n, offset) in [(10_000i64, 0i64), (100_000, 1_000_000)] {
            let rate = map_gather(&client, &module, n, offset).await;
            println!(
                "map+gather {n:>7} inc tasks (Rust client)  {rate:>10.0} tasks/s   target >= 20,000"
            );
        }
        let rate = cli_pipeline(&cluster, 100_000, 5_000_000).await;
        println!(
            "seq|map|gather {:>6} tasks (CLI pipe)   {rate:>10.0} tasks/s",
            100_000
        );

        let chain = chain(&client, &module, 1000).await;
        println!(
            "1,000-task dependency chain              {:>10.1} ms wall",
            chain.as_secs_f64() * 1e3
        );

        latencies(&client, &module, [1000, 2000, 20_000]).await;
        let rate = pubsub_rate(&cluster, &client, 200_000).await;
        println!(
            "pub/sub 200,000 messages to 1 subscriber {rate:>10.0} msgs/s                 target >= 50,000"
        );
    });
    if latency_only || chain_only.is_some() || map_only.is_some() {
        return;
    }
    in_worker_calls(20_000);
    for (what, cached) in [
        ("module never compiled", false),
        ("module's artifact cached", true),
    ] {
        let mut times = first_submits(3, cached);
        times.sort();
        println!(
            "first submit on a fresh state dir, {what:<25} median {:>4.0} ms [{:.0}, {:.0}] (3 runs; target <= 150 ms)",
            times[1].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[2].as_secs_f64() * 1e3
        );
    }
    println!("{:-<78}", "");
    println!(
        "Dask's figures: `python3 cli/benches/dask_baseline.py` measures them (`just bench` runs it next)"
    );
}

/// `Client::map` of `n` independent `inc` calls, then `Client::gather` of
/// their results, through the public API (specs built, hashed and sent
/// inside the timing); returns tasks per second.
async fn map_gather(client: &Client, module: &LocalModule, n: i64, offset: i64) -> f64 {
    let opts = SubmitOptions::default();
    let start = Instant::now();
    let calls = (0..n).map(|i| vec![int(offset + i)]).collect();
    let futures = client.map(module, "inc", calls, &opts).await.unwrap();
    let keys: Vec<String> = futures.iter().map(|f| f.key().to_string()).collect();
    let values = client.gather(&keys).await.unwrap();
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let sum: i64 = values.iter().map(|v| v.as_i64().unwrap()).sum();
    let expected: i64 = (0..n).map(|i| offset + i + 1).sum();
    assert_eq!(sum, expected, "wrong results");
    drop(futures);
    rate
}

/// `dtask gather $(dtask submit T inc 10)` with a fresh state directory, so
/// the local default cluster starts for it, `runs` times; each run's wall
/// time to the printed result. With `cached`, the state directory starts
/// with the compiled artifact of the module (as after an earlier run), so
/// only the cluster start, the connection and the task remain.
fn first_submits(runs: usize, cached: bool) -> Vec<Duration> {
    let shell = |state: &std::path::Path, script: &str| {
        std::process::Command::new("sh")
            .args(["-c", script])
            .env("DTASK_STATE_DIR", state)
            .env_remove("DTASK_SCHEDULER")
            .output()
            .unwrap()
    };
    let submit = format!("{DTASK} gather $({DTASK} submit {} inc 10)", tasks_wasm());
    let seed = tempfile::tempdir().unwrap();
    if cached {
        assert_eq!(
            String::from_utf8_lossy(&shell(seed.path(), &submit).stdout).trim(),
            "11"
        );
        shell(seed.path(), &format!("{DTASK} shutdown"));
    }
    (0..runs)
        .map(|_| {
            let state = tempfile::tempdir().unwrap();
            if cached {
                let copy = format!(
                    "cp -r {}/cache {}/",
                    seed.path().display(),
                    state.path().display()
                );
                assert!(shell(state.path(), &copy).status.success());
            }
            let start = Instant::now();
            let out = shell(state.path(), &submit);
            let took = start.elapsed();
            shell(state.path(), &format!("{DTASK} shutdown"));
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "11",
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            took
        })
        .collect()
}

/// `seq | dtask map | dtask gather` through real processes; tasks/s.
///
/// The processes are waited for on a blocking thread: waiting on the
/// client's own thread would stall its connection, and what it had queued
/// (the release of the map+gather before) would reach the scheduler only
/// with whatever the bench sends next.
async fn cli_pipeline(cluster: &Cluster, n: i64, offset: i64) -> f64 {
    let script = format!(
        "seq {} {} | {DTASK} map {} inc | {DTASK} gather | tail -1",
        offset + 1,
        offset + n,
        tasks_wasm()
    );
    let mut version = cluster.cmd();
    version.arg("--version");
    let mut pipeline = std::process::Command::new("sh");
    pipeline
        .args(["-c", &script])
        .env("DTASK_STATE_DIR", cluster.state.path())
        .env("DTASK_SCHEDULER", &cluster.addr);
    let (took, out) = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let out = version.output().unwrap();
        assert!(out.status.success());
        let out = pipeline.output().unwrap();
        (start.elapsed(), out)
    })
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        (offset + n + 1).to_string(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    n as f64 / took.as_secs_f64()
}

/// `N` (every kind N times) or `R,C,A` (each kind its own count), as
/// `latency` takes them.
fn latency_counts(arg: &str) -> Option<[i64; 3]> {
    let counts: Vec<i64> = arg
        .split(',')
        .map(|n| n.parse().ok().filter(|n| *n > 0))
        .collect::<Option<_>>()?;
    match counts[..] {
        [n] => Some([n; 3]),
        [r, c, a] => Some([r, c, a]),
        _ => None,
    }
}

/// The latency figures: the machine's floor, then a submit->result round
/// trip, a queue put+get, a lock acquire+release and an actor call, each
/// sequential, with the given sample counts.
async fn latencies(
    client: &Client,
    module: &LocalModule,
    [round_trip_n, coordination_n, actor_n]: [i64; 3],
) {
    let (p50, p99) = ping_pong(2000);
    println!(
        "machine floor: ping-pong of 2 processes, 2000 p50 {:>7.0} us  p99 {:>7.0} us   (a submit->result round trip is 4 such hops)",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    let (p50, p99) = round_trips(client, module, round_trip_n).await;
    println!(
        "submit->result round trip, {round_trip_n} sequential  p50 {:>7.0} us  p99 {:>7.0} us   target p50 < 1000 us",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );

    let (p50, p99) = queue_round_trips(client, coordination_n).await;
    println!(
        "queue put+get round trip, {coordination_n} sequential  p50 {:>7.0} us  p99 {:>7.0} us   target p50 < 200 us",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    let (p50, p99) = lock_round_trips(client, coordination_n).await;
    println!(
        "lock acquire+release, {coordination_n} sequential      p50 {:>7.0} us  p99 {:>7.0} us   target p50 < 200 us",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    let (rate, p50, p99) = actor_calls(client, actor_n).await;
    println!(
        "actor calls, {actor_n} sequential          {rate:>10.0} calls/s  p50 {:>4.0} us  p99 {:>4.0} us   target >= 20,000/s, p50 < 100 us",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
}

/// What one message and its answer cost between two processes on this
/// machine, over a Unix socket pair: a wake-up each way, the floor under
/// every hop between dtask's processes (on a VM, waking a process on an
/// idle vCPU goes through the hypervisor).
fn ping_pong(n: usize) -> (Duration, Duration) {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let (fd, other) = (b.as_raw_fd(), a.as_raw_fd());
    // SAFETY: the child only reads, writes and exits (async-signal-safe
    // calls), whatever threads this process has.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        let mut byte = 0u8;
        // SAFETY: reading and writing one byte through a valid buffer.
        unsafe {
            // Its copy of the parent's end would keep its own read from
            // ever seeing the parent close.
            libc::close(other);
            while libc::read(fd, (&raw mut byte).cast(), 1) == 1 {
                libc::write(fd, (&raw const byte).cast(), 1);
            }
            libc::_exit(0);
        }
    }
    drop(b);
    let mut times = Vec::with_capacity(n);
    let mut byte = [7u8; 1];
    for _ in 0..n {
        let start = Instant::now();
        a.write_all(&byte).unwrap();
        a.read_exact(&mut byte).unwrap();
        times.push(start.elapsed());
    }
    drop(a);
    // SAFETY: reaping the child forked above.
    unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    times.sort();
    (times[n / 2], times[n * 99 / 100])
}

async fn round_trips(client: &Client, module: &LocalModule, n: i64) -> (Duration, Duration) {
    let opts = SubmitOptions::default();
    let mut times = Vec::with_capacity(n as usize);
    for i in 0..n {
        let start = Instant::now();
        let k = client
            .submit(module, "inc", vec![int(10_000_000 + i)], &opts)
            .await
            .unwrap();
        let v = k.result(None).await.unwrap();
        times.push(start.elapsed());
        assert_eq!(v, Value::from(10_000_001 + i));
    }
    times.sort();
    (times[times.len() / 2], times[times.len() * 99 / 100])
}

/// A chain inc(inc(…inc(0))) of `n` tasks, submitted at once; wall time to
/// the final result.
async fn chain(client: &Client, module: &LocalModule, n: i64) -> Duration {
    let opts = SubmitOptions {
        pure: false,
        ..SubmitOptions::default()
    };
    let start = Instant::now();
    let mut specs = Vec::with_capacity(n as usize);
    let mut prev = task_spec(module.hash(), "inc", vec![int(0)], &opts);
    for _ in 1..n {
        let next = task_spec(
            module.hash(),
            "inc",
            vec![Arg::Future(prev.key.clone())],
            &opts,
        );
        specs.push(prev);
        prev = next;
    }
    let last = prev.key.clone();
    specs.push(prev);
    client.submit_specs(specs).await.unwrap().await.unwrap();
    let v = client.result(&last).await.unwrap();
    assert_eq!(v, Value::from(n));
    start.elapsed()
}

fn percentiles(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (times[times.len() / 2], times[times.len() * 99 / 100])
}

/// Sequential put-then-get round trips on one queue.
async fn queue_round_trips(client: &Client, n: i64) -> (Duration, Duration) {
    let queue = client.queue("bench-queue");
    let mut times = Vec::with_capacity(n as usize);
    for i in 0..n {
        let start = Instant::now();
        queue.put_value(&Value::from(i), None).await.unwrap();
        let got = queue.get(None).await.unwrap();
        times.push(start.elapsed());
        assert!(matches!(got, Item::Value(v) if v == Value::from(i)));
    }
    percentiles(times)
}

/// Sequential acquire-then-release round trips on one lock.
async fn lock_round_trips(client: &Client, n: i64) -> (Duration, Duration) {
    let lock = client.lock("bench-lock");
    let mut times = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let start = Instant::now();
        lock.acquire(None).await.unwrap();
        lock.release().await.unwrap();
        times.push(start.elapsed());
    }
    percentiles(times)
}

/// Sequential `increment` calls on a counter actor (the `coord` guest):
/// calls per second, p50 and p99 of one call.
async fn actor_calls(client: &Client, n: i64) -> (f64, Duration, Duration) {
    let module = LocalModule::load(dtask_guests::COORD_WASM.as_ref()).unwrap();
    let counter = client
        .actor_new(&module, "counter", vec![int(0)], &ActorOptions::default())
        .await
        .unwrap();
    let one = || vec![CallArg::Value(encode(&Value::from(1)).into())];
    counter.call("increment", one()).await.unwrap();
    let mut times = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let v = counter.call("increment", one()).await.unwrap();
        times.push(t.elapsed());
        assert_eq!(v, Value::from(i + 2));
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let (p50, p99) = percentiles(times);
    (rate, p50, p99)
}

/// Messages per second from one publishing client to one subscribing
/// client (another connection), from the first publish to the last
/// message received.
async fn pubsub_rate(cluster: &Cluster, publisher: &Client, n: i64) -> f64 {
    let subscriber = Client::connect(&cluster.addr, &cluster.token(), None)
        .await
        .unwrap();
    let mut sub = subscriber.subscribe("bench-topic").await.unwrap();
    let start = Instant::now();
    for i in 0..n {
        publisher
            .publish_bytes("bench-topic", encode(&Value::from(i)).into())
            .unwrap();
    }
    for i in 0..n {
        let v = sub.next(Some(Duration::from_secs(30))).await.unwrap();
        assert_eq!(v, Value::from(i), "out of order");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Prints the average time of one task inside a worker's sandbox (fresh
/// store, instantiate from the pre-linked component, call) over `n` calls:
/// `inc` of the example tasks, and a call of the same size to the probe
/// component, whose file and socket use makes it import five times as many
/// WASI functions (each linked again at every instantiation); then `inc`
/// again with the worker's pool taken, in instances set up on demand.
fn in_worker_calls(n: u32) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // (module, function, its argument and result for call i, what to print,
    // whether the pool is taken)
    type Call = (
        &'static str,
        &'static str,
        fn(u32) -> (Value, Value),
        &'static str,
        bool,
    );
    let inc = |i| (Value::from(i64::from(i)), Value::from(i64::from(i) + 1));
    let calls: [Call; 3] = [
        (
            common::tasks_wasm(),
            "inc",
            inc,
            "instantiate+call inside a worker (inc)",
            false,
        ),
        (
            dtask_guests::PROBE_WASM,
            "probe",
            |i| {
                let what = format!("none-{i}");
                let said = format!("nothing to probe called {what}");
                (Value::from(what), Value::from(said))
            },
            "  the same, component importing files+sockets",
            false,
        ),
        (
            common::tasks_wasm(),
            "inc",
            inc,
            "  inc past the pool (instances set up on demand)",
            true,
        ),
    ];
    for (path, function, call, what, past_pool) in calls {
        let limits = match past_pool {
            true => Limits {
                instances: Some(1),
                max_instances: Some(2),
                ..Limits::default()
            },
            false => Limits::default(),
        };
        let (sandbox, ready) = common::module_sandbox(path, limits);
        // The pool's one instance held for the whole run.
        let _pool = past_pool.then(|| sandbox.try_instance().unwrap());
        let per_call = rt.block_on(async {
            let run = async |i: u32| {
                let (arg, expected) = call(i);
                let got = sandbox
                    .run(&ready, "k", function, vec![arg], None)
                    .await
                    .unwrap();
                assert_eq!(got, expected);
            };
            for i in 0..1000 {
                run(i).await;
            }
            let start = Instant::now();
            for i in 0..n {
                run(i).await;
            }
            start.elapsed() / n
        });
        let how = match past_pool {
            true => "on-demand allocator",
            false => "pooling allocator",
        };
        println!(
            "{what:<48} {:>6.1} us per task ({how}, fresh store)",
            per_call.as_secs_f64() * 1e6
        );
    }
}
