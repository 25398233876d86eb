//! `dtask actor`: stateful instances of a resource a component exports,
//! each living on one worker, called directly.

use super::{Failure, Global, connect, load_module, render_line};
use dtask_runtime::client::ActorOptions;
use dtask_runtime::module::{LocalModule, constructor};
use dtask_runtime::protocol::{Arg, CallArg};
use std::io::Write;
use std::path::PathBuf;

/// Actors: one live instance of a resource exported by a component, on one
/// worker, keeping its state between calls.
///
/// `actor new` constructs one and prints its key; `actor call` calls a
/// method on it and prints the result as a JSON line. Calls go straight to
/// the worker holding the actor, one at a time in arrival order. Arguments
/// are read by the parameter's WIT type, as for `submit`; `@KEY` passes a
/// future's result.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  c=$(dtask actor new coord.wasm counter 0)\n  dtask actor call $c increment 5     # 5\n  dtask actor call $c get             # 5\n  dtask actor del $c\n\nExit status: 0 done, 1 the method failed or the actor is lost (its worker died), 2 usage, no such resource or method, or arguments that do not fit its types, 3 no scheduler, 4 --timeout passed."
)]
pub struct Args {
    #[command(subcommand)]
    command: Verb,
}

#[derive(clap::Subcommand)]
enum Verb {
    New(NewArgs),
    Call(CallArgs),
    Del(DelArgs),
    List(ListArgs),
}

/// Construct an actor on a worker and print its key.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask actor new coord.wasm server\n\nExit status: 0 the key printed, 1 its constructor failed, 2 no such resource or arguments that do not fit its types, 3 no scheduler."
)]
struct NewArgs {
    /// Use this key instead of a fresh one.
    #[arg(long)]
    key: Option<String>,
    /// Memory limit of the actor's instance (at most the worker's).
    #[arg(long, value_name = "MIB")]
    memory_limit_mib: Option<u64>,
    /// How long one method call may run, e.g. `30s` (within the worker's
    /// `--timeout`): a call past it fails, and the actor takes no more
    /// calls [default: no limit but the worker's].
    #[arg(long, value_parser = super::task_options::parse_time_limit, value_name = "DUR")]
    call_timeout: Option<std::time::Duration>,
    /// The WebAssembly component exporting the resource.
    module: PathBuf,
    /// The resource's name, as the component's WIT declares it.
    resource: String,
    /// Constructor arguments.
    #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
    args: Vec<String>,
}

/// Call a method of an actor and print its result.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask actor call counter-3f2a… increment 1\n\nExit status: 0 the result printed, 1 the method failed or the actor is lost, 2 no such method or arguments that do not fit its types, 3 no scheduler, 4 --timeout passed."
)]
struct CallArgs {
    /// Print a string or bytes result as is, not as JSON.
    #[arg(short, long)]
    raw: bool,
    /// Give up waiting for the answer after this long (exit 4), e.g. `30s`;
    /// the call itself may still run.
    #[arg(long, value_parser = super::parse_duration, value_name = "DUR")]
    timeout: Option<std::time::Duration>,
    /// The actor's key.
    key: String,
    /// The method.
    method: String,
    /// Its arguments.
    #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
    args: Vec<String>,
}

/// Delete an actor; its state is dropped.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask actor del counter-3f2a…\n\nExit status: 0 done, 2 usage or bad input, 3 cannot reach or authenticate to the scheduler."
)]
struct DelArgs {
    /// Keys of the actors.
    #[arg(required = true)]
    keys: Vec<String>,
}

/// List the actors: key, resource, state, worker.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask actor list --json | jq -r 'select(.state == \"broken\") | .key'\n\nExit status: 0 done, 3 cannot reach or authenticate to the scheduler."
)]
struct ListArgs {
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    match a.command {
        Verb::New(a) => new(global, a).await,
        Verb::Call(a) => {
            super::within(
                a.timeout,
                "no answer came",
                "the call may still run; `dtask actor list` shows where the actor is",
                call(global, a),
            )
            .await
        }
        Verb::Del(a) => {
            let client = connect(global, false).await?;
            for k in a.keys {
                client.actor_delete(&k)?;
            }
            // Waits until the deletes arrived.
            client.close().await?;
            Ok(())
        }
        Verb::List(a) => {
            let client = connect(global, false).await?;
            let mut out = std::io::stdout().lock();
            for actor in client.actors().await? {
                let line = if a.json {
                    serde_json::json!({
                        "key": actor.key, "resource": actor.resource, "module": actor.module,
                        "state": actor.state.name(), "address": actor.address,
                    })
                    .to_string()
                } else {
                    format!(
                        "{}\t{}\t{}\t{}",
                        actor.key,
                        actor.resource,
                        actor.state.name(),
                        actor.address
                    )
                };
                writeln!(out, "{line}").map_err(Failure::write)?;
            }
            Ok(())
        }
    }
}

async fn new(global: &Global, a: NewArgs) -> Result<(), Failure> {
    if let Some(k) = &a.key {
        dtask_runtime::key::validate_chosen_key(k).map_err(Failure::usage)?;
    }
    let module = load_module(&a.module)?;
    let args = constructor_args(&module, &a.resource, &a.args)?;
    let client = connect(global, true).await?;
    let options = ActorOptions {
        key: a.key,
        memory_limit: a.memory_limit_mib.map(|m| m << 20),
        call_timeout: a.call_timeout,
    };
    let actor = client
        .actor_new(&module, &a.resource, args, &options)
        .await?;
    println!("{}", actor.key());
    Ok(())
}

/// Constructor arguments read by their WIT types.
fn constructor_args(
    module: &LocalModule,
    resource: &str,
    words: &[String],
) -> Result<Vec<Arg>, Failure> {
    module
        .types
        .constructor(resource, &module.name)
        .map_err(Failure::usage)?;
    super::parse_args(module, &constructor(resource), words)
}

async fn call(global: &Global, a: CallArgs) -> Result<(), Failure> {
    let client = connect(global, false).await?;
    let mut args = Vec::with_capacity(a.args.len());
    let mut stdin_read = false;
    for word in &a.args {
        if word == "-" {
            // Stdin, read by the parameter's type on the worker.
            if std::mem::replace(&mut stdin_read, true) {
                return Err(Failure::usage("only one argument can be `-` (stdin)"));
            }
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                .map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
            args.push(CallArg::Stdin(bytes.into()));
            continue;
        }
        args.push(match word.strip_prefix('@') {
            Some(rest) if !rest.starts_with('@') => {
                let v = client.result(rest).await?;
                CallArg::Value(dtask_runtime::value::encode(&v).into())
            }
            Some(rest) => CallArg::Word(rest.to_string()),
            None => CallArg::Word(word.clone()),
        });
    }
    let actor = client.actor(&a.key).await?;
    let result = actor.call(&a.method, args).await?;
    let mut out = std::io::stdout().lock();
    out.write_all(&render_line(result, a.raw))
        .map_err(Failure::write)?;
    Ok(())
}
