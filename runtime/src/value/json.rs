//! Values and JSON: typed by WIT where a type is known, untyped otherwise.

use super::*;

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
        Type::Own | Type::Borrow | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            return Err(unsupported(ty));
        }
    })
}

pub(super) fn json_items(
    items: &[serde_json::Value],
    elem: &Type,
) -> Result<Vec<Value>, ConvertError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| json_to_value(item, elem).map_err(|e| e.at(i)))
        .collect()
}

/// Bytes from JSON: `{"$bytes": base64}`, a string (UTF-8) or an array of
/// integers 0..=255.
pub(super) fn json_bytes(j: &serde_json::Value, ty: &Type) -> Result<Vec<u8>, ConvertError> {
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
pub(super) fn float_json(x: f64) -> serde_json::Value {
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
