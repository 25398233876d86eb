//! End-to-end: the Rust client API against a real cluster.

mod common;

use common::*;
use dtask_runtime::client::{Client, ClientError, Errors, Future, SubmitOptions};
use dtask_runtime::module::LocalModule;
use dtask_runtime::protocol::{Arg, Outcome, TaskState};
use dtask_runtime::value::Value;
use futures::StreamExt;
use std::time::Duration;

async fn connect(c: &Cluster) -> (Client, LocalModule) {
    connect_with(c, tasks_wasm()).await
}

async fn submit(client: &Client, module: &LocalModule, f: &str, args: Vec<Arg>) -> Future {
    client
        .submit(module, f, args, &SubmitOptions::default())
        .await
        .unwrap()
}

#[test]
fn a_thousand_task_chain_gives_the_right_value() {
    let c = Cluster::start(2, 1);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let mut fut = submit(&client, &module, "inc", vec![value(0)]).await;
        for _ in 1..1000 {
            fut = submit(&client, &module, "inc", vec![fut.arg()]).await;
        }
        assert_eq!(fut.result(None).await.unwrap(), Value::from(1000));
    });
}

#[test]
fn gather_returns_results_in_order_and_errors_carry_the_guest_message() {
    let c = Cluster::start(2, 1);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let calls = (0..50).map(|i| vec![value(i)]).collect();
        let futs = client
            .map(&module, "inc", calls, &SubmitOptions::default())
            .await
            .unwrap();
        let keys: Vec<String> = futs.iter().map(|f| f.key().to_string()).collect();
        let got = client.gather(&keys).await.unwrap();
        assert_eq!(got, (1..=50).map(Value::from).collect::<Vec<_>>());

        let bad = submit(&client, &module, "fail", vec![value("on purpose")]).await;
        match bad.result(None).await {
            Err(ClientError::Task(e)) => {
                assert!(e.message.contains("on purpose"), "{}", e.message);
                assert_eq!(e.origin, bad.key());
            }
            other => panic!("expected a task error, got {other:?}"),
        }
        assert!(bad.exception().await.unwrap().is_some());
        assert!(bad.done().await.unwrap());
        // gather --errors skip leaves the failure out.
        let mixed = vec![keys[0].clone(), bad.key().to_string(), keys[1].clone()];
        let got = client.gather_with(&mixed, Errors::Skip).await.unwrap();
        assert_eq!(got, vec![Value::from(1), Value::from(2)]);
        // Type errors are caught before submitting.
        let err = client
            .submit(&module, "inc", vec![value("x")], &SubmitOptions::default())
            .await;
        assert!(matches!(err, Err(ClientError::Invalid(m)) if m.contains("parameter x")));
    });
}

#[test]
fn as_completed_yields_in_finishing_order_and_accepts_futures_while_iterating() {
    let c = Cluster::start(2, 1);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        // Each worker runs the module once first: the race below is between
        // the two tasks' run times, not a cold worker's compilation (which
        // took longer than the slow task on a loaded machine).
        for (i, w) in client.workers().await.unwrap().into_iter().enumerate() {
            let mut on = SubmitOptions::default();
            on.placement.workers = vec![w.id.to_string()];
            let warm = client
                .submit(&module, "inc", vec![value(1000 + i as i64)], &on)
                .await
                .unwrap();
            warm.result(None).await.unwrap();
        }
        let slow = submit(&client, &module, "spin", vec![value(400u64)]).await;
        let fast = submit(&client, &module, "spin", vec![value(1u64)]).await;
        let mut ac = client.as_completed(vec![slow.clone(), fast.clone()]);
        let (first, outcome) = ac.next().await.unwrap();
        assert_eq!(first.key(), fast.key());
        assert!(matches!(outcome, Outcome::Finished(_)));
        // Added mid-iteration, finishes before the slow one.
        ac.add(submit(&client, &module, "inc", vec![value(7)]).await);
        let (f, r) = ac.next_with_result().await.unwrap();
        assert_eq!(r.unwrap(), Value::from(8), "{f:?}");
        let (last, _) = ac.next().await.unwrap();
        assert_eq!(last.key(), slow.key());
        assert!(ac.next().await.is_none());

        // Batches: everything already done comes in one batch; as a stream too.
        let futs = client
            .map(
                &module,
                "inc",
                (100..110).map(|i| vec![value(i)]).collect(),
                &SubmitOptions::default(),
            )
            .await
            .unwrap();
        client.wait(&futs, false, None).await.unwrap();
        // Batches hold whatever has ended by then (at least one each) and
        // together hold every future once.
        let mut ac = client.as_completed(futs.clone());
        let mut seen = Vec::new();
        while ac.remaining() > 0 {
            let batch = ac.next_batch().await;
            assert!(!batch.is_empty());
            seen.extend(batch.into_iter().map(|(f, _)| f.key().to_string()));
        }
        seen.sort();
        let mut keys: Vec<String> = futs.iter().map(|f| f.key().to_string()).collect();
        keys.sort();
        assert_eq!(seen, keys);
        let n = client.as_completed(futs).count().await;
        assert_eq!(n, 10);
    });
}

#[test]
fn wait_first_and_timeout() {
    let c = Cluster::start(2, 1);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let slow = submit(&client, &module, "spin", vec![value(3000u64)]).await;
        let quick = submit(&client, &module, "inc", vec![value(1)]).await;
        let (done, not_done) = client
            .wait(&[slow.clone(), quick.clone()], true, None)
            .await
            .unwrap();
        assert_eq!(done, vec![quick.key().to_string()]);
        assert_eq!(not_done, vec![slow.key().to_string()]);
        let r = slow.result(Some(Duration::from_millis(50))).await;
        assert!(matches!(r, Err(ClientError::Timeout(_))));
        slow.cancel(false).unwrap();
    });
}

#[test]
fn scatter_round_robin_and_broadcast() {
    let c = Cluster::start(2, 1);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let data = client
            .scatter(vec![Value::from(10), Value::from(20)], false, vec![])
            .await
            .unwrap();
        let holders = client
            .who_has(data.iter().map(|f| f.key().to_string()).collect())
            .await
            .unwrap();
        assert_eq!(holders.len(), 2);
        assert_ne!(
            holders[0].1, holders[1].1,
            "one on each worker: {holders:?}"
        );
        let sum = submit(&client, &module, "add", vec![data[0].arg(), data[1].arg()]).await;
        assert_eq!(sum.result(None).await.unwrap(), Value::from(30));

        let everywhere = client
            .scatter(vec![Value::from("x")], true, vec![])
            .await
            .unwrap();
        let holders = client
            .who_has(vec![everywhere[0].key().to_string()])
            .await
            .unwrap();
        assert_eq!(holders[0].1.len(), 2);
        assert_eq!(client.nthreads().await.unwrap().len(), 2);
        let has_what = client.has_what().await.unwrap();
        assert_eq!(has_what.len(), 2);
        for (_, keys) in &has_what {
            assert!(
                keys.contains(&everywhere[0].key().to_string()),
                "{has_what:?}"
            );
        }
    });
}

#[test]
fn dropping_the_last_future_releases_and_frees_the_result() {
    let c = Cluster::start(1, 1);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let big = submit(
            &client,
            &module,
            "repeat",
            vec![value("x"), value(100_000u32)],
        )
        .await;
        big.result(None).await.unwrap();
        let key = big.key().to_string();
        let copy = big.clone();
        drop(big);
        assert_eq!(
            client.status(vec![key.clone()]).await.unwrap()[0].1,
            Some(TaskState::Finished)
        );
        copy.release();
        freed(&client, &key).await;
        // Submitted twice while held: the scheduler counts each submit as
        // a hold, and the last handle lets go of both.
        let args = || vec![value("y"), value(100_000u32)];
        let once = submit(&client, &module, "repeat", args()).await;
        let twice = submit(&client, &module, "repeat", args()).await;
        let key = once.key().to_string();
        twice.result(None).await.unwrap();
        drop(once);
        drop(twice);
        freed(&client, &key).await;
    });
}

/// Waits until the scheduler no longer knows `key` and the only worker
/// holds nothing.
async fn freed(client: &Client, key: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let workers = client.workers().await.unwrap();
        let st = client.status(vec![key.to_string()]).await.unwrap()[0].1;
        if st.is_none() && workers[0].holding == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not freed: {st:?} {workers:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn fire_and_forget_runs_to_completion_with_no_holder() {
    let c = Cluster::start(1, 1);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let f = submit(&client, &module, "spin", vec![value(1000u64)]).await;
        let key = f.key().to_string();
        client.fire_and_forget(vec![key.clone()]).unwrap();
        drop(f);
        // Still known (running) although nobody holds it…
        assert_eq!(
            client.status(vec![key.clone()]).await.unwrap()[0].1,
            Some(TaskState::Processing)
        );
        // …and forgotten once done.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while client.status(vec![key.clone()]).await.unwrap()[0]
            .1
            .is_some()
        {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

#[test]
fn retries_make_a_flaky_task_succeed() {
    let c = Cluster::start(1, 1);
    runtime().block_on(async {
        // `fails-first COUNTER N` fails its first N attempts, counted in a
        // variable: no clock involved.
        let (client, module) = connect_with(&c, dtask_guests::COORD_WASM).await;
        let call = |counter: &str, n: u32| vec![value(counter), value(n)];
        let no_retries = submit(&client, &module, "fails-first", call("once", 1)).await;
        assert!(matches!(
            no_retries.result(None).await,
            Err(ClientError::Task(_))
        ));
        let opts = SubmitOptions {
            retries: 5,
            ..SubmitOptions::default()
        };
        let with_retries = client
            .submit(&module, "fails-first", call("five", 5), &opts)
            .await
            .unwrap();
        assert_eq!(with_retries.result(None).await.unwrap(), Value::from(6u32));
        // And `retry` reruns the erred one, which now succeeds.
        client
            .retry(vec![no_retries.key().to_string()])
            .await
            .unwrap();
        assert_eq!(no_retries.result(None).await.unwrap(), Value::from(2u32));
    });
}

#[path = "../../examples/rust/pi.rs"]
mod pi_example;

#[test]
fn the_rust_pi_example_estimates_pi_and_stops_early() {
    let c = Cluster::start(2, 1);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let (pi, points) = pi_example::estimate(&client, &module, 400, 100_000, 1_000_000)
            .await
            .unwrap();
        assert!((pi - std::f64::consts::PI).abs() < 0.01, "{pi}");
        assert_eq!(points, 1_000_000);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let busy: usize = client
                .workers()
                .await
                .unwrap()
                .iter()
                .map(|w| w.processing)
                .sum();
            if busy == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the rest was not cancelled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

#[test]
fn a_cluster_inside_the_program_serves_a_current_thread_runtime_and_stops_when_dropped() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cluster = dtask_runtime::embedded::EmbeddedCluster::start(2).unwrap();
    let addr = cluster.address().to_string();
    // On a socket of its own, the owner's alone.
    let sock = dtask_runtime::connection::unix_path(&addr)
        .unwrap_or_else(|| panic!("not on a Unix socket: {addr}"))
        .to_path_buf();
    let mode = std::fs::metadata(&sock).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    rt.block_on(async {
        let client = Client::connect(cluster.address(), cluster.token(), None)
            .await
            .unwrap();
        let module = LocalModule::load(tasks_wasm().as_ref()).unwrap();
        let fut = submit(&client, &module, "inc", vec![value(41)]).await;
        let got = client.gather(&[fut.key().to_string()]).await.unwrap();
        assert_eq!(got[0].as_i64(), Some(42));
    });
    // A wrong token is refused, as by any scheduler.
    let refused = rt.block_on(Client::connect(&addr, "not-the-token", None));
    assert!(refused.is_err());
    let token = cluster.token().to_string();
    drop(cluster);
    // Gone with its handle: its scheduler no longer admits its client.
    // (One handshake with its token: a bare connect could reach another
    // test's listener that was given the freed port.)
    let hello = dtask_runtime::protocol::Hello {
        version: dtask_runtime::protocol::PROTOCOL_VERSION,
        token,
        role: dtask_runtime::protocol::Role::Client {
            name: None,
            session: 0,
        },
    };
    let gone = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(10),
            dtask_runtime::connection::connect::<
                dtask_runtime::protocol::FromScheduler,
                dtask_runtime::protocol::ToScheduler,
            >(&addr, hello),
        )
        .await
    });
    assert!(
        matches!(gone, Ok(Err(_))),
        "the embedded scheduler still answers at {addr}"
    );
    assert!(
        !sock.parent().unwrap().exists(),
        "its socket's directory outlived it"
    );
}

#[test]
fn dropping_a_future_while_the_same_key_is_submitted_again_keeps_it_held() {
    let c = Cluster::start(1, 1);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        // On a loaded machine the scheduler may answer before the first
        // poll returns; then the race was not staged, and a fresh key tries
        // again. One staged round is required.
        let mut staged = 0;
        for n in 0i64..20 {
            let first = submit(&client, &module, "inc", vec![value(n)]).await;
            assert_eq!(first.result(None).await.unwrap(), Value::from(n + 1));
            let key = first.key().to_string();
            // The same task again: polled once, its submit is on the wire
            // and waits for the scheduler's answer.
            let mut submitting = Box::pin(submit(&client, &module, "inc", vec![value(n)]));
            let polled = futures::poll!(&mut submitting);
            // The first future goes meanwhile: its release follows the
            // submit, and must not leave the key held by nobody.
            drop(first);
            let (again, pending) = match polled {
                std::task::Poll::Ready(again) => (again, false),
                std::task::Poll::Pending => (submitting.await, true),
            };
            assert_eq!(again.key(), key);
            assert_eq!(again.result(None).await.unwrap(), Value::from(n + 1));
            assert_eq!(
                client.gather(&[key]).await.unwrap(),
                vec![Value::from(n + 1)]
            );
            if pending {
                staged += 1;
                break;
            }
        }
        assert_eq!(
            staged, 1,
            "the scheduler answered every submit within its first poll"
        );
    });
}

#[test]
fn a_client_goes_on_after_its_big_releases_on_the_same_connection() {
    // Each round holds more keys than the scheduler lets go of at once
    // (4,096): what the client sends after `release_all` waits at the
    // scheduler, which stops reading the connection meanwhile, and must
    // read it again once the release is done.
    let c = Cluster::start(1, 1);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        for round in 0..3i64 {
            let one = async {
                let calls = (0..10_000i64).map(|i| vec![value(i)]).collect();
                let futures = client
                    .map(&module, "inc", calls, &SubmitOptions::default())
                    .await
                    .unwrap();
                let keys: Vec<String> = futures.iter().map(|f| f.key().to_string()).collect();
                let last = client.gather(&keys).await.unwrap().pop();
                assert_eq!(last, Some(Value::from(10_000)));
                client.release_all().unwrap();
                let after = submit(&client, &module, "add", vec![value(round), value(100)]).await;
                let got = after.result(Some(Duration::from_secs(30))).await;
                assert_eq!(got.unwrap(), Value::from(round + 100), "round {round}");
                drop(futures);
            };
            tokio::time::timeout(Duration::from_secs(60), one)
                .await
                .unwrap_or_else(|_| panic!("round {round} stalled"));
        }
    });
}

#[test]
fn map_in_several_batches_and_gather_of_repeated_small_big_and_failed_keys() {
    let c = Cluster::start(2, 1);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let opts = SubmitOptions::default();
        // More calls than one submit message carries.
        let n = dtask_runtime::client::MAP_BATCH as i64 * 2 + 7;
        let calls = (0..n).map(|i| vec![value(i)]).collect();
        let futs = client.map(&module, "inc", calls, &opts).await.unwrap();
        assert_eq!(futs.len(), n as usize);
        let keys: Vec<String> = futs.iter().map(|f| f.key().to_string()).collect();
        let got = client.gather(&keys).await.unwrap();
        assert_eq!(got, (1..=n).map(Value::from).collect::<Vec<_>>());

        // A result too big to come with its outcome is fetched, in its
        // place; keys asked for twice are given twice.
        let big = submit(&client, &module, "repeat", vec![value("ab"), value(5000)]).await;
        let bad = submit(&client, &module, "fail", vec![value("second")]).await;
        let worse = submit(&client, &module, "fail", vec![value("first")]).await;
        let asked = vec![
            keys[3].clone(),
            big.key().to_string(),
            keys[3].clone(),
            big.key().to_string(),
            bad.key().to_string(),
            keys[0].clone(),
        ];
        let got = client.gather_with(&asked, Errors::Skip).await.unwrap();
        let text = Value::from("ab".repeat(5000));
        assert_eq!(
            got,
            vec![
                Value::from(4),
                text.clone(),
                Value::from(4),
                text,
                Value::from(1)
            ]
        );
        // Raising, the first failure in the order asked is the error.
        let order = vec![
            keys[1].clone(),
            worse.key().to_string(),
            bad.key().to_string(),
        ];
        match client.gather(&order).await {
            Err(ClientError::Task(e)) => assert_eq!(e.origin, worse.key()),
            other => panic!("expected the first task's error, got {other:?}"),
        }
    });
}

/// A fetch whose holder is gone (its worker died, or dropped the result)
/// asks the scheduler where the result is now and reads it from there,
/// whole, encoded or streamed: here the stale place is an address nothing
/// listens on any more.
#[test]
fn a_fetch_from_a_holder_gone_reads_the_result_where_it_is_now() {
    let c = Cluster::start(1, 1);
    runtime().block_on(async {
        let (client, module) = connect(&c).await;
        let n = 300_000u64;
        let f = submit(&client, &module, "count-bytes", vec![value(n), value(1)]).await;
        let want = f.result(None).await.unwrap();
        let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stale = dtask_runtime::protocol::Located {
            inline: None,
            who_has: vec![gone.local_addr().unwrap().to_string()],
            nbytes: n + 5,
        };
        drop(gone);
        assert_eq!(client.fetch(f.key(), &stale).await.unwrap(), want);
        let encoded = client.fetch_encoded(f.key(), &stale).await.unwrap();
        let mut streamed = Vec::new();
        client
            .stream_encoded(f.key(), &stale, |_, range| {
                streamed.extend_from_slice(range);
                Ok(())
            })
            .await
            .unwrap();
        assert!(streamed == encoded[..], "streamed and fetched differ");
        assert_eq!(dtask_runtime::value::decode(&encoded).unwrap(), want);
    });
}
