//! Keys from arguments or, streamed, from stdin.

use super::*;

/// Keys from the arguments, or else streamed from stdin one per line as
/// they arrive (so a verb can start before its producer has finished).
pub fn key_stream(args: Vec<String>) -> tokio::sync::mpsc::UnboundedReceiver<String> {
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
    rx
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
