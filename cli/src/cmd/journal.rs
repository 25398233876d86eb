//! `dtask journal export`: a scheduler's journal as JSON lines.

use super::Failure;
use dtask_runtime::scheduler::journal;
use std::io::Write;

/// Read a scheduler's journal (`dtask scheduler --journal DIR`, or the
/// local default's `journal` in the state directory).
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask journal export /var/lib/dtask/journal > journal.jsonl\n\nExit status: 0 printed, 2 the directory holds no journal dtask can read."
)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Print every record of the journal in DIR as one JSON object per
    /// line, `{"file": …, "record": {…}}`: first the snapshot's state as
    /// records, then each log's records in the order they were written.
    /// For debugging and audits; reading does not change the journal.
    #[command(
        after_help = "Example:\n  dtask journal export ~/.local/state/dtask/journal | jq -c .record | head\n\nExit status: 0 printed, 2 the directory holds no journal dtask can read (the message says what is wrong)."
    )]
    Export {
        /// The journal directory.
        dir: std::path::PathBuf,
    },
}

pub fn run(a: Args) -> Result<(), Failure> {
    let What::Export { dir } = a.what;
    if !dir.is_dir() {
        return Err(Failure::usage(format!(
            "{} is not a directory; pass a scheduler's journal directory",
            dir.display()
        )));
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut failed = None;
    journal::export(&dir, |file, record| {
        if failed.is_some() {
            return;
        }
        let line = serde_json::json!({"file": file, "record": record});
        if let Err(e) = writeln!(out, "{line}") {
            failed = Some(e);
        }
    })
    .map_err(|e| Failure::new(2, e))?;
    if let Some(e) = failed {
        return Err(Failure::write(e));
    }
    out.flush().map_err(Failure::write)
}
