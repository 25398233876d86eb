//! `dtask as-completed`: keys in the order their tasks end.

use super::{Failure, Frame, Global, connect, render, write_streamed};
use dtask_runtime::client::ClientError;
use dtask_runtime::protocol::Outcome;
use dtask_runtime::value::{self, Value};
use std::collections::HashMap;
use std::io::Write;
use tokio::sync::mpsc;

/// Print each key as its task ends (finished, erred or cancelled), in the
/// order they end; with --with-results, the key and its result.
///
/// Keys come from the arguments, or else stream from stdin (so
/// `dtask map … | dtask as-completed` starts printing before map is done).
/// Exit status 1 if any task failed (or a finished result could not be
/// fetched, with `--with-results` or `--json`), 4 if `--timeout` passed first.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  seq 100 | dtask map tasks.wasm inc | dtask as-completed --with-results\n  dtask as-completed $(cat keys) | head -1"
)]
pub struct Args {
    /// Print `KEY<TAB>RESULT` (result as JSON, or raw with -r).
    #[arg(long)]
    with_results: bool,
    /// With --with-results: strings and bytes raw.
    #[arg(short, long, requires = "with_results")]
    raw: bool,
    /// One JSON object per line: key, status, and result or error.
    #[arg(long, conflicts_with = "raw")]
    json: bool,
    /// Give up after this long (exit 4), e.g. `30s`; keys printed by then
    /// stay printed.
    #[arg(long, value_parser = super::parse_duration, value_name = "DUR")]
    timeout: Option<std::time::Duration>,
    /// Keys (default: read from stdin).
    keys: Vec<String>,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    let timeout = a.timeout;
    super::within(
        timeout,
        "not every task had finished",
        "the tasks go on: ask again later, or see `dtask status`",
        as_completed(global, a),
    )
    .await
}

async fn as_completed(global: &Global, mut a: Args) -> Result<(), Failure> {
    let mut key_rx = super::key_stream(std::mem::take(&mut a.keys));
    key_rx.first().await;
    let client = connect(global, false).await?;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut waiting: HashMap<String, usize> = HashMap::new();
    let mut keys_open = true;
    let mut failed = 0usize;
    // Finished tasks whose results could not be fetched, and why the
    // first could not.
    let mut unfetched_count = 0usize;
    let mut cannot_fetch: Option<String> = None;
    let mut out = std::io::stdout().lock();
    let progress = super::progress::Progress::new("as-completed", 0);
    while keys_open || !waiting.is_empty() {
        tokio::select! {
            k = key_rx.recv(), if keys_open && waiting.len() < super::WATCH_WINDOW => match k? {
                Some(k) => {
                    progress.add_total(1);
                    let n = waiting.entry(k.clone()).or_insert(0);
                    *n += 1;
                    if *n == 1 && (a.with_results || a.json) {
                        client.watch_reading_into(vec![k], &done_tx)?;
                    } else if *n == 1 {
                        client.watch_into(vec![k], &done_tx)?;
                    }
                }
                None => keys_open = false,
            },
            () = client.lost() => return Err(client.lost_error().into()),
            d = done_rx.recv() => {
                let (key, outcome) = d.ok_or_else(|| client.lost_error())?;
                let times = waiting.remove(&key).unwrap_or(1);
                if matches!(outcome, Outcome::Unknown) {
                    return Err(Failure::usage(format!("unknown key {key}: never submitted, or released")));
                }
                let ok = matches!(outcome, Outcome::Finished(_));
                if !ok {
                    failed += times;
                }
                progress.inc(times as u64);
                // A big byte string or string is written out as it arrives,
                // never held whole (fetched again for a key given twice).
                if let Outcome::Finished(at) = &outcome
                    && at.inline.is_none()
                    && (a.with_results || a.json)
                {
                    let frame = if a.json {
                        Frame::json_line(&key)
                    } else {
                        Frame::after(&format!("{key}\t"))
                    };
                    let raw = a.raw && !a.json;
                    for _ in 0..times {
                        let result =
                            match write_streamed(&client, &key, at, &mut out, &progress, raw, &frame).await? {
                                Ok(None) => continue,
                                Ok(Some(v)) => Ok(v),
                                Err(e) => {
                                    cannot_fetch.get_or_insert(e.to_string());
                                    unfetched_count += 1;
                                    Err(e)
                                }
                            };
                        let line = line(&key, "finished", result, &a);
                        progress
                            .suspend(|| out.write_all(&line).and_then(|()| out.write_all(b"\n")))
                            .map_err(Failure::write)?;
                    }
                    client.read_over(&key);
                    progress.suspend(|| out.flush()).map_err(Failure::write)?;
                    continue;
                }
                let (line, unfetched) = resolved_line(&client, &key, outcome, &a).await;
                if let Some(why) = unfetched {
                    cannot_fetch.get_or_insert(why);
                    unfetched_count += times;
                }
                for _ in 0..times {
                    progress
                        .suspend(|| {
                            out.write_all(&line)
                                .and_then(|()| out.write_all(b"\n"))
                                .and_then(|()| out.flush())
                        })
                        .map_err(Failure::write)?;
                }
            }
        }
    }
    if failed > 0 {
        return Err(Failure::new(
            1,
            format!("{failed} task(s) failed or were cancelled"),
        ));
    }
    if let Some(why) = cannot_fetch {
        return Err(Failure::new(
            1,
            format!(
                "{unfetched_count} finished result(s) could not be fetched (the first: {why}); \
                 gather them again with `dtask gather`, or see where they are with `dtask who-has`"
            ),
        ));
    }
    Ok(())
}

/// The line to print for `key`, and why its result could not be fetched
/// if it finished and that failed.
async fn resolved_line(
    client: &dtask_runtime::client::Client,
    key: &str,
    outcome: Outcome,
    a: &Args,
) -> (Vec<u8>, Option<String>) {
    let status = match &outcome {
        Outcome::Finished(_) => "finished",
        Outcome::Error(_) => "error",
        Outcome::Cancelled => "cancelled",
        Outcome::Unknown => "unknown",
    };
    if !a.with_results && !a.json {
        return (key.as_bytes().to_vec(), None);
    }
    let finished = matches!(outcome, Outcome::Finished(_));
    let result = client.resolve(key, outcome).await;
    let unfetched = match &result {
        Err(e) if finished => Some(e.to_string()),
        _ => None,
    };
    (line(key, status, result, a), unfetched)
}

/// The line to print for `key`, which came to `status` and `result`, with
/// `--with-results` or `--json`.
fn line(key: &str, status: &str, result: Result<Value, ClientError>, a: &Args) -> Vec<u8> {
    if a.json {
        let mut obj = serde_json::json!({"key": key, "status": status});
        match result {
            Ok(v) => obj["result"] = value::value_to_json(&v),
            Err(e) => obj["error"] = serde_json::Value::String(e.to_string()),
        }
        return obj.to_string().into_bytes();
    }
    let mut line = format!("{key}\t").into_bytes();
    match result {
        Ok(v) => line.extend(render(&v, a.raw)),
        Err(e) => line.extend(format!("error: {e}").into_bytes()),
    }
    line
}
