//! Property tests over the decoders that face untrusted input: the frame
//! decoder (any bytes from a socket), MessagePack values, JSON and shell
//! words to values, and values to WIT values. None may panic, whatever
//! arrives; encodings round-trip.
//!
//! `cargo test` runs a few hundred cases each; `just fuzz` runs them with
//! many more (`PROPTEST_CASES`).

use crate::connection;
use crate::protocol::{FromPeer, FromScheduler, Hello, ToPeer, ToScheduler};
use crate::value::{self, Value};
use crate::wit::Type;
use proptest::prelude::*;
use std::sync::LazyLock;

/// WIT types of every kind (records, variants, enums, flags, options,
/// results, lists, tuples, scalars), made once.
static TYPES: LazyLock<Vec<Type>> =
    LazyLock::new(|| crate::value::tests::types().into_values().collect());

/// Any MessagePack value, nested a few levels: maps with string keys
/// (some equal) as records give, and with keys of any kind.
pub(crate) fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<f32>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Binary),
        (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(t, d)| Value::Ext(t, d)),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec(("[a-d]{0,2}".prop_map(Value::from), inner.clone()), 0..6)
                .prop_map(Value::Map),
            proptest::collection::vec((inner.clone(), inner), 0..6).prop_map(Value::Map),
        ]
    })
}

/// Any JSON document, nested a few levels.
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn frames_of_any_bytes_decode_or_err_without_panicking(
        bytes in proptest::collection::vec(any::<u8>(), 0..512)
    ) {
        let _ = connection::decode::<Vec<ToScheduler>>(&bytes);
        let _ = connection::decode::<Vec<FromScheduler>>(&bytes);
        let _ = connection::decode::<Vec<ToPeer>>(&bytes);
        let _ = connection::decode::<Vec<FromPeer>>(&bytes);
        let _ = connection::decode::<Hello>(&bytes);
    }

    #[test]
    fn a_mutated_real_frame_decodes_or_errs_without_panicking(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let msgs = vec![ToScheduler::Status { id: 7, keys: vec!["inc-1".into(), "add-2".into()], timings: true },
            ToScheduler::Publish { topic: "t".into(), message: value::encode(&Value::from(5)).into() }];
        let mut bytes = connection::encode(&msgs).to_vec();
        for (at, b) in flips {
            let i = at % bytes.len();
            bytes[i] ^= b;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        let _ = connection::decode::<Vec<ToScheduler>>(&bytes);
    }

    #[test]
    fn messagepack_of_any_bytes_decodes_or_errs(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = value::decode(&bytes);
    }

    #[test]
    fn the_length_of_any_bytes_is_found_or_errs_and_agrees_with_decoding(
        bytes in proptest::collection::vec(any::<u8>(), 0..256)
    ) {
        let len = value::encoded_len(&bytes);
        // What decodes as one value is exactly as long as said.
        if value::decode(&bytes).is_ok() {
            prop_assert_eq!(len.as_ref().ok().copied().flatten(), Some(bytes.len()));
        }
        if let Ok(Some(n)) = len {
            prop_assert!(n <= bytes.len());
        }
    }

    #[test]
    fn the_length_of_any_value_is_its_encodings(v in any_value(), cut in any::<usize>()) {
        let bytes = value::encode(&v);
        prop_assert_eq!(value::encoded_len(&bytes).unwrap(), Some(bytes.len()));
        let cut = cut % bytes.len();
        prop_assert_eq!(value::encoded_len(&bytes[..cut]).unwrap(), None);
    }

    #[test]
    fn values_round_trip_through_messagepack(v in any_value()) {
        let back = value::decode(&value::encode(&v)).expect("an encoded value decodes");
        // NaN is not equal to itself; compare encodings instead.
        prop_assert_eq!(value::encode(&back), value::encode(&v));
    }

    #[test]
    fn any_value_converts_to_any_wit_type_or_errs(v in any_value()) {
        for ty in TYPES.iter() {
            if let Ok(val) = value::value_to_val(&v, ty) {
                // What converted comes back as a value without panicking.
                let _ = value::val_to_value(&val);
            }
        }
    }

    #[test]
    fn any_json_converts_to_any_wit_type_or_errs(j in any_json()) {
        let _ = value::untyped_json_to_value(&j);
        for ty in TYPES.iter() {
            let _ = value::json_to_value(&j, ty);
        }
    }

    #[test]
    fn any_shell_word_converts_to_any_wit_type_or_errs(word in "\\PC{0,24}") {
        for ty in TYPES.iter() {
            let _ = value::word_to_value(&word, ty);
        }
    }
}
