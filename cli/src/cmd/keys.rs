//! Keys from arguments or, streamed, from stdin.

use super::*;

/// Keys from the arguments, or else streamed from stdin one per line as
/// they arrive (so a verb can start before its producer has finished).
pub fn key_stream(args: Vec<String>) -> KeyStream {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    if args.is_empty() {
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { return };
                let k = line.trim();
                if !k.is_empty() && tx.send(k.to_string()).is_err() {
                    return;
                }
            }
        });
    } else {
        for k in args {
            let _ = tx.send(k);
        }
    }
    KeyStream { rx, held: None }
}

/// The keys of [`key_stream`], in order; `None` once they have ended.
pub struct KeyStream {
    rx: tokio::sync::mpsc::UnboundedReceiver<String>,
    // A key (or the end) read ahead by `first`, given out next.
    held: Option<Option<String>>,
}

impl KeyStream {
    /// Waits until the first key has come (or the keys ended with none).
    ///
    /// A reading verb waits for this before it looks for the scheduler: in
    /// `dtask map … | dtask gather` on a fresh state directory, the first
    /// key is printed only once `map` has started the local cluster.
    pub async fn first(&mut self) {
        if self.held.is_none() {
            self.held = Some(self.rx.recv().await);
        }
    }

    /// The next key, waiting for it; `None` once they have ended.
    /// Cancel-safe, as `select!` needs.
    pub async fn recv(&mut self) -> Option<String> {
        match self.held.take() {
            Some(k) => k,
            None => self.rx.recv().await,
        }
    }

    /// The next key if one has already come.
    pub fn try_recv(&mut self) -> Option<String> {
        match self.held.take() {
            Some(k) => k,
            None => self.rx.try_recv().ok(),
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
