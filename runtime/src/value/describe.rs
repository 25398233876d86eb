//! Short descriptions of values and JSON for error messages and listings.

use super::*;

/// Describes a value briefly for error messages: `the string "abc"`, `the
/// integer 300`, `an array of 3 items`, `a map with keys a, b`, `nil`,
/// `12 bytes`. Long strings are truncated.
pub fn describe(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Boolean(b) => format!("the boolean {b}"),
        Value::Integer(n) => format!("the integer {n}"),
        Value::F32(x) => format!("the float {x:?}"),
        Value::F64(x) => format!("the float {x:?}"),
        Value::String(s) => match s.as_str() {
            Some(s) => format!("the string {:?}", truncate(s, DESCRIBE_STRING_MAX)),
            None => format!(
                "a string of {} bytes that is not valid UTF-8",
                s.as_bytes().len()
            ),
        },
        Value::Binary(bytes) => plural(bytes.len(), "byte"),
        Value::Array(items) if items.is_empty() => "an empty array".into(),
        Value::Array(items) => format!("an array of {}", plural(items.len(), "item")),
        Value::Map(entries) if entries.is_empty() => "an empty map".into(),
        Value::Map(entries) => format!(
            "a map with {}",
            key_list(entries.len(), entries.iter().map(|(k, _)| short_key(k)))
        ),
        Value::Ext(kind, data) => format!(
            "an extension value of type {kind} ({})",
            plural(data.len(), "byte")
        ),
    }
}

/// A size for people: `812 B`, `4.0 KiB`, `100.0 MiB`, `2.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut x = n as f64 / 1024.0;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    format!("{x:.1} {}", UNITS[unit])
}

/// Describes JSON for error messages, like [`describe`].
pub(super) fn describe_json(j: &serde_json::Value) -> String {
    use serde_json::Value as J;
    match j {
        J::Null => "null".into(),
        J::Bool(b) => format!("the boolean {b}"),
        J::Number(n) => format!("the number {n}"),
        J::String(s) => format!("the string {:?}", truncate(s, DESCRIBE_STRING_MAX)),
        J::Array(items) if items.is_empty() => "an empty array".into(),
        J::Array(items) => format!("an array of {}", plural(items.len(), "item")),
        J::Object(obj) if obj.is_empty() => "an empty object".into(),
        J::Object(obj) => format!(
            "an object with {}",
            key_list(obj.len(), obj.keys().map(|k| truncate(k, 20)))
        ),
    }
}

/// `key a` / `keys a, b, c` / `keys a, b, … (12 keys)`.
pub(super) fn key_list(count: usize, keys: impl Iterator<Item = String>) -> String {
    let shown: Vec<String> = keys.take(DESCRIBE_KEYS_MAX).collect();
    let mut out = String::from(if count == 1 { "key " } else { "keys " });
    out.push_str(&shown.join(", "));
    if count > shown.len() {
        let _ = write!(out, ", … ({count} keys)");
    }
    out
}

/// A map key as it appears in a list of keys.
pub(super) fn short_key(k: &Value) -> String {
    match k {
        Value::String(s) => match s.as_str() {
            Some(s) => truncate(s, 20),
            None => "<non-UTF-8>".into(),
        },
        Value::Integer(n) => n.to_string(),
        Value::Nil => "nil".into(),
        Value::Boolean(b) => b.to_string(),
        Value::F32(x) => format!("{x:?}"),
        Value::F64(x) => format!("{x:?}"),
        Value::Binary(_) => "<bytes>".into(),
        Value::Array(_) => "<array>".into(),
        Value::Map(_) => "<map>".into(),
        Value::Ext(..) => "<ext>".into(),
    }
}

/// `1 byte`, `12 bytes`.
pub(super) fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The first `max` characters of `s`, with `…` if cut.
pub(super) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}
