//! Keys from arguments or, streamed, from stdin.

use super::*;

/// Keys from the arguments, or else streamed from stdin one per line as
/// they arrive (so a verb can start before its producer has finished).
pub fn key_stream(args: Vec<String>) -> KeyStream {
    if !args.is_empty() {
        let (_, rx) = tokio::sync::mpsc::channel(1);
        return KeyStream {
            args: args.into(),
            rx,
            held: None,
        };
    }
    // Bounded, at a million keys (tens of MB at most; room is taken as
    // keys come): a producer further ahead waits in its pipe rather than
    // in this process's memory. A tight bound holds `map` back behind
    // `gather` and cost a `seq 200000 | map | gather` pipeline a third of
    // its throughput.
    let (tx, rx) = tokio::sync::mpsc::channel(1 << 20);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let sent = match line {
                Ok(line) => {
                    let k = line.trim();
                    if k.is_empty() {
                        continue;
                    }
                    tx.blocking_send(Ok(k.to_string()))
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(format!("cannot read keys from stdin: {e}")));
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
    });
    KeyStream {
        args: Default::default(),
        rx,
        held: None,
    }
}

/// The keys of [`key_stream`], in order; `None` once they have ended. A
/// line of stdin that cannot be read (not UTF-8, say) is a usage error,
/// not the end of the keys.
pub struct KeyStream {
    args: std::collections::VecDeque<String>,
    rx: tokio::sync::mpsc::Receiver<Result<String, String>>,
    // A key (or the end) read ahead by `first`, given out next.
    held: Option<Option<Result<String, String>>>,
}

impl KeyStream {
    /// Waits until the first key has come (or the keys ended with none).
    ///
    /// A reading verb waits for this before it looks for the scheduler: in
    /// `dtask map … | dtask gather` on a fresh state directory, the first
    /// key is printed only once `map` has started the local cluster.
    pub async fn first(&mut self) {
        if self.held.is_none() && self.args.is_empty() {
            self.held = Some(self.rx.recv().await);
        }
    }

    /// The next key, waiting for it; `None` once they have ended.
    /// Cancel-safe, as `select!` needs.
    pub async fn recv(&mut self) -> Result<Option<String>, Failure> {
        let next = match self.at_hand() {
            Some(k) => k,
            None => self.rx.recv().await,
        };
        next.transpose().map_err(Failure::usage)
    }

    /// The next key if one has already come.
    pub fn try_recv(&mut self) -> Result<Option<String>, Failure> {
        let next = match self.at_hand() {
            Some(k) => k,
            None => self.rx.try_recv().ok(),
        };
        next.transpose().map_err(Failure::usage)
    }

    /// A key (or the end) already here: the next argument, or what
    /// [`first`](Self::first) read ahead.
    fn at_hand(&mut self) -> Option<Option<Result<String, String>>> {
        match self.args.pop_front() {
            Some(k) => Some(Some(Ok(k))),
            None => self.held.take(),
        }
    }
}

/// Keys from the arguments, or else one per line of stdin.
pub fn keys_from(args: Vec<String>) -> Result<Vec<String>, Failure> {
    if !args.is_empty() {
        return Ok(args);
    }
    let mut keys = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| Failure::usage(format!("cannot read keys from stdin: {e}")))?;
        let line = line.trim();
        if !line.is_empty() {
            keys.push(line.to_string());
        }
    }
    Ok(keys)
}

/// Says on stderr which of `keys` the scheduler does not know (asked
/// 4,096 at a time), with `why` (what that means for this verb): the
/// first named, the rest counted.
pub async fn note_unknown(client: &Client, keys: &[String], why: &str) -> Result<(), Failure> {
    let mut unknown = Vec::new();
    for chunk in keys.chunks(4096) {
        let states = client.status(chunk.to_vec()).await?;
        unknown.extend(
            states
                .into_iter()
                .filter(|(_, s)| s.is_none())
                .map(|(k, _)| k),
        );
    }
    if let Some(first) = unknown.first() {
        eprintln!(
            "dtask: note: the scheduler does not know {first}{}: {why}",
            and_more(unknown.len())
        );
    }
    Ok(())
}

/// ` (and N more)` for a list of `n` named by its first.
pub fn and_more(n: usize) -> String {
    match n {
        0 | 1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    }
}
