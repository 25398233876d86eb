//! `dtask event`: global events (flags to wait on).

use super::{Failure, Global, connect, on_timeout, parse_duration};
use std::io::Write;
use std::time::Duration;

/// Global events, shared by every client and task: a flag that is set or
/// clear, and that `wait` blocks on until it is set.
///
/// Exit status: 0 done, 3 no scheduler, 4 the timeout passed before the
/// event was set.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask event wait data-ready --timeout 10m && dtask submit tasks.wasm process data\n  # elsewhere, once the data is in place:\n  dtask event set data-ready"
)]
pub struct Args {
    #[command(subcommand)]
    command: Verb,
}

#[derive(clap::Subcommand)]
enum Verb {
    /// Set the event, waking everyone waiting on it.
    #[command(
        after_help = "Example:\n  dtask event set ready\n\nExit status: 0 done, 2 usage or bad input, 3 cannot reach or authenticate to the scheduler."
    )]
    Set(NameArgs),
    /// Clear the event, so that later waits block until it is set again.
    #[command(
        after_help = "Example:\n  dtask event clear ready\n\nExit status: 0 done, 2 usage or bad input, 3 cannot reach or authenticate to the scheduler."
    )]
    Clear(NameArgs),
    Wait(WaitArgs),
    /// Print `true` if the event is set, else `false`.
    #[command(
        after_help = "Example:\n  dtask event is-set ready      # true\n\nExit status: 0 done, 2 usage or bad input, 3 cannot reach or authenticate to the scheduler."
    )]
    IsSet(NameArgs),
}

#[derive(clap::Args)]
struct NameArgs {
    /// Event name.
    name: String,
}

/// Wait until the event is set (at once if it already is).
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask event wait ready --timeout 30s\n\nExit status: 0 the event is set, 3 no scheduler, 4 the timeout passed before it was set."
)]
struct WaitArgs {
    /// Event name.
    name: String,
    /// Give up after this long while it is clear (exit 4), e.g. `30s`.
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    timeout: Option<Duration>,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    match a.command {
        Verb::Set(a) => {
            let client = connect(global, true).await?;
            Ok(client.event(&a.name).set().await?)
        }
        Verb::Clear(a) => {
            let client = connect(global, false).await?;
            Ok(client.event(&a.name).clear().await?)
        }
        Verb::Wait(a) => {
            let client = connect(global, true).await?;
            client.event(&a.name).wait(a.timeout).await.map_err(|e| {
                on_timeout(e, |t| {
                    format!("event {} is still clear after {t:?}", a.name)
                })
            })
        }
        Verb::IsSet(a) => {
            let client = connect(global, false).await?;
            let set = client.event(&a.name).is_set().await?;
            writeln!(std::io::stdout(), "{set}").map_err(Failure::write)
        }
    }
}
