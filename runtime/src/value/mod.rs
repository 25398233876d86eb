//! dtask's dynamic values and their conversions.
//!
//! A task's arguments and results travel as [`Value`]s (MessagePack values,
//! the `rmpv` crate). This module converts them, guided by the component's
//! WIT types, to and from wasmtime's [`Val`], to and from JSON (the command
//! line's notation) and to and from bytes.
//!
//! | WIT | value | JSON |
//! |---|---|---|
//! | bool, integers, floats, char, string | bool, int, float, string (char = 1-char string) | as is |
//! | `list<u8>` | bytes (MessagePack binary) | `{"$bytes": "<base64>"}` |
//! | `list<T>`, `tuple<..>` | array | array |
//! | record | map of field names (in field order) | object |
//! | variant, enum | `{"case": payload}`, or `"case"` without payload | same |
//! | `option<T>` | nil or the value | null or the value |
//! | `result<T, E>` | `{"ok": v}` / `{"err": e}` (nil for a side without payload) | same |
//! | flags | array of the set flags' names | array |
//! | `map<K, V>` | map | object (string keys) or array of `[k, v]` pairs |
//!
//! Conversions into typed values are strict: an integer must fit its type, a
//! record must have exactly its fields, a case or flag must exist. Errors
//! ([`ConvertError`]) carry the path to the offending part of the value.

use std::fmt::Write as _;

use crate::wit::Type;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use wasmtime::component::Val;

mod describe;
mod encoded;
pub mod huge;
mod json;
mod json_out;
mod msgpack;
mod wit;
mod words;

pub use describe::*;
pub use encoded::{Encoded, EncodedFile, FileBytes};
pub use json::*;
pub use json_out::*;
pub use msgpack::*;
pub use wit::*;
pub use words::*;

pub use rmpv::Value;

/// Deepest nesting of arrays and maps that [`decode`] accepts.
pub const MAX_DECODE_DEPTH: usize = 256;

/// Deepest type nesting [`type_to_wit`] prints before eliding with `…`.
const MAX_WIT_DEPTH: usize = 64;

/// Strings longer than this many characters are truncated by [`describe`].
const DESCRIBE_STRING_MAX: usize = 40;

/// Maps with more keys than this are abbreviated by [`describe`].
const DESCRIBE_KEYS_MAX: usize = 8;

/// Type descriptions in error messages longer than this are abbreviated.
const EXPECTED_MAX: usize = 100;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A value that does not fit its type, or bytes that are no value.
///
/// Displays as `at .points[2].x: expected s64, got the string "abc"`, or
/// just the message when the problem is at the root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", path_prefix(.path))]
pub struct ConvertError {
    /// Where in the value the problem is, such as `.points[2].x`; empty at
    /// the root.
    pub path: String,
    /// What is wrong, such as `expected s64, got the string "abc"`.
    pub message: String,
}

fn path_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("at {path}: ")
    }
}

/// One step of a [`ConvertError`]'s path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    /// A record field, map key or case name, printed `.name` (or `["odd name"]`).
    Field(&'a str),
    /// A list, tuple or array position, printed `[i]`.
    Index(usize),
}

impl<'a> From<&'a str> for Segment<'a> {
    fn from(name: &'a str) -> Self {
        Segment::Field(name)
    }
}

impl From<usize> for Segment<'_> {
    fn from(index: usize) -> Self {
        Segment::Index(index)
    }
}

impl ConvertError {
    /// An error at the root of the value.
    pub fn new(message: impl Into<String>) -> Self {
        ConvertError {
            path: String::new(),
            message: message.into(),
        }
    }

    /// Prefixes the path with `segment`, as the error bubbles up out of a
    /// field (`.name`) or an element (`[i]`).
    #[must_use]
    pub fn at<'a>(mut self, segment: impl Into<Segment<'a>>) -> Self {
        let step = match segment.into() {
            Segment::Field(name) if is_plain_name(name) => format!(".{name}"),
            Segment::Field(name) => format!("[{name:?}]"),
            Segment::Index(i) => format!("[{i}]"),
        };
        self.path.insert_str(0, &step);
        self
    }
}

/// Whether a name can be printed after a `.` in a path without confusion.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `expected <type>, got <description>`.
fn expected(ty: &Type, got: &Value) -> ConvertError {
    ConvertError::new(format!(
        "expected {}, got {}",
        expected_name(ty),
        describe(got)
    ))
}

/// `expected <type>, got <description>` for JSON input.
fn expected_json(ty: &Type, got: &serde_json::Value) -> ConvertError {
    ConvertError::new(format!(
        "expected {}, got {}",
        expected_name(ty),
        describe_json(got)
    ))
}

fn unsupported(ty: &Type) -> ConvertError {
    ConvertError::new(format!(
        "unsupported type {}: dtask cannot pass values of this type",
        expected_name(ty)
    ))
}

/// The type as it appears in "expected …" messages: WIT syntax, abbreviated
/// if long.
fn expected_name(ty: &Type) -> String {
    let full = type_to_wit(ty);
    if full.chars().count() <= EXPECTED_MAX {
        return full;
    }
    let mut short = String::new();
    write_wit(&mut short, ty, 1);
    if short.chars().count() <= EXPECTED_MAX {
        return short;
    }
    short.clear();
    write_wit(&mut short, ty, 0);
    short
}

// ---------------------------------------------------------------------------
// Scalars shared by all the typed conversions
// ---------------------------------------------------------------------------

/// The inclusive range of an integer type, or `None` for other types.
fn int_range(ty: &Type) -> Option<(i128, i128)> {
    Some(match ty {
        Type::S8 => (i8::MIN.into(), i8::MAX.into()),
        Type::U8 => (0, u8::MAX.into()),
        Type::S16 => (i16::MIN.into(), i16::MAX.into()),
        Type::U16 => (0, u16::MAX.into()),
        Type::S32 => (i32::MIN.into(), i32::MAX.into()),
        Type::U32 => (0, u32::MAX.into()),
        Type::S64 => (i64::MIN.into(), i64::MAX.into()),
        Type::U64 => (0, u64::MAX.into()),
        _ => return None,
    })
}

/// Checks that `n` fits the integer type `ty`.
fn check_int(n: i128, ty: &Type) -> Result<i128, ConvertError> {
    let (min, max) = int_range(ty).expect("check_int is only called for integer types");
    if n < min || n > max {
        return Err(ConvertError::new(format!(
            "{n} is out of range for {} ({min}..={max})",
            type_to_wit(ty)
        )));
    }
    Ok(n)
}

/// Builds the `Val` of integer type `ty`; `n` must have passed [`check_int`].
fn int_val(n: i128, ty: &Type) -> Val {
    match ty {
        Type::S8 => Val::S8(n as i8),
        Type::U8 => Val::U8(n as u8),
        Type::S16 => Val::S16(n as i16),
        Type::U16 => Val::U16(n as u16),
        Type::S32 => Val::S32(n as i32),
        Type::U32 => Val::U32(n as u32),
        Type::S64 => Val::S64(n as i64),
        _ => Val::U64(n as u64),
    }
}

/// The `Value` of an integer that fits in `i64` or `u64`.
fn int_value(n: i128) -> Value {
    if n < 0 {
        Value::from(n as i64)
    } else {
        Value::from(n as u64)
    }
}

fn integer_of(n: &rmpv::Integer) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// Narrows to `f32`, refusing finite numbers too large for it.
fn narrow_f32(x: f64, ty: &Type) -> Result<f32, ConvertError> {
    let y = x as f32;
    if y.is_infinite() && x.is_finite() {
        return Err(ConvertError::new(format!(
            "{x:?} is out of range for {}",
            type_to_wit(ty)
        )));
    }
    Ok(y)
}

/// The single `char` of `s`, if it has exactly one.
fn single_char(s: &str) -> Option<char> {
    let mut chars = s.chars();
    let c = chars.next()?;
    chars.next().is_none().then_some(c)
}

fn char_error(s: &str) -> ConvertError {
    ConvertError::new(format!(
        "expected char (a string of exactly one character), got a string of {} characters",
        s.chars().count()
    ))
}

/// Splits a variant-like value into its case name and payload: `"case"` or
/// a one-entry map `{"case": payload}`.
fn case_of<'v>(v: &'v Value, ty: &Type) -> Result<(&'v str, Option<&'v Value>), ConvertError> {
    match v {
        Value::String(s) => match s.as_str() {
            Some(name) => Ok((name, None)),
            None => Err(expected(ty, v)),
        },
        Value::Map(entries) if entries.len() == 1 => match &entries[0] {
            (Value::String(k), payload) => match k.as_str() {
                Some(name) => Ok((name, Some(payload))),
                None => Err(expected(ty, v)),
            },
            _ => Err(expected(ty, v)),
        },
        _ => Err(expected(ty, v)),
    }
}

/// Splits a variant-like JSON value: `"case"` or `{"case": payload}`.
fn case_of_json<'j>(
    j: &'j serde_json::Value,
    ty: &Type,
) -> Result<(&'j str, Option<&'j serde_json::Value>), ConvertError> {
    match j {
        serde_json::Value::String(name) => Ok((name, None)),
        serde_json::Value::Object(map) if map.len() == 1 => {
            let (name, payload) = map.iter().next().expect("one entry");
            Ok((name, Some(payload)))
        }
        _ => Err(expected_json(ty, j)),
    }
}

/// What a case (of a variant, or `ok`/`err` of a result) should be given,
/// once the case has been identified.
enum CaseShape<'a, P> {
    /// The case has no payload and none (or nil/null) was given.
    Bare,
    /// The case has a payload type and one was given.
    Payload(Type, &'a P),
}

/// Matches a case's declared payload type with what was given.
/// `is_null` says whether a given payload is nil/null (allowed for a case
/// without payload).
fn case_shape<'a, P>(
    name: &str,
    declared: Option<Type>,
    given: Option<&'a P>,
    is_null: impl Fn(&P) -> bool,
    describe_given: impl Fn(&P) -> String,
) -> Result<CaseShape<'a, P>, ConvertError> {
    match (declared, given) {
        (None, None) => Ok(CaseShape::Bare),
        (None, Some(p)) if is_null(p) => Ok(CaseShape::Bare),
        (None, Some(p)) => Err(ConvertError::new(format!(
            "case `{name}` has no payload, got {}",
            describe_given(p)
        ))
        .at(name)),
        (Some(t), Some(p)) => Ok(CaseShape::Payload(t, p)),
        (Some(t), None) => Err(ConvertError::new(format!(
            "case `{name}` needs a payload of type {}: write {{\"{name}\": …}}",
            expected_name(&t)
        ))),
    }
}

fn unknown_case<'n>(name: &str, kind: &str, names: impl Iterator<Item = &'n str>) -> ConvertError {
    ConvertError::new(format!(
        "unknown {kind} `{name}` (expected one of: {})",
        names.collect::<Vec<_>>().join(", ")
    ))
}

/// Splits a result-like value into `ok`/`err` and its payload.
fn result_case_of<'v>(v: &'v Value, ty: &Type) -> Result<(bool, Option<&'v Value>), ConvertError> {
    let (name, payload) = case_of(v, ty)?;
    match name {
        "ok" => Ok((true, payload)),
        "err" => Ok((false, payload)),
        _ => Err(ConvertError::new(format!(
            "expected {{\"ok\": …}} or {{\"err\": …}} for {}, got {}",
            expected_name(ty),
            describe(v)
        ))),
    }
}

fn result_case_of_json<'j>(
    j: &'j serde_json::Value,
    ty: &Type,
) -> Result<(bool, Option<&'j serde_json::Value>), ConvertError> {
    let (name, payload) = case_of_json(j, ty)?;
    match name {
        "ok" => Ok((true, payload)),
        "err" => Ok((false, payload)),
        _ => Err(ConvertError::new(format!(
            "expected {{\"ok\": …}} or {{\"err\": …}} for {}, got {}",
            expected_name(ty),
            describe_json(j)
        ))),
    }
}

/// Checks a list of record field names given against the declared ones:
/// returns, for each declared field, the index of the given entry.
fn match_fields<'g>(
    declared: &[&str],
    given: impl Iterator<Item = (usize, Option<&'g str>)>,
    describe_key: impl Fn(usize) -> String,
) -> Result<Vec<usize>, ConvertError> {
    let mut slots: Vec<Option<usize>> = vec![None; declared.len()];
    let mut unknown = Vec::new();
    for (i, key) in given {
        let Some(key) = key else {
            return Err(ConvertError::new(format!(
                "record keys must be strings, got {}",
                describe_key(i)
            )));
        };
        match declared.iter().position(|d| *d == key) {
            Some(pos) if slots[pos].is_some() => {
                return Err(ConvertError::new(format!("field `{key}` is given twice")));
            }
            Some(pos) => slots[pos] = Some(i),
            None => unknown.push(format!("`{key}`")),
        }
    }
    let fields = declared.join(", ");
    if !unknown.is_empty() {
        let s = if unknown.len() == 1 { "" } else { "s" };
        return Err(ConvertError::new(format!(
            "unknown field{s} {} (the record has fields: {fields})",
            unknown.join(", ")
        )));
    }
    let missing: Vec<String> = declared
        .iter()
        .zip(&slots)
        .filter(|(_, slot)| slot.is_none())
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    if !missing.is_empty() {
        let s = if missing.len() == 1 { "" } else { "s" };
        return Err(ConvertError::new(format!(
            "missing field{s} {} (the record has fields: {fields})",
            missing.join(", ")
        )));
    }
    Ok(slots
        .into_iter()
        .map(|slot| slot.expect("checked"))
        .collect())
}

/// Sorts flag names given into declaration order, checking each exists.
fn match_flags<'g>(
    declared: &[&str],
    given: impl Iterator<Item = (usize, Option<&'g str>)>,
    describe_item: impl Fn(usize) -> String,
) -> Result<Vec<String>, ConvertError> {
    let mut set = vec![false; declared.len()];
    for (i, name) in given {
        let Some(name) = name else {
            return Err(ConvertError::new(format!(
                "expected a flag name (a string), got {}",
                describe_item(i)
            ))
            .at(i));
        };
        match declared.iter().position(|d| *d == name) {
            Some(pos) => set[pos] = true,
            None => {
                return Err(unknown_case(name, "flag", declared.iter().copied()).at(i));
            }
        }
    }
    Ok(declared
        .iter()
        .zip(set)
        .filter(|(_, on)| *on)
        .map(|(name, _)| name.to_string())
        .collect())
}

// ---------------------------------------------------------------------------
// Value -> Val
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Val -> Value
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// JSON -> Value (typed)
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Shell words
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Untyped JSON
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// WIT syntax
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Descriptions
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// MessagePack
// ---------------------------------------------------------------------------

#[cfg(test)]
pub(crate) mod tests;
