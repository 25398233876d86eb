//! `dtask cancel`: stop futures and their dependents.

use super::{Failure, Global, connect, keys_from};

/// Cancel futures: pending ones and their pending dependents become
/// `cancelled`, and running ones are interrupted (within one 10 ms epoch
/// tick), not left to finish. Keys other clients also hold are only released
/// for this client unless --force.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask cancel spin-3f1a…\n\nExit status: 0 done, 2 usage or bad input, 3 cannot reach or authenticate to the scheduler."
)]
pub struct Args {
    /// Cancel even keys that other clients hold.
    #[arg(long)]
    force: bool,
    /// Keys (default: read from stdin).
    keys: Vec<String>,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    let keys = keys_from(a.keys)?;
    let client = connect(global, false).await?;
    client.cancel(keys, a.force)?;
    client.close().await?;
    Ok(())
}
