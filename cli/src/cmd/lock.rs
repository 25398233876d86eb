//! `dtask lock`: global mutual-exclusion locks.

use super::{Failure, Global, connect, on_timeout, parse_duration};
use std::time::Duration;

/// Global locks, shared by every client and task.
///
/// A lock taken here belongs to this client (`DTASK_CLIENT`, default
/// `default`), not to the command: it stays held after `dtask lock acquire`
/// exits, until `dtask lock release` from the same client name. Locks are
/// not reentrant: acquiring one you hold waits like anyone else.
///
/// Exit status: 0 done, 2 refused (releasing a lock this client does not
/// hold), 3 no scheduler, 4 the timeout passed before the lock was free.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask lock acquire db --timeout 30s && {\n    migrate.sh\n    dtask lock release db\n  }"
)]
pub struct Args {
    #[command(subcommand)]
    command: Verb,
}

#[derive(clap::Subcommand)]
enum Verb {
    Acquire(AcquireArgs),
    Release(ReleaseArgs),
}

/// Take a lock, waiting while another holds it.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  DTASK_CLIENT=job-7 dtask lock acquire db --timeout 10s\n\nExit status: 0 acquired, 3 no scheduler, 4 the timeout passed before the lock was free."
)]
struct AcquireArgs {
    /// Lock name.
    name: String,
    /// Give up after this long while it is held (exit 4), e.g. `10s`.
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    timeout: Option<Duration>,
}

/// Give back a lock this client holds (exit 2 if it does not hold it).
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  DTASK_CLIENT=job-7 dtask lock release db\n\nExit status: 0 released, 2 this client does not hold it, 3 no scheduler."
)]
struct ReleaseArgs {
    /// Lock name.
    name: String,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    match a.command {
        Verb::Acquire(a) => {
            let client = connect(global, true).await?;
            client.lock(&a.name).acquire(a.timeout).await.map_err(|e| {
                on_timeout(e, |t| format!("lock {} is still held after {t:?}", a.name))
            })
        }
        Verb::Release(a) => {
            let client = connect(global, false).await?;
            Ok(client.lock(&a.name).release().await?)
        }
    }
}
