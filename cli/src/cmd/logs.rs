//! `dtask logs`: what a task wrote to stderr (or stdout).

use super::{Failure, Global, connect};
use std::io::Write;

/// Print what a task wrote to stderr (with --stdout, what a component
/// task wrote to stdout; a WASI command's stdout is its result), failed or
/// not. The worker that ran it keeps the last 64 KiB of each stream per
/// task, for its latest 16 MiB of task output; a cut is marked
/// "[… earlier output dropped]".
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask logs inc-5c1e…\n\nExit status: 0 printed (nothing, for a task that wrote nothing), 1 no connected worker keeps output of that task (its worker dropped or lost it), 2 usage or bad input (an unknown key), 3 cannot reach or authenticate to the scheduler."
)]
pub struct Args {
    /// Print what it wrote to stdout instead.
    #[arg(long)]
    stdout: bool,
    /// The task's key.
    key: String,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    let client = connect(global, false).await?;
    let Some(log) = client.logs(&a.key).await? else {
        let known = client.status(vec![a.key.clone()]).await?;
        if known.first().is_none_or(|(_, state)| state.is_none()) {
            return Err(dtask_runtime::client::ClientError::UnknownKey(a.key).into());
        }
        return Err(Failure::new(
            1,
            format!(
                "no connected worker keeps output of {}: the worker that ran it has run many \
                 newer tasks since (and kept theirs), or is gone",
                a.key
            ),
        ));
    };
    let text = if a.stdout { log.stdout } else { log.stderr };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).map_err(Failure::write)?;
    if !text.is_empty() && !text.ends_with('\n') {
        out.write_all(b"\n").map_err(Failure::write)?;
    }
    Ok(())
}
