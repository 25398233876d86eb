//! Builds dtask's example guest components for `wasm32-wasip2` with a nested
//! cargo, the way wasmtime's test-programs do, so that `cargo test` on a fresh
//! clone has real guests to run, and exposes the paths of the committed WASI
//! command fixtures (built from C and WAT, which need tools a fresh machine
//! lacks; see `wasm-tasks/commands/README.md`).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (name exposed to host code, crate directory, artifact file name)
const GUESTS: &[(&str, &str, &str)] = &[
    ("TASKS_WASM", "tasks", "dtask_example_tasks.wasm"),
    ("ECHO_WASM", "commands/rust-echo", "echo.wasm"),
    ("COORD_WASM", "coord", "dtask_coord_tasks.wasm"),
    ("PROBE_WASM", "probe", "dtask_example_probe.wasm"),
];

/// Paths under `wasm-tasks` that guests build from besides their own crate:
/// the WIT contract, and the guest SDK (a path dependency of `coord`).
const SHARED_SOURCES: &[&str] = &["wit", "sdk/src", "sdk/Cargo.toml"];

/// (name exposed to host code, committed file, what it is)
const FIXTURES: &[(&str, &str, &str)] = &[
    (
        "WC_WASM",
        "commands/wc.wasm",
        "`wc` WASI preview 1 command (from `wc.c`)",
    ),
    (
        "UPPER_WASM",
        "commands/upper.wasm",
        "`upper` WASI preview 1 command (from `upper.c`)",
    ),
    (
        "CAT_WASM",
        "commands/cat.wasm",
        "`cat` WASI preview 1 command (from `cat.wat`)",
    ),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let wasm_tasks = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir.join("target");
    for shared in SHARED_SOURCES {
        println!(
            "cargo:rerun-if-changed={}",
            wasm_tasks.join(shared).display()
        );
    }
    for (_, file, _) in FIXTURES {
        println!("cargo:rerun-if-changed={}", wasm_tasks.join(file).display());
    }

    let mut consts = String::new();
    for (name, dir, artifact) in GUESTS {
        let crate_dir = wasm_tasks.join(dir);
        for watched in ["src", "wit", "Cargo.toml", "Cargo.lock", ".cargo"] {
            println!(
                "cargo:rerun-if-changed={}",
                crate_dir.join(watched).display()
            );
        }
        build_guest(&crate_dir, &target_dir);
        let built = target_dir.join("wasm32-wasip2/release").join(artifact);
        let dest = out_dir.join(artifact);
        std::fs::copy(&built, &dest)
            .unwrap_or_else(|e| panic!("copying {} failed: {e}", built.display()));
        consts.push_str(&format!(
            "/// Path of the built `{dir}` guest component.\npub const {name}: &str = {:?};\n",
            dest.display().to_string()
        ));
    }
    for (name, file, what) in FIXTURES {
        let path = wasm_tasks.join(file);
        assert!(path.exists(), "the fixture {} is missing", path.display());
        consts.push_str(&format!(
            "/// Path of the committed {what}.\npub const {name}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    std::fs::write(out_dir.join("guests.rs"), consts).unwrap();
}

fn build_guest(crate_dir: &Path, target_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate_dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(target_dir);
    // Flags meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("could not run cargo to build the guests: {e}"));
    assert!(
        status.success(),
        "building the guest in {} failed; is the target installed? \
         run `rustup target add wasm32-wasip2`",
        crate_dir.display()
    );
}
