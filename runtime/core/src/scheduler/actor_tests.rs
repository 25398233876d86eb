//! Actors in the scheduler: placement, readiness, loss with their worker.

use super::state::{Command, Input, Scheduler};
use super::testing::{M, error, setup};
use crate::protocol::{ActorSpec, ActorState, ErrorKind, FromScheduler};
fn spec(key: &str) -> ActorSpec {
    ActorSpec {
        key: key.into(),
        module: M.into(),
        resource: "counter".into(),
        args: vec![],
        memory_limit: None,
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

/// `worker` reports actor `key` constructed, or its constructor failed.
fn actor_started(
    s: &mut Scheduler,
    worker: u64,
    key: &str,
    outcome: Result<(), crate::protocol::TaskError>,
) -> Vec<Command> {
    s.handle(Input::ActorStarted {
        worker,
        key: key.into(),
        outcome,
    })
}

/// (worker, key) of every actor the scheduler asked a worker to build.
fn built(cmds: &[Command]) -> Vec<(u64, String)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Send {
                to,
                msg: FromScheduler::NewActor { spec },
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
    new_actor(&mut s, 5, spec("a"));
    assert!(
        s.actor_locate("a").is_ok(),
        "starting actors can be located"
    );
    let cmds = actor_started(&mut s, 10, "a", Ok(()));
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
    new_actor(&mut s, 5, spec("a"));
    let cmds = actor_started(&mut s, 10, "a", Err(error("a")));
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
/// records as lost (a call says so), they take calls again once a worker
/// that rejoins says it holds them; one deleted meanwhile is dropped
/// there, and one deleted before the restart stays gone.
#[test]
fn actors_are_restored_lost_and_taken_back_by_the_worker_that_holds_them() {
    use super::state::Model;
    let mut s = setup(&[(10, 1)]);
    s.enable_journal();
    for (i, k) in ["a", "b", "gone"].into_iter().enumerate() {
        new_actor(&mut s, i as u64, spec(k));
        actor_started(&mut s, 10, k, Ok(()));
    }
    s.handle(Input::ActorDelete { key: "gone".into() });
    let mut model = Model::default();
    for r in s.journal_records() {
        model.apply(r);
    }
    let mut r = Scheduler::new().restore(model.into_snapshot()).unwrap();
    for k in ["a", "b"] {
        let err = r.actor_locate(k).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ActorLost, "{k}: {err:?}");
    }
    assert_eq!(r.actor_locate("gone").unwrap_err().kind, ErrorKind::Input);
    r.handle(Input::ModuleStored { hash: M.into() });
    r.handle(super::testing::joined(20, 1));
    let cmds = r.handle(Input::WorkerHolds {
        worker: 20,
        results: vec![],
        actors: vec!["a".into(), "gone".into()],
    });
    let ready = r.actor_locate("a").expect("held again");
    assert_eq!(
        (ready.state, ready.address.as_str()),
        (ActorState::Ready, "w20")
    );
    assert_eq!(r.actor_locate("b").unwrap_err().kind, ErrorKind::ActorLost);
    assert!(cmds.iter().any(|c| matches!(c,
        Command::Send { to: 20, msg: FromScheduler::DropActor { key } } if key == "gone")));
    // The same through a snapshot.
    let again = Scheduler::new().restore(r.snapshot()).unwrap();
    assert_eq!(again.actor_list().len(), 2);
}

/// A worker that rejoins before its old connection is seen to close (a
/// new id, the same process: the same data address) keeps its actors: its
/// `Holding` does not drop them, nor is a late constructor's report lost.
#[test]
fn a_worker_rejoining_before_its_old_connection_closed_keeps_its_actors() {
    let mut s = setup(&[(10, 1)]);
    for (i, k) in ["ready", "late"].into_iter().enumerate() {
        new_actor(&mut s, i as u64, spec(k));
    }
    actor_started(&mut s, 10, "ready", Ok(()));
    // The same process as worker 10, under a new id.
    s.handle(super::testing::joined_at(11, "w10", 256 << 20));
    let cmds = s.handle(Input::WorkerHolds {
        worker: 11,
        results: vec![],
        actors: vec!["ready".into()],
    });
    assert!(
        !cmds.iter().any(|c| matches!(
            c,
            Command::Send {
                msg: FromScheduler::DropActor { .. },
                ..
            }
        )),
        "{cmds:?}"
    );
    actor_started(&mut s, 11, "late", Ok(()));
    // The old connection closes: both live on under the new id.
    s.handle(Input::WorkerDisconnected { worker: 10 });
    for k in ["ready", "late"] {
        let a = s.actor_locate(k).unwrap_or_else(|e| panic!("{k}: {e:?}"));
        assert_eq!(a.state, ActorState::Ready, "{k}");
    }
}
