//! `cargo bench -p dtask --bench versus`: dtask and Dask distributed side
//! by side, measured in one run on the same cluster shape (2 worker
//! processes × 1 slot / thread), with the same sample sizes, each through
//! its public client API (dtask's `Client::map`, `gather`, `submit`,
//! `queue`, `lock`; Dask's `client.map`, `gather`, `submit`, `Queue`,
//! `Lock`, in `dask_baseline.py --json`). Each figure is the median of 3
//! runs, with min and max, and the ratio of the medians. Dask's side is
//! skipped, saying so, when it is not installed.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Cluster, tasks_wasm};
use dtask_runtime::client::{Client, Item, SubmitOptions};
use dtask_runtime::module::LocalModule;
use dtask_runtime::protocol::Arg;
use dtask_runtime::value::{Value, encode};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const RUNS: usize = 3;
const MAP: i64 = 10_000;
const TRIPS: i64 = 300;
const CHAIN: i64 = 1_000;
const PRIMITIVE: i64 = 500;
/// Tasks of uneven length, 0-20 ms each, for load balance.
const UNEVEN: usize = 2_000;

/// The figures, in print order: key, label, unit, whether more is better.
const FIGURES: &[(&str, &str, &str, bool)] = &[
    ("map_gather", "map+gather 10,000 inc", "tasks/s", true),
    ("round_trip_us", "submit->result p50 (300)", "us", false),
    ("chain_ms", "1,000-task chain", "ms", false),
    ("queue_us", "queue put+get p50 (500)", "us", false),
    ("lock_us", "lock acquire+release p50 (500)", "us", false),
    ("uneven_s", "2,000 tasks of 0-20 ms, makespan", "s", false),
];

/// The lengths of the uneven tasks, in ms: the same pseudo-random
/// sequence `dask_baseline.py` draws (a 64-bit LCG, bits 33 and up).
fn uneven_ms() -> Vec<u64> {
    let mut x: u64 = 42;
    (0..UNEVEN)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % 21
        })
        .collect()
}

fn int(i: i64) -> Arg {
    Arg::Value(encode(&Value::from(i)).into())
}

fn p50(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e6
}

/// One sample of every figure on dtask.
async fn measure_once(client: &Client, module: &LocalModule, run: i64) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let opts = SubmitOptions::default();
    let offset = run * 1_000_000;

    let start = Instant::now();
    let calls = (offset..offset + MAP).map(|i| vec![int(i)]).collect();
    let futures = client.map(module, "inc", calls, &opts).await.unwrap();
    let keys: Vec<String> = futures.iter().map(|f| f.key().to_string()).collect();
    let values = client.gather(&keys).await.unwrap();
    out.insert(
        "map_gather".into(),
        MAP as f64 / start.elapsed().as_secs_f64(),
    );
    let sum: i64 = values.iter().map(|v| v.as_i64().unwrap()).sum();
    assert_eq!(sum, (offset + 1..=offset + MAP).sum::<i64>());
    drop(futures);

    let mut times = Vec::new();
    for i in 0..TRIPS {
        let t = Instant::now();
        let f = client
            .submit(module, "inc", vec![int(10_000_000 + offset + i)], &opts)
            .await
            .unwrap();
        assert_eq!(
            f.result(None).await.unwrap(),
            Value::from(10_000_001 + offset + i)
        );
        times.push(t.elapsed());
    }
    out.insert("round_trip_us".into(), p50(times));

    let fresh = SubmitOptions {
        pure: false,
        ..SubmitOptions::default()
    };
    let start = Instant::now();
    let mut f = client
        .submit(module, "inc", vec![int(0)], &fresh)
        .await
        .unwrap();
    for _ in 1..CHAIN {
        f = client
            .submit(
                module,
                "inc",
                vec![Arg::Future(f.key().to_string())],
                &fresh,
            )
            .await
            .unwrap();
    }
    assert_eq!(f.result(None).await.unwrap(), Value::from(CHAIN));
    out.insert("chain_ms".into(), start.elapsed().as_secs_f64() * 1e3);

    let queue = client.queue(&format!("versus-queue-{run}"));
    let mut times = Vec::new();
    for i in 0..PRIMITIVE {
        let t = Instant::now();
        queue.put_value(&Value::from(i), None).await.unwrap();
        let got = queue.get(None).await.unwrap();
        times.push(t.elapsed());
        assert!(matches!(got, Item::Value(v) if v == Value::from(i)));
    }
    out.insert("queue_us".into(), p50(times));

    let lock = client.lock(&format!("versus-lock-{run}"));
    let mut times = Vec::new();
    for _ in 0..PRIMITIVE {
        let t = Instant::now();
        lock.acquire(None).await.unwrap();
        lock.release().await.unwrap();
        times.push(t.elapsed());
    }
    out.insert("lock_us".into(), p50(times));

    let start = Instant::now();
    let calls = uneven_ms()
        .into_iter()
        .map(|ms| vec![int(ms as i64)])
        .collect();
    let futures = client.map(module, "spin", calls, &fresh).await.unwrap();
    let keys: Vec<String> = futures.iter().map(|f| f.key().to_string()).collect();
    let values = client.gather(&keys).await.unwrap();
    out.insert("uneven_s".into(), start.elapsed().as_secs_f64());
    let work: u64 = uneven_ms().iter().sum();
    assert_eq!(
        values
            .iter()
            .map(|v| v.as_i64().unwrap() as u64)
            .sum::<u64>(),
        work
    );
    out
}

/// Median, min and max.
fn spread(xs: &[f64]) -> (f64, f64, f64) {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

fn dtask_samples() -> BTreeMap<String, Vec<f64>> {
    // dtask's local default: on its scheduler's Unix socket (Dask's
    // LocalCluster default is loopback TCP). `DTASK_BENCH_TCP=1`: TCP.
    let cluster = Cluster::for_bench(2, 1);
    let rt = dtask_runtime::busy_poll::install(&mut tokio::runtime::Builder::new_current_thread())
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::connect(&cluster.addr, &cluster.token(), None)
            .await
            .unwrap();
        let module = LocalModule::load(tasks_wasm().as_ref()).unwrap();
        let warm = client
            .submit(&module, "inc", vec![int(-1)], &SubmitOptions::default())
            .await
            .unwrap();
        warm.result(None).await.unwrap();
        let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for run in 0..RUNS as i64 {
            for (k, v) in measure_once(&client, &module, run).await {
                samples.entry(k).or_default().push(v);
            }
        }
        samples
    })
}

fn dask_samples() -> Result<BTreeMap<String, Vec<f64>>, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/dask_baseline.py");
    let out = std::process::Command::new("python3")
        .args([script, "--json", &RUNS.to_string()])
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| format!("no python3 ({e})"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("it failed")
            .to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("unreadable output: {e}"))
}

fn main() {
    println!(
        "dtask vs Dask distributed: 2 worker processes x 1 slot each, same sample sizes, \
         {RUNS} runs, median [min, max]; each side's local default transport (dtask: {}, \
         Dask: loopback TCP)",
        if std::env::var_os("DTASK_BENCH_TCP").is_some() {
            "loopback TCP"
        } else {
            "its scheduler's Unix socket"
        }
    );
    println!("{:-<100}", "");
    let ours = dtask_samples();
    let theirs = dask_samples();
    if let Err(why) = &theirs {
        println!("*** Dask's side SKIPPED: {why} (pip install 'dask[distributed]') ***");
    }
    println!(
        "{:<32} {:>26} {:>26}   dtask vs Dask",
        "figure", "dtask", "Dask"
    );
    for (key, label, unit, more_is_better) in FIGURES {
        let (m, lo, hi) = spread(&ours[*key]);
        let mine = format!("{m:.1} [{lo:.1}, {hi:.1}]");
        let (theirs_text, ratio) = match theirs.as_ref().ok().and_then(|t| t.get(*key)) {
            Some(samples) => {
                let (d, dlo, dhi) = spread(samples);
                let ratio = if *more_is_better { m / d } else { d / m };
                (
                    format!("{d:.1} [{dlo:.1}, {dhi:.1}]"),
                    format!(
                        "{ratio:.1}x {}",
                        if ratio >= 1.0 { "better" } else { "worse" }
                    ),
                )
            }
            None => ("-".to_string(), "-".to_string()),
        };
        println!(
            "{:<32} {:>26} {:>26}   {ratio}",
            format!("{label} ({unit})"),
            mine,
            theirs_text
        );
    }
    // Load balance: how far each side's median makespan is above the
    // ideal, the total work spread evenly over the 2 slots.
    let ideal = uneven_ms().iter().sum::<u64>() as f64 / 2e3;
    let over = |samples: &[f64]| (spread(samples).0 / ideal - 1.0) * 100.0;
    println!(
        "uneven tasks: total work / 2 slots = {ideal:.2} s; median makespan above it: dtask {:.1}%{}",
        over(&ours["uneven_s"]),
        match theirs.as_ref().ok().and_then(|t| t.get("uneven_s")) {
            Some(s) => format!(", Dask {:.1}%", over(s)),
            None => String::new(),
        }
    );
}
