//! The crate layout holds: `dtask-core` (protocol, keys, credentials, the
//! scheduler's state machine) depends on no async runtime, no WebAssembly
//! engine and nothing that opens sockets.

mod common;

use std::process::Command;

#[test]
fn the_core_crate_needs_no_runtime_engine_or_sockets() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--manifest-path",
            manifest,
            "-p",
            "dtask-core",
            "--edges",
            "normal",
            "--prefix",
            "none",
        ])
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(crates.contains(&"dtask-core"), "{tree}");
    assert!(crates.contains(&"serde"), "the tree was listed: {tree}");
    for banned in [
        "tokio",
        "mio",
        "socket2",
        "wasmtime",
        "cranelift-codegen",
        "rustls",
        "axum",
        "hyper",
    ] {
        assert!(
            !crates.contains(&banned),
            "dtask-core depends on {banned}:\n{tree}"
        );
    }
}

/// A client types arguments from the component's WIT, read from its
/// binary: `inspect` (and `submit`'s checks) compile nothing, so they leave
/// no compiled artifact in the state directory's cache.
#[test]
fn a_client_reads_a_components_types_without_compiling_it() {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dtask"))
        .args(["inspect", dtask_guests::TASKS_WASM])
        .env("DTASK_STATE_DIR", state.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("inc: func(x: s64) -> s64"), "{listing}");
    let compiled = common::compiled_artifacts(state.path());
    assert!(compiled.is_empty(), "the client compiled: {compiled:?}");
}
