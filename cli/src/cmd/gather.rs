//! `dtask gather`: results of keys, in order, one JSON value per line.

use super::{Failure, Frame, Global, connect, render_line, write_streamed};
use dtask_runtime::protocol::Outcome;
use rustc_hash::FxHashMap as HashMap;
use std::collections::VecDeque;
use std::io::Write;
use tokio::sync::mpsc;

/// Print the results of futures, one per line, in the order the keys were
/// given (as JSON; with -r strings and bytes raw).
///
/// Keys come from the arguments, or else from stdin, one per line; results
/// stream out as soon as the next one in order is ready.
///
/// Exit status: 0 all printed, 1 a task failed (with `--errors raise`), 130
/// interrupted (with `--release`, what was printed is released first), 3
/// no scheduler, 4 `--timeout` passed first.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  dtask gather inc-5c1e…\n  seq 100 | dtask map tasks.wasm inc | dtask gather"
)]
pub struct Args {
    /// Print strings and bytes raw instead of as JSON: a string followed
    /// by a newline, bytes exactly as they are with nothing after them (so
    /// several byte values come out back to back, as `cat` would join files).
    #[arg(short, long)]
    raw: bool,
    /// One JSON object per line: key, status, and result or error.
    #[arg(long, conflicts_with = "raw")]
    json: bool,
    /// On a failed task: `raise` stops with its error (exit 1); `skip`
    /// leaves it out and goes on.
    #[arg(long, value_enum, default_value = "raise", value_name = "HOW")]
    errors: Errors,
    /// Release each key once its result is printed (this client name stops
    /// holding it), so a pipeline leaves nothing held behind it.
    #[arg(long)]
    release: bool,
    /// Give up after this long (exit 4), e.g. `30s`; results printed by
    /// then stay printed.
    #[arg(long, value_parser = super::parse_duration, value_name = "DUR")]
    timeout: Option<std::time::Duration>,
    /// Keys to gather (default: read from stdin).
    keys: Vec<String>,
}

/// What to do with failed tasks.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Errors {
    /// Stop at the first failure.
    Raise,
    /// Leave failures out.
    Skip,
}

pub async fn run(global: &Global, a: Args) -> Result<(), Failure> {
    let timeout = a.timeout;
    let release = a.release;
    // Keys printed and not yet released (with --release), and the client
    // that holds them: released whatever ends the gather (an error, a
    // timeout), since they were printed.
    let mut printed: Vec<String> = Vec::new();
    let mut connected = None;
    let work = super::within(
        timeout,
        "not every result was ready",
        "the tasks go on: gather again later, or see `dtask status`",
        gather(global, a, &mut printed, &mut connected),
    );
    // Interrupted (Ctrl-C), a releasing gather still lets go of what it
    // printed; a second interrupt ends it at once.
    let gathered = if release {
        tokio::select! {
            gathered = work => gathered,
            _ = tokio::signal::ctrl_c() => {
                super::exit_on_next_interrupt();
                Err(Failure::new(
                    130,
                    "interrupted: the results printed so far are released; the rest stay held",
                ))
            }
        }
    } else {
        work.await
    };
    if release && let Some(client) = connected {
        let released = async {
            client.release(printed)?;
            // A round trip makes sure the releases were handled.
            client.status(Vec::new()).await.map(drop)
        };
        // Bounded: after a timeout, or with the scheduler gone, it must not
        // wait out a reconnect.
        let released = tokio::time::timeout(std::time::Duration::from_secs(10), released)
            .await
            .unwrap_or_else(|_| Err(client.lost_error()));
        // The gather's own failure says more than the release's.
        if let (Ok(()), Err(e)) = (&gathered, released) {
            return Err(e.into());
        }
    }
    gathered
}

async fn gather(
    global: &Global,
    a: Args,
    printed: &mut Vec<String>,
    connected: &mut Option<dtask_runtime::client::Client>,
) -> Result<(), Failure> {
    let mut key_rx = super::key_stream(a.keys);
    key_rx.first().await;
    let client = connect(global, false).await?;
    *connected = Some(client.clone());

    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut done = Vec::new();
    let mut keys = InOrder::default();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut keys_open = true;
    let mut skipped = 0usize;
    let progress = super::progress::Progress::new("gather", 0);
    loop {
        // Print everything at the front of the order that has arrived.
        while let Some((key, outcome, last)) = keys.pop_ready() {
            progress.inc(1);
            // Held for this connection until read (see `watch_reading_into`).
            let to_read = last && outcome.held_for_readers();
            let resolved = match outcome {
                // Streamed: a big byte string or string is written out as it
                // arrives, never held whole.
                Outcome::Finished(at) if a.raw || at.inline.is_none() => {
                    let frame = if a.json {
                        Frame::json_line(&key)
                    } else {
                        Frame::line(a.raw)
                    };
                    write_streamed(&client, &key, &at, &mut out, &progress, a.raw, &frame).await?
                }
                outcome => client.resolve(&key, outcome).await.map(Some),
            };
            if to_read {
                client.read_over(&key);
            }
            let printed_key = a.release.then(|| key.clone());
            match resolved {
                Ok(None) => {}
                Ok(Some(v)) => {
                    let line = if a.json {
                        let mut l = serde_json::json!({"key": key, "status": "finished", "result": dtask_runtime::value::value_to_json(&v)}).to_string().into_bytes();
                        l.push(b'\n');
                        l
                    } else {
                        // Byte-exact: nothing follows raw bytes.
                        render_line(v, a.raw)
                    };
                    progress
                        .suspend(|| out.write_all(&line))
                        .map_err(Failure::write)?;
                }
                Err(e) if a.json => {
                    let status = if matches!(e, dtask_runtime::client::ClientError::Cancelled(_)) {
                        "cancelled"
                    } else {
                        "error"
                    };
                    let mut l =
                        serde_json::json!({"key": key, "status": status, "error": e.to_string()});
                    if let dtask_runtime::client::ClientError::Task(t) = &e {
                        l["kind"] = t.kind.name().into();
                        l["origin"] = t.origin.clone().into();
                    }
                    let l = l.to_string();
                    progress
                        .suspend(|| writeln!(out, "{l}"))
                        .map_err(Failure::write)?;
                    if matches!(a.errors, Errors::Raise) || !skippable(&e) {
                        let _ = out.flush();
                        return Err(e.into());
                    }
                }
                Err(e) => match a.errors {
                    Errors::Skip if skippable(&e) => skipped += 1,
                    _ => {
                        let _ = out.flush();
                        return Err(match e {
                            dtask_runtime::client::ClientError::Task(t) => Failure::task(&key, &t),
                            other => other.into(),
                        });
                    }
                },
            }
            if let Some(key) = printed_key {
                // Only now: a result still to be fetched must stay held.
                printed.push(key);
                if printed.len() >= 4096 {
                    client.release(std::mem::take(printed))?;
                }
            }
        }
        let _ = progress.suspend(|| out.flush());
        if !keys_open && keys.is_empty() {
            break;
        }
        tokio::select! {
            k = key_rx.recv(), if keys_open && keys.waiting() < super::WATCH_WINDOW && keys.has_room() => match k? {
                Some(k) => {
                    let mut fresh = Vec::new();
                    let mut read = 1;
                    fresh.extend(keys.push(k));
                    while keys.waiting() < super::WATCH_WINDOW
                        && keys.has_room()
                        && let Some(k) = key_rx.try_recv()?
                    {
                        read += 1;
                        fresh.extend(keys.push(k));
                    }
                    progress.add_total(read);
                    client.watch_reading_into(fresh, &done_tx)?;
                }
                None => keys_open = false,
            },
            () = client.lost() => return Err(client.lost_error().into()),
            // Everything already here, so that results print (and flush) in
            // batches rather than one write each.
            got = done_rx.recv_many(&mut done, super::WATCH_WINDOW) => {
                if got == 0 {
                    return Err(client.lost_error().into());
                }
                for (k, outcome) in done.drain(..) {
                    keys.arrived(&k, outcome);
                }
            }
        }
    }
    if skipped > 0 {
        eprintln!("dtask: skipped {skipped} failed task(s)");
    }
    Ok(())
}

/// Whether `--errors skip` leaves out a key that came to `e`: a task that
/// failed or was cancelled. Anything else (an unknown key, a result that
/// could not be fetched, a lost scheduler) still stops the gather.
fn skippable(e: &dtask_runtime::client::ClientError) -> bool {
    matches!(
        e,
        dtask_runtime::client::ClientError::Task(_)
            | dtask_runtime::client::ClientError::Cancelled(_)
    )
}

/// Most bytes of keys and outcomes that wait to be printed (behind a slow
/// key, results that came sooner wait): past them, no more keys are read
/// until the first is printed, and whatever feeds the keys waits.
const HELD_BYTES: usize = 64 << 20;

/// About the bytes a key's slot holds, with its outcome once here.
fn slot_bytes(key: &str, outcome: Option<&Outcome>) -> usize {
    let outcome = match outcome {
        Some(Outcome::Finished(at)) => {
            at.inline.as_ref().map_or(0, |b| b.len())
                + at.who_has.iter().map(String::len).sum::<usize>()
        }
        Some(Outcome::Error(e)) => {
            e.message.len() + e.stderr.len() + e.backtrace.len() + e.origin.len()
        }
        _ => 0,
    };
    // The slot itself, and its key's allocation.
    64 + key.len() + outcome
}

/// The keys being gathered, in the order they were given, each with its
/// outcome once that has arrived: one lookup by key per arrival, none to
/// print what is at the front.
#[derive(Default)]
struct InOrder {
    /// Keys not yet printed, oldest first, each with its outcome once
    /// here and whether its place is the last one of that outcome.
    slots: VecDeque<(String, Option<Outcome>, bool)>,
    /// About the bytes `slots` holds (see [`slot_bytes`]).
    held: usize,
    /// How many keys were printed: the position of `slots[0]` among all.
    printed: u64,
    /// Keys watched whose outcome has not arrived, with where they stand
    /// (a key given more than once stands at each of its places).
    watched: HashMap<String, Places>,
}

/// Where a watched key stands among all the keys given.
struct Places {
    first: u64,
    more: Vec<u64>,
}

impl InOrder {
    /// Adds `key` at the end; the key itself if it is to be watched (not
    /// already watched for an earlier place).
    fn push(&mut self, key: String) -> Option<String> {
        let at = self.printed + self.slots.len() as u64;
        let fresh = match self.watched.get_mut(&key) {
            Some(places) => {
                places.more.push(at);
                None
            }
            None => {
                let places = Places {
                    first: at,
                    more: Vec::new(),
                };
                self.watched.insert(key.clone(), places);
                Some(key.clone())
            }
        };
        self.held += slot_bytes(&key, None);
        self.slots.push_back((key, None, false));
        fresh
    }

    /// Records `key`'s outcome at every place it is waited for.
    fn arrived(&mut self, key: &str, outcome: Outcome) {
        let Some(places) = self.watched.remove(key) else {
            return;
        };
        // Places are in order: the last is the last to be printed.
        let last = places.more.last().copied().unwrap_or(places.first);
        for at in places.more {
            self.set(at, outcome.clone(), at == last);
        }
        self.set(places.first, outcome, places.first == last);
    }

    fn set(&mut self, at: u64, outcome: Outcome, last: bool) {
        // Places not yet printed are never before `printed`.
        if let Some(slot) = at
            .checked_sub(self.printed)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.slots.get_mut(i))
        {
            self.held += slot_bytes(&slot.0, Some(&outcome)) - slot_bytes(&slot.0, None);
            slot.1 = Some(outcome);
            slot.2 = last;
        }
    }

    /// The first key and its outcome, if that has arrived, and whether
    /// this is the outcome's last place.
    fn pop_ready(&mut self) -> Option<(String, Outcome, bool)> {
        self.slots.front()?.1.as_ref()?;
        let (key, outcome, last) = self.slots.pop_front()?;
        self.held -= slot_bytes(&key, outcome.as_ref());
        self.printed += 1;
        Some((key, outcome?, last))
    }

    /// How many distinct keys are watched and have not arrived.
    fn waiting(&self) -> usize {
        self.watched.len()
    }

    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether more keys may be read: what waits to be printed is within
    /// [`HELD_BYTES`].
    fn has_room(&self) -> bool {
        self.held < HELD_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtask_runtime::protocol::Located;

    fn inline(n: usize) -> Outcome {
        Outcome::Finished(Located {
            inline: Some(vec![7u8; n].into()),
            who_has: Vec::new(),
            nbytes: n as u64,
        })
    }

    /// Behind a key that has not arrived, the results that did fill the
    /// room; printing the first gives it back.
    #[test]
    fn results_waiting_behind_a_slow_key_fill_the_room_and_printing_frees_it() {
        let mut keys = InOrder::default();
        keys.push("slow".into());
        let mut n = 0;
        while keys.has_room() {
            let k = format!("fast-{n}");
            keys.push(k.clone());
            keys.arrived(&k, inline(1000));
            n += 1;
        }
        assert!(n < HELD_BYTES / 1000, "{n} results of 1,000 bytes held");
        assert!(keys.pop_ready().is_none(), "the slow key comes first");
        keys.arrived("slow", inline(1));
        while keys.pop_ready().is_some() {}
        assert!(keys.is_empty());
        assert_eq!(keys.held, 0, "every slot's bytes given back");
    }

    #[test]
    fn a_key_given_twice_counts_each_place() {
        let mut keys = InOrder::default();
        assert_eq!(keys.push("a".into()).as_deref(), Some("a"));
        assert_eq!(keys.push("a".into()), None);
        keys.arrived("a", inline(10));
        assert_eq!(keys.waiting(), 0);
        assert!(keys.pop_ready().is_some() && keys.pop_ready().is_some());
        assert_eq!(keys.held, 0);
    }
}
