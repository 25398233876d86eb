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

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use wasmtime::component::Val;
use wasmtime::component::types::Type;

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

/// Converts a dynamic value into a wasmtime [`Val`] of component type `ty`,
/// strictly.
///
/// Integers must fit the type (300 is no `s8`); floats also accept integers;
/// a `char` is a string of one character; `list<u8>` takes bytes or an array
/// of integers; a record needs a map with exactly its fields; a variant takes
/// `"case"` (no payload) or `{"case": payload}`; an option takes nil or the
/// inner value; a result `{"ok": v}` or `{"err": e}`; flags an array of flag
/// names. Resources, futures, streams and error contexts are unsupported.
pub fn value_to_val(v: &Value, ty: &Type) -> Result<Val, ConvertError> {
    Ok(match ty {
        Type::Bool => match v {
            Value::Boolean(b) => Val::Bool(*b),
            _ => return Err(expected(ty, v)),
        },
        Type::S8
        | Type::U8
        | Type::S16
        | Type::U16
        | Type::S32
        | Type::U32
        | Type::S64
        | Type::U64 => match v {
            Value::Integer(n) => {
                let n = integer_of(n).ok_or_else(|| expected(ty, v))?;
                int_val(check_int(n, ty)?, ty)
            }
            _ => return Err(expected(ty, v)),
        },
        Type::Float32 | Type::Float64 => {
            let x = match v {
                Value::F32(x) => f64::from(*x),
                Value::F64(x) => *x,
                Value::Integer(n) => match (n.as_i64(), n.as_u64()) {
                    (Some(i), _) => i as f64,
                    (None, Some(u)) => u as f64,
                    (None, None) => return Err(expected(ty, v)),
                },
                _ => return Err(expected(ty, v)),
            };
            match (ty, v) {
                (Type::Float32, Value::F32(x)) => Val::Float32(*x),
                (Type::Float32, _) => Val::Float32(narrow_f32(x, ty)?),
                _ => Val::Float64(x),
            }
        }
        Type::Char => match v.as_str() {
            Some(s) => Val::Char(single_char(s).ok_or_else(|| char_error(s))?),
            None => return Err(expected(ty, v)),
        },
        Type::String => match v {
            Value::String(s) => match s.as_str() {
                Some(s) => Val::String(s.to_owned()),
                None => return Err(ConvertError::new("the string is not valid UTF-8")),
            },
            _ => return Err(expected(ty, v)),
        },
        Type::List(list) => {
            let elem = list.ty();
            match (v, &elem) {
                (Value::Binary(bytes), Type::U8) => {
                    Val::List(bytes.iter().map(|b| Val::U8(*b)).collect())
                }
                (Value::Array(items), _) => Val::List(vals_of(items, &elem)?),
                _ => return Err(expected(ty, v)),
            }
        }
        Type::FixedLengthList(list) => {
            let elem = list.ty();
            let len = list.len() as usize;
            let items: Vec<Val> = match (v, &elem) {
                (Value::Binary(bytes), Type::U8) => bytes.iter().map(|b| Val::U8(*b)).collect(),
                (Value::Array(items), _) => vals_of(items, &elem)?,
                _ => return Err(expected(ty, v)),
            };
            if items.len() != len {
                return Err(ConvertError::new(format!(
                    "expected {} items for {}, got {}",
                    len,
                    expected_name(ty),
                    items.len()
                )));
            }
            Val::FixedLengthList(items)
        }
        Type::Map(map) => {
            let (kt, vt) = (map.key(), map.value());
            let pairs = pairs_of(v).ok_or_else(|| expected(ty, v))?;
            let mut out = Vec::with_capacity(pairs.len());
            for (i, (k, val)) in pairs.into_iter().enumerate() {
                let key = value_to_val(k, &kt)
                    .map_err(|e| ConvertError::new(format!("in a key: {}", e.message)).at(i))?;
                let value = value_to_val(val, &vt).map_err(|e| match k.as_str() {
                    Some(name) => e.at(name),
                    None => e.at(i),
                })?;
                out.push((key, value));
            }
            Val::Map(out)
        }
        Type::Record(record) => {
            let Value::Map(entries) = v else {
                return Err(expected(ty, v));
            };
            let fields: Vec<_> = record.fields().collect();
            let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
            let order = match_fields(
                &names,
                entries
                    .iter()
                    .enumerate()
                    .map(|(i, (k, _))| (i, k.as_str())),
                |i| describe(&entries[i].0),
            )?;
            let mut out = Vec::with_capacity(fields.len());
            for (field, i) in fields.iter().zip(order) {
                let val = value_to_val(&entries[i].1, &field.ty).map_err(|e| e.at(field.name))?;
                out.push((field.name.to_owned(), val));
            }
            Val::Record(out)
        }
        Type::Tuple(tuple) => {
            let Value::Array(items) = v else {
                return Err(expected(ty, v));
            };
            let types: Vec<Type> = tuple.types().collect();
            if items.len() != types.len() {
                return Err(expected(ty, v));
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, (item, t)) in items.iter().zip(&types).enumerate() {
                out.push(value_to_val(item, t).map_err(|e| e.at(i))?);
            }
            Val::Tuple(out)
        }
        Type::Variant(variant) => {
            let (name, payload) = case_of(v, ty)?;
            let case = variant
                .cases()
                .find(|c| c.name == name)
                .ok_or_else(|| unknown_case(name, "case", variant.cases().map(|c| c.name)))?;
            match case_shape(name, case.ty, payload, |p| p.is_nil(), describe)? {
                CaseShape::Bare => Val::Variant(name.to_owned(), None),
                CaseShape::Payload(t, p) => {
                    let val = value_to_val(p, &t).map_err(|e| e.at(name))?;
                    Val::Variant(name.to_owned(), Some(Box::new(val)))
                }
            }
        }
        Type::Enum(en) => {
            let Some(name) = v.as_str() else {
                return Err(expected(ty, v));
            };
            if !en.names().any(|n| n == name) {
                return Err(unknown_case(name, "case", en.names()));
            }
            Val::Enum(name.to_owned())
        }
        Type::Option(option) => match v {
            Value::Nil => Val::Option(None),
            _ => Val::Option(Some(Box::new(value_to_val(v, &option.ty())?))),
        },
        Type::Result(result) => {
            let (is_ok, payload) = result_case_of(v, ty)?;
            let (name, declared) = if is_ok {
                ("ok", result.ok())
            } else {
                ("err", result.err())
            };
            let inner = match case_shape(name, declared, payload, |p| p.is_nil(), describe)? {
                CaseShape::Bare => None,
                CaseShape::Payload(t, p) => {
                    Some(Box::new(value_to_val(p, &t).map_err(|e| e.at(name))?))
                }
            };
            Val::Result(if is_ok { Ok(inner) } else { Err(inner) })
        }
        Type::Flags(flags) => {
            let Value::Array(items) = v else {
                return Err(expected(ty, v));
            };
            let names: Vec<&str> = flags.names().collect();
            Val::Flags(match_flags(
                &names,
                items.iter().enumerate().map(|(i, item)| (i, item.as_str())),
                |i| describe(&items[i]),
            )?)
        }
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            return Err(unsupported(ty));
        }
    })
}

/// Converts every element of an array, tagging errors with the index.
fn vals_of(items: &[Value], elem: &Type) -> Result<Vec<Val>, ConvertError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| value_to_val(item, elem).map_err(|e| e.at(i)))
        .collect()
}

/// The entries of a map, or of an array of `[key, value]` pairs.
fn pairs_of(v: &Value) -> Option<Vec<(&Value, &Value)>> {
    match v {
        Value::Map(entries) => Some(entries.iter().map(|(k, v)| (k, v)).collect()),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Array(pair) if pair.len() == 2 => Some((&pair[0], &pair[1])),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Val -> Value
// ---------------------------------------------------------------------------

/// Converts a wasmtime [`Val`] into a dynamic value.
///
/// A list of `u8` becomes bytes; a record a map with string keys in field
/// order; a variant `"case"` or `{"case": payload}`; an option nil or the
/// value; a result `{"ok": v}`/`{"err": e}`; flags an array of names.
///
/// An empty list carries no element type, so an empty `list<u8>` becomes an
/// empty array rather than empty bytes (both convert back alike). Values
/// with no representation (resources, futures, streams, error contexts)
/// become the string `<resource>`, `<future>`, `<stream>` or
/// `<error-context>`.
pub fn val_to_value(val: &Val) -> Value {
    match val {
        Val::Bool(b) => Value::Boolean(*b),
        Val::S8(n) => Value::from(i64::from(*n)),
        Val::U8(n) => Value::from(u64::from(*n)),
        Val::S16(n) => Value::from(i64::from(*n)),
        Val::U16(n) => Value::from(u64::from(*n)),
        Val::S32(n) => Value::from(i64::from(*n)),
        Val::U32(n) => Value::from(u64::from(*n)),
        Val::S64(n) => Value::from(*n),
        Val::U64(n) => Value::from(*n),
        Val::Float32(x) => Value::F32(*x),
        Val::Float64(x) => Value::F64(*x),
        Val::Char(c) => Value::from(c.to_string()),
        Val::String(s) => Value::from(s.as_str()),
        Val::List(items) | Val::FixedLengthList(items) => list_value(items),
        Val::Map(pairs) => Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (val_to_value(k), val_to_value(v)))
                .collect(),
        ),
        Val::Record(fields) => Value::Map(
            fields
                .iter()
                .map(|(name, v)| (Value::from(name.as_str()), val_to_value(v)))
                .collect(),
        ),
        Val::Tuple(items) => Value::Array(items.iter().map(val_to_value).collect()),
        Val::Variant(name, payload) => case_value(name, payload.as_deref().map(val_to_value)),
        Val::Enum(name) => Value::from(name.as_str()),
        Val::Option(None) => Value::Nil,
        Val::Option(Some(v)) => val_to_value(v),
        Val::Result(Ok(v)) => case_value("ok", Some(v.as_deref().map_or(Value::Nil, val_to_value))),
        Val::Result(Err(e)) => {
            case_value("err", Some(e.as_deref().map_or(Value::Nil, val_to_value)))
        }
        Val::Flags(names) => Value::Array(names.iter().map(|n| Value::from(n.as_str())).collect()),
        Val::Resource(_) => Value::from("<resource>"),
        Val::Future(_) => Value::from("<future>"),
        Val::Stream(_) => Value::from("<stream>"),
        Val::ErrorContext(_) => Value::from("<error-context>"),
    }
}

fn list_value(items: &[Val]) -> Value {
    if !items.is_empty() && items.iter().all(|v| matches!(v, Val::U8(_))) {
        let bytes = items
            .iter()
            .map(|v| match v {
                Val::U8(b) => *b,
                _ => unreachable!("checked above"),
            })
            .collect();
        return Value::Binary(bytes);
    }
    Value::Array(items.iter().map(val_to_value).collect())
}

/// `"case"` without payload, `{"case": payload}` with.
fn case_value(name: &str, payload: Option<Value>) -> Value {
    match payload {
        None => Value::from(name),
        Some(p) => Value::Map(vec![(Value::from(name), p)]),
    }
}

// ---------------------------------------------------------------------------
// JSON -> Value (typed)
// ---------------------------------------------------------------------------

/// Converts JSON given by the user into a value of type `ty`, checking it
/// as strictly as [`value_to_val`] does.
///
/// JSON numbers become integers or floats as the type says (floats also
/// accept the strings `"NaN"`, `"inf"` and `"-inf"`). For `list<u8>`,
/// `{"$bytes": "<base64>"}`, a string (its UTF-8 bytes) and an array of
/// integers all become bytes. Variants, results and flags are normalised
/// (`{"case": null}` for a case without payload becomes `"case"`; flags are
/// put in declaration order), so the result always converts with
/// [`value_to_val`].
pub fn json_to_value(j: &serde_json::Value, ty: &Type) -> Result<Value, ConvertError> {
    use serde_json::Value as J;
    Ok(match ty {
        Type::Bool => match j {
            J::Bool(b) => Value::Boolean(*b),
            _ => return Err(expected_json(ty, j)),
        },
        Type::S8
        | Type::U8
        | Type::S16
        | Type::U16
        | Type::S32
        | Type::U32
        | Type::S64
        | Type::U64 => {
            let J::Number(n) = j else {
                return Err(expected_json(ty, j));
            };
            let n = if let Some(i) = n.as_i64() {
                i128::from(i)
            } else if let Some(u) = n.as_u64() {
                i128::from(u)
            } else {
                match n.as_f64() {
                    // Integers too large for u64 arrive as floats.
                    Some(x) if x.fract() == 0.0 && x.abs() >= 9.0e18 => {
                        return Err(ConvertError::new(format!(
                            "{n} is out of range for {}",
                            type_to_wit(ty)
                        )));
                    }
                    _ => return Err(expected_json(ty, j)),
                }
            };
            int_value(check_int(n, ty)?)
        }
        Type::Float32 | Type::Float64 => {
            let x = match j {
                J::Number(n) => n.as_f64().ok_or_else(|| expected_json(ty, j))?,
                J::String(s) => match s.to_ascii_lowercase().as_str() {
                    "nan" => f64::NAN,
                    "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
                    "-inf" | "-infinity" => f64::NEG_INFINITY,
                    _ => return Err(expected_json(ty, j)),
                },
                _ => return Err(expected_json(ty, j)),
            };
            if matches!(ty, Type::Float32) {
                Value::F32(narrow_f32(x, ty)?)
            } else {
                Value::F64(x)
            }
        }
        Type::Char => match j {
            J::String(s) => {
                single_char(s).ok_or_else(|| char_error(s))?;
                Value::from(s.as_str())
            }
            _ => return Err(expected_json(ty, j)),
        },
        Type::String => match j {
            J::String(s) => Value::from(s.as_str()),
            _ => return Err(expected_json(ty, j)),
        },
        Type::List(list) => {
            let elem = list.ty();
            if matches!(elem, Type::U8) {
                Value::Binary(json_bytes(j, ty)?)
            } else {
                let J::Array(items) = j else {
                    return Err(expected_json(ty, j));
                };
                Value::Array(json_items(items, &elem)?)
            }
        }
        Type::FixedLengthList(list) => {
            let elem = list.ty();
            let len = list.len() as usize;
            let (out, n) = if matches!(elem, Type::U8) {
                let bytes = json_bytes(j, ty)?;
                let n = bytes.len();
                (Value::Binary(bytes), n)
            } else {
                let J::Array(items) = j else {
                    return Err(expected_json(ty, j));
                };
                (Value::Array(json_items(items, &elem)?), items.len())
            };
            if n != len {
                return Err(ConvertError::new(format!(
                    "expected {len} items for {}, got {n}",
                    expected_name(ty)
                )));
            }
            out
        }
        Type::Map(map) => {
            let (kt, vt) = (map.key(), map.value());
            let mut out = Vec::new();
            match j {
                J::Object(obj) => {
                    for (k, v) in obj {
                        // Object keys are strings: read them as words.
                        let key = word_to_value(k, &kt).map_err(|e| {
                            ConvertError::new(format!("in the key {k:?}: {}", e.message))
                        })?;
                        let value = json_to_value(v, &vt).map_err(|e| e.at(k.as_str()))?;
                        out.push((key, value));
                    }
                }
                J::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let pair = match item {
                            J::Array(pair) if pair.len() == 2 => pair,
                            _ => {
                                return Err(ConvertError::new(format!(
                                    "expected a [key, value] pair, got {}",
                                    describe_json(item)
                                ))
                                .at(i));
                            }
                        };
                        let key = json_to_value(&pair[0], &kt).map_err(|e| e.at(0usize).at(i))?;
                        let value = json_to_value(&pair[1], &vt).map_err(|e| e.at(1usize).at(i))?;
                        out.push((key, value));
                    }
                }
                _ => return Err(expected_json(ty, j)),
            }
            Value::Map(out)
        }
        Type::Record(record) => {
            let J::Object(obj) = j else {
                return Err(expected_json(ty, j));
            };
            let fields: Vec<_> = record.fields().collect();
            let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
            match_fields(
                &names,
                obj.keys().enumerate().map(|(i, k)| (i, Some(k.as_str()))),
                |_| String::new(),
            )?;
            let mut out = Vec::with_capacity(fields.len());
            for field in &fields {
                let v = json_to_value(&obj[field.name], &field.ty).map_err(|e| e.at(field.name))?;
                out.push((Value::from(field.name), v));
            }
            Value::Map(out)
        }
        Type::Tuple(tuple) => {
            let types: Vec<Type> = tuple.types().collect();
            match j {
                J::Array(items) if items.len() == types.len() => Value::Array(
                    items
                        .iter()
                        .zip(&types)
                        .enumerate()
                        .map(|(i, (item, t))| json_to_value(item, t).map_err(|e| e.at(i)))
                        .collect::<Result<_, _>>()?,
                ),
                _ => return Err(expected_json(ty, j)),
            }
        }
        Type::Variant(variant) => {
            let (name, payload) = case_of_json(j, ty)?;
            let case = variant
                .cases()
                .find(|c| c.name == name)
                .ok_or_else(|| unknown_case(name, "case", variant.cases().map(|c| c.name)))?;
            match case_shape(name, case.ty, payload, |p| p.is_null(), describe_json)? {
                CaseShape::Bare => case_value(name, None),
                CaseShape::Payload(t, p) => {
                    case_value(name, Some(json_to_value(p, &t).map_err(|e| e.at(name))?))
                }
            }
        }
        Type::Enum(en) => {
            let J::String(name) = j else {
                return Err(expected_json(ty, j));
            };
            if !en.names().any(|n| n == name) {
                return Err(unknown_case(name, "case", en.names()));
            }
            Value::from(name.as_str())
        }
        Type::Option(option) => match j {
            J::Null => Value::Nil,
            _ => json_to_value(j, &option.ty())?,
        },
        Type::Result(result) => {
            let (is_ok, payload) = result_case_of_json(j, ty)?;
            let (name, declared) = if is_ok {
                ("ok", result.ok())
            } else {
                ("err", result.err())
            };
            let inner = match case_shape(name, declared, payload, |p| p.is_null(), describe_json)? {
                CaseShape::Bare => Value::Nil,
                CaseShape::Payload(t, p) => json_to_value(p, &t).map_err(|e| e.at(name))?,
            };
            case_value(name, Some(inner))
        }
        Type::Flags(flags) => {
            let J::Array(items) = j else {
                return Err(expected_json(ty, j));
            };
            let names: Vec<&str> = flags.names().collect();
            let set = match_flags(
                &names,
                items.iter().enumerate().map(|(i, item)| (i, item.as_str())),
                |i| describe_json(&items[i]),
            )?;
            Value::Array(set.into_iter().map(Value::from).collect())
        }
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            return Err(unsupported(ty));
        }
    })
}

fn json_items(items: &[serde_json::Value], elem: &Type) -> Result<Vec<Value>, ConvertError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| json_to_value(item, elem).map_err(|e| e.at(i)))
        .collect()
}

/// Bytes from JSON: `{"$bytes": base64}`, a string (UTF-8) or an array of
/// integers 0..=255.
fn json_bytes(j: &serde_json::Value, ty: &Type) -> Result<Vec<u8>, ConvertError> {
    use serde_json::Value as J;
    match j {
        J::String(s) => Ok(s.as_bytes().to_vec()),
        J::Object(obj) if obj.len() == 1 && obj.contains_key("$bytes") => match &obj["$bytes"] {
            J::String(b64) => BASE64.decode(b64).map_err(|e| {
                ConvertError::new(format!("invalid base64 in {{\"$bytes\": …}}: {e}"))
            }),
            other => Err(ConvertError::new(format!(
                "expected a base64 string in {{\"$bytes\": …}}, got {}",
                describe_json(other)
            ))),
        },
        J::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item.as_u64() {
                Some(b) if b <= 255 => Ok(b as u8),
                Some(b) => {
                    Err(ConvertError::new(format!("{b} is out of range for u8 (0..=255)")).at(i))
                }
                None => Err(
                    ConvertError::new(format!("expected u8, got {}", describe_json(item))).at(i),
                ),
            })
            .collect(),
        _ => Err(ConvertError::new(format!(
            "expected {} (bytes: {{\"$bytes\": \"<base64>\"}}, a string or an array of integers), got {}",
            expected_name(ty),
            describe_json(j)
        ))),
    }
}

// ---------------------------------------------------------------------------
// Shell words
// ---------------------------------------------------------------------------

/// Converts one command-line word into a value of the parameter's type.
///
/// A `string` takes the word literally and a `char` its single character;
/// integers are decimal (out-of-range numbers are refused); floats are
/// parsed (`inf` and `NaN` too); a `bool` is `true` or `false`; `list<u8>`
/// takes the word's bytes (or, when the word is exactly a JSON
/// `{"$bytes": "<base64>"}`, the decoded bytes); an enum, or a variant case
/// without payload, takes a bare case name. Anything else is JSON, checked
/// with [`json_to_value`].
pub fn word_to_value(word: &str, ty: &Type) -> Result<Value, ConvertError> {
    Ok(match ty {
        Type::String => Value::from(word),
        Type::Char => {
            single_char(word).ok_or_else(|| char_error(word))?;
            Value::from(word)
        }
        Type::Bool => match word {
            "true" => Value::Boolean(true),
            "false" => Value::Boolean(false),
            _ => {
                return Err(ConvertError::new(format!(
                    "expected bool (true or false), got {word:?}"
                )));
            }
        },
        Type::S8
        | Type::U8
        | Type::S16
        | Type::U16
        | Type::S32
        | Type::U32
        | Type::S64
        | Type::U64 => {
            let digits = word.strip_prefix(['+', '-']).unwrap_or(word);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ConvertError::new(format!(
                    "expected {}, got {word:?}, which is not a decimal integer",
                    type_to_wit(ty)
                )));
            }
            let out_of_range = || {
                let (min, max) = int_range(ty).expect("integer type");
                ConvertError::new(format!(
                    "{word} is out of range for {} ({min}..={max})",
                    type_to_wit(ty)
                ))
            };
            // With the digits checked, parsing fails only on overflow.
            let n: i128 = word.parse().map_err(|_| out_of_range())?;
            int_value(check_int(n, ty).map_err(|_| out_of_range())?)
        }
        Type::Float32 | Type::Float64 => {
            let x: f64 = word.trim().parse().map_err(|_| {
                ConvertError::new(format!(
                    "expected {}, got {word:?}, which is not a number",
                    type_to_wit(ty)
                ))
            })?;
            if matches!(ty, Type::Float32) {
                Value::F32(narrow_f32(x, ty)?)
            } else {
                Value::F64(x)
            }
        }
        Type::List(list) if matches!(list.ty(), Type::U8) => {
            match serde_json::from_str::<serde_json::Value>(word) {
                Ok(j @ serde_json::Value::Object(_)) if j.get("$bytes").is_some() => {
                    Value::Binary(json_bytes(&j, ty)?)
                }
                _ => Value::Binary(word.as_bytes().to_vec()),
            }
        }
        Type::Enum(en) if en.names().any(|n| n == word) => Value::from(word),
        Type::Variant(variant) if variant.cases().any(|c| c.name == word && c.ty.is_none()) => {
            Value::from(word)
        }
        _ => {
            let j: serde_json::Value = serde_json::from_str(word).map_err(|e| {
                ConvertError::new(format!(
                    "a value of type {} is written as JSON, but {:?} is not valid JSON: {e}",
                    expected_name(ty),
                    truncate(word, DESCRIBE_STRING_MAX)
                ))
            })?;
            json_to_value(&j, ty)?
        }
    })
}

// ---------------------------------------------------------------------------
// Untyped JSON
// ---------------------------------------------------------------------------

/// Converts a value to JSON for output, without a type.
///
/// Bytes become `{"$bytes": "<base64>"}`; a map whose keys are all strings
/// an object, any other map an array of `[key, value]` pairs; NaN and
/// infinities `null`; an extension value `{"$ext": [type, "<base64>"]}`.
pub fn value_to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => J::from(i),
            (None, Some(u)) => J::from(u),
            (None, None) => J::Null,
        },
        // Through the shortest decimal form, so 0.1f32 prints as 0.1.
        Value::F32(x) => float_json(x.to_string().parse().unwrap_or(f64::NAN)),
        Value::F64(x) => float_json(*x),
        Value::String(s) => match s.as_str() {
            Some(s) => J::from(s),
            None => J::from(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        },
        Value::Binary(bytes) => {
            let mut obj = serde_json::Map::new();
            obj.insert("$bytes".into(), J::from(BASE64.encode(bytes)));
            J::Object(obj)
        }
        Value::Array(items) => J::Array(items.iter().map(value_to_json).collect()),
        Value::Map(entries) => {
            if entries.iter().all(|(k, _)| k.as_str().is_some()) {
                let mut obj = serde_json::Map::new();
                for (k, v) in entries {
                    obj.insert(k.as_str().expect("checked").to_owned(), value_to_json(v));
                }
                J::Object(obj)
            } else {
                J::Array(
                    entries
                        .iter()
                        .map(|(k, v)| J::Array(vec![value_to_json(k), value_to_json(v)]))
                        .collect(),
                )
            }
        }
        Value::Ext(kind, data) => {
            let mut obj = serde_json::Map::new();
            obj.insert(
                "$ext".into(),
                J::Array(vec![J::from(*kind), J::from(BASE64.encode(data))]),
            );
            J::Object(obj)
        }
    }
}

/// A float as JSON: a number, or for the values JSON has no number for the
/// strings `"NaN"`, `"inf"` and `"-inf"` (which float parameters accept),
/// never `null`, which is an empty option.
fn float_json(x: f64) -> serde_json::Value {
    match serde_json::Number::from_f64(x) {
        Some(n) => serde_json::Value::Number(n),
        None if x.is_nan() => serde_json::Value::from("NaN"),
        None if x > 0.0 => serde_json::Value::from("inf"),
        None => serde_json::Value::from("-inf"),
    }
}

/// Converts JSON to a value without a type (the inverse of
/// [`value_to_json`] as far as JSON allows).
///
/// `{"$bytes": "<base64>"}` with valid base64 becomes bytes and
/// `{"$ext": [type, "<base64>"]}` an extension value; integers become
/// integers, other numbers 64-bit floats; objects maps with string keys.
pub fn untyped_json_to_value(j: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match j {
        J::Null => Value::Nil,
        J::Bool(b) => Value::Boolean(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        J::String(s) => Value::from(s.as_str()),
        J::Array(items) => Value::Array(items.iter().map(untyped_json_to_value).collect()),
        J::Object(obj) => {
            if obj.len() == 1 {
                if let Some(J::String(b64)) = obj.get("$bytes")
                    && let Ok(bytes) = BASE64.decode(b64)
                {
                    return Value::Binary(bytes);
                }
                if let Some(J::Array(ext)) = obj.get("$ext")
                    && let [J::Number(kind), J::String(b64)] = ext.as_slice()
                    && let Some(kind) = kind.as_i64().and_then(|k| i8::try_from(k).ok())
                    && let Ok(data) = BASE64.decode(b64)
                {
                    return Value::Ext(kind, data);
                }
            }
            Value::Map(
                obj.iter()
                    .map(|(k, v)| (Value::from(k.as_str()), untyped_json_to_value(v)))
                    .collect(),
            )
        }
    }
}

// ---------------------------------------------------------------------------
// WIT syntax
// ---------------------------------------------------------------------------

/// Writes a type in WIT syntax, such as `list<u8>`, `tuple<s64, string>`,
/// `result<_, string>` or `option<s64>`.
///
/// wasmtime's types carry no names for records, variants, enums and flags,
/// so these print their structure inline: `record { a: s64, b: string }`,
/// `variant { none, some(s64) }`, `enum { red, green }`,
/// `flags { read, write }`. Resources print as `own<resource>` and
/// `borrow<resource>`.
pub fn type_to_wit(ty: &Type) -> String {
    let mut out = String::new();
    write_wit(&mut out, ty, MAX_WIT_DEPTH);
    out
}

/// Writes `ty`; types nested deeper than `depth` are elided, as `list<…>`
/// or `record {…}`.
fn write_wit(out: &mut String, ty: &Type, depth: usize) {
    let inner = depth.saturating_sub(1);
    let prim = match ty {
        Type::Bool => "bool",
        Type::S8 => "s8",
        Type::U8 => "u8",
        Type::S16 => "s16",
        Type::U16 => "u16",
        Type::S32 => "s32",
        Type::U32 => "u32",
        Type::S64 => "s64",
        Type::U64 => "u64",
        Type::Float32 => "f32",
        Type::Float64 => "f64",
        Type::Char => "char",
        Type::String => "string",
        Type::ErrorContext => "error-context",
        Type::Own(_) => "own<resource>",
        Type::Borrow(_) => "borrow<resource>",
        _ => "",
    };
    if !prim.is_empty() {
        out.push_str(prim);
        return;
    }
    if depth == 0 {
        out.push_str(match ty {
            Type::List(_) | Type::FixedLengthList(_) => "list<…>",
            Type::Map(_) => "map<…>",
            Type::Tuple(_) => "tuple<…>",
            Type::Option(_) => "option<…>",
            Type::Result(_) => "result<…>",
            Type::Future(_) => "future<…>",
            Type::Stream(_) => "stream<…>",
            Type::Record(_) => "record {…}",
            Type::Variant(_) => "variant {…}",
            Type::Enum(_) => "enum {…}",
            _ => "flags {…}",
        });
        return;
    }
    match ty {
        Type::List(list) => {
            out.push_str("list<");
            write_wit(out, &list.ty(), inner);
            out.push('>');
        }
        Type::FixedLengthList(list) => {
            out.push_str("list<");
            write_wit(out, &list.ty(), inner);
            let _ = write!(out, ", {}>", list.len());
        }
        Type::Map(map) => {
            out.push_str("map<");
            write_wit(out, &map.key(), inner);
            out.push_str(", ");
            write_wit(out, &map.value(), inner);
            out.push('>');
        }
        Type::Tuple(tuple) => {
            out.push_str("tuple<");
            for (i, t) in tuple.types().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_wit(out, &t, inner);
            }
            out.push('>');
        }
        Type::Option(option) => {
            out.push_str("option<");
            write_wit(out, &option.ty(), inner);
            out.push('>');
        }
        Type::Result(result) => match (result.ok(), result.err()) {
            (None, None) => out.push_str("result"),
            (Some(ok), None) => {
                out.push_str("result<");
                write_wit(out, &ok, inner);
                out.push('>');
            }
            (ok, Some(err)) => {
                out.push_str("result<");
                match ok {
                    Some(ok) => write_wit(out, &ok, inner),
                    None => out.push('_'),
                }
                out.push_str(", ");
                write_wit(out, &err, inner);
                out.push('>');
            }
        },
        Type::Future(f) => {
            out.push_str("future");
            if let Some(t) = f.ty() {
                out.push('<');
                write_wit(out, &t, inner);
                out.push('>');
            }
        }
        Type::Stream(s) => {
            out.push_str("stream");
            if let Some(t) = s.ty() {
                out.push('<');
                write_wit(out, &t, inner);
                out.push('>');
            }
        }
        Type::Record(record) => {
            out.push_str("record { ");
            for (i, field) in record.fields().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(field.name);
                out.push_str(": ");
                write_wit(out, &field.ty, inner);
            }
            out.push_str(" }");
        }
        Type::Variant(variant) => {
            out.push_str("variant { ");
            for (i, case) in variant.cases().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(case.name);
                if let Some(t) = &case.ty {
                    out.push('(');
                    write_wit(out, t, inner);
                    out.push(')');
                }
            }
            out.push_str(" }");
        }
        Type::Enum(en) => {
            out.push_str("enum { ");
            out.push_str(&en.names().collect::<Vec<_>>().join(", "));
            out.push_str(" }");
        }
        Type::Flags(flags) => {
            out.push_str("flags { ");
            out.push_str(&flags.names().collect::<Vec<_>>().join(", "));
            out.push_str(" }");
        }
        _ => unreachable!("primitive types are handled above"),
    }
}

// ---------------------------------------------------------------------------
// Descriptions
// ---------------------------------------------------------------------------

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

/// The bytes held by a value's strings and byte strings, nested ones
/// included: what copying it into a guest needs at least.
pub fn payload_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.as_bytes().len(),
        Value::Binary(b) => b.len(),
        Value::Ext(_, b) => b.len(),
        Value::Array(items) => items.iter().map(payload_bytes).sum(),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| payload_bytes(k) + payload_bytes(v))
            .sum(),
        Value::Nil | Value::Boolean(_) | Value::Integer(_) | Value::F32(_) | Value::F64(_) => 0,
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

/// The MessagePack encoding of the byte string `b` (as `encode` of
/// `Value::Binary` gives), built with one copy of `b`.
pub fn encode_binary(b: &[u8]) -> bytes::Bytes {
    let mut out = Vec::with_capacity(b.len() + 5);
    match b.len() {
        n if n < 1 << 8 => out.extend_from_slice(&[0xc4, n as u8]),
        n if n < 1 << 16 => {
            out.push(0xc5);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0xc6);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(b);
    out.into()
}

/// The payload of MessagePack `bytes` that encode one byte string (`bin`)
/// and nothing else, found without decoding or copying it.
pub fn binary_payload(bytes: &[u8]) -> Option<&[u8]> {
    let (len, at) = match *bytes.first()? {
        0xc4 => (usize::from(*bytes.get(1)?), 2),
        0xc5 => (
            usize::from(u16::from_be_bytes(bytes.get(1..3)?.try_into().ok()?)),
            3,
        ),
        0xc6 => (
            u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?) as usize,
            5,
        ),
        _ => return None,
    };
    (bytes.len().checked_sub(at)? == len).then(|| &bytes[at..])
}

/// Describes JSON for error messages, like [`describe`].
fn describe_json(j: &serde_json::Value) -> String {
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
fn key_list(count: usize, keys: impl Iterator<Item = String>) -> String {
    let shown: Vec<String> = keys.take(DESCRIBE_KEYS_MAX).collect();
    let mut out = String::from(if count == 1 { "key " } else { "keys " });
    out.push_str(&shown.join(", "));
    if count > shown.len() {
        let _ = write!(out, ", … ({count} keys)");
    }
    out
}

/// A map key as it appears in a list of keys.
fn short_key(k: &Value) -> String {
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
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The first `max` characters of `s`, with `…` if cut.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

// ---------------------------------------------------------------------------
// MessagePack
// ---------------------------------------------------------------------------

/// Encodes a value as MessagePack.
pub fn encode(v: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, v).expect("writing to a Vec cannot fail");
    buf
}

/// Decodes exactly one MessagePack value, rejecting trailing bytes and
/// nesting deeper than [`MAX_DECODE_DEPTH`]; safe on hostile input.
pub fn decode(bytes: &[u8]) -> Result<Value, ConvertError> {
    let mut rest = bytes;
    // rmpv's depth budget bounds its recursion, but it spends two units per
    // level of nesting (the value and the container's body) and more on
    // leaves; give it room for MAX_DECODE_DEPTH levels, then count exactly.
    let v = rmpv::decode::read_value_with_max_depth(&mut rest, 2 * MAX_DECODE_DEPTH + 5).map_err(
        |e| match e {
            rmpv::decode::Error::DepthLimitExceeded => too_deep(),
            e => ConvertError::new(format!("invalid MessagePack: {e}")),
        },
    )?;
    if !rest.is_empty() {
        return Err(ConvertError::new(format!(
            "invalid MessagePack: {} after the value",
            plural(rest.len(), "trailing byte")
        )));
    }
    if nesting(&v) > MAX_DECODE_DEPTH {
        return Err(too_deep());
    }
    Ok(v)
}

fn too_deep() -> ConvertError {
    ConvertError::new(format!(
        "invalid MessagePack: arrays and maps nested more than {MAX_DECODE_DEPTH} deep"
    ))
}

/// How many arrays and maps are nested in `v` at its deepest.
fn nesting(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| nesting(k).max(nesting(v)))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;
    use wasmtime::component::{Component, types::ComponentItem};
    use wasmtime::{Config, Engine};

    /// A component importing a function whose parameters cover the kinds of
    /// types; importing needs no core code, and the types are the same.
    const WAT: &str = r#"
    (component
      (type $point' (record (field "x" s64) (field "y" s64)))
      (import "point" (type $point (eq $point')))
      (type $poly' (record (field "name" string) (field "points" (list $point))))
      (import "poly" (type $poly (eq $poly')))
      (type $color' (enum "red" "green" "blue"))
      (import "color" (type $color (eq $color')))
      (type $shape' (variant (case "none") (case "circle" f64) (case "label" string)))
      (import "shape" (type $shape (eq $shape')))
      (type $perms' (flags "read" "write" "exec"))
      (import "perms" (type $perms (eq $perms')))
      (import "f" (func
        (param "b" bool)
        (param "i8" s8)
        (param "u64" u64)
        (param "s64" s64)
        (param "f32" f32)
        (param "f64" f64)
        (param "c" char)
        (param "s" string)
        (param "bytes" (list u8))
        (param "ints" (list s64))
        (param "tup" (tuple s64 string))
        (param "point" $point)
        (param "poly" $poly)
        (param "color" $color)
        (param "shape" $shape)
        (param "perms" $perms)
        (param "opt" (option s64))
        (param "res" (result s64 (error string)))
        (param "res-err" (result (error string)))
        (param "res-ok" (result s64))
        (param "res-none" (result))
        (param "opt-list" (option (list u8)))
      ))
    )
    "#;

    pub(crate) fn types() -> HashMap<String, Type> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config).unwrap();
        let component = Component::new(&engine, WAT).unwrap();
        let cty = component.component_type();
        let mut out = HashMap::new();
        for (name, item) in cty.imports(&engine) {
            if name == "f" {
                let ComponentItem::ComponentFunc(f) = item.ty else {
                    panic!("f is not a function")
                };
                for (param, ty) in f.params() {
                    out.insert(param.to_owned(), ty);
                }
            }
        }
        assert!(!out.is_empty(), "no parameters found");
        out
    }

    fn ty(types: &HashMap<String, Type>, name: &str) -> Type {
        types[name].clone()
    }

    fn s(x: &str) -> Value {
        Value::from(x)
    }

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(k, v)| (s(k), v)).collect())
    }

    fn json(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    /// value → Val → value gives back the same value.
    fn round_trip(types: &HashMap<String, Type>, name: &str, v: Value) {
        let t = ty(types, name);
        let val = value_to_val(&v, &t).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(val_to_value(&val), v, "{name}");
        // And through JSON and MessagePack.
        assert_eq!(
            json_to_value(&value_to_json(&v), &t).unwrap(),
            v,
            "{name} via JSON"
        );
        assert_eq!(decode(&encode(&v)).unwrap(), v, "{name} via MessagePack");
    }

    fn err(types: &HashMap<String, Type>, name: &str, v: Value) -> String {
        match value_to_val(&v, &ty(types, name)) {
            Ok(val) => panic!("{name}: expected an error, got {val:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_byte_string_encodes_as_its_value_does() {
        for n in [0usize, 1, 255, 256, 65_535, 65_536, 100_000] {
            let b = vec![7u8; n];
            assert_eq!(
                &encode_binary(&b)[..],
                &encode(&Value::Binary(b))[..],
                "{n}"
            );
        }
    }

    #[test]
    fn a_byte_string_payload_is_found_without_decoding() {
        for n in [0usize, 1, 255, 256, 70_000] {
            let v = Value::Binary(vec![9; n]);
            let enc = encode(&v);
            assert_eq!(binary_payload(&enc), Some(&vec![9u8; n][..]), "{n} bytes");
            assert_eq!(
                binary_payload(&enc[..enc.len() - 1]),
                None,
                "{n} bytes, cut"
            );
        }
        assert_eq!(binary_payload(&encode(&Value::from("text"))), None);
        assert_eq!(binary_payload(&encode(&Value::from(3))), None);
        assert_eq!(binary_payload(&[]), None);
        assert_eq!(binary_payload(&[0xc6, 0xff]), None);
    }

    #[test]
    fn round_trips() {
        let t = types();
        round_trip(&t, "b", Value::Boolean(true));
        round_trip(&t, "i8", Value::from(-128));
        round_trip(&t, "i8", Value::from(127));
        round_trip(&t, "u64", Value::from(u64::MAX));
        round_trip(&t, "s64", Value::from(i64::MIN));
        round_trip(&t, "f32", Value::F32(1.5));
        round_trip(&t, "f64", Value::F64(-0.25));
        round_trip(&t, "c", s("é"));
        round_trip(&t, "s", s("hello"));
        round_trip(&t, "bytes", Value::Binary(vec![0, 1, 255]));
        round_trip(
            &t,
            "ints",
            Value::Array(vec![Value::from(1), Value::from(-2)]),
        );
        round_trip(&t, "tup", Value::Array(vec![Value::from(7), s("seven")]));
        round_trip(
            &t,
            "point",
            map(vec![("x", Value::from(1)), ("y", Value::from(2))]),
        );
        round_trip(
            &t,
            "poly",
            map(vec![
                ("name", s("tri")),
                (
                    "points",
                    Value::Array(vec![map(vec![
                        ("x", Value::from(0)),
                        ("y", Value::from(0)),
                    ])]),
                ),
            ]),
        );
        round_trip(&t, "color", s("green"));
        round_trip(&t, "shape", s("none"));
        round_trip(&t, "shape", map(vec![("circle", Value::F64(2.0))]));
        round_trip(&t, "shape", map(vec![("label", s("x"))]));
        round_trip(&t, "perms", Value::Array(vec![s("read"), s("exec")]));
        round_trip(&t, "perms", Value::Array(vec![]));
        round_trip(&t, "opt", Value::Nil);
        round_trip(&t, "opt", Value::from(5));
        round_trip(&t, "res", map(vec![("ok", Value::from(1))]));
        round_trip(&t, "res", map(vec![("err", s("bad"))]));
        round_trip(&t, "res-err", map(vec![("ok", Value::Nil)]));
        round_trip(&t, "res-err", map(vec![("err", s("bad"))]));
        round_trip(&t, "res-ok", map(vec![("err", Value::Nil)]));
        round_trip(&t, "res-none", map(vec![("ok", Value::Nil)]));
        round_trip(&t, "opt-list", Value::Binary(b"abc".to_vec()));
    }

    #[test]
    fn vals_are_what_wasmtime_expects() {
        let t = types();
        let val = value_to_val(
            &map(vec![("y", Value::from(2)), ("x", Value::from(1))]),
            &ty(&t, "point"),
        )
        .unwrap();
        // Fields come out in declaration order whatever the input order.
        assert_eq!(
            val,
            Val::Record(vec![("x".into(), Val::S64(1)), ("y".into(), Val::S64(2))])
        );
        let val =
            value_to_val(&Value::Array(vec![s("exec"), s("read")]), &ty(&t, "perms")).unwrap();
        assert_eq!(val, Val::Flags(vec!["read".into(), "exec".into()]));
        let val = value_to_val(&map(vec![("shape", Value::Nil)]), &ty(&t, "shape"));
        assert!(val.is_err());
        let val = value_to_val(&map(vec![("none", Value::Nil)]), &ty(&t, "shape")).unwrap();
        assert_eq!(val, Val::Variant("none".into(), None));
        let val = value_to_val(&s("ok"), &ty(&t, "res-err")).unwrap();
        assert_eq!(val, Val::Result(Ok(None)));
        // Floats accept integers; list<u8> accepts arrays of integers.
        assert_eq!(
            value_to_val(&Value::from(3), &ty(&t, "f64")).unwrap(),
            Val::Float64(3.0)
        );
        assert_eq!(
            value_to_val(
                &Value::Array(vec![Value::from(1), Value::from(2)]),
                &ty(&t, "bytes")
            )
            .unwrap(),
            Val::List(vec![Val::U8(1), Val::U8(2)])
        );
    }

    #[test]
    fn errors_carry_path_and_expected_type() {
        let t = types();
        let bad_poly = map(vec![
            ("name", s("p")),
            (
                "points",
                Value::Array(vec![
                    map(vec![("x", Value::from(0)), ("y", Value::from(0))]),
                    map(vec![("x", Value::from(1)), ("y", Value::from(1))]),
                    map(vec![("x", s("abc")), ("y", Value::from(1))]),
                ]),
            ),
        ]);
        assert_eq!(
            err(&t, "poly", bad_poly),
            r#"at .points[2].x: expected s64, got the string "abc""#
        );
        assert_eq!(
            err(&t, "s64", s("abc")),
            r#"expected s64, got the string "abc""#
        );
        assert_eq!(
            err(&t, "i8", Value::from(300)),
            "300 is out of range for s8 (-128..=127)"
        );
        assert_eq!(
            err(&t, "u64", Value::from(-1)),
            "-1 is out of range for u64 (0..=18446744073709551615)"
        );
        assert_eq!(err(&t, "b", Value::Nil), "expected bool, got nil");
        assert!(err(&t, "c", s("ab")).contains("exactly one character"));
        assert!(err(&t, "c", s("")).contains("exactly one character"));
        let e = err(
            &t,
            "point",
            map(vec![
                ("x", Value::from(1)),
                ("y", Value::from(2)),
                ("z", Value::from(3)),
            ]),
        );
        assert!(e.contains("unknown field `z`"), "{e}");
        let e = err(&t, "point", map(vec![("x", Value::from(1))]));
        assert!(e.contains("missing field `y`"), "{e}");
        let e = err(&t, "point", Value::from(1));
        assert_eq!(e, "expected record { x: s64, y: s64 }, got the integer 1");
        let e = err(&t, "tup", Value::Array(vec![Value::from(1)]));
        assert_eq!(e, "expected tuple<s64, string>, got an array of 1 item");
        let e = err(
            &t,
            "tup",
            Value::Array(vec![Value::from(1), Value::from(2)]),
        );
        assert_eq!(e, "at [1]: expected string, got the integer 2");
        let e = err(&t, "color", s("purple"));
        assert_eq!(
            e,
            "unknown case `purple` (expected one of: red, green, blue)"
        );
        let e = err(&t, "shape", s("circle"));
        assert!(e.contains("needs a payload of type f64"), "{e}");
        let e = err(&t, "shape", map(vec![("circle", s("big"))]));
        assert_eq!(e, r#"at .circle: expected f64, got the string "big""#);
        let e = err(&t, "shape", map(vec![("none", Value::from(1))]));
        assert_eq!(e, "at .none: case `none` has no payload, got the integer 1");
        let e = err(&t, "perms", Value::Array(vec![s("read"), s("fly")]));
        assert_eq!(
            e,
            "at [1]: unknown flag `fly` (expected one of: read, write, exec)"
        );
        let e = err(&t, "res", map(vec![("ok", s("x"))]));
        assert_eq!(e, r#"at .ok: expected s64, got the string "x""#);
        let e = err(&t, "res", map(vec![("maybe", s("x"))]));
        assert!(e.contains(r#"expected {"ok": …} or {"err": …}"#), "{e}");
        let e = err(&t, "opt", s("x"));
        assert_eq!(e, r#"expected s64, got the string "x""#);
        let e = err(
            &t,
            "bytes",
            Value::Array(vec![Value::from(1), Value::from(256)]),
        );
        assert_eq!(e, "at [1]: 256 is out of range for u8 (0..=255)");
        let e = err(&t, "bytes", s("abc"));
        assert_eq!(e, r#"expected list<u8>, got the string "abc""#);
        // Callers prefix function and parameter.
        let e = value_to_val(&s("abc"), &ty(&t, "s64")).unwrap_err();
        assert_eq!(e.path, "");
        assert_eq!(
            format!("inc: parameter x: {e}"),
            r#"inc: parameter x: expected s64, got the string "abc""#
        );
    }

    #[test]
    fn json_input() {
        let t = types();
        let j = |name: &str, text: &str| json_to_value(&json(text), &ty(&t, name));
        assert_eq!(
            j("bytes", r#"{"$bytes": "AAH/"}"#).unwrap(),
            Value::Binary(vec![0, 1, 255])
        );
        assert_eq!(
            j("bytes", r#""hi""#).unwrap(),
            Value::Binary(b"hi".to_vec())
        );
        assert_eq!(j("bytes", "[1, 2]").unwrap(), Value::Binary(vec![1, 2]));
        assert!(
            j("bytes", r#"{"$bytes": "!!"}"#)
                .unwrap_err()
                .message
                .contains("base64")
        );
        assert_eq!(j("f64", "3").unwrap(), Value::F64(3.0));
        assert_eq!(j("f32", "0.5").unwrap(), Value::F32(0.5));
        assert!(j("f32", r#""NaN""#).is_ok());
        assert!(
            j("f32", "1e300")
                .unwrap_err()
                .message
                .contains("out of range")
        );
        assert_eq!(j("s64", "-3").unwrap(), Value::from(-3));
        assert_eq!(
            j("s64", "1.5").unwrap_err().to_string(),
            "expected s64, got the number 1.5"
        );
        assert!(
            j("u64", "1e20")
                .unwrap_err()
                .message
                .contains("out of range")
        );
        assert_eq!(
            j("i8", "-129").unwrap_err().to_string(),
            "-129 is out of range for s8 (-128..=127)"
        );
        assert_eq!(
            j("point", r#"{"y": 2, "x": 1}"#).unwrap(),
            map(vec![("x", Value::from(1)), ("y", Value::from(2))])
        );
        assert_eq!(
            j("poly", r#"{"name": "p", "points": [{"x": 1, "y": "2"}]}"#)
                .unwrap_err()
                .to_string(),
            r#"at .points[0].y: expected s64, got the string "2""#
        );
        assert_eq!(j("shape", r#"{"none": null}"#).unwrap(), s("none"));
        assert_eq!(
            j("res-err", r#""ok""#).unwrap(),
            map(vec![("ok", Value::Nil)])
        );
        assert_eq!(
            j("perms", r#"["exec", "read", "exec"]"#).unwrap(),
            Value::Array(vec![s("read"), s("exec")])
        );
        assert_eq!(j("opt", "null").unwrap(), Value::Nil);
        assert_eq!(
            j("opt-list", r#"{"$bytes": ""}"#).unwrap(),
            Value::Binary(vec![])
        );
        let e = j("point", r#"{"x": 1, "y": 2, "z": 3, "w": 4}"#).unwrap_err();
        assert!(
            e.message.contains("unknown fields `z`, `w`")
                || e.message.contains("unknown fields `w`, `z`"),
            "{e}"
        );
        // JSON output of typed input converts to a Val.
        for (name, text) in [
            ("poly", r#"{"name": "p", "points": [{"x": 1, "y": 2}]}"#),
            ("shape", r#"{"circle": 1}"#),
            ("res", r#"{"err": "e"}"#),
            ("tup", r#"[1, "a"]"#),
        ] {
            let v = j(name, text).unwrap();
            value_to_val(&v, &ty(&t, name)).unwrap();
        }
    }

    #[test]
    fn words() {
        let t = types();
        let w = |name: &str, word: &str| word_to_value(word, &ty(&t, name));
        assert_eq!(w("s", "42").unwrap(), s("42"));
        assert_eq!(w("s", "").unwrap(), s(""));
        assert_eq!(w("c", "x").unwrap(), s("x"));
        assert!(w("c", "xy").is_err());
        assert_eq!(w("s64", "-42").unwrap(), Value::from(-42));
        assert_eq!(
            w("u64", "18446744073709551615").unwrap(),
            Value::from(u64::MAX)
        );
        assert_eq!(
            w("u64", "18446744073709551616").unwrap_err().to_string(),
            "18446744073709551616 is out of range for u64 (0..=18446744073709551615)"
        );
        assert_eq!(
            w("u64", "99999999999999999999999999999999999999999")
                .unwrap_err()
                .to_string(),
            "99999999999999999999999999999999999999999 is out of range for u64 \
             (0..=18446744073709551615)"
        );
        assert_eq!(
            w("i8", "128").unwrap_err().to_string(),
            "128 is out of range for s8 (-128..=127)"
        );
        assert_eq!(
            w("s64", "abc").unwrap_err().to_string(),
            r#"expected s64, got "abc", which is not a decimal integer"#
        );
        assert!(w("s64", "1.0").is_err());
        assert!(w("s64", "").is_err());
        assert_eq!(w("f64", "2.5").unwrap(), Value::F64(2.5));
        assert_eq!(w("f32", "2").unwrap(), Value::F32(2.0));
        assert!(w("f64", "x").is_err());
        assert_eq!(w("b", "true").unwrap(), Value::Boolean(true));
        assert!(w("b", "1").is_err());
        assert_eq!(
            w("bytes", "héllo").unwrap(),
            Value::Binary("héllo".as_bytes().to_vec())
        );
        assert_eq!(
            w("bytes", r#"{"$bytes": "AQI="}"#).unwrap(),
            Value::Binary(vec![1, 2])
        );
        assert_eq!(w("color", "red").unwrap(), s("red"));
        assert_eq!(w("color", r#""red""#).unwrap(), s("red"));
        assert_eq!(w("shape", "none").unwrap(), s("none"));
        assert_eq!(
            w("shape", r#"{"circle": 2}"#).unwrap(),
            map(vec![("circle", Value::F64(2.0))])
        );
        assert_eq!(
            w("ints", "[1,2,3]").unwrap(),
            Value::Array(vec![1.into(), 2.into(), 3.into()])
        );
        assert_eq!(w("opt", "null").unwrap(), Value::Nil);
        assert_eq!(w("opt", "7").unwrap(), Value::from(7));
        let e = w("ints", "[1,2").unwrap_err().to_string();
        assert!(e.contains("is not valid JSON"), "{e}");
        let e = w("point", r#"{"x": 1}"#).unwrap_err().to_string();
        assert!(e.contains("missing field `y`"), "{e}");
    }

    #[test]
    fn wit_syntax() {
        let t = types();
        let w = |name: &str| type_to_wit(&ty(&t, name));
        assert_eq!(w("s64"), "s64");
        assert_eq!(w("f32"), "f32");
        assert_eq!(w("bytes"), "list<u8>");
        assert_eq!(w("tup"), "tuple<s64, string>");
        assert_eq!(w("point"), "record { x: s64, y: s64 }");
        assert_eq!(
            w("poly"),
            "record { name: string, points: list<record { x: s64, y: s64 }> }"
        );
        assert_eq!(w("color"), "enum { red, green, blue }");
        assert_eq!(w("shape"), "variant { none, circle(f64), label(string) }");
        assert_eq!(w("perms"), "flags { read, write, exec }");
        assert_eq!(w("opt"), "option<s64>");
        assert_eq!(w("res"), "result<s64, string>");
        assert_eq!(w("res-err"), "result<_, string>");
        assert_eq!(w("res-ok"), "result<s64>");
        assert_eq!(w("res-none"), "result");
        let mut short = String::new();
        write_wit(&mut short, &ty(&t, "poly"), 1);
        assert_eq!(short, "record { name: string, points: list<…> }");
        short.clear();
        write_wit(&mut short, &ty(&t, "poly"), 0);
        assert_eq!(short, "record {…}");
    }

    #[test]
    fn untyped_json() {
        // Keys in sorted order: serde_json's objects may sort them.
        let v = map(vec![
            ("a", Value::Array(vec![Value::Boolean(false)])),
            ("b", Value::Binary(vec![1, 2, 3])),
            ("e", Value::Ext(5, vec![9])),
            ("f", Value::F64(1.5)),
            ("i", Value::from(-1)),
            ("n", Value::Nil),
            ("s", s("x")),
            ("u", Value::from(u64::MAX)),
        ]);
        let j = value_to_json(&v);
        assert_eq!(j["b"], json(r#"{"$bytes": "AQID"}"#));
        assert_eq!(j["e"], json(r#"{"$ext": [5, "CQ=="]}"#));
        assert_eq!(untyped_json_to_value(&j), v);
        // Floats JSON has no number for are not null (an empty option).
        assert_eq!(value_to_json(&Value::F64(f64::NAN)), json(r#""NaN""#));
        assert_eq!(value_to_json(&Value::F64(f64::INFINITY)), json(r#""inf""#));
        assert_eq!(
            value_to_json(&Value::F32(f32::NEG_INFINITY)),
            json(r#""-inf""#)
        );
        assert_eq!(value_to_json(&Value::F32(0.1)), json("0.1"));
        let odd = Value::Map(vec![(Value::from(1), s("one"))]);
        assert_eq!(value_to_json(&odd), json(r#"[[1, "one"]]"#));
        // Not valid base64: stays a map.
        assert_eq!(
            untyped_json_to_value(&json(r#"{"$bytes": "!"}"#)),
            map(vec![("$bytes", s("!"))])
        );
    }

    #[test]
    fn descriptions() {
        assert_eq!(describe(&s("abc")), r#"the string "abc""#);
        assert_eq!(describe(&Value::from(300)), "the integer 300");
        assert_eq!(
            describe(&Value::Array(vec![Value::Nil; 3])),
            "an array of 3 items"
        );
        assert_eq!(
            describe(&map(vec![("a", Value::Nil), ("b", Value::Nil)])),
            "a map with keys a, b"
        );
        assert_eq!(describe(&Value::Nil), "nil");
        assert_eq!(describe(&Value::Binary(vec![0; 12])), "12 bytes");
        assert_eq!(describe(&Value::Binary(vec![0])), "1 byte");
        assert_eq!(describe(&Value::F64(1e300)), "the float 1e300");
        assert_eq!(describe(&Value::F64(2.0)), "the float 2.0");
        assert_eq!(describe(&Value::Array(vec![])), "an empty array");
        let long = describe(&s(&"x".repeat(1000)));
        assert!(long.len() < 60 && long.ends_with("…\""), "{long}");
        let wide = describe(&Value::Map(
            (0..20).map(|i| (Value::from(i), Value::Nil)).collect(),
        ));
        assert!(wide.ends_with("… (20 keys)"), "{wide}");
    }

    #[test]
    fn hostile_msgpack() {
        let v = map(vec![("a", Value::Array(vec![Value::from(1), s("x")]))]);
        let bytes = encode(&v);
        assert_eq!(decode(&bytes).unwrap(), v);
        // Truncated at every length.
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // Trailing bytes.
        let mut trailing = bytes.clone();
        trailing.push(0xc0);
        assert_eq!(
            decode(&trailing).unwrap_err().message,
            "invalid MessagePack: 1 trailing byte after the value"
        );
        // 100k levels of nested one-element arrays, and of maps.
        let deep_arrays = vec![0x91u8; 100_000];
        assert!(decode(&deep_arrays).is_err());
        let mut deep_maps = Vec::new();
        for _ in 0..100_000 {
            deep_maps.extend([0x81, 0xc0]);
        }
        assert!(decode(&deep_maps).is_err());
        // Huge declared lengths with no data behind them.
        assert!(decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode(&[0xc6, 0xff, 0xff, 0xff, 0xff, 0]).is_err());
        assert!(decode(&[0xdf, 0xff, 0xff, 0xff, 0xff]).is_err());
        // rmpv reads the reserved marker 0xc1 as nil rather than failing.
        assert_eq!(decode(&[0xc1]).unwrap(), Value::Nil);
        // A string that is not UTF-8 decodes, but is no WIT string.
        let bad_utf8 = decode(&[0xa2, 0xff, 0xfe]).unwrap();
        assert!(describe(&bad_utf8).contains("not valid UTF-8"));
        // The allowed depth does get through, one more does not.
        for leaf in [
            Value::Nil,
            s("leaf"),
            Value::Binary(vec![1]),
            Value::Ext(1, vec![2]),
        ] {
            let mut ok_deep = vec![0x91u8; MAX_DECODE_DEPTH];
            ok_deep.extend(encode(&leaf));
            assert!(decode(&ok_deep).is_ok(), "{leaf:?}");
            let mut too_deep = vec![0x91u8; MAX_DECODE_DEPTH + 1];
            too_deep.extend(encode(&leaf));
            assert!(decode(&too_deep).is_err(), "{leaf:?}");
            let mut deep_maps = [0x81u8, 0xc0].repeat(MAX_DECODE_DEPTH);
            deep_maps.extend(encode(&leaf));
            assert!(decode(&deep_maps).is_ok(), "{leaf:?}");
        }
    }

    #[test]
    fn decode_never_panics_on_noise() {
        // A cheap deterministic fuzz: every prefix of pseudo-random bytes.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut noise = Vec::new();
        for _ in 0..4096 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.push(x as u8);
        }
        for start in 0..512 {
            let _ = decode(&noise[start..]);
        }
    }
}
