//! Work stealing, driven directly through `handle`: which tasks an idle
//! worker is given from a busy one's queue, and when.

use super::state::{Command, Input, Scheduler};
use super::testing::{finish, runs, setup, small, spec, started, submit, val};
use crate::protocol::{TaskSpec, TaskState};

/// A task of `function` that prefers worker 10 (`--workers worker-10
/// --allow-other-workers`, or without `loose`, must run there).
fn on_10(key: &str, function: &str, loose: bool) -> TaskSpec {
    let mut t = spec(key, vec![val(key.len() as u8)]);
    t.function = function.into();
    t.placement.workers = vec!["worker-10".into()];
    t.placement.allow_other_workers = loose;
    t
}

/// (worker asked, keys) of every steal request.
fn steals(cmds: &[Command]) -> Vec<(u64, Vec<String>)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Steal { worker, keys } => Some((*worker, keys.clone())),
            _ => None,
        })
        .collect()
}

fn stolen(s: &mut Scheduler, worker: u64, keys: &[&str]) -> Vec<Command> {
    s.handle(Input::Stolen {
        worker,
        keys: keys.iter().map(|k| k.to_string()).collect(),
    })
}

/// A heartbeat from the idle worker 11, which has nothing in hand.
fn heartbeat() -> Input {
    super::testing::beat(11)
}

fn string(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

#[test]
fn an_idle_worker_is_given_the_tasks_that_would_run_last_on_a_busy_one() {
    let mut s = setup(&[(10, 1), (11, 1)]);
    s.set_clock(1_000);
    let tasks = ["a", "b", "c", "d", "e"].map(|k| on_10(k, "f", true));
    let cmds = submit(&mut s, tasks.to_vec());
    assert_eq!(runs(&cmds).len(), 5);
    assert!(runs(&cmds).iter().all(|(w, _)| *w == 10));
    // Four wait behind `a` on 10 while 11 idles: half of them, the latest
    // submitted first, are asked back at once (how long `f` runs is not
    // known yet).
    assert_eq!(steals(&cmds), vec![(10, string(&["e", "d"]))]);
    assert_eq!(s.totals().stolen, 0);
    s.handle(started(10, "a"));
    // `d` began meanwhile (say): only `e` comes back, and goes to 11.
    s.handle(started(10, "d"));
    let cmds = stolen(&mut s, 10, &["e"]);
    assert_eq!(runs(&cmds), vec![(11, "e".to_string())]);
    assert_eq!(s.totals().stolen, 1);
    for (w, k) in [(10, "a"), (10, "d"), (11, "e"), (10, "b"), (10, "c")] {
        finish(&mut s, w, k, small(1));
    }
    for k in ["a", "b", "c", "d", "e"] {
        assert_eq!(s.state(k), Some(TaskState::Finished), "{k}");
    }
}

#[test]
fn a_second_idle_worker_turns_to_the_next_busy_one_when_the_busiest_has_nothing_to_give() {
    let mut s = setup(&[(10, 1), (11, 1), (12, 1), (13, 1)]);
    s.set_clock(1_000);
    // Three wait on 10 that must run there: nothing to move.
    let cmds = submit(
        &mut s,
        ["long", "a", "b", "c"]
            .map(|k| on_10(k, "f", false))
            .to_vec(),
    );
    assert!(steals(&cmds).is_empty());
    // One waits on 12 that may run anywhere.
    let on_12 = |k: &str| {
        let mut t = on_10(k, "f", true);
        t.placement.workers = vec!["worker-12".into()];
        t
    };
    s.set_clock(1_001);
    let cmds = submit(&mut s, vec![on_12("x"), on_12("y")]);
    assert!(runs(&cmds).iter().all(|(w, _)| *w == 12));
    // 11 looks at 10 (the longest queue) and finds nothing it may take;
    // 13 then looks at 12, not at 10 again.
    assert_eq!(steals(&cmds), vec![(12, string(&["y"]))]);
}

#[test]
fn short_tasks_move_only_once_the_busy_queue_stalls() {
    let mut s = setup(&[(10, 1), (11, 1)]);
    s.set_clock(1_000);
    // `f` is known to take no time.
    submit(&mut s, vec![on_10("warm", "f", true)]);
    s.handle(started(10, "warm"));
    finish(&mut s, 10, "warm", small(1));
    // A long run holds 10's slot; three short tasks queue behind it.
    let mut tasks = vec![on_10("long", "g", false)];
    tasks.extend(["a", "b", "c"].map(|k| on_10(k, "f", true)));
    let cmds = submit(&mut s, tasks);
    s.handle(started(10, "long"));
    assert!(steals(&cmds).is_empty());
    // Not yet stalled.
    s.set_clock(1_003);
    assert!(steals(&s.handle(heartbeat())).is_empty());
    // Nothing began there for 10 ms: the queue is stalled behind `long`.
    s.set_clock(1_010);
    let cmds = s.handle(heartbeat());
    assert_eq!(steals(&cmds), vec![(10, string(&["c", "b"]))]);
    // One request at a time per busy worker, and per idle one.
    s.set_clock(1_020);
    assert!(steals(&s.handle(heartbeat())).is_empty());
    let cmds = stolen(&mut s, 10, &["c", "b"]);
    assert_eq!(
        runs(&cmds),
        vec![(11, "c".to_string()), (11, "b".to_string())]
    );
}

#[test]
fn a_task_that_must_run_where_it_is_stays() {
    let mut s = setup(&[(10, 1), (11, 1)]);
    s.set_clock(1_000);
    let cmds = submit(
        &mut s,
        ["long", "a", "b"].map(|k| on_10(k, "f", false)).to_vec(),
    );
    assert!(steals(&cmds).is_empty());
    s.handle(started(10, "long"));
    for t in [2_000, 60_000] {
        s.set_clock(t);
        assert!(steals(&s.handle(heartbeat())).is_empty());
    }
}

#[test]
fn tasks_given_back_for_a_worker_that_left_are_placed_afresh() {
    let mut s = setup(&[(10, 1), (11, 1)]);
    s.set_clock(1_000);
    let cmds = submit(
        &mut s,
        ["a", "b", "c"].map(|k| on_10(k, "f", true)).to_vec(),
    );
    assert_eq!(steals(&cmds), vec![(10, string(&["c"]))]);
    s.handle(Input::WorkerDisconnected { worker: 11 });
    let cmds = stolen(&mut s, 10, &["c"]);
    assert_eq!(runs(&cmds), vec![(10, "c".to_string())]);
    for k in ["a", "b", "c"] {
        finish(&mut s, 10, k, small(1));
        assert_eq!(s.state(k), Some(TaskState::Finished));
    }
}

#[test]
fn an_answer_for_a_task_no_longer_queued_there_changes_nothing() {
    let mut s = setup(&[(10, 1), (11, 1)]);
    s.set_clock(1_000);
    let cmds = submit(
        &mut s,
        ["a", "b", "c"].map(|k| on_10(k, "f", true)).to_vec(),
    );
    assert_eq!(steals(&cmds), vec![(10, string(&["c"]))]);
    // It ran and finished on 10 before a confused answer names it.
    s.handle(started(10, "c"));
    finish(&mut s, 10, "c", small(3));
    let cmds = stolen(&mut s, 10, &["c", "nonsense"]);
    assert!(runs(&cmds).is_empty());
    assert_eq!(s.state("c"), Some(TaskState::Finished));
    assert_eq!(s.totals().stolen, 0);
}

#[test]
fn an_answer_nobody_asked_for_moves_nothing() {
    let mut s = setup(&[(10, 1), (11, 1)]);
    s.set_clock(1_000);
    let cmds = submit(
        &mut s,
        ["a", "b", "c"].map(|k| on_10(k, "f", true)).to_vec(),
    );
    assert_eq!(steals(&cmds), vec![(10, string(&["c"]))]);
    let cmds = stolen(&mut s, 10, &["c"]);
    assert_eq!(runs(&cmds), vec![(11, "c".to_string())]);
    // The same answer again (sent before a connection broke, say, and
    // arriving late): no request is outstanding, so `b` stays where it is.
    let cmds = stolen(&mut s, 10, &["b"]);
    assert!(runs(&cmds).is_empty());
    assert_eq!(s.totals().stolen, 1);
    for (w, k) in [(10, "a"), (10, "b"), (11, "c")] {
        finish(&mut s, w, k, small(1));
        assert_eq!(s.state(k), Some(TaskState::Finished), "{k}");
    }
}

#[test]
fn a_task_given_back_after_its_input_was_lost_waits_for_the_input_again() {
    let mut s = setup(&[(10, 1), (11, 1), (12, 1)]);
    s.set_clock(1_000);
    // `x`'s result lives only on 12.
    let mut x = on_10("x", "f", true);
    x.placement.workers = vec!["worker-12".into()];
    assert_eq!(runs(&submit(&mut s, vec![x])), vec![(12, "x".to_string())]);
    finish(&mut s, 12, "x", super::testing::big(100));
    // Tasks on `x` queue on 10 behind a long one, while 11 idles: some
    // are asked back for 11.
    submit(&mut s, vec![on_10("long", "g", false)]);
    s.handle(started(10, "long"));
    let deps: Vec<TaskSpec> = ["a", "b", "c", "d"]
        .map(|k| {
            let mut t = on_10(k, "f", true);
            t.args = vec![super::testing::fut("x")];
            t
        })
        .to_vec();
    let mut asked = steals(&submit(&mut s, deps));
    for t in 1..100 {
        if !asked.is_empty() {
            break;
        }
        s.set_clock(1_000 + 100 * t);
        asked = steals(&s.handle(heartbeat()));
    }
    assert_eq!(asked.len(), 1, "no steal asked for");
    let (victim, keys) = asked[0].clone();
    assert_eq!(victim, 10);
    // 12 dies before 10 answers: `x` is computed again.
    s.handle(Input::WorkerDisconnected { worker: 12 });
    let back: Vec<&str> = keys.iter().map(String::as_str).collect();
    let cmds = stolen(&mut s, 10, &back);
    // What came back waits for `x` rather than run without it.
    for k in &keys {
        assert_eq!(s.state(k), Some(TaskState::Pending), "{k}: {cmds:?}");
    }
    let x_on = runs(&cmds)
        .into_iter()
        .chain(runs(&s.handle(heartbeat())))
        .find(|(_, k)| k == "x");
    let (w, _) = x_on.unwrap_or((11, "x".into()));
    let cmds = finish(&mut s, w, "x", super::testing::big(100));
    let moved: Vec<String> = runs(&cmds).into_iter().map(|(_, k)| k).collect();
    assert!(!moved.is_empty(), "nothing ran once x was back: {cmds:?}");
}

#[test]
fn a_worker_starved_of_instances_takes_no_tasks_and_gives_back_those_queued() {
    let starved = |worker, starved| Input::WorkerStarved { worker, starved };
    let mut s = setup(&[(10, 1), (11, 1)]);
    s.set_clock(1_000);
    // A task on 10 waits in a host call, its slot given back (its instance
    // kept).
    submit(&mut s, vec![on_10("parent", "p", false)]);
    s.handle(started(10, "parent"));
    s.handle(Input::Seceded {
        worker: 10,
        key: "parent".into(),
    });
    // 10 and 11 both idle: the lowest id takes the next task.
    let cmds = submit(&mut s, vec![spec("x", vec![val(1)])]);
    assert_eq!(runs(&cmds), vec![(10, "x".to_string())]);
    // It cannot begin there: 10 has no instance free. It is asked back at
    // once, whatever its runs take, and goes to 11.
    let cmds = s.handle(starved(10, true));
    assert_eq!(steals(&cmds), vec![(10, string(&["x"]))]);
    let cmds = stolen(&mut s, 10, &["x"]);
    assert_eq!(runs(&cmds), vec![(11, "x".to_string())]);
    // While starved, 10 takes nothing, though it is the less loaded.
    let cmds = submit(&mut s, vec![spec("y", vec![val(2)])]);
    assert_eq!(runs(&cmds), vec![(11, "y".to_string())]);
    // Both starved: tasks wait here, and go as one says it can begin them.
    s.handle(starved(11, true));
    let cmds = submit(&mut s, vec![spec("z", vec![val(3)])]);
    assert!(runs(&cmds).is_empty(), "{cmds:?}");
    let cmds = s.handle(starved(10, false));
    assert_eq!(runs(&cmds), vec![(10, "z".to_string())]);
}
