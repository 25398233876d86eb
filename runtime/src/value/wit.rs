//! Values and wasmtime's component [`Val`]s, guided by WIT types, and a
//! type's WIT text.

use super::*;

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
        Type::Own | Type::Borrow | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            return Err(unsupported(ty));
        }
    })
}

/// Converts every element of an array, tagging errors with the index.
pub(super) fn vals_of(items: &[Value], elem: &Type) -> Result<Vec<Val>, ConvertError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| value_to_val(item, elem).map_err(|e| e.at(i)))
        .collect()
}

/// The entries of a map, or of an array of `[key, value]` pairs.
pub(super) fn pairs_of(v: &Value) -> Option<Vec<(&Value, &Value)>> {
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

pub(super) fn list_value(items: &[Val]) -> Value {
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
pub(super) fn case_value(name: &str, payload: Option<Value>) -> Value {
    match payload {
        None => Value::from(name),
        Some(p) => Value::Map(vec![(Value::from(name), p)]),
    }
}

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
pub(super) fn write_wit(out: &mut String, ty: &Type, depth: usize) {
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
        Type::Own => "own<resource>",
        Type::Borrow => "borrow<resource>",
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
