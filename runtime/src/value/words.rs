//! Values from shell words, typed by WIT.

use super::*;

/// Reads a command's stdin (`-`) as a value of type `ty`: its bytes for
/// `list<u8>`, its text for `string` (one trailing newline dropped), JSON
/// otherwise, checked with [`json_to_value`].
pub fn stdin_to_value(bytes: Vec<u8>, ty: &Type) -> Result<Value, ConvertError> {
    match ty {
        Type::List(l) if matches!(l.ty(), Type::U8) => Ok(Value::Binary(bytes)),
        Type::String => {
            let mut s = String::from_utf8(bytes)
                .map_err(|_| ConvertError::new("stdin is not UTF-8 text"))?;
            if s.ends_with('\n') {
                s.pop();
            }
            Ok(Value::from(s))
        }
        _ => {
            let j: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| ConvertError::new(format!("stdin is not JSON: {e}")))?;
            json_to_value(&j, ty)
        }
    }
}

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
        // A bare word for an enum or variant that names no case: said as
        // such (with the cases), not as JSON that does not parse.
        Type::Enum(_) | Type::Variant(_)
            if serde_json::from_str::<serde_json::Value>(word).is_err() =>
        {
            json_to_value(&serde_json::Value::String(word.into()), ty)?
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
