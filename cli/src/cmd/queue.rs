//! `dtask queue`: global first-in first-out queues.

use super::{Failure, Global, connect, item_from_word, on_timeout, parse_duration, print_item};
use std::io::Write;
use std::time::Duration;

/// Global first-in first-out queues, shared by every client and task.
///
/// A queue springs into existence on first use. Items are plain values or
/// futures (`@KEY`); a queued future stays alive while it waits in the
/// queue, and whoever takes it holds it from then on.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  dtask queue put jobs '{\"id\": 7}'\n  dtask queue put jobs @$(dtask submit tasks.wasm inc 1)\n  dtask queue len jobs          # 2\n  dtask queue get jobs          # {\"id\":7}\n\nExit status: 0 done, 2 usage, bad input or refused (e.g. another maxsize), 3 no scheduler, 4 the timeout passed (nothing was put or taken)."
)]
pub struct Args {
    #[command(subcommand)]
    command: Verb,
}

#[derive(clap::Subcommand)]
enum Verb {
    Put(PutArgs),
    Get(GetArgs),
    Len(LenArgs),
}

/// Append an item to a queue, waiting while it is full.
///
/// VALUE is JSON if it parses (`42`, `"text"`, `[1,2]`, `{"a":1}`, `true`,
/// `null`), else the word as a string (`hello`); `@KEY` puts a future,
/// `@@…` a literal string `@…`, `-` reads the value from stdin.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  dtask queue put jobs 42\n  dtask queue put jobs hello --maxsize 10 --timeout 5s\n  dtask queue put results @inc-5c1e…\n\nExit status: 0 put, 2 bad input or refused (another --maxsize), 3 no scheduler, 4 the timeout passed while the queue was full."
)]
struct PutArgs {
    /// Queue name.
    name: String,
    /// The item: JSON, a bare word (a string), `@KEY` or `-` (stdin).
    #[arg(allow_hyphen_values = true)]
    value: String,
    /// Bound the queue to N items (0: unbounded) when this put creates it;
    /// an existing queue with another bound refuses the put (exit 2).
    #[arg(long, value_name = "N")]
    maxsize: Option<u64>,
    /// Give up after this long while the queue is full (exit 4), e.g. `500ms`.
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    timeout: Option<Duration>,
}

/// Take the oldest item of a queue and print it, waiting while it is empty.
///
/// A value prints as one JSON line (like `dtask gather`); a future prints
/// as its key, which this client (`DTASK_CLIENT`, default `default`) then
/// holds until `dtask release KEY`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  dtask queue get jobs\n  dtask queue get jobs --timeout 10s || echo 'no work'\n  dtask gather $(dtask queue get results)\n\nExit status: 0 an item printed, 3 no scheduler, 4 the timeout passed while the queue was empty."
)]
struct GetArgs {
    /// Queue name.
    name: String,
    /// Give up after this long while the queue is empty (exit 4), e.g. `10s`.
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    timeout: Option<Duration>,
    /// Print a string or bytes value raw instead of as JSON.
    #[arg(short, long)]
    raw: bool,
}

/// Print how many items a queue holds.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask queue len jobs          # 3\n\nExit status: 0 done, 2 usage or bad input, 3 cannot reach or authenticate to the scheduler."
)]
struct LenArgs {
    /// Queue name.
    name: String,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    match a.command {
        Verb::Put(a) => {
            let item = item_from_word(&a.value)?;
            let client = connect(global, true).await?;
            let mut queue = client.queue(&a.name);
            if let Some(n) = a.maxsize {
                queue = queue.with_maxsize(n);
            }
            queue.put(item, a.timeout).await.map_err(|e| {
                on_timeout(e, |t| {
                    format!(
                        "queue {} is still full after {t:?}; nothing was put",
                        a.name
                    )
                })
            })
        }
        Verb::Get(a) => {
            let client = connect(global, true).await?;
            let item = client.queue(&a.name).get(a.timeout).await.map_err(|e| {
                on_timeout(e, |t| {
                    format!("queue {} is still empty after {t:?}", a.name)
                })
            })?;
            print_item(item, a.raw)
        }
        Verb::Len(a) => {
            let client = connect(global, false).await?;
            let n = client.queue(&a.name).len().await?;
            writeln!(std::io::stdout(), "{n}").map_err(Failure::write)
        }
    }
}
