//! `dtask shutdown`: stop the scheduler and its workers.

use super::{Failure, Global, connect};
use dtask_runtime::config::{self, Resolved};
use dtask_runtime::local;

/// Stop the scheduler and all its workers: the local default cluster, or
/// the one --scheduler names.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask shutdown\n\nExit status: 0 stopped (or nothing was running), 3 cannot reach or authenticate to the scheduler."
)]
pub struct Args {}

pub async fn run(global: &Global, _a: Args) -> Result<(), Failure> {
    let local = matches!(
        config::resolve(global.scheduler.as_deref()).map_err(Failure::usage)?,
        Resolved::LocalDefault
    );
    if local
        && local::retire_other_version()
            .await
            .map_err(|e| Failure::new(3, e))?
    {
        return Ok(());
    }
    if local && local::running().await.is_none() {
        eprintln!("dtask: no local cluster is running");
        return Ok(());
    }
    let client = connect(global, false).await?;
    client.shutdown().await?;
    if local {
        // Return once the cluster has really stopped (it removes its
        // record last), so a following command never finds it half-gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while local::read_record().is_some() {
            if std::time::Instant::now() > deadline {
                return Err(Failure::new(
                    4,
                    "the local cluster did not stop within 10 s",
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    Ok(())
}
