//! The coordination primitives' rules, driven through `handle`: queues,
//! variables, leases that end with their holders, events and pub/sub.

use super::state::{Command, Input, Scheduler};
use super::testing::{erred, error, finish, grace, runs, setup, small, spec, submit, val};
use crate::protocol::{Arg, Op, OpReply, TaskState};
use bytes::Bytes;

/// Client 2 is unnamed, without a session (its leases end with its
/// connection).
fn with_unnamed(workers: &[(u64, u32)]) -> Scheduler {
    let mut s = setup(workers);
    s.handle(Input::ClientConnected {
        client: 2,
        name: None,
        session: 0,
    });
    s
}

fn op(s: &mut Scheduler, client: u64, id: u64, task: Option<&str>, op: Op) -> Vec<Command> {
    s.handle(Input::Primitive {
        client,
        id,
        session: 0,
        task: task.map(str::to_string),
        op,
    })
}

/// The answers in `cmds`, as (client, id, reply).
fn replies(cmds: &[Command]) -> Vec<(u64, u64, OpReply)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Reply { client, id, reply } => Some((*client, *id, reply.clone())),
            _ => None,
        })
        .collect()
}

fn put(name: &str, item: Arg, maxsize: Option<u64>, timeout_ms: Option<u64>) -> Op {
    Op::QueuePut {
        name: name.into(),
        item,
        maxsize,
        timeout_ms,
    }
}

fn get(name: &str, timeout_ms: Option<u64>) -> Op {
    Op::QueueGet {
        name: name.into(),
        timeout_ms,
    }
}

fn lock(name: &str) -> Op {
    Op::LockAcquire {
        name: name.into(),
        timeout_ms: None,
    }
}

/// A scheduler where task `t` runs on worker 10.
fn with_running_task() -> Scheduler {
    let mut s = with_unnamed(&[(10, 1)]);
    let cmds = submit(&mut s, vec![spec("t", vec![])]);
    assert_eq!(runs(&cmds), vec![(10, "t".to_string())]);
    s
}

#[test]
fn a_queue_is_first_in_first_out() {
    let mut s = setup(&[]);
    for (i, b) in [1u8, 2, 3].into_iter().enumerate() {
        let r = replies(&op(&mut s, 1, i as u64, None, put("q", val(b), None, None)));
        assert_eq!(r, vec![(1, i as u64, OpReply::Done)]);
    }
    let len = op(&mut s, 1, 9, None, Op::QueueLen { name: "q".into() });
    assert_eq!(replies(&len), vec![(1, 9, OpReply::Len(3))]);
    for b in [1u8, 2, 3] {
        let r = replies(&op(&mut s, 1, 10, None, get("q", None)));
        assert_eq!(r, vec![(1, 10, OpReply::Item(val(b)))]);
    }
}

#[test]
fn a_full_queue_blocks_the_put_until_a_get() {
    let mut s = setup(&[]);
    assert_eq!(
        replies(&op(&mut s, 1, 1, None, put("q", val(1), Some(1), None)))[0].2,
        OpReply::Done
    );
    let blocked = op(&mut s, 1, 2, None, put("q", val(2), Some(1), None));
    assert!(replies(&blocked).is_empty(), "{blocked:?}");
    let got = replies(&op(&mut s, 1, 3, None, get("q", None)));
    assert!(got.contains(&(1, 3, OpReply::Item(val(1)))));
    assert!(got.contains(&(1, 2, OpReply::Done)), "the put goes through");
    let got = replies(&op(&mut s, 1, 4, None, get("q", None)));
    assert_eq!(got, vec![(1, 4, OpReply::Item(val(2)))]);
}

#[test]
fn another_maxsize_for_an_existing_queue_is_refused() {
    let mut s = setup(&[]);
    op(&mut s, 1, 1, None, put("q", val(1), Some(1), None));
    let r = replies(&op(&mut s, 1, 2, None, put("q", val(2), Some(5), None)));
    assert!(
        matches!(&r[0].2, OpReply::Failed(m) if m.contains("maxsize 1")),
        "{r:?}"
    );
}

/// A queue a get made (the consumer started first) has no bound yet: the
/// first put gives it its own, and a put with another is refused after.
#[test]
fn a_queue_a_get_made_takes_its_bound_from_the_first_put() {
    let mut s = setup(&[]);
    let waiting = op(&mut s, 1, 1, None, get("q", None));
    assert!(replies(&waiting).is_empty());
    let r = replies(&op(&mut s, 1, 2, None, put("q", val(1), Some(2), None)));
    assert!(r.contains(&(1, 2, OpReply::Done)), "{r:?}");
    assert!(r.contains(&(1, 1, OpReply::Item(val(1)))), "{r:?}");
    let r = replies(&op(&mut s, 1, 3, None, put("q", val(2), Some(5), None)));
    assert!(
        matches!(&r[0].2, OpReply::Failed(m) if m.contains("maxsize 2")),
        "{r:?}"
    );
    // Bounded at 2: the third item waits.
    op(&mut s, 1, 4, None, put("q", val(3), Some(2), None));
    op(&mut s, 1, 5, None, put("q", val(4), Some(2), None));
    let blocked = op(&mut s, 1, 6, None, put("q", val(5), Some(2), None));
    assert!(replies(&blocked).is_empty(), "{blocked:?}");
}

#[test]
fn a_get_on_an_empty_queue_times_out_and_then_takes_nothing() {
    let mut s = setup(&[]);
    let now = replies(&op(&mut s, 1, 1, None, get("q", Some(0))));
    assert_eq!(now, vec![(1, 1, OpReply::Timeout)], "timeout 0 never waits");
    let cmds = op(&mut s, 1, 2, None, get("q", Some(50)));
    assert!(cmds.contains(&Command::Timer {
        client: 1,
        id: 2,
        after_ms: 50
    }));
    let timed_out = s.handle(Input::PrimitiveTimeout { client: 1, id: 2 });
    assert_eq!(replies(&timed_out), vec![(1, 2, OpReply::Timeout)]);
    // The item put later stays in the queue for the next get.
    op(&mut s, 1, 3, None, put("q", val(7), None, None));
    let len = op(&mut s, 1, 4, None, Op::QueueLen { name: "q".into() });
    assert_eq!(replies(&len), vec![(1, 4, OpReply::Len(1))]);
    // A timer that fires after its request was served changes nothing.
    let late = s.handle(Input::PrimitiveTimeout { client: 1, id: 2 });
    assert!(replies(&late).is_empty());
}

#[test]
fn a_waiting_get_receives_the_next_put() {
    let mut s = setup(&[]);
    assert!(replies(&op(&mut s, 1, 1, None, get("q", None))).is_empty());
    let r = replies(&op(&mut s, 1, 2, None, put("q", val(5), None, None)));
    assert!(r.contains(&(1, 1, OpReply::Item(val(5)))));
    assert!(r.contains(&(1, 2, OpReply::Done)));
}

#[test]
fn a_queued_future_outlives_its_submitter_and_passes_to_the_getter() {
    let mut s = with_unnamed(&[(10, 1)]);
    submit(&mut s, vec![spec("a", vec![])]);
    finish(&mut s, 10, "a", small(1));
    op(
        &mut s,
        1,
        1,
        None,
        put("q", Arg::Future("a".into()), None, None),
    );
    s.handle(Input::Release {
        client: 1,
        keys: vec!["a".into()],
    });
    assert_eq!(s.state("a"), Some(TaskState::Finished), "held by the queue");
    let r = replies(&op(&mut s, 2, 2, None, get("q", None)));
    assert_eq!(r, vec![(2, 2, OpReply::Item(Arg::Future("a".into())))]);
    assert_eq!(
        s.state("a"),
        Some(TaskState::Finished),
        "held by the getter"
    );
    s.handle(Input::ClientDisconnected { client: 2 });
    assert_eq!(s.state("a"), None, "forgotten once nobody holds it");
}

#[test]
fn storing_an_unknown_future_is_refused() {
    let mut s = setup(&[]);
    let r = replies(&op(
        &mut s,
        1,
        1,
        None,
        put("q", Arg::Future("x".into()), None, None),
    ));
    assert!(
        matches!(&r[0].2, OpReply::Failed(m) if m.contains("@x")),
        "{r:?}"
    );
}

#[test]
fn a_variable_get_waits_until_it_is_set_and_holds_its_future() {
    let mut s = with_unnamed(&[(10, 1)]);
    let get = Op::VarGet {
        name: "v".into(),
        timeout_ms: None,
    };
    assert!(replies(&op(&mut s, 2, 1, None, get.clone())).is_empty());
    submit(&mut s, vec![spec("a", vec![])]);
    let set = Op::VarSet {
        name: "v".into(),
        item: Arg::Future("a".into()),
    };
    let r = replies(&op(&mut s, 1, 2, None, set));
    assert!(r.contains(&(2, 1, OpReply::Item(Arg::Future("a".into())))));
    s.handle(Input::Release {
        client: 1,
        keys: vec!["a".into()],
    });
    op(&mut s, 1, 3, None, Op::VarDel { name: "v".into() });
    assert_eq!(
        s.state("a"),
        Some(TaskState::Processing),
        "the getter holds it"
    );
    let r = replies(&op(
        &mut s,
        1,
        4,
        None,
        Op::VarGet {
            name: "v".into(),
            timeout_ms: Some(0),
        },
    ));
    assert_eq!(r, vec![(1, 4, OpReply::Timeout)], "deleted");
}

#[test]
fn a_lock_is_exclusive_and_passes_to_the_next_waiter() {
    let mut s = with_unnamed(&[]);
    assert_eq!(
        replies(&op(&mut s, 1, 1, None, lock("l")))[0].2,
        OpReply::Done
    );
    assert!(replies(&op(&mut s, 2, 2, None, lock("l"))).is_empty());
    let wrong = replies(&op(
        &mut s,
        2,
        3,
        None,
        Op::LockRelease { name: "l".into() },
    ));
    assert!(
        matches!(&wrong[0].2, OpReply::Failed(m) if m.contains("not held")),
        "{wrong:?}"
    );
    let r = replies(&op(
        &mut s,
        1,
        4,
        None,
        Op::LockRelease { name: "l".into() },
    ));
    assert!(r.contains(&(1, 4, OpReply::Done)));
    assert!(r.contains(&(2, 2, OpReply::Done)), "handed to the waiter");
}

#[test]
fn a_lock_held_by_a_task_is_free_when_the_task_finishes() {
    let mut s = with_running_task();
    assert_eq!(
        replies(&op(&mut s, 2, 1, Some("t"), lock("l")))[0].2,
        OpReply::Done
    );
    assert!(replies(&op(&mut s, 1, 2, None, lock("l"))).is_empty());
    let r = replies(&finish(&mut s, 10, "t", small(1)));
    assert_eq!(r, vec![(1, 2, OpReply::Done)]);
}

#[test]
fn a_lock_held_by_a_task_is_free_when_the_task_errs() {
    let mut s = with_running_task();
    op(&mut s, 2, 1, Some("t"), lock("l"));
    op(&mut s, 1, 2, None, lock("l"));
    let r = replies(&s.handle(erred(&s, 10, "t", error("t"))));
    assert_eq!(r, vec![(1, 2, OpReply::Done)]);
}

#[test]
fn a_lock_held_by_a_task_is_free_when_its_worker_dies() {
    let mut s = with_running_task();
    op(&mut s, 2, 1, Some("t"), lock("l"));
    op(&mut s, 1, 2, None, lock("l"));
    let r = replies(&s.handle(Input::WorkerDisconnected { worker: 10 }));
    assert_eq!(r, vec![(1, 2, OpReply::Done)]);
}

#[test]
fn a_lock_held_by_a_cancelled_task_is_free() {
    let mut s = with_running_task();
    op(&mut s, 2, 1, Some("t"), lock("l"));
    op(&mut s, 1, 2, None, lock("l"));
    let r = replies(&s.handle(Input::Cancel {
        client: 1,
        keys: vec!["t".into()],
        force: true,
    }));
    assert_eq!(r, vec![(1, 2, OpReply::Done)]);
}

#[test]
fn a_task_that_is_not_running_cannot_take_a_lease() {
    let mut s = with_unnamed(&[]);
    let r = replies(&op(&mut s, 2, 1, Some("ghost"), lock("l")));
    assert!(
        matches!(&r[0].2, OpReply::Failed(m) if m.contains("not running")),
        "{r:?}"
    );
}

#[test]
fn an_unnamed_client_loses_its_leases_on_disconnect_a_named_one_keeps_them() {
    let mut s = with_unnamed(&[]);
    op(&mut s, 2, 1, None, lock("a"));
    op(&mut s, 1, 2, None, lock("b"));
    s.handle(Input::ClientDisconnected { client: 1 });
    s.handle(Input::ClientConnected {
        client: 3,
        name: None,
        session: 0,
    });
    let r = replies(&op(&mut s, 3, 3, None, lock("a")));
    assert!(r.is_empty(), "client 2 still holds a");
    let r = replies(&s.handle(Input::ClientDisconnected { client: 2 }));
    assert_eq!(r, vec![(3, 3, OpReply::Done)]);
    let r = replies(&op(
        &mut s,
        3,
        4,
        None,
        Op::LockAcquire {
            name: "b".into(),
            timeout_ms: Some(0),
        },
    ));
    assert_eq!(
        r,
        vec![(3, 4, OpReply::Timeout)],
        "named client cli keeps b"
    );
    // The named client releases it from a later connection.
    s.handle(Input::ClientConnected {
        client: 4,
        name: Some("cli".into()),
        session: 0,
    });
    let r = replies(&op(
        &mut s,
        4,
        5,
        None,
        Op::LockRelease { name: "b".into() },
    ));
    assert_eq!(r, vec![(4, 5, OpReply::Done)]);
}

#[test]
fn a_semaphore_admits_max_leases_holders() {
    let mut s = with_unnamed(&[]);
    let acquire = |timeout_ms| Op::SemAcquire {
        name: "s".into(),
        max_leases: 2,
        timeout_ms,
    };
    assert_eq!(
        replies(&op(&mut s, 1, 1, None, acquire(None)))[0].2,
        OpReply::Done
    );
    assert_eq!(
        replies(&op(&mut s, 2, 2, None, acquire(None)))[0].2,
        OpReply::Done
    );
    assert!(replies(&op(&mut s, 2, 3, None, acquire(None))).is_empty());
    let other = Op::SemAcquire {
        name: "s".into(),
        max_leases: 3,
        timeout_ms: None,
    };
    let r = replies(&op(&mut s, 1, 4, None, other));
    assert!(
        matches!(&r[0].2, OpReply::Failed(m) if m.contains("2 leases")),
        "{r:?}"
    );
    let r = replies(&op(&mut s, 1, 5, None, Op::SemRelease { name: "s".into() }));
    assert!(r.contains(&(2, 3, OpReply::Done)));
}

#[test]
fn an_event_wakes_every_waiter_when_set() {
    let mut s = with_unnamed(&[]);
    let wait = Op::EventWait {
        name: "e".into(),
        timeout_ms: None,
    };
    assert!(replies(&op(&mut s, 1, 1, None, wait.clone())).is_empty());
    assert!(replies(&op(&mut s, 2, 2, None, wait.clone())).is_empty());
    let r = replies(&op(&mut s, 1, 3, None, Op::EventSet { name: "e".into() }));
    assert_eq!(r.len(), 3);
    let is_set = Op::EventIsSet { name: "e".into() };
    assert_eq!(
        replies(&op(&mut s, 1, 4, None, is_set.clone()))[0].2,
        OpReply::Flag(true)
    );
    assert_eq!(replies(&op(&mut s, 1, 5, None, wait))[0].2, OpReply::Done);
    op(&mut s, 1, 6, None, Op::EventClear { name: "e".into() });
    assert_eq!(
        replies(&op(&mut s, 1, 7, None, is_set))[0].2,
        OpReply::Flag(false)
    );
}

#[test]
fn a_message_goes_to_every_current_subscriber_in_order() {
    let mut s = with_unnamed(&[]);
    let sub = |topic: &str| Op::Subscribe {
        topic: topic.into(),
    };
    op(&mut s, 1, 1, None, sub("t"));
    op(&mut s, 2, 2, None, sub("t"));
    op(&mut s, 2, 3, None, sub("other"));
    let mut got = Vec::new();
    for b in [1u8, 2] {
        got.extend(s.handle(Input::Publish {
            topic: "t".into(),
            message: Bytes::from(vec![b]),
        }));
    }
    let delivered: Vec<(u64, u64, u8)> = got
        .iter()
        .filter_map(|c| match c {
            Command::Message {
                client,
                subscription,
                message,
            } => Some((*client, *subscription, message[0])),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, vec![(1, 1, 1), (2, 2, 1), (1, 1, 2), (2, 2, 2)]);
    op(&mut s, 2, 4, None, Op::Unsubscribe { subscription: 2 });
    s.handle(Input::ClientDisconnected { client: 1 });
    let after = s.handle(Input::Publish {
        topic: "t".into(),
        message: Bytes::from_static(b"x"),
    });
    assert!(after.is_empty(), "{after:?}");
}

#[test]
fn a_seceded_task_does_not_fill_its_worker() {
    let mut s = setup(&[(10, 1)]);
    let many: Vec<_> = (0..200).map(|i| spec(&format!("t{i}"), vec![])).collect();
    let first = runs(&submit(&mut s, many)).len();
    assert!(first < 200, "the worker's queue is bounded");
    let more = s.handle(Input::Seceded {
        worker: 10,
        key: "t0".into(),
    });
    assert_eq!(runs(&more).len(), 1, "one more task fills the freed room");
}

/// A wait sent again on a new connection (its answer would have been lost)
/// before the scheduler saw the first connection close replaces the first
/// wait: one item is taken, and answered to the new connection. An answer
/// already given is given again, and nothing more is taken.
#[test]
fn a_wait_sent_again_from_a_new_connection_is_done_once() {
    let mut s = with_unnamed(&[]);
    s.handle(Input::ClientConnected {
        client: 3,
        name: Some("cli".into()),
        session: 0,
    });
    let again = |s: &mut Scheduler, client: u64, op: Op| {
        s.handle(Input::Primitive {
            client,
            id: 9,
            session: 77,
            task: None,
            op,
        })
    };
    assert!(replies(&again(&mut s, 1, get("q", None))).is_empty());
    assert!(replies(&again(&mut s, 3, get("q", None))).is_empty());
    let cmds = op(&mut s, 2, 1, None, put("q", val(5), None, None));
    let answered = replies(&cmds);
    assert!(
        answered.contains(&(3, 9, OpReply::Item(val(5)))),
        "{answered:?}"
    );
    assert!(!answered.iter().any(|(c, _, _)| *c == 1), "{answered:?}");
    op(&mut s, 2, 2, None, put("q", val(6), None, None));
    // Asked once more: the same answer, and 6 stays queued.
    let cmds = again(&mut s, 1, get("q", None));
    assert_eq!(replies(&cmds), vec![(1, 9, OpReply::Item(val(5)))]);
    let len = op(&mut s, 2, 3, None, Op::QueueLen { name: "q".into() });
    assert_eq!(replies(&len), vec![(2, 3, OpReply::Len(1))]);
}

/// The answers kept for sessions are part of the durable state: after a
/// restart, an operation sent again is answered as before, not done again.
#[test]
fn a_kept_answer_survives_a_restart() {
    let mut s = with_unnamed(&[]);
    op(&mut s, 2, 1, None, put("q", val(5), None, None));
    op(&mut s, 2, 2, None, put("q", val(6), None, None));
    let ask = |s: &mut Scheduler| {
        s.handle(Input::Primitive {
            client: 1,
            id: 9,
            session: 77,
            task: None,
            op: get("q", None),
        })
    };
    assert_eq!(replies(&ask(&mut s)), vec![(1, 9, OpReply::Item(val(5)))]);
    let mut r = Scheduler::new().restore(s.snapshot()).unwrap();
    r.handle(Input::ClientConnected {
        client: 1,
        name: Some("cli".into()),
        session: 0,
    });
    assert_eq!(replies(&ask(&mut r)), vec![(1, 9, OpReply::Item(val(5)))]);
    r.handle(Input::ClientConnected {
        client: 2,
        name: None,
        session: 0,
    });
    let len = op(&mut r, 2, 3, None, Op::QueueLen { name: "q".into() });
    assert_eq!(replies(&len), vec![(2, 3, OpReply::Len(1))]);
}

#[test]
fn a_sessions_older_connection_closing_leaves_the_newer_ones_leases() {
    let mut s = setup(&[]);
    for client in [2, 3] {
        s.handle(Input::ClientConnected {
            client,
            name: None,
            session: 0x5e55,
        });
    }
    // The session took the lock on its newer connection, made before the
    // scheduler saw the older one close (a half-open socket).
    let r = replies(&op(&mut s, 3, 1, None, lock("a")));
    assert_eq!(r, vec![(3, 1, OpReply::Done)]);
    s.handle(Input::ClientDisconnected { client: 2 });
    s.handle(Input::ClientConnected {
        client: 4,
        name: None,
        session: 0,
    });
    let r = replies(&op(&mut s, 4, 1, None, lock("a")));
    assert!(r.is_empty(), "the session's newer connection still holds a");
    // Its last connection closing starts the session's grace; its end
    // ends the leases.
    let cmds = s.handle(Input::ClientDisconnected { client: 3 });
    assert!(
        replies(&cmds).is_empty(),
        "a is held for the session's grace"
    );
    let (holder, away, _) = grace(&cmds).expect("a grace timer");
    let r = replies(&s.handle(Input::HolderGraceOver { holder, away }));
    assert_eq!(r, vec![(4, 1, OpReply::Done)]);
}

#[test]
fn a_sessions_lease_outlives_a_blip_and_ends_at_once_when_it_leaves() {
    let mut s = setup(&[]);
    let connect = |s: &mut Scheduler, client| {
        s.handle(Input::ClientConnected {
            client,
            name: None,
            session: 0x5e55,
        })
    };
    connect(&mut s, 2);
    s.handle(Input::ClientConnected {
        client: 9,
        name: None,
        session: 0,
    });
    assert_eq!(
        replies(&op(&mut s, 2, 1, None, lock("a"))),
        vec![(2, 1, OpReply::Done)]
    );
    assert!(replies(&op(&mut s, 9, 1, None, lock("a"))).is_empty());
    // The connection breaks and the session comes back on another: the
    // lock is still its own (the waiter goes on waiting), and the grace's
    // end changes nothing.
    let cmds = s.handle(Input::ClientDisconnected { client: 2 });
    assert!(replies(&cmds).is_empty(), "a was let go of at the blip");
    let (holder, away, _) = grace(&cmds).expect("a grace timer");
    connect(&mut s, 3);
    assert!(replies(&s.handle(Input::HolderGraceOver { holder, away })).is_empty());
    // The session says it is leaving, then its connection closes: the
    // lock is the waiter's at once, without a grace.
    s.handle(Input::ClientLeaving { client: 3 });
    let cmds = s.handle(Input::ClientDisconnected { client: 3 });
    assert!(
        !cmds
            .iter()
            .any(|c| matches!(c, Command::HolderGrace { .. })),
        "{cmds:?}"
    );
    assert_eq!(replies(&cmds), vec![(9, 1, OpReply::Done)]);
}

#[test]
fn a_session_back_after_a_blip_can_release_the_lock_it_took() {
    let mut s = setup(&[]);
    for client in [2, 3] {
        s.handle(Input::ClientConnected {
            client,
            name: None,
            session: 0x5e55,
        });
        if client == 2 {
            op(&mut s, 2, 1, None, lock("a"));
            s.handle(Input::ClientDisconnected { client: 2 });
        }
    }
    let release = Op::LockRelease { name: "a".into() };
    assert_eq!(
        replies(&op(&mut s, 3, 2, None, release)),
        vec![(3, 2, OpReply::Done)]
    );
}

/// The session of the tests below.
const SESSION: u64 = 0x5e55;

/// Connection `client` of the unnamed client's session [`SESSION`].
fn connect_session(s: &mut Scheduler, client: u64) -> Vec<Command> {
    s.handle(Input::ClientConnected {
        client,
        name: None,
        session: SESSION,
    })
}

/// Lock "a" asked for on connection `client` as request 1 of session
/// [`SESSION`]: the answers.
fn session_acquire(s: &mut Scheduler, client: u64) -> Vec<(u64, u64, OpReply)> {
    replies(&s.handle(Input::Primitive {
        client,
        id: 1,
        session: SESSION,
        task: None,
        op: lock("a"),
    }))
}

/// An unnamed client's session took a lock and holds a result when the
/// scheduler restarts: both are restored as the session's, for its grace.
/// Its acquire sent again is answered from the journal as granted, and it
/// is: the lock is not anyone else's meanwhile. A session back within the
/// grace keeps both; one that does not come back loses both when it ends.
/// Until sessions' holds and leases were journaled, the lock was free
/// after a restart while the resent acquire was answered as granted: two
/// holders of one lock.
#[test]
fn a_sessions_leases_and_holds_outlive_a_restart_for_its_grace() {
    let mut s = setup(&[(10, 1)]);
    connect_session(&mut s, 2);
    assert_eq!(session_acquire(&mut s, 2), vec![(2, 1, OpReply::Done)]);
    s.handle(Input::Submit {
        counted: true,
        session: 0,
        client: 2,
        id: 2,
        tasks: vec![spec("kept", vec![])],
    });
    finish(&mut s, 10, "kept", small(1));
    for comes_back in [true, false] {
        let mut r = Scheduler::new().restore(s.snapshot()).unwrap();
        let cmds = r.handle(Input::ClientConnected {
            client: 9,
            name: None,
            session: 0,
        });
        let (holder, away, after_ms) = grace(&cmds).expect("a grace timer for the session");
        assert_eq!(after_ms, super::state::HOLDER_GRACE_MS);
        assert!(holder.starts_with(super::state::SESSION_PREFIX), "{holder}");
        // Another client waits for the lock; the result is still there.
        assert!(replies(&op(&mut r, 9, 1, None, lock("a"))).is_empty());
        assert_eq!(r.state("kept"), Some(TaskState::Finished));
        if comes_back {
            connect_session(&mut r, 3);
            assert_eq!(session_acquire(&mut r, 3), vec![(3, 1, OpReply::Done)]);
            // The grace's end changes nothing: the session is back.
            let cmds = r.handle(Input::HolderGraceOver { holder, away });
            assert!(replies(&cmds).is_empty(), "{cmds:?}");
            assert_eq!(r.state("kept"), Some(TaskState::Finished));
            let release = Op::LockRelease { name: "a".into() };
            let cmds = op(&mut r, 3, 2, None, release);
            assert_eq!(
                replies(&cmds),
                vec![(9, 1, OpReply::Done), (3, 2, OpReply::Done)]
            );
        } else {
            // Never back: its lock goes to the waiter, its result goes.
            let cmds = r.handle(Input::HolderGraceOver { holder, away });
            assert_eq!(replies(&cmds), vec![(9, 1, OpReply::Done)]);
            assert_eq!(r.state("kept"), None);
        }
    }
}

/// A session's lock acquire was granted, but the answer was lost with its
/// connection, and the session stayed away past its grace: the lock went
/// to the client waiting for it. The acquire sent again on the session's
/// return is not answered as the grant it was (the session no longer
/// holds the lock): it waits for the lock like any acquire, and gets it
/// once the other client lets go.
#[test]
fn an_acquire_sent_again_after_its_sessions_grace_ended_waits_for_the_lock() {
    let mut s = setup(&[]);
    connect_session(&mut s, 2);
    s.handle(Input::ClientConnected {
        client: 9,
        name: None,
        session: 0,
    });
    assert_eq!(session_acquire(&mut s, 2), vec![(2, 1, OpReply::Done)]);
    assert!(replies(&op(&mut s, 9, 1, None, lock("a"))).is_empty());
    let cmds = s.handle(Input::ClientDisconnected { client: 2 });
    let (holder, away, _) = grace(&cmds).expect("a grace timer");
    let cmds = s.handle(Input::HolderGraceOver { holder, away });
    assert_eq!(replies(&cmds), vec![(9, 1, OpReply::Done)]);
    // Back, it asks again: the lock is the other client's.
    connect_session(&mut s, 3);
    assert!(
        session_acquire(&mut s, 3).is_empty(),
        "granted a lock another holds"
    );
    let release = Op::LockRelease { name: "a".into() };
    assert_eq!(
        replies(&op(&mut s, 9, 2, None, release)),
        vec![(3, 1, OpReply::Done), (9, 2, OpReply::Done)]
    );
}

/// A primitive's name is not empty and at most `MAX_NAME` bytes: others
/// are refused, saying why, and make no primitive.
#[test]
fn empty_and_overlong_names_are_refused() {
    use crate::protocol::MAX_NAME;
    let mut s = setup(&[]);
    let long = "n".repeat(MAX_NAME + 1);
    let longest = "n".repeat(MAX_NAME);
    for (id, name) in [(1, ""), (2, long.as_str())] {
        for o in [
            put(name, val(1), None, Some(0)),
            lock(name),
            Op::VarSet {
                name: name.into(),
                item: val(1),
            },
            Op::EventSet { name: name.into() },
            Op::Subscribe { topic: name.into() },
        ] {
            let answer = replies(&op(&mut s, 1, id, None, o.clone()));
            assert!(
                matches!(&answer[..], [(1, i, OpReply::Failed(why))] if *i == id && why.contains("name")),
                "{o:?}: {answer:?}"
            );
        }
    }
    let answer = replies(&op(
        &mut s,
        1,
        3,
        None,
        Op::QueueLen {
            name: String::new(),
        },
    ));
    assert!(matches!(&answer[..], [(1, 3, OpReply::Failed(_))]));
    // The longest allowed is a queue like any other.
    op(&mut s, 1, 4, None, put(&longest, val(7), None, Some(0)));
    let answer = replies(&op(&mut s, 1, 5, None, get(&longest, Some(0))));
    assert_eq!(answer, [(1, 5, OpReply::Item(val(7)))]);
}

/// A journal written before names were checked may hold an empty one: it
/// is restored as it was, not dropped on the way.
#[test]
fn a_journal_from_before_names_were_checked_restores_its_primitives() {
    use super::state::{Model, Record};
    let mut m = Model::default();
    m.apply(Record::QueuePush {
        name: String::new(),
        maxsize: 0,
        item: val(1),
    });
    let r = Scheduler::new()
        .restore(m.into_snapshot())
        .expect("restored");
    let kept = Model::from_snapshot(r.snapshot()).into_records();
    assert!(
        kept.iter()
            .any(|rec| matches!(rec, Record::QueuePush { name, .. } if name.is_empty())),
        "{kept:?}"
    );
}
