//! End-to-end: actors (resources exported by the `coord` example guest)
//! created, called and lost on real clusters.

mod common;

use common::*;
use dtask_runtime::client::{ActorOptions, Client, ClientError, SubmitOptions};
use dtask_runtime::module::LocalModule;
use dtask_runtime::protocol::{ActorState, CallArg};
use dtask_runtime::value::{Value, encode};
use std::time::{Duration, Instant};

fn call_arg(v: impl Into<Value>) -> CallArg {
    CallArg::Value(encode(&v.into()).into())
}

async fn connect(c: &Cluster) -> (Client, LocalModule) {
    connect_with(c, coord_wasm()).await
}

#[test]
fn a_counter_actor_keeps_its_state_between_calls_from_the_shell() {
    let c = Cluster::start(1, 1);
    let key = c.ok(&["actor", "new", coord_wasm(), "counter", "5"]);
    assert!(key.starts_with("counter-"), "{key}");
    assert_eq!(c.ok(&["actor", "call", &key, "increment", "3"]), "8");
    assert_eq!(c.ok(&["actor", "call", &key, "increment", "2"]), "10");
    assert_eq!(c.ok(&["actor", "call", &key, "get"]), "10");
    let listed = c.ok(&["actor", "list"]);
    assert!(
        listed.contains(&format!("{key}\tcounter\tready")),
        "{listed}"
    );
    c.ok(&["actor", "del", &key]);
    let gone = c.run(&["actor", "call", &key, "get"], "");
    assert_eq!(gone.status.code(), Some(2), "{}", stderr(&gone));
    assert!(
        stderr(&gone).contains("no actor is called"),
        "{}",
        stderr(&gone)
    );
}

#[test]
fn a_missing_method_resource_or_wrong_type_exits_2_with_a_clear_error() {
    let c = Cluster::start(1, 1);
    let key = c.ok(&["actor", "new", coord_wasm(), "counter", "0"]);
    let cases: [(&[&str], &str); 5] = [
        (
            &["actor", "call", &key, "nope"],
            "has no method nope; its methods: get, increment",
        ),
        (
            &["actor", "call", &key, "increment", "x"],
            "parameter by: expected s64",
        ),
        (
            &["actor", "call", &key, "increment"],
            "increment takes 1 arguments, 0 were given",
        ),
        (
            &["actor", "new", coord_wasm(), "nosuch"],
            "exports no resource nosuch; it has: counter, server",
        ),
        (
            &[
                "actor",
                "new",
                "--memory-limit-mib",
                "1000000",
                coord_wasm(),
                "counter",
                "0",
            ],
            "more than any connected worker allows",
        ),
    ];
    for (args, expected) in cases {
        let out = c.run(args, "");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // The actor is unharmed by bad calls.
    assert_eq!(c.ok(&["actor", "call", &key, "increment", "1"]), "1");
}

#[test]
fn a_counter_incremented_a_thousand_times_from_ten_concurrent_tasks_reads_a_thousand() {
    let c = Cluster::start(2, 2);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let counter = client
            .actor_new(&module, "counter", vec![value(0)], &ActorOptions::default())
            .await
            .unwrap();
        let impure = SubmitOptions {
            pure: false,
            ..SubmitOptions::default()
        };
        let calls = vec![vec![value(counter.key()), value(100)]; 10];
        let tasks = client
            .map(&module, "count-up", calls, &impure)
            .await
            .unwrap();
        let keys: Vec<String> = tasks.iter().map(|f| f.key().to_string()).collect();
        let last: Vec<i64> = client
            .gather(&keys)
            .await
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert!(
            last.contains(&1000),
            "the last increment saw 1000: {last:?}"
        );
        assert_eq!(
            counter.call("get", vec![]).await.unwrap(),
            Value::from(1000)
        );
    });
}

#[test]
fn calls_on_one_actor_run_in_the_order_they_were_made() {
    let c = Cluster::start(1, 1);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let counter = client
            .actor_new(&module, "counter", vec![value(0)], &ActorOptions::default())
            .await
            .unwrap();
        // Started in order without waiting for each other.
        let calls: Vec<_> = (0..200)
            .map(|_| counter.call("increment", vec![call_arg(1)]))
            .collect();
        let results = futures::future::join_all(calls).await;
        let got: Vec<i64> = results
            .into_iter()
            .map(|r| r.unwrap().as_i64().unwrap())
            .collect();
        assert_eq!(got, (1..=200).collect::<Vec<_>>());
    });
}

/// One client floods a slow actor with more calls than the actor's queue
/// on its worker holds; a call to another actor on the same worker (over
/// the same connection) is answered while the slow actor still has most
/// of the flood to go, not after the queue has drained enough for the
/// worker to read on.
#[test]
fn a_flooded_actor_does_not_hold_up_calls_to_another_on_its_worker() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let c = Cluster::start(1, 1);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let options = ActorOptions::default();
        let new = |v: i64| client.actor_new(&module, "counter", vec![value(v)], &options);
        let (slow, other) = (new(1).await.unwrap(), new(2).await.unwrap());
        assert_eq!(slow.info().address, other.info().address, "one worker");
        let flood = 2 * dtask_runtime::peer::ACTOR_QUEUE;
        let done = Arc::new(AtomicUsize::new(0));
        let calls: Vec<_> = (0..flood)
            .map(|_| {
                let (slow, done) = (slow.clone(), done.clone());
                tokio::spawn(async move {
                    slow.call("spin", vec![call_arg(40)]).await.unwrap();
                    done.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        // The flood is under way.
        let began = Instant::now();
        while done.load(Ordering::SeqCst) == 0 {
            assert!(
                began.elapsed() < Duration::from_secs(30),
                "no flooded call ended"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let got = other.call("get", vec![]).await.unwrap();
        let behind_it = done.load(Ordering::SeqCst);
        assert_eq!(got, Value::from(2));
        // Without a line per actor, the worker reads the call only once
        // the slow actor's queue has room: after flood - ACTOR_QUEUE calls.
        assert!(
            behind_it < dtask_runtime::peer::ACTOR_QUEUE / 2,
            "the other actor answered only after {behind_it} of the flood's calls"
        );
        for call in calls {
            call.await.unwrap();
        }
        assert_eq!(done.load(Ordering::SeqCst), flood);
    });
}

#[test]
fn the_parameter_server_example_runs_from_the_shell() {
    let c = Cluster::start(2, 1);
    let server = c.ok(&["actor", "new", coord_wasm(), "server"]);
    // `list<u8>` words are their bytes: "abc" is [97, 98, 99].
    assert_eq!(
        c.ok(&["actor", "call", &server, "put", "weights", "abc"]),
        "null"
    );
    let lines: String = (1..=8).map(|step| format!("{server} {step}\n")).collect();
    let keys = c.run(&["map", coord_wasm(), "train-step"], &lines);
    assert!(keys.status.success(), "{}", stderr(&keys));
    let gathered = c.run(&["gather"], &stdout(&keys));
    assert!(gathered.status.success(), "{}", stderr(&gathered));
    let expected: Vec<String> = (1..=8).map(|s| (s * (97 + 98 + 99)).to_string()).collect();
    assert_eq!(stdout(&gathered).lines().collect::<Vec<_>>(), expected);
    assert_eq!(
        c.ok(&["actor", "call", &server, "size"]),
        "9",
        "weights + 8 grads"
    );
    // grad-3 is 3 * 294 = 882 as little-endian u32 bytes.
    assert_eq!(
        c.ok(&["actor", "call", &server, "get", "grad-3"]),
        r#"{"$bytes":"cgMAAA=="}"#
    );
}

#[test]
fn an_actor_made_by_a_task_and_stored_in_a_variable_is_called_by_another_task() {
    let c = Cluster::start(2, 1);
    let made = c.ok(&["submit", coord_wasm(), "make-counter", "100"]);
    let key = c.ok(&["gather", &made]);
    let key = key.trim_matches('"').to_string();
    assert!(key.starts_with("counter-"), "{key}");
    c.ok(&["var", "set", "the-counter", &format!("\"{key}\"")]);
    let call = c.ok(&["submit", coord_wasm(), "call-stored", "the-counter"]);
    assert_eq!(c.ok(&["gather", &call]), "110");
    assert_eq!(c.ok(&["actor", "call", &key, "get"]), "110");
}

#[test]
fn killing_the_worker_holding_an_actor_makes_its_calls_fail_as_lost() {
    let c = Cluster::start(2, 1);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let counter = client
            .actor_new(&module, "counter", vec![value(0)], &ActorOptions::default())
            .await
            .unwrap();
        assert_eq!(
            counter.call("increment", vec![call_arg(1)]).await.unwrap(),
            Value::from(1)
        );
        let holder = client
            .workers()
            .await
            .unwrap()
            .into_iter()
            .find(|w| w.address == counter.info().address)
            .expect("the actor's worker is listed");
        let pid: i32 = holder.name.rsplit(':').next().unwrap().parse().unwrap();
        // SAFETY: killing a worker process this test's cluster started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        let killed = Instant::now();
        let err = tokio::time::timeout(
            Duration::from_secs(10),
            counter.call("increment", vec![call_arg(1)]),
        )
        .await
        .expect("a call on a lost actor does not hang")
        .unwrap_err();
        assert!(matches!(err, ClientError::ActorLost(_)), "{err:?}");
        assert!(err.to_string().contains(counter.key()), "{err}");
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "{:?}",
            killed.elapsed()
        );
        // The scheduler lists it as lost once it notices, and a new handle
        // is told so too.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listed = client.actors().await.unwrap();
            if listed
                .iter()
                .any(|a| a.key == counter.key() && a.state == ActorState::Lost)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never listed as lost: {listed:?}"
            );
            tokio::task::yield_now().await;
        }
        let fresh = Client::connect(&c.addr, &c.token(), None).await.unwrap();
        let err = fresh.actor(counter.key()).await.unwrap_err();
        assert!(matches!(err, ClientError::ActorLost(_)), "{err:?}");
    });
    let out = c.run(&["actor", "list"], "");
    assert!(stdout(&out).contains("\tlost\t"), "{}", stdout(&out));
}

#[test]
fn an_actor_with_its_own_memory_limit_fails_with_a_memory_error_past_it() {
    let c = Cluster::start(1, 1);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let small = ActorOptions {
            memory_limit: Some(2 << 20),
            ..ActorOptions::default()
        };
        let server = client
            .actor_new(&module, "server", vec![], &small)
            .await
            .unwrap();
        let big = CallArg::Value(encode(&Value::Binary(vec![7; 4 << 20])).into());
        let err = server
            .call("put", vec![call_arg("big"), big])
            .await
            .unwrap_err();
        let ClientError::Task(e) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(e.kind, dtask_runtime::protocol::ErrorKind::Memory, "{e:?}");
        // Another actor on the same worker, without that limit, takes it.
        let roomy = client
            .actor_new(&module, "server", vec![], &ActorOptions::default())
            .await
            .unwrap();
        let big = CallArg::Value(encode(&Value::Binary(vec![7; 4 << 20])).into());
        roomy.call("put", vec![call_arg("big"), big]).await.unwrap();
        assert_eq!(roomy.call("size", vec![]).await.unwrap(), Value::from(1));
    });
}

#[test]
fn an_actor_whose_call_trapped_is_listed_as_broken() {
    let c = Cluster::start(1, 1);
    let max = i64::MAX.to_string();
    let counter = c.ok(&["actor", "new", coord_wasm(), "counter", &max]);
    let out = c.run(&["actor", "call", &counter, "increment", "1"], "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("overflows"), "{}", stderr(&out));
    assert_broken(&c, &counter, "earlier call");
}

/// A call past its actor's call limit (`actor new --call-timeout`) fails
/// with a timeout well before it would have ended, and breaks the actor,
/// which says so; an actor without a limit runs the same call through.
#[test]
fn a_call_past_its_actors_call_limit_fails_and_breaks_the_actor() {
    let c = Cluster::start(1, 1);
    let limited = c.ok(&[
        "actor",
        "new",
        "--call-timeout",
        "300ms",
        coord_wasm(),
        "counter",
        "7",
    ]);
    assert_eq!(c.ok(&["actor", "call", &limited, "spin", "10"]), "7");
    let out = start_with_stdin(
        c.cmd().args(["actor", "call", &limited, "spin", "120000"]),
        "",
    )
    .output_within(Duration::from_secs(60), "the call past its limit");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("call limit of 300ms (`actor new --call-timeout`)"),
        "{}",
        stderr(&out)
    );
    assert_broken(&c, &limited, "call limit");
    // No limit: the same kind of call runs as long as it takes.
    let free = c.ok(&["actor", "new", coord_wasm(), "counter", "8"]);
    assert_eq!(c.ok(&["actor", "call", &free, "spin", "600"]), "8");
    let out = c.run(
        &[
            "actor",
            "new",
            "--call-timeout",
            "0s",
            coord_wasm(),
            "counter",
            "1",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn an_actor_call_gives_up_at_its_timeout() {
    let c = Cluster::start(1, 1);
    let counter = c.ok(&["actor", "new", coord_wasm(), "counter", "1"]);
    let worker = worker_pids(c.pid())[0];
    // A hung worker: the call gets no answer.
    // SAFETY: stopping (then resuming) a worker of the cluster this test
    // started.
    unsafe {
        libc::kill(worker as i32, libc::SIGSTOP);
    }
    let out = c.run(
        &["actor", "call", "--timeout", "300ms", &counter, "get"],
        "",
    );
    // SAFETY: as above.
    unsafe {
        libc::kill(worker as i32, libc::SIGCONT);
    }
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("no answer"), "{}", stderr(&out));
    let out = c.run(&["actor", "call", "--timeout", "30s", &counter, "get"], "");
    assert_eq!(stdout(&out).trim(), "1", "{}", stderr(&out));
}

/// `-` gives a method its caller's stdin, read by the parameter's type as
/// `submit` reads it: bytes for `list<u8>` (here not UTF-8, with its
/// newline), JSON for a number. It used to pass the word `-` itself.
#[test]
fn an_argument_of_dash_is_the_callers_stdin_read_by_the_parameters_type() {
    let c = Cluster::start(1, 1);
    let server = c.ok(&["actor", "new", coord_wasm(), "server"]);
    let bytes: Vec<u8> = vec![0xff, 0x00, b'-', b'\n'];
    let mut put = c.cmd();
    put.args(["actor", "call", &server, "put", "w", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = put.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let got = c.run(&["actor", "call", "-r", &server, "get", "w"], "");
    assert!(got.status.success(), "{}", stderr(&got));
    assert_eq!(got.stdout, bytes);
    let counter = c.ok(&["actor", "new", coord_wasm(), "counter", "5"]);
    let out = c.run(&["actor", "call", &counter, "increment", "-"], "3\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "8");
    let twice = c.run(&["actor", "call", &counter, "increment", "-", "-"], "3\n");
    assert_eq!(twice.status.code(), Some(2), "{}", stderr(&twice));
}

/// Actor `key` comes to be listed as broken, and a call to it then fails
/// (exit 1) with an error that says `why`.
fn assert_broken(c: &Cluster, key: &str, why: &str) {
    wait_until(
        Duration::from_secs(20),
        "the actor listed as broken",
        || {
            c.ok(&["actor", "list"])
                .lines()
                .any(|l| l.starts_with(key) && l.contains("broken"))
        },
    );
    // It takes no more calls, and says why.
    let out = c.run(&["actor", "call", key, "get"], "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(why), "{}", stderr(&out));
}
