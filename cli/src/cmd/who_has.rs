//! `dtask who-has`: which workers hold results.

use super::{Failure, Global, connect, keys_from};
use std::io::Write;

/// Print, for each key, the data addresses of the workers holding its
/// result (tab-separated; nothing after the key if none does). A small
/// result (1 KiB or less) lives at the scheduler, on no worker; `dtask
/// status --json` says where it ran.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask who-has inc-5c1e…        # inc-5c1e…\t127.0.0.1:40121\n\nExit status: 0 done, 2 usage or bad input, 3 cannot reach or authenticate to the scheduler."
)]
pub struct Args {
    /// One JSON object per line: {"key": …, "workers": […]}.
    #[arg(long)]
    json: bool,
    /// Keys (default: read from stdin).
    keys: Vec<String>,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    let keys = keys_from(a.keys)?;
    let client = connect(global, false).await?;
    // Keys the scheduler does not know are named on stderr: their empty
    // lines look like those of small results, held at the scheduler.
    let why = "no worker holds it (never submitted, or released)";
    super::note_unknown(&client, &keys, why).await?;
    let mut out = std::io::stdout().lock();
    for (key, addrs) in client.who_has(keys).await? {
        let line = if a.json {
            serde_json::json!({"key": key, "workers": addrs}).to_string()
        } else {
            std::iter::once(key)
                .chain(addrs)
                .collect::<Vec<_>>()
                .join("\t")
        };
        writeln!(out, "{line}").map_err(Failure::write)?;
    }
    Ok(())
}
