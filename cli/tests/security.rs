//! Credentials and secrets: the client and worker tokens admit only their
//! own roles, both live 0600 in the state directory, and neither shows up
//! in logs.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

fn file_token(c: &Cluster, name: &str) -> String {
    std::fs::read_to_string(c.state.path().join(name))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn both_credentials_are_private_files_and_differ() {
    let c = Cluster::start(1, 1);
    for name in ["token", "worker-token"] {
        let mode = std::fs::metadata(c.state.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name} is mode {mode:o}");
    }
    assert_ne!(file_token(&c, "token"), file_token(&c, "worker-token"));
}

#[test]
fn a_worker_credential_cannot_act_as_a_client() {
    let c = Cluster::start(1, 1);
    let worker = file_token(&c, "worker-token");
    for args in [
        vec!["submit", tasks_wasm(), "inc", "1"],
        vec!["shutdown"],
        vec!["pub", "news", "1"],
    ] {
        let out = c.cmd().env("DTASK_TOKEN", &worker).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("this is a worker credential"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // The cluster is still there and serves the client credential.
    let key = c.submit("inc", &["41"]);
    assert_eq!(c.ok(&["gather", &key]), "42");
}

#[test]
fn a_client_credential_cannot_join_as_a_worker() {
    let c = Cluster::start(1, 1);
    let client = file_token(&c, "token");
    let out = Command::new(DTASK)
        .args(["worker", "--reconnect-grace", "0s", "--scheduler", &c.addr])
        .env("DTASK_STATE_DIR", c.state.path())
        .env("DTASK_WORKER_TOKEN", &client)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("this is a client credential"),
        "{}",
        stderr(&out)
    );
    // A worker without any credential says where to find one.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(DTASK)
        .args(["worker", "--reconnect-grace", "0s", "--scheduler", &c.addr])
        .env("DTASK_STATE_DIR", empty.path())
        .env_remove("DTASK_WORKER_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("DTASK_WORKER_TOKEN"), "{}", stderr(&out));
}

#[test]
fn tasks_act_as_clients_with_the_worker_credential() {
    // The workers have only the worker token; a task that submits and
    // gathers its own tasks still works.
    let c = Cluster::start(2, 2);
    let key = c.ok(&["submit", dtask_guests::COORD_WASM, "fib", "10"]);
    assert_eq!(c.ok(&["gather", &key]), "55");
}

#[test]
fn tokens_never_reach_the_logs() {
    let state = tempfile::tempdir().unwrap();
    let client = "client-secret-5f1e2d";
    let worker = "worker-secret-9a8b7c";
    let mut sched = Command::new(DTASK)
        .args(["cluster", "--port", "0", "--n-workers", "1"])
        .env("DTASK_STATE_DIR", state.path())
        .env("DTASK_DASHBOARD_PORT", "0")
        .env("DTASK_TOKEN", client)
        .env("DTASK_WORKER_TOKEN", worker)
        .env("DTASK_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = first_line(sched.stdout.take().unwrap(), Duration::from_secs(30)).unwrap();
    // Read the (verbose) log as it comes, so the cluster never blocks on it.
    let mut log = sched.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = std::io::Read::read_to_string(&mut log, &mut all);
        all
    });
    let run = |token: &str, args: &[&str]| {
        Command::new(DTASK)
            .args(args)
            .env("DTASK_STATE_DIR", state.path())
            .env("DTASK_SCHEDULER", &addr)
            .env("DTASK_TOKEN", token)
            .env("DTASK_LOG", "trace")
            .output()
            .unwrap()
    };
    let out = run(client, &["submit", tasks_wasm(), "inc", "1"]);
    let key = stdout(&out).trim().to_string();
    let gathered = run(client, &["gather", &key]);
    assert_eq!(stdout(&gathered).trim(), "2", "{}", stderr(&gathered));
    // Refusals are logged, without the token presented or expected.
    let refused = run(worker, &["info"]);
    assert_eq!(refused.status.code(), Some(3));
    let wrong = run("not-the-token", &["info"]);
    assert_eq!(wrong.status.code(), Some(3));
    assert!(run(client, &["shutdown"]).status.success());
    sched.wait().unwrap();
    let mut logs = log.join().unwrap();
    for o in [&out_of(&gathered), &out_of(&refused), &out_of(&wrong)] {
        logs.push_str(o);
    }
    assert!(logs.contains("refused"), "the refusals were logged: {logs}");
    for secret in [client, worker] {
        assert!(!logs.contains(secret), "{secret} appears in the logs");
    }
}

fn out_of(o: &std::process::Output) -> String {
    stderr(o)
}
