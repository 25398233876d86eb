//! `dtask submit`: one task, printing its key.

use super::task_options::TaskOptions;
use super::{Failure, Global, connect, load_module, parse_args};
use dtask_runtime::client::{Client, Future, key_with_value, task_spec};
use dtask_runtime::module::LocalModule;
use dtask_runtime::protocol::Arg;
use dtask_runtime::value::Encoded;
use std::path::PathBuf;

/// Submit one call of a module's export as a task and print its key.
///
/// Arguments are parsed by the parameter's WIT type: strings literally,
/// numbers and bools as such, list<u8> as the word's bytes, anything else as
/// JSON. `@KEY` passes the result of another future; `@@x` is the literal
/// `@x`; `-` reads stdin. Options go before MODULE.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  dtask submit tasks.wasm inc 10\n  dtask submit tasks.wasm add @inc-5c1e… 5\n  dtask submit tasks.wasm norm '{\"x\": 3, \"y\": 4}'\n\nExit status: 0 the key printed, 2 usage or bad input, or refused (unknown @KEY, a memory limit no worker allows), 3 no scheduler."
)]
pub struct Args {
    /// Use this key instead of a computed one.
    #[arg(long)]
    key: Option<String>,
    #[command(flatten)]
    options: TaskOptions,
    /// The WebAssembly component (.wasm).
    module: PathBuf,
    /// The exported function to call.
    function: String,
    /// Its arguments.
    #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
    args: Vec<String>,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    if let Some(k) = &a.key {
        dtask_runtime::key::validate_chosen_key(k).map_err(Failure::usage)?;
    }
    let module = load_module(&a.module)?;
    let mut words = a.args;
    let stdin = command_stdin(global, &module, &a.function, &mut words).await?;
    let big = super::big_stdin(&module, &a.function, &mut words)?;
    let mut args = parse_args(&module, &a.function, &words)?;
    if let Some(inline) = stdin.inline {
        // A command's arguments are [stdin, argv].
        args[0] = inline;
    }
    let mut options = a.options.submit_options(a.key)?;
    // A big byte string from stdin is scattered as it is read, never held
    // whole; the call keeps the key it has with the value in hand.
    let big = match big {
        Some((at, Encoded::Memory(b))) => {
            args[at] = Arg::Value(b);
            None
        }
        Some((at, file)) => {
            let key = key_with_value(module.hash(), &a.function, &args, (at, &file), &options)
                .map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
            options.key = key.or(options.key);
            Some((at, file))
        }
        None => None,
    };
    let client = match stdin.client {
        Some(c) => c,
        None => connect(global, true).await?,
    };
    client.upload(&module).await?;
    let mut scattered = stdin.scattered;
    if let Some((at, file)) = big {
        let futures = client.scatter_counted(vec![file]).await?;
        args[at] = Arg::Future(futures[0].key().to_string());
        scattered.extend(futures);
    }
    let spec = task_spec(module.hash(), &a.function, args, &options);
    let key = spec.key.clone();
    let notes = client.submit_specs(vec![spec]).await?.await?;
    // The task holds its stdin now; this client need not (and the round
    // trip sees the release out before the process ends).
    if !scattered.is_empty() {
        drop(scattered);
        client.status(Vec::new()).await?;
    }
    super::task_options::note_unplaceable(&notes, &mut Default::default());
    if a.options.fire_and_forget {
        client.fire_and_forget(vec![key.clone()])?;
        client.release(vec![key.clone()])?;
        client.status(Vec::new()).await?;
    }
    println!("{key}");
    Ok(())
}

/// The word that gives a command this process's stdin.
const STDIN_WORD: &str = "<-";

/// This process's stdin, as a command's `<-` takes it.
#[derive(Default)]
struct CommandStdin {
    /// A small stdin, passed inline as the command's first argument.
    inline: Option<Arg>,
    /// A big one, scattered (held until the task holds it).
    scattered: Vec<Future>,
    /// The client that scattered it, to submit with.
    client: Option<Client>,
}

/// Reads this process's stdin if `words` give it to a command (`<-`),
/// never whole when big: a regular file or a pipe past one range is
/// scattered a range at a time, like `dtask scatter`, and `<-` becomes that
/// future; a small one is taken out of `words`, to pass inline.
async fn command_stdin(
    global: &Global,
    module: &LocalModule,
    function: &str,
    words: &mut Vec<String>,
) -> Result<CommandStdin, Failure> {
    let Some(at) = words.iter().position(|w| w == STDIN_WORD) else {
        return Ok(CommandStdin::default());
    };
    // Two stdins, or a function the command lacks, are refused by
    // `parse_args` after this, before stdin is read or anything sent.
    let stdins = words
        .iter()
        .filter(|w| *w == STDIN_WORD || w.starts_with("<@"));
    let valid = stdins.count() == 1 && module.types.func(function, &module.name).is_ok();
    if !valid || !module.types.kind().is_command() {
        return Ok(CommandStdin::default());
    }
    let read = Encoded::stdin(dtask_runtime::peer::CHUNK as usize);
    match read.map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))? {
        Encoded::Memory(b) => {
            words.remove(at);
            Ok(CommandStdin {
                inline: Some(Arg::Value(b)),
                ..CommandStdin::default()
            })
        }
        file => {
            let client = connect(global, true).await?;
            let scattered = client.scatter_counted(vec![file]).await?;
            words[at] = format!("<@{}", scattered[0].key());
            Ok(CommandStdin {
                scattered,
                client: Some(client),
                ..CommandStdin::default()
            })
        }
    }
}
