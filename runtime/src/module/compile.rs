//! Compiling a module for a worker (or loading its artifact from the
//! cache), and reading its typed exports from what wasmtime compiled.

use super::*;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use wasmtime::Engine;
use wasmtime::component::types::{self as wt, ComponentItem};

/// Compiles a module (or loads its artifact from `cache_dir`) and reads
/// its exported functions.
pub fn compile(
    engine: &Engine,
    bytes: &[u8],
    name: &str,
    cache_dir: Option<&Path>,
) -> Result<CompiledModule, String> {
    let core = check_header(bytes, name)?;
    let hash = module_hash(bytes);
    let suffix = if core { "core.cwasm" } else { "cwasm" };
    let cached = cache_dir.map(|d| artifact_path(engine, d, &hash, suffix));
    if core {
        read::check_core_command(bytes, name)?;
        let module = compile_core(engine, bytes, name, cached.as_deref())?;
        return Ok(CompiledModule {
            types: ModuleTypes {
                hash,
                funcs: command_funcs(),
                kind: ModuleKind::CoreCommand,
            },
            code: Code::Core(module),
        });
    }
    let mut component = None;
    if let Some(path) = &cached
        && path.exists()
    {
        // SAFETY: artifacts in the cache were written by `Component::serialize`
        // of an engine with the same settings (the directory is keyed by the
        // engine's compatibility hash), in a directory private to this user.
        component = unsafe { Component::deserialize_file(engine, path) }.ok();
    }
    let component = match component {
        Some(c) => c,
        None => {
            let c = Component::new(engine, bytes)
                .map_err(|e| format!("{name} is not a valid WebAssembly component: {e:#}"))?;
            if let Some(path) = &cached
                && let Ok(artifact) = c.serialize()
            {
                store_artifact(&artifact, path);
            }
            c
        }
    };
    Ok(component_module(engine, hash, component))
}

impl CompiledModule {
    /// This module's code in `engine`, an engine of the same compilation
    /// settings (its compatibility hash) that allocates instances another
    /// way: the compiled code is copied, not compiled again.
    pub fn copy_into(&self, engine: &Engine) -> Result<CompiledModule, String> {
        let failed = |e: wasmtime::Error| {
            format!(
                "module {} could not be loaded for instances past the pool: {e:#}",
                self.hash
            )
        };
        match &self.code {
            Code::Component(c) => {
                let artifact = c.serialize().map_err(failed)?;
                // SAFETY: wasmtime serialized these bytes just now, from a
                // component of an engine with the same settings.
                let c = unsafe { Component::deserialize(engine, &artifact) }.map_err(failed)?;
                Ok(component_module(engine, self.hash.clone(), c))
            }
            Code::Core(m) => {
                let artifact = m.serialize().map_err(failed)?;
                // SAFETY: as for components.
                let m = unsafe { Module::deserialize(engine, &artifact) }.map_err(failed)?;
                Ok(CompiledModule {
                    types: ModuleTypes {
                        hash: self.hash.clone(),
                        funcs: command_funcs(),
                        kind: ModuleKind::CoreCommand,
                    },
                    code: Code::Core(m),
                })
            }
        }
    }
}

/// Whether the artifact of `bytes` compiled by `engine` is in `cache_dir`
/// (so loading it takes milliseconds, not a compilation).
pub fn is_cached(engine: &Engine, bytes: &[u8], cache_dir: Option<&Path>) -> bool {
    let (Some(dir), Ok(core)) = (cache_dir, check_header(bytes, "module")) else {
        return false;
    };
    let suffix = if core { "core.cwasm" } else { "cwasm" };
    artifact_path(engine, dir, &module_hash(bytes), suffix).exists()
}

/// A compiled component with its exports: typed functions, or a command.
fn component_module(engine: &Engine, hash: String, component: Component) -> CompiledModule {
    let (kind, funcs) = if is_command_component(&component) {
        (ModuleKind::CommandComponent, command_funcs())
    } else {
        (ModuleKind::Component, exports(engine, &component))
    };
    CompiledModule {
        types: ModuleTypes { hash, funcs, kind },
        code: Code::Component(component),
    }
}

fn compile_core(
    engine: &Engine,
    bytes: &[u8],
    name: &str,
    cached: Option<&Path>,
) -> Result<Module, String> {
    if let Some(path) = cached
        && path.exists()
    {
        // SAFETY: as for components: written by `Module::serialize` of an
        // engine with the same settings, in a directory private to this user.
        if let Ok(m) = unsafe { Module::deserialize_file(engine, path) } {
            return Ok(m);
        }
    }
    let module = Module::new(engine, bytes)
        .map_err(|e| format!("{name} is not a valid WebAssembly module: {e:#}"))?;
    if let Some(path) = cached
        && let Ok(artifact) = module.serialize()
    {
        store_artifact(&artifact, path);
    }
    Ok(module)
}

/// Whether a component exports `wasi:cli/run@0.2.x` with its `run`
/// function (the lookup matches any semver-compatible 0.2 version).
fn is_command_component(component: &Component) -> bool {
    component
        .get_export_index(None, "wasi:cli/run@0.2.0")
        .and_then(|run| component.get_export_index(Some(&run), "run"))
        .is_some()
}

pub(super) fn artifact_path(engine: &Engine, dir: &Path, hash: &str, suffix: &str) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    dir.join(format!("{:016x}", h.finish()))
        .join(format!("{hash}.{suffix}"))
}

fn store_artifact(bytes: &[u8], path: &Path) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    // Write then rename, so a concurrent reader never sees half a file.
    let tmp = dir.join(format!(
        ".{}.{}",
        std::process::id(),
        crate::key::random_key("tmp")
    ));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

fn exports(engine: &Engine, component: &Component) -> BTreeMap<String, FuncSig> {
    let mut funcs = BTreeMap::new();
    let ty = component.component_type();
    for (name, item) in ty.exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(f) => {
                if let Some(index) = component.get_export_index(None, name) {
                    funcs.insert(name.to_string(), sig(name.to_string(), &f, index));
                }
            }
            ComponentItem::ComponentInstance(inst) => {
                let Some(inst_index) = component.get_export_index(None, name) else {
                    continue;
                };
                for (fname, item) in inst.exports(engine) {
                    if let ComponentItem::ComponentFunc(f) = item.ty
                        && let Some(index) = component.get_export_index(Some(&inst_index), fname)
                    {
                        insert_interface_func(&mut funcs, name, fname, |n| sig(n, &f, index));
                    }
                }
            }
            _ => {}
        }
    }
    funcs
}

fn sig(name: String, f: &wt::ComponentFunc, index: ComponentExportIndex) -> FuncSig {
    FuncSig {
        name,
        params: f.params().map(|(n, t)| (n.to_string(), own(&t))).collect(),
        results: f.results().map(|t| own(&t)).collect(),
        entry: Entry::Export(index),
    }
}

/// dtask's description of a type wasmtime compiled.
fn own(ty: &wt::Type) -> Type {
    let opt = |t: Option<wt::Type>| t.as_ref().map(own);
    match ty {
        wt::Type::Bool => Type::Bool,
        wt::Type::S8 => Type::S8,
        wt::Type::U8 => Type::U8,
        wt::Type::S16 => Type::S16,
        wt::Type::U16 => Type::U16,
        wt::Type::S32 => Type::S32,
        wt::Type::U32 => Type::U32,
        wt::Type::S64 => Type::S64,
        wt::Type::U64 => Type::U64,
        wt::Type::Float32 => Type::Float32,
        wt::Type::Float64 => Type::Float64,
        wt::Type::Char => Type::Char,
        wt::Type::String => Type::String,
        wt::Type::List(l) => Type::list(own(&l.ty())),
        wt::Type::FixedLengthList(l) => Type::fixed_length_list(own(&l.ty()), l.len()),
        wt::Type::Map(m) => Type::map(own(&m.key()), own(&m.value())),
        wt::Type::Record(r) => Type::record(r.fields().map(|f| (f.name.to_string(), own(&f.ty)))),
        wt::Type::Tuple(t) => Type::tuple(t.types().map(|t| own(&t))),
        wt::Type::Variant(v) => Type::variant(v.cases().map(|c| (c.name.to_string(), opt(c.ty)))),
        wt::Type::Enum(e) => Type::enumeration(e.names().map(str::to_string)),
        wt::Type::Option(o) => Type::option(own(&o.ty())),
        wt::Type::Result(r) => Type::result(opt(r.ok()), opt(r.err())),
        wt::Type::Flags(f) => Type::flags(f.names().map(str::to_string)),
        wt::Type::Own(_) => Type::Own,
        wt::Type::Borrow(_) => Type::Borrow,
        wt::Type::Future(f) => Type::future(opt(f.ty())),
        wt::Type::Stream(s) => Type::stream(opt(s.ty())),
        wt::Type::ErrorContext => Type::ErrorContext,
    }
}
