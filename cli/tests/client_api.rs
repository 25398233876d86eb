//! End-to-end: the Rust client API against a real cluster.

mod common;

use common::*;
use dtask_runtime::client::{Client, ClientError, SubmitOptions};
use dtask_runtime::module::LocalModule;
use dtask_runtime::protocol::Arg;
use dtask_runtime::value::{Value, encode};

fn value(v: impl Into<Value>) -> Arg {
    Arg::Value(encode(&v.into()).into())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn a_thousand_task_chain_gives_the_right_value() {
    let c = Cluster::start(2, 1);
    runtime().block_on(async {
        let client = Client::connect(&c.addr, &c.token(), None).await.unwrap();
        let module = LocalModule::load(tasks_wasm().as_ref(), None).unwrap();
        let opts = SubmitOptions::default();
        let mut key = client
            .submit(&module, "inc", vec![value(0)], &opts)
            .await
            .unwrap();
        for _ in 1..1000 {
            key = client
                .submit(&module, "inc", vec![Arg::Future(key)], &opts)
                .await
                .unwrap();
        }
        assert_eq!(client.result(&key).await.unwrap(), Value::from(1000));
    });
}

#[test]
fn gather_returns_results_in_order_and_errors_carry_the_guest_message() {
    let c = Cluster::start(2, 1);
    runtime().block_on(async {
        let client = Client::connect(&c.addr, &c.token(), None).await.unwrap();
        let module = LocalModule::load(tasks_wasm().as_ref(), None).unwrap();
        let opts = SubmitOptions::default();
        let mut keys = Vec::new();
        for i in 0..50 {
            keys.push(
                client
                    .submit(&module, "inc", vec![value(i)], &opts)
                    .await
                    .unwrap(),
            );
        }
        let got = client.gather(&keys).await.unwrap();
        assert_eq!(got, (1..=50).map(Value::from).collect::<Vec<_>>());

        let bad = client
            .submit(&module, "fail", vec![value("on purpose")], &opts)
            .await
            .unwrap();
        match client.result(&bad).await {
            Err(ClientError::Task(e)) => {
                assert!(e.message.contains("on purpose"), "{}", e.message);
                assert_eq!(e.origin, bad);
            }
            other => panic!("expected a task error, got {other:?}"),
        }
        // Type errors are caught before submitting.
        let err = client.submit(&module, "inc", vec![value("x")], &opts).await;
        assert!(matches!(err, Err(ClientError::Invalid(m)) if m.contains("parameter x")));
    });
}
