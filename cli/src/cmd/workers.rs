//! `dtask workers`: the connected workers.

use super::{Failure, Global, connect};
use std::io::Write;

/// List the connected workers: id, address, slots, tasks processing (and
/// of those, executing), results held and their bytes (and of those,
/// bytes spilled to disk), the memory limit per task in MiB, how many
/// times a worker died and was started again in its place, resources;
/// with --json also the instances in use (`instances_pooled`, and
/// `instances_on_demand` past the pool) and whether all are held
/// (`instances_full`: it takes no new tasks until one is free).
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask workers --json\n\nExit status: 0 done, 2 usage or bad input, 3 cannot reach or authenticate to the scheduler."
)]
pub struct Args {
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    let client = connect(global, false).await?;
    let mut out = std::io::stdout().lock();
    for w in client.workers().await? {
        let resources: Vec<String> = w
            .resources
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        let line = if a.json {
            serde_json::json!({
                "id": w.id, "name": w.name, "address": w.address, "nthreads": w.nthreads,
                "processing": w.processing, "executing": w.executing, "holding": w.holding, "nbytes": w.nbytes, "spilled_bytes": w.spilled_bytes,
                "memory_limit_mib": w.memory_limit >> 20, "restarts": w.restarts,
                "rss_bytes": w.rss_bytes, "fetched": w.fetched, "fetched_bytes": w.fetched_bytes,
                "instances_full": w.instances_full, "instances_pooled": w.instances_pooled,
                "instances_on_demand": w.instances_on_demand,
                "resources": w.resources.iter().map(|(n, v)| (n.clone(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
            })
            .to_string()
        } else {
            format!(
                "{}\t{}\tnthreads={}\tprocessing={}\texecuting={}\tholding={}\tnbytes={}\tspilled={}\tmemory-limit-mib={}\trestarts={}\t{}",
                w.id,
                w.address,
                w.nthreads,
                w.processing,
                w.executing,
                w.holding,
                w.nbytes,
                w.spilled_bytes,
                w.memory_limit >> 20,
                w.restarts,
                resources.join(",")
            )
        };
        writeln!(out, "{line}").map_err(Failure::write)?;
    }
    Ok(())
}
