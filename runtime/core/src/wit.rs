//! WIT types of task parameters and results, as plain data.
//!
//! A client reads them from a component's binary without compiling it; a
//! worker reads them from the component it compiled. Both describe a type
//! the same way, so the client can type arguments exactly as the worker
//! will before anything is submitted.
//!
//! Types are trees whose children are shared (`Arc`), so taking a child out
//! (`list.ty()`, a record's fields) is cheap. Records, variants, enums and
//! flags are described by their structure; the names WIT gives the types
//! themselves are not kept, as values never carry them.

use std::sync::Arc;

/// A WIT value type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Type {
    /// `bool`
    Bool,
    /// `s8`
    S8,
    /// `u8`
    U8,
    /// `s16`
    S16,
    /// `u16`
    U16,
    /// `s32`
    S32,
    /// `u32`
    U32,
    /// `s64`
    S64,
    /// `u64`
    U64,
    /// `f32`
    Float32,
    /// `f64`
    Float64,
    /// `char`
    Char,
    /// `string`
    String,
    /// `list<T>`
    List(List),
    /// `list<T, N>`
    FixedLengthList(FixedLengthList),
    /// `map<K, V>`
    Map(Map),
    /// `record { … }`
    Record(Record),
    /// `tuple<…>`
    Tuple(Tuple),
    /// `variant { … }`
    Variant(Variant),
    /// `enum { … }`
    Enum(Enum),
    /// `option<T>`
    Option(OptionType),
    /// `result<T, E>`, either side possibly absent.
    Result(ResultType),
    /// `flags { … }`
    Flags(Flags),
    /// An owned handle to a resource. Which resource is not kept (tasks
    /// cannot pass handles), so handles to different resources compare equal.
    Own,
    /// A borrowed handle to a resource (which one is not kept, as for `Own`).
    Borrow,
    /// `future<T>`
    Future(Future),
    /// `stream<T>`
    Stream(Stream),
    /// `error-context`
    ErrorContext,
}

impl Type {
    /// `list<elem>`.
    pub fn list(elem: Type) -> Type {
        Type::List(List(Arc::new(elem)))
    }

    /// `list<elem, len>`.
    pub fn fixed_length_list(elem: Type, len: u32) -> Type {
        Type::FixedLengthList(FixedLengthList(Arc::new(elem), len))
    }

    /// `map<key, value>`.
    pub fn map(key: Type, value: Type) -> Type {
        Type::Map(Map(Arc::new((key, value))))
    }

    /// A record with these fields, in declaration order.
    pub fn record(fields: impl IntoIterator<Item = (String, Type)>) -> Type {
        Type::Record(Record(fields.into_iter().collect()))
    }

    /// `tuple<types…>`.
    pub fn tuple(types: impl IntoIterator<Item = Type>) -> Type {
        Type::Tuple(Tuple(types.into_iter().collect()))
    }

    /// A variant with these cases, each with its payload type if it has one.
    pub fn variant(cases: impl IntoIterator<Item = (String, Option<Type>)>) -> Type {
        Type::Variant(Variant(cases.into_iter().collect()))
    }

    /// An enum with these cases.
    pub fn enumeration(names: impl IntoIterator<Item = String>) -> Type {
        Type::Enum(Enum(names.into_iter().collect()))
    }

    /// `option<inner>`.
    pub fn option(inner: Type) -> Type {
        Type::Option(OptionType(Arc::new(inner)))
    }

    /// `result<ok, err>`; `None` for a side without payload.
    pub fn result(ok: Option<Type>, err: Option<Type>) -> Type {
        Type::Result(ResultType(Arc::new((ok, err))))
    }

    /// Flags with these names.
    pub fn flags(names: impl IntoIterator<Item = String>) -> Type {
        Type::Flags(Flags(names.into_iter().collect()))
    }

    /// `future<inner>` (or `future` without payload).
    pub fn future(inner: Option<Type>) -> Type {
        Type::Future(Future(inner.map(Arc::new)))
    }

    /// `stream<inner>` (or `stream` without payload).
    pub fn stream(inner: Option<Type>) -> Type {
        Type::Stream(Stream(inner.map(Arc::new)))
    }
}

/// The element type of a `list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct List(Arc<Type>);

impl List {
    /// The element type.
    pub fn ty(&self) -> Type {
        Type::clone(&self.0)
    }
}

/// A list of fixed length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedLengthList(Arc<Type>, u32);

impl FixedLengthList {
    /// The element type.
    pub fn ty(&self) -> Type {
        Type::clone(&self.0)
    }

    /// How many elements it has.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u32 {
        self.1
    }
}

/// A map's key and value types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Map(Arc<(Type, Type)>);

impl Map {
    /// The key type.
    pub fn key(&self) -> Type {
        self.0.0.clone()
    }

    /// The value type.
    pub fn value(&self) -> Type {
        self.0.1.clone()
    }
}

/// One field of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its type.
    pub ty: Type,
}

/// A record's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record(Arc<[(String, Type)]>);

impl Record {
    /// The fields, in declaration order.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = Field<'_>> {
        self.0.iter().map(|(name, ty)| Field {
            name,
            ty: ty.clone(),
        })
    }
}

/// A tuple's element types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuple(Arc<[Type]>);

impl Tuple {
    /// The element types, in order.
    pub fn types(&self) -> impl ExactSizeIterator<Item = Type> + '_ {
        self.0.iter().cloned()
    }
}

/// One case of a variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its payload type, if it has one.
    pub ty: Option<Type>,
}

/// A variant's cases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant(Arc<[(String, Option<Type>)]>);

impl Variant {
    /// The cases, in declaration order.
    pub fn cases(&self) -> impl ExactSizeIterator<Item = Case<'_>> {
        self.0.iter().map(|(name, ty)| Case {
            name,
            ty: ty.clone(),
        })
    }
}

/// An enum's case names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enum(Arc<[String]>);

impl Enum {
    /// The case names, in declaration order.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// The inner type of an `option`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionType(Arc<Type>);

impl OptionType {
    /// The inner type.
    pub fn ty(&self) -> Type {
        Type::clone(&self.0)
    }
}

/// The payload types of a `result`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultType(Arc<(Option<Type>, Option<Type>)>);

impl ResultType {
    /// The `ok` payload type, if there is one.
    pub fn ok(&self) -> Option<Type> {
        self.0.0.clone()
    }

    /// The `err` payload type, if there is one.
    pub fn err(&self) -> Option<Type> {
        self.0.1.clone()
    }
}

/// The names of a `flags` type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flags(Arc<[String]>);

impl Flags {
    /// The flag names, in declaration order.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// The payload type of a `future`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Future(Option<Arc<Type>>);

impl Future {
    /// The payload type, if there is one.
    pub fn ty(&self) -> Option<Type> {
        self.0.as_deref().cloned()
    }
}

/// The payload type of a `stream`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream(Option<Arc<Type>>);

impl Stream {
    /// The payload type, if there is one.
    pub fn ty(&self) -> Option<Type> {
        self.0.as_deref().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_come_out_as_they_went_in() {
        let point = Type::record([("x".into(), Type::S64), ("y".into(), Type::S64)]);
        let Type::Record(r) = &point else { panic!() };
        let fields: Vec<_> = r.fields().map(|f| (f.name.to_string(), f.ty)).collect();
        assert_eq!(fields, [("x".into(), Type::S64), ("y".into(), Type::S64)]);
        let Type::List(l) = Type::list(point.clone()) else {
            panic!()
        };
        assert_eq!(l.ty(), point);
        let Type::Result(r) = Type::result(None, Some(Type::String)) else {
            panic!()
        };
        assert_eq!((r.ok(), r.err()), (None, Some(Type::String)));
        let Type::Variant(v) =
            Type::variant([("none".into(), None), ("some".into(), Some(Type::U8))])
        else {
            panic!()
        };
        let cases: Vec<_> = v.cases().map(|c| (c.name.to_string(), c.ty)).collect();
        assert_eq!(
            cases,
            [("none".into(), None), ("some".into(), Some(Type::U8))]
        );
        let Type::FixedLengthList(f) = Type::fixed_length_list(Type::U8, 4) else {
            panic!()
        };
        assert_eq!((f.ty(), f.len()), (Type::U8, 4));
    }
}
