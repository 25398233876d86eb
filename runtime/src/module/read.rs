//! Reading a module's kind and typed exports from its binary, without
//! compiling it: what a client needs to type arguments.
//!
//! Both kinds are first validated, code included, against the WebAssembly
//! features dtask's wasmtime accepts, so a file a worker would refuse is
//! refused here. A component's WIT is then decoded from its type
//! information (what wasmtime compiles from); a core module's exports and
//! imports are read from its sections. The few component shapes the WIT
//! decoder cannot express (wasmtime runs them) are read by compiling, as a
//! worker would.

use super::*;
use wasmparser::{ExternalKind, Parser, Payload, Validator, WasmFeatures};
use wit_parser::decoding::DecodedWasm;
use wit_parser::{Resolve, TypeDefKind, WorldItem};

/// What dtask's wasmtime accepts: WebAssembly 3.0 and the component model,
/// without GC types, exceptions, threads or async components (wasmtime is
/// built without those features).
fn features() -> WasmFeatures {
    (WasmFeatures::WASM3 | WasmFeatures::COMPONENT_MODEL)
        - WasmFeatures::GC_TYPES
        - WasmFeatures::EXCEPTIONS
        - WasmFeatures::THREADS
        - WasmFeatures::CM_ASYNC
}

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
    Validator::new_with_features(features())
        .validate_all(bytes)
        .map_err(|e| format!("{name} is not a valid WebAssembly component: {e}"))?;
    // The decoder asserts on some shapes of valid components: a panic there
    // is one more shape it cannot express.
    let decoded = std::panic::catch_unwind(|| wit_parser::decoding::decode(bytes))
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the WIT decoder gave up")));
    let (resolve, world) = match decoded {
        Ok(DecodedWasm::Component(resolve, world)) => (resolve, world),
        Ok(DecodedWasm::WitPackage(..)) => {
            return Err(format!(
                "{name} is a WIT package (interfaces only, no code), not a component \
                 to run; build your tasks for the wasm32-wasip2 target"
            ));
        }
        Err(e) => {
            tracing::debug!("{name}: reading its types by compiling it: {e:#}");
            return compile(fallback_engine(), bytes, name, None).map(|m| m.types);
        }
    };
    let not_valid =
        |e: &dyn std::fmt::Display| format!("{name} is not a valid WebAssembly component: {e:#}");
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
                if is_cli_run(&export) && interface.functions.contains_key("run") {
                    command = true;
                }
                for (fname, f) in &interface.functions {
                    let s = sig(&resolve, fname.clone(), f).map_err(|e| not_valid(&e))?;
                    insert_interface_func(&mut funcs, &export, fname, |name| FuncSig {
                        name,
                        ..s.clone()
                    });
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

/// Whether an export is `wasi:cli/run@0.2.N`, a release (wasmtime does not
/// match prereleases such as `0.2.0-rc-2023-12-05` to 0.2).
fn is_cli_run(export: &str) -> bool {
    export
        .strip_prefix("wasi:cli/run@0.2.")
        .is_some_and(|patch| !patch.is_empty() && patch.bytes().all(|b| b.is_ascii_digit()))
}

/// The engine a client compiles with when the WIT decoder cannot read a
/// component (see the module's docs); made on first use.
fn fallback_engine() -> &'static wasmtime::Engine {
    static ENGINE: std::sync::OnceLock<wasmtime::Engine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| {
        wasmtime::Engine::new(&engine_config()).expect("the engine configuration is valid")
    })
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
        W::Id(id) => match &unaliased(resolve, *id).kind {
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

/// The type an alias chain ends at, followed without recursion (a chain
/// can be as long as the file allows).
fn unaliased(resolve: &Resolve, mut id: wit_parser::TypeId) -> &wit_parser::TypeDef {
    while let TypeDefKind::Type(wit_parser::Type::Id(next)) = resolve.types[id].kind {
        id = next;
    }
    &resolve.types[id]
}

/// A core module runs only as a WASI preview 1 command: it must be valid,
/// export `_start: func()` and import nothing but WASI preview 1.
pub(super) fn check_core_command(bytes: &[u8], name: &str) -> Result<(), String> {
    let not_valid =
        |e: wasmparser::BinaryReaderError| format!("{name} is not a valid WebAssembly module: {e}");
    let types = Validator::new_with_features(features())
        .validate_all(bytes)
        .map_err(not_valid)?;
    let mut start = None;
    let mut foreign = None;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(not_valid)? {
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    let import = import.map_err(not_valid)?;
                    if import.module != "wasi_snapshot_preview1" && foreign.is_none() {
                        foreign = Some(format!("{}::{}", import.module, import.name));
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
                return match foreign {
                    None => Ok(()),
                    Some(import) => Err(format!(
                        "{name} imports `{import}`, which dtask does not provide; a WASI \
                         command may import only wasi_snapshot_preview1"
                    )),
                };
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
