//! `dtask status`: the state of futures.

use super::{Failure, Global, connect, keys_from};
use std::io::Write;

/// Print the state of each future: pending, processing, finished, error,
/// cancelled, lost (or unknown if the scheduler does not know the key).
#[derive(clap::Args)]
#[command(after_help = "Example:\n  dtask status inc-5c1e…        # inc-5c1e…\tfinished")]
pub struct Args {
    /// One JSON object per line: {\"key\": …, \"status\": …}.
    #[arg(long)]
    json: bool,
    /// Keys (default: read from stdin).
    keys: Vec<String>,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    let keys = keys_from(a.keys)?;
    let client = connect(global, false).await?;
    let states = client.status(keys).await?;
    let mut out = std::io::stdout().lock();
    for (key, state) in states {
        let name = state.map_or("unknown", |s| s.name());
        let line = if a.json {
            serde_json::json!({"key": key, "status": name}).to_string()
        } else {
            format!("{key}\t{name}")
        };
        writeln!(out, "{line}").map_err(Failure::write)?;
    }
    Ok(())
}
