//! `dtask inspect`: a module's exports and their WIT signatures.

use super::{Failure, load_module};
use dtask_runtime::value::type_to_wit;
use std::io::Write;
use std::path::PathBuf;

/// Print the functions a module exports, one WIT signature per line.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask inspect tasks.wasm     # inc: func(x: s64) -> s64 …\n\nExit status: 0 printed, 2 not a readable WebAssembly component."
)]
pub struct Args {
    /// One JSON object per line: name, params, result.
    #[arg(long)]
    json: bool,
    /// The WebAssembly component (.wasm).
    module: PathBuf,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let module = load_module(&a.module)?;
    let mut out = std::io::stdout().lock();
    for sig in module.types.funcs.values() {
        let line = if a.json {
            serde_json::json!({
                "name": sig.name,
                "params": sig.params.iter().map(|(n, t)| serde_json::json!({"name": n, "type": type_to_wit(t)})).collect::<Vec<_>>(),
                "result": sig.results.first().map(type_to_wit),
            })
            .to_string()
        } else {
            sig.to_wit()
        };
        writeln!(out, "{line}").map_err(Failure::write)?;
    }
    Ok(())
}
