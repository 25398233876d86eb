//! Each message from a client or worker, checked against its connection's
//! credential and turned into a state-machine event.

use super::*;

impl Core {
    pub(super) fn message(&mut self, from: ClientId, msg: ToScheduler) {
        let is_worker = self.conns.get(&from).is_some_and(|c| c.is_worker);
        let worker_credential = self.conns.get(&from).is_some_and(|c| c.worker_credential);
        let input = match msg {
            ToScheduler::Shutdown if worker_credential => {
                tracing::warn!(
                    "connection {from} (a worker credential) asked for a shutdown; refused: \
                     that takes the client credential"
                );
                return;
            }
            ToScheduler::DashboardLogin { id } if worker_credential => {
                let login = Err("a worker's tasks cannot log in to the dashboard: \
                                 that takes the client credential"
                    .to_string());
                self.send(from, FromScheduler::DashboardLogin { id, login });
                return;
            }
            // Answered as it arrived (`Core::inbound`).
            ToScheduler::Ping => return,
            ToScheduler::HasModules { id, hashes } => {
                let hashes = hashes
                    .into_iter()
                    .filter(|h| !self.modules.contains_key(h))
                    .collect();
                self.send(from, FromScheduler::MissingModules { id, hashes });
                return;
            }
            ToScheduler::UploadModule { hash, bytes } if bytes.len() > self.max_module => {
                let reason = format!(
                    "it is {} bytes, more than this scheduler accepts ({} bytes); \
                     raise the scheduler's --max-module-size",
                    bytes.len(),
                    self.max_module
                );
                tracing::warn!("connection {from} uploaded module {hash}, refused: {reason}");
                Input::ModuleRefused { hash, reason }
            }
            ToScheduler::UploadModule { hash, bytes } => {
                let actual = blake3::hash(&bytes).to_hex().to_string();
                if actual != hash {
                    tracing::warn!(
                        "connection {from} uploaded a module whose hash is {actual}, not {hash}; ignored"
                    );
                    return;
                }
                if let Some(j) = &self.journal {
                    j.module(&hash, bytes.clone());
                }
                self.modules.insert(hash.clone(), bytes);
                Input::ModuleStored { hash }
            }
            ToScheduler::Submit { .. } if !is_worker && self.faults.cut_before_submit() => {
                tracing::warn!(
                    "fault injection: cutting client {from} off before taking its submit"
                );
                self.overflowed.push(from);
                return;
            }
            ToScheduler::Submit {
                id,
                tasks,
                counted,
                session,
            } => Input::Submit {
                counted,
                session: self.session_of(from, session),
                client: from,
                id,
                tasks,
            },
            ToScheduler::Watch { keys, reads } => Input::Watch {
                client: from,
                keys,
                reads,
            },
            ToScheduler::DoneReading { keys } => Input::DoneReading { client: from, keys },
            ToScheduler::Release { keys } => Input::Release { client: from, keys },
            ToScheduler::ReleaseAll => Input::ReleaseAll { client: from },
            ToScheduler::Leave => Input::ClientLeaving { client: from },
            ToScheduler::Status { id, keys, timings } => {
                let mut reasons = Vec::new();
                let timings = match timings {
                    true => keys
                        .iter()
                        .filter_map(|k| Some((k.clone(), self.state.timings(k)?)))
                        .collect(),
                    false => Vec::new(),
                };
                let states = keys
                    .into_iter()
                    .map(|k| {
                        let s = self.state.state(&k);
                        if s == Some(TaskState::NoWorker)
                            && let Some(why) = self.state.no_worker_reason(&k)
                        {
                            reasons.push((k.clone(), why));
                        }
                        (k, s)
                    })
                    .collect();
                self.send(
                    from,
                    FromScheduler::Status {
                        id,
                        states,
                        reasons,
                        timings,
                    },
                );
                return;
            }
            ToScheduler::FireAndForget { keys } => Input::FireAndForget { keys },
            ToScheduler::Cancel { keys, force } => Input::Cancel {
                client: from,
                keys,
                // Others' keys are the client credential's to cancel.
                force: force && !worker_credential,
            },
            ToScheduler::Retry {
                id,
                session,
                keys,
                limits,
            } => {
                if !self.first_ask(from, self.session_of(from, session), id) {
                    return;
                }
                Input::Retry {
                    client: from,
                    id,
                    keys,
                    limits,
                }
            }
            ToScheduler::Scatter {
                counted,
                id,
                values,
                broadcast,
                workers,
                session,
            } => {
                // Scattered data is named by its bytes: a key that is not
                // theirs would plant other bytes under a name someone may
                // submit or scatter later.
                let misnamed = values.iter().find(|(k, v)| {
                    *k != crate::key::pure_key(
                        "",
                        "data",
                        &[crate::protocol::Arg::Value(v.clone())],
                    )
                });
                if let Some((key, _)) = misnamed {
                    let message = not_its_data_key(key);
                    self.send(from, FromScheduler::Failed { id, message });
                    return;
                }
                // A copy asked again after a broken connection is answered
                // as the first copy is, once its values are stored.
                let session = self.session_of(from, session);
                if !self.first_ask(from, session, id) {
                    return;
                }
                if !is_worker {
                    self.cut_after_scatter(from, "scatter");
                }
                Input::Scatter {
                    counted,
                    session,
                    client: from,
                    id,
                    values,
                    broadcast,
                    workers,
                }
            }
            ToScheduler::Place {
                counted,
                id,
                confirm,
                values,
                broadcast,
                workers,
                session,
            } => {
                // The bytes of placed data go to a worker, which checks
                // them against their key; only scattered data's keys are
                // placed.
                if let Some((key, _)) = values.iter().find(|(k, _)| !k.starts_with("data-")) {
                    let message = not_its_data_key(key);
                    self.send(from, FromScheduler::Failed { id, message });
                    return;
                }
                let session = self.session_of(from, session);
                // A copy asked again is not cut off again.
                if !is_worker && !self.state.is_placing(session, confirm) {
                    self.cut_after_scatter(from, "placement");
                }
                Input::Place {
                    counted,
                    session,
                    client: from,
                    id,
                    confirm,
                    values,
                    broadcast,
                    workers,
                }
            }
            ToScheduler::Unplace {
                confirm,
                reason,
                session,
            } => Input::Unplace {
                session: self.session_of(from, session),
                client: from,
                confirm,
                reason,
            },
            ToScheduler::WhoHas { id, keys } => {
                let holders = self.state.who_has(keys);
                self.send(from, FromScheduler::WhoHas { id, holders });
                return;
            }
            ToScheduler::HasWhat { id } => {
                let holdings = self.state.has_what();
                self.send(from, FromScheduler::HasWhat { id, holdings });
                return;
            }
            ToScheduler::Stats { id } => {
                let stats = self.state.stats();
                let health = crate::protocol::Health {
                    held: self.state.held_keys(),
                    stolen: self.state.totals().stolen,
                    rss_bytes: crate::resident_bytes(),
                    dashboard: self.dashboard.as_ref().map(|d| d.0.to_string()),
                    journal: self.journal.as_ref().map(|j| {
                        let h = j.health();
                        crate::protocol::JournalHealth {
                            dir: self.journal_dir.clone(),
                            bytes: h.bytes.load(std::sync::atomic::Ordering::Relaxed),
                            records: h.records.load(std::sync::atomic::Ordering::Relaxed),
                            problem: h.problem(),
                        }
                    }),
                };
                self.send(from, FromScheduler::Stats { id, stats, health });
                return;
            }
            ToScheduler::ListTasks {
                id,
                state,
                function,
                limit,
            } => {
                let (tasks, matched) =
                    self.state
                        .list_tasks(state, function.as_deref(), limit as usize);
                self.send(from, FromScheduler::TaskList { id, tasks, matched });
                return;
            }
            ToScheduler::DashboardLogin { id } => {
                let login = match &self.dashboard {
                    Some((addr, access)) => Ok((addr.to_string(), access.new_code())),
                    None => Err("this scheduler serves no dashboard: it was started with \
                                 --no-dashboard"
                        .to_string()),
                };
                self.send(from, FromScheduler::DashboardLogin { id, login });
                return;
            }
            ToScheduler::Workers { id } => {
                let workers = self.state.workers();
                self.send(from, FromScheduler::Workers { id, workers });
                return;
            }
            ToScheduler::Shutdown => {
                tracing::info!("shutdown requested by connection {from}");
                // Workers stop; clients stop waiting for the scheduler to
                // come back (a gather waiting on a task ends at once).
                for c in self.conns.values() {
                    let _ = c.tx.send(FromScheduler::Shutdown);
                }
                self.shutting_down = true;
                // Asked to stop: nothing to resume next time.
                if let Some(j) = self.journal.take() {
                    j.clear();
                }
                return;
            }
            ToScheduler::Finished { results } if is_worker => Input::Finished {
                worker: from,
                results,
            },
            ToScheduler::Erred { errors } if is_worker => Input::Erred {
                worker: from,
                errors,
            },
            ToScheduler::Heartbeat {
                worker,
                run_seq,
                running,
                spilled_bytes,
                held_bytes,
                rss_bytes,
                fetched,
                fetched_bytes,
                instances,
            } if is_worker => {
                // Taken before this worker rejoined: about another life.
                if worker != from {
                    return;
                }
                Input::WorkerHeartbeat {
                    worker: from,
                    spilled: spilled_bytes,
                    held: held_bytes,
                    rss: rss_bytes,
                    fetched: (fetched, fetched_bytes),
                    instances,
                    run_seq,
                    running,
                }
            }
            ToScheduler::Holding { results, actors } if is_worker => Input::WorkerHolds {
                worker: from,
                results,
                actors,
            },
            ToScheduler::Dropped { keys } if is_worker => {
                Input::WorkerDropped { worker: from, keys }
            }
            ToScheduler::Seceded { key } if is_worker => Input::Seceded { worker: from, key },
            ToScheduler::Rejoined { key } if is_worker => Input::Rejoined { worker: from, key },
            ToScheduler::Started { keys } if is_worker => Input::Started { worker: from, keys },
            ToScheduler::Stolen { keys } if is_worker => Input::Stolen { worker: from, keys },
            ToScheduler::Starved { starved } if is_worker => Input::WorkerStarved {
                worker: from,
                starved,
            },
            ToScheduler::Primitive {
                id,
                session,
                task,
                op,
            } if !is_worker => Input::Primitive {
                client: from,
                id,
                session: self.session_of(from, session),
                task,
                op,
            },
            ToScheduler::Publish { message, .. } if message.len() > self.max_value => {
                // Publishing has no answer: the publisher's log is all
                // there is to tell.
                tracing::warn!(
                    "connection {from} published {} bytes, more than --max-value-size ({} bytes); dropped",
                    message.len(),
                    self.max_value
                );
                return;
            }
            ToScheduler::Publish { topic, message } => Input::Publish { topic, message },
            ToScheduler::ActorNew { id, session, spec } if !is_worker => {
                if !self.first_ask(from, self.session_of(from, session), id) {
                    return;
                }
                Input::ActorNew {
                    client: from,
                    id,
                    spec,
                }
            }
            ToScheduler::ActorLocate { id, key } => Input::ActorLocate {
                client: from,
                id,
                key,
            },
            ToScheduler::Actors { id } => {
                let actors = self.state.actor_list();
                self.send(from, FromScheduler::Actors { id, actors });
                return;
            }
            ToScheduler::ActorDelete { key } => Input::ActorDelete { key },
            ToScheduler::ActorReady { key, made } if is_worker => Input::ActorStarted {
                worker: from,
                key,
                made,
                outcome: Ok(()),
            },
            ToScheduler::ActorFailed { key, made, error } if is_worker => Input::ActorStarted {
                worker: from,
                key,
                made,
                outcome: Err(error),
            },
            ToScheduler::ActorBroken { key, made } if is_worker => Input::ActorBroken {
                worker: from,
                key,
                made,
            },
            ToScheduler::FetchModule { hash } if is_worker => {
                let bytes = self.modules.get(&hash).cloned();
                self.send(from, FromScheduler::Module { hash, bytes });
                return;
            }
            other => {
                // Its kind alone: the message may be hundreds of MB, and
                // formatting stops after the first few bytes.
                let mut kind = Capped(String::new());
                let _ = std::fmt::Write::write_fmt(&mut kind, format_args!("{other:?}"));
                let kind = kind
                    .0
                    .split([' ', '(', '{'])
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                tracing::warn!("connection {from} sent a message its role may not send: {kind}");
                return;
            }
        };
        self.apply(input);
    }
}

impl Core {
    /// The session request of connection `from` naming `claimed` belongs
    /// to: an unnamed client's own, from its hello, whatever it claims; a
    /// named client's (which shares its holds with every process using its
    /// name) as claimed.
    fn session_of(&self, from: ClientId, claimed: u64) -> u64 {
        match self.conns.get(&from).map(|c| c.session) {
            Some(session) if session != 0 => session,
            _ => claimed,
        }
    }

    /// Fault injection (`DTASK_FAULT_CUT_AFTER_SCATTER`): cuts client
    /// `from` off, if this one is due, just after taking its scatter or
    /// placement (`what`).
    fn cut_after_scatter(&mut self, from: ClientId, what: &str) {
        if self.faults.cut_after_scatter() {
            tracing::warn!(
                "fault injection: cutting client {from} off just after taking its {what}"
            );
            self.overflowed.push(from);
        }
    }

    /// Whether request `id` of `session`, from connection `from`, is to be
    /// done: not if it was asked before (see [`once`]), in which case it
    /// is answered as the first copy was, now or when that is done.
    fn first_ask(&mut self, from: ClientId, session: u64, id: u64) -> bool {
        match self.once.ask(from, session, id) {
            once::Ask::Do => true,
            once::Ask::Answer(answer) => {
                tracing::info!("connection {from} asked request {id} again: answered again");
                self.send(from, answer);
                false
            }
            once::Ask::Wait => false,
        }
    }
}

/// A `fmt::Write` that takes the first 64 bytes and then refuses more,
/// which ends the formatting.
struct Capped(String);

impl std::fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = 64usize.saturating_sub(self.0.len());
        if s.len() <= room {
            self.0.push_str(s);
            return Ok(());
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.0.push_str(&s[..end]);
        Err(std::fmt::Error)
    }
}

/// Why a value scattered or placed under `key` was refused.
fn not_its_data_key(key: &str) -> String {
    format!(
        "{key} is not the key of the value scattered with it: scattered data is \
         named data-… by the hash of its bytes; let the client name it"
    )
}
