//! `dtask var`: global variables.

use super::{Failure, Global, connect, item_from_word, on_timeout, parse_duration, print_item};
use std::time::Duration;

/// Global variables, shared by every client and task: one item each, a
/// plain value or a future (`@KEY`), which stays alive while stored.
///
/// Exit status: 0 done, 2 bad input or refused, 3 no scheduler, 4 the
/// timeout passed before the variable was set.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  dtask var set threshold 0.75\n  dtask var get threshold       # 0.75\n  dtask var set model @$(dtask submit tasks.wasm train data)\n  dtask var del threshold"
)]
pub struct Args {
    #[command(subcommand)]
    command: Verb,
}

#[derive(clap::Subcommand)]
enum Verb {
    Set(SetArgs),
    Get(GetArgs),
    Del(DelArgs),
}

/// Set a variable, replacing what it held and waking everyone waiting in
/// `dtask var get`.
///
/// VALUE is JSON if it parses (`42`, `"text"`, `[1,2]`, `{"a":1}`, `true`,
/// `null`), else the word as a string (`hello`); `@KEY` stores a future,
/// `@@…` a literal string `@…`, `-` reads the value from stdin.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  dtask var set mode fast\n  dtask var set config - < config.json\n  dtask var set latest @inc-5c1e…\n\nExit status: 0 set, 2 bad input or refused, 3 no scheduler."
)]
struct SetArgs {
    /// Variable name.
    name: String,
    /// The item: JSON, a bare word (a string), `@KEY` or `-` (stdin).
    #[arg(allow_hyphen_values = true)]
    value: String,
}

/// Print a variable, waiting until it is set.
///
/// A value prints as one JSON line (like `dtask gather`); a future prints
/// as its key, which this client (`DTASK_CLIENT`, default `default`) then
/// holds until `dtask release KEY`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  dtask var get mode\n  dtask var get mode --timeout 5s\n  dtask gather $(dtask var get latest)\n\nExit status: 0 the value printed, 3 no scheduler, 4 the timeout passed before it was set."
)]
struct GetArgs {
    /// Variable name.
    name: String,
    /// Give up after this long while it is unset (exit 4), e.g. `5s`.
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    timeout: Option<Duration>,
    /// Print a string or bytes value raw instead of as JSON.
    #[arg(short, long)]
    raw: bool,
}

/// Delete a variable (a stored future is released by it).
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask var del mode\n\nExit status: 0 done, 2 usage or bad input, 3 cannot reach or authenticate to the scheduler."
)]
struct DelArgs {
    /// Variable name.
    name: String,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    match a.command {
        Verb::Set(a) => {
            let item = item_from_word(&a.value)?;
            let client = connect(global, true).await?;
            Ok(client.variable(&a.name).set(item).await?)
        }
        Verb::Get(a) => {
            let client = connect(global, true).await?;
            let item = client.variable(&a.name).get(a.timeout).await.map_err(|e| {
                on_timeout(e, |t| {
                    format!("variable {} is still unset after {t:?}", a.name)
                })
            })?;
            print_item(item, a.raw)
        }
        Verb::Del(a) => {
            let client = connect(global, false).await?;
            Ok(client.variable(&a.name).delete().await?)
        }
    }
}
