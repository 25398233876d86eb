//! How many bytes a message weighs, to cap the batches a connection writes.

use super::*;

/// Roughly how many bytes a message holds, for bounding what waits to be
/// sent on a connection (see `dtask_runtime::connection::Sender`). Payloads
/// count in full; the rest is a flat allowance per message.
pub trait Weigh {
    /// Approximate bytes.
    fn weight(&self) -> usize;
}

/// The flat allowance per message beyond its payloads.
const MESSAGE_OVERHEAD: usize = 64;

fn args_weight(args: &[Arg]) -> usize {
    args.iter()
        .map(|a| match a {
            Arg::Value(b) => b.len(),
            Arg::Future(k) => k.len(),
        })
        .sum()
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
                ToScheduler::Finished { results } | ToScheduler::Holding { results } => results
                    .iter()
                    .map(|(k, at)| k.len() + at.inline.as_ref().map_or(0, Bytes::len))
                    .sum::<usize>(),
                ToScheduler::Publish { message, .. } => message.len(),
                ToScheduler::Watch { keys }
                | ToScheduler::Release { keys }
                | ToScheduler::Started { keys }
                | ToScheduler::Stolen { keys } => keys.iter().map(String::len).sum::<usize>(),
                _ => 0,
            }
    }
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
                _ => 0,
            }
    }
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
                        CallArg::Value(b) => b.len(),
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
