//! `dtask submit`: one task, printing its key.

use super::task_options::TaskOptions;
use super::{Failure, Global, connect, load_module, parse_args};
use dtask_runtime::client::task_spec;
use dtask_runtime::value::{Encoded, EncodedFile};
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
        dtask_runtime::key::validate_key(k).map_err(Failure::usage)?;
    }
    let module = load_module(&a.module)?;
    let mut words = a.args;
    let big_stdin = match module.types.kind().is_command() {
        true => stdin_file(&words)?,
        false => None,
    };
    let client_first = match big_stdin {
        Some(_) => Some(connect(global, true).await?),
        None => None,
    };
    // A command's stdin redirected from a big regular file is scattered a
    // range at a time, like `dtask scatter < FILE`, and given as that
    // future: never read whole into the submission.
    let mut scattered = Vec::new();
    if let (Some(file), Some(client)) = (big_stdin, &client_first) {
        scattered = client.scatter_from(vec![file], false, Vec::new()).await?;
        let word = words.iter_mut().find(|w| *w == STDIN_WORD);
        *word.expect("stdin_file found it") = format!("<@{}", scattered[0].key());
    }
    let args = parse_args(&module, &a.function, &words)?;
    let options = a.options.submit_options(a.key)?;
    let client = match client_first {
        Some(c) => c,
        None => connect(global, true).await?,
    };
    client.upload(&module).await?;
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

/// Stdin, when a command's words read it (`<-`) and it is a regular file
/// bigger than one range: worth scattering from the file rather than
/// reading whole.
fn stdin_file(words: &[String]) -> Result<Option<Encoded>, Failure> {
    if !words.iter().any(|w| w == STDIN_WORD) {
        return Ok(None);
    }
    match EncodedFile::stdin().map(|f| f.map(Encoded::File)) {
        Some(Ok(file)) if file.len() > dtask_runtime::peer::CHUNK => Ok(Some(file)),
        Some(Err(e)) => Err(Failure::usage(format!("cannot read stdin: {e}"))),
        _ => Ok(None),
    }
}
