//! `dtask submit`: one task, printing its key.

use super::{Failure, Global, connect, load_module, parse_args, parse_duration};
use dtask_runtime::client::{SubmitOptions, task_spec};
use std::path::PathBuf;

/// Submit one call of a module's export as a task and print its key.
///
/// Arguments are parsed by the parameter's WIT type: strings literally,
/// numbers and bools as such, list<u8> as the word's bytes, anything else as
/// JSON. `@KEY` passes the result of another future; `@@x` is the literal
/// `@x`; `-` reads stdin. Options go before MODULE.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  dtask submit tasks.wasm inc 10\n  dtask submit tasks.wasm add @inc-5c1e… 5\n  dtask submit tasks.wasm norm '{\"x\": 3, \"y\": 4}'"
)]
pub struct Args {
    /// Use this key instead of a computed one.
    #[arg(long)]
    key: Option<String>,
    /// Same call, same key, computed once (default). `--pure=false` gives a
    /// fresh random key.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pure: bool,
    /// Higher runs earlier among ready tasks.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// Wall-clock limit of one run, e.g. `30s`; past it the task errs.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<std::time::Duration>,
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
    let options = SubmitOptions {
        key: a.key,
        pure: a.pure,
        priority: a.priority,
        timeout: a.timeout,
    };
    let client = connect(global, true).await?;
    client.upload(&module).await?;
    let spec = task_spec(module.hash(), &a.function, args, &options);
    let key = spec.key.clone();
    client.submit_specs(vec![spec]).await?.await?;
    println!("{key}");
    Ok(())
}
