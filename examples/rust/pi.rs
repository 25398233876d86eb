//! A Monte Carlo estimate of pi with dtask's Rust client: map sampling tasks,
//! take results as they complete, stop once enough points are in, and cancel
//! the rest.
//!
//! ```sh
//! cargo run --release --example pi -- "$(cargo run -q --release -p dtask-guests)"
//! ```
//!
//! It connects to `DTASK_SCHEDULER` or `dtask.toml`'s scheduler if one is
//! configured; otherwise it runs a cluster inside itself for as long as it
//! runs (`Client::from_env`), so it needs nothing running and leaves
//! nothing running.

use dtask_runtime::client::{Client, ClientError, SubmitOptions};
use dtask_runtime::module::LocalModule;
use dtask_runtime::protocol::Arg;
use dtask_runtime::value::{Value, encode};

fn arg(v: impl Into<Value>) -> Arg {
    Arg::Value(encode(&v.into()).into())
}

/// Samples `per_task` points in each of up to `tasks` tasks until `wanted`
/// points are in; returns the estimate and the points used.
pub async fn estimate(
    client: &Client,
    tasks_wasm: &LocalModule,
    tasks: u64,
    per_task: u32,
    wanted: u64,
) -> Result<(f64, u64), ClientError> {
    let calls = (0..tasks)
        .map(|seed| vec![arg(seed), arg(per_task)])
        .collect();
    let futures = client
        .map(tasks_wasm, "pi-hits", calls, &SubmitOptions::default())
        .await?;
    let keys: Vec<String> = futures.iter().map(|f| f.key().to_string()).collect();
    let mut completed = client.as_completed(futures);
    let (mut hits, mut points) = (0u64, 0u64);
    while let Some((_, result)) = completed.next_with_result().await {
        hits += result?.as_u64().unwrap_or(0);
        points += u64::from(per_task);
        if points >= wanted {
            break;
        }
    }
    // The rest is not needed: stop it (dropping the futures releases them).
    client.cancel(keys, false)?;
    Ok((4.0 * hits as f64 / points as f64, points))
}

#[cfg_attr(test, allow(dead_code))]
#[tokio::main]
async fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: pi TASKS_WASM");
        std::process::exit(2);
    };
    let run = async {
        let module = LocalModule::load(path.as_ref()).map_err(ClientError::Invalid)?;
        let client = Client::from_env(None).await?;
        let estimate = estimate(&client, &module, 200, 100_000, 2_000_000).await?;
        // The cancel and releases go out in the background: wait until the
        // scheduler has them before the program ends.
        client.close().await?;
        Ok::<_, ClientError>(estimate)
    };
    match run.await {
        Ok((pi, points)) => println!("pi ~ {pi:.4} from {points} points"),
        Err(e) => {
            eprintln!("pi: error: {e}");
            std::process::exit(1);
        }
    }
}
