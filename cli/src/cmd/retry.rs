//! `dtask retry`: run erred futures again.

use super::task_options::LimitFlags;
use super::{Failure, Global, connect, keys_from};

/// Run erred or cancelled futures again: an erred one from the task where
/// its error started (dependents that inherited the error run again too),
/// a cancelled one once its inputs can be had. Limits given here replace
/// those the tasks were submitted with.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  dtask retry flaky-09c2…\n  dtask retry --timeout 10m --memory-limit-mib 512 slow-41aa…\n\nExit status: 0 the keys run again, 2 a key has neither erred nor been cancelled, is unknown, has a cancelled input, or asks for more memory than any worker allows, 3 no scheduler."
)]
pub struct Args {
    #[command(flatten)]
    limits: LimitFlags,
    /// Keys (default: read from stdin).
    keys: Vec<String>,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    let keys = keys_from(a.keys)?;
    let client = connect(global, false).await?;
    client.retry_with(keys, a.limits.task_limits()).await?;
    Ok(())
}
