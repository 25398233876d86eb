//! `dtask info`: the cluster in one JSON object.

use super::{Failure, Global, connect};
use dtask_runtime::config::{self, Resolved};

/// Print the cluster as one JSON object: scheduler address and where it
/// came from, workers and total slots, keys known and keys held by named
/// clients (the shell's until `dtask release`), task runs sent and reruns
/// after worker deaths, runs sent again to workers that never got them, tasks an idle worker
/// took from a busy one's queue (work stealing), bytes workers spilled to disk, the scheduler's memory, its dashboard's
/// URL, and its journal (bytes and records written, and any problem
/// writing it).
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask info | jq .nthreads\n\nExit status: 0 done, 2 usage or bad input, 3 cannot reach or authenticate to the scheduler."
)]
pub struct Args {}

pub async fn run(global: &Global, _a: Args) -> Result<(), Failure> {
    let source = match config::resolve(global.scheduler.as_deref()).map_err(Failure::usage)? {
        Resolved::Configured(e) => serde_json::json!({"address": e.address, "source": e.source}),
        Resolved::LocalDefault => match dtask_runtime::local::running().await {
            Some(e) => serde_json::json!({"address": e.address, "source": e.source}),
            None => serde_json::Value::Null,
        },
    };
    let client = connect(global, false).await?;
    let workers = client.workers().await?;
    let (stats, health) = client.stats_and_health().await?;
    let info = serde_json::json!({
        "scheduler": source,
        "version": env!("CARGO_PKG_VERSION"),
        "workers": workers.len(),
        "nthreads": workers.iter().map(|w| w.nthreads).sum::<u32>(),
        "processing": workers.iter().map(|w| w.processing).sum::<usize>(),
        "holding": workers.iter().map(|w| w.holding).sum::<usize>(),
        "spilled_bytes": workers.iter().map(|w| w.spilled_bytes).sum::<u64>(),
        "tasks": stats.tasks,
        "dispatched": stats.dispatched,
        "reruns": stats.reruns,
        "resent": stats.resent,
        "stolen": health.stolen,
        "held": health.held,
        "scheduler_rss_bytes": health.rss_bytes,
        "dashboard": health
            .dashboard
            .map(|d| super::dashboard::base_url(&d, client.scheduler_address())),
        "journal": health.journal.map(|j| serde_json::json!({
            "dir": j.dir, "bytes": j.bytes, "records": j.records, "problem": j.problem,
        })),
    });
    println!("{info}");
    Ok(())
}
