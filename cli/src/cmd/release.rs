//! `dtask release`: stop holding keys.

use super::{Failure, Global, connect, keys_from};

/// Stop holding futures for this client (`DTASK_CLIENT`, default
/// `default`); a result nobody holds or needs is freed on the workers.
/// Keys the shell submits are held until released: `dtask info` shows how
/// many are held, and `release --all` lets go of all of them.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  dtask release inc-5c1e…\n  dtask release --all\n\nExit status: 0 done, 2 usage or bad input, 3 cannot reach or authenticate to the scheduler."
)]
pub struct Args {
    /// Every key this client name holds.
    #[arg(long, conflicts_with = "keys")]
    all: bool,
    /// Keys (default: read from stdin).
    keys: Vec<String>,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    if a.all {
        let client = connect(global, false).await?;
        client.release_all()?;
        client.close().await?;
        return Ok(());
    }
    let keys = keys_from(a.keys)?;
    let client = connect(global, false).await?;
    // Keys the scheduler does not know (a typo, or released already) are
    // named on stderr: releasing stays idempotent, but not silent.
    let why = "nothing to release there (never submitted, or released already)";
    super::note_unknown(&client, &keys, why).await?;
    client.release(keys)?;
    // Waits until the release was processed.
    client.close().await?;
    Ok(())
}
