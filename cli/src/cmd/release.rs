//! `dtask release`: stop holding keys.

use super::{Failure, Global, connect, keys_from};

/// Stop holding futures for this client (`DTASK_CLIENT`, default
/// `default`); a result nobody holds or needs is freed on the workers.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  dtask release inc-5c1e…")]
pub struct Args {
    /// Keys (default: read from stdin).
    keys: Vec<String>,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    let keys = keys_from(a.keys)?;
    let client = connect(global, false).await?;
    client.release(keys)?;
    // A status round trip makes sure the release was processed.
    client.status(Vec::new()).await?;
    Ok(())
}
