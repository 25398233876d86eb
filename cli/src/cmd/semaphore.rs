//! `dtask semaphore`: global counting semaphores.

use super::{Failure, Global, connect, on_timeout, parse_duration};
use std::time::Duration;

/// Global semaphores, shared by every client and task: at most
/// `--max-leases` holders at a time, e.g. to bound how many jobs use a
/// database at once.
///
/// A lease taken here belongs to this client (`DTASK_CLIENT`, default
/// `default`), not to the command: it stays taken after `dtask semaphore
/// acquire` exits, until `dtask semaphore release` from the same client
/// name. One client may hold several leases.
///
/// Exit status: 0 done, 2 refused (another --max-leases for an existing
/// semaphore, none for a new one, or releasing a lease this client does
/// not hold), 3 no scheduler, 4 the timeout passed before a lease was
/// free.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask semaphore acquire db --max-leases 4 --timeout 1m && {\n    load.sh\n    dtask semaphore release db\n  }"
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

/// Take one lease, waiting while all are taken.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask semaphore acquire gpu --max-leases 2 --timeout 30s\n\nExit status: 0 a lease acquired, 2 refused (another --max-leases for an existing semaphore, none for a new one), 3 no scheduler, 4 the timeout passed before a lease was free."
)]
struct AcquireArgs {
    /// Semaphore name.
    name: String,
    /// How many leases the semaphore has. The first acquire creates it with
    /// this number (and must give it); a later one may leave it out, or
    /// must give the same (else exit 2).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_leases: Option<u32>,
    /// Give up after this long while all leases are taken (exit 4), e.g.
    /// `30s`.
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    timeout: Option<Duration>,
}

/// Give back one lease this client holds (exit 2 if it holds none).
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask semaphore release gpu\n\nExit status: 0 released, 2 this client holds no lease, 3 no scheduler."
)]
struct ReleaseArgs {
    /// Semaphore name.
    name: String,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    match a.command {
        Verb::Acquire(a) => {
            let client = connect(global, true).await?;
            // 0: the existing semaphore's count.
            client
                .semaphore(&a.name, a.max_leases.unwrap_or(0))
                .acquire(a.timeout)
                .await
                .map_err(|e| {
                    on_timeout(e, |t| {
                        format!(
                            "all leases of semaphore {} are still taken after {t:?}",
                            a.name
                        )
                    })
                })
        }
        Verb::Release(a) => {
            let client = connect(global, false).await?;
            // Releasing needs no lease count; the scheduler knows it.
            Ok(client.semaphore(&a.name, 1).release().await?)
        }
    }
}
