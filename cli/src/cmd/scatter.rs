//! `dtask scatter`: store data on workers as finished futures.

use super::{Failure, Global, connect};
use dtask_runtime::value::{self, Encoded, EncodedFile, Value};
use std::io::Read;
use std::path::PathBuf;

/// Store data on the workers and print a key for each piece: stdin as one
/// value, or each FILE as one value (placed round-robin across workers).
/// Pass the keys to tasks as `@KEY`.
///
/// Values are bytes, or with --json parsed JSON (`{"$bytes": …}` for bytes),
/// or with --text UTF-8 strings.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  echo hello | dtask scatter --text\n  dtask scatter --text books/*.txt     # one key per file\n  dtask scatter --broadcast --json < model.json\n\nExit status: 0 every key printed, 2 bad input or refused (too large), 3 no scheduler or no worker to hold the data."
)]
pub struct Args {
    /// Parse each value as JSON.
    #[arg(long, conflicts_with = "text")]
    json: bool,
    /// Take each value as a UTF-8 string.
    #[arg(long)]
    text: bool,
    /// Put a copy on every worker.
    #[arg(long)]
    broadcast: bool,
    /// Only on these workers (name, address or id; comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "WORKER")]
    workers: Vec<String>,
    /// Files to scatter, one value each (default: stdin as one value).
    files: Vec<PathBuf>,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    let encoded = if a.json || a.text {
        typed(&a)?
            .into_iter()
            .map(|v| Encoded::Memory(v.into()))
            .collect()
    } else {
        raw(&a)?
    };
    let client = connect(global, true).await?;
    let futures = client.scatter_from(encoded, a.broadcast, a.workers).await?;
    // The CLI's named client holds the keys until `dtask release`.
    for f in &futures {
        println!("{}", f.key());
    }
    std::mem::forget(futures);
    Ok(())
}

/// Each input as a byte string: a file (or stdin redirected from one) read
/// a range at a time as it is hashed and sent; stdin from a pipe kept in
/// memory up to one range and past that in a temporary file (see
/// [`Encoded::stdin`]).
fn raw(a: &Args) -> Result<Vec<Encoded>, Failure> {
    if a.files.is_empty() {
        let read = Encoded::stdin(dtask_runtime::peer::CHUNK as usize);
        let stdin = read.map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
        return Ok(vec![stdin]);
    }
    a.files
        .iter()
        .map(|f| {
            let file = EncodedFile::open(f)
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", f.display())))?;
            Ok(Encoded::File(file))
        })
        .collect()
}

/// Each input parsed as JSON (`--json`) or taken as UTF-8 text (`--text`),
/// encoded.
fn typed(a: &Args) -> Result<Vec<Vec<u8>>, Failure> {
    let mut raw: Vec<(String, Vec<u8>)> = Vec::new();
    if a.files.is_empty() {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
        raw.push(("stdin".into(), b));
    } else {
        for f in &a.files {
            let b = std::fs::read(f)
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", f.display())))?;
            raw.push((f.display().to_string(), b));
        }
    }
    let mut values = Vec::with_capacity(raw.len());
    for (name, bytes) in raw {
        let v = if a.json {
            let j: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| Failure::usage(format!("{name} is not JSON: {e}")))?;
            value::untyped_json_to_value(&j)
        } else {
            Value::from(
                String::from_utf8(bytes)
                    .map_err(|_| Failure::usage(format!("{name} is not UTF-8 text")))?,
            )
        };
        values.push(value::encode(&v));
    }
    Ok(values)
}
