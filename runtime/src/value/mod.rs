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

mod describe;
mod json;
mod msgpack;
mod wit;
mod words;

pub use describe::*;
pub use json::*;
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
