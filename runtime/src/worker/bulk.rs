//! Calls that move bytes in bulk.
//!
//! A dynamic call lowers a `list<u8>` one [`Val`] per byte: a 100 MB
//! argument would become gigabytes of values on the host and run out of the
//! hostcall allowance long before the task's memory limit. A function whose
//! signature carries `list<u8>` in one of the common shapes below is instead
//! called through wasmtime's typed interface, where bytes cross the
//! boundary as one copy each way (`Vec<u8>` in, a view of guest memory out).
//!
//! The shapes: up to two parameters, each `list<u8>`, `string`, `u32`, `u64`
//! or `s64`, and at most one result, one of `list<u8>`,
//! `result<list<u8>, string>`, `option<list<u8>>`, `string`, `u32`, `u64`,
//! `s64`, `f64` or `bool`, with a `list<u8>` among the parameters or in the
//! result. Any other signature takes the dynamic path (where strings are
//! already copied in bulk, but a `list<u8>` inside a record, variant, tuple
//! or list still crosses one value per byte).

use crate::wit::Type;
use rmpv::Value;
use wasmtime::Store;
use wasmtime::component::{ComponentNamedList, Func, Lift, Lower, Val, WasmList, WasmStr};

use super::sandbox::{BIG_MEMORY, Output, TaskArg};
use crate::value::{self, ConvertError};
use bytes::Bytes;

/// What a parameter of a bulk shape is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum In {
    Bytes,
    Str,
    U32,
    U64,
    S64,
}

/// What the result of a bulk shape is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Out {
    Unit,
    Bytes,
    /// `result<list<u8>, string>`.
    BytesOrError,
    /// `option<list<u8>>`.
    MaybeBytes,
    Str,
    U32,
    U64,
    S64,
    F64,
    Bool,
}

/// A signature that is called with bytes in bulk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    params: Vec<In>,
    out: Out,
}

/// A parameter ready for a typed call.
pub(crate) enum Arg {
    Bytes(Bytes),
    Str(String),
    U32(u32),
    U64(u64),
    S64(i64),
}

fn kind_in(ty: &Type) -> Option<In> {
    Some(match ty {
        Type::List(l) if matches!(l.ty(), Type::U8) => In::Bytes,
        Type::String => In::Str,
        Type::U32 => In::U32,
        Type::U64 => In::U64,
        Type::S64 => In::S64,
        _ => return None,
    })
}

/// Whether `ty` is `list<u8>`.
fn is_bytes(ty: &Type) -> bool {
    matches!(ty, Type::List(l) if matches!(l.ty(), Type::U8))
}

fn kind_out(ty: &Type) -> Option<Out> {
    Some(match ty {
        ty if is_bytes(ty) => Out::Bytes,
        Type::Result(r)
            if r.ok().as_ref().is_some_and(is_bytes) && matches!(r.err(), Some(Type::String)) =>
        {
            Out::BytesOrError
        }
        Type::Option(o) if is_bytes(&o.ty()) => Out::MaybeBytes,
        Type::String => Out::Str,
        Type::U32 => Out::U32,
        Type::U64 => Out::U64,
        Type::S64 => Out::S64,
        Type::Float64 => Out::F64,
        Type::Bool => Out::Bool,
        _ => return None,
    })
}

impl Out {
    /// Whether a `list<u8>` is in the result.
    fn has_bytes(self) -> bool {
        matches!(self, Out::Bytes | Out::BytesOrError | Out::MaybeBytes)
    }
}

impl Shape {
    /// The bulk shape of a signature, if it has one.
    pub(crate) fn of(params: &[(String, Type)], results: &[Type]) -> Option<Shape> {
        if params.len() > 2 {
            return None;
        }
        let params: Vec<In> = params
            .iter()
            .map(|(_, t)| kind_in(t))
            .collect::<Option<_>>()?;
        let out = match results {
            [] => Out::Unit,
            [t] => kind_out(t)?,
            _ => return None,
        };
        let bytes_in = params.contains(&In::Bytes);
        (bytes_in || out.has_bytes()).then_some(Shape { params, out })
    }

    /// Converts the task's arguments for this shape (already counted against
    /// the signature). Byte values are moved, not copied.
    pub(crate) fn args(
        &self,
        params: &[(String, Type)],
        args: Vec<TaskArg>,
    ) -> Result<Vec<Arg>, (String, ConvertError)> {
        args.into_iter()
            .zip(params.iter().zip(&self.params))
            .map(|(v, ((name, ty), kind))| arg(v, *kind, ty).map_err(|e| (name.clone(), e)))
            .collect()
    }

    /// Calls `func` with `args` and converts its result.
    pub(crate) async fn call<T: Send>(
        &self,
        store: &mut Store<T>,
        func: Func,
        args: Vec<Arg>,
    ) -> wasmtime::Result<Output> {
        let mut args = args.into_iter();
        let (a, b) = (args.next(), args.next());
        // Each arm names one parameter tuple; `returning` picks the result.
        match (a, b) {
            (None, _) => returning(store, func, (), self.out).await,
            (Some(a), None) => match a {
                Arg::Bytes(x) => returning(store, func, (&x[..],), self.out).await,
                Arg::Str(x) => returning(store, func, (x,), self.out).await,
                Arg::U32(x) => returning(store, func, (x,), self.out).await,
                Arg::U64(x) => returning(store, func, (x,), self.out).await,
                Arg::S64(x) => returning(store, func, (x,), self.out).await,
            },
            (Some(Arg::Bytes(x)), Some(b)) => {
                let x = &x[..];
                match b {
                    Arg::Bytes(y) => returning(store, func, (x, &y[..]), self.out).await,
                    Arg::Str(y) => returning(store, func, (x, y), self.out).await,
                    Arg::U32(y) => returning(store, func, (x, y), self.out).await,
                    Arg::U64(y) => returning(store, func, (x, y), self.out).await,
                    Arg::S64(y) => returning(store, func, (x, y), self.out).await,
                }
            }
            (Some(a), Some(Arg::Bytes(y))) => {
                let y = &y[..];
                match a {
                    Arg::Str(x) => returning(store, func, (x, y), self.out).await,
                    Arg::U32(x) => returning(store, func, (x, y), self.out).await,
                    Arg::U64(x) => returning(store, func, (x, y), self.out).await,
                    Arg::S64(x) => returning(store, func, (x, y), self.out).await,
                    Arg::Bytes(_) => unreachable!("matched above"),
                }
            }
            // Without bytes in, bytes are in the result (see `Shape::of`).
            (Some(a), Some(b)) => {
                let out = self.out;
                macro_rules! second {
                    ($x:expr) => {
                        match b {
                            Arg::Str(y) => bytes_out(store, func, ($x, y), out).await,
                            Arg::U32(y) => bytes_out(store, func, ($x, y), out).await,
                            Arg::U64(y) => bytes_out(store, func, ($x, y), out).await,
                            Arg::S64(y) => bytes_out(store, func, ($x, y), out).await,
                            Arg::Bytes(_) => unreachable!("matched above"),
                        }
                    };
                }
                match a {
                    Arg::Str(x) => second!(x),
                    Arg::U32(x) => second!(x),
                    Arg::U64(x) => second!(x),
                    Arg::S64(x) => second!(x),
                    Arg::Bytes(_) => unreachable!("matched above"),
                }
            }
        }
    }
}

impl Arg {
    /// Whether it is a byte string or string of [`BIG_MEMORY`] or more.
    pub(crate) fn is_big(&self) -> bool {
        match self {
            Arg::Bytes(b) => b.len() >= BIG_MEMORY,
            Arg::Str(s) => s.len() >= BIG_MEMORY,
            _ => false,
        }
    }
}

/// A [`Value`] as the typed parameter `kind` (of WIT type `ty`), with the
/// dynamic conversion's checks and messages for anything but the plain case.
fn arg(v: TaskArg, kind: In, ty: &Type) -> Result<Arg, ConvertError> {
    let v = match (kind, v) {
        (In::Bytes, TaskArg::Bytes(b)) => return Ok(Arg::Bytes(b)),
        (_, v) => v.into_value(),
    };
    let v = match (kind, v) {
        (In::Bytes, Value::Binary(b)) => return Ok(Arg::Bytes(Bytes::from(b))),
        (In::Str, Value::String(s)) if s.is_str() => {
            return Ok(Arg::Str(s.into_str().unwrap_or_default()));
        }
        (_, v) => v,
    };
    Ok(match value::value_to_val(&v, ty)? {
        Val::List(items) => Arg::Bytes(
            items
                .iter()
                .filter_map(|v| match v {
                    Val::U8(b) => Some(*b),
                    _ => None,
                })
                .collect::<Vec<u8>>()
                .into(),
        ),
        Val::String(s) => Arg::Str(s),
        Val::U32(x) => Arg::U32(x),
        Val::U64(x) => Arg::U64(x),
        Val::S64(x) => Arg::S64(x),
        other => {
            return Err(ConvertError {
                path: String::new(),
                message: format!("internal: {kind:?} parameter converted to {other:?}"),
            });
        }
    })
}

/// Calls `func` with the parameter tuple `params`, typed for the result
/// `out`, and converts what it returned.
async fn returning<T: Send, P>(
    store: &mut Store<T>,
    func: Func,
    params: P,
    out: Out,
) -> wasmtime::Result<Output>
where
    P: ComponentNamedList + Lower + Send + Sync,
{
    if out.has_bytes() {
        return bytes_out(store, func, params, out).await;
    }
    Ok(Output::Value(match out {
        Out::Unit => {
            typed::<T, P, ()>(store, func, params).await?;
            Value::Nil
        }
        Out::Bytes | Out::BytesOrError | Out::MaybeBytes => unreachable!("returned above"),
        Out::Str => {
            let (s,) = typed::<T, P, (WasmStr,)>(store, func, params).await?;
            Value::from(s.to_str(&*store)?.into_owned())
        }
        Out::U32 => Value::from(typed::<T, P, (u32,)>(store, func, params).await?.0),
        Out::U64 => Value::from(typed::<T, P, (u64,)>(store, func, params).await?.0),
        Out::S64 => Value::from(typed::<T, P, (i64,)>(store, func, params).await?.0),
        Out::F64 => Value::F64(typed::<T, P, (f64,)>(store, func, params).await?.0),
        Out::Bool => Value::Boolean(typed::<T, P, (bool,)>(store, func, params).await?.0),
    }))
}

/// Calls `func`, whose result `out` holds a `list<u8>`, with `params`; the
/// bytes are copied once, straight into the result's MessagePack encoding
/// (the encoding the dynamic path gives: `{"ok": bytes}` or `{"err":
/// text}` for a result, nil or the bytes for an option).
async fn bytes_out<T: Send, P>(
    store: &mut Store<T>,
    func: Func,
    params: P,
    out: Out,
) -> wasmtime::Result<Output>
where
    P: ComponentNamedList + Lower + Send + Sync,
{
    let encoded = match out {
        Out::BytesOrError => {
            let (r,) = typed::<T, P, (Result<WasmList<u8>, WasmStr>,)>(store, func, params).await?;
            match r {
                Ok(list) => case_of_bytes("ok", list.as_le_slice(&*store)),
                Err(text) => value::encode(&Value::Map(vec![(
                    Value::from("err"),
                    Value::from(&*text.to_str(&*store)?),
                )]))
                .into(),
            }
        }
        Out::MaybeBytes => {
            let (o,) = typed::<T, P, (Option<WasmList<u8>>,)>(store, func, params).await?;
            match o {
                Some(list) => value::encode_binary(list.as_le_slice(&*store)),
                None => value::encode(&Value::Nil).into(),
            }
        }
        _ => {
            let (list,) = typed::<T, P, (WasmList<u8>,)>(store, func, params).await?;
            value::encode_binary(list.as_le_slice(&*store))
        }
    };
    Ok(Output::Encoded(encoded))
}

/// The MessagePack of `{case: bytes}` (a one-entry map, as a result's
/// case is encoded), with one copy of `bytes`.
fn case_of_bytes(case: &str, bytes: &[u8]) -> Bytes {
    let mut out = value::encode(&Value::Map(vec![(Value::from(case), Value::Nil)]));
    // Drop the nil, and put the byte string in its place.
    out.pop();
    out.reserve(bytes.len() + value::BIN32_ROOM);
    value::push_binary_header(&mut out, bytes.len() as u32);
    out.extend_from_slice(bytes);
    out.into()
}

async fn typed<T: Send, P, R>(store: &mut Store<T>, func: Func, params: P) -> wasmtime::Result<R>
where
    P: ComponentNamedList + Lower + Send + Sync,
    R: ComponentNamedList + Lift + Send + Sync + 'static,
{
    func.typed::<P, R>(&*store)?
        .call_async(&mut *store, params)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::Type;

    fn shape(params: &[Type], results: &[Type]) -> Option<Shape> {
        let params: Vec<_> = params
            .iter()
            .map(|t| ("p".to_string(), t.clone()))
            .collect();
        Shape::of(&params, results)
    }

    #[test]
    fn only_signatures_that_carry_bytes_and_fit_a_shape_are_bulk() {
        // Types are built by the engine; scalars are enough to check the
        // rules that do not involve lists.
        assert_eq!(shape(&[Type::String], &[Type::String]), None);
        assert_eq!(shape(&[Type::U32, Type::U64, Type::S64], &[]), None);
        assert_eq!(shape(&[Type::Float32], &[]), None);
    }

    #[test]
    fn a_case_of_bytes_is_encoded_as_the_dynamic_path_encodes_it() {
        for n in [0, 3, 300, 70_000] {
            let bytes = vec![7u8; n];
            let whole = value::encode(&Value::Map(vec![(
                Value::from("ok"),
                Value::Binary(bytes.clone()),
            )]));
            assert_eq!(&case_of_bytes("ok", &bytes)[..], &whole[..], "{n} bytes");
        }
    }
}
