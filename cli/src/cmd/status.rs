//! `dtask status`: the state of futures.

use super::{Failure, Global, connect, keys_from};
use dtask_runtime::protocol::{Outcome, TaskState};
use std::io::Write;

/// Print the state of each future: pending, no-worker (ready, but no
/// connected worker can run it; the reason follows), processing, finished,
/// error, cancelled, lost (or unknown if the scheduler does not know the
/// key).
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask status inc-5c1e…        # inc-5c1e…\tfinished\n\nExit status: 0 done, 2 usage or bad input, 3 cannot reach or authenticate to the scheduler."
)]
pub struct Args {
    /// One JSON object per line: {"key": …, "status": …, "submitted",
    /// "started", "finished" (RFC 3339, null until then), "duration_s",
    /// "worker" (where it runs or ran, while known), "retries"}, for an
    /// erred key its "error", "kind" and "origin", for a no-worker key its
    /// "reason".
    #[arg(long)]
    json: bool,
    /// Keys (default: read from stdin).
    keys: Vec<String>,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    let keys = keys_from(a.keys)?;
    let client = connect(global, false).await?;
    let (states, reasons, timings) = match a.json {
        true => client.status_with_timings(keys).await?,
        false => {
            let (states, reasons) = client.status_with_reasons(keys).await?;
            (states, reasons, Default::default())
        }
    };
    // For --json, an erred key also says how it failed: its outcome is
    // known, so watching it answers at once.
    let mut errors = std::collections::HashMap::new();
    if a.json {
        let erred: Vec<String> = states
            .iter()
            .filter(|(_, s)| *s == Some(TaskState::Error))
            .map(|(k, _)| k.clone())
            .collect();
        if !erred.is_empty() {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let n = erred.len();
            client.watch_into(erred, &tx)?;
            for _ in 0..n {
                let Some((key, outcome)) = super::next_or_lost(&client, &mut rx).await else {
                    return Err(client.lost_error().into());
                };
                if let Outcome::Error(e) = outcome {
                    errors.insert(key, e);
                }
            }
        }
    }
    let mut out = std::io::stdout().lock();
    for (key, state) in states {
        let name = state.map_or("unknown", |s| s.name());
        let line = if a.json {
            let mut l = serde_json::json!({"key": key, "status": name});
            if let Some(t) = timings.get(&key) {
                let at = |ms: Option<u64>| ms.map(rfc3339);
                l["submitted"] = at(t.submitted_ms).into();
                l["started"] = at(t.started_ms).into();
                l["finished"] = at(t.finished_ms).into();
                l["duration_s"] = match (t.started_ms, t.finished_ms) {
                    (Some(s), Some(f)) if f >= s => Some((f - s) as f64 / 1e3),
                    _ => None,
                }
                .into();
                l["worker"] = t.worker.clone().into();
                l["retries"] = t.retries.into();
            }
            if let Some(r) = reasons.get(&key) {
                l["reason"] = r.clone().into();
            }
            if let Some(e) = errors.get(&key) {
                l["error"] = e.message.clone().into();
                l["kind"] = e.kind.name().into();
                l["origin"] = e.origin.clone().into();
            }
            l.to_string()
        } else if let Some(r) = reasons.get(&key) {
            format!("{key}\t{name}\t{r}")
        } else {
            format!("{key}\t{name}")
        };
        writeln!(out, "{line}").map_err(Failure::write)?;
    }
    Ok(())
}

/// `ms` since the Unix epoch as an RFC 3339 time (UTC, milliseconds).
fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}
