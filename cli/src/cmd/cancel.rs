//! `dtask cancel`: stop futures and their dependents.

use super::{Failure, Global, connect, keys_from};
use dtask_runtime::protocol::TaskState;

/// Cancel futures: pending ones and their pending dependents become
/// `cancelled`, and running ones are interrupted (within one 10 ms epoch
/// tick), not left to finish. Keys other clients also hold, and keys that
/// work other clients hold depends on, are only released for this client
/// unless --force.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask cancel spin-3f1a…\n\nExit status: 0 done (a key left running is named on stderr), 2 usage or bad input (a key the scheduler does not know), 3 cannot reach or authenticate to the scheduler."
)]
pub struct Args {
    /// Cancel even keys that other clients hold (or whose dependents they
    /// hold: those are cancelled too).
    #[arg(long)]
    force: bool,
    /// Keys (default: read from stdin).
    keys: Vec<String>,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    let keys = keys_from(a.keys)?;
    let client = connect(global, false).await?;
    client.cancel(keys.clone(), a.force)?;
    // What came of it, said on stderr: a key left running (others hold
    // it) or one the scheduler does not know.
    let mut unknown = Vec::new();
    let mut running = Vec::new();
    for chunk in keys.chunks(4096) {
        for (key, state) in client.status(chunk.to_vec()).await? {
            match state {
                None => unknown.push(key),
                Some(TaskState::Pending | TaskState::NoWorker | TaskState::Processing) => {
                    running.push(key)
                }
                Some(_) => {}
            }
        }
    }
    client.close().await?;
    if let Some(first) = running.first() {
        eprintln!(
            "dtask: note: {first}{} not cancelled: it is held elsewhere (by other clients, or \
             by other submits under this client name), work other clients hold depends on it, \
             or it was not held here; this client let go of its hold, if it had one; `dtask \
             cancel --force` cancels it anyway (and what depends on it)",
            super::and_more(running.len())
        );
    }
    match unknown.first() {
        Some(first) => Err(Failure::usage(format!(
            "the scheduler does not know {first}{}: nothing to cancel there (never \
             submitted, or released)",
            super::and_more(unknown.len())
        ))),
        None => Ok(()),
    }
}
