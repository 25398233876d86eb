//! Loading WebAssembly modules: hashing, validation, compilation with an
//! on-disk cache of compiled artifacts, and the typed list of exports.
//!
//! A module is one of three [`ModuleKind`]s: a component whose exported
//! functions are tasks (the normal case), or a WASI command, either a
//! component exporting `wasi:cli/run` or a core (preview 1) module with
//! `_start`. A command has one task function, `_start` (alias `main`), whose
//! arguments are its standard input and its argv and whose result is its
//! standard output.
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
use wasmtime::{Config, Engine, ExternType, Module};

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

/// How a component names a resource's constructor: `[constructor]R`.
const CONSTRUCTOR: &str = "[constructor]";

/// The export name of the constructor of `resource`.
pub fn constructor(resource: &str) -> String {
    format!("{CONSTRUCTOR}{resource}")
}

/// The task function of a WASI command.
pub const COMMAND_FUNCTION: &str = "_start";

/// Another name users may call a command's task function by.
pub const COMMAND_ALIAS: &str = "main";

/// What a module is, which decides how its tasks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    /// A component whose exported functions are tasks with typed arguments.
    Component,
    /// A component exporting `wasi:cli/run@0.2.x`: a WASI preview 2 command.
    CommandComponent,
    /// A core module exporting `_start`: a WASI preview 1 command.
    CoreCommand,
}

impl ModuleKind {
    /// Whether tasks of this module are WASI commands: arguments
    /// `[stdin, argv]`, result the bytes of standard output.
    pub fn is_command(self) -> bool {
        !matches!(self, ModuleKind::Component)
    }
}

/// How a task function is entered.
#[derive(Clone, Copy)]
pub(crate) enum Entry {
    /// A typed component export.
    Export(ComponentExportIndex),
    /// A command's entry point (`wasi:cli/run` or `_start`).
    Command,
}

/// An exported function and its WIT signature.
///
/// A command's `_start` is described with the types its task arguments
/// take: `stdin: option<list<u8>>, argv: list<string>`, result `list<u8>`.
#[derive(Clone)]
pub struct FuncSig {
    /// The name users call it by.
    pub name: String,
    /// Parameter names and types, in order.
    pub params: Vec<(String, Type)>,
    /// Result types (zero or one for WIT functions).
    pub results: Vec<Type>,
    pub(crate) entry: Entry,
}

impl FuncSig {
    /// The signature in WIT syntax: `inc: func(x: s64) -> s64`; for a WASI
    /// command `_start: command (argv, stdin -> stdout bytes)`.
    pub fn to_wit(&self) -> String {
        if let Entry::Command = self.entry {
            return format!("{}: command (argv, stdin -> stdout bytes)", self.name);
        }
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

/// Compiled code of either kind.
pub enum Code {
    /// A component (typed exports, or a WASI preview 2 command).
    Component(Component),
    /// A core module (a WASI preview 1 command).
    Core(Module),
}

/// A compiled module with its typed exports.
pub struct CompiledModule {
    /// Hex BLAKE3 of the module's bytes.
    pub hash: String,
    /// The compiled code.
    pub code: Code,
    /// Exported functions by name; for a command only `_start`, described
    /// by the types of its task arguments (see [`FuncSig`]).
    pub funcs: BTreeMap<String, FuncSig>,
    kind: ModuleKind,
}

impl CompiledModule {
    /// What kind of module this is.
    pub fn kind(&self) -> ModuleKind {
        self.kind
    }

    /// The constructor of the exported resource `resource` (an actor's
    /// type), or an error listing the resources there are.
    pub fn constructor(&self, resource: &str, module_name: &str) -> Result<&FuncSig, String> {
        if let Some(sig) = self.funcs.get(&constructor(resource)) {
            return Ok(sig);
        }
        let resources: Vec<&str> = self
            .funcs
            .keys()
            .filter_map(|f| f.strip_prefix(CONSTRUCTOR))
            .filter(|r| !r.contains('#'))
            .collect();
        Err(if resources.is_empty() {
            format!("{module_name} exports no resource {resource} (it exports none)")
        } else {
            format!(
                "{module_name} exports no resource {resource}; it has: {}",
                resources.join(", ")
            )
        })
    }

    /// The export called `name`, or an error listing the exports there are.
    /// A command's `_start` is also found as `main`.
    pub fn func(&self, name: &str, module_name: &str) -> Result<&FuncSig, String> {
        let name = match name {
            COMMAND_ALIAS if self.kind.is_command() => COMMAND_FUNCTION,
            other => other,
        };
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

/// Checks that `bytes` look like a WebAssembly component or core module
/// before compiling, so the user hears what the file is rather than a parser
/// error. Returns whether it is a core module.
pub fn check_header(bytes: &[u8], name: &str) -> Result<bool, String> {
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
    Ok(bytes[4..8] == [1, 0, 0, 0])
}

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
        let module = compile_core(engine, bytes, name, cached.as_deref())?;
        return core_command(hash, module, name);
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

/// A compiled component with its exports: typed functions, or a command.
pub(crate) fn component_module(
    engine: &Engine,
    hash: String,
    component: Component,
) -> CompiledModule {
    let (kind, funcs) = if is_command_component(&component) {
        (ModuleKind::CommandComponent, command_funcs())
    } else {
        (ModuleKind::Component, exports(engine, &component))
    };
    CompiledModule {
        hash,
        code: Code::Component(component),
        funcs,
        kind,
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

/// A compiled core module as a WASI preview 1 command, or the reason it
/// is not one.
pub(crate) fn core_command(
    hash: String,
    module: Module,
    name: &str,
) -> Result<CompiledModule, String> {
    check_core_command(&module, name)?;
    Ok(CompiledModule {
        hash,
        code: Code::Core(module),
        funcs: command_funcs(),
        kind: ModuleKind::CoreCommand,
    })
}

/// A core module runs only as a WASI preview 1 command: it must export
/// `_start: func()` and import nothing but WASI preview 1.
fn check_core_command(module: &Module, name: &str) -> Result<(), String> {
    match module.get_export(COMMAND_FUNCTION) {
        Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {}
        Some(_) => {
            return Err(format!(
                "{name} is a core WebAssembly module whose `_start` is not a function \
                 without parameters or results, so it is not a WASI command"
            ));
        }
        None => {
            return Err(format!(
                "{name} is a core WebAssembly module without a WASI `_start` entry point; \
                 dtask runs components (build for wasm32-wasip2), or WASI commands"
            ));
        }
    }
    if let Some(import) = module
        .imports()
        .find(|i| i.module() != "wasi_snapshot_preview1")
    {
        return Err(format!(
            "{name} imports `{}::{}`, which dtask does not provide; a WASI command \
             may import only wasi_snapshot_preview1",
            import.module(),
            import.name()
        ));
    }
    Ok(())
}

/// Whether a component exports `wasi:cli/run@0.2.x` with its `run`
/// function (the lookup matches any semver-compatible 0.2 version).
fn is_command_component(component: &Component) -> bool {
    component
        .get_export_index(None, "wasi:cli/run@0.2.0")
        .and_then(|run| component.get_export_index(Some(&run), "run"))
        .is_some()
}

/// The one task function of a command, typed as its task arguments.
fn command_funcs() -> BTreeMap<String, FuncSig> {
    let (stdin, argv, stdout) = command_types();
    let sig = FuncSig {
        name: COMMAND_FUNCTION.to_string(),
        params: vec![
            ("stdin".to_string(), stdin.clone()),
            ("argv".to_string(), argv.clone()),
        ],
        results: vec![stdout.clone()],
        entry: Entry::Command,
    };
    BTreeMap::from([(COMMAND_FUNCTION.to_string(), sig)])
}

/// The WIT types of a command's task: `option<list<u8>>` (stdin),
/// `list<string>` (argv) and `list<u8>` (stdout). wasmtime makes types
/// only from components, so they come from one that imports a function
/// with them (importing needs no code).
fn command_types() -> &'static (Type, Type, Type) {
    static TYPES: std::sync::OnceLock<(Type, Type, Type)> = std::sync::OnceLock::new();
    TYPES.get_or_init(|| {
        const WAT: &str = r#"(component
            (import "command" (func
                (param "stdin" (option (list u8)))
                (param "argv" (list string))
                (result (list u8)))))"#;
        let engine = client_engine();
        let component = Component::new(engine, WAT).expect("the command signature compiles");
        let ty = component.component_type();
        let (_, item) = ty
            .imports(engine)
            .next()
            .expect("the command signature has one import");
        let ComponentItem::ComponentFunc(f) = item.ty else {
            unreachable!("the command signature imports a function")
        };
        let mut params = f.params().map(|(_, t)| t);
        let stdin = params.next().expect("stdin parameter");
        let argv = params.next().expect("argv parameter");
        let stdout = f.results().next().expect("stdout result");
        (stdin, argv, stdout)
    })
}

fn artifact_path(engine: &Engine, dir: &Path, hash: &str, suffix: &str) -> PathBuf {
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
        entry: Entry::Export(index),
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The committed `cat` fixture: a WASI preview 1 command written in WAT
    /// that copies stdin to stdout and exits with its argument count.
    pub(crate) const CAT_WASM: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../wasm-tasks/commands/cat.wasm"
    );

    /// A component exporting `wasi:cli/run` whose `run` returns `ok` when
    /// the core function gives 0 and `err` otherwise (here: `err`).
    pub(crate) const RUN_COMPONENT: &str = r#"(component
        (core module $m (func (export "run") (result i32) i32.const 1))
        (core instance $i (instantiate $m))
        (func $run (result (result)) (canon lift (core func $i "run")))
        (instance $run-instance (export "run" (func $run)))
        (export "wasi:cli/run@0.2.3" (instance $run-instance)))"#;

    #[test]
    fn a_core_module_with_start_is_a_command_with_one_function() {
        let bytes = std::fs::read(CAT_WASM).unwrap();
        let m = compile(client_engine(), &bytes, "cat.wasm", None).unwrap();
        assert_eq!(m.kind(), ModuleKind::CoreCommand);
        assert!(m.kind().is_command());
        assert_eq!(m.funcs.keys().collect::<Vec<_>>(), ["_start"]);
        let sig = m.func("main", "cat.wasm").unwrap();
        assert_eq!(sig.name, "_start");
        assert_eq!(
            sig.to_wit(),
            "_start: command (argv, stdin -> stdout bytes)"
        );
        let types: Vec<String> = sig
            .params
            .iter()
            .map(|(n, t)| format!("{n}: {}", crate::value::type_to_wit(t)))
            .collect();
        assert_eq!(types, ["stdin: option<list<u8>>", "argv: list<string>"]);
        let err = m.func("run", "cat.wasm").err().unwrap();
        assert!(err.contains("exports: _start"), "{err}");
    }

    #[test]
    fn a_core_module_without_start_is_refused() {
        let err = compile(client_engine(), b"\0asm\x01\0\0\0", "lib.wasm", None)
            .err()
            .unwrap();
        assert!(
            err.contains("lib.wasm is a core WebAssembly module without a WASI `_start`"),
            "{err}"
        );
        let wat = r#"(module (func (export "_start") (param i32)))"#;
        let m = Module::new(client_engine(), wat).unwrap();
        let err = core_command("h".into(), m, "odd.wasm").err().unwrap();
        assert!(err.contains("`_start` is not a function without"), "{err}");
    }

    #[test]
    fn a_core_command_importing_more_than_wasi_is_refused() {
        let wat = r#"(module (import "env" "now" (func)) (func (export "_start")))"#;
        let m = Module::new(client_engine(), wat).unwrap();
        let err = core_command("h".into(), m, "env.wasm").err().unwrap();
        assert!(err.contains("imports `env::now`"), "{err}");
    }

    #[test]
    fn a_component_exporting_wasi_cli_run_is_a_command() {
        let c = Component::new(client_engine(), RUN_COMPONENT).unwrap();
        let m = component_module(client_engine(), "h".into(), c);
        assert_eq!(m.kind(), ModuleKind::CommandComponent);
        assert_eq!(m.funcs.keys().collect::<Vec<_>>(), ["_start"]);
    }

    #[test]
    fn core_artifacts_are_cached_beside_component_ones() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(CAT_WASM).unwrap();
        let first = compile(client_engine(), &bytes, "cat.wasm", Some(dir.path())).unwrap();
        let artifact = artifact_path(client_engine(), dir.path(), &first.hash, "core.cwasm");
        assert!(artifact.exists());
        let again = compile(client_engine(), &bytes, "cat.wasm", Some(dir.path())).unwrap();
        assert_eq!(again.kind(), ModuleKind::CoreCommand);
    }
}
