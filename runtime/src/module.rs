//! Loading WebAssembly components: hashing, validation, compilation with an
//! on-disk cache of compiled artifacts, and the typed list of exports.
//!
//! The CLI and the Rust client load a module to type arguments before
//! anything is submitted; workers load it to run it. Both share
//! [`engine_config`], so an artifact compiled by one is valid for the other.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::types::ComponentItem;
/// A WIT type of a parameter or result.
pub use wasmtime::component::types::Type;
use wasmtime::component::{Component, ComponentExportIndex};
use wasmtime::{Config, Engine};

/// Largest module accepted, in bytes.
pub const MAX_MODULE_BYTES: usize = 256 * 1024 * 1024;

/// Compilation settings shared by every engine dtask creates.
pub fn engine_config() -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable);
    c
}

/// An exported function and its WIT signature.
#[derive(Clone)]
pub struct FuncSig {
    /// The name users call it by.
    pub name: String,
    /// Parameter names and types, in order.
    pub params: Vec<(String, Type)>,
    /// Result types (zero or one for WIT functions).
    pub results: Vec<Type>,
    pub(crate) index: ComponentExportIndex,
}

impl FuncSig {
    /// The signature in WIT syntax: `inc: func(x: s64) -> s64`.
    pub fn to_wit(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(n, t)| format!("{n}: {}", crate::value::type_to_wit(t)))
            .collect();
        let mut s = format!("{}: func({})", self.name, params.join(", "));
        if let [r] = self.results.as_slice() {
            s.push_str(" -> ");
            s.push_str(&crate::value::type_to_wit(r));
        }
        s
    }
}

/// A compiled component with its typed exports.
pub struct CompiledModule {
    /// Hex BLAKE3 of the module's bytes.
    pub hash: String,
    /// The compiled component.
    pub component: Component,
    /// Exported functions by name.
    pub funcs: BTreeMap<String, FuncSig>,
}

impl CompiledModule {
    /// The export called `name`, or an error listing the exports there are.
    pub fn func(&self, name: &str, module_name: &str) -> Result<&FuncSig, String> {
        self.funcs.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.funcs.keys().map(String::as_str).collect();
            format!(
                "export `{name}` not found in {module_name} (exports: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )
        })
    }
}

/// Hex BLAKE3 of module bytes: a module's identity.
pub fn module_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Checks that `bytes` look like a WebAssembly component before compiling,
/// so the user hears what the file is rather than a parser error.
pub fn check_header(bytes: &[u8], name: &str) -> Result<(), String> {
    if bytes.len() > MAX_MODULE_BYTES {
        return Err(format!(
            "{name} is {} bytes; modules can be at most {MAX_MODULE_BYTES} bytes",
            bytes.len()
        ));
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(format!(
            "{name} is not a WebAssembly file (no \\0asm header); build your tasks \
             for the wasm32-wasip2 target"
        ));
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(format!(
            "{name} is a core WebAssembly module, not a component; build it for \
             wasm32-wasip2, or wrap it with `wasm-tools component new`"
        ));
    }
    Ok(())
}

/// Compiles a component (or loads its artifact from `cache_dir`) and reads
/// its exported functions.
pub fn compile(
    engine: &Engine,
    bytes: &[u8],
    name: &str,
    cache_dir: Option<&Path>,
) -> Result<CompiledModule, String> {
    check_header(bytes, name)?;
    let hash = module_hash(bytes);
    let cached = cache_dir.map(|d| artifact_path(engine, d, &hash));
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
            if let Some(path) = &cached {
                store_artifact(&c, path);
            }
            c
        }
    };
    let funcs = exports(engine, &component);
    Ok(CompiledModule {
        hash,
        component,
        funcs,
    })
}

fn artifact_path(engine: &Engine, dir: &Path, hash: &str) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    dir.join(format!("{:016x}", h.finish()))
        .join(format!("{hash}.cwasm"))
}

fn store_artifact(component: &Component, path: &Path) {
    let Ok(bytes) = component.serialize() else {
        return;
    };
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
                        let full = format!("{name}#{fname}");
                        funcs
                            .entry(fname.to_string())
                            .or_insert_with(|| sig(fname.to_string(), &f, index));
                        funcs.insert(full.clone(), sig(full, &f, index));
                    }
                }
            }
            _ => {}
        }
    }
    funcs
}

fn sig(
    name: String,
    f: &wasmtime::component::types::ComponentFunc,
    index: ComponentExportIndex,
) -> FuncSig {
    FuncSig {
        name,
        params: f.params().map(|(n, t)| (n.to_string(), t)).collect(),
        results: f.results().collect(),
        index,
    }
}

/// A module loaded from a file for a client: bytes, hash and types.
#[derive(Clone)]
pub struct LocalModule {
    /// The file's name as the user gave it.
    pub name: String,
    /// Its bytes.
    pub bytes: bytes::Bytes,
    /// The compiled module (shared).
    pub compiled: Arc<CompiledModule>,
}

impl LocalModule {
    /// Reads and compiles a module file, using the artifact cache in
    /// `cache_dir` when given.
    pub fn load(path: &Path, cache_dir: Option<&Path>) -> Result<Self, String> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {name}: {e}"))?;
        Self::from_bytes(name, bytes.into(), cache_dir)
    }

    /// Compiles module bytes that came from elsewhere.
    pub fn from_bytes(
        name: String,
        bytes: bytes::Bytes,
        cache_dir: Option<&Path>,
    ) -> Result<Self, String> {
        let compiled = compile(client_engine(), &bytes, &name, cache_dir)?;
        Ok(Self {
            name,
            bytes,
            compiled: Arc::new(compiled),
        })
    }

    /// Its hash.
    pub fn hash(&self) -> &str {
        &self.compiled.hash
    }
}

/// The engine clients use to read module types (never to run them).
fn client_engine() -> &'static Engine {
    static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| Engine::new(&engine_config()).expect("the engine configuration is valid"))
}
