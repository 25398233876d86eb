//! The guest SDK's own tests (`wasm-tasks/sdk`, a workspace of its own
//! because its crates are built for wasm32-wasip2), run here for the host
//! so the README's test command covers them.

use std::process::Command;

#[test]
fn the_guest_sdks_own_tests_pass() {
    let exe = std::env::current_exe().unwrap();
    // …/target/release/deps/sdk-HASH → …/target
    let target = exe.ancestors().nth(3).unwrap().join("sdk-host");
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../wasm-tasks/sdk/Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args(["test", "--release", "--manifest-path", manifest])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "stdout:\n{o}\nstderr:\n{e}");
    // They ran: a run that built nothing and tested nothing would not say so.
    assert!(o.contains("test result: ok."), "{o}");
}
