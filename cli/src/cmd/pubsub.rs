//! `dtask pub` and `dtask sub`: publish and subscribe on topics.

use super::{Failure, Global, connect, on_timeout, parse_duration, render, untyped_value};
use dtask_runtime::value;
use std::io::Write;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// Publish a message to the current subscribers of a topic (`dtask sub`,
/// or tasks). Nobody subscribed: the message is dropped, as in Dask.
///
/// VALUE is JSON if it parses (`42`, `"text"`, `[1,2]`, `{"a":1}`, `true`,
/// `null`), else the word as a string (`hello`); `@@…` is a literal string
/// `@…` (futures cannot be published: put them in a queue or variable).
/// With VALUE `-`, each line of stdin is one message, parsed the same way,
/// published as it arrives; blank lines are skipped. Messages from one
/// publisher arrive in order.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  dtask pub progress '{\"step\": 3, \"of\": 10}'\n  seq 10 | dtask pub numbers -\n  tail -f app.log | dtask pub logs -\n\nExit status: 0 done, 2 usage or bad input, 3 cannot reach or authenticate to the scheduler."
)]
pub struct PubArgs {
    /// Topic name.
    topic: String,
    /// The message: JSON, a bare word (a string), or `-` for one message per
    /// stdin line.
    #[arg(allow_hyphen_values = true)]
    value: String,
}

/// Subscribe to a topic and print each message published from then on as
/// one JSON line (flushed per line), until --count messages or for ever.
///
/// Once subscribed it writes `dtask: subscribed to TOPIC` to stderr: from
/// then on nothing published is missed, so a script can start publishing.
/// If the connection breaks (a scheduler restart, or this subscriber
/// falling more than the scheduler's --client-buffer behind), it connects
/// and subscribes again, and says on stderr that what was published
/// meanwhile was missed.
///
/// Exit status: 0 after --count messages, 3 no scheduler (or it went
/// away), 4 no message came within --timeout.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  dtask sub logs\n  dtask sub numbers --count 10 --timeout 30s | jq -s add"
)]
pub struct SubArgs {
    /// Topic name.
    topic: String,
    /// Stop after N messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Give up when the next message takes longer than this (exit 4), e.g.
    /// `30s`.
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    timeout: Option<Duration>,
    /// Print string and bytes messages raw instead of as JSON.
    #[arg(short, long)]
    raw: bool,
}

pub async fn run_pub(global: &Global, a: PubArgs) -> Result<(), Failure> {
    if a.value == "-" {
        return publish_lines(global, &a.topic).await;
    }
    let word = match a.value.strip_prefix('@') {
        Some(rest) if rest.starts_with('@') => rest,
        Some(_) => {
            return Err(Failure::usage(format!(
                "VALUE {}: a future cannot be published, only a value; put it in a queue or \
                 variable instead (or write @@… for a string starting with @)",
                a.value
            )));
        }
        None => &a.value,
    };
    let message = untyped_value(word)?;
    let client = connect(global, false).await?;
    client.publish(&a.topic, &message)?;
    // Waits until the scheduler has handled the message.
    client.close().await?;
    Ok(())
}

/// `dtask pub TOPIC -`: one message per stdin line, sent as lines arrive.
async fn publish_lines(global: &Global, topic: &str) -> Result<(), Failure> {
    let client = connect(global, false).await?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut number = 0usize;
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(|e| Failure::usage(format!("cannot read stdin line {}: {e}", number + 1)))?;
        let Some(line) = line else { break };
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let message = untyped_value(&line).map_err(|mut f| {
            f.message = format!("stdin line {number}: {}", f.message);
            f
        })?;
        client.publish(topic, &message)?;
    }
    client.close().await?;
    Ok(())
}

pub async fn run_sub(global: &Global, a: SubArgs) -> Result<(), Failure> {
    let client = connect(global, true).await?;
    let mut sub = client.subscribe(&a.topic).await?;
    eprintln!("dtask: subscribed to {}", a.topic);
    let mut out = std::io::stdout().lock();
    let mut seen = 0u64;
    while a.count.is_none_or(|n| seen < n) {
        let bytes = sub.next_bytes(a.timeout).await.map_err(|e| {
            on_timeout(e, |t| {
                format!(
                    "no message on topic {} within {t:?} ({seen} received)",
                    a.topic
                )
            })
        })?;
        let message = match value::decode(&bytes) {
            Ok(v) => v,
            Err(e) => {
                eprintln!(
                    "dtask: warning: skipping a message on topic {} that does not decode: {e}",
                    a.topic
                );
                continue;
            }
        };
        let mut line = render(&message, a.raw);
        line.push(b'\n');
        out.write_all(&line)
            .and_then(|()| out.flush())
            .map_err(Failure::write)?;
        seen += 1;
    }
    Ok(())
}
