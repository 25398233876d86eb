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
        let out = c
            .cmd()
            .env("DTASK_TOKEN", &worker)
            .args(&args)
            .output()
            .unwrap();
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
    assert!(
        stderr(&out).contains("DTASK_WORKER_TOKEN"),
        "{}",
        stderr(&out)
    );
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

/// The TLS variables for the files `dtask cert init` wrote to `dir`.
fn tls_env(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        ("DTASK_TLS_CA", dir.join("ca.pem").display().to_string()),
        ("DTASK_TLS_CERT", dir.join("cert.pem").display().to_string()),
        ("DTASK_TLS_KEY", dir.join("key.pem").display().to_string()),
    ]
}

fn cert_init(dir: &std::path::Path, hosts: &[&str]) {
    let mut cmd = Command::new(DTASK);
    cmd.args(["cert", "init"]).arg(dir);
    for h in hosts {
        cmd.args(["--host", h]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // It prints the files it wrote, keys among them.
    assert!(stdout(&out).contains("key.pem"), "{}", stdout(&out));
}

#[test]
fn a_tls_cluster_serves_clients_with_the_ca_and_refuses_the_rest() {
    let tls = tempfile::tempdir().unwrap();
    cert_init(tls.path(), &["localhost", "127.0.0.1"]);
    let env = tls_env(tls.path());
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Scheduler and workers present the certificate; workers fetch from
    // each other and clients gather over TLS.
    let c = Cluster::start_env(2, 1, &[], &env_refs);
    let ca = tls.path().join("ca.pem");
    let client = || {
        let mut cmd = c.cmd();
        cmd.env("DTASK_TLS_CA", &ca);
        cmd
    };
    let out = run_with_stdin(
        client().args(["map", tasks_wasm(), "inc"]),
        &(1..=200).map(|i| format!("{i}\n")).collect::<String>(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let gathered = run_with_stdin(client().arg("gather"), &stdout(&out));
    assert!(gathered.status.success(), "{}", stderr(&gathered));
    let sum: u64 = stdout(&gathered)
        .lines()
        .map(|l| l.parse::<u64>().unwrap())
        .sum();
    assert_eq!(sum, (2..=201).sum::<u64>());
    // A value that lives on a worker comes back byte-exact through its
    // data port; over 4 MiB, it also went to the worker through that
    // port, over TLS.
    let data: Vec<u8> = (0..6_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = tls.path().join("data.bin");
    std::fs::write(&file, &data).unwrap();
    let key = client().arg("scatter").arg(&file).output().unwrap();
    assert!(key.status.success(), "{}", stderr(&key));
    let key = stdout(&key).trim().to_string();
    let back = client().args(["gather", "-r", &key]).output().unwrap();
    assert!(back.status.success(), "{}", stderr(&back));
    assert!(back.stdout == data, "the bytes came back different");
    // A task whose input is on the other worker.
    let a = ok_with(&client, &["submit", tasks_wasm(), "inc", "1"]);
    let b = ok_with(
        &client,
        &["submit", tasks_wasm(), "add", &format!("@{a}"), "40"],
    );
    assert_eq!(ok_with(&client, &["gather", &b]), "42");

    // A client without TLS: refused, saying TLS is what it lacks.
    let plain = c.cmd_without_tls().arg("info").output().unwrap();
    assert_eq!(plain.status.code(), Some(3), "{}", stderr(&plain));
    assert!(stderr(&plain).contains("TLS"), "{}", stderr(&plain));
    // A client trusting another CA: refused, naming the CA.
    let other = tempfile::tempdir().unwrap();
    cert_init(other.path(), &["localhost"]);
    let wrong = c
        .cmd()
        .env("DTASK_TLS_CA", other.path().join("ca.pem"))
        .arg("info")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(3), "{}", stderr(&wrong));
    assert!(
        stderr(&wrong).contains("not signed by the CA"),
        "{}",
        stderr(&wrong)
    );
    // A name the certificate is not for.
    let port = c.addr.rsplit_once(':').unwrap().1;
    let by_name = c
        .cmd()
        .env("DTASK_TLS_CA", &ca)
        .env("DTASK_SCHEDULER", format!("[::1]:{port}"))
        .arg("info")
        .output()
        .unwrap();
    assert_eq!(by_name.status.code(), Some(3), "{}", stderr(&by_name));

    // The dashboard speaks TLS too, and `dtask dashboard` says https.
    let link = ok_with(&client, &["dashboard"]);
    assert!(link.starts_with("https://"), "{link}");
    let base = &link[..link.find("login").unwrap()];
    let curl = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&ca)
        .arg(format!("{base}health"))
        .output();
    match curl {
        Ok(out) => {
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(stdout(&out).trim(), "ok");
        }
        Err(e) => eprintln!("SKIPPED the dashboard's TLS check: no curl here ({e})"),
    }
}

#[test]
fn a_tls_client_is_told_when_the_scheduler_has_no_tls() {
    let c = Cluster::start(1, 1);
    let tls = tempfile::tempdir().unwrap();
    cert_init(tls.path(), &["127.0.0.1"]);
    let out = c
        .cmd()
        .env("DTASK_TLS_CA", tls.path().join("ca.pem"))
        .arg("info")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not speak TLS"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_expired_certificate_is_refused_saying_so() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    leaf.not_before = now - time::Duration::days(30);
    leaf.not_after = now - time::Duration::days(1);
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    let env = tls_env(dir.path());
    let state = tempfile::tempdir().unwrap();
    let (sched, addr) = scheduler_env(
        state.path(),
        "0",
        &[],
        &env.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<Vec<_>>(),
    );
    let _kill = Killed(sched);
    let out = Command::new(DTASK)
        .arg("info")
        .env("DTASK_STATE_DIR", state.path())
        .env("DTASK_SCHEDULER", &addr)
        .env("DTASK_TLS_CA", dir.path().join("ca.pem"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("has expired"), "{}", stderr(&out));
}

/// Runs `dtask ARGS` made by `cmd`, expects success, returns trimmed stdout.
fn ok_with(cmd: &dyn Fn() -> Command, args: &[&str]) -> String {
    let out = cmd().args(args).output().unwrap();
    assert!(out.status.success(), "dtask {args:?}: {}", stderr(&out));
    stdout(&out).trim_end().to_string()
}

/// Kills a process when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_cluster_on_ipv6_serves_clients_and_workers() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("*** SKIPPED the IPv6 test: this machine has no ::1 ***");
        return;
    }
    let c = Cluster::start_with(2, 1, &["--host", "::1"]);
    assert!(c.addr.starts_with("[::1]:"), "{}", c.addr);
    let workers = c.ok(&["workers"]);
    assert_eq!(workers.lines().count(), 2, "{workers}");
    assert!(
        workers.lines().all(|l| l.contains("[::1]:")),
        "data ports on ::1: {workers}"
    );
    let a = c.submit("inc", &["1"]);
    let b = c.submit("add", &[&format!("@{a}"), "40"]);
    assert_eq!(c.ok(&["gather", &b]), "42");
}

#[test]
fn a_wildcard_bind_is_never_advertised() {
    let c = Cluster::start_with(1, 1, &["--host", "0.0.0.0"]);
    assert!(!c.addr.starts_with("0.0.0.0"), "{}", c.addr);
    let workers = c.ok(&["workers"]);
    assert!(!workers.contains("0.0.0.0"), "{workers}");
    let key = c.submit("inc", &["6"]);
    assert_eq!(c.ok(&["gather", &key]), "7");
}

#[test]
fn a_worker_credential_cannot_shut_down_even_joined_as_a_worker() {
    use dtask_runtime::connection;
    use dtask_runtime::protocol::{FromScheduler, Hello, PROTOCOL_VERSION, Role, ToScheduler};
    let c = Cluster::start(1, 1);
    let worker = file_token(&c, "worker-token");
    let rt = runtime();
    rt.block_on(async {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            token: worker.clone(),
            role: Role::Worker {
                nthreads: 1,
                data_addr: "127.0.0.1:9".into(),
                name: "impostor".into(),
                resources: Vec::new(),
                memory_limit: 1 << 20,
                restarts: 0,
            },
        };
        let (_, tx, _rx) = connection::connect::<FromScheduler, ToScheduler>(&c.addr, hello)
            .await
            .expect("a worker credential joins as a worker");
        tx.send(ToScheduler::Shutdown).unwrap();
        tx.send(ToScheduler::DashboardLogin { id: 1 }).unwrap();
    });
    // Still serving.
    let key = c.submit("inc", &["2"]);
    assert_eq!(c.ok(&["gather", &key]), "3");
}

#[test]
fn a_data_port_refuses_the_raw_client_token() {
    use dtask_runtime::connection;
    use dtask_runtime::protocol::{FromPeer, Hello, PROTOCOL_VERSION, Role, ToPeer};
    let c = Cluster::start(1, 1);
    let workers = c.ok(&["workers"]);
    let data = workers.split('\t').nth(1).unwrap().to_string();
    let client = file_token(&c, "token");
    let rt = runtime();
    let refused = rt.block_on(async {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            token: client.clone(),
            role: Role::Peer,
        };
        connection::connect::<FromPeer, ToPeer>(&data, hello)
            .await
            .err()
    });
    let why = refused
        .expect("the raw client token is refused by a data port")
        .to_string();
    assert!(why.contains("authentication failed"), "{why}");
    // What clients present instead is admitted.
    let proof = dtask_runtime::secret::peer_proof(&client);
    let admitted = rt.block_on(async {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            token: proof,
            role: Role::Peer,
        };
        connection::connect::<FromPeer, ToPeer>(&data, hello)
            .await
            .is_ok()
    });
    assert!(admitted);
}

#[test]
fn scattered_data_under_a_key_that_is_not_its_bytes_is_refused() {
    use dtask_runtime::connection;
    use dtask_runtime::protocol::{FromScheduler, Hello, PROTOCOL_VERSION, Role, ToScheduler};
    let c = Cluster::start(1, 1);
    let token = file_token(&c, "token");
    // The key `inc 1` will have, and the bytes of another value.
    let planted = c.submit("inc", &["1"]);
    c.ok(&["release", &planted]);
    let rt = runtime();
    let answers = rt.block_on(async {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            token,
            role: Role::Client {
                name: Some("planter".into()),
                session: 0,
            },
        };
        let (_, tx, mut rx) = connection::connect::<FromScheduler, ToScheduler>(&c.addr, hello)
            .await
            .expect("a client connects");
        let bytes = bytes::Bytes::from(dtask_runtime::value::encode(
            &dtask_runtime::value::Value::from(41),
        ));
        tx.send(ToScheduler::Scatter {
            counted: false,
            session: 0,
            id: 7,
            values: vec![(planted.clone(), bytes)],
            broadcast: false,
            workers: Vec::new(),
        })
        .unwrap();
        tx.send(ToScheduler::Place {
            counted: false,
            session: 0,
            id: 8,
            confirm: 9,
            values: vec![(planted.clone(), 3)],
            broadcast: false,
            workers: Vec::new(),
        })
        .unwrap();
        let mut answers = Vec::new();
        while answers.len() < 2 {
            let msg = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("an answer in time");
            if let Ok(Some(FromScheduler::Failed { id, message })) = msg {
                answers.push((id, message));
            }
        }
        answers
    });
    for (id, message) in &answers {
        assert!(message.contains("not the key"), "{id}: {message}");
    }
    let ids: Vec<u64> = answers.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![7, 8]);
    // Submitted afresh, the key computes its own value.
    let again = c.submit("inc", &["1"]);
    assert_eq!(again, planted);
    assert_eq!(c.ok(&["gather", &again]), "2");
}

#[test]
fn a_client_name_taking_the_schedulers_session_prefix_is_refused() {
    let c = Cluster::start(1, 1);
    let out = run_with_stdin(
        c.cmd()
            .env("DTASK_CLIENT", "session-0123456789abcdef")
            .args(["submit", tasks_wasm(), "inc", "1"]),
        "",
    );
    // The CLI refuses it before connecting…
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("names beginning with `session-`"),
        "{}",
        stderr(&out)
    );
    // …and the scheduler refuses a client that says it anyway.
    let hello = dtask_runtime::protocol::Hello {
        version: dtask_runtime::protocol::PROTOCOL_VERSION,
        token: c.token(),
        role: dtask_runtime::protocol::Role::Client {
            name: Some("session-0123456789abcdef".into()),
            session: 0,
        },
    };
    let refused = runtime().block_on(dtask_runtime::connection::connect::<
        dtask_runtime::protocol::FromScheduler,
        dtask_runtime::protocol::ToScheduler,
    >(&c.addr, hello));
    match refused {
        Err(e) => assert!(
            e.to_string()
                .contains("client names beginning with `session-`"),
            "{e}"
        ),
        Ok(_) => panic!("the scheduler admitted a client named session-…"),
    }
}

#[test]
fn an_unnamed_clients_answers_go_to_its_own_session_whatever_another_claims() {
    use dtask_runtime::connection;
    use dtask_runtime::protocol::{
        FromScheduler, Hello, Op, OpReply, PROTOCOL_VERSION, Role, ToScheduler,
    };
    let c = Cluster::start(1, 1);
    let token = file_token(&c, "token");
    let acquire = |session: u64, timeout_ms: Option<u64>| ToScheduler::Primitive {
        id: 5,
        session,
        task: None,
        op: Op::LockAcquire {
            name: "theirs".into(),
            timeout_ms,
        },
    };
    let replies = runtime().block_on(async {
        let mut replies = Vec::new();
        let mut conns = Vec::new();
        // The owner takes the lock under its session; another client
        // claims that session for the same request id.
        for (own, ask) in [(111, acquire(111, None)), (222, acquire(111, Some(300)))] {
            let hello = Hello {
                version: PROTOCOL_VERSION,
                token: token.clone(),
                role: Role::Client {
                    name: None,
                    session: own,
                },
            };
            let (_, tx, mut rx) = connection::connect::<FromScheduler, ToScheduler>(&c.addr, hello)
                .await
                .expect("a client connects");
            tx.send(ask).unwrap();
            loop {
                let msg = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                    .await
                    .expect("an answer in time");
                if let Ok(Some(FromScheduler::Primitive { id: 5, reply })) = msg {
                    replies.push(reply);
                    break;
                }
            }
            conns.push((tx, rx));
        }
        replies
    });
    assert!(matches!(replies[0], OpReply::Done), "{:?}", replies[0]);
    assert!(
        matches!(replies[1], OpReply::Timeout),
        "another client was answered as the lock's owner: {:?}",
        replies[1]
    );
}
