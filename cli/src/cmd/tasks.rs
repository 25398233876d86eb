//! `dtask tasks`: list the tasks the scheduler knows.

use super::{Failure, Global, connect};
use dtask_runtime::protocol::TaskState;
use std::io::Write;

/// List known tasks, oldest first: the newest --limit of those that match,
/// one per line as KEY, state and function (tab-separated), or as JSON
/// lines. Says on stderr how many more matched. The scheduler walks every
/// task for this: it is for a person's look, not for polling (the
/// dashboard and /json/counts.json are).
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask tasks --state error --limit 20\n  dtask tasks --function inc --json | jq -r .key\n\nExit status: 0 done, 2 usage or bad input, 3 cannot reach or authenticate to the scheduler."
)]
pub struct Args {
    /// Only tasks in this state: pending, no-worker, processing, finished,
    /// error, cancelled or lost.
    #[arg(long, value_parser = parse_state, value_name = "STATE")]
    state: Option<TaskState>,
    /// Only tasks of this function.
    #[arg(long, value_name = "NAME")]
    function: Option<String>,
    /// At most this many (the newest).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    limit: u32,
    /// One JSON object per line: {"key", "status", "function"}.
    #[arg(long)]
    json: bool,
}

fn parse_state(s: &str) -> Result<TaskState, String> {
    TaskState::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = TaskState::ALL.iter().map(|s| s.name()).collect();
        format!("unknown state {s:?}; one of {}", names.join(", "))
    })
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    let client = connect(global, false).await?;
    let (tasks, matched) = client.list_tasks(a.state, a.function, a.limit).await?;
    let mut out = std::io::stdout().lock();
    for (key, state, function) in &tasks {
        let line = match a.json {
            true => serde_json::json!({"key": key, "status": state.name(), "function": function})
                .to_string(),
            false => format!("{key}\t{}\t{function}", state.name()),
        };
        writeln!(out, "{line}").map_err(Failure::write)?;
    }
    let more = matched.saturating_sub(tasks.len() as u64);
    if more > 0 {
        eprintln!("dtask: {more} more matched; raise --limit to see them");
    }
    Ok(())
}
