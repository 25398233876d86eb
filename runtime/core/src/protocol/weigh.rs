//! How many bytes a message weighs, to cap the batches a connection writes.

use super::*;

/// Roughly how many bytes a message holds, for bounding what waits to be
/// sent on a connection (see `dtask_runtime::connection::Sender`). Payloads
/// count in full; the rest is a flat allowance per message.
pub trait Weigh {
    /// Approximate bytes.
    fn weight(&self) -> usize;

    /// Leaves out of a batch about to be written what later messages in
    /// the same batch make redundant. By default nothing is.
    fn coalesce(_batch: &mut Vec<Self>)
    where
        Self: Sized,
    {
    }
}

/// The flat allowance per message beyond its payloads.
const MESSAGE_OVERHEAD: usize = 64;

fn args_weight(args: &[Arg]) -> usize {
    args.iter().map(Arg::size).sum()
}

impl Weigh for ToScheduler {
    fn weight(&self) -> usize {
        MESSAGE_OVERHEAD
            + match self {
                ToScheduler::UploadModule { bytes, .. } => bytes.len(),
                ToScheduler::Submit { tasks, .. } => tasks
                    .iter()
                    .map(|t| MESSAGE_OVERHEAD + t.key.len() + args_weight(&t.args))
                    .sum::<usize>(),
                ToScheduler::Scatter { values, .. } => {
                    values.iter().map(|(_, v)| v.len()).sum::<usize>()
                }
                ToScheduler::Place { values, .. } => {
                    values.iter().map(|(k, _)| k.len() + 8).sum::<usize>()
                }
                ToScheduler::Finished { results } | ToScheduler::Holding { results, .. } => results
                    .iter()
                    .map(|(k, at)| k.len() + at.inline.as_ref().map_or(0, Bytes::len))
                    .sum::<usize>(),
                ToScheduler::Publish { message, .. } => message.len(),
                ToScheduler::Watch { keys, .. }
                | ToScheduler::DoneReading { keys }
                | ToScheduler::Release { keys }
                | ToScheduler::Started { keys }
                | ToScheduler::Dropped { keys }
                | ToScheduler::Stolen { keys } => keys.iter().map(String::len).sum::<usize>(),
                ToScheduler::Primitive {
                    op: Op::QueuePut { item, .. } | Op::VarSet { item, .. },
                    ..
                } => item.size(),
                _ => 0,
            }
    }

    /// Leaves out of the batch each task's `Started` whose end follows in
    /// it, and sends results that follow one another as one `Finished`.
    ///
    /// A worker says a task began so that the scheduler can tell running
    /// tasks from queued ones should the worker die. When the task's end
    /// (`Finished` or `Erred`) follows in the same batch, the end says it
    /// all (the scheduler counts a task it hears end unannounced as begun
    /// then): most small tasks begin and end between two writes, and this
    /// spares the scheduler an event per task. Results merged into one
    /// message are handled as one event, after which the scheduler places
    /// what they freed at once, in fewer and fuller `Run`s.
    fn coalesce(batch: &mut Vec<Self>) {
        leave_out_redundant_starts(batch);
        merge_results(batch);
    }
}

/// The `Started` keys of `batch` whose end follows in it, left out (see
/// [`Weigh::coalesce`] for [`ToScheduler`]).
fn leave_out_redundant_starts(batch: &mut Vec<ToScheduler>) {
    let mut redundant: Vec<(usize, usize)> = Vec::new();
    {
        // Each key ended in the batch, with the last message ending it.
        let mut ended: rustc_hash::FxHashMap<&str, usize> = Default::default();
        for (i, m) in batch.iter().enumerate() {
            let keys: &mut dyn Iterator<Item = &String> = match m {
                ToScheduler::Finished { results } => &mut results.iter().map(|(k, _)| k),
                ToScheduler::Erred { errors } => &mut errors.iter().map(|(k, _, _)| k),
                _ => continue,
            };
            for k in keys {
                ended.insert(k, i);
            }
        }
        if ended.is_empty() {
            return;
        }
        for (i, m) in batch.iter().enumerate() {
            if let ToScheduler::Started { keys } = m {
                for (j, k) in keys.iter().enumerate() {
                    if ended.get(k.as_str()).is_some_and(|&end| end > i) {
                        redundant.push((i, j));
                    }
                }
            }
        }
    }
    if redundant.is_empty() {
        return;
    }
    for &(i, j) in redundant.iter().rev() {
        if let ToScheduler::Started { keys } = &mut batch[i] {
            keys.remove(j);
        }
    }
    batch.retain(|m| !matches!(m, ToScheduler::Started { keys } if keys.is_empty()));
}

/// Runs of `Finished` messages in `batch` made one message each.
fn merge_results(batch: &mut Vec<ToScheduler>) {
    let finished = |m: &ToScheduler| matches!(m, ToScheduler::Finished { .. });
    if !batch.windows(2).any(|w| finished(&w[0]) && finished(&w[1])) {
        return;
    }
    let mut merged: Vec<ToScheduler> = Vec::with_capacity(batch.len());
    for m in batch.drain(..) {
        match (merged.last_mut(), m) {
            (Some(ToScheduler::Finished { results: into }), ToScheduler::Finished { results }) => {
                into.extend(results)
            }
            (_, m) => merged.push(m),
        }
    }
    *batch = merged;
}

impl Weigh for FromScheduler {
    fn weight(&self) -> usize {
        MESSAGE_OVERHEAD
            + match self {
                FromScheduler::Message { message, .. } => message.len(),
                FromScheduler::Done { key, outcome } => {
                    key.len()
                        + match outcome {
                            Outcome::Finished(at) => at.inline.as_ref().map_or(0, Bytes::len),
                            Outcome::Error(e) => e.message.len() + e.stderr.len(),
                            _ => 0,
                        }
                }
                FromScheduler::Run { tasks, .. } => tasks
                    .iter()
                    .map(|t| {
                        MESSAGE_OVERHEAD
                            + t.args
                                .iter()
                                .map(|a| match a {
                                    RunArg::Value(b) => b.len(),
                                    RunArg::Dep { at, .. } => {
                                        at.inline.as_ref().map_or(0, Bytes::len)
                                    }
                                })
                                .sum::<usize>()
                    })
                    .sum::<usize>(),
                FromScheduler::Store { values } => {
                    values.iter().map(|(_, v)| v.len()).sum::<usize>()
                }
                FromScheduler::Module { bytes, .. } => bytes.as_ref().map_or(0, Bytes::len),
                // Answers that can be big weigh what they carry: the writer
                // batches by weight, and a client's backlog is bounded by it.
                FromScheduler::Primitive { reply, .. } => match reply {
                    OpReply::Item(item) => item.size(),
                    OpReply::Failed(why) => why.len(),
                    _ => 0,
                },
                FromScheduler::Status {
                    states,
                    reasons,
                    timings,
                    ..
                } => {
                    states.iter().map(|(k, _)| k.len() + 8).sum::<usize>()
                        + pairs(reasons)
                        + timings.iter().map(|(k, _)| k.len() + 32).sum::<usize>()
                }
                FromScheduler::Submitted {
                    refused,
                    unplaceable,
                    ..
                } => pairs(refused) + pairs(unplaceable),
                FromScheduler::Retried { refused, .. } => pairs(refused),
                FromScheduler::Placed { puts: lists, .. }
                | FromScheduler::WhoHas { holders: lists, .. }
                | FromScheduler::HasWhat {
                    holdings: lists, ..
                } => lists
                    .iter()
                    .map(|(k, v)| k.len() + v.iter().map(|s| s.len() + 8).sum::<usize>())
                    .sum::<usize>(),
                FromScheduler::TaskList { tasks, .. } => tasks
                    .iter()
                    .map(|(k, _, f)| k.len() + f.len() + 8)
                    .sum::<usize>(),
                FromScheduler::Workers { workers, .. } => workers.len() * 256,
                FromScheduler::Actors { actors, .. } => actors.len() * 128,
                FromScheduler::Failed { message, .. } => message.len(),
                FromScheduler::Free { keys }
                | FromScheduler::Cancel { keys }
                | FromScheduler::Steal { keys } => keys.iter().map(|k| k.len() + 8).sum::<usize>(),
                _ => 0,
            }
    }
}

/// The weight of a list of (key, sentence) pairs.
fn pairs(list: &[(String, String)]) -> usize {
    list.iter().map(|(a, b)| a.len() + b.len() + 8).sum()
}

impl Weigh for ToPeer {
    fn weight(&self) -> usize {
        MESSAGE_OVERHEAD
            + match self {
                ToPeer::Fetch { keys, .. } => keys.iter().map(String::len).sum::<usize>(),
                ToPeer::Logs { key, .. } | ToPeer::Read { key, .. } => key.len(),
                ToPeer::Put { key, bytes, .. } => key.len() + bytes.len(),
                ToPeer::Call { args, .. } => args
                    .iter()
                    .map(|a| match a {
                        CallArg::Value(b) | CallArg::Stdin(b) => b.len(),
                        CallArg::Word(w) => w.len(),
                    })
                    .sum::<usize>(),
            }
    }
}

impl Weigh for FromPeer {
    fn weight(&self) -> usize {
        MESSAGE_OVERHEAD
            + match self {
                FromPeer::Data { values, .. } => values
                    .iter()
                    .map(|(_, v)| v.as_ref().map_or(0, Bytes::len))
                    .sum::<usize>(),
                FromPeer::Called { result, .. } => result.as_ref().map_or(0, Bytes::len),
                FromPeer::Range { bytes, .. } => bytes.len(),
                FromPeer::Put { error, .. } => error.as_ref().map_or(0, String::len),
                FromPeer::Logs { log, .. } => {
                    log.as_ref().map_or(0, |l| l.stdout.len() + l.stderr.len())
                }
            }
    }
}

impl Weigh for u8 {
    fn weight(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrorKind, Located, TaskError};

    fn started(keys: &[&str]) -> ToScheduler {
        ToScheduler::Started {
            keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn finished(key: &str) -> ToScheduler {
        finished_all(&[key])
    }

    fn finished_all(keys: &[&str]) -> ToScheduler {
        ToScheduler::Finished {
            results: keys
                .iter()
                .map(|key| {
                    (
                        key.to_string(),
                        Located {
                            inline: None,
                            who_has: vec![],
                            nbytes: 0,
                        },
                    )
                })
                .collect(),
        }
    }

    fn erred(key: &str) -> ToScheduler {
        let e = TaskError::new(ErrorKind::Panic, "no".into(), key);
        ToScheduler::Erred {
            errors: vec![(key.to_string(), 1, e)],
        }
    }

    /// The batch after coalescing, and as it should be, compared as they
    /// print (messages have no equality of their own).
    fn assert_coalesces(mut batch: Vec<ToScheduler>, expected: Vec<ToScheduler>) {
        ToScheduler::coalesce(&mut batch);
        assert_eq!(format!("{batch:?}"), format!("{expected:?}"));
    }

    #[test]
    fn a_start_is_left_out_when_its_end_follows_in_the_same_batch() {
        assert_coalesces(
            vec![
                started(&["a", "b", "c"]),
                finished("a"),
                started(&["d"]),
                erred("c"),
                erred("d"),
            ],
            vec![started(&["b"]), finished("a"), erred("c"), erred("d")],
        );
    }

    #[test]
    fn results_that_follow_one_another_go_as_one_message() {
        assert_coalesces(
            vec![
                started(&["x"]),
                finished("a"),
                finished("b"),
                erred("c"),
                finished("d"),
                started(&["e"]),
                finished("e"),
                finished("f"),
            ],
            vec![
                started(&["x"]),
                finished_all(&["a", "b"]),
                erred("c"),
                finished_all(&["d", "e", "f"]),
            ],
        );
    }

    #[test]
    fn a_start_after_an_end_of_the_same_key_stays() {
        // Another run of the task, sent again since it ended: its start
        // is news.
        assert_coalesces(
            vec![finished("a"), started(&["a"]), started(&["b"])],
            vec![finished("a"), started(&["a"]), started(&["b"])],
        );
        assert_coalesces(vec![started(&["a"])], vec![started(&["a"])]);
    }
}

#[cfg(test)]
mod weight_tests {
    use super::*;

    #[test]
    fn big_answers_and_primitive_values_weigh_what_they_carry() {
        let big = Bytes::from(vec![0u8; 1 << 20]);
        let reply = FromScheduler::Primitive {
            id: 1,
            reply: OpReply::Item(Arg::Value(big.clone())),
        };
        assert!(reply.weight() >= 1 << 20);
        let put = ToScheduler::Primitive {
            id: 1,
            session: 0,
            task: None,
            op: Op::VarSet {
                name: "v".into(),
                item: Arg::Value(big),
            },
        };
        assert!(put.weight() >= 1 << 20);
        let keys: Vec<(String, Vec<String>)> = (0..1000)
            .map(|i| (format!("k-{i:032}"), vec!["10.0.0.1:1234".into()]))
            .collect();
        let holdings = FromScheduler::HasWhat {
            id: 1,
            holdings: keys,
        };
        assert!(holdings.weight() > 30_000);
    }
}
