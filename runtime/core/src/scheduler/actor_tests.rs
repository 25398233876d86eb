//! Actors in the scheduler: placement, readiness, loss with their worker.

use super::state::{Command, Input, Scheduler};
use super::testing::{M, error, restarted, restored, setup};
use crate::protocol::{ActorSpec, ActorState, ErrorKind, FromScheduler};
fn spec(key: &str) -> ActorSpec {
    ActorSpec {
        key: key.into(),
        module: M.into(),
        resource: "counter".into(),
        args: vec![],
        memory_limit: None,
        call_timeout_ms: None,
    }
}

/// Client 1 asks for actor `spec` (request `id`).
fn new_actor(s: &mut Scheduler, id: u64, spec: ActorSpec) -> Vec<Command> {
    s.handle(Input::ActorNew {
        client: 1,
        id,
        spec,
    })
}

/// Client 1 asks for actor `key` (request `id`); the number of its making
/// the scheduler sent its worker.
fn made(s: &mut Scheduler, id: u64, key: &str) -> u64 {
    let cmds = new_actor(s, id, spec(key));
    cmds.iter()
        .find_map(|c| match c {
            Command::Send {
                msg: FromScheduler::NewActor { made, .. },
                ..
            } => Some(*made),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{key} was not placed: {cmds:?}"))
}

/// `worker` reports making `made` of actor `key` constructed, or its
/// constructor failed.
fn actor_started(
    s: &mut Scheduler,
    worker: u64,
    key: &str,
    made: u64,
    outcome: Result<(), crate::protocol::TaskError>,
) -> Vec<Command> {
    s.handle(Input::ActorStarted {
        worker,
        key: key.into(),
        made,
        outcome,
    })
}

/// Worker `worker` (re)joined holding these makings of actors.
fn holds(s: &mut Scheduler, worker: u64, actors: &[(&str, u64)]) -> Vec<Command> {
    s.handle(Input::WorkerHolds {
        worker,
        results: vec![],
        actors: actors.iter().map(|(k, m)| (k.to_string(), *m)).collect(),
    })
}

/// (worker, key, making) of every actor `cmds` tell a worker to drop.
fn dropped(cmds: &[Command]) -> Vec<(u64, String, u64)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Send {
                to,
                msg: FromScheduler::DropActor { key, made },
            } => Some((*to, key.clone(), *made)),
            _ => None,
        })
        .collect()
}

/// Client 1 asks where actor `key` is (request `id`); the answer, if
/// `cmds` hold one.
fn located(
    cmds: &[Command],
    id: u64,
) -> Option<Result<crate::protocol::ActorInfo, crate::protocol::TaskError>> {
    cmds.iter().find_map(|c| match c {
        Command::Send {
            to: 1,
            msg: FromScheduler::ActorLocated { id: i, result },
        } if *i == id => Some(result.clone()),
        _ => None,
    })
}

/// Client 1 asks where actor `key` is, as request `id`.
fn locate(s: &mut Scheduler, id: u64, key: &str) -> Vec<Command> {
    s.handle(Input::ActorLocate {
        client: 1,
        id,
        key: key.into(),
    })
}

/// (worker, key) of every actor the scheduler asked a worker to build.
fn built(cmds: &[Command]) -> Vec<(u64, String)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Send {
                to,
                msg: FromScheduler::NewActor { spec, .. },
            } => Some((*to, spec.key.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn actors_spread_over_the_workers() {
    let mut s = setup(&[(10, 1), (11, 1)]);
    let mut placed = Vec::new();
    for (i, k) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let cmds = new_actor(&mut s, i as u64, spec(k));
        placed.extend(built(&cmds));
    }
    let on = |w| placed.iter().filter(|(x, _)| *x == w).count();
    assert_eq!((on(10), on(11)), (2, 2), "{placed:?}");
}

#[test]
fn an_actor_is_ready_once_built_and_lost_with_its_worker() {
    let mut s = setup(&[(10, 1)]);
    let m = made(&mut s, 5, "a");
    assert!(
        s.actor_locate("a").is_ok(),
        "starting actors can be located"
    );
    let cmds = actor_started(&mut s, 10, "a", m, Ok(()));
    assert!(cmds.iter().any(|c| matches!(c,
        Command::Send { to: 1, msg: FromScheduler::ActorCreated { id: 5, result: Ok(info) } }
            if info.state == ActorState::Ready && info.address == "w10")));
    s.handle(Input::WorkerDisconnected { worker: 10 });
    let err = s.actor_locate("a").unwrap_err();
    assert_eq!(err.kind, ErrorKind::ActorLost);
    assert!(err.message.starts_with("actor lost: a"), "{err:?}");
    assert_eq!(
        s.actor_locate("nobody").unwrap_err().kind,
        ErrorKind::Input,
        "an unknown actor is not a lost one"
    );
    assert_eq!(s.actor_list()[0].state, ActorState::Lost);
    // "Create it again": under the same key, on a worker there is.
    s.handle(super::testing::joined(11, 1));
    let cmds = new_actor(&mut s, 6, spec("a"));
    assert_eq!(built(&cmds), [(11, "a".to_string())]);
}

/// An actor asking for more memory than a worker allows goes to one that
/// allows it, and is refused, saying so, when none does.
#[test]
fn an_actors_memory_limit_chooses_its_worker_or_is_refused() {
    let mut s = setup(&[(10, 1)]);
    s.handle(super::testing::joined_at(11, "w11", 1 << 30));
    let big = |key: &str, mib: u64| ActorSpec {
        memory_limit: Some(mib << 20),
        ..spec(key)
    };
    // Worker 10 holds fewer actors, but allows 256 MiB only.
    let cmds = new_actor(&mut s, 1, big("roomy", 512));
    assert_eq!(built(&cmds), [(11, "roomy".to_string())]);
    let cmds = new_actor(&mut s, 2, big("huge", 4096));
    assert!(built(&cmds).is_empty());
    assert!(
        cmds.iter().any(|c| matches!(c,
        Command::Send { to: 1, msg: FromScheduler::ActorCreated { id: 2, result: Err(e) } }
            if e.message.contains("--memory-limit-mib"))),
        "{cmds:?}"
    );
}

#[test]
fn a_failed_constructor_answers_the_error_and_forgets_the_actor() {
    let mut s = setup(&[(10, 1)]);
    let m = made(&mut s, 5, "a");
    let cmds = actor_started(&mut s, 10, "a", m, Err(error("a")));
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Send {
            to: 1,
            msg: FromScheduler::ActorCreated {
                id: 5,
                result: Err(_)
            }
        }
    )));
    assert!(s.actor_list().is_empty());
}

#[test]
fn with_no_worker_an_actor_is_refused_with_a_reason() {
    let mut s = setup(&[]);
    let cmds = new_actor(&mut s, 5, spec("a"));
    assert!(cmds.iter().any(|c| matches!(c,
        Command::Send { to: 1, msg: FromScheduler::ActorCreated { result: Err(e), .. } }
            if e.message.contains("no worker"))));
}

#[test]
fn a_worker_out_of_pooled_instances_gets_no_new_actor() {
    let mut s = setup(&[(10, 1), (11, 1)]);
    s.handle(Input::WorkerStarved {
        worker: 10,
        starved: true,
    });
    let cmds = new_actor(&mut s, 1, spec("a"));
    assert_eq!(built(&cmds), vec![(11, "a".to_string())]);
}

/// Actors outlive a scheduler restart: restored from the journal's
/// records as lost, they take calls again once a worker that rejoins says
/// it holds them; one deleted meanwhile is dropped there, and one deleted
/// before the restart stays gone.
#[test]
fn actors_are_restored_lost_and_taken_back_by_the_worker_that_holds_them() {
    let mut s = setup(&[(10, 1)]);
    s.enable_journal();
    let mut makings = Vec::new();
    for (i, k) in ["a", "b", "gone"].into_iter().enumerate() {
        let m = made(&mut s, i as u64, k);
        actor_started(&mut s, 10, k, m, Ok(()));
        makings.push(m);
    }
    s.handle(Input::ActorDelete { key: "gone".into() });
    let mut r = restarted(&mut s);
    for k in ["a", "b"] {
        let err = r.actor_locate(k).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ActorLost, "{k}: {err:?}");
    }
    assert_eq!(r.actor_locate("gone").unwrap_err().kind, ErrorKind::Input);
    r.handle(super::testing::joined(20, 1));
    let cmds = holds(&mut r, 20, &[("a", makings[0]), ("gone", makings[2])]);
    let ready = r.actor_locate("a").expect("held again");
    assert_eq!(
        (ready.state, ready.address.as_str()),
        (ActorState::Ready, "w20")
    );
    assert_eq!(r.actor_locate("b").unwrap_err().kind, ErrorKind::ActorLost);
    assert_eq!(dropped(&cmds), [(20, "gone".to_string(), makings[2])]);
    // The same through a snapshot.
    let again = Scheduler::new().restore(r.snapshot()).unwrap();
    assert_eq!(again.actor_list().len(), 2);
}

/// A caller asking for a restored actor before its worker rejoined is
/// not told "lost" at once: it is answered where the actor is once the
/// worker says it holds it, or "lost" once the rejoin settles without
/// it, or once the rejoin window closes with no worker at all.
#[test]
fn a_restored_actor_is_located_once_its_worker_rejoins_or_lost_once_the_rejoin_settles() {
    let mut s = setup(&[(10, 1)]);
    s.enable_journal();
    let ma = made(&mut s, 1, "a");
    actor_started(&mut s, 10, "a", ma, Ok(()));
    let mb = made(&mut s, 2, "b");
    actor_started(&mut s, 10, "b", mb, Ok(()));

    let mut r = restarted(&mut s);
    r.set_clock(1_000);
    assert_eq!(located(&locate(&mut r, 7, "a"), 7), None, "waits for a");
    assert_eq!(located(&locate(&mut r, 8, "b"), 8), None, "waits for b");
    let refused = r.handle(Input::ActorNew {
        client: 1,
        id: 9,
        spec: spec("b"),
    });
    assert!(built(&refused).is_empty(), "{refused:?}");
    // A fresh worker joins (the rejoin begins), then the one holding "a".
    r.handle(super::testing::joined(20, 1));
    r.handle(super::testing::joined(21, 1));
    let cmds = holds(&mut r, 21, &[("a", ma)]);
    let a = located(&cmds, 7).expect("answered").expect("found");
    assert_eq!((a.state, a.address.as_str()), (ActorState::Ready, "w21"));
    assert_eq!(located(&cmds, 8), None, "b's worker may yet rejoin");
    // A second later the rejoin has settled: "b" is lost, and may be made again.
    r.set_clock(2_000);
    let cmds = r.handle(Input::WorkerStarved {
        worker: 20,
        starved: false,
    });
    let b = located(&cmds, 8).expect("answered").unwrap_err();
    assert_eq!(b.kind, ErrorKind::ActorLost, "{b:?}");
    assert_eq!(
        located(&locate(&mut r, 10, "b"), 10)
            .unwrap()
            .unwrap_err()
            .kind,
        ErrorKind::ActorLost
    );
    assert_eq!(built(&new_actor(&mut r, 11, spec("b"))).len(), 1);

    // With no worker at all, the rejoin window closing answers.
    let mut r = restored(&s);
    assert_eq!(located(&locate(&mut r, 12, "a"), 12), None);
    let cmds = r.handle(Input::RejoinWindowClosed);
    let a = located(&cmds, 12).expect("answered").unwrap_err();
    assert_eq!(a.kind, ErrorKind::ActorLost);
}

/// An actor made again on another worker while its first worker was cut
/// off keeps its key across a restart whichever worker rejoins first: the
/// older copy, reported by its making's number, is dropped.
#[test]
fn an_older_copy_of_an_actor_made_again_is_dropped_after_a_restart() {
    let mut s = setup(&[(10, 1), (11, 1)]);
    s.enable_journal();
    let first = made(&mut s, 1, "a");
    actor_started(&mut s, 10, "a", first, Ok(()));
    s.handle(Input::WorkerDisconnected { worker: 10 });
    s.set_clock(5);
    let second = made(&mut s, 2, "a");
    assert_ne!(first, second);
    actor_started(&mut s, 11, "a", second, Ok(()));

    let mut r = restarted(&mut s);
    r.handle(super::testing::joined(10, 1));
    let cmds = holds(&mut r, 10, &[("a", first)]);
    assert_eq!(dropped(&cmds), [(10, "a".to_string(), first)]);
    assert!(r.actor_locate("a").is_err(), "still waiting for its worker");
    r.handle(super::testing::joined(11, 1));
    let cmds = holds(&mut r, 11, &[("a", second)]);
    assert!(dropped(&cmds).is_empty(), "{cmds:?}");
    assert_eq!(r.actor_locate("a").expect("held").address, "w11");
    // A making numbered after the restart is newer than both.
    r.set_clock(1);
    r.handle(Input::ActorDelete { key: "a".into() });
    assert!(made(&mut r, 3, "a") > second);
}

/// A late report of an actor's earlier making (deleted and made again on
/// the same worker meanwhile) neither readies nor replaces the new one:
/// that copy is dropped, by its number.
#[test]
fn a_late_report_of_an_earlier_making_drops_that_copy_only() {
    let mut s = setup(&[(10, 1)]);
    let first = made(&mut s, 1, "a");
    s.handle(Input::ActorDelete { key: "a".into() });
    let second = made(&mut s, 2, "a");
    let cmds = actor_started(&mut s, 10, "a", first, Ok(()));
    assert_eq!(dropped(&cmds), [(10, "a".to_string(), first)]);
    assert_eq!(s.actor_list()[0].state, ActorState::Starting);
    actor_started(&mut s, 10, "a", second, Ok(()));
    assert_eq!(s.actor_list()[0].state, ActorState::Ready);
}

/// A worker that rejoins before its old connection is seen to close (a
/// new id, the same process: the same data address) keeps its actors: its
/// `Holding` does not drop them, nor is a late constructor's report lost.
#[test]
fn a_worker_rejoining_before_its_old_connection_closed_keeps_its_actors() {
    let mut s = setup(&[(10, 1)]);
    let ready = made(&mut s, 0, "ready");
    let late = made(&mut s, 1, "late");
    actor_started(&mut s, 10, "ready", ready, Ok(()));
    // The same process as worker 10, under a new id.
    s.handle(super::testing::joined_at(11, "w10", 256 << 20));
    let cmds = holds(&mut s, 11, &[("ready", ready)]);
    assert!(dropped(&cmds).is_empty(), "{cmds:?}");
    actor_started(&mut s, 11, "late", late, Ok(()));
    // The old connection closes: both live on under the new id.
    s.handle(Input::WorkerDisconnected { worker: 10 });
    for k in ["ready", "late"] {
        let a = s.actor_locate(k).unwrap_or_else(|e| panic!("{k}: {e:?}"));
        assert_eq!(a.state, ActorState::Ready, "{k}");
    }
}

/// An actor still being built when the scheduler restarted is taken when
/// its worker, having rejoined, reports it built: callers waiting to
/// locate it are answered where it is, not "lost".
#[test]
fn an_actor_built_after_the_restart_is_taken_from_its_report() {
    let mut s = setup(&[(10, 1)]);
    s.enable_journal();
    let m = made(&mut s, 1, "slow");
    let mut r = restarted(&mut s);
    assert_eq!(located(&locate(&mut r, 4, "slow"), 4), None);
    r.handle(super::testing::joined_at(20, "w10", 256 << 20));
    holds(&mut r, 20, &[]);
    let cmds = actor_started(&mut r, 20, "slow", m, Ok(()));
    assert!(dropped(&cmds).is_empty(), "{cmds:?}");
    let found = located(&cmds, 4).expect("answered").expect("found");
    assert_eq!(
        (found.state, found.address.as_str()),
        (ActorState::Ready, "w10")
    );
}

/// A worker that rejoins (the same process) holding an actor whose
/// "ready" report was lost with its old connection finishes its making:
/// the `actor new` waiting is answered.
#[test]
fn a_held_actor_still_starting_is_ready_and_its_maker_answered() {
    let mut s = setup(&[(10, 1)]);
    let m = made(&mut s, 3, "a");
    s.handle(super::testing::joined_at(11, "w10", 256 << 20));
    let cmds = holds(&mut s, 11, &[("a", m)]);
    assert!(
        cmds.iter().any(|c| matches!(c,
            Command::Send { to: 1, msg: FromScheduler::ActorCreated { id: 3, result: Ok(info) } }
                if info.state == ActorState::Ready)),
        "{cmds:?}"
    );
    // A trap reported for another making does not break this one.
    s.handle(Input::ActorBroken {
        worker: 11,
        key: "a".into(),
        made: m + 1,
    });
    assert_eq!(s.actor_list()[0].state, ActorState::Ready);
}
