//! `dtask submit`: one task, printing its key.

use super::task_options::TaskOptions;
use super::{Failure, Global, connect, load_module, parse_args};
use dtask_runtime::client::task_spec;
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
    let args = parse_args(&module, &a.function, &a.args)?;
    let options = a.options.submit_options(a.key)?;
    let client = connect(global, true).await?;
    client.upload(&module).await?;
    let spec = task_spec(module.hash(), &a.function, args, &options);
    let key = spec.key.clone();
    let notes = client.submit_specs(vec![spec]).await?.await?;
    super::task_options::note_unplaceable(&notes, &mut Default::default());
    if a.options.fire_and_forget {
        client.fire_and_forget(vec![key.clone()])?;
        client.release(vec![key.clone()])?;
        client.status(Vec::new()).await?;
    }
    println!("{key}");
    Ok(())
}
