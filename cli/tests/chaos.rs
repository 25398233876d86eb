//! End-to-end: workers and schedulers killed outright, as an unlucky
//! operator sees it. Only a task that was running when its worker died is
//! suspected of killing it; work survives scheduler restarts.

mod common;

use common::*;
use std::time::Duration;

/// The data address of the one connected worker that is not `old`.
fn newcomer(p: &Pieces, old: Option<&str>) -> String {
    let mut found = None;
    wait_until(Duration::from_secs(30), "a new worker to join", || {
        found = p
            .workers_json()
            .into_iter()
            .map(|w| w["address"].as_str().unwrap_or_default().to_string())
            .find(|a| Some(a.as_str()) != old);
        found.is_some()
    });
    found.unwrap()
}

/// The `executing` count of the worker at `addr` (0 if it is not there).
fn executing(p: &Pieces, addr: &str) -> u64 {
    p.workers_json()
        .iter()
        .find(|w| w["address"] == addr)
        .and_then(|w| w["executing"].as_u64())
        .unwrap_or(0)
}

#[test]
fn tasks_queued_behind_a_running_one_survive_three_worker_deaths() {
    let mut p = Pieces::start(1);
    let tasks = tasks_wasm();
    let mut current = 0;
    let mut addr = newcomer(&p, None);
    let spin = p.ok(&["submit", "--pure=false", tasks, "spin", "600000"]);
    wait_until(Duration::from_secs(30), "spin to start", || {
        executing(&p, &addr) == 1
    });
    // Five tasks wait in the worker's queue behind it (one slot), and one
    // more task depends on the first of them.
    let queued = run_with_stdin(p.command().args(["map", tasks, "inc"]), "1\n2\n3\n4\n5\n");
    assert!(queued.status.success(), "{}", stderr(&queued));
    let queued: Vec<String> = stdout(&queued).lines().map(str::to_string).collect();
    let dependent = p.ok(&["submit", tasks, "add", &format!("@{}", queued[0]), "10"]);

    for round in 1..=3 {
        p.add_worker();
        let next = newcomer(&p, Some(&addr));
        // Compile the module there first, so the kill lands while the
        // spin (not a module load) is what runs.
        let warm = p.ok(&[
            "submit",
            "--pure=false",
            "--workers",
            &next,
            tasks,
            "inc",
            "0",
        ]);
        assert_eq!(p.ok(&["gather", &warm]), "1");
        p.kill_worker(current);
        current = p.workers.len() - 1;
        addr = next;
        if round < 3 {
            wait_until(Duration::from_secs(30), "spin to start again", || {
                executing(&p, &addr) == 1
            });
        }
    }
    p.add_worker();
    p.wait_for_workers(2);

    let out = p.run(&["gather", &spin]);
    assert_eq!(out.status.code(), Some(1), "the spin task erred");
    assert!(
        stderr(&out).contains("3 workers that died"),
        "{}",
        stderr(&out)
    );
    let input = queued.join("\n") + "\n";
    let out = run_with_stdin(p.command().arg("gather"), &input);
    assert!(out.status.success(), "queued tasks erred: {}", stderr(&out));
    assert_eq!(stdout(&out), "2\n3\n4\n5\n6\n");
    assert_eq!(p.ok(&["gather", &dependent]), "12");
}

#[test]
fn a_worker_gives_back_the_memory_of_tasks_that_ended() {
    // One slot, 256 MiB per task: sixteen tasks that each fill 200 MiB may
    // not leave the worker holding more than about one of them.
    let p = Pieces::start(1);
    let worker = p.workers[0].id();
    let input = "200\n".repeat(16);
    let keys = run_with_stdin(
        p.command()
            .args(["map", "--pure=false", tasks_wasm(), "hog"]),
        &input,
    );
    assert!(keys.status.success(), "{}", stderr(&keys));
    let out = run_with_stdin(p.command().arg("gather"), &stdout(&keys));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{}\n", 200 << 20).repeat(16));
    let peak = mib(worker, "VmHWM");
    assert!(peak <= 600, "peak RSS {peak} MiB");
    // Given back once the worker is idle (the module's optimised code may
    // still be compiling in the background as the last task ends).
    let began = std::time::Instant::now();
    let mut idle = mib(worker, "VmRSS");
    while idle > 100 && began.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        idle = mib(worker, "VmRSS");
    }
    eprintln!(
        "worker peak RSS {peak} MiB, idle RSS {idle} MiB after {:?}",
        began.elapsed()
    );
    assert!(idle <= 100, "idle RSS {idle} MiB");
}

#[test]
fn a_graph_finishes_right_through_ten_scheduler_restarts() {
    let mut p = Pieces::start(3);
    run_graph_through(&mut p, 30, 1000, 10, false);
}

#[test]
fn a_graph_finishes_right_with_worker_messages_held_back_reordered_and_lost() {
    // Every message between the scheduler and a worker is held back up to
    // 40 ms (so messages on different connections overtake each other and
    // heartbeats come late), every 13th Run is lost, and workers and the
    // scheduler are killed along the way.
    let mut p = Pieces::start_env(
        3,
        &[
            ("DTASK_FAULT_DELAY_MS", "40"),
            ("DTASK_FAULT_DROP_RUNS", "13"),
        ],
    );
    run_graph_through(&mut p, 10, 300, 3, true);
}

/// Runs a map of `mapped` tasks and `chains` chains of 100 links (with
/// work queued behind running tasks) through `restarts` scheduler
/// restarts, and with `kill_workers` one worker killed and replaced before
/// each; every key must finish with the right value.
fn run_graph_through(
    p: &mut Pieces,
    chains: i64,
    mapped: i64,
    restarts: usize,
    kill_workers: bool,
) {
    use dtask_runtime::protocol::Outcome;
    let rt = runtime();
    // Named, so its keys are journaled and held across restarts.
    let client = rt
        .block_on(dtask_runtime::client::Client::connect(
            &p.addr,
            &p.token(),
            Some("restarts".into()),
        ))
        .unwrap();
    let module = dtask_runtime::module::LocalModule::load(tasks_wasm().as_ref()).unwrap();
    // A map first, then chains whose work queues behind running tasks.
    let (mut specs, mut expected) = chain_graph(&module, chains, 100, 10);
    for i in 0..mapped {
        let spec = dtask_runtime::client::task_spec(
            module.hash(),
            "inc",
            vec![value(i)],
            &Default::default(),
        );
        expected.insert(spec.key.clone(), i + 1);
        specs.insert(0, spec);
    }
    let keys: Vec<String> = expected.keys().cloned().collect();
    let mut done = rt.block_on(async {
        client.upload(&module).await.unwrap();
        client.submit_specs(specs).await.unwrap().await.unwrap();
        client.watch(keys.clone()).unwrap()
    });
    // The graph is durable once the journal has it.
    wait_journal(&p.journal(), &keys, false);
    let mut outcomes = std::collections::HashMap::new();
    let mut drain = |outcomes: &mut std::collections::HashMap<String, Outcome>| {
        while let Ok((k, o)) = done.try_recv() {
            outcomes.insert(k, o);
        }
    };
    let mut killed = 0;
    for restart in 1..=restarts {
        // Work is flowing (a task runs somewhere) before each kill.
        wait_until(Duration::from_secs(60), "work to flow", || {
            drain(&mut outcomes);
            outcomes.len() == keys.len()
                || p.workers_json()
                    .iter()
                    .any(|w| w["executing"].as_u64() > Some(0))
        });
        if outcomes.len() == keys.len() {
            eprintln!("the graph finished before restart {restart}");
            break;
        }
        if kill_workers {
            p.kill_worker(killed);
            killed += 1;
            p.add_worker();
        }
        p.restart_scheduler();
        p.wait_for_workers(3);
    }
    wait_until(Duration::from_secs(120), "every key to finish", || {
        drain(&mut outcomes);
        outcomes.len() == keys.len()
    });
    for (k, o) in &outcomes {
        assert!(matches!(o, Outcome::Finished(_)), "{k}: {o:?}");
    }
    let values = rt
        .block_on(client.gather_with(&keys, dtask_runtime::client::Errors::Raise))
        .unwrap();
    for (k, v) in keys.iter().zip(values) {
        assert_eq!(v.as_i64(), Some(expected[k]), "{k}");
    }
}

#[test]
fn tasks_whose_run_message_is_lost_are_sent_again_and_the_graph_finishes() {
    // Every third Run message to a worker vanishes: only the workers'
    // heartbeats (what they have in hand) can tell the scheduler.
    let c = Cluster::start_env(2, 1, &[], &[("DTASK_FAULT_DROP_RUNS", "3")]);
    let keys = stdout(&c.run(
        &["map", tasks_wasm(), "inc"],
        &(1..=40).map(|i| format!("{i}\n")).collect::<String>(),
    ));
    let out = start_with_stdin(c.cmd().arg("gather"), &keys)
        .output_within(Duration::from_secs(60), "the graph to finish");
    assert!(out.status.success(), "{}", stderr(&out));
    let sum: i64 = stdout(&out)
        .lines()
        .map(|l| l.parse::<i64>().unwrap())
        .sum();
    assert_eq!(sum, (2..=41).sum::<i64>());
    let info: serde_json::Value = serde_json::from_str(&c.ok(&["info"])).unwrap();
    assert!(info["resent"].as_u64().unwrap() > 0, "{info}");
}

#[test]
fn a_submit_whose_answer_is_lost_with_the_connection_is_asked_again() {
    // Every second answer to a submit is lost: the scheduler takes the
    // tasks, then cuts the client off instead of answering.
    let c = Cluster::start_env(1, 1, &[], &[("DTASK_FAULT_LOSE_SUBMITTED", "2")]);
    // A single submit meets the fault as well as the map's batches.
    let first = c.submit("inc", &["0"]);
    let lines: String = (1..=3000).map(|i| format!("{i}\n")).collect();
    let out = start_with_stdin(c.cmd().args(["map", tasks_wasm(), "inc"]), &lines)
        .output_within(Duration::from_secs(120), "the map to submit");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("reconnecting"),
        "the map's connection was cut: {}",
        stderr(&out)
    );
    let keys = stdout(&out);
    assert_eq!(keys.lines().count(), 3000);
    let gathered = start_with_stdin(
        c.cmd().args(["gather", "--release"]),
        &format!("{first}\n{keys}"),
    )
    .output_within(Duration::from_secs(120), "the tasks to finish");
    assert!(gathered.status.success(), "{}", stderr(&gathered));
    let values: Vec<i64> = stdout(&gathered)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(values, (1..=3001).collect::<Vec<i64>>());
    // A submit asked again holds its keys no more than once: the gather's
    // releases let go of everything.
    let info: serde_json::Value = serde_json::from_str(&c.ok(&["info"])).unwrap();
    assert_eq!(
        (info["held"].as_u64(), info["tasks"].as_u64()),
        (Some(0), Some(0)),
        "{info}"
    );
}

/// Two commands under one client name submit the same call. The second's
/// submit is lost with its connection before the scheduler took it, and is
/// sent again: it holds the key as the first copy would have, so the first
/// command's release leaves the result to the second.
#[test]
fn a_submit_lost_before_it_was_taken_holds_its_key_when_sent_again() {
    // Every second submit is not taken: its client is cut off as it arrives.
    let c = Cluster::start_env(1, 1, &[], &[("DTASK_FAULT_CUT_BEFORE_SUBMIT", "2")]);
    let first = c.submit("inc", &["1"]);
    let out = c.run(&["submit", tasks_wasm(), "inc", "1"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("reconnecting"),
        "the second submit's connection was cut: {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out).trim(), first);
    c.ok(&["wait", &first]);
    c.ok(&["release", &first]);
    assert_eq!(c.ok(&["gather", "--release", &first]), "2");
    let info: serde_json::Value = serde_json::from_str(&c.ok(&["info"])).unwrap();
    assert_eq!(
        (info["held"].as_u64(), info["tasks"].as_u64()),
        (Some(0), Some(0)),
        "{info}"
    );
}

/// A scatter taken just before its connection broke is asked again on the
/// next connection: it is answered once the first copy's values are
/// stored (worker messages are held back, so the copy asked again finds
/// them still being stored), holds them once, and the bytes are kept
/// exactly.
#[test]
fn a_scatter_whose_connection_broke_is_answered_once_its_values_are_stored() {
    scatter_through_a_break(1_000_000);
}

/// The same for a value over 4 MiB, which the client sends straight to a
/// worker: the placement is asked for again on the next connection and
/// answered with the same worker.
#[test]
fn a_big_scatter_whose_connection_broke_is_placed_again_and_answered_once_stored() {
    scatter_through_a_break(6_000_000);
}

/// Scatters `len` bytes from a file with `dtask scatter` to a scheduler
/// that cuts the client off just after taking each scatter, then checks
/// the bytes and that they are held once.
fn scatter_through_a_break(len: u32) {
    let c = Cluster::start_env(
        1,
        1,
        &[],
        &[
            ("DTASK_FAULT_CUT_AFTER_SCATTER", "1"),
            ("DTASK_FAULT_DELAY_MS", "1500"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("value.bin");
    let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();
    let out = c.run(&["scatter", file.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("reconnecting"),
        "the scatter's connection was cut: {}",
        stderr(&out)
    );
    let key = stdout(&out).trim().to_string();
    assert!(key.starts_with("data-"), "{key}");
    let status = c.ok(&["status", &key]);
    assert!(
        status.contains("finished"),
        "answered once stored: {status}"
    );
    let got = c.run(&["gather", "-r", &key], "");
    assert!(got.status.success(), "{}", stderr(&got));
    assert!(got.stdout == bytes, "the scattered bytes, exactly");
    c.ok(&["release", &key]);
    let info: serde_json::Value = serde_json::from_str(&c.ok(&["info"])).unwrap();
    assert_eq!(info["held"].as_u64(), Some(0), "held once: {info}");
}

#[test]
fn a_queue_operation_whose_answer_is_lost_is_answered_again_not_done_twice() {
    // Every third answer to a primitive operation is lost with its
    // connection: the scheduler did it, then cut the client off.
    let c = Cluster::start_env(1, 1, &[], &[("DTASK_FAULT_LOSE_REPLY", "3")]);
    for i in 1..=12 {
        c.ok(&["queue", "put", "q", &i.to_string()]);
    }
    // Each put was done once, whether or not its first answer arrived.
    let got: Vec<String> = (1..=12)
        .map(|_| c.ok(&["queue", "get", "q", "--timeout", "20s"]))
        .collect();
    let want: Vec<String> = (1..=12).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "each item taken once, in order");
    assert_eq!(c.ok(&["queue", "len", "q"]), "0");
}

#[test]
fn a_retry_or_new_actor_whose_answer_is_lost_is_answered_again_not_done_twice() {
    use dtask_runtime::client::{ActorOptions, ClientError, SubmitOptions};
    use dtask_runtime::value::Value;
    // Every answer to a retry or a new actor is lost with its connection
    // the first time it is sent: the scheduler did it, then cut the client
    // off. (Done again instead, each copy's answer would be lost in turn:
    // the deadlines below end that.)
    let c = Cluster::start_env(1, 1, &[], &[("DTASK_FAULT_LOSE_ANSWER", "1")]);
    let within = Duration::from_secs(30);
    let rt = runtime();
    rt.block_on(async {
        let (client, module) = connect_with(&c, coord_wasm()).await;
        // `fails-first COUNTER 1` fails its first attempt only.
        let once = SubmitOptions {
            pure: false,
            ..Default::default()
        };
        let args = vec![value("lost"), value(1)];
        let flaky = client
            .submit(&module, "fails-first", args, &once)
            .await
            .unwrap();
        let key = flaky.key().to_string();
        assert!(client.gather(std::slice::from_ref(&key)).await.is_err());
        // Done twice, the second copy would be refused: the key has not
        // erred.
        tokio::time::timeout(within, client.retry(vec![key.clone()]))
            .await
            .expect("the retry to be answered")
            .expect("the retry whose answer was lost");
        let again = client.gather(std::slice::from_ref(&key)).await.unwrap();
        assert_eq!(again, [Value::from(2)], "one attempt more, not two");
        // Asked twice, the second copy would fail: an actor of that name
        // exists.
        let options = ActorOptions {
            key: Some("counted-once".into()),
            ..Default::default()
        };
        let made = client.actor_new(&module, "counter", vec![value(0)], &options);
        let actor: Result<_, ClientError> = tokio::time::timeout(within, made)
            .await
            .expect("the new actor to be answered");
        assert_eq!(actor.expect("the actor").key(), "counted-once");
        assert_eq!(client.actors().await.unwrap().len(), 1);
    });
}

#[test]
fn a_release_queued_as_the_connection_breaks_goes_on_the_next() {
    let c = Cluster::start(1, 1);
    let lines: String = (1..=10).map(|i| format!("{i}\n")).collect();
    let keys = stdout(&c.run(&["map", tasks_wasm(), "inc"], &lines));
    let held = |c: &Cluster| -> u64 {
        let info: serde_json::Value = serde_json::from_str(&c.ok(&["info"])).unwrap();
        info["held"].as_u64().unwrap()
    };
    assert_eq!(held(&c), 10);
    // The connection is cut right after the release is queued, before it
    // is written: it must go on the connection made again.
    let out = start_with_stdin(
        c.cmd()
            .args(["gather", "--release"])
            .env("DTASK_FAULT_CUT_AFTER_RELEASE", "1"),
        &keys,
    )
    .output_within(Duration::from_secs(60), "the gather to end");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 10);
    assert!(
        stderr(&out).contains("reconnect"),
        "the connection was cut: {}",
        stderr(&out)
    );
    wait_until(Duration::from_secs(30), "the keys to be released", || {
        held(&c) == 0
    });
}

/// A TCP relay to `to` whose connections can all be cut at once (a
/// network blip between a client and the scheduler).
struct Relay {
    addr: String,
    open: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn to(to: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let conns = open.clone();
        let to = to.to_string();
        tokio::spawn(async move {
            while let Ok((mut near, _)) = listener.accept().await {
                let to = to.clone();
                let relayed = tokio::spawn(async move {
                    if let Ok(mut far) = tokio::net::TcpStream::connect(&to).await {
                        let _ = tokio::io::copy_bidirectional(&mut near, &mut far).await;
                    }
                });
                conns.lock().unwrap().push(relayed.abort_handle());
            }
        });
        Self { addr, open }
    }

    /// A relay to `c`'s scheduler, and an unnamed client connected
    /// through it.
    async fn with_client(c: &Cluster) -> (Self, dtask_runtime::client::Client) {
        let relay = Self::to(&c.addr).await;
        let client = dtask_runtime::client::Client::connect(&relay.addr, &c.token(), None)
            .await
            .unwrap();
        (relay, client)
    }

    /// Closes every connection relayed so far (new ones are relayed).
    fn cut(&self) {
        for c in self.open.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

#[test]
fn an_unnamed_clients_futures_outlive_a_network_blip() {
    let c = Cluster::start(1, 1);
    let rt = runtime();
    rt.block_on(async {
        let (relay, client) = Relay::with_client(&c).await;
        let module = dtask_runtime::module::LocalModule::load(tasks_wasm().as_ref()).unwrap();
        let arg = value(41);
        let options = dtask_runtime::client::SubmitOptions {
            pure: false,
            ..Default::default()
        };
        let f = client
            .submit(&module, "inc", vec![arg], &options)
            .await
            .unwrap();
        assert_eq!(
            client.gather(&[f.key().to_string()]).await.unwrap(),
            [dtask_runtime::value::Value::from(42)]
        );
        // The connection breaks; the scheduler sees it close at once, and
        // the client makes it again through the relay.
        relay.cut();
        let again = tokio::time::timeout(
            Duration::from_secs(30),
            client.gather(&[f.key().to_string()]),
        )
        .await
        .expect("the gather to end");
        assert_eq!(
            again.expect("the future is still held after the blip"),
            [dtask_runtime::value::Value::from(42)]
        );
    });
}

#[test]
fn an_unnamed_clients_lock_outlives_a_network_blip() {
    let c = Cluster::start(1, 1);
    let rt = runtime();
    rt.block_on(async {
        let (relay, client) = Relay::with_client(&c).await;
        let other = dtask_runtime::client::Client::connect(&c.addr, &c.token(), None)
            .await
            .unwrap();
        let lock = client.lock("blip");
        lock.acquire(None).await.unwrap();
        relay.cut();
        // Back on a new connection (a request answered on it).
        tokio::time::timeout(Duration::from_secs(30), client.queue("any").len())
            .await
            .expect("the client to reconnect")
            .unwrap();
        // The scheduler saw the old connection close at the cut; the lock
        // is still the session's.
        let taken = other
            .lock("blip")
            .acquire(Some(Duration::from_secs(2)))
            .await;
        assert!(
            matches!(taken, Err(dtask_runtime::client::ClientError::Timeout(_))),
            "another client took the lock after the blip: {taken:?}"
        );
        lock.release()
            .await
            .expect("the client still holds its lock after the blip");
        other
            .lock("blip")
            .acquire(Some(Duration::from_secs(10)))
            .await
            .unwrap();
    });
}

#[test]
fn an_unnamed_client_dropped_lets_go_of_its_lock_at_once() {
    let c = Cluster::start(1, 1);
    let rt = runtime();
    rt.block_on(async {
        let client = dtask_runtime::client::Client::connect(&c.addr, &c.token(), None)
            .await
            .unwrap();
        client.lock("dropped").acquire(None).await.unwrap();
        drop(client);
        let other = dtask_runtime::client::Client::connect(&c.addr, &c.token(), None)
            .await
            .unwrap();
        // Well within the 60 s a session that broke off is waited for.
        other
            .lock("dropped")
            .acquire(Some(Duration::from_secs(10)))
            .await
            .expect("the dropped client's lock to be free");
    });
}

#[test]
fn an_unnamed_client_closed_as_its_program_ends_lets_go_of_its_lock_at_once() {
    let c = Cluster::start(1, 1);
    // A program of its own: its runtime ends right after the client is
    // done, so nothing the client left to be written in the background
    // is written. `close` waits until the scheduler has the client's
    // leaving.
    let program = runtime();
    program.block_on(async {
        let client = dtask_runtime::client::Client::connect(&c.addr, &c.token(), None)
            .await
            .unwrap();
        client.lock("closed").acquire(None).await.unwrap();
        client
            .close()
            .await
            .expect("the scheduler to take the close");
    });
    drop(program);
    runtime().block_on(async {
        let other = dtask_runtime::client::Client::connect(&c.addr, &c.token(), None)
            .await
            .unwrap();
        // Well within the 60 s a session that broke off is waited for.
        other
            .lock("closed")
            .acquire(Some(Duration::from_secs(10)))
            .await
            .expect("the closed client's lock to be free");
    });
}

#[test]
fn a_wait_asked_again_after_a_blip_waits_only_for_what_is_left() {
    let c = Cluster::start(1, 1);
    let rt = runtime();
    rt.block_on(async {
        let (relay, client) = Relay::with_client(&c).await;
        let queue = client.queue("never-filled");
        let start = std::time::Instant::now();
        let waiting = tokio::spawn(async move { queue.get(Some(Duration::from_secs(4))).await });
        // A second into the wait the connection breaks; the client asks
        // again on the next one.
        tokio::time::sleep(Duration::from_secs(1)).await;
        relay.cut();
        let got = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the get to end")
            .unwrap();
        let took = start.elapsed();
        assert!(
            matches!(got, Err(dtask_runtime::client::ClientError::Timeout(_))),
            "{got:?}"
        );
        // Asked again with the whole 4 s it would take 5 s and more.
        assert!(
            took < Duration::from_millis(4800),
            "the get took {took:?} for a 4 s timeout"
        );
    });
}
