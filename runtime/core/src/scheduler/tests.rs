//! The scheduler's rules, driven directly through `handle`: no sockets, no
//! wasm, no sleeps.

use super::state::{Command, Input, RELEASE_STEP, Scheduler};
use crate::protocol::{ErrorKind, FromScheduler, Located, Outcome, RunArg, TaskError, TaskState};
use bytes::Bytes;

use super::testing::*;

#[test]
fn ready_task_runs_and_submit_is_acknowledged() {
    let mut s = setup(&[(10, 1)]);
    let cmds = submit(&mut s, vec![spec("a", vec![val(1)])]);
    assert_eq!(runs(&cmds), vec![(10, "a".to_string())]);
    assert!(cmds.contains(&Command::Submitted {
        client: 1,
        id: 7,
        refused: vec![],
        unplaceable: vec![],
    }));
    assert_eq!(s.state("a"), Some(TaskState::Processing));
}

/// What a submit's answer says of a scheduler with no worker: nothing to
/// run the tasks, unless it starts workers itself that have not all
/// joined yet (a `dtask cluster` just started).
#[test]
fn a_submit_finding_no_worker_is_told_unless_the_scheduler_starts_its_own() {
    let note = |cmds: &[Command]| {
        cmds.iter().find_map(|c| match c {
            Command::Submitted { unplaceable, .. } => Some(unplaceable.clone()),
            _ => None,
        })
    };
    let mut s = setup(&[]);
    let cmds = submit(&mut s, vec![spec("a", vec![]), spec("b", vec![])]);
    assert_eq!(
        note(&cmds),
        Some(vec![(
            "a".to_string(),
            "no worker is connected".to_string()
        )])
    );
    assert_eq!(s.state("a"), Some(TaskState::NoWorker));
    let mut own = Scheduler::new().with_own_workers(2);
    own.handle(Input::ModuleStored { hash: M.into() });
    own.handle(Input::ClientConnected {
        client: 1,
        name: Some("cli".into()),
        session: 0,
    });
    assert_eq!(
        note(&submit(&mut own, vec![spec("a", vec![])])),
        Some(vec![])
    );
    own.handle(joined(10, 1));
    own.handle(Input::WorkerDisconnected { worker: 10 });
    assert_eq!(
        note(&submit(&mut own, vec![spec("b", vec![])])),
        Some(vec![]),
        "one of two on its way"
    );
    own.handle(joined(20, 1));
    own.handle(Input::WorkerDisconnected { worker: 20 });
    assert_eq!(
        note(&submit(&mut own, vec![spec("c", vec![])])),
        Some(vec![(
            "c".to_string(),
            "no worker is connected".to_string()
        )]),
        "both joined, and both are gone"
    );
}

#[test]
fn tasks_on_workers_counts_what_they_have_until_it_ends() {
    let mut s = setup(&[(10, 1), (11, 1)]);
    assert_eq!(s.tasks_on_workers(), 0);
    let placed = runs(&submit(&mut s, vec![spec("a", vec![]), spec("b", vec![])]));
    assert_eq!(placed.len(), 2);
    assert_eq!(s.tasks_on_workers(), 2);
    let (worker, key) = &placed[0];
    finish(&mut s, *worker, key, small(1));
    assert_eq!(s.tasks_on_workers(), 1);
    let (worker, key) = &placed[1];
    finish(&mut s, *worker, key, small(2));
    assert_eq!(s.tasks_on_workers(), 0);
}

#[test]
fn a_task_whose_end_comes_unannounced_began_as_it_ended() {
    // A worker leaves a task's `Started` out of a batch that also carries
    // its end: the task still counts as having run, from then.
    let mut s = setup(&[(10, 1)]);
    s.set_clock(1_000);
    submit(&mut s, vec![spec("a", vec![]), spec("b", vec![])]);
    s.set_clock(5_000);
    assert_eq!(s.timings("a").unwrap().started_ms, None);
    finish(&mut s, 10, "a", small(1));
    let a = s.timings("a").unwrap();
    assert!(a.started_ms.is_some(), "{a:?}");
    assert_eq!(a.started_ms, a.finished_ms);
    s.handle(erred(
        &s,
        10,
        "b",
        TaskError::new(ErrorKind::Panic, "no".into(), "b"),
    ));
    let b = s.timings("b").unwrap();
    assert!(b.started_ms.is_some(), "{b:?}");
    assert_eq!(b.started_ms, b.finished_ms);
}

#[test]
fn same_key_twice_computes_once() {
    let mut s = setup(&[(10, 1)]);
    submit(&mut s, vec![spec("a", vec![])]);
    let again = submit(&mut s, vec![spec("a", vec![])]);
    assert!(runs(&again).is_empty());
    finish(&mut s, 10, "a", small(1));
    assert!(runs(&submit(&mut s, vec![spec("a", vec![])])).is_empty());
    assert_eq!(s.state("a"), Some(TaskState::Finished));
}

#[test]
fn dependent_waits_for_its_inputs_and_gets_them_inline() {
    let mut s = setup(&[(10, 1)]);
    let cmds = submit(
        &mut s,
        vec![
            spec("a", vec![]),
            spec("b", vec![]),
            spec("c", vec![fut("a"), fut("b")]),
        ],
    );
    assert_eq!(runs(&cmds).len(), 2);
    assert_eq!(s.state("c"), Some(TaskState::Pending));
    assert!(runs(&finish(&mut s, 10, "a", small(1))).is_empty());
    let cmds = finish(&mut s, 10, "b", small(2));
    let run = cmds
        .iter()
        .find_map(|c| match c {
            Command::Run { tasks, .. } => Some(tasks[0].clone()),
            _ => None,
        })
        .expect("c runs");
    assert_eq!(run.key, "c");
    assert!(matches!(&run.args[0], RunArg::Dep { key, at } if key == "a" && at.inline.is_some()));
}

#[test]
fn unknown_dependency_or_module_is_refused() {
    let mut s = setup(&[(10, 1)]);
    let cmds = submit(&mut s, vec![spec("b", vec![fut("nope")])]);
    let Some(Command::Submitted { refused, .. }) = cmds.last() else {
        panic!("no answer")
    };
    assert_eq!(refused[0].0, "b");
    assert!(refused[0].1.contains("@nope"));
    let mut other = spec("c", vec![]);
    other.module = "other".into();
    let cmds = submit(&mut s, vec![other]);
    assert!(matches!(cmds.last(), Some(Command::Submitted { refused, .. }) if refused.len() == 1));
    assert_eq!(s.task_count(), 0);
}

#[test]
fn placement_prefers_the_worker_holding_the_most_input_bytes() {
    let mut s = setup(&[(10, 1), (20, 1)]);
    let cmds = submit(&mut s, vec![spec("a", vec![]), spec("b", vec![])]);
    let placed = runs(&cmds);
    let on = |k: &str| placed.iter().find(|(_, key)| key == k).unwrap().0;
    let (wa, wb) = (on("a"), on("b"));
    assert_ne!(wa, wb, "two ready tasks spread over two idle workers");
    finish(&mut s, wa, "a", big(10));
    finish(&mut s, wb, "b", big(5000));
    let cmds = submit(&mut s, vec![spec("c", vec![fut("a"), fut("b")])]);
    assert_eq!(runs(&cmds), vec![(wb, "c".to_string())]);
}

#[test]
fn placement_goes_to_the_least_busy_worker() {
    let mut s = setup(&[(10, 1), (20, 4)]);
    let cmds = submit(
        &mut s,
        (0..5).map(|i| spec(&format!("t{i}"), vec![])).collect(),
    );
    let placed = runs(&cmds);
    let on_20 = placed.iter().filter(|(w, _)| *w == 20).count();
    assert_eq!(on_20, 4, "the 4-slot worker takes 4 of 5: {placed:?}");
}

#[test]
fn higher_priority_runs_first_then_submission_order() {
    let mut s = setup(&[]);
    let mut urgent = spec("urgent", vec![]);
    urgent.priority = 5;
    submit(
        &mut s,
        vec![spec("first", vec![]), spec("second", vec![]), urgent],
    );
    let cmds = s.handle(joined(10, 1));
    let order: Vec<String> = runs(&cmds).into_iter().map(|(_, k)| k).collect();
    assert_eq!(order, vec!["urgent", "first", "second"]);
}

/// A client's task submitted while another's big map waits is placed
/// next, not after the whole map: clients of one priority take turns,
/// even under one name (each `dtask` command of a shell is a client of
/// its own, holding keys under the name `default`).
#[test]
fn a_small_clients_task_does_not_wait_behind_another_clients_big_map() {
    let mut s = setup(&[]);
    submit(
        &mut s,
        (0..1000)
            .map(|i| spec(&format!("map{i}"), vec![]))
            .collect(),
    );
    s.handle(Input::ClientConnected {
        client: 2,
        name: Some("cli".into()),
        session: 0,
    });
    s.handle(Input::Submit {
        counted: true,
        session: 0,
        client: 2,
        id: 1,
        tasks: vec![spec("small", vec![])],
    });
    let cmds = s.handle(joined(10, 1));
    let order: Vec<String> = runs(&cmds).into_iter().map(|(_, k)| k).collect();
    assert_eq!(order[..3], ["map0", "small", "map1"], "{order:?}");
    // Within the big map, submission order holds.
    let rest: Vec<&String> = order.iter().filter(|k| k.starts_with("map")).collect();
    assert!(rest.windows(2).all(|w| {
        let n = |k: &str| k[3..].parse::<u32>().unwrap();
        n(w[0]) < n(w[1])
    }));
}

#[test]
fn workers_are_not_flooded_beyond_their_queue() {
    let mut s = setup(&[(10, 1)]);
    let cmds = submit(
        &mut s,
        (0..1000).map(|i| spec(&format!("t{i}"), vec![])).collect(),
    );
    // One running and QUEUED_PER_SLOT queued behind it, no more, while no
    // run of the function has ended.
    assert_eq!(runs(&cmds).len(), 1 + super::state::QUEUED_PER_SLOT);
    // Its runs are short: the worker's queue deepens to QUEUED_MAX.
    s.handle(started(10, "t0"));
    let cmds = finish(&mut s, 10, "t0", small(0));
    assert_eq!(
        runs(&cmds).len(),
        super::state::QUEUED_MAX - super::state::QUEUED_PER_SLOT + 1,
        "filled up to QUEUED_MAX queued"
    );
    let cmds = finish(&mut s, 10, "t1", small(0));
    assert_eq!(runs(&cmds).len(), 1, "one finished, one more sent");
}

#[test]
fn tasks_of_long_runs_queue_few_per_slot() {
    let mut s = setup(&[(10, 1)]);
    s.set_clock(1_000);
    let cmds = submit(
        &mut s,
        (0..200).map(|i| spec(&format!("t{i}"), vec![])).collect(),
    );
    assert_eq!(runs(&cmds).len(), 1 + super::state::QUEUED_PER_SLOT);
    // Runs of 50 ms: 5 ms of work per slot is less than one, so 2 (the fewest);
    // none is sent until the worker is below that.
    let mut sent = 0;
    for i in 0..=super::state::QUEUED_PER_SLOT {
        let key = format!("t{i}");
        s.set_clock(1_000 + 50 * i as u64);
        s.handle(started(10, &key));
        s.set_clock(1_050 + 50 * i as u64);
        sent += runs(&finish(&mut s, 10, &key, small(0))).len();
    }
    // Once the queue drained to the depth, each run that ends sends one.
    assert_eq!(sent, 3, "refilled to one running and two queued");
}

#[test]
fn queue_depth_is_kept_per_export_not_per_function_name() {
    let mut s = setup(&[(10, 1)]);
    s.set_clock(1_000);
    submit(&mut s, vec![spec("long", vec![])]);
    s.handle(started(10, "long"));
    s.set_clock(1_050);
    finish(&mut s, 10, "long", small(0));
    // Another module's `f`, never run yet: the default depth, not the
    // 2 per slot that 50 ms runs of the first module's `f` earned.
    s.handle(Input::ModuleStored {
        hash: "another-module".into(),
    });
    let other = |i: usize| crate::protocol::TaskSpec {
        module: "another-module".into(),
        ..spec(&format!("o{i}"), vec![])
    };
    let cmds = submit(&mut s, (0..100).map(other).collect());
    let sent: usize = runs(&cmds).len();
    assert_eq!(sent, 1 + super::state::QUEUED_PER_SLOT);
    // The first module's `f` still queues 2 deep behind them.
    let cmds = submit(&mut s, vec![spec("long2", vec![]), spec("long3", vec![])]);
    assert!(
        runs(&cmds).is_empty(),
        "the worker holds more than 2 queued"
    );
}

#[test]
fn queue_depth_follows_runs_that_grow_shorter() {
    let mut s = setup(&[(10, 1)]);
    // Three runs of 100 ms, then runs of 0 ms: a mean over all runs would
    // still be 1.5 ms after 200 (3 per slot); the recent runs' is far
    // below the 39 µs at which the export's tasks queue the most per slot.
    let mut now = 1_000;
    for i in 0..200 {
        let key = format!("t{i}");
        s.set_clock(now);
        submit(&mut s, vec![spec(&key, vec![])]);
        s.handle(started(10, &key));
        now += if i < 3 { 100 } else { 0 };
        s.set_clock(now);
        finish(&mut s, 10, &key, small(0));
    }
    let cmds = submit(
        &mut s,
        (0..500).map(|i| spec(&format!("u{i}"), vec![])).collect(),
    );
    assert_eq!(runs(&cmds).len(), 1 + super::state::QUEUED_MAX);
}

#[test]
fn dependent_of_erred_task_errs_with_same_error() {
    let mut s = setup(&[(10, 1)]);
    submit(
        &mut s,
        vec![
            spec("a", vec![]),
            spec("b", vec![fut("a")]),
            spec("c", vec![fut("b")]),
        ],
    );
    s.handle(Input::Watch {
        reads: false,
        client: 1,
        keys: vec!["c".into()],
    });
    let cmds = s.handle(erred(&s, 10, "a", error("a")));
    assert_eq!(s.state("b"), Some(TaskState::Error));
    assert_eq!(s.state("c"), Some(TaskState::Error));
    let done = cmds.iter().find_map(|c| match c {
        Command::Done { key, outcome, .. } if key == "c" => Some(outcome.clone()),
        _ => None,
    });
    assert_eq!(done, Some(Outcome::Error(error("a"))));
    // Submitting onto an erred future errs at once, with the same error.
    submit(&mut s, vec![spec("d", vec![fut("c")])]);
    assert_eq!(s.state("d"), Some(TaskState::Error));
}

#[test]
fn watch_of_finished_or_unknown_key_answers_at_once() {
    let mut s = setup(&[(10, 1)]);
    submit(&mut s, vec![spec("a", vec![])]);
    finish(&mut s, 10, "a", small(3));
    let cmds = s.handle(Input::Watch {
        reads: false,
        client: 1,
        keys: vec!["a".into(), "zz".into()],
    });
    assert!(
        matches!(&cmds[0], Command::Done { outcome: Outcome::Finished(at), .. } if at.inline.is_some())
    );
    assert!(matches!(
        &cmds[1],
        Command::Done {
            outcome: Outcome::Unknown,
            ..
        }
    ));
}

#[test]
fn released_result_is_freed_on_its_worker() {
    let mut s = setup(&[(10, 1)]);
    submit(&mut s, vec![spec("a", vec![])]);
    finish(&mut s, 10, "a", big(100));
    let cmds = s.handle(Input::Release {
        client: 1,
        keys: vec!["a".into()],
    });
    assert!(cmds.contains(&Command::Free {
        worker: 10,
        keys: vec!["a".into()]
    }));
    assert_eq!(s.state("a"), None);
}

/// A client that reads what it watches (a gather under another name) has
/// each finished result that lives on a worker held for its connection
/// from the moment it is told, so its holders releasing it before the
/// reader's first range cannot take it; it goes once the reader says it
/// has read it, or its connection closes. Results told inline, and plain
/// watches, hold nothing; the hold is not journaled nor counted as held.
#[test]
fn a_result_told_to_a_reader_stays_until_it_has_read_it() {
    let mut s = setup(&[(10, 1)]);
    s.handle(Input::ClientConnected {
        client: 2,
        name: Some("reader".into()),
        session: 0,
    });
    submit(
        &mut s,
        vec![spec("a", vec![]), spec("b", vec![]), spec("c", vec![])],
    );
    let watch = |s: &mut Scheduler, keys: &[&str], reads: bool| {
        s.handle(Input::Watch {
            client: 2,
            keys: keys.iter().map(|k| k.to_string()).collect(),
            reads,
        })
    };
    let release = |s: &mut Scheduler, key: &str| {
        s.handle(Input::Release {
            client: 1,
            keys: vec![key.into()],
        })
    };
    // Told as it finishes (a), and at once when it had (b, c inline).
    watch(&mut s, &["a"], true);
    let cmds = finish(&mut s, 10, "a", big(100));
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Done { client: 2, key, .. } if key == "a"))
    );
    finish(&mut s, 10, "b", big(100));
    finish(&mut s, 10, "c", small(3));
    watch(&mut s, &["b", "c"], true);
    assert_eq!(s.held_keys(), 3, "the reader's holds are not counted");
    for k in ["a", "b", "c"] {
        release(&mut s, k);
    }
    assert_eq!(
        s.state("a"),
        Some(TaskState::Finished),
        "a reader has not read it"
    );
    assert_eq!(s.state("b"), Some(TaskState::Finished));
    assert_eq!(s.state("c"), None, "inline: it went with its outcome");
    assert_eq!(s.held_keys(), 0);
    assert_eq!(
        restored(&s).held_keys(),
        0,
        "a reader's hold is not journaled"
    );
    // Read: gone, and freed on its worker.
    let cmds = s.handle(Input::DoneReading {
        client: 2,
        keys: vec!["a".into()],
    });
    assert_eq!(s.state("a"), None);
    assert!(cmds.contains(&Command::Free {
        worker: 10,
        keys: vec!["a".into()]
    }));
    // Told twice to one connection, held once: one read lets go.
    submit(&mut s, vec![spec("d", vec![])]);
    finish(&mut s, 10, "d", big(100));
    watch(&mut s, &["d"], true);
    watch(&mut s, &["d"], true);
    release(&mut s, "d");
    s.handle(Input::DoneReading {
        client: 2,
        keys: vec!["d".into()],
    });
    assert_eq!(s.state("d"), None);
    // A plain watch holds nothing.
    submit(&mut s, vec![spec("e", vec![])]);
    finish(&mut s, 10, "e", big(100));
    watch(&mut s, &["e"], false);
    release(&mut s, "e");
    assert_eq!(s.state("e"), None);
    // The connection closing lets go of what it had not read (b).
    let cmds = s.handle(Input::ClientDisconnected { client: 2 });
    assert_eq!(s.state("b"), None);
    assert!(cmds.contains(&Command::Free {
        worker: 10,
        keys: vec!["b".into()]
    }));
}

/// Two pipelines under one client name submit the same call: each
/// submit is a hold, and each release lets go of one, so the first to
/// release does not free the other's result; `release --all` lets go of
/// every one. The counts outlive a restart.
#[test]
fn a_key_submitted_twice_under_one_name_is_freed_by_the_second_release() {
    let mut s = setup(&[(10, 1)]);
    submit(&mut s, vec![spec("a", vec![])]);
    submit(&mut s, vec![spec("a", vec![])]);
    finish(&mut s, 10, "a", big(100));
    let release = |s: &mut Scheduler| {
        s.handle(Input::Release {
            client: 1,
            keys: vec!["a".into()],
        })
    };
    let cmds = release(&mut s);
    assert!(cmds.is_empty(), "{cmds:?}");
    assert_eq!(s.state("a"), Some(TaskState::Finished), "held by the other");
    // Through a restart, the remaining hold is still one.
    submit(&mut s, vec![spec("a", vec![])]);
    let mut r = restored(&s);
    r.handle(joined(10, 1));
    r.handle(Input::WorkerHolds {
        worker: 10,
        results: vec![("a".into(), big(100))],
        actors: vec![],
    });
    release(&mut r);
    assert_eq!(r.state("a"), Some(TaskState::Finished), "one hold left");
    let cmds = release(&mut r);
    assert_eq!(r.state("a"), None);
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Free { keys, .. } if keys == &["a"]))
    );
    // `release --all` lets go of every hold at once.
    submit(&mut r, vec![spec("b", vec![])]);
    submit(&mut r, vec![spec("b", vec![])]);
    finish(&mut r, 10, "b", big(100));
    r.handle(Input::ReleaseAll { client: 1 });
    assert_eq!(r.state("b"), None);
    // A cancel without force of a key the name holds twice lets go of one
    // hold: the other pipeline's task runs on.
    submit(&mut r, vec![spec("c", vec![])]);
    submit(&mut r, vec![spec("c", vec![])]);
    let cancel = |r: &mut Scheduler| {
        r.handle(Input::Cancel {
            client: 1,
            keys: vec!["c".into()],
            force: false,
        })
    };
    cancel(&mut r);
    assert_eq!(r.state("c"), Some(TaskState::Processing));
    cancel(&mut r);
    assert_eq!(r.state("c"), Some(TaskState::Cancelled));
    // Uncounted submits (a client keeping futures, which counts its
    // handles itself) hold a key once: one release lets go.
    for _ in 0..2 {
        r.handle(Input::Submit {
            counted: false,
            session: 0,
            client: 1,
            id: 9,
            tasks: vec![spec("d", vec![])],
        });
    }
    finish(&mut r, 10, "d", big(100));
    release_d(&mut r);
    assert_eq!(r.state("d"), None);
}

/// A counted submit sent again after a broken connection (the same
/// session and request id) counts once, whether or not its first copy was
/// taken, and through a restart in between too; another request of the
/// same session counts again. So a pipeline whose first copy was lost
/// still holds the key beside another pipeline under the same name.
#[test]
fn a_counted_submit_sent_again_counts_once_whether_or_not_its_first_copy_was_taken() {
    let mut s = setup(&[(10, 1)]);
    s.enable_journal();
    let ask = |s: &mut Scheduler, id: u64| {
        s.handle(Input::Submit {
            counted: true,
            session: 77,
            client: 1,
            id,
            tasks: vec![spec("a", vec![])],
        })
    };
    let release = |s: &mut Scheduler| {
        s.handle(Input::Release {
            client: 1,
            keys: vec!["a".into()],
        })
    };
    // Request 1 taken, then sent again: one hold. Request 2, sent again
    // after a restart: a second hold, not a third.
    ask(&mut s, 1);
    ask(&mut s, 1);
    ask(&mut s, 2);
    let mut r = super::testing::restarted(&mut s);
    ask(&mut r, 2);
    // Request 3's first copy never arrived: its second counts.
    ask(&mut r, 3);
    r.handle(joined(10, 1));
    finish(&mut r, 10, "a", big(100));
    for left in [2, 1] {
        release(&mut r);
        assert_eq!(r.state("a"), Some(TaskState::Finished), "{left} holds left");
    }
    release(&mut r);
    assert_eq!(r.state("a"), None, "three holds in all");
}

fn release_d(s: &mut Scheduler) {
    s.handle(Input::Release {
        client: 1,
        keys: vec!["d".into()],
    });
}

/// Work nobody holds or needs any more is not run: a release of pending
/// keys cancels them (a running one is interrupted), and then their
/// inputs nobody else wants, as Dask forgets released work. Inputs others
/// hold or need run on.
#[test]
fn released_work_that_has_not_ended_is_cancelled_and_forgotten() {
    let mut s = setup(&[(10, 1)]);
    s.handle(Input::ClientConnected {
        client: 2,
        name: Some("other".into()),
        session: 0,
    });
    // a runs; b and c wait on it; d waits on "shared", which another
    // client holds too.
    let cmds = submit(
        &mut s,
        vec![
            spec("a", vec![]),
            spec("b", vec![fut("a")]),
            spec("c", vec![fut("b")]),
            spec("shared", vec![]),
            spec("d", vec![fut("shared")]),
        ],
    );
    assert!(runs(&cmds).contains(&(10, "a".into())));
    s.handle(started(10, "a"));
    s.handle(Input::Watch {
        reads: false,
        client: 1,
        keys: vec!["c".into()],
    });
    s.handle(Input::Submit {
        counted: true,
        session: 0,
        client: 2,
        id: 1,
        tasks: vec![spec("shared", vec![])],
    });
    let cmds = s.handle(Input::ReleaseAll { client: 1 });
    assert!(
        cancelled_runs(&cmds).contains(&(10, "a".into())),
        "the running input is interrupted: {cmds:?}"
    );
    assert!(cmds.contains(&Command::Done {
        client: 1,
        key: "c".into(),
        outcome: Outcome::Cancelled,
    }));
    for k in ["a", "b", "c", "d"] {
        assert_eq!(s.state(k), None, "{k} is forgotten");
    }
    assert_eq!(
        s.state("shared"),
        Some(TaskState::Processing),
        "held by other"
    );
    // The interrupted run's late end is dropped, not taken as a result.
    let cmds = finish(&mut s, 10, "a", big(100));
    assert!(cmds.contains(&Command::Free {
        worker: 10,
        keys: vec!["a".into()]
    }));
    assert_eq!(s.state("a"), None);
}

/// A worker that could not read a result back (its spill file removed)
/// says it dropped it: a held result is computed again, and scattered
/// data with no other copy is lost (its dependents fail).
#[test]
fn a_result_a_worker_dropped_is_computed_again_or_lost_if_scattered() {
    let mut s = setup(&[(10, 1)]);
    submit(&mut s, vec![spec("a", vec![])]);
    finish(&mut s, 10, "a", big(100));
    let cmds = s.handle(Input::WorkerDropped {
        worker: 10,
        keys: vec!["a".into(), "never-held".into()],
    });
    assert_eq!(runs(&cmds), vec![(10, "a".to_string())], "run again");
    assert_eq!(s.state("a"), Some(TaskState::Processing));
    assert!(s.who_has(vec!["a".into()])[0].1.is_empty());
    finish(&mut s, 10, "a", big(100));
    assert_eq!(s.who_has(vec!["a".into()])[0].1, vec!["w10".to_string()]);
    // Scattered data has no recipe: lost.
    s.handle(Input::Scatter {
        session: 0,
        counted: false,
        client: 1,
        id: 3,
        values: vec![("data".into(), Bytes::from_static(b"x"))],
        broadcast: false,
        workers: vec![],
    });
    finish(&mut s, 10, "data", big(100));
    assert_eq!(s.state("data"), Some(TaskState::Finished));
    submit(&mut s, vec![spec("c", vec![fut("data")])]);
    s.handle(Input::WorkerDropped {
        worker: 10,
        keys: vec!["data".into()],
    });
    assert_eq!(s.state("data"), Some(TaskState::Lost));
    assert_eq!(s.state("c"), Some(TaskState::Error));
}

/// Released work another connected client waits for (a `gather` of a
/// key it does not hold, a task handed the key) runs on, and is forgotten
/// once it ended and they were told; a watcher gone, or of the holder
/// letting go, does not keep it.
#[test]
fn released_work_another_client_waits_for_runs_on() {
    let mut s = setup(&[(10, 1)]);
    for (client, name) in [(2, "reader"), (3, "gone")] {
        s.handle(Input::ClientConnected {
            client,
            name: Some(name.into()),
            session: 0,
        });
    }
    submit(&mut s, vec![spec("a", vec![]), spec("b", vec![])]);
    s.handle(started(10, "a"));
    s.handle(Input::Watch {
        reads: false,
        client: 2,
        keys: vec!["a".into()],
    });
    s.handle(Input::Watch {
        reads: false,
        client: 3,
        keys: vec!["b".into()],
    });
    s.handle(Input::ClientDisconnected { client: 3 });
    let cmds = s.handle(Input::ReleaseAll { client: 1 });
    assert_eq!(cancelled_runs(&cmds), vec![(10, "b".to_string())]);
    assert_eq!(s.state("a"), Some(TaskState::Processing), "watched");
    assert_eq!(s.state("b"), None, "its watcher left");
    let cmds = finish(&mut s, 10, "a", big(100));
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Done { client: 2, key, outcome: Outcome::Finished(_) } if key == "a"
    )));
    assert_eq!(s.state("a"), None, "forgotten once told");
}

/// A cancel without force leaves a key running when work another client
/// holds depends on it (directly or through unheld work): that work would
/// be cancelled with it. With force, both go.
#[test]
fn cancel_without_force_spares_a_key_others_held_work_depends_on() {
    let mut s = setup(&[(10, 1)]);
    s.handle(Input::ClientConnected {
        client: 2,
        name: Some("other".into()),
        session: 0,
    });
    submit(&mut s, vec![spec("s", vec![]), spec("mid", vec![fut("s")])]);
    s.handle(Input::Submit {
        counted: true,
        session: 0,
        client: 2,
        id: 1,
        tasks: vec![spec("theirs", vec![fut("mid")])],
    });
    let cancel = |s: &mut Scheduler, force| {
        s.handle(Input::Cancel {
            client: 1,
            keys: vec!["s".into()],
            force,
        })
    };
    let cmds = cancel(&mut s, false);
    assert!(cancelled_runs(&cmds).is_empty(), "{cmds:?}");
    assert_eq!(s.state("s"), Some(TaskState::Processing));
    assert_eq!(s.state("theirs"), Some(TaskState::Pending));
    let cmds = cancel(&mut s, true);
    assert_eq!(cancelled_runs(&cmds), vec![(10, "s".to_string())]);
    assert_eq!(s.state("s"), None, "cancelled, and let go of before");
    assert_eq!(s.state("theirs"), Some(TaskState::Cancelled));
}

/// A result being computed again when it is released, while a dependent
/// of its earlier copy still exists, keeps its recipe (released, its run
/// called off): should that dependent's result be lost later, both are
/// computed again, rather than the dependent waiting forever.
#[test]
fn released_recomputation_keeps_its_recipe_for_its_dependents() {
    let mut s = setup(&[(10, 1)]);
    submit(&mut s, vec![spec("k", vec![]), spec("d1", vec![fut("k")])]);
    finish(&mut s, 10, "k", big(100));
    finish(&mut s, 10, "d1", big(100));
    let cmds = s.handle(Input::WorkerDropped {
        worker: 10,
        keys: vec!["k".into()],
    });
    assert_eq!(runs(&cmds), vec![(10, "k".to_string())], "computed again");
    let cmds = s.handle(Input::Release {
        client: 1,
        keys: vec!["k".into()],
    });
    assert_eq!(cancelled_runs(&cmds), vec![(10, "k".to_string())]);
    assert_eq!(s.task_count(), 2, "k kept (released) for d1");
    assert_ne!(s.state("k"), Some(TaskState::Cancelled));
    let cmds = s.handle(Input::WorkerDropped {
        worker: 10,
        keys: vec!["d1".into()],
    });
    assert_eq!(runs(&cmds), vec![(10, "k".to_string())], "k first");
    let cmds = finish(&mut s, 10, "k", big(100));
    assert_eq!(runs(&cmds), vec![(10, "d1".to_string())]);
    finish(&mut s, 10, "d1", big(100));
    assert_eq!(s.state("d1"), Some(TaskState::Finished));
}

/// Releasing the end of a long chain of pending tasks cancels the whole
/// chain by a worklist: no recursion as deep as the chain.
#[test]
fn releasing_a_long_pending_chain_forgets_all_of_it() {
    let mut s = setup(&[]);
    let n = 200_000;
    let mut tasks = vec![spec("k0", vec![])];
    for i in 1..n {
        tasks.push(spec(&format!("k{i}"), vec![fut(&format!("k{}", i - 1))]));
    }
    submit(&mut s, tasks);
    let keys = (0..n - 1).map(|i| format!("k{i}")).collect();
    s.handle(Input::Release { client: 1, keys });
    s.finish_releases();
    assert_eq!(s.task_count(), n, "the end still holds the chain");
    s.handle(Input::Release {
        client: 1,
        keys: vec![format!("k{}", n - 1)],
    });
    assert_eq!(s.task_count(), 0);
}

#[test]
fn intermediate_results_live_until_dependents_finish() {
    let mut s = setup(&[(10, 1)]);
    submit(&mut s, vec![spec("a", vec![]), spec("b", vec![fut("a")])]);
    s.handle(Input::Release {
        client: 1,
        keys: vec!["a".into()],
    });
    finish(&mut s, 10, "a", big(100));
    assert_eq!(s.state("a"), Some(TaskState::Finished), "b still needs a");
    let cmds = finish(&mut s, 10, "b", small(1));
    assert!(cmds.contains(&Command::Free {
        worker: 10,
        keys: vec!["a".into()]
    }));
    assert_eq!(s.state("a"), None);
    assert_eq!(s.state("b"), Some(TaskState::Finished));
}

#[test]
fn unnamed_client_releases_its_keys_on_disconnect_named_does_not() {
    let mut s = setup(&[(10, 1)]);
    s.handle(Input::ClientConnected {
        client: 2,
        name: None,
        session: 0,
    });
    s.handle(Input::Submit {
        counted: true,
        session: 0,
        client: 2,
        id: 1,
        tasks: vec![spec("anon", vec![])],
    });
    submit(&mut s, vec![spec("named", vec![])]);
    finish(&mut s, 10, "anon", small(1));
    finish(&mut s, 10, "named", small(1));
    s.handle(Input::ClientDisconnected { client: 2 });
    s.handle(Input::ClientDisconnected { client: 1 });
    assert_eq!(s.state("anon"), None);
    assert_eq!(s.state("named"), Some(TaskState::Finished));
}

#[test]
fn an_unnamed_sessions_holds_wait_for_it_to_come_back() {
    let mut s = setup(&[(10, 1)]);
    let connect = |s: &mut Scheduler, client| {
        s.handle(Input::ClientConnected {
            client,
            name: None,
            session: 0xab,
        })
    };
    connect(&mut s, 2);
    s.handle(Input::Submit {
        counted: true,
        session: 0,
        client: 2,
        id: 1,
        tasks: vec![spec("kept", vec![])],
    });
    finish(&mut s, 10, "kept", small(1));
    // Its connection breaks: the result stays, for the grace.
    let cmds = s.handle(Input::ClientDisconnected { client: 2 });
    let (holder, away, after_ms) = grace(&cmds).expect("a grace timer");
    assert_eq!(after_ms, super::state::HOLDER_GRACE_MS);
    assert_eq!(s.state("kept"), Some(TaskState::Finished));
    // Back under the same session on a new connection: the grace's end
    // changes nothing.
    connect(&mut s, 3);
    s.handle(Input::HolderGraceOver {
        holder: holder.clone(),
        away,
    });
    assert_eq!(s.state("kept"), Some(TaskState::Finished));
    // A new connection made before the old one's close is seen: no grace
    // is needed.
    connect(&mut s, 4);
    let cmds = s.handle(Input::ClientDisconnected { client: 3 });
    assert_eq!(grace(&cmds), None);
    // Gone for good: released when its grace is over, not before.
    let cmds = s.handle(Input::ClientDisconnected { client: 4 });
    let (holder, away, _) = grace(&cmds).expect("a grace timer");
    assert_eq!(s.state("kept"), Some(TaskState::Finished));
    s.handle(Input::HolderGraceOver { holder, away });
    assert_eq!(s.state("kept"), None);
}

#[test]
fn a_session_that_says_it_is_leaving_lets_go_at_once() {
    let mut s = setup(&[(10, 1)]);
    s.handle(Input::ClientConnected {
        client: 2,
        name: None,
        session: 0xab,
    });
    s.handle(Input::Submit {
        counted: true,
        session: 0,
        client: 2,
        id: 1,
        tasks: vec![spec("kept", vec![])],
    });
    finish(&mut s, 10, "kept", small(1));
    // An older connection of the session, half-open since a blip, is
    // still open as it says it is leaving on its newer one.
    s.handle(Input::ClientConnected {
        client: 3,
        name: None,
        session: 0xab,
    });
    s.handle(Input::ClientLeaving { client: 3 });
    s.handle(Input::ClientDisconnected { client: 3 });
    assert_eq!(s.state("kept"), Some(TaskState::Finished));
    // The older one's close, seen last, ends it all at once.
    let cmds = s.handle(Input::ClientDisconnected { client: 2 });
    assert_eq!(grace(&cmds), None);
    assert_eq!(s.state("kept"), None);
}

#[test]
fn tasks_on_a_dead_worker_run_elsewhere() {
    let mut s = setup(&[(10, 1)]);
    submit(&mut s, vec![spec("a", vec![])]);
    s.handle(joined(20, 1));
    let cmds = s.handle(Input::WorkerDisconnected { worker: 10 });
    assert_eq!(runs(&cmds), vec![(20, "a".to_string())]);
    // A late report from the dead worker is ignored.
    finish(&mut s, 10, "a", small(9));
    assert_eq!(s.state("a"), Some(TaskState::Processing));
    let stats = s.stats();
    assert_eq!((stats.tasks, stats.dispatched, stats.reruns), (1, 2, 1));
}

#[test]
fn result_only_on_a_dead_worker_is_computed_again_for_its_dependent() {
    let mut s = setup(&[(10, 1), (20, 1)]);
    let cmds = submit(&mut s, vec![spec("a", vec![])]);
    let w = runs(&cmds)[0].0;
    let other = if w == 10 { 20 } else { 10 };
    finish(&mut s, w, "a", big(100));
    let cmds = submit(&mut s, vec![spec("b", vec![fut("a"), fut("a")])]);
    assert_eq!(
        runs(&cmds),
        vec![(w, "b".to_string())],
        "b goes where a's bytes are"
    );
    let cmds = s.handle(Input::WorkerDisconnected { worker: w });
    assert_eq!(
        runs(&cmds),
        vec![(other, "a".to_string())],
        "a is computed again first"
    );
    assert_eq!(s.state("b"), Some(TaskState::Pending));
    let cmds = finish(&mut s, other, "a", big(100));
    assert_eq!(runs(&cmds), vec![(other, "b".to_string())]);
    finish(&mut s, other, "b", small(1));
    assert_eq!(s.state("b"), Some(TaskState::Finished));
}

#[test]
fn a_released_input_is_brought_back_when_its_dependent_is_lost() {
    let mut s = setup(&[(10, 1), (20, 1)]);
    let cmds = submit(&mut s, vec![spec("a", vec![]), spec("b", vec![fut("a")])]);
    let a_on = runs(&cmds)[0].0;
    s.handle(Input::Release {
        client: 1,
        keys: vec!["a".into()],
    });
    let cmds = finish(&mut s, a_on, "a", big(10));
    assert_eq!(
        runs(&cmds),
        vec![(a_on, "b".to_string())],
        "b follows a's bytes"
    );
    let cmds = finish(&mut s, a_on, "b", big(10));
    assert!(cmds.contains(&Command::Free {
        worker: a_on,
        keys: vec!["a".into()]
    }));
    assert_eq!(
        s.state("a"),
        None,
        "a's data is freed; it is kept only as lineage"
    );
    // b's only copy dies: b is needed (held), so a then b run again.
    let other = if a_on == 10 { 20 } else { 10 };
    let cmds = s.handle(Input::WorkerDisconnected { worker: a_on });
    assert_eq!(runs(&cmds), vec![(other, "a".to_string())]);
    let cmds = finish(&mut s, other, "a", big(10));
    assert_eq!(runs(&cmds), vec![(other, "b".to_string())]);
}

#[test]
fn lost_scattered_data_errs_its_dependents() {
    let mut s = setup(&[(10, 1)]);
    s.handle(Input::Scatter {
        session: 0,
        counted: false,
        client: 1,
        id: 1,
        values: vec![("d".into(), Bytes::from_static(b"x"))],
        broadcast: false,
        workers: vec![],
    });
    finish(&mut s, 10, "d", big(100));
    s.handle(joined(20, 1));
    submit(&mut s, vec![spec("b", vec![fut("d")])]);
    s.handle(Input::WorkerDisconnected { worker: 10 });
    assert_eq!(s.state("d"), Some(TaskState::Lost));
    assert_eq!(s.state("b"), Some(TaskState::Error));
}

#[test]
fn cancel_interrupts_running_task_and_cancels_pending_dependents() {
    let mut s = setup(&[(10, 1)]);
    submit(&mut s, vec![spec("a", vec![]), spec("b", vec![fut("a")])]);
    s.handle(Input::Watch {
        reads: false,
        client: 1,
        keys: vec!["b".into()],
    });
    let cmds = s.handle(Input::Cancel {
        client: 1,
        keys: vec!["a".into()],
        force: false,
    });
    assert_eq!(cancelled_runs(&cmds), vec![(10, "a".to_string())]);
    assert_eq!(s.state("a"), Some(TaskState::Cancelled));
    assert_eq!(s.state("b"), Some(TaskState::Cancelled));
    assert!(cmds.iter().any(
        |c| matches!(c, Command::Done { key, outcome: Outcome::Cancelled, .. } if key == "b")
    ));
    // A late report from the interrupted run changes nothing, and its
    // result is freed on the worker rather than left there.
    let late = finish(&mut s, 10, "a", small(1));
    assert_eq!(s.state("a"), Some(TaskState::Cancelled));
    assert!(late.contains(&Command::Free {
        worker: 10,
        keys: vec!["a".into()]
    }));
    // A new dependent of a cancelled key is cancelled at once.
    submit(&mut s, vec![spec("c", vec![fut("a")])]);
    assert_eq!(s.state("c"), Some(TaskState::Cancelled));
}

#[test]
fn an_error_of_a_cancelled_run_is_not_taken_for_the_rerun_on_the_same_worker() {
    let mut s = setup(&[(10, 1)]);
    submit(&mut s, vec![spec("a", vec![])]);
    // The worker's error of the first run is on its way as the key is
    // cancelled and submitted again, to the same worker.
    let stale = erred(&s, 10, "a", error("a"));
    s.handle(Input::Cancel {
        client: 1,
        keys: vec!["a".into()],
        force: false,
    });
    let cmds = submit(&mut s, vec![spec("a", vec![])]);
    assert_eq!(runs(&cmds), vec![(10, "a".to_string())]);
    s.handle(stale);
    assert_eq!(s.state("a"), Some(TaskState::Processing), "still running");
    // The rerun's own outcome is the key's.
    finish(&mut s, 10, "a", small(4));
    assert_eq!(s.state("a"), Some(TaskState::Finished));
    let rerun_failed = {
        submit(&mut s, vec![spec("b", vec![])]);
        erred(&s, 10, "b", error("b"))
    };
    s.handle(rerun_failed);
    assert_eq!(
        s.state("b"),
        Some(TaskState::Error),
        "a current run's error counts"
    );
}

#[test]
fn cancel_without_force_spares_keys_other_clients_hold() {
    let mut s = setup(&[(10, 1)]);
    s.handle(Input::ClientConnected {
        client: 2,
        name: Some("other".into()),
        session: 0,
    });
    submit(&mut s, vec![spec("a", vec![])]);
    s.handle(Input::Submit {
        counted: true,
        session: 0,
        client: 2,
        id: 1,
        tasks: vec![spec("a", vec![])],
    });
    let cmds = s.handle(Input::Cancel {
        client: 1,
        keys: vec!["a".into()],
        force: false,
    });
    assert!(cancelled_runs(&cmds).is_empty());
    assert_eq!(s.state("a"), Some(TaskState::Processing));
    let cmds = s.handle(Input::Cancel {
        client: 1,
        keys: vec!["a".into()],
        force: true,
    });
    assert_eq!(cancelled_runs(&cmds).len(), 1);
}

#[test]
fn retries_rerun_an_erring_task_before_it_errs() {
    let mut s = setup(&[(10, 1)]);
    let mut flaky = spec("f", vec![]);
    flaky.retries = 2;
    submit(&mut s, vec![flaky]);
    for _ in 0..2 {
        let cmds = s.handle(erred(&s, 10, "f", error("f")));
        assert_eq!(runs(&cmds), vec![(10, "f".to_string())], "runs again");
    }
    s.handle(erred(&s, 10, "f", error("f")));
    assert_eq!(s.state("f"), Some(TaskState::Error));
}

#[test]
fn a_retried_task_whose_input_was_lost_meanwhile_waits_for_it_again() {
    let mut s = setup(&[(10, 1)]);
    submit(&mut s, vec![spec("a", vec![])]);
    finish(&mut s, 10, "a", big(100));
    s.handle(joined(20, 1));
    let mut b = spec("b", vec![fut("a")]);
    b.retries = 1;
    b.placement.workers = vec!["worker-20".into()];
    assert_eq!(runs(&submit(&mut s, vec![b])), vec![(20, "b".to_string())]);
    // a's only copy dies with worker 10 while b runs: a is computed again.
    let cmds = s.handle(Input::WorkerDisconnected { worker: 10 });
    assert_eq!(runs(&cmds), vec![(20, "a".to_string())]);
    // b then errs for a reason of its own with a retry left: it waits for
    // a instead of running without it.
    let cmds = s.handle(erred(&s, 20, "b", error("b")));
    assert_eq!(runs(&cmds), vec![]);
    assert_eq!(s.state("b"), Some(TaskState::Pending));
    let cmds = finish(&mut s, 20, "a", big(100));
    assert_eq!(runs(&cmds), vec![(20, "b".to_string())]);
    finish(&mut s, 20, "b", small(2));
    assert_eq!(s.state("b"), Some(TaskState::Finished));
}

fn syncs(cmds: &[Command]) -> Vec<(u64, u64)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Sync { worker, seq } => Some((*worker, *seq)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_task_whose_run_the_worker_got_but_does_not_have_is_sent_again() {
    let mut s = setup(&[(10, 1)]);
    let cmds = submit(&mut s, vec![spec("a", vec![]), spec("b", vec![])]);
    let seq = cmds
        .iter()
        .find_map(|c| match c {
            Command::Run { seq, .. } => Some(*seq),
            _ => None,
        })
        .unwrap();
    // A heartbeat from before that Run proves nothing: the scheduler only
    // says the Run was sent.
    let cmds = s.handle(heartbeat(10, seq - 1, &[]));
    assert!(runs(&cmds).is_empty());
    assert_eq!(syncs(&cmds), vec![(10, seq)]);
    // The worker got the Run (and reports results before letting go of a
    // task) but has only a: b never arrived, and is sent again at once, in
    // a later Run; a is left alone.
    let cmds = s.handle(heartbeat(10, seq, &["a"]));
    assert_eq!(runs(&cmds), vec![(10, "b".to_string())]);
    assert!(matches!(&cmds[0], Command::Run { seq: again, .. } if *again > seq));
    assert_eq!(s.stats().resent, 1);
    finish(&mut s, 10, "a", small(1));
    finish(&mut s, 10, "b", small(2));
    assert_eq!(s.state("b"), Some(TaskState::Finished));
}

#[test]
fn a_last_run_that_never_arrived_is_sent_again_after_a_sync() {
    let mut s = setup(&[(10, 1)]);
    submit(&mut s, vec![spec("a", vec![])]);
    // The worker never got Run 1, so its heartbeats say 0, however late
    // they are: the scheduler says Run 1 was sent, and resends nothing.
    for _ in 0..3 {
        let cmds = s.handle(heartbeat(10, 0, &[]));
        assert!(runs(&cmds).is_empty());
        assert_eq!(syncs(&cmds), vec![(10, 1)]);
    }
    // The Sync arrived after every Run before it: a is certainly lost.
    let cmds = s.handle(heartbeat(10, 1, &[]));
    assert_eq!(runs(&cmds), vec![(10, "a".to_string())]);
    assert!(syncs(&cmds).is_empty());
    assert_eq!(s.stats().resent, 1);
}

#[test]
fn a_task_in_hand_or_not_yet_acknowledged_is_never_resent() {
    let mut s = setup(&[(10, 1)]);
    submit(&mut s, vec![spec("a", vec![])]);
    // A slow worker: its heartbeats lag the Run for a long time.
    for _ in 0..5 {
        assert!(runs(&s.handle(heartbeat(10, 0, &[]))).is_empty());
    }
    for _ in 0..5 {
        let cmds = s.handle(heartbeat(10, 1, &["a"]));
        assert!(runs(&cmds).is_empty());
        assert!(syncs(&cmds).is_empty(), "nothing left to acknowledge");
    }
    finish(&mut s, 10, "a", small(1));
    // A heartbeat taken after the result went out does not list it.
    assert!(runs(&s.handle(heartbeat(10, 1, &[]))).is_empty());
    assert_eq!(s.stats().resent, 0);
}

#[test]
fn retry_reruns_the_origin_and_the_dependents_that_inherited_its_error() {
    let mut s = setup(&[(10, 1)]);
    submit(&mut s, vec![spec("a", vec![]), spec("b", vec![fut("a")])]);
    s.handle(erred(&s, 10, "a", error("a")));
    assert_eq!(s.state("b"), Some(TaskState::Error));
    let cmds = s.handle(Input::Retry {
        client: 1,
        id: 3,
        keys: vec!["b".into()],
        limits: Default::default(),
    });
    assert_eq!(runs(&cmds), vec![(10, "a".to_string())]);
    assert_eq!(s.state("b"), Some(TaskState::Pending));
    let cmds = finish(&mut s, 10, "a", small(1));
    assert_eq!(runs(&cmds), vec![(10, "b".to_string())]);
}

/// Retrying a key whose error came from a task since forgotten cannot
/// rerun that task: it is refused, naming it, rather than doing nothing.
#[test]
fn retry_of_an_error_whose_origin_was_forgotten_is_refused_naming_it() {
    let mut s = setup(&[(10, 1)]);
    submit(&mut s, vec![spec("a", vec![]), spec("b", vec![fut("a")])]);
    s.handle(erred(&s, 10, "a", error("a")));
    s.handle(Input::Release {
        client: 1,
        keys: vec!["a".into()],
    });
    assert_eq!(s.state("b"), Some(TaskState::Error));
    let cmds = s.handle(Input::Retry {
        client: 1,
        id: 3,
        keys: vec!["b".into()],
        limits: Default::default(),
    });
    assert!(runs(&cmds).is_empty());
    let refused = cmds.iter().find_map(|c| match c {
        Command::Retried { refused, .. } => Some(refused.clone()),
        _ => None,
    });
    let refused = refused.expect("an answer");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].1.contains('a'), "{refused:?}");
}

#[test]
fn fire_and_forget_keys_run_unheld_and_are_forgotten_when_done() {
    let mut s = setup(&[(10, 1)]);
    submit(&mut s, vec![spec("a", vec![])]);
    s.handle(Input::FireAndForget {
        keys: vec!["a".into()],
    });
    s.handle(Input::Release {
        client: 1,
        keys: vec!["a".into()],
    });
    assert_eq!(s.state("a"), Some(TaskState::Processing), "still runs");
    let cmds = finish(&mut s, 10, "a", big(10));
    assert_eq!(s.state("a"), None);
    assert!(cmds.contains(&Command::Free {
        worker: 10,
        keys: vec!["a".into()]
    }));
}

#[test]
fn scatter_places_values_round_robin_and_answers_once_stored() {
    let mut s = setup(&[(10, 1), (20, 1)]);
    let values: Vec<(String, Bytes)> = (0..4)
        .map(|i| (format!("d{i}"), Bytes::from(vec![i])))
        .collect();
    let cmds = s.handle(Input::Scatter {
        session: 0,
        counted: false,
        client: 1,
        id: 9,
        values,
        broadcast: false,
        workers: vec![],
    });
    let mut per_worker = std::collections::HashMap::new();
    for c in &cmds {
        if let Command::Store { worker, values } = c {
            per_worker.insert(*worker, values.len());
        }
    }
    assert_eq!(per_worker.get(&10), Some(&2));
    assert_eq!(per_worker.get(&20), Some(&2));
    let mut answered = false;
    for c in cmds {
        if let Command::Store { worker, values } = c {
            for (k, b) in values {
                let out = finish(
                    &mut s,
                    worker,
                    &k,
                    Located {
                        inline: Some(b),
                        who_has: vec![],
                        nbytes: 1,
                    },
                );
                answered |= out.contains(&Command::Scattered { client: 1, id: 9 });
            }
        }
    }
    assert!(answered);
    assert_eq!(s.state("d3"), Some(TaskState::Finished));
}

#[test]
fn broadcast_scatter_records_every_copy() {
    let mut s = setup(&[(10, 1), (20, 1)]);
    s.handle(Input::Scatter {
        session: 0,
        counted: false,
        client: 1,
        id: 1,
        values: vec![("d".into(), Bytes::from_static(b"x"))],
        broadcast: true,
        workers: vec![],
    });
    let first = finish(&mut s, 20, "d", big(1));
    assert!(
        !first.iter().any(|c| matches!(c, Command::Scattered { .. })),
        "answered before every copy was stored"
    );
    let second = finish(&mut s, 10, "d", big(1));
    assert!(second.contains(&Command::Scattered { client: 1, id: 1 }));
    let holders = s.who_has(vec!["d".into()]);
    let mut addrs = holders[0].1.clone();
    addrs.sort();
    assert_eq!(addrs, vec!["w10".to_string(), "w20".to_string()]);
}

/// A scatter's values are stored whether or not the client that sent them
/// stays: its wait outlives the connection, so the copy its client asks
/// again after reconnecting (which the server answers as the first) is
/// answered once they are, not before, and a copy told of twice counts
/// once.
#[test]
fn a_scatter_wait_outlives_its_connection_and_counts_each_copy_once() {
    let mut s = setup(&[(20, 1)]);
    s.handle(Input::Scatter {
        session: 5,
        counted: false,
        client: 1,
        id: 4,
        values: vec![
            ("d".into(), Bytes::from_static(b"x")),
            ("e".into(), Bytes::from_static(b"y")),
        ],
        broadcast: false,
        workers: vec![],
    });
    s.handle(Input::ClientDisconnected { client: 1 });
    let first = finish(&mut s, 20, "d", big(1));
    let again = finish(&mut s, 20, "d", big(1));
    assert!(
        !first
            .iter()
            .chain(&again)
            .any(|c| matches!(c, Command::Scattered { .. })),
        "answered with one value of two stored: {first:?} {again:?}"
    );
    let second = finish(&mut s, 20, "e", big(1));
    assert!(
        second.contains(&Command::Scattered { client: 1, id: 4 }),
        "{second:?}"
    );
}

/// A counted scatter asked again after a broken connection, even of a
/// scheduler restarted since, holds its keys once.
#[test]
fn a_counted_scatter_asked_again_after_a_restart_holds_once() {
    let mut s = setup(&[(10, 1)]);
    s.enable_journal();
    let ask = |s: &mut Scheduler, id: u64| {
        s.handle(Input::Scatter {
            session: 5,
            counted: true,
            client: 1,
            id,
            values: vec![("d".into(), Bytes::from_static(b"x"))],
            broadcast: false,
            workers: vec![],
        })
    };
    ask(&mut s, 1);
    finish(&mut s, 10, "d", big(1));
    ask(&mut s, 2);
    let mut r = super::testing::restarted(&mut s);
    r.handle(joined(10, 1));
    r.handle(Input::WorkerHolds {
        worker: 10,
        results: vec![("d".into(), big(1))],
        actors: Vec::new(),
    });
    // Request 2 asked again of the restarted scheduler: no third hold.
    ask(&mut r, 2);
    for left in [1, 0] {
        r.handle(Input::Release {
            client: 1,
            keys: vec!["d".into()],
        });
        let state = r.state("d");
        assert_eq!(state.is_some(), left > 0, "{left} holds left: {state:?}");
    }
}

/// Whether `cmds` fail request `id` of client 1 with a message naming the
/// worker that left.
fn scatter_failed(cmds: &[Command], id: u64) -> bool {
    cmds.iter().any(|c| {
        matches!(c, Command::Failed { client: 1, id: i, message }
            if *i == id && message.contains("scatter them again"))
    })
}

#[test]
fn a_scatter_whose_target_dies_before_storing_fails_instead_of_waiting() {
    let mut s = setup(&[(10, 1), (20, 1)]);
    let cmds = s.handle(Input::Scatter {
        session: 0,
        counted: false,
        client: 1,
        id: 3,
        values: vec![("d".into(), Bytes::from_static(b"x"))],
        broadcast: false,
        workers: vec![],
    });
    let target = cmds
        .iter()
        .find_map(|c| match c {
            Command::Store { worker, .. } => Some(*worker),
            _ => None,
        })
        .unwrap();
    let cmds = s.handle(Input::WorkerDisconnected { worker: target });
    assert!(scatter_failed(&cmds, 3), "{cmds:?}");
    assert_eq!(s.state("d"), Some(TaskState::Lost));
}

#[test]
fn lost_scattered_data_scattered_again_is_stored_again() {
    let mut s = setup(&[(10, 1), (20, 1)]);
    let scatter = |id| Input::Scatter {
        session: 0,
        counted: false,
        client: 1,
        id,
        values: vec![("d".into(), Bytes::from_static(b"x"))],
        broadcast: false,
        workers: vec![],
    };
    let stored_on = |cmds: &[Command]| {
        cmds.iter().find_map(|c| match c {
            Command::Store { worker, .. } => Some(*worker),
            _ => None,
        })
    };
    let first = stored_on(&s.handle(scatter(1))).unwrap();
    finish(&mut s, first, "d", big(1));
    s.handle(Input::WorkerDisconnected { worker: first });
    assert_eq!(s.state("d"), Some(TaskState::Lost));
    // The same bytes again: stored on the worker left, not taken as held.
    let cmds = s.handle(scatter(2));
    let again = stored_on(&cmds).expect("stored again");
    assert_ne!(again, first);
    let out = finish(&mut s, again, "d", big(1));
    assert!(
        out.contains(&Command::Scattered { client: 1, id: 2 }),
        "{out:?}"
    );
    assert_eq!(s.state("d"), Some(TaskState::Finished));
}

fn place(id: u64, keys: &[&str], broadcast: bool) -> Input {
    Input::Place {
        counted: false,
        session: 0,
        client: 1,
        id,
        confirm: id + 1,
        values: keys.iter().map(|k| (k.to_string(), 8 << 20)).collect(),
        broadcast,
        workers: vec![],
    }
}

/// The data addresses a [`FromScheduler::Placed`] answer gives `key`.
fn placed_at(cmds: &[Command], key: &str) -> Vec<String> {
    cmds.iter()
        .find_map(|c| match c {
            Command::Send {
                to: 1,
                msg: FromScheduler::Placed { puts, .. },
            } => puts.iter().find(|(k, _)| k == key).map(|(_, a)| a.clone()),
            _ => None,
        })
        .expect("a placement for the key")
}

#[test]
fn placed_data_is_confirmed_once_its_worker_reports_it_stored() {
    let mut s = setup(&[(10, 1), (20, 1)]);
    let cmds = s.handle(place(1, &["d", "e"], false));
    let (d, e) = (placed_at(&cmds, "d"), placed_at(&cmds, "e"));
    assert_eq!(d.len(), 1);
    assert_ne!(d, e, "round-robin over the workers");
    assert!(!cmds.iter().any(|c| matches!(c, Command::Store { .. })));
    let on = |addr: &[String]| if addr[0] == "w10" { 10 } else { 20 };
    let out = finish(&mut s, on(&d), "d", big(8 << 20));
    assert!(!out.contains(&Command::Scattered { client: 1, id: 2 }));
    let out = finish(&mut s, on(&e), "e", big(8 << 20));
    assert!(
        out.contains(&Command::Scattered { client: 1, id: 2 }),
        "{out:?}"
    );
    // Placing held data again sends nothing and is confirmed at once.
    let cmds = s.handle(place(5, &["d"], false));
    assert!(placed_at(&cmds, "d").is_empty());
    assert!(cmds.contains(&Command::Scattered { client: 1, id: 6 }));
}

/// A client whose connection broke as it placed values comes back on a
/// new connection and asks again: it is answered with the same workers,
/// and its confirmation goes to the new connection. A placement its
/// client does not come back for within the grace fails its unsent keys.
#[test]
fn a_placement_asked_again_on_a_new_connection_is_taken_over() {
    let mut s = setup(&[(10, 1), (20, 1)]);
    let asked = |client, id, key: &str| Input::Place {
        counted: false,
        session: 9,
        client,
        id,
        confirm: id + 1,
        values: vec![(key.to_string(), 8 << 20)],
        broadcast: false,
        workers: vec![],
    };
    let cmds = s.handle(asked(1, 1, "d"));
    let at = placed_at(&cmds, "d");
    let cmds = s.handle(Input::ClientDisconnected { client: 1 });
    assert!(
        cmds.contains(&Command::PlacementGrace {
            client: 1,
            confirm: 2,
            after_ms: super::state::HOLDER_GRACE_MS
        }),
        "{cmds:?}"
    );
    assert_eq!(
        s.state("d"),
        Some(TaskState::Processing),
        "waits for its client"
    );
    s.handle(Input::ClientConnected {
        client: 2,
        name: Some("cli".into()),
        session: 0,
    });
    let cmds = s.handle(asked(2, 1, "d"));
    let again = cmds.iter().find_map(|c| match c {
        Command::Send {
            to: 2,
            msg:
                FromScheduler::Placed {
                    id: 1,
                    puts,
                    again: true,
                },
        } => Some(puts.clone()),
        _ => None,
    });
    assert_eq!(again, Some(vec![("d".to_string(), at.clone())]), "{cmds:?}");
    // A copy read late from the first connection leaves it to the second.
    s.handle(asked(1, 1, "d"));
    // The first connection's grace ends: the placement is the second's.
    let cmds = s.handle(Input::PlacementGraceOver {
        client: 1,
        confirm: 2,
    });
    assert!(cmds.is_empty(), "{cmds:?}");
    let on = if at[0] == "w10" { 10 } else { 20 };
    let out = finish(&mut s, on, "d", big(8 << 20));
    assert!(
        out.contains(&Command::Scattered { client: 2, id: 2 }),
        "{out:?}"
    );
    // Placed, and never asked for again.
    s.handle(asked(2, 5, "e"));
    s.handle(Input::ClientDisconnected { client: 2 });
    let cmds = s.handle(Input::PlacementGraceOver {
        client: 2,
        confirm: 6,
    });
    assert!(
        cmds.iter().any(|c| matches!(c, Command::Failed { client: 2, id: 6, message } if message.contains("did not come back"))),
        "{cmds:?}"
    );
    assert_eq!(s.state("e"), Some(TaskState::Error));
}

/// A placement that fails while values are still to be sent (a worker
/// left) fails the values its client has not sent too, so that scattering
/// them again places them again rather than finding them "being stored";
/// and a client that gives up on a placement asked for on an earlier
/// connection (`Unplace` under its session) ends that one.
#[test]
fn a_failed_placement_fails_its_unsent_values_and_is_unplaced_by_session() {
    let mut s = setup(&[(10, 1), (20, 1)]);
    let asked = |client, id, keys: &[&str]| Input::Place {
        counted: false,
        session: 9,
        client,
        id,
        confirm: id + 1,
        values: keys.iter().map(|k| (k.to_string(), 8 << 20)).collect(),
        broadcast: false,
        workers: vec![],
    };
    let cmds = s.handle(asked(1, 1, &["d", "e"]));
    let on_20 = if placed_at(&cmds, "d")[0] == "w20" {
        "d"
    } else {
        "e"
    };
    let other = if on_20 == "d" { "e" } else { "d" };
    let cmds = s.handle(Input::WorkerDisconnected { worker: 20 });
    assert!(scatter_failed(&cmds, 2), "{cmds:?}");
    assert_eq!(
        s.state(other),
        Some(TaskState::Error),
        "not left being stored"
    );
    // Placed again, under the same session, on a new connection that then
    // gives up on it.
    s.handle(Input::ClientConnected {
        client: 2,
        name: Some("cli".into()),
        session: 0,
    });
    s.handle(asked(2, 5, &["f"]));
    s.handle(Input::ClientConnected {
        client: 3,
        name: Some("cli".into()),
        session: 0,
    });
    let cmds = s.handle(Input::Unplace {
        client: 3,
        session: 9,
        confirm: 6,
        reason: "cannot reach worker w10".into(),
    });
    assert!(
        cmds.iter().any(|c| matches!(
            c,
            Command::Failed {
                client: 2,
                id: 6,
                ..
            }
        )),
        "{cmds:?}"
    );
    assert_eq!(s.state("f"), Some(TaskState::Error));
}

#[test]
fn a_placement_refused_is_answered_on_its_own_request_id() {
    let mut s = setup(&[]);
    let cmds = s.handle(place(1, &["d"], false));
    assert!(
        cmds.iter().any(|c| matches!(c, Command::Failed { client: 1, id: 1, message } if message.contains("no workers"))),
        "{cmds:?}"
    );
}

#[test]
fn placed_data_is_not_bound_by_the_schedulers_value_limit() {
    let mut s = setup(&[(10, 1)]).with_max_value(1 << 20);
    let cmds = s.handle(place(1, &["d"], false));
    assert_eq!(placed_at(&cmds, "d"), vec!["w10".to_string()]);
}

#[test]
fn placed_data_its_client_could_not_send_fails_and_is_placed_afresh() {
    let mut s = setup(&[(10, 1)]);
    s.handle(place(1, &["d"], false));
    let cmds = s.handle(Input::Unplace {
        client: 1,
        session: 0,
        confirm: 2,
        reason: "cannot reach worker w10".into(),
    });
    assert!(
        cmds.iter().any(|c| matches!(c, Command::Failed { client: 1, id: 2, message } if message.contains("w10"))),
        "{cmds:?}"
    );
    assert_eq!(s.state("d"), Some(TaskState::Error));
    // Scattering it again places it again rather than taking the error as
    // held data.
    let cmds = s.handle(place(3, &["d"], false));
    assert_eq!(placed_at(&cmds, "d"), vec!["w10".to_string()]);
    let out = finish(&mut s, 10, "d", big(8 << 20));
    assert!(
        out.contains(&Command::Scattered { client: 1, id: 4 }),
        "{out:?}"
    );
    assert_eq!(s.state("d"), Some(TaskState::Finished));
}

#[test]
fn placed_data_unsent_when_its_client_leaves_fails_instead_of_hanging() {
    let mut s = setup(&[(10, 1)]);
    s.handle(place(1, &["d"], false));
    s.handle(Input::ClientDisconnected { client: 1 });
    // The named client still holds it, and sees why it is not there.
    assert_eq!(s.state("d"), Some(TaskState::Error));
}

#[test]
fn a_broadcast_copy_a_worker_cannot_keep_fails_the_scatter() {
    let mut s = setup(&[(10, 1), (20, 1)]);
    let cmds = s.handle(place(1, &["d"], true));
    assert_eq!(placed_at(&cmds, "d").len(), 2);
    finish(&mut s, 10, "d", big(8 << 20));
    let cmds = s.handle(erred(
        &s,
        20,
        "d",
        TaskError::new(ErrorKind::Memory, "the spill directory is full".into(), "d"),
    ));
    assert!(
        cmds.iter().any(|c| matches!(c, Command::Failed { client: 1, id: 2, message } if message.contains("spill"))),
        "{cmds:?}"
    );
}

#[test]
fn a_broadcast_scatter_fails_when_any_target_dies_before_storing() {
    let mut s = setup(&[(10, 1), (20, 1), (30, 1)]);
    s.handle(Input::Scatter {
        session: 0,
        counted: false,
        client: 1,
        id: 4,
        values: vec![("d".into(), Bytes::from_static(b"x"))],
        broadcast: true,
        workers: vec![],
    });
    finish(&mut s, 10, "d", big(1));
    // 30 is neither the first target nor one that stored it.
    let cmds = s.handle(Input::WorkerDisconnected { worker: 30 });
    assert!(scatter_failed(&cmds, 4), "{cmds:?}");
    // A late confirmation of the failed request answers nothing.
    let late = finish(&mut s, 20, "d", big(1));
    assert!(!late.iter().any(|c| matches!(c, Command::Scattered { .. })));
    assert_eq!(s.state("d"), Some(TaskState::Finished));
}

/// After a restart, a result that lived on a worker is not computed again
/// while the workers rejoin: the worker holding it reports it, and its
/// dependent runs on that copy. Reported only after the rejoin settled (a
/// second after the first worker joined), the recomputation begun by then
/// is called off, and the dependent runs at once all the same.
#[test]
fn a_result_a_rejoining_worker_reports_is_not_computed_again() {
    let mut s = setup(&[(10, 1)]);
    submit(
        &mut s,
        vec![spec("a", vec![]), spec("b", vec![fut("a"), val(1)])],
    );
    finish(&mut s, 10, "a", big(1000));
    let holds = |worker| Input::WorkerHolds {
        worker,
        results: vec![("a".into(), big(1000))],
        actors: vec![],
    };
    // Reported while the workers rejoin.
    let mut r = restored(&s);
    r.set_clock(5_000);
    assert!(runs(&r.handle(joined(20, 1))).is_empty());
    r.handle(joined(10, 1));
    let cmds = r.handle(holds(10));
    assert_eq!(runs(&cmds), vec![(10, "b".to_string())], "{cmds:?}");
    assert!(
        !cmds.iter().any(|c| matches!(c, Command::CancelRun { .. })),
        "{cmds:?}"
    );
    assert_eq!(r.stats().reruns, 0);
    // Reported late: computed again on 20 once the rejoin settled, then
    // called off.
    let mut r = restored(&s);
    r.set_clock(5_000);
    assert!(runs(&r.handle(joined(20, 1))).is_empty());
    r.set_clock(5_000 + super::state::REJOIN_SETTLE_MS - 1);
    assert!(runs(&r.handle(beat(20))).is_empty());
    r.set_clock(5_000 + super::state::REJOIN_SETTLE_MS);
    assert_eq!(runs(&r.handle(beat(20))), vec![(20, "a".to_string())]);
    r.handle(joined(10, 1));
    let cmds = r.handle(holds(10));
    assert!(
        cmds.contains(&Command::CancelRun {
            worker: 20,
            keys: vec!["a".into()]
        }),
        "{cmds:?}"
    );
    assert_eq!(r.state("a"), Some(TaskState::Finished));
    assert_eq!(runs(&cmds).len(), 1, "b runs now: {cmds:?}");
    assert_eq!(
        r.who_has(vec!["a".into()]),
        vec![("a".to_string(), vec!["w10".to_string()])]
    );
    // The called-off run's result, if it came anyway, is one more copy.
    finish(&mut r, 20, "a", big(1000));
    assert_eq!(r.state("a"), Some(TaskState::Finished));
}

/// A scatter still being stored when the scheduler stopped is restored as
/// data a worker may report (it was stored, the news lost), never as a
/// task to run: it has no recipe.
#[test]
fn a_scatter_restored_before_it_was_stored_is_never_run() {
    let mut s = setup(&[(10, 1)]);
    s.handle(Input::Scatter {
        session: 0,
        counted: false,
        client: 1,
        id: 1,
        values: vec![
            ("d".into(), Bytes::from_static(b"x")),
            ("f".into(), Bytes::from_static(b"y")),
        ],
        broadcast: false,
        workers: vec![],
    });
    let mut r = Scheduler::new().restore(s.snapshot()).unwrap();
    r.handle(Input::ModuleStored { hash: M.into() });
    let mut sent = r.handle(joined(20, 1));
    sent.extend(r.handle(Input::WorkerHolds {
        worker: 20,
        results: vec![("d".into(), big(1))],
        actors: vec![],
    }));
    sent.extend(r.handle(Input::RejoinWindowClosed));
    assert!(runs(&sent).is_empty(), "{sent:?}");
    assert_eq!(r.state("d"), Some(TaskState::Finished));
    assert_eq!(r.state("f"), Some(TaskState::Lost));
}

#[test]
fn restored_scattered_data_no_worker_reports_is_lost_when_the_rejoin_window_closes() {
    let mut s = setup(&[(10, 1)]);
    s.handle(Input::Scatter {
        session: 0,
        counted: false,
        client: 1,
        id: 1,
        values: vec![
            ("d".into(), Bytes::from_static(b"x")),
            ("e".into(), Bytes::from_static(b"y")),
        ],
        broadcast: true,
        workers: vec![],
    });
    finish(&mut s, 10, "d", big(1));
    finish(&mut s, 10, "e", big(1));
    let mut r = restored(&s);
    // The worker holding e comes back and reports it; d's never does.
    r.handle(joined(20, 1));
    r.handle(Input::WorkerHolds {
        worker: 20,
        results: vec![("e".into(), big(1))],
        actors: vec![],
    });
    let waiting = r.handle(Input::Watch {
        reads: false,
        client: 1,
        keys: vec!["d".into()],
    });
    assert!(waiting.is_empty(), "d waits for its worker: {waiting:?}");
    let cmds = r.handle(Input::RejoinWindowClosed);
    assert!(
        cmds.iter().any(
            |c| matches!(c, Command::Done { key, outcome: Outcome::Error(e), .. }
            if key == "d" && e.kind == ErrorKind::Lost)
        ),
        "{cmds:?}"
    );
    assert_eq!(r.state("d"), Some(TaskState::Lost));
    assert_eq!(r.state("e"), Some(TaskState::Finished));
}

/// A task that was running on scattered data when the scheduler stopped
/// waits, after the restore, for a worker to report the data (within the
/// rejoin window) instead of failing as if it were lost; it runs once the
/// data is reported, and fails only if the window closes without it.
#[test]
fn a_task_on_restored_scattered_data_waits_for_its_worker_to_report_it() {
    let mut s = setup(&[(10, 1)]);
    let d = scattered(&mut s, 2);
    submit(
        &mut s,
        vec![spec("t", vec![fut(&d[0])]), spec("u", vec![fut(&d[1])])],
    );
    let mut r = restored(&s);
    r.handle(joined(20, 1));
    assert_eq!(r.state("t"), Some(TaskState::Pending), "not failed");
    let cmds = r.handle(Input::WorkerHolds {
        worker: 20,
        results: vec![(d[0].clone(), big(100))],
        actors: vec![],
    });
    assert_eq!(runs(&cmds), vec![(20, "t".to_string())]);
    assert_eq!(r.state("u"), Some(TaskState::Pending));
    r.handle(Input::RejoinWindowClosed);
    assert_eq!(r.state(&d[1]), Some(TaskState::Lost));
    assert_eq!(
        r.state("u"),
        Some(TaskState::Error),
        "its data never came back"
    );
}

/// A task that erred because the scattered data it read was lost with its
/// worker is retried once the data is scattered again (and refused, saying
/// so, until then).
#[test]
fn a_task_on_lost_scattered_data_is_retried_once_it_is_scattered_again() {
    let mut s = setup(&[(10, 1)]);
    let d = scattered(&mut s, 1).remove(0);
    s.handle(joined(20, 1));
    let mut t = spec("t", vec![fut(&d)]);
    t.placement.workers = vec!["worker-20".into()];
    submit(&mut s, vec![t]);
    s.handle(Input::WorkerDisconnected { worker: 10 });
    assert_eq!(s.state(&d), Some(TaskState::Lost));
    assert_eq!(s.state("t"), Some(TaskState::Error));
    let retry = |s: &mut Scheduler| {
        s.handle(Input::Retry {
            client: 1,
            id: 3,
            keys: vec!["t".into()],
            limits: Default::default(),
        })
    };
    let refused = |cmds: &[Command]| {
        cmds.iter().find_map(|c| match c {
            Command::Retried { refused, .. } => Some(refused.clone()),
            _ => None,
        })
    };
    let cmds = retry(&mut s);
    let why = &refused(&cmds).unwrap()[0].1;
    assert!(why.contains("scatter it again"), "{why}");
    scatter_again(&mut s, &d, false);
    s.handle(Input::Finished {
        worker: 20,
        results: vec![(d.clone(), big(100))],
    });
    assert_eq!(s.state(&d), Some(TaskState::Finished));
    let cmds = retry(&mut s);
    assert_eq!(refused(&cmds), Some(vec![]));
    assert_eq!(runs(&cmds), vec![(20, "t".to_string())]);
}

#[test]
fn restricted_task_runs_only_on_named_worker_unless_loose() {
    let mut s = setup(&[(10, 1), (20, 1)]);
    let mut t = spec("t", vec![]);
    t.placement.workers = vec!["worker-20".into()];
    assert_eq!(runs(&submit(&mut s, vec![t])), vec![(20, "t".to_string())]);
    let mut nowhere = spec("n", vec![]);
    nowhere.placement.workers = vec!["worker-99".into()];
    let cmds = submit(&mut s, vec![nowhere]);
    assert!(runs(&cmds).is_empty());
    // The submit's answer says so.
    assert!(cmds.iter().any(|c| matches!(c,
        Command::Submitted { unplaceable, .. }
            if *unplaceable == [("n".to_string(), "no connected worker is worker-99".to_string())])));
    assert_eq!(s.state("n"), Some(TaskState::NoWorker));
    assert_eq!(
        s.no_worker_reason("n").as_deref(),
        Some("no connected worker is worker-99")
    );
    let mut loose = spec("l", vec![]);
    loose.placement.workers = vec!["worker-99".into()];
    loose.placement.allow_other_workers = true;
    assert_eq!(runs(&submit(&mut s, vec![loose])).len(), 1);
    // The worker it names joins: it runs there at once.
    assert_eq!(runs(&s.handle(joined(99, 1))), vec![(99, "n".to_string())]);
    assert_eq!(s.state("n"), Some(TaskState::Processing));
    assert_eq!(s.no_worker_reason("n"), None);
}

#[test]
fn a_memory_limit_places_tasks_only_where_it_is_allowed() {
    let mut s = setup(&[]);
    let big_worker = |id: u64, mib: u64| joined_at(id, &format!("w{id}"), mib << 20);
    s.handle(big_worker(10, 256));
    s.handle(big_worker(20, 1024));
    let big = |k: &str, mib: u64| {
        let mut t = spec(k, vec![]);
        t.memory_limit = Some(mib << 20);
        t
    };
    // Only the 1 GiB worker may run a 512 MiB task, however busy it is.
    for k in ["a", "b", "c"] {
        let cmds = submit(&mut s, vec![big(k, 512)]);
        assert!(runs(&cmds).iter().all(|(w, _)| *w == 20), "{cmds:?}");
    }
    // More than any worker allows is refused, naming both.
    let cmds = submit(&mut s, vec![big("d", 2048)]);
    let refused = cmds.iter().find_map(|c| match c {
        Command::Submitted { refused, .. } => refused.first().cloned(),
        _ => None,
    });
    let (key, why) = refused.expect("refused");
    assert_eq!(key, "d");
    assert!(
        why.contains("2048 MiB") && why.contains("(1024 MiB)"),
        "{why}"
    );
    assert_eq!(s.state("d"), None);
    // The big worker leaves: what waits for it has no worker, and says so.
    s.handle(Input::WorkerDisconnected { worker: 20 });
    assert_eq!(s.state("c"), Some(TaskState::NoWorker));
    assert_eq!(
        s.no_worker_reason("c").as_deref(),
        Some("no connected worker allows tasks 512 MiB")
    );
    // Cancelled, it is no longer set aside.
    s.handle(Input::Cancel {
        client: 1,
        keys: vec!["c".into()],
        force: true,
    });
    assert_eq!(s.state("c"), Some(TaskState::Cancelled));
    assert_eq!(s.no_worker_reason("c"), None);
}

#[test]
fn an_erred_key_submitted_again_under_other_limits_runs_again_under_them() {
    let mut s = setup(&[(10, 1)]);
    let mut t = spec("a", vec![]);
    t.timeout_ms = Some(100);
    submit(&mut s, vec![t.clone(), spec("b", vec![fut("a")])]);
    s.handle(erred(&s, 10, "a", error("a")));
    assert_eq!(s.state("a"), Some(TaskState::Error));
    // The same limits: the same error, nothing runs.
    assert!(runs(&submit(&mut s, vec![t.clone()])).is_empty());
    assert_eq!(s.state("a"), Some(TaskState::Error));
    // Another timeout: it runs again, with it.
    t.timeout_ms = Some(60_000);
    let cmds = submit(&mut s, vec![t]);
    let run = cmds
        .iter()
        .find_map(|c| match c {
            Command::Run { tasks, .. } => tasks.first().cloned(),
            _ => None,
        })
        .expect("runs again");
    assert_eq!((run.key.as_str(), run.timeout_ms), ("a", Some(60_000)));
    // Its dependent, which inherited the error, waits for it again too.
    assert_eq!(s.state("b"), Some(TaskState::Pending));
}

#[test]
fn resources_limit_how_many_tasks_a_worker_holds_at_once() {
    let mut s = setup(&[]);
    s.handle(resourced(10, vec![("GPU".into(), 1.0)]));
    s.handle(resourced(20, vec![]));
    let gpu_task = |k: &str| {
        let mut t = spec(k, vec![]);
        t.placement.resources = vec![("GPU".into(), 1.0)];
        t
    };
    let cmds = submit(&mut s, vec![gpu_task("g1"), gpu_task("g2")]);
    assert_eq!(
        runs(&cmds),
        vec![(10, "g1".to_string())],
        "one GPU, one task"
    );
    let cmds = finish(&mut s, 10, "g1", small(1));
    assert_eq!(runs(&cmds), vec![(10, "g2".to_string())]);
}

#[test]
fn a_task_on_three_workers_that_died_fails_instead_of_killing_more() {
    let mut s = setup(&[(10, 1)]);
    submit(&mut s, vec![spec("killer", vec![])]);
    for (dead, next) in [(10, 20), (20, 30)] {
        s.handle(started(dead, "killer"));
        s.handle(joined(next, 1));
        let cmds = s.handle(Input::WorkerDisconnected { worker: dead });
        assert_eq!(runs(&cmds), vec![(next, "killer".to_string())]);
    }
    s.handle(started(30, "killer"));
    s.handle(joined(40, 1));
    s.handle(Input::Watch {
        reads: false,
        client: 1,
        keys: vec!["killer".into()],
    });
    let cmds = s.handle(Input::WorkerDisconnected { worker: 30 });
    assert!(runs(&cmds).is_empty(), "not sent to a fourth worker");
    assert_eq!(s.state("killer"), Some(TaskState::Error));
    let error = cmds.iter().find_map(|c| match c {
        Command::Done {
            outcome: Outcome::Error(e),
            ..
        } => Some(e.clone()),
        _ => None,
    });
    let error = error.unwrap();
    assert!(error.message.contains("3 workers that died"));
    assert_eq!(error.kind, ErrorKind::KilledWorker);
    assert_eq!(error.kind.name(), "killed worker");
}

#[test]
fn a_task_retried_after_killing_three_workers_starts_its_count_again() {
    let mut s = setup(&[(10, 1)]);
    submit(&mut s, vec![spec("killer", vec![])]);
    let mut worker = 10;
    for next in [20, 30, 40] {
        s.handle(started(worker, "killer"));
        s.handle(joined(next, 1));
        s.handle(Input::WorkerDisconnected { worker });
        worker = next;
    }
    assert_eq!(s.state("killer"), Some(TaskState::Error));
    // Retried: it runs again on 40, and a death while it only waits
    // there (a task ahead of it, say) is no blame.
    let cmds = s.handle(Input::Retry {
        client: 1,
        id: 9,
        keys: vec!["killer".into()],
        limits: Default::default(),
    });
    assert_eq!(runs(&cmds), vec![(40, "killer".to_string())]);
    s.handle(joined(50, 1));
    let cmds = s.handle(Input::WorkerDisconnected { worker: 40 });
    assert_eq!(runs(&cmds), vec![(50, "killer".to_string())]);
    // Started, it has one death in hand, not a fourth.
    s.handle(started(50, "killer"));
    s.handle(joined(60, 1));
    let cmds = s.handle(Input::WorkerDisconnected { worker: 50 });
    assert_eq!(runs(&cmds), vec![(60, "killer".to_string())]);
}

#[test]
fn tasks_queued_behind_a_running_one_are_not_blamed_for_worker_deaths() {
    // One slot: "spin" runs, five more wait in the worker's queue.
    let mut s = setup(&[(10, 1)]);
    let mut tasks = vec![spec("spin", vec![])];
    tasks.extend((0..5).map(|i| spec(&format!("q{i}"), vec![])));
    let cmds = submit(&mut s, tasks);
    assert_eq!(runs(&cmds).len(), 6, "one running, five queued");
    s.handle(started(10, "spin"));
    let mut worker = 10;
    for next in [20, 30, 40] {
        s.handle(joined(next, 1));
        let cmds = s.handle(Input::WorkerDisconnected { worker });
        if next < 40 {
            assert!(runs(&cmds).iter().any(|(_, k)| k == "spin"));
            s.handle(started(next, "spin"));
        }
        worker = next;
    }
    assert_eq!(
        s.state("spin"),
        Some(TaskState::Error),
        "it began on 3 that died"
    );
    for i in 0..5 {
        let k = format!("q{i}");
        assert_eq!(s.state(&k), Some(TaskState::Processing), "{k} never began");
        finish(&mut s, 40, &k, small(i as u8));
        assert_eq!(s.state(&k), Some(TaskState::Finished));
    }
}

fn resourced(id: u64, resources: Vec<(String, f64)>) -> Input {
    Input::WorkerConnected {
        worker: id,
        nthreads: 4,
        data_addr: format!("w{id}"),
        name: format!("worker-{id}"),
        resources,
        memory_limit: 256 << 20,
        restarts: 0,
    }
}

fn cancelled_runs(cmds: &[Command]) -> Vec<(u64, String)> {
    cmds.iter()
        .flat_map(|c| match c {
            Command::CancelRun { worker, keys } => {
                keys.iter().map(|k| (*worker, k.clone())).collect()
            }
            _ => vec![],
        })
        .collect()
}

#[test]
fn a_chain_lost_with_one_worker_is_computed_again_in_order() {
    let mut s = setup(&[(10, 1), (20, 1)]);
    let cmds = submit(&mut s, vec![spec("a", vec![])]);
    let w = runs(&cmds)[0].0;
    let other = if w == 10 { 20 } else { 10 };
    finish(&mut s, w, "a", big(100));
    let cmds = submit(&mut s, vec![spec("b", vec![fut("a")])]);
    assert_eq!(runs(&cmds), vec![(w, "b".to_string())]);
    finish(&mut s, w, "b", big(100));
    // Both results lived only on w.
    let cmds = s.handle(Input::WorkerDisconnected { worker: w });
    assert_eq!(runs(&cmds), vec![(other, "a".to_string())]);
    let cmds = finish(&mut s, other, "a", big(100));
    assert_eq!(
        runs(&cmds),
        vec![(other, "b".to_string())],
        "b waits for a exactly once"
    );
    finish(&mut s, other, "b", big(100));
    assert_eq!(s.state("b"), Some(TaskState::Finished));
}

#[test]
fn releasing_the_end_of_a_long_chain_forgets_it_all_without_deep_recursion() {
    let mut s = setup(&[(10, 1)]);
    let n = 100_000;
    let mut specs = vec![spec("c0", vec![])];
    for i in 1..n {
        specs.push(spec(&format!("c{i}"), vec![fut(&format!("c{}", i - 1))]));
    }
    submit(&mut s, specs);
    let keys: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    s.handle(Input::Release {
        client: 1,
        keys: keys[..n - 1].to_vec(),
    });
    // As the server does between other events.
    while s.releasing() > 0 {
        s.release_step();
    }
    for k in &keys {
        finish(&mut s, 10, k, big(10));
    }
    assert_eq!(s.state(&keys[n - 1]), Some(TaskState::Finished));
    s.handle(Input::Release {
        client: 1,
        keys: vec![keys[n - 1].clone()],
    });
    assert_eq!(s.task_count(), 0);
}

/// Drives `s` with `event` as the server does: handle, then journal.
fn journaled(s: &mut Scheduler, model: &mut super::state::Model, event: Input) -> Vec<Command> {
    let cmds = s.handle(event);
    for r in s.journal_records() {
        model.apply(r);
    }
    cmds
}

#[test]
fn journal_records_rebuild_exactly_the_state_a_snapshot_holds() {
    use crate::protocol::Op;
    let mut s = Scheduler::new();
    s.enable_journal();
    let mut m = super::state::Model::default();
    let mut go = |s: &mut Scheduler, e: Input| journaled(s, &mut m, e);
    go(&mut s, Input::ModuleStored { hash: M.into() });
    go(
        &mut s,
        Input::ClientConnected {
            client: 1,
            name: Some("cli".into()),
            session: 0,
        },
    );
    go(
        &mut s,
        Input::ClientConnected {
            client: 2,
            name: None,
            session: 0,
        },
    );
    go(&mut s, joined(10, 1));
    go(
        &mut s,
        Input::Submit {
            counted: true,
            session: 0,
            client: 1,
            id: 1,
            tasks: vec![
                spec("a", vec![val(1)]),
                spec("b", vec![fut("a")]),
                spec("c", vec![val(3)]),
                spec("gone", vec![val(4)]),
            ],
        },
    );
    go(
        &mut s,
        Input::Submit {
            counted: true,
            session: 0,
            client: 2,
            id: 1,
            tasks: vec![spec("ephemeral", vec![val(5)])],
        },
    );
    go(&mut s, started(10, "a"));
    go(
        &mut s,
        Input::Finished {
            worker: 10,
            results: vec![("a".into(), small(2)), ("gone".into(), small(5))],
        },
    );
    let failed = erred(&s, 10, "c", error("c"));
    go(&mut s, failed);
    go(
        &mut s,
        Input::Release {
            client: 1,
            keys: vec!["gone".into()],
        },
    );
    for (id, op) in [
        (
            1,
            Op::QueuePut {
                name: "q".into(),
                item: val(1),
                maxsize: None,
                timeout_ms: None,
            },
        ),
        (
            2,
            Op::QueuePut {
                name: "q".into(),
                item: fut("a"),
                maxsize: None,
                timeout_ms: None,
            },
        ),
        (
            3,
            Op::QueueGet {
                name: "q".into(),
                timeout_ms: None,
            },
        ),
        (
            4,
            Op::VarSet {
                name: "v".into(),
                item: val(9),
            },
        ),
        (5, Op::EventSet { name: "e".into() }),
        (
            6,
            Op::LockAcquire {
                name: "l".into(),
                timeout_ms: None,
            },
        ),
    ] {
        go(
            &mut s,
            // With a session: its answers are kept, and journaled.
            Input::Primitive {
                client: 1,
                id,
                session: 77,
                task: None,
                op,
            },
        );
    }
    go(&mut s, Input::ClientDisconnected { client: 2 });
    assert!(!s.snapshot().canonical().answers().is_empty());
    let rebuilt = m.into_snapshot().canonical();
    assert_eq!(rebuilt, s.snapshot().canonical());
    // a, b and c: "gone" is forgotten, and so is the task of the
    // unnamed client that left (cancelled before it ran: nobody wants it).
    assert_eq!(rebuilt.len(), 3);
    assert!(s.state("ephemeral").is_none());
}

#[test]
fn journal_records_nothing_for_a_touch_that_changes_nothing_durable() {
    let mut s = setup(&[(10, 1)]);
    s.enable_journal();
    submit(&mut s, vec![spec("a", vec![]), spec("b", vec![fut("a")])]);
    assert_eq!(
        s.journal_records().len(),
        2 + 1,
        "two tasks and the counters"
    );
    // Starting changes nothing the journal keeps.
    s.handle(started(10, "a"));
    assert!(s.journal_records().is_empty());
}

#[test]
fn the_counters_are_recorded_once_per_batch_of_events_and_only_when_they_changed() {
    use super::state::Record;
    let mut s = setup(&[(10, 1)]);
    s.enable_journal();
    let mut batch = Vec::new();
    submit(&mut s, vec![spec("a", vec![])]);
    s.journal_records_into(&mut batch);
    s.handle(started(10, "a"));
    s.handle(Input::Finished {
        worker: 10,
        results: vec![("a".into(), big(10))],
    });
    s.journal_records_into(&mut batch);
    assert!(!batch.iter().any(|r| matches!(r, Record::Stats(_))));
    s.journal_stats_into(&mut batch);
    assert!(matches!(batch.last(), Some(Record::Stats(_))), "{batch:?}");
    assert_eq!(
        batch
            .iter()
            .filter(|r| matches!(r, Record::Stats(_)))
            .count(),
        1
    );
    // Unchanged counters: nothing more.
    let mut next = Vec::new();
    s.journal_stats_into(&mut next);
    assert!(next.is_empty());
}

#[test]
fn a_rejoined_worker_reporting_a_result_it_is_computing_again_is_not_told_to_free_it() {
    // A result that lived on a worker, known after a restart by its recipe.
    let mut s = setup(&[(10, 1)]);
    submit(&mut s, vec![spec("a", vec![val(1)])]);
    s.handle(Input::Finished {
        worker: 10,
        results: vec![("a".into(), big(6000))],
    });
    let mut r = Scheduler::new().restore(s.snapshot()).unwrap();
    r.handle(Input::ClientConnected {
        client: 1,
        name: Some("cli".into()),
        session: 0,
    });
    // The worker rejoins; someone asks for the result once the rejoin
    // settled but before the worker's report of what it holds arrives, so
    // it is computed again there.
    r.handle(joined(20, 1));
    r.set_clock(super::state::REJOIN_SETTLE_MS);
    let cmds = r.handle(Input::Watch {
        reads: false,
        client: 1,
        keys: vec!["a".into()],
    });
    assert_eq!(runs(&cmds), vec![(20, "a".to_string())]);
    let cmds = r.handle(Input::WorkerHolds {
        worker: 20,
        results: vec![("a".into(), big(6000))],
        actors: vec![],
    });
    assert!(
        !cmds.iter().any(|c| matches!(c, Command::Free { .. })),
        "{cmds:?}"
    );
    // The run's result is the one kept.
    let cmds = r.handle(Input::Finished {
        worker: 20,
        results: vec![("a".into(), big(6000))],
    });
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Done { key, .. } if key == "a")),
        "{cmds:?}"
    );
}

/// `n` finished keys `d0`.. scattered by client 1 onto worker 10.
fn scattered(s: &mut Scheduler, n: usize) -> Vec<String> {
    let keys: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
    s.handle(Input::Scatter {
        session: 0,
        counted: false,
        client: 1,
        id: 1,
        values: keys
            .iter()
            .map(|k| (k.clone(), Bytes::from_static(b"x")))
            .collect(),
        broadcast: false,
        workers: vec![],
    });
    s.handle(Input::Finished {
        worker: 10,
        results: keys.iter().map(|k| (k.clone(), big(100))).collect(),
    });
    keys
}

/// Client 1 scatters the value of `key` (made by [`scattered`]) again,
/// `counted` or not.
fn scatter_again(s: &mut Scheduler, key: &str, counted: bool) -> Vec<Command> {
    s.handle(Input::Scatter {
        session: 0,
        counted,
        client: 1,
        id: 4,
        values: vec![(key.to_string(), Bytes::from_static(b"x"))],
        broadcast: false,
        workers: vec![],
    })
}

fn frees(cmds: &[Command]) -> usize {
    cmds.iter()
        .filter(|c| matches!(c, Command::Free { .. }))
        .count()
}

#[test]
fn a_big_release_goes_a_step_at_a_time_and_its_holder_waits_for_it() {
    let mut s = setup(&[(10, 1)]);
    let n = 2 * RELEASE_STEP + 100;
    let keys = scattered(&mut s, n);
    assert_eq!(s.held_keys(), n as u64);
    let cmds = s.handle(Input::Release {
        client: 1,
        keys: keys.clone(),
    });
    assert_eq!(frees(&cmds), RELEASE_STEP);
    assert_eq!(s.releasing(), n - RELEASE_STEP);
    assert_eq!(s.held_keys(), (n - RELEASE_STEP) as u64);
    // Newest first.
    assert_eq!(s.state(&keys[n - 1]), None);
    assert_eq!(s.state(&keys[0]), Some(TaskState::Finished));
    // Another client goes ahead of the rest; what the holder sends waits.
    s.handle(Input::ClientConnected {
        client: 2,
        name: Some("other".into()),
        session: 0,
    });
    assert!(s.waits(1));
    assert!(!s.waits(2));
    let cmds = s.handle(Input::Submit {
        counted: true,
        session: 0,
        client: 2,
        id: 1,
        tasks: vec![spec("o", vec![])],
    });
    assert_eq!(runs(&cmds), vec![(10, "o".to_string())]);
    assert_eq!(frees(&cmds), 0);
    assert_eq!(s.releasing(), n - RELEASE_STEP);
    assert_eq!(frees(&s.release_step()), RELEASE_STEP);
    assert_eq!(s.releasing(), 100);
    assert!(s.waits(1));
    assert_eq!(frees(&s.release_step()), 100);
    assert_eq!(s.releasing(), 0);
    assert!(!s.waits(1));
    // Then the holder's requests see its release done.
    let cmds = s.handle(Input::Watch {
        reads: false,
        client: 1,
        keys: vec![keys[0].clone()],
    });
    assert!(matches!(
        cmds[..],
        [Command::Done {
            outcome: Outcome::Unknown,
            ..
        }]
    ));
    assert_eq!(s.held_keys(), 1, "the other client's");
    assert!(s.release_step().is_empty());
}

#[test]
fn every_connection_of_a_releasing_holder_waits_for_its_release() {
    let mut s = setup(&[(10, 1)]);
    let n = RELEASE_STEP + 10;
    scattered(&mut s, n);
    s.handle(Input::ClientConnected {
        client: 3,
        name: Some("cli".into()),
        session: 0,
    });
    s.handle(Input::ClientConnected {
        client: 4,
        name: Some("else".into()),
        session: 0,
    });
    s.handle(Input::ReleaseAll { client: 1 });
    assert_eq!(s.releasing(), 10);
    // Another connection under the same name waits as well.
    assert!(s.waits(3));
    assert!(!s.waits(4));
    assert_eq!(frees(&s.finish_releases()), 10);
    assert_eq!(s.releasing(), 0);
    assert!(!s.waits(1) && !s.waits(3));
    assert_eq!(s.held_keys(), 0);
    assert_eq!(s.task_count(), 0);
}

#[test]
fn an_unnamed_clients_keys_set_aside_as_it_leaves_stay_unnamed_until_let_go() {
    let mut s = setup(&[(10, 1)]);
    s.handle(Input::ClientConnected {
        client: 4,
        name: None,
        session: 0,
    });
    let n = RELEASE_STEP + 10;
    let tasks: Vec<_> = (0..n).map(|i| spec(&format!("t{i}"), vec![])).collect();
    s.handle(Input::Submit {
        counted: true,
        session: 0,
        client: 4,
        id: 1,
        tasks,
    });
    assert_eq!(
        s.held_keys(),
        0,
        "an unnamed client's holds are not counted"
    );
    s.handle(Input::ClientDisconnected { client: 4 });
    assert_eq!(s.releasing(), 10);
    // Still the unnamed client's: not counted as named, and not kept by a
    // restart from what the journal has.
    assert_eq!(s.held_keys(), 0);
    let restored = Scheduler::new().restore(s.snapshot()).unwrap();
    assert_eq!(restored.held_keys(), 0, "a restart would keep them held");
    s.finish_releases();
    assert_eq!(s.releasing(), 0);
    assert_eq!(s.held_keys(), 0);
}

#[test]
fn holders_take_turns_at_their_big_releases() {
    let mut s = setup(&[(10, 1)]);
    // "cli" (client 1) holds enough for three steps, "other" for one and
    // a bit: the smaller release is not held up behind the bigger one.
    scattered(&mut s, 3 * RELEASE_STEP);
    s.handle(Input::ClientConnected {
        client: 2,
        name: Some("other".into()),
        session: 0,
    });
    let tasks: Vec<_> = (0..RELEASE_STEP + 10)
        .map(|i| spec(&format!("o{i}"), vec![]))
        .collect();
    s.handle(Input::Submit {
        counted: true,
        session: 0,
        client: 2,
        id: 1,
        tasks,
    });
    s.handle(Input::ReleaseAll { client: 1 });
    s.handle(Input::ReleaseAll { client: 2 });
    assert_eq!(s.releasing(), 2 * RELEASE_STEP + 10);
    assert!(s.waits(1) && s.waits(2));
    let done = s.releases_done();
    assert_eq!(frees(&s.release_step()), RELEASE_STEP, "cli's turn");
    s.release_step();
    assert!(!s.waits(2), "other's turn came before cli was done");
    assert!(s.waits(1));
    assert_eq!(s.releases_done(), done + 1);
    assert_eq!(frees(&s.release_step()), RELEASE_STEP);
    assert!(!s.waits(1));
    assert_eq!(s.releases_done(), done + 2);
    assert_eq!((s.releasing(), s.held_keys()), (0, 0));
}

#[test]
fn keys_of_a_big_release_not_yet_let_go_of_count_as_held() {
    let mut s = setup(&[(10, 1)]);
    scattered(&mut s, 2 * RELEASE_STEP + 10);
    assert_eq!(s.held_keys(), (2 * RELEASE_STEP + 10) as u64);
    s.handle(Input::ReleaseAll { client: 1 });
    assert_eq!(s.held_keys(), (RELEASE_STEP + 10) as u64);
    s.release_step();
    assert_eq!(s.held_keys(), 10);
    s.release_step();
    assert_eq!(s.held_keys(), 0);
}

#[test]
fn a_worker_lost_mid_release_does_not_compute_again_what_was_let_go_of() {
    let mut s = setup(&[(10, 1)]);
    let n = RELEASE_STEP + 10;
    let cmds = submit(
        &mut s,
        (0..n).map(|i| spec(&format!("t{i}"), vec![])).collect(),
    );
    // Every result lives only on worker 10.
    let mut to_run: std::collections::VecDeque<_> = runs(&cmds).into();
    let mut finished = 0;
    while let Some((w, key)) = to_run.pop_front() {
        to_run.extend(runs(&finish(&mut s, w, &key, big(100))));
        finished += 1;
        assert!(finished <= n, "every task ran once");
    }
    assert_eq!(finished, n);
    s.handle(joined(20, 1));
    s.handle(Input::ReleaseAll { client: 1 });
    assert_eq!(s.releasing(), 10);
    let cmds = s.handle(Input::WorkerDisconnected { worker: 10 });
    assert_eq!(runs(&cmds), vec![], "nothing computed again");
    assert_eq!((s.releasing(), s.held_keys(), s.task_count()), (0, 0, 0));
    assert!(!s.waits(1));
}

#[test]
fn cancel_without_force_spares_a_key_nobody_holds_that_others_tasks_need() {
    let mut s = setup(&[(10, 1)]);
    s.handle(Input::ClientConnected {
        client: 2,
        name: Some("other".into()),
        session: 0,
    });
    // "cli" submits x and y = f(x), then lets go of x: y still needs it.
    submit(&mut s, vec![spec("x", vec![]), spec("y", vec![fut("x")])]);
    s.handle(Input::Release {
        client: 1,
        keys: vec!["x".into()],
    });
    assert_eq!(s.state("x"), Some(TaskState::Processing));
    // Another client, holding neither, cannot cancel x (nor so y).
    let cmds = s.handle(Input::Cancel {
        client: 2,
        keys: vec!["x".into()],
        force: false,
    });
    assert!(cancelled_runs(&cmds).is_empty());
    assert_eq!(s.state("x"), Some(TaskState::Processing));
    assert_eq!(s.state("y"), Some(TaskState::Pending));
}

#[test]
fn a_task_asking_for_a_resource_amount_that_is_not_a_number_of_0_or_more_is_refused() {
    let mut s = setup(&[(10, 1)]);
    for amount in [f64::NEG_INFINITY, -1.0, f64::NAN, f64::INFINITY] {
        let mut t = spec("g", vec![]);
        t.placement.resources = vec![("GPU".into(), amount)];
        let cmds = submit(&mut s, vec![t]);
        let refused = cmds.iter().any(|c| {
            matches!(c, Command::Submitted { refused, .. }
                if refused.iter().any(|(k, why)| k == "g" && why.contains("GPU")))
        });
        assert!(refused, "{amount} was not refused: {cmds:?}");
        assert_eq!(s.state("g"), None);
    }
}

#[test]
fn a_task_that_could_not_fetch_a_finished_input_is_placed_again_a_few_times() {
    let mut s = setup(&[(10, 1), (12, 1)]);
    let cmds = submit(&mut s, vec![spec("x", vec![])]);
    let (w, _) = runs(&cmds)[0];
    finish(&mut s, w, "x", big(100));
    let cmds = submit(&mut s, vec![spec("t", vec![fut("x")])]);
    let (mut on, _) = runs(&cmds)[0];
    // Its worker could not fetch `x` (its holder died, say, and the news
    // is not here yet): sent again, with where `x` is now.
    for _ in 0..3 {
        let cmds = s.handle(erred(
            &s,
            on,
            "t",
            TaskError::new(ErrorKind::Lost, "cannot fetch x".into(), "t"),
        ));
        let again = runs(&cmds);
        assert_eq!(again.len(), 1, "not placed again: {cmds:?}");
        on = again[0].0;
    }
    // Past a few misses the error is final.
    s.handle(erred(
        &s,
        on,
        "t",
        TaskError::new(ErrorKind::Lost, "cannot fetch x".into(), "t"),
    ));
    assert_eq!(s.state("t"), Some(TaskState::Error));
}

#[test]
fn a_task_retried_after_its_scattered_input_was_released_fails_instead_of_waiting() {
    let mut s = setup(&[(10, 1)]);
    let d = scattered(&mut s, 1).remove(0);
    submit(&mut s, vec![spec("t", vec![fut(&d)])]);
    s.handle(erred(&s, 10, "t", error("t")));
    s.handle(Input::Release {
        client: 1,
        keys: vec![d.clone()],
    });
    s.handle(Input::Retry {
        client: 1,
        id: 5,
        keys: vec!["t".into()],
        limits: Default::default(),
    });
    // Nothing can bring the scattered value back: the retry ends at once.
    assert_eq!(s.state("t"), Some(TaskState::Error));
}

/// Scattered data cancelled while it was being stored has no task to run
/// again: a retry is refused, saying to scatter it again, and placing the
/// same data again stores it afresh.
#[test]
fn cancelled_scattered_data_is_scattered_again_not_retried() {
    let mut s = setup(&[(10, 1)]);
    s.handle(place(1, &["d"], false));
    s.handle(Input::Cancel {
        client: 1,
        keys: vec!["d".into()],
        force: false,
    });
    assert_eq!(s.state("d"), Some(TaskState::Cancelled));
    let cmds = s.handle(Input::Retry {
        client: 1,
        id: 3,
        keys: vec!["d".into()],
        limits: Default::default(),
    });
    assert!(runs(&cmds).is_empty(), "{cmds:?}");
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Retried { refused, .. }
            if refused.iter().any(|(k, why)| k == "d" && why.contains("scatter it again")))),
        "{cmds:?}"
    );
    let cmds = s.handle(place(5, &["d"], false));
    assert_eq!(placed_at(&cmds, "d"), vec!["w10".to_string()]);
}

/// Scattered data its holders released while a task computed from it is
/// still known cannot be brought back: a gather of it is answered at once
/// as unknown, and a submit taking it is refused, as for data no task
/// needed, where both used to wait for good. Scattering it again stores it
/// afresh.
#[test]
fn released_scattered_data_a_task_used_is_unknown_not_waited_for() {
    let mut s = setup(&[(10, 1)]);
    let d = scattered(&mut s, 1).remove(0);
    submit(&mut s, vec![spec("t", vec![fut(&d)])]);
    finish(&mut s, 10, "t", small(1));
    s.handle(Input::Release {
        client: 1,
        keys: vec![d.clone()],
    });
    let cmds = s.handle(Input::Watch {
        reads: false,
        client: 1,
        keys: vec![d.clone()],
    });
    assert!(
        matches!(
            cmds[..],
            [Command::Done {
                outcome: Outcome::Unknown,
                ..
            }]
        ),
        "{cmds:?}"
    );
    let cmds = submit(&mut s, vec![spec("u", vec![fut(&d)])]);
    let Some(Command::Submitted { refused, .. }) = cmds.last() else {
        panic!("{cmds:?}")
    };
    assert!(
        refused.len() == 1 && refused[0].1.contains("names no future"),
        "{refused:?}"
    );
    assert_eq!(s.state("u"), None);
    assert_eq!(s.state("t"), Some(TaskState::Finished));
    let cmds = s.handle(place(5, &[&d], false));
    assert_eq!(placed_at(&cmds, &d), vec!["w10".to_string()]);
}

/// A key of the form dtask gives its own (a call's, named by what it
/// computes) names one task: a submit of another call under it (a key
/// chosen as another call's pure key, or as scattered data's) is refused,
/// saying so, and a scatter of bytes under a task's key is refused too, so
/// nobody gets another call's result. The same call submitted again, with
/// a value or with the scattered data of that value, is the same task; so
/// is any submit under a key a user chose (as in Dask).
#[test]
fn a_key_names_one_task_and_another_call_under_it_is_refused() {
    let mut s = setup(&[(10, 1)]);
    // Refused: how many keys a submit's answer refuses.
    let refusals = |cmds: &[Command]| match cmds.last() {
        Some(Command::Submitted { refused, .. }) => refused.len(),
        other => panic!("{other:?}"),
    };
    // Scatters `byte` under its data key, which it returns.
    let scatter = |s: &mut Scheduler, id: u64, byte: &'static [u8]| {
        let v = Bytes::from_static(byte);
        let key = crate::key::pure_key("", "data", &[crate::protocol::Arg::Value(v.clone())]);
        s.handle(Input::Scatter {
            session: 0,
            counted: false,
            client: 1,
            id,
            values: vec![(key.clone(), v)],
            broadcast: false,
            workers: vec![],
        });
        key
    };
    let inc = "inc-0123456789abcdef0123456789abcdef";
    submit(&mut s, vec![spec(inc, vec![val(1)])]);
    let cmds = submit(&mut s, vec![spec(inc, vec![val(9)])]);
    let Some(Command::Submitted { refused, .. }) = cmds.last() else {
        panic!("{cmds:?}")
    };
    assert!(
        refused.len() == 1 && refused[0].1.contains("names another call"),
        "{refused:?}"
    );
    assert_eq!(refusals(&submit(&mut s, vec![spec(inc, vec![val(1)])])), 0);
    // A chosen key: the same future, whatever the call.
    submit(&mut s, vec![spec("mine", vec![val(1)])]);
    assert_eq!(
        refusals(&submit(&mut s, vec![spec("mine", vec![val(2)])])),
        0
    );
    // The same value, scattered: the same call.
    let data = scatter(&mut s, 2, &[7]);
    let f = "f-0123456789abcdef0123456789abcdef";
    let value = crate::protocol::Arg::Value(Bytes::from_static(&[7]));
    submit(&mut s, vec![spec(f, vec![value])]);
    assert_eq!(
        refusals(&submit(&mut s, vec![spec(f, vec![fut(&data)])])),
        0
    );
    // Another value's data is another call.
    let other = scatter(&mut s, 5, &[8]);
    assert_eq!(
        refusals(&submit(&mut s, vec![spec(f, vec![fut(&other)])])),
        1
    );
    // A call under scattered data's key, and bytes under a task's key.
    let cmds = submit(&mut s, vec![spec(&data, vec![val(1)])]);
    assert!(
        matches!(cmds.last(), Some(Command::Submitted { refused, .. })
            if refused.len() == 1 && refused[0].1.contains("scattered data")),
        "{cmds:?}"
    );
    let cmds = s.handle(Input::Scatter {
        session: 0,
        counted: false,
        client: 1,
        id: 3,
        values: vec![(inc.into(), Bytes::from_static(b"x"))],
        broadcast: false,
        workers: vec![],
    });
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Failed { message, .. }
            if message.contains("names a task"))),
        "{cmds:?}"
    );
}

/// A counted scatter (one made for a single call, released after it) of
/// data a client holds already holds it once more, also when the data was
/// lost and is stored afresh: its release leaves the earlier hold.
#[test]
fn a_counted_scatter_of_lost_data_held_already_holds_it_once_more() {
    let mut s = setup(&[(10, 1)]);
    let d = scattered(&mut s, 1).remove(0);
    s.handle(Input::WorkerDisconnected { worker: 10 });
    assert_eq!(s.state(&d), Some(TaskState::Lost));
    s.handle(joined(20, 1));
    scatter_again(&mut s, &d, true);
    s.handle(Input::Finished {
        worker: 20,
        results: vec![(d.clone(), big(100))],
    });
    let release = |s: &mut Scheduler| {
        s.handle(Input::Release {
            client: 1,
            keys: vec![d.clone()],
        })
    };
    release(&mut s);
    assert_eq!(
        s.state(&d),
        Some(TaskState::Finished),
        "the first hold stays"
    );
    release(&mut s);
    assert_eq!(s.state(&d), None, "both holds let go of");
}
