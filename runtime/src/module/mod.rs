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
//! The CLI and the Rust client read a module's types from its binary
//! ([`LocalModule`], without compiling it) to type arguments before
//! anything is submitted; workers compile it ([`compile`]) to run it, and
//! read the same types from what they compiled.

/// A WIT type of a parameter or result.
pub use dtask_core::wit::Type;
use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::{Component, ComponentExportIndex};
use wasmtime::{Config, Module};

mod compile;
mod read;

pub use compile::{compile, is_cached};
pub use read::read_types;

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
    /// A typed export of a compiled component.
    Export(ComponentExportIndex),
    /// A typed export, as read from a component's binary (not compiled, so
    /// not enterable).
    Declared,
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

impl Code {
    /// The engine that compiled it, which its instances run in.
    pub fn engine(&self) -> &wasmtime::Engine {
        match self {
            Code::Component(c) => c.engine(),
            Code::Core(m) => m.engine(),
        }
    }
}

/// What a module is and the typed functions it exports: all a client
/// needs to type a task's arguments.
pub struct ModuleTypes {
    /// Hex BLAKE3 of the module's bytes.
    pub hash: String,
    /// Exported functions by name; for a command only `_start`, described
    /// by the types of its task arguments (see [`FuncSig`]).
    pub funcs: BTreeMap<String, FuncSig>,
    kind: ModuleKind,
}

/// A compiled module with its typed exports.
pub struct CompiledModule {
    /// What it exports.
    pub types: ModuleTypes,
    /// The compiled code.
    pub code: Code,
}

impl Deref for CompiledModule {
    type Target = ModuleTypes;

    fn deref(&self) -> &ModuleTypes {
        &self.types
    }
}

impl ModuleTypes {
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

/// Files a function `func` of the exported interface `interface` under both
/// names users call it by: `interface#func`, and plain `func` unless an
/// earlier export already has that name.
fn insert_interface_func(
    funcs: &mut BTreeMap<String, FuncSig>,
    interface: &str,
    func: &str,
    sig: impl Fn(String) -> FuncSig,
) {
    funcs
        .entry(func.to_string())
        .or_insert_with(|| sig(func.to_string()));
    let full = format!("{interface}#{func}");
    funcs.insert(full.clone(), sig(full));
}

/// The one task function of a command, typed as its task arguments:
/// `stdin: option<list<u8>>, argv: list<string>`, result `list<u8>`.
fn command_funcs() -> BTreeMap<String, FuncSig> {
    let sig = FuncSig {
        name: COMMAND_FUNCTION.to_string(),
        params: vec![
            ("stdin".to_string(), Type::option(Type::list(Type::U8))),
            ("argv".to_string(), Type::list(Type::String)),
        ],
        results: vec![Type::list(Type::U8)],
        entry: Entry::Command,
    };
    BTreeMap::from([(COMMAND_FUNCTION.to_string(), sig)])
}

/// A module loaded from a file for a client: bytes, hash and types, read
/// from the binary without compiling it.
#[derive(Clone)]
pub struct LocalModule {
    /// The file's name as the user gave it.
    pub name: String,
    /// Its bytes.
    pub bytes: bytes::Bytes,
    /// What it exports (shared).
    pub types: Arc<ModuleTypes>,
}

impl LocalModule {
    /// Reads a module file and its types.
    pub fn load(path: &Path) -> Result<Self, String> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {name}: {e}"))?;
        Self::from_bytes(name, bytes.into())
    }

    /// Reads the types of module bytes that came from elsewhere.
    pub fn from_bytes(name: String, bytes: bytes::Bytes) -> Result<Self, String> {
        let types = read_types(&bytes, &name)?;
        Ok(Self {
            name,
            bytes,
            types: Arc::new(types),
        })
    }

    /// Its hash.
    pub fn hash(&self) -> &str {
        &self.types.hash
    }
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

    fn engine() -> &'static wasmtime::Engine {
        static ENGINE: std::sync::OnceLock<wasmtime::Engine> = std::sync::OnceLock::new();
        ENGINE.get_or_init(|| wasmtime::Engine::new(&engine_config()).unwrap())
    }

    /// The types of `bytes` read both ways: by a client from the binary,
    /// and by a worker from what it compiled. They must agree.
    fn both(bytes: &[u8], name: &str) -> Result<ModuleTypes, String> {
        let read = read_types(bytes, name);
        let compiled = compile(engine(), bytes, name, None);
        match (read, compiled) {
            (Ok(read), Ok(compiled)) => {
                assert_eq!(read.kind(), compiled.kind(), "{name}");
                assert_eq!(read.hash, compiled.hash, "{name}");
                let sigs = |t: &ModuleTypes| {
                    t.funcs
                        .values()
                        .map(|f| (f.name.clone(), f.params.clone(), f.results.clone()))
                        .collect::<Vec<_>>()
                };
                assert_eq!(sigs(&read), sigs(&compiled), "{name}");
                Ok(read)
            }
            (Err(read), Err(_)) => Err(read),
            (read, compiled) => panic!(
                "{name}: read {:?}, compiled {:?}",
                read.map(|_| ()),
                compiled.map(|_| ())
            ),
        }
    }

    fn wat(text: &str) -> Vec<u8> {
        ::wat::parse_str(text).unwrap()
    }

    #[test]
    fn the_guests_types_read_from_their_binaries_are_what_wasmtime_compiles() {
        for (path, function) in [
            (dtask_guests::TASKS_WASM, "inc"),
            (dtask_guests::COORD_WASM, "busy-until"),
        ] {
            let bytes = std::fs::read(path).unwrap();
            let m = both(&bytes, path).unwrap();
            assert_eq!(m.kind(), ModuleKind::Component);
            assert!(m.funcs.contains_key(function), "{path}");
            assert!(m.funcs.len() > 5, "{path}: {:?}", m.funcs.keys());
        }
    }

    #[test]
    fn a_core_module_with_start_is_a_command_with_one_function() {
        let bytes = std::fs::read(CAT_WASM).unwrap();
        let m = both(&bytes, "cat.wasm").unwrap();
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
        let err = both(b"\0asm\x01\0\0\0", "lib.wasm").err().unwrap();
        assert!(
            err.contains("lib.wasm is a core WebAssembly module without a WASI `_start`"),
            "{err}"
        );
        let odd = wat(r#"(module (func (export "_start") (param i32)))"#);
        let err = both(&odd, "odd.wasm").err().unwrap();
        assert!(err.contains("`_start` is not a function without"), "{err}");
        let table = wat(r#"(module (table (export "_start") 1 funcref))"#);
        let err = both(&table, "table.wasm").err().unwrap();
        assert!(err.contains("`_start` is not a function without"), "{err}");
    }

    #[test]
    fn a_core_command_importing_more_than_wasi_is_refused() {
        let env = wat(r#"(module (import "env" "now" (func)) (func (export "_start")))"#);
        let err = both(&env, "env.wasm").err().unwrap();
        assert!(err.contains("imports `env::now`"), "{err}");
        // Without `_start` it is not a command at all: that is what to say.
        let lib = wat(r#"(module (import "env" "now" (func)))"#);
        let err = both(&lib, "lib.wasm").err().unwrap();
        assert!(err.contains("without a WASI `_start`"), "{err}");
    }

    #[test]
    fn what_wasmtime_refuses_a_client_refuses_before_submitting() {
        // Shared memory needs threads, which dtask's wasmtime is built
        // without: wasmtime refuses it, and so does the client's reading.
        let threads = wat(r#"(module (memory 1 1 shared) (func (export "_start")))"#);
        assert!(wasmtime::Module::new(engine(), &threads).is_err());
        let err = read_types(&threads, "threads.wasm").err().unwrap();
        assert!(
            err.contains("threads.wasm is not a valid WebAssembly module"),
            "{err}"
        );
    }

    #[test]
    fn a_component_the_wit_decoder_cannot_express_is_read_by_compiling_it() {
        // Exporting a core module is valid, and wasmtime runs the rest,
        // but WIT has no word for it.
        let bytes = wat(r#"(component
            (core module $m (func (export "f") (result i32) i32.const 7))
            (core instance $i (instantiate $m))
            (func $f (result u32) (canon lift (core func $i "f")))
            (export "f" (func $f))
            (export "m" (core module $m)))"#);
        assert!(wit_parser::decoding::decode(&bytes).is_err());
        let m = both(&bytes, "odd.wasm").unwrap();
        assert_eq!(m.kind(), ModuleKind::Component);
        assert_eq!(
            m.func("f", "odd.wasm").unwrap().to_wit(),
            "f: func() -> u32"
        );
    }

    #[test]
    fn only_a_released_wasi_cli_run_makes_a_command() {
        let rc = RUN_COMPONENT.replace("wasi:cli/run@0.2.3", "wasi:cli/run@0.2.0-rc-2023-12-05");
        let m = both(&wat(&rc), "rc.wasm").unwrap();
        assert_eq!(m.kind(), ModuleKind::Component);
        assert!(m.funcs.contains_key("run"), "{:?}", m.funcs.keys());
    }

    #[test]
    fn broken_modules_are_refused_before_anything_runs() {
        let mut bytes = std::fs::read(dtask_guests::TASKS_WASM).unwrap();
        bytes.truncate(bytes.len() / 2);
        let err = both(&bytes, "half.wasm").err().unwrap();
        assert!(
            err.contains("half.wasm is not a valid WebAssembly component"),
            "{err}"
        );
        let bad = b"\0asm\x01\0\0\0\x01\x04\x01\x60\x00";
        let err = both(bad, "bad.wasm").err().unwrap();
        assert!(
            err.contains("bad.wasm is not a valid WebAssembly module"),
            "{err}"
        );
        let err = both(b"ELF", "elf").err().unwrap();
        assert!(err.contains("no \\0asm header"), "{err}");
    }

    #[test]
    fn a_component_exporting_wasi_cli_run_is_a_command() {
        let m = both(&wat(RUN_COMPONENT), "run.wasm").unwrap();
        assert_eq!(m.kind(), ModuleKind::CommandComponent);
        assert_eq!(m.funcs.keys().collect::<Vec<_>>(), ["_start"]);
    }

    #[test]
    fn core_artifacts_are_cached_beside_component_ones() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(CAT_WASM).unwrap();
        let first = compile(engine(), &bytes, "cat.wasm", Some(dir.path())).unwrap();
        let artifact = compile::artifact_path(engine(), dir.path(), &first.hash, "core.cwasm");
        assert!(artifact.exists());
        let again = compile(engine(), &bytes, "cat.wasm", Some(dir.path())).unwrap();
        assert_eq!(again.kind(), ModuleKind::CoreCommand);
    }
}
