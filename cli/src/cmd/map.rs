//! `dtask map`: one task per line of stdin, printing keys in order as the
//! scheduler accepts them.

use super::args::{Stdin, parse_args_with};
use super::task_options::TaskOptions;
use super::{Failure, Global, connect, load_module};
use dtask_runtime::client::task_spec;
use dtask_runtime::protocol::{Arg, TaskSpec};
use dtask_runtime::value;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use tokio::sync::mpsc;

/// Most tasks sent in one submit message.
const BATCH: usize = 4096;

/// Batches sent and not yet acknowledged, at most: enough to keep the
/// scheduler busy, few enough that a million lines on stdin are never all
/// held here at once.
const IN_FLIGHT: usize = 16;

/// Submit one task per line of stdin and print one key per line, in order,
/// as they are accepted (streaming).
///
/// Each line holds the arguments as words, split as a shell splits them
/// (`"two words"` is one word) and parsed like `dtask submit`'s, or with
/// `--json` a JSON array of them. Blank lines are skipped. Interrupted
/// (Ctrl-C), it stops reading and prints the keys of the lines it already
/// submitted before exiting 130. Stdin holds the
/// lines, so a `-` word is taken literally (it does not read stdin), and a
/// command's `<-` is refused.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  seq 1000 | dtask map tasks.wasm inc | dtask gather\n\nExit status: 0 every key printed, 2 usage or bad input (the line is named) or a task refused, 3 no scheduler, 130 interrupted (the keys submitted before are printed)."
)]
pub struct Args {
    /// Each line is a JSON array of arguments.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    options: TaskOptions,
    /// The WebAssembly component (.wasm).
    module: PathBuf,
    /// The exported function to call.
    function: String,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    let module = load_module(&a.module)?;
    // Fail on a missing export before reading any input.
    module
        .types
        .func(&a.function, &module.name)
        .map_err(Failure::usage)?;
    let options = a.options.submit_options(None)?;
    let fire_and_forget = a.options.fire_and_forget;
    let client = connect(global, true).await?;
    client.upload(&module).await?;

    // Lines are read on a plain thread so a slow producer never stalls the
    // submits already parsed.
    let (line_tx, mut line_rx) = mpsc::channel::<Result<String, String>>(BATCH * 4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let item = line.map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidData => "not UTF-8: map's lines are text (pass \
                     bytes as a file with `dtask scatter FILE` and `@KEY`)"
                    .to_string(),
                _ => format!("cannot read stdin: {e}"),
            });
            let stop = item.is_err();
            if line_tx.blocking_send(item).is_err() || stop {
                return;
            }
        }
    });

    let mut acks = FuturesOrdered::new();
    // Reasons already said, so a map of a million restricted tasks says each once.
    let mut noted = std::collections::HashSet::new();
    let progress = super::progress::Progress::new("map", 0);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut lineno = 0usize;
    let mut input_open = true;
    // What stopped the map (a bad line, a refused batch): the keys of the
    // lines before it are still printed, as their tasks run, then it exits
    // with this.
    let mut failed: Option<Failure> = None;
    // Interrupted (Ctrl-C), it stops reading and still prints the keys of
    // the lines it already submitted, which the scheduler holds: a map cut
    // short leaves no held key unprinted. A second interrupt ends it at
    // once.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut interruptible = true;
    while input_open || !acks.is_empty() {
        tokio::select! {
            _ = &mut interrupted, if interruptible => {
                interruptible = false;
                input_open = false;
                failed.get_or_insert(Failure::new(
                    130,
                    "interrupted: stopped reading; the keys of the lines already submitted \
                     are printed (they are held: `dtask release` them if unwanted)",
                ));
                super::exit_on_next_interrupt();
            }
            first = line_rx.recv(), if input_open && acks.len() < IN_FLIGHT => {
                let Some(first) = first else { input_open = false; continue };
                let mut batch: Vec<TaskSpec> = Vec::new();
                let mut next = Some(first);
                while let Some(line) = next.take() {
                    lineno += 1;
                    let parsed = line
                        .map_err(Failure::usage)
                        .and_then(|line| {
                            if line.trim().is_empty() {
                                return Ok(None);
                            }
                            line_args(&module, &a.function, &line, a.json).map(Some)
                        })
                        .map_err(|f| Failure::usage(format!("line {lineno}: {}", f.message)));
                    match parsed {
                        Ok(Some(args)) => {
                            batch.push(task_spec(module.hash(), &a.function, args, &options));
                        }
                        Ok(None) => {}
                        Err(f) => {
                            failed = Some(f);
                            input_open = false;
                            break;
                        }
                    }
                    if batch.len() < BATCH {
                        next = line_rx.try_recv().ok();
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                progress.add_total(batch.len() as u64);
                let keys: Vec<String> = batch.iter().map(|s| s.key.clone()).collect();
                let ack = client.submit_specs(batch).await?;
                acks.push_back(async move { (keys, ack.await) });
            }
            Some((keys, answer)) = acks.next() => {
                let (done, notes) = match answer {
                    Ok(notes) => (keys, notes),
                    // Some of the batch refused: the rest were taken (and
                    // are held), so their keys are printed.
                    Err(dtask_runtime::client::ClientError::Refused(refused)) => {
                        let out: std::collections::HashSet<&str> =
                            refused.iter().map(|(k, _)| k.as_str()).collect();
                        let taken = keys.into_iter().filter(|k| !out.contains(k.as_str())).collect();
                        failed.get_or_insert(
                            dtask_runtime::client::ClientError::Refused(refused).into(),
                        );
                        input_open = false;
                        (taken, Vec::new())
                    }
                    Err(e) => {
                        // The batches already sent are still answered.
                        failed.get_or_insert(e.into());
                        input_open = false;
                        continue;
                    }
                };
                super::task_options::note_unplaceable(&notes, &mut noted);
                if fire_and_forget {
                    client.fire_and_forget(done.clone())?;
                    client.release(done.clone())?;
                }
                progress.inc(done.len() as u64);
                progress
                    .suspend(|| {
                        for key in done {
                            writeln!(out, "{key}")?;
                        }
                        out.flush()
                    })
                    .map_err(Failure::write)?;
            }
        }
    }
    if fire_and_forget {
        // Make sure the hand-over was processed before exiting.
        client.status(Vec::new()).await?;
    }
    failed.map_or(Ok(()), Err)
}

/// A line's words, split as a shell splits them: `"two words"` and
/// `'two words'` are one word, `\ ` escapes a space.
fn words(line: &str) -> Result<Vec<String>, Failure> {
    if !line.contains(['"', '\'', '\\']) {
        return Ok(line.split_whitespace().map(str::to_string).collect());
    }
    shlex::split(line).ok_or_else(|| {
        Failure::usage(format!(
            "cannot split {line:?} into words: a quote is not closed or a backslash ends it; \
             quote words as a shell does (\"two words\"), or pass a JSON array with --json"
        ))
    })
}

fn line_args(
    module: &dtask_runtime::module::LocalModule,
    function: &str,
    line: &str,
    json: bool,
) -> Result<Vec<Arg>, Failure> {
    if !json {
        return parse_args_with(module, function, &words(line)?, Stdin::Lines);
    }
    let items: Vec<serde_json::Value> =
        serde_json::from_str(line).map_err(|e| Failure::usage(format!("not a JSON array: {e}")))?;
    let sig = module
        .types
        .func(function, &module.name)
        .map_err(Failure::usage)?;
    if items.len() != sig.params.len() {
        return Err(Failure::usage(dtask_runtime::client::arity_message(
            &sig.to_wit(),
            sig.params.len(),
            items.len(),
        )));
    }
    items
        .iter()
        .zip(&sig.params)
        .map(|(j, (name, ty))| {
            if let Some(k) = j
                .as_str()
                .and_then(|s| s.strip_prefix('@'))
                .filter(|k| !k.starts_with('@'))
            {
                return Ok(Arg::Future(k.to_string()));
            }
            let v = value::json_to_value(j, ty)
                .map_err(|e| Failure::usage(format!("{function}: parameter {name}: {e}")))?;
            Ok(Arg::Value(value::encode(&v).into()))
        })
        .collect()
}
