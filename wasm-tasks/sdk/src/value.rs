//! Values and items: how Rust values become MessagePack and how task
//! arguments are built.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::dtask::task::types as wit;
use crate::{Error, Future, Result};

/// Encodes a value as MessagePack, the way dtask expects it.
///
/// Integers become MessagePack integers, strings strings, sequences and
/// tuples arrays, and structs maps keyed by field name (so they match WIT
/// records); enums follow dtask's variant convention: `"case"` for a case
/// without payload and `{"case": payload}` otherwise.
///
/// A `Vec<u8>` or `&[u8]` is a sequence to serde, so it becomes an array of
/// integers, which dtask accepts for a WIT `list<u8>`; wrap it in
/// [`Bytes`](crate::Bytes) or [`ByteBuf`](crate::ByteBuf) to send it as a
/// MessagePack binary instead, one byte per byte.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value)
        .map_err(|e| Error::Other(format!("cannot encode the value: {e}")))
}

/// Decodes a MessagePack value as `T`; [`Error::Decode`] if it does not fit.
///
/// dtask sends a WIT `list<u8>` (a result, a method's return value) as a
/// MessagePack binary when it is not empty, and as an array when it is:
/// both decode as `Vec<u8>` (or [`ByteBuf`](crate::ByteBuf)), alone or
/// nested, such as in an `Option<Vec<u8>>` or a struct field.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes)
        .map_err(|e| Error::Decode(format!("expected {}: {e}", std::any::type_name::<T>())))
}

/// What a queue or variable holds, or what a task takes as an argument: an
/// encoded value or a future.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A MessagePack-encoded value.
    Value(Vec<u8>),
    /// A future, named by its key.
    Future(Future),
}

impl Item {
    /// An item holding `value`, encoded with [`encode`].
    pub fn value<T: Serialize + ?Sized>(value: &T) -> Result<Item> {
        encode(value).map(Item::Value)
    }

    /// Decodes a value item as `T`. A future item is an [`Error::Decode`]:
    /// use [`Item::resolve`] to wait for its result instead.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        match self {
            Item::Value(bytes) => decode(bytes),
            Item::Future(future) => Err(Error::Decode(format!(
                "the item is the future {}, not a value",
                future.key()
            ))),
        }
    }

    /// The value as `T`: a value item is decoded, a future item is waited
    /// for and its result decoded.
    pub fn resolve<T: DeserializeOwned>(&self) -> Result<T> {
        match self {
            Item::Value(bytes) => decode(bytes),
            Item::Future(future) => future.result(),
        }
    }

    /// Whether the item is a future.
    pub fn is_future(&self) -> bool {
        matches!(self, Item::Future(_))
    }

    /// The future, if the item is one.
    pub fn as_future(&self) -> Option<&Future> {
        match self {
            Item::Future(future) => Some(future),
            Item::Value(_) => None,
        }
    }

    /// The future, if the item is one; the item back otherwise.
    pub fn into_future(self) -> std::result::Result<Future, Item> {
        match self {
            Item::Future(future) => Ok(future),
            other => Err(other),
        }
    }

    pub(crate) fn into_wit(self) -> wit::Item {
        match self {
            Item::Value(bytes) => wit::Item::Value(bytes),
            Item::Future(future) => wit::Item::Future(future.into_key()),
        }
    }

    pub(crate) fn from_wit(item: wit::Item) -> Item {
        match item {
            wit::Item::Value(bytes) => Item::Value(bytes),
            wit::Item::Future(key) => Item::Future(Future::from_key(key)),
        }
    }
}

impl From<Future> for Item {
    fn from(future: Future) -> Item {
        Item::Future(future)
    }
}

impl From<&Future> for Item {
    fn from(future: &Future) -> Item {
        Item::Future(future.clone())
    }
}

/// One argument of a task call: any serializable value, sent as a value,
/// or a [`Future`] (owned or borrowed), sent as a future so that the callee
/// receives its result and the call runs once it is finished.
///
/// It is rarely named: tuples of such arguments implement [`IntoArgs`].
pub trait IntoArg {
    /// The argument as an item.
    fn into_item(self) -> Result<Item>;
}

impl<T: Serialize> IntoArg for T {
    fn into_item(self) -> Result<Item> {
        Item::value(&self)
    }
}

impl IntoArg for Future {
    fn into_item(self) -> Result<Item> {
        Ok(Item::Future(self))
    }
}

impl IntoArg for &Future {
    fn into_item(self) -> Result<Item> {
        Ok(Item::Future(self.clone()))
    }
}

impl IntoArg for Item {
    fn into_item(self) -> Result<Item> {
        Ok(self)
    }
}

impl IntoArg for &Item {
    fn into_item(self) -> Result<Item> {
        Ok(self.clone())
    }
}

impl IntoArg for Arg {
    fn into_item(self) -> Result<Item> {
        self.0
    }
}

/// An argument built at run time, for argument lists whose length is not
/// known when the code is written (`Vec<Arg>` implements [`IntoArgs`]).
///
/// ```no_run
/// # fn main() -> dtask_sdk::Result<()> {
/// use dtask_sdk::{client, Arg};
///
/// let x = client().submit("inc", (1,))?;
/// let args = vec![Arg::value(&41), Arg::future(&x)];
/// let sum = client().submit("add", args)?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Arg(Result<Item>);

impl Arg {
    /// A value argument. An encoding failure is reported by the call that
    /// sends the argument.
    pub fn value<T: Serialize + ?Sized>(value: &T) -> Arg {
        Arg(Item::value(value))
    }

    /// A future argument.
    pub fn future(future: &Future) -> Arg {
        Arg(Ok(Item::Future(future.clone())))
    }
}

impl From<&Future> for Arg {
    fn from(future: &Future) -> Arg {
        Arg::future(future)
    }
}

impl From<Future> for Arg {
    fn from(future: Future) -> Arg {
        Arg(Ok(Item::Future(future)))
    }
}

impl From<Item> for Arg {
    fn from(item: Item) -> Arg {
        Arg(Ok(item))
    }
}

/// The arguments of a task call: `()`, a tuple of up to eight
/// [`IntoArg`]s, or a `Vec` of [`Arg`]s or [`Item`]s.
///
/// A single argument is a one-element tuple: `(n,)`. To pass a list as one
/// argument, put it in a tuple too: `(vec![1, 2, 3],)`.
pub trait IntoArgs {
    /// The arguments as items, in order.
    fn into_items(self) -> Result<Vec<Item>>;
}

impl IntoArgs for () {
    fn into_items(self) -> Result<Vec<Item>> {
        Ok(Vec::new())
    }
}

impl IntoArgs for Vec<Arg> {
    fn into_items(self) -> Result<Vec<Item>> {
        self.into_iter().map(IntoArg::into_item).collect()
    }
}

impl IntoArgs for Vec<Item> {
    fn into_items(self) -> Result<Vec<Item>> {
        Ok(self)
    }
}

macro_rules! tuple_args {
    ($($name:ident),+) => {
        impl<$($name: IntoArg),+> IntoArgs for ($($name,)+) {
            #[allow(non_snake_case)]
            fn into_items(self) -> Result<Vec<Item>> {
                let ($($name,)+) = self;
                Ok(vec![$($name.into_item()?),+])
            }
        }
    };
}

tuple_args!(A);
tuple_args!(A, B);
tuple_args!(A, B, C);
tuple_args!(A, B, C, D);
tuple_args!(A, B, C, D, E);
tuple_args!(A, B, C, D, E, F);
tuple_args!(A, B, C, D, E, F, G);
tuple_args!(A, B, C, D, E, F, G, H);

/// Converts an optional timeout to the host's milliseconds, rounding up so
/// that a non-zero duration never becomes "do not wait".
pub(crate) fn timeout_ms(timeout: Option<Duration>) -> Option<u64> {
    timeout.map(|d| {
        let mut ms = d.as_millis();
        if d.subsec_nanos() % 1_000_000 != 0 {
            ms += 1;
        }
        u64::try_from(ms).unwrap_or(u64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ByteBuf, Bytes};
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Point {
        x: f64,
        y: f64,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "kebab-case")]
    enum Shape {
        Circle(f64),
        Dot,
    }

    #[test]
    fn integers_strings_and_lists_encode_plainly() {
        assert_eq!(encode(&42i64).unwrap(), [0x2a]);
        assert_eq!(encode(&-1i64).unwrap(), [0xff]);
        assert_eq!(encode(&300u64).unwrap(), [0xcd, 0x01, 0x2c]);
        assert_eq!(encode("hi").unwrap(), [0xa2, b'h', b'i']);
        assert_eq!(encode(&vec![1u8, 2]).unwrap(), [0x92, 1, 2]);
        assert_eq!(encode(&(1, "a")).unwrap(), [0x92, 1, 0xa1, b'a']);
        assert_eq!(encode(&None::<u8>).unwrap(), [0xc0]);
    }

    #[test]
    fn structs_encode_as_maps_and_enums_as_cases() {
        let bytes = encode(&Point { x: 1.0, y: 2.0 }).unwrap();
        assert_eq!(bytes[0], 0x82, "a two-entry map");
        assert_eq!(&bytes[1..3], [0xa1, b'x']);
        assert_eq!(decode::<Point>(&bytes).unwrap(), Point { x: 1.0, y: 2.0 });
        assert_eq!(encode(&Shape::Dot).unwrap(), [0xa3, b'd', b'o', b't']);
        let circle = encode(&Shape::Circle(1.5)).unwrap();
        assert_eq!(
            &circle[..8],
            [0x81, 0xa6, b'c', b'i', b'r', b'c', b'l', b'e']
        );
        assert_eq!(decode::<Shape>(&circle).unwrap(), Shape::Circle(1.5));
    }

    #[test]
    fn decoding_the_wrong_type_is_a_decode_error() {
        let bytes = encode("text").unwrap();
        match decode::<i64>(&bytes) {
            Err(Error::Decode(message)) => assert!(message.contains("i64"), "{message}"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(decode::<u32>(&encode(&7i64).unwrap()).unwrap(), 7);
    }

    #[test]
    fn byte_lists_decode_from_binaries_and_arrays() {
        // What the host sends for list<u8>: a binary, or an array if empty.
        let binary = [0xc4, 3, 1, 2, 255];
        assert_eq!(decode::<Vec<u8>>(&binary).unwrap(), [1, 2, 255]);
        assert_eq!(decode::<Vec<u8>>(&[0x90]).unwrap(), Vec::<u8>::new());
        assert_eq!(decode::<Vec<u8>>(&[0x92, 1, 2]).unwrap(), [1, 2]);
        assert_eq!(
            decode::<Option<Vec<u8>>>(&binary).unwrap(),
            Some(vec![1, 2, 255])
        );
        assert_eq!(decode::<Option<Vec<u8>>>(&[0xc0]).unwrap(), None);
        assert_eq!(decode::<Option<Vec<u8>>>(&[0x90]).unwrap(), Some(vec![]));
        assert_eq!(
            decode::<ByteBuf>(&binary).unwrap(),
            ByteBuf::from(vec![1, 2, 255])
        );
        assert_eq!(decode::<ByteBuf>(&[0x90]).unwrap(), ByteBuf::new());
        // Nested: a record holding a list<u8> and a list<list<u8>>.
        let record = [
            0x82, 0xa1, b'a', 0xc4, 1, 7, 0xa1, b'b', 0x92, 0xc4, 1, 8, 0x90,
        ];
        #[derive(Deserialize, Debug, PartialEq)]
        struct Blobs {
            a: Vec<u8>,
            b: Vec<Vec<u8>>,
        }
        assert_eq!(
            decode::<Blobs>(&record).unwrap(),
            Blobs {
                a: vec![7],
                b: vec![vec![8], vec![]]
            }
        );
        // A binary still does not decode as something it is not.
        assert!(matches!(decode::<String>(&binary), Err(Error::Decode(_))));
        assert!(matches!(
            decode::<Vec<u8>>(&[0xc4, 3, 1]),
            Err(Error::Decode(_))
        ));
    }

    #[test]
    fn byte_wrappers_encode_as_binaries() {
        assert_eq!(encode(&Bytes::new(&[1, 2])).unwrap(), [0xc4, 2, 1, 2]);
        assert_eq!(encode(&ByteBuf::from(vec![9])).unwrap(), [0xc4, 1, 9]);
        let item = ("k", Bytes::new(&[3])).into_items().unwrap();
        assert_eq!(item[1], Item::Value(vec![0xc4, 1, 3]));
    }

    #[test]
    fn tuples_mix_values_and_futures() {
        let f = Future::from_key("inc-00");
        let items = (5u64, &f, "s", f.clone()).into_items().unwrap();
        assert_eq!(
            items,
            vec![
                Item::Value(vec![5]),
                Item::Future(f.clone()),
                Item::Value(vec![0xa1, b's']),
                Item::Future(f.clone()),
            ]
        );
        assert_eq!(().into_items().unwrap(), vec![]);
        let dynamic = vec![
            Arg::value(&1),
            Arg::from(&f),
            Arg::from(Item::Value(vec![2])),
        ];
        assert_eq!(
            dynamic.into_items().unwrap(),
            vec![Item::Value(vec![1]), Item::Future(f), Item::Value(vec![2])]
        );
    }

    #[test]
    fn items_decode_and_convert() {
        let item = Item::value(&9i64).unwrap();
        assert_eq!(item.decode::<i64>().unwrap(), 9);
        assert!(!item.is_future());
        let future = Item::from(Future::from_key("k"));
        assert!(matches!(future.decode::<i64>(), Err(Error::Decode(_))));
        assert_eq!(future.as_future().map(Future::key), Some("k"));
        let wit = future.clone().into_wit();
        assert!(matches!(&wit, wit::Item::Future(k) if k == "k"));
        assert_eq!(Item::from_wit(wit), future);
    }

    #[test]
    fn timeouts_round_up_to_milliseconds() {
        assert_eq!(timeout_ms(None), None);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), Some(0));
        assert_eq!(timeout_ms(Some(Duration::from_micros(1))), Some(1));
        assert_eq!(timeout_ms(Some(Duration::from_millis(20))), Some(20));
        assert_eq!(timeout_ms(Some(Duration::from_micros(2500))), Some(3));
        assert_eq!(timeout_ms(Some(Duration::MAX)), Some(u64::MAX));
    }
}
