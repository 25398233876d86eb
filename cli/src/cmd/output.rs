//! Writing values to stdout: JSON, or raw bytes and text.

use super::*;

/// A value as one line of output: JSON, or with `raw` strings and bytes as
/// they are.
pub fn render(v: &Value, raw: bool) -> Vec<u8> {
    match v {
        Value::String(s) if raw => s.as_bytes().to_vec(),
        Value::Binary(b) if raw => b.clone(),
        _ => value::value_to_json(v).to_string().into_bytes(),
    }
}

/// [`render`] as printed alone: a line, but raw bytes exactly as they are
/// with nothing after them (so `> FILE` gives the bytes back).
pub fn render_line(v: Value, raw: bool) -> Vec<u8> {
    match v {
        Value::Binary(bytes) if raw => bytes,
        v => {
            let mut line = render(&v, raw);
            line.push(b'\n');
            line
        }
    }
}

/// Prints an item taken from a queue or variable: a value as one line
/// ([`render`]), a future as its key. The CLI's named client
/// (`DTASK_CLIENT`) now holds that key, until `dtask release KEY`.
pub fn print_item(item: Item, raw: bool) -> Result<(), Failure> {
    let line = match item {
        Item::Value(v) => render_line(v, raw),
        Item::Future(f) => {
            let mut key = f.key().as_bytes().to_vec();
            key.push(b'\n');
            // The scheduler made the named client a holder; dropping the
            // handle would give that up.
            std::mem::forget(f);
            key
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(&line)
        .and_then(|()| out.flush())
        .map_err(Failure::write)
}
