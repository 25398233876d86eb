//! `dtask workers`: the connected workers.

use super::{Failure, Global, connect};
use std::io::Write;

/// List the connected workers: id, address, slots, tasks processing (and
/// of those, executing), results held and their bytes (and of those,
/// bytes spilled to disk), resources.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  dtask workers --json")]
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
                "resources": w.resources.iter().map(|(n, v)| (n.clone(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
            })
            .to_string()
        } else {
            format!(
                "{}\t{}\tnthreads={}\tprocessing={}\texecuting={}\tholding={}\tnbytes={}\tspilled={}\t{}",
                w.id,
                w.address,
                w.nthreads,
                w.processing,
                w.executing,
                w.holding,
                w.nbytes,
                w.spilled_bytes,
                resources.join(",")
            )
        };
        writeln!(out, "{line}").map_err(Failure::write)?;
    }
    Ok(())
}
