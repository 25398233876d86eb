//! Scattered data: values a client stores on workers directly, and what
//! becomes of them when workers leave or a restored scheduler waits for
//! them.

use super::*;

impl Scheduler {
    pub(super) fn scatter(
        &mut self,
        client: ClientId,
        id: u64,
        values: Vec<(String, Bytes)>,
        broadcast: bool,
        names: &[String],
        out: &mut Vec<Command>,
    ) {
        let Some(holder) = self.clients.get(&client).map(|c| c.holder.clone()) else {
            return;
        };
        for (key, v) in &values {
            if let Err(message) = self.value_fits(&format!("scattered value {key}"), v.len()) {
                return out.push(Command::Failed {
                    client,
                    id,
                    message,
                });
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
            out.push(Command::Failed {
                client,
                id,
                message: if names.is_empty() {
                    "no workers are connected to scatter to".into()
                } else {
                    format!("no connected worker matches {}", names.join(", "))
                },
            });
            return;
        }
        let mut stores: HashMap<WorkerId, Vec<(String, Bytes)>> = HashMap::default();
        let mut pending: HashMap<WorkerId, usize> = HashMap::default();
        for (key, bytes) in values {
            // Same key, same bytes (keys hash the value): held as it is,
            // or stored again where the value was lost (or a restored
            // scheduler still waits for its worker to come back).
            let known = self.tasks.key(&key);
            let revived = known.is_some() && {
                let t = self.tasks.get(&key).expect("present");
                t.is_scattered() && matches!(t.state, State::Lost | State::Released)
            };
            if let Some(k) = &known
                && !revived
            {
                let name = self.note_hold(&holder, k.clone());
                let t = self.tasks.get_mut(&key).expect("present");
                t.holders.insert(&name);
                continue;
            }
            let chosen: Vec<WorkerId> = if broadcast {
                targets.clone()
            } else {
                self.scatter_rr = (self.scatter_rr + 1) % targets.len();
                vec![targets[self.scatter_rr]]
            };
            for w in &chosen {
                stores
                    .entry(*w)
                    .or_default()
                    .push((key.clone(), bytes.clone()));
            }
            let storing = State::Processing {
                worker: chosen[0],
                started: false,
                run: 0,
            };
            if let Some(key) = known {
                let name = self.note_hold(&holder, key.clone());
                let t = self.tasks.get_mut(&key).expect("present");
                t.holders.insert(&name);
                self.activity.set(&key, t, storing);
                self.scatter_requests.insert(key.clone(), (client, id));
                if let Some(w) = self.workers.get_mut(&chosen[0]) {
                    w.take(&key, &[]);
                }
                for w in chosen {
                    *pending.entry(w).or_default() += 1;
                }
                continue;
            }
            self.seq += 1;
            let key: Key = Key::from(key);
            let name = self.note_hold(&holder, key.clone());
            let task = Task {
                recipe: Recipe::scattered(&mut self.names),
                seq: self.seq,
                state: storing,
                deps: ThinVec::new(),
                dependents: Dependents::default(),
                needed_by: 0,
                holders: Holders::one(name),
                watchers: ThinVec::new(),
                retries_left: 0,
                deaths: 0,
                stamps: activity::Stamps::at(self.activity.now_ms),
                journaled: 0,
            };
            self.scatter_requests.insert(key.clone(), (client, id));
            if let Some(w) = self.workers.get_mut(&chosen[0]) {
                w.take(&key, &[]);
            }
            self.add_task(key, task);
            for w in chosen {
                *pending.entry(w).or_default() += 1;
            }
        }
        if pending.is_empty() {
            out.push(Command::Scattered { client, id });
        } else {
            self.scatters.insert((client, id), pending);
        }
        let mut stores: Vec<_> = stores.into_iter().collect();
        stores.sort_by_key(|(w, _)| *w);
        for (worker, values) in stores {
            out.push(Command::Store { worker, values });
        }
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
            out.push(Command::Scattered {
                client: req.0,
                id: req.1,
            });
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
        let failed: Vec<(ClientId, u64)> = self
            .scatters
            .iter()
            .filter(|(_, left)| left.contains_key(&worker))
            .map(|(req, _)| *req)
            .collect();
        for (client, id) in failed {
            self.scatters.remove(&(client, id));
            out.push(Command::Failed {
                client,
                id,
                message: format!(
                    "worker {name} left before it stored the scattered values; scatter them again"
                ),
            });
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
