//! Actors in the scheduler: which worker holds each one and whether it is
//! up. The scheduler places and registers actors; their method calls never
//! come here (they go straight to the worker).
//!
//! Rules: an actor goes to the worker holding the fewest actors (then the
//! least busy); it is `Starting` until its worker reports its constructor
//! done, then `Ready`; when its worker dies it becomes `Lost`, and stays
//! listed so callers learn what happened instead of "unknown".
//!
//! Each making of an actor has a number no other making had (its `made`),
//! which its worker reports it by: a copy of an older making of the same
//! key (its worker was cut off, and the actor made again elsewhere) is told
//! apart and dropped. After a restart, restored actors are lost until the
//! worker holding them rejoins; a caller asking meanwhile waits until the
//! rejoin settles, as restored results do.

use super::{ClientId, Command, Record, Scheduler, WorkerId};
use crate::protocol::{ActorInfo, ActorSpec, ActorState, ErrorKind, FromScheduler, TaskError};
use rustc_hash::FxHashMap as HashMap;

/// One actor's record.
#[derive(Debug)]
pub(super) struct Actor {
    resource: String,
    module: String,
    worker: WorkerId,
    /// Data address of its worker, kept after the worker is gone.
    address: String,
    state: ActorState,
    /// Which making of the actor this is (0: restored from a journal
    /// written before makings were numbered; any copy is taken).
    made: u64,
    /// Restored from the journal, and neither has a worker said it holds
    /// it nor has the rejoin settled: callers asking wait.
    restored: bool,
    /// Who waits for its construction: (client, request).
    waiting: Vec<(ClientId, u64)>,
    /// Who waits to learn where it lives, while it is restored and its
    /// worker may yet rejoin: (client, request).
    locating: Vec<(ClientId, u64)>,
}

impl Actor {
    /// Whether it lives on the process of `worker`, whose data address is
    /// `address`: that worker, or the same process under another id (it
    /// rejoined before its old connection was seen to close).
    fn lives_on(&self, worker: WorkerId, address: &str) -> bool {
        self.worker == worker || self.address == address
    }

    /// Whether a copy of making `made` is this making of the actor.
    fn is_making(&self, made: u64) -> bool {
        self.made == made || self.made == 0
    }
}

/// Every actor, by key.
pub(super) type Actors = HashMap<String, Actor>;

impl Scheduler {
    /// Places and constructs an actor; answers once it is constructed.
    pub(super) fn actor_new(
        &mut self,
        client: ClientId,
        id: u64,
        spec: ActorSpec,
        out: &mut Vec<Command>,
    ) {
        let fail = |message: String| FromScheduler::ActorCreated {
            id,
            result: Err(TaskError {
                kind: ErrorKind::Module,
                message,
                stderr: String::new(),
                backtrace: String::new(),
                origin: spec.key.clone(),
            }),
        };
        // A lost actor's key may be taken again: "create it again".
        match self.actors.get(&spec.key) {
            Some(a) if a.restored => {
                let why = format!(
                    "an actor called {} was restored from the journal and its worker may yet \
                     rejoin; try again in a few seconds",
                    spec.key
                );
                return out.push(send(client, fail(why)));
            }
            Some(a) if a.state != ActorState::Lost => {
                let why = format!("an actor called {} exists already", spec.key);
                return out.push(send(client, fail(why)));
            }
            _ => {}
        }
        if let Some(Err(why)) = spec.memory_limit.map(|m| self.memory_fits(m)) {
            return out.push(send(client, fail(why)));
        }
        if !self.modules.contains(&spec.module) {
            let why = format!("module {} was never uploaded to the scheduler", spec.module);
            return out.push(send(client, fail(why)));
        }
        let mut per_worker: HashMap<WorkerId, usize> = HashMap::default();
        for a in self.actors.values() {
            if a.state != ActorState::Lost {
                *per_worker.entry(a.worker).or_default() += 1;
            }
        }
        let chosen = self
            .workers
            .iter()
            .filter(|(_, w)| spec.memory_limit.is_none_or(|m| m <= w.memory_limit))
            // A worker out of pooled instances last: the actor would wait
            // there for one.
            .min_by_key(|(id, w)| {
                (
                    w.starved,
                    per_worker.get(id).copied().unwrap_or(0),
                    w.load(),
                    **id,
                )
            })
            .map(|(id, w)| (*id, w.data_addr.clone()));
        let Some((worker, address)) = chosen else {
            let why = "no worker is connected to hold the actor; start one".to_string();
            return out.push(send(client, fail(why)));
        };
        // Unique across restarts too: the clock's milliseconds, scaled, or
        // one past the last number when makings come faster than that.
        let made = (self.actors_made + 1).max(self.activity.now_ms.saturating_mul(1024));
        self.actors_made = made;
        self.actors.insert(
            spec.key.clone(),
            Actor {
                resource: spec.resource.clone(),
                module: spec.module.clone(),
                worker,
                address,
                state: ActorState::Starting,
                made,
                restored: false,
                waiting: vec![(client, id)],
                locating: Vec::new(),
            },
        );
        self.journal_actor(&spec.key);
        out.push(send(worker, FromScheduler::NewActor { spec, made }));
    }

    /// A worker reports an actor constructed, or its constructor failed.
    pub(super) fn actor_started(
        &mut self,
        worker: WorkerId,
        key: &str,
        made: u64,
        outcome: Result<(), TaskError>,
        out: &mut Vec<Command>,
    ) {
        let drop_it = FromScheduler::DropActor {
            key: key.to_string(),
            made,
        };
        let Some(actor) = self.actors.get_mut(key).filter(|a| a.made == made) else {
            // Deleted while starting, or made again since.
            if outcome.is_ok() {
                out.push(send(worker, drop_it));
            }
            return;
        };
        let address = self.workers.get(&worker).map(|w| w.data_addr.clone());
        // Its worker may have rejoined since it was sent there (the same
        // process); or the scheduler restarted while it was being built,
        // and this making is the one the journal names.
        let on = match &address {
            Some(a) => actor.lives_on(worker, a),
            None => actor.worker == worker,
        };
        let restored = actor.state == ActorState::Lost && made != 0 && address.is_some();
        if !on && !restored {
            if outcome.is_ok() {
                out.push(send(worker, drop_it));
            }
            return;
        }
        actor.worker = worker;
        if let Some(a) = address {
            actor.address = a;
        }
        actor.restored = false;
        let waiting = std::mem::take(&mut actor.waiting);
        let locating = std::mem::take(&mut actor.locating);
        let result = match outcome {
            Ok(()) => {
                actor.state = ActorState::Ready;
                Ok(info(key, actor))
            }
            Err(e) => {
                self.actors.remove(key);
                self.journal_actor(key);
                Err(e)
            }
        };
        for (client, id) in waiting {
            let result = result.clone();
            out.push(send(client, FromScheduler::ActorCreated { id, result }));
        }
        for (client, id) in locating {
            let result = match &result {
                Ok(found) => Ok(found.clone()),
                Err(_) => self.actor_locate(key),
            };
            out.push(send(client, FromScheduler::ActorLocated { id, result }));
        }
    }

    /// A worker that (re)joined holds the actors `keys`: a lost one (its
    /// worker's connection broke, or the scheduler restarted) takes calls
    /// there again, and one still listed on the same process (the same
    /// data address: it rejoined before its old connection was seen to
    /// close) is its again; one deleted, or made again elsewhere,
    /// meanwhile goes.
    pub(super) fn actors_held(
        &mut self,
        worker: WorkerId,
        keys: Vec<(String, u64)>,
        out: &mut Vec<Command>,
    ) {
        let Some(address) = self.workers.get(&worker).map(|w| w.data_addr.clone()) else {
            return;
        };
        for (key, made) in keys {
            let adopt = match self.actors.get(&key) {
                Some(a) if a.state == ActorState::Lost && a.is_making(made) => true,
                Some(a) if a.is_making(made) && a.lives_on(worker, &address) => {
                    // Still starting, its report lost with the old
                    // connection: it is built, since it is held.
                    a.state == ActorState::Starting
                }
                _ => {
                    out.push(send(worker, FromScheduler::DropActor { key, made }));
                    continue;
                }
            };
            let a = self.actors.get_mut(&key).expect("found above");
            a.worker = worker;
            if !adopt {
                continue;
            }
            let renumbered = a.made != made;
            a.address = address.clone();
            a.state = ActorState::Ready;
            a.made = made;
            a.restored = false;
            let found = info(&key, a);
            let waiting = std::mem::take(&mut a.waiting);
            for (client, id) in std::mem::take(&mut a.locating) {
                let result = Ok(found.clone());
                out.push(send(client, FromScheduler::ActorLocated { id, result }));
            }
            for (client, id) in waiting {
                let result = Ok(found.clone());
                out.push(send(client, FromScheduler::ActorCreated { id, result }));
            }
            if renumbered {
                // A journal from before makings were numbered: it names
                // this one now.
                self.journal_actor(&key);
            }
        }
    }

    /// A client asks where actor `key` lives: answered now, or, while it
    /// is restored and its worker may yet rejoin, once that is settled.
    pub(super) fn actor_locate_for(
        &mut self,
        client: ClientId,
        id: u64,
        key: &str,
        out: &mut Vec<Command>,
    ) {
        if let Some(a) = self.actors.get_mut(key)
            && a.restored
        {
            return a.locating.push((client, id));
        }
        let result = self.actor_locate(key);
        out.push(send(client, FromScheduler::ActorLocated { id, result }));
    }

    /// The rejoin after a restore has settled: restored actors no worker
    /// said it holds are lost, and whoever asked where they live is told.
    pub(super) fn actors_rejoin_settled(&mut self, out: &mut Vec<Command>) {
        for key in std::mem::take(&mut self.unreported_actors) {
            let Some(a) = self.actors.get_mut(&key).filter(|a| a.restored) else {
                continue;
            };
            a.restored = false;
            for (client, id) in std::mem::take(&mut a.locating) {
                let result = Err(lost(&key));
                out.push(send(client, FromScheduler::ActorLocated { id, result }));
            }
        }
    }

    /// Notes for the journal that actor `key` was made or is gone (with a
    /// journal).
    pub(super) fn journal_actor(&mut self, key: &str) {
        let Some(records) = &mut self.journal_actors else {
            return;
        };
        records.push(match self.actors.get(key) {
            Some(a) => Record::ActorMade {
                key: key.to_string(),
                resource: a.resource.clone(),
                module: a.module.clone(),
                made: a.made,
            },
            None => Record::ActorGone {
                key: key.to_string(),
            },
        });
    }

    /// The actors, as a snapshot keeps them: (key, resource, module,
    /// which making).
    pub(super) fn saved_actors(&self) -> Vec<(String, String, String, u64)> {
        self.actors
            .iter()
            .map(|(k, a)| (k.clone(), a.resource.clone(), a.module.clone(), a.made))
            .collect()
    }

    /// Restores actors a snapshot kept, as lost until a worker that
    /// rejoins says it holds them (callers asking meanwhile wait until
    /// the rejoin settles).
    pub(super) fn restore_actors(&mut self, saved: Vec<(String, String, String, u64)>) {
        for (key, resource, module, made) in saved {
            self.actors_made = self.actors_made.max(made);
            self.unreported_actors.push(key.clone());
            self.actors.insert(
                key,
                Actor {
                    resource,
                    module,
                    worker: 0,
                    address: String::new(),
                    state: ActorState::Lost,
                    made,
                    restored: true,
                    waiting: Vec::new(),
                    locating: Vec::new(),
                },
            );
        }
    }

    /// Where actor `key` lives, for a caller; an error if it is lost or
    /// unknown.
    pub fn actor_locate(&self, key: &str) -> Result<ActorInfo, TaskError> {
        match self.actors.get(key) {
            Some(a) if a.state == ActorState::Lost => Err(lost(key)),
            Some(a) => Ok(info(key, a)),
            None => Err(TaskError {
                kind: ErrorKind::Input,
                message: format!(
                    "no actor is called {key}; `dtask actor list` shows those there are"
                ),
                stderr: String::new(),
                backtrace: String::new(),
                origin: key.to_string(),
            }),
        }
    }

    /// Deletes an actor.
    pub(super) fn actor_delete(&mut self, key: &str, out: &mut Vec<Command>) {
        let Some(a) = self.actors.remove(key) else {
            return;
        };
        self.journal_actor(key);
        for (client, id) in a.locating {
            let result = self.actor_locate(key);
            out.push(send(client, FromScheduler::ActorLocated { id, result }));
        }
        if a.state != ActorState::Lost {
            out.push(send(
                a.worker,
                FromScheduler::DropActor {
                    key: key.to_string(),
                    made: a.made,
                },
            ));
            for (client, id) in a.waiting {
                let result = Err(TaskError {
                    kind: ErrorKind::ActorLost,
                    message: format!("actor {key} was deleted while it was being constructed"),
                    stderr: String::new(),
                    backtrace: String::new(),
                    origin: key.to_string(),
                });
                out.push(send(client, FromScheduler::ActorCreated { id, result }));
            }
        }
    }

    /// A call trapped in making `made` of actor `key` on `worker`.
    pub(super) fn actor_broken(&mut self, worker: WorkerId, key: &str, made: u64) {
        if let Some(a) = self.actors.get_mut(key)
            && a.worker == worker
            && a.made == made
            && a.state == ActorState::Ready
        {
            a.state = ActorState::Broken;
        }
    }

    /// Every actor, sorted by key.
    pub fn actor_list(&self) -> Vec<ActorInfo> {
        let mut all: Vec<ActorInfo> = self.actors.iter().map(|(k, a)| info(k, a)).collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// A worker died: its actors are lost, and those still starting fail.
    pub(super) fn actors_worker_gone(&mut self, worker: WorkerId, out: &mut Vec<Command>) {
        for (key, a) in self.actors.iter_mut().filter(|(_, a)| a.worker == worker) {
            a.state = ActorState::Lost;
            for (client, id) in std::mem::take(&mut a.waiting) {
                let result = Err(lost(key));
                out.push(send(client, FromScheduler::ActorCreated { id, result }));
            }
        }
    }
}

/// What a caller of a lost actor is told.
pub fn lost_message(key: &str) -> String {
    format!("actor lost: {key} (the worker holding it died); create it again")
}

/// The error a caller of lost actor `key` gets.
fn lost(key: &str) -> TaskError {
    TaskError {
        kind: ErrorKind::ActorLost,
        message: lost_message(key),
        stderr: String::new(),
        backtrace: String::new(),
        origin: key.to_string(),
    }
}

fn info(key: &str, a: &Actor) -> ActorInfo {
    ActorInfo {
        key: key.to_string(),
        resource: a.resource.clone(),
        module: a.module.clone(),
        address: a.address.clone(),
        state: a.state,
    }
}

fn send(to: u64, msg: FromScheduler) -> Command {
    Command::Send { to, msg }
}
