//! The conversions, over parameters of every kind of type.

use super::*;
use std::collections::HashMap;

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// Parameters whose types cover the kinds of types, by name.
pub(crate) fn types() -> HashMap<String, Type> {
    let point = Type::record([("x".into(), Type::S64), ("y".into(), Type::S64)]);
    let poly = Type::record([
        ("name".into(), Type::String),
        ("points".into(), Type::list(point.clone())),
    ]);
    let shape = Type::variant([
        ("none".into(), None),
        ("circle".into(), Some(Type::Float64)),
        ("label".into(), Some(Type::String)),
    ]);
    let params = [
        ("b", Type::Bool),
        ("i8", Type::S8),
        ("u64", Type::U64),
        ("s64", Type::S64),
        ("f32", Type::Float32),
        ("f64", Type::Float64),
        ("c", Type::Char),
        ("s", Type::String),
        ("bytes", Type::list(Type::U8)),
        ("ints", Type::list(Type::S64)),
        ("tup", Type::tuple([Type::S64, Type::String])),
        ("point", point),
        ("poly", poly),
        ("color", Type::enumeration(names(&["red", "green", "blue"]))),
        ("shape", shape),
        ("perms", Type::flags(names(&["read", "write", "exec"]))),
        ("opt", Type::option(Type::S64)),
        ("res", Type::result(Some(Type::S64), Some(Type::String))),
        ("res-err", Type::result(None, Some(Type::String))),
        ("res-ok", Type::result(Some(Type::S64), None)),
        ("res-none", Type::result(None, None)),
        ("opt-list", Type::option(Type::list(Type::U8))),
    ];
    params
        .into_iter()
        .map(|(name, ty)| (name.to_string(), ty))
        .collect()
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
fn the_head_of_an_encoding_tells_a_raw_payload_from_its_first_bytes() {
    for n in [0usize, 31, 32, 255, 256, 70_000] {
        for text in [false, true] {
            let v = if text {
                Value::from("x".repeat(n))
            } else {
                Value::Binary(vec![9; n])
            };
            let enc = encode(&v);
            let Head::Payload { at, len, text: t } = head(&enc[..enc.len().min(5)]) else {
                panic!("{n} bytes, text {text}: no payload");
            };
            assert_eq!((len, t), (n as u64, text), "{n} bytes, text {text}");
            assert_eq!(at + n, enc.len(), "{n} bytes, text {text}");
        }
    }
    assert_eq!(head(&encode(&Value::from(3))), Head::Other);
    assert_eq!(head(&encode(&Value::Array(vec![]))), Head::Other);
    assert_eq!(head(&[]), Head::Short);
    assert_eq!(head(&[0xdb, 0, 1]), Head::Short);
}

#[test]
fn a_byte_string_read_into_its_encoding_is_encoded_as_encode_gives() {
    for n in [0usize, 1, 255, 256, 65_535, 65_536, 200_000] {
        let b: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
        for expected in [0, n as u64, 10] {
            let read = read_binary(&mut &b[..], expected).unwrap();
            assert_eq!(
                read,
                encode(&Value::Binary(b.clone())),
                "{n} bytes, {expected} expected"
            );
        }
    }
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
    let val = value_to_val(&Value::Array(vec![s("exec"), s("read")]), &ty(&t, "perms")).unwrap();
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

/// A string's header written ahead of its bytes (a big stdin streamed as
/// a string) is the one encoding the string value writes, at every size
/// class, so the encodings, and the keys hashed over them, are the same.
#[test]
fn a_string_header_is_the_one_encoding_writes() {
    for n in [0, 1, 31, 32, 255, 256, 65_535, 65_536, 70_000] {
        let text = "x".repeat(n);
        let mut streamed = Vec::new();
        push_str_header(&mut streamed, n as u32);
        streamed.extend_from_slice(text.as_bytes());
        assert_eq!(streamed, encode(&Value::from(text)), "{n} bytes");
    }
}

#[test]
fn encoded_len_finds_where_each_value_ends_and_waits_for_a_cut_one() {
    use rmpv::Value as V;
    let values = vec![
        V::Nil,
        V::Boolean(true),
        V::from(5),
        V::from(-5),
        V::from(200),
        V::from(-200),
        V::from(70_000),
        V::from(-70_000),
        V::from(u64::MAX),
        V::from(i64::MIN),
        V::F32(1.5),
        V::F64(2.5),
        V::from("short"),
        V::from("x".repeat(300)),
        V::from("y".repeat(70_000)),
        V::Binary(vec![1; 10]),
        V::Binary(vec![2; 300]),
        V::Binary(vec![3; 70_000]),
        V::Ext(1, vec![9]),
        V::Ext(2, vec![9; 2]),
        V::Ext(3, vec![9; 4]),
        V::Ext(4, vec![9; 8]),
        V::Ext(5, vec![9; 16]),
        V::Ext(6, vec![9; 3]),
        V::Ext(7, vec![9; 300]),
        V::Ext(8, vec![9; 70_000]),
        V::Array(vec![V::from(1), V::from("two"), V::Array(vec![])]),
        V::Array((0..20).map(V::from).collect()),
        V::Array((0..70_000).map(V::from).collect()),
        V::Map(vec![(V::from("k"), V::Array(vec![V::Nil]))]),
        V::Map((0..20).map(|i| (V::from(i), V::from(i))).collect()),
        V::Map((0..70_000).map(|i| (V::from(i), V::Nil)).collect()),
    ];
    for v in &values {
        let bytes = encode(v);
        assert_eq!(encoded_len(&bytes).unwrap(), Some(bytes.len()), "{v:?}");
        // Another value after it is not counted.
        let two = [bytes.as_slice(), &encode(&V::from(7))].concat();
        assert_eq!(encoded_len(&two).unwrap(), Some(bytes.len()));
        // Cut anywhere: not yet.
        for cut in (0..bytes.len()).step_by((bytes.len() / 50).max(1)) {
            assert_eq!(
                encoded_len(&bytes[..cut]).unwrap(),
                None,
                "{v:?} cut at {cut}"
            );
        }
    }
    assert!(encoded_len(&[0xc1]).is_err());
    assert_eq!(
        array_head(&encode(&V::Array(vec![V::Nil; 3]))),
        Some((3, 1))
    );
    assert_eq!(
        array_head(&encode(&V::Array(vec![V::Nil; 70_000]))),
        Some((70_000, 5))
    );
    assert_eq!(array_head(&encode(&V::from(1))), None);
}
