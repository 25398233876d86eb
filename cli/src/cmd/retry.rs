//! `dtask retry`: run erred futures again.

use super::{Failure, Global, connect, keys_from};

/// Run erred futures again, starting from the tasks where their errors
/// started; dependents that inherited the error run again too.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  dtask retry flaky-09c2…")]
pub struct Args {
    /// Keys (default: read from stdin).
    keys: Vec<String>,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    let keys = keys_from(a.keys)?;
    let client = connect(global, false).await?;
    client.retry(keys).await?;
    Ok(())
}
