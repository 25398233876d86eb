//! Reading a module's kind and typed exports from its binary, without
//! compiling it: what a client needs to type arguments.
//!
//! A component's WIT is decoded from its type information (the same that
//! wasmtime compiles from); a core module's exports and imports are read
//! from its sections. Both are validated first, so a broken file is
//! refused here rather than by the worker.

use super::*;
use wasmparser::{ExternalKind, Parser, Payload, Validator, WasmFeatures};
use wit_parser::decoding::DecodedWasm;
use wit_parser::{Resolve, TypeDefKind, WorldItem};

/// Reads what a module is and what it exports (see [`ModuleTypes`]).
pub fn read_types(bytes: &[u8], name: &str) -> Result<ModuleTypes, String> {
    let core = check_header(bytes, name)?;
    let hash = module_hash(bytes);
    if core {
        check_core_command(bytes, name)?;
        return Ok(ModuleTypes {
            hash,
            funcs: command_funcs(),
            kind: ModuleKind::CoreCommand,
        });
    }
    let not_valid =
        |e: &dyn std::fmt::Display| format!("{name} is not a valid WebAssembly component: {e:#}");
    let (resolve, world) = match wit_parser::decoding::decode(bytes) {
        Ok(DecodedWasm::Component(resolve, world)) => (resolve, world),
        Ok(DecodedWasm::WitPackage(..)) => {
            return Err(format!(
                "{name} is a WIT package (interfaces only, no code), not a component \
                 to run; build your tasks for the wasm32-wasip2 target"
            ));
        }
        Err(e) => return Err(not_valid(&e)),
    };
    let mut funcs = BTreeMap::new();
    let mut command = false;
    for (key, item) in &resolve.worlds[world].exports {
        let export = resolve.name_world_key(key);
        match item {
            WorldItem::Function(f) => {
                funcs.insert(
                    export.clone(),
                    sig(&resolve, export, f).map_err(|e| not_valid(&e))?,
                );
            }
            WorldItem::Interface { id, .. } => {
                let interface = &resolve.interfaces[*id];
                if export.starts_with("wasi:cli/run@0.2.")
                    && interface.functions.contains_key("run")
                {
                    command = true;
                }
                for (fname, f) in &interface.functions {
                    let full = format!("{export}#{fname}");
                    let s = sig(&resolve, full.clone(), f).map_err(|e| not_valid(&e))?;
                    funcs.entry(fname.clone()).or_insert_with(|| FuncSig {
                        name: fname.clone(),
                        ..s.clone()
                    });
                    funcs.insert(full, s);
                }
            }
            WorldItem::Type { .. } => {}
        }
    }
    let (kind, funcs) = if command {
        (ModuleKind::CommandComponent, command_funcs())
    } else {
        (ModuleKind::Component, funcs)
    };
    Ok(ModuleTypes { hash, funcs, kind })
}

fn sig(resolve: &Resolve, name: String, f: &wit_parser::Function) -> Result<FuncSig, String> {
    Ok(FuncSig {
        name,
        params: f
            .params
            .iter()
            .map(|p| Ok((p.name.clone(), wit_type(resolve, &p.ty)?)))
            .collect::<Result<_, String>>()?,
        results: f
            .result
            .iter()
            .map(|t| wit_type(resolve, t))
            .collect::<Result<_, _>>()?,
        entry: Entry::Declared,
    })
}

/// dtask's description of a decoded WIT type.
fn wit_type(resolve: &Resolve, ty: &wit_parser::Type) -> Result<Type, String> {
    use wit_parser::Type as W;
    let opt = |t: &Option<W>| t.as_ref().map(|t| wit_type(resolve, t)).transpose();
    Ok(match ty {
        W::Bool => Type::Bool,
        W::S8 => Type::S8,
        W::U8 => Type::U8,
        W::S16 => Type::S16,
        W::U16 => Type::U16,
        W::S32 => Type::S32,
        W::U32 => Type::U32,
        W::S64 => Type::S64,
        W::U64 => Type::U64,
        W::F32 => Type::Float32,
        W::F64 => Type::Float64,
        W::Char => Type::Char,
        W::String => Type::String,
        W::ErrorContext => Type::ErrorContext,
        W::Id(id) => match &resolve.types[*id].kind {
            TypeDefKind::Type(t) => wit_type(resolve, t)?,
            TypeDefKind::List(t) => Type::list(wit_type(resolve, t)?),
            TypeDefKind::FixedLengthList(t, n) => {
                Type::fixed_length_list(wit_type(resolve, t)?, *n)
            }
            TypeDefKind::Map(k, v) => Type::map(wit_type(resolve, k)?, wit_type(resolve, v)?),
            TypeDefKind::Record(r) => Type::record(
                r.fields
                    .iter()
                    .map(|f| Ok((f.name.clone(), wit_type(resolve, &f.ty)?)))
                    .collect::<Result<Vec<_>, String>>()?,
            ),
            TypeDefKind::Tuple(t) => Type::tuple(
                t.types
                    .iter()
                    .map(|t| wit_type(resolve, t))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            TypeDefKind::Variant(v) => Type::variant(
                v.cases
                    .iter()
                    .map(|c| Ok((c.name.clone(), opt(&c.ty)?)))
                    .collect::<Result<Vec<_>, String>>()?,
            ),
            TypeDefKind::Enum(e) => Type::enumeration(e.cases.iter().map(|c| c.name.clone())),
            TypeDefKind::Flags(f) => Type::flags(f.flags.iter().map(|f| f.name.clone())),
            TypeDefKind::Option(t) => Type::option(wit_type(resolve, t)?),
            TypeDefKind::Result(r) => Type::result(opt(&r.ok)?, opt(&r.err)?),
            TypeDefKind::Handle(wit_parser::Handle::Own(_)) => Type::Own,
            TypeDefKind::Handle(wit_parser::Handle::Borrow(_)) => Type::Borrow,
            TypeDefKind::Future(t) => Type::future(opt(t)?),
            TypeDefKind::Stream(t) => Type::stream(opt(t)?),
            other @ (TypeDefKind::Resource | TypeDefKind::Unknown) => {
                return Err(format!("a {} where a value type belongs", other.as_str()));
            }
        },
    })
}

/// A core module runs only as a WASI preview 1 command: it must be valid,
/// export `_start: func()` and import nothing but WASI preview 1.
pub(super) fn check_core_command(bytes: &[u8], name: &str) -> Result<(), String> {
    let not_valid =
        |e: wasmparser::BinaryReaderError| format!("{name} is not a valid WebAssembly module: {e}");
    let types = Validator::new_with_features(WasmFeatures::all())
        .validate_all(bytes)
        .map_err(not_valid)?;
    let mut start = None;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(not_valid)? {
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    let import = import.map_err(not_valid)?;
                    if import.module != "wasi_snapshot_preview1" {
                        return Err(format!(
                            "{name} imports `{}::{}`, which dtask does not provide; a WASI \
                             command may import only wasi_snapshot_preview1",
                            import.module, import.name
                        ));
                    }
                }
            }
            Payload::ExportSection(exports) => {
                for export in exports {
                    let export = export.map_err(not_valid)?;
                    if export.name == COMMAND_FUNCTION {
                        start = Some((export.kind, export.index));
                    }
                }
            }
            _ => {}
        }
    }
    match start {
        Some((ExternalKind::Func, index)) => {
            let f = types[types.as_ref().core_function_at(index)].unwrap_func();
            if f.params().is_empty() && f.results().is_empty() {
                return Ok(());
            }
        }
        Some(_) => {}
        None => {
            return Err(format!(
                "{name} is a core WebAssembly module without a WASI `_start` entry point; \
                 dtask runs components (build for wasm32-wasip2), or WASI commands"
            ));
        }
    }
    Err(format!(
        "{name} is a core WebAssembly module whose `_start` is not a function \
         without parameters or results, so it is not a WASI command"
    ))
}
