//! `dtask wait`: block until futures are done.

use super::{Failure, Global, connect, keys_from, parse_duration};
use dtask_runtime::protocol::Outcome;
use std::collections::HashSet;
use std::time::Duration;

/// Wait until all the futures (or with --first, any one) are done, whether
/// they finished or failed.
///
/// Exit status: 0 all done ones finished, 1 one erred or was cancelled,
/// 4 the timeout passed first.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  dtask wait --timeout 30s $(cat keys.txt)")]
pub struct Args {
    /// Return when the first one is done.
    #[arg(long)]
    first: bool,
    /// Give up after this long (exit 4), e.g. `10s`: reading the keys and
    /// connecting included.
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    timeout: Option<Duration>,
    /// Keys (default: read from stdin).
    keys: Vec<String>,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    // The timeout covers the whole command: reading the keys and
    // connecting (a scheduler being restarted is waited for) too.
    let deadline = a.timeout.map(|t| tokio::time::Instant::now() + t);
    let before = |what: &str| {
        Failure::new(
            4,
            format!("timed out after {:?} {what}", a.timeout.unwrap_or_default()),
        )
    };
    // Read on a thread of its own, which the process leaves behind if the
    // deadline passes first (stdin may never end).
    let (sent, read) = tokio::sync::oneshot::channel();
    let args = a.keys;
    std::thread::spawn(move || {
        let _ = sent.send(keys_from(args));
    });
    let keys = within(deadline, read)
        .await
        .ok_or_else(|| before("while reading keys from stdin"))?
        .map_err(|_| Failure::usage("cannot read keys from stdin"))??;
    let client = within(deadline, connect(global, false))
        .await
        .ok_or_else(|| before("while connecting to the scheduler"))??;
    let wanted: HashSet<String> = keys.iter().cloned().collect();
    // Watched a window at a time (see WATCH_WINDOW), topped up as they end.
    let mut unwatched: Vec<String> = wanted.iter().cloned().collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let first = unwatched.split_off(unwatched.len().saturating_sub(super::WATCH_WINDOW));
    client.watch_into(first, &tx)?;
    let mut seen = HashSet::new();
    let mut failure: Option<Failure> = None;
    let progress =
        super::progress::Progress::new("wait", if a.first { 1 } else { wanted.len() as u64 });
    while seen.len() < wanted.len() {
        let recv = super::next_or_lost(&client, &mut rx);
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, recv).await {
                Ok(n) => n,
                Err(_) => {
                    return Err(Failure::new(
                        4,
                        format!(
                            "timed out after {:?} with {} of {} futures done",
                            a.timeout.unwrap_or_default(),
                            seen.len(),
                            wanted.len()
                        ),
                    ));
                }
            },
            None => recv.await,
        };
        let (key, outcome) = next.ok_or_else(|| client.lost_error())?;
        if let Some(k) = unwatched.pop() {
            client.watch_into(vec![k], &tx)?;
        }
        match &outcome {
            Outcome::Finished(_) => {}
            Outcome::Error(e) => failure = failure.or(Some(Failure::task(&key, e))),
            Outcome::Cancelled => {
                failure = failure.or(Some(Failure::new(1, format!("{key} was cancelled"))))
            }
            Outcome::Unknown => {
                return Err(Failure::usage(format!(
                    "unknown key {key}: never submitted, or released"
                )));
            }
        }
        seen.insert(key);
        progress.inc(1);
        if a.first {
            break;
        }
    }
    failure.map_or(Ok(()), Err)
}

/// `work`'s output, or `None` if `deadline` passes first.
async fn within<T>(
    deadline: Option<tokio::time::Instant>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, work).await.ok(),
        None => Some(work.await),
    }
}
