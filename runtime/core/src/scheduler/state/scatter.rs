//! Scattered data: values a client stores on workers directly, and what
//! becomes of them when workers leave or a restored scheduler waits for
//! them.

use super::*;

/// A placement whose values its client is still sending.
#[derive(Debug)]
pub(super) struct Placement {
    /// The keys placed: failed if never sent.
    keys: Vec<Key>,
    /// Where each value asked for goes, as answered: answered again to a
    /// copy of the request asked again.
    puts: Vec<(String, Vec<String>)>,
    /// The asking client's session (0: none).
    session: u64,
}

impl Scheduler {
    /// Scattered values the client sent here: stored on workers through
    /// their scheduler connections ([`Command::Store`]). A counted
    /// scatter its client's session asked before holds its keys no more.
    pub(super) fn scatter(
        &mut self,
        (client, session): (ClientId, u64),
        id: u64,
        values: Vec<(String, Bytes)>,
        (broadcast, counted): (bool, bool),
        names: &[String],
        out: &mut Vec<Command>,
    ) {
        let how = (broadcast, counted && !self.counted_before(session, id));
        let sizes = values.iter().map(|(k, v)| (k.clone(), v.len() as u64));
        let puts = match self.scatter_targets((client, id), sizes, how, names, false, out) {
            Ok(puts) => puts,
            Err(message) => return out.push(failed((client, id), message)),
        };
        if how.1 {
            self.first_counted(session, id);
        }
        let mut bytes: HashMap<String, Bytes> = values.into_iter().collect();
        let mut stores: HashMap<WorkerId, Vec<(String, Bytes)>> = HashMap::default();
        for (key, chosen) in puts {
            let Some(v) = bytes.remove(&*key) else {
                continue;
            };
            for w in chosen {
                stores
                    .entry(w)
                    .or_default()
                    .push((key.to_string(), v.clone()));
            }
        }
        let mut stores: Vec<_> = stores.into_iter().collect();
        stores.sort_by_key(|(w, _)| *w);
        for (worker, values) in stores {
            out.push(Command::Store { worker, values });
        }
    }

    /// Scattered values the client sends to workers itself: answered with
    /// where each goes ([`FromScheduler::Placed`], request `ids.0`), and
    /// once all are stored with [`Command::Scattered`] (request `ids.1`).
    ///
    /// A client with a session that asks again for a placement still
    /// waiting for its values (its connection broke) takes it over: it is
    /// answered with the same workers, and its confirmation goes to the
    /// new connection. (A copy read late from an older connection than the
    /// one that has it is answered, and leaves it where it is.)
    pub(super) fn place_scatter(
        &mut self,
        (client, session): (ClientId, u64),
        (id, confirm): (u64, u64),
        values: Vec<(String, u64)>,
        (broadcast, counted): (bool, bool),
        names: &[String],
        out: &mut Vec<Command>,
    ) {
        if session != 0
            && let Some(&first) = self.placement_sessions.get(&(session, confirm))
        {
            let req = (client, confirm);
            // Connection ids only grow.
            if client > first.0 {
                self.take_over_placement(first, req);
            }
            let puts = self.placements.get(&req).or(self.placements.get(&first));
            out.push(Command::Send {
                to: client,
                msg: FromScheduler::Placed {
                    id,
                    puts: puts.map(|p| p.puts.clone()).unwrap_or_default(),
                    again: true,
                },
            });
            return;
        }
        let how = (broadcast, counted && !self.counted_before(session, id));
        let requested: Vec<String> = values.iter().map(|(k, _)| k.clone()).collect();
        let puts = match self.scatter_targets(
            (client, confirm),
            values.into_iter(),
            how,
            names,
            true,
            out,
        ) {
            Ok(puts) => puts,
            // The placement itself is refused.
            Err(message) => return out.push(failed((client, id), message)),
        };
        if how.1 {
            self.first_counted(session, id);
        }
        let mut placed: Vec<Key> = Vec::with_capacity(puts.len());
        let mut addrs: HashMap<String, Vec<String>> = HashMap::default();
        for (key, chosen) in puts {
            let to = chosen
                .iter()
                .filter_map(|w| self.workers.get(w).map(|w| w.data_addr.clone()))
                .collect();
            addrs.insert(key.to_string(), to);
            placed.push(key);
        }
        let puts: Vec<(String, Vec<String>)> = requested
            .into_iter()
            .map(|k| {
                let to = addrs.remove(&k).unwrap_or_default();
                (k, to)
            })
            .collect();
        if !placed.is_empty() && self.scatters.contains_key(&(client, confirm)) {
            let placement = Placement {
                keys: placed,
                puts: puts.clone(),
                session,
            };
            self.placements.insert((client, confirm), placement);
            if session != 0 {
                self.placement_sessions
                    .insert((session, confirm), (client, confirm));
            }
        }
        out.push(Command::Send {
            to: client,
            msg: FromScheduler::Placed {
                id,
                puts,
                again: false,
            },
        });
    }

    /// The client of placement `req` gave up sending its values (why):
    /// those not stored yet fail, and its request with them.
    pub(super) fn unplace(&mut self, req: (ClientId, u64), reason: &str, out: &mut Vec<Command>) {
        if self.placements.contains_key(&req) {
            self.fail_scatter(req, reason.to_string(), out);
        }
    }

    /// The placement `confirm` of connection `client` or, asked for on an
    /// earlier connection, of its `session` (0: none).
    pub(super) fn placement_of(
        &self,
        client: ClientId,
        session: u64,
        confirm: u64,
    ) -> (ClientId, u64) {
        match self.placement_sessions.get(&(session, confirm)) {
            Some(&req) if session != 0 => req,
            _ => (client, confirm),
        }
    }

    /// The keys of placement `req`, ended, that were not stored: they fail
    /// (why), as nobody will send them now.
    fn fail_unsent(
        &mut self,
        req: (ClientId, u64),
        keys: Vec<Key>,
        reason: &str,
        out: &mut Vec<Command>,
    ) {
        for key in keys {
            let unsent = self
                .tasks
                .get(&key)
                .is_some_and(|t| t.is_scattered() && matches!(t.state, State::Processing { .. }));
            if unsent && self.scatter_requests.get(&key) == Some(&req) {
                self.scatter_requests.remove(&key);
                let error = TaskError::new(ErrorKind::Lost, reason.to_string(), &key);
                self.fail(&key, error, out);
            }
        }
    }

    /// A client left: the values it placed and had not sent yet never
    /// will be. A scatter whose values it sent here is stored all the
    /// same: its wait stays, and its answer goes to the connection its
    /// client asks again on after reconnecting (the server answers such a
    /// copy once its first is), or nowhere. It ends as the stores do.
    ///
    /// A client with a session may come back on a new connection and ask
    /// for its placement again: its placement waits for it for
    /// [`HOLDER_GRACE_MS`].
    pub(super) fn placements_client_gone(&mut self, client: ClientId, out: &mut Vec<Command>) {
        let gone: Vec<((ClientId, u64), u64)> = self
            .placements
            .iter()
            .filter(|((c, _), _)| *c == client)
            .map(|(req, p)| (*req, p.session))
            .collect();
        for ((client, confirm), session) in gone {
            if session != 0 {
                out.push(Command::PlacementGrace {
                    client,
                    confirm,
                    after_ms: HOLDER_GRACE_MS,
                });
                continue;
            }
            self.unplace(
                (client, confirm),
                "the client that scattered it left before it had sent it; scatter it again",
                out,
            );
        }
    }

    /// Whether placement `confirm` of `session` (not 0) waits for its
    /// values: a placement asked for with them is a copy asked again.
    pub fn is_placing(&self, session: u64, confirm: u64) -> bool {
        session != 0 && self.placement_sessions.contains_key(&(session, confirm))
    }

    /// Placement `first`, asked again as `req` (its client's new
    /// connection): what answers and fails it goes to `req` from now on.
    fn take_over_placement(&mut self, first: (ClientId, u64), req: (ClientId, u64)) {
        let Some(placement) = self.placements.remove(&first) else {
            return;
        };
        if let Some(left) = self.scatters.remove(&first) {
            self.scatters.insert(req, left);
        }
        for key in &placement.keys {
            if let Some(r) = self.scatter_requests.get_mut(key)
                && *r == first
            {
                *r = req;
            }
        }
        self.placement_sessions
            .insert((placement.session, req.1), req);
        self.placements.insert(req, placement);
    }

    /// Ends placement `req`: what it was.
    fn end_placement(&mut self, req: (ClientId, u64)) -> Option<Placement> {
        let placement = self.placements.remove(&req)?;
        if placement.session != 0 {
            self.placement_sessions.remove(&(placement.session, req.1));
        }
        Some(placement)
    }

    /// Where each of a scatter's values goes (`direct`: sent by the client
    /// to the workers itself): (key, workers) for those to
    /// store, held keys only taking this client as a holder (once more if
    /// `counted`, of `(broadcast, counted)`). Registers the
    /// request `(client, id)` to be answered once all are stored (at once
    /// if nothing is to store), or says why the scatter is refused.
    fn scatter_targets(
        &mut self,
        (client, id): (ClientId, u64),
        values: impl Iterator<Item = (String, u64)>,
        (broadcast, counted): (bool, bool),
        names: &[String],
        direct: bool,
        out: &mut Vec<Command>,
    ) -> Result<Vec<(Key, Vec<WorkerId>)>, String> {
        let holder = match self.clients.get(&client) {
            Some(c) => c.holder.clone(),
            None => return Err("this client is not connected".into()),
        };
        let values: Vec<(String, u64)> = values.collect();
        // Values sent straight to workers never pass through here, so the
        // scheduler's own limit does not apply to them.
        if !direct {
            for (key, len) in &values {
                self.value_fits(|| format!("scattered value {key}"), *len as usize)?;
            }
        }
        let mut targets: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(wid, w)| names.is_empty() || names.iter().any(|n| w.is(**wid, n)))
            .map(|(wid, _)| *wid)
            .collect();
        targets.sort();
        if targets.is_empty() {
            return Err(if names.is_empty() {
                "no workers are connected to scatter to".into()
            } else {
                format!("no connected worker matches {}", names.join(", "))
            });
        }
        // A task's key (a `--key` chosen as this data's) does not name
        // these bytes.
        if let Some((key, _)) = values
            .iter()
            .find(|(k, _)| self.tasks.get(k).is_some_and(|t| !t.is_scattered()))
        {
            return Err(format!(
                "key {key} names a task, not scattered data: release it \
                 (dtask release {key}) before scattering these bytes"
            ));
        }
        let mut puts = Vec::new();
        let mut pending: HashMap<WorkerId, usize> = HashMap::default();
        for (key, _) in values {
            // Same key, same bytes (keys hash the value): held as it is,
            // or stored again where the value was lost or could not be
            // stored (or a restored scheduler still waits for its worker to
            // come back).
            let known = self.tasks.key(&key);
            let revived = known.is_some() && {
                let t = self.tasks.get(&key).expect("present");
                t.is_scattered()
                    && matches!(
                        t.state,
                        State::Lost | State::Released | State::Error(_) | State::Cancelled
                    )
            };
            if let Some(k) = &known
                && !revived
            {
                if counted {
                    self.hold_counted(&holder, k);
                } else {
                    self.hold_known(&holder, k);
                }
                continue;
            }
            let chosen: Vec<WorkerId> = if broadcast {
                targets.clone()
            } else {
                self.scatter_rr = (self.scatter_rr + 1) % targets.len();
                vec![targets[self.scatter_rr]]
            };
            for w in &chosen {
                *pending.entry(*w).or_default() += 1;
            }
            let storing = State::Processing {
                worker: chosen[0],
                started: false,
                run: 0,
            };
            if let Some(key) = known {
                if counted {
                    self.hold_counted(&holder, &key);
                } else {
                    self.hold_known(&holder, &key);
                }
                let t = self.tasks.get_mut(&key).expect("present");
                self.activity.set(&key, t, storing);
                self.scatter_requests.insert(key.clone(), (client, id));
                if let Some(mut w) = self.workers.get_mut(&chosen[0]) {
                    w.take(&key, &[]);
                }
                puts.push((key, chosen));
                continue;
            }
            self.seq += 1;
            let key: Key = Key::from(key);
            let holders = self.holdings.hold_new(&holder, &key);
            let task = Task {
                recipe: Recipe::scattered(&mut self.names),
                seq: self.seq,
                state: storing,
                deps: ThinVec::new(),
                dependents: Dependents::default(),
                needed_by: 0,
                holders,
                watchers: ThinVec::new(),
                retries_left: 0,
                deaths: 0,
                fetch_misses: 0,
                stamps: activity::Stamps::at(self.activity.now_ms),
                journaled: 0,
                group: 0,
            };
            self.scatter_requests.insert(key.clone(), (client, id));
            if let Some(mut w) = self.workers.get_mut(&chosen[0]) {
                w.take(&key, &[]);
            }
            puts.push((key.clone(), chosen));
            self.add_task(key, task);
        }
        if pending.is_empty() {
            out.push(Command::Scattered { client, id });
        } else {
            self.scatters.insert((client, id), pending);
        }
        Ok(puts)
    }

    /// One copy of scattered data is stored on `worker`; answers the
    /// scatter request once every copy of every value is.
    pub(super) fn scatter_stored(
        &mut self,
        req: Option<(ClientId, u64)>,
        worker: WorkerId,
        out: &mut Vec<Command>,
    ) {
        let Some(req) = req else { return };
        let Some(left) = self.scatters.get_mut(&req) else {
            return;
        };
        if let Some(n) = left.get_mut(&worker) {
            *n -= 1;
            if *n == 0 {
                left.remove(&worker);
            }
        }
        if left.is_empty() {
            self.scatters.remove(&req);
            self.end_placement(req);
            out.push(Command::Scattered {
                client: req.0,
                id: req.1,
            });
        }
    }

    /// `worker` could not keep its copy of scattered `key` (why): the
    /// request waiting for that copy fails with the reason.
    pub(super) fn scatter_copy_refused(
        &mut self,
        worker: WorkerId,
        key: &str,
        why: &str,
        out: &mut Vec<Command>,
    ) {
        let Some(req) = self.scatter_requests.get(key).copied() else {
            return;
        };
        if self
            .scatters
            .get(&req)
            .is_some_and(|left| left.contains_key(&worker))
        {
            self.fail_scatter(req, why.to_string(), out);
        }
    }

    /// Ends scatter request `req`, if it still waits, with an error (why);
    /// the values a placement's client has not sent fail with it.
    pub(super) fn fail_scatter(
        &mut self,
        req: (ClientId, u64),
        why: String,
        out: &mut Vec<Command>,
    ) {
        let placed = self.end_placement(req);
        if self.scatters.remove(&req).is_some() {
            out.push(failed(req, why.clone()));
        }
        if let Some(Placement { keys, .. }) = placed {
            self.fail_unsent(req, keys, &why, out);
        }
    }

    /// A scatter request waiting on `worker`, which left, fails: its client
    /// is told to scatter again rather than left waiting.
    pub(super) fn scatters_worker_gone(
        &mut self,
        worker: WorkerId,
        name: &str,
        out: &mut Vec<Command>,
    ) {
        let waiting: Vec<(ClientId, u64)> = self
            .scatters
            .iter()
            .filter(|(_, left)| left.contains_key(&worker))
            .map(|(req, _)| *req)
            .collect();
        let why =
            format!("worker {name} left before it stored the scattered values; scatter them again");
        for req in waiting {
            self.fail_scatter(req, why.clone(), out);
        }
    }

    /// The window for workers to rejoin after a restart has closed:
    /// restored scattered data that no worker reported is lost (it has no
    /// recipe to compute it again), and whoever waits for it is told.
    pub(super) fn rejoin_window_closed(&mut self, out: &mut Vec<Command>) {
        let mut lost = Vec::new();
        for key in std::mem::take(&mut self.unreported_scatters) {
            if let Some(t) = self.tasks.get_mut(&key)
                && t.is_scattered()
                && matches!(t.state, State::Released)
            {
                self.activity.set(&key, t, State::Lost);
                lost.push(self.tasks.key(&key).expect("present"));
            }
        }
        self.report_lost(lost, out);
    }
}

/// The answer refusing request `req` (why).
fn failed((client, id): (ClientId, u64), message: String) -> Command {
    Command::Failed {
        client,
        id,
        message,
    }
}
