//! Requests that must not be done twice (a retry, a new actor, a scatter
//! through the scheduler), answered once per client session and request
//! id.
//!
//! A client asks such a request again on its next connection when the
//! connection it asked on broke before the answer came: the scheduler may
//! have done it and lost only the answer. Each names the asking client's
//! session, so the scheduler knows the second copy for what it is: it
//! answers it with the answer given to the first, or, while the first is
//! still being worked on (an actor being constructed, a scatter being
//! stored), sends that answer, when it comes, to the connection that asked
//! last. Kept in memory only: a restarted scheduler does a request asked
//! again afresh.

use super::ClientId;
use crate::protocol::FromScheduler;
use rustc_hash::FxHashMap as HashMap;
use std::collections::VecDeque;

/// Answers kept to give again, the oldest dropped first: far more than
/// the requests of this kind clients reconnecting at once have in flight.
/// (A client whose answer was dropped before it asked again has its
/// request done again: a retry refused as not erred, a new actor refused
/// as existing.)
const KEPT: usize = 4096;

/// Most bytes of answers kept, the oldest dropped first.
const KEPT_BYTES: usize = 16 << 20;

/// Largest answer kept whole; a bigger one (a retry refusing a great many
/// keys) is kept as a failure saying what to do instead.
const KEPT_ONE: usize = 64 << 10;

/// A request of a session: (session, request id).
type Asked = (u64, u64);

/// See the module docs.
#[derive(Default)]
pub(super) struct Once {
    /// Requests being worked on: the connection to answer (the last that
    /// asked).
    pending: HashMap<Asked, ClientId>,
    /// The request of each connection's request id being worked on, for
    /// its answer, which the state machine addresses to the connection
    /// that asked first.
    by_connection: HashMap<(ClientId, u64), Asked>,
    /// Answers given, for a copy asked again.
    answered: HashMap<Asked, FromScheduler>,
    /// The keys of `answered`, oldest first.
    order: VecDeque<Asked>,
    /// The weight of `answered`'s answers.
    bytes: usize,
}

/// What to do with a request that must not be done twice.
#[derive(Debug, PartialEq)]
pub(super) enum Ask {
    /// Do it: its first copy.
    Do,
    /// Answer it with this, given to its first copy.
    Answer(FromScheduler),
    /// Nothing now: its first copy is being worked on, and the answer goes
    /// to this connection.
    Wait,
}

impl Once {
    /// Connection `from` asks request `id` of `session` (0: none, which is
    /// always done).
    pub(super) fn ask(&mut self, from: ClientId, session: u64, id: u64) -> Ask {
        if session == 0 {
            return Ask::Do;
        }
        let asked = (session, id);
        if let Some(answer) = self.answered.get(&asked) {
            return Ask::Answer(answer.clone());
        }
        if let Some(to) = self.pending.get_mut(&asked) {
            // Connection ids only grow: a copy from an older connection,
            // read late (its reader was held back), does not take the
            // answer from the newer one.
            *to = (*to).max(from);
            return Ask::Wait;
        }
        self.pending.insert(asked, from);
        self.by_connection.insert((from, id), asked);
        Ask::Do
    }

    /// The answer `msg` to request `id` of connection `to` is going out:
    /// the connection it goes to (another, if its session asked again
    /// there), kept for a copy asked later.
    pub(super) fn answered(&mut self, to: ClientId, id: u64, msg: &FromScheduler) -> ClientId {
        let Some(asked) = self.by_connection.remove(&(to, id)) else {
            return to;
        };
        let to = self.pending.remove(&asked).unwrap_or(to);
        let kept = keepable(id, msg);
        self.bytes += crate::protocol::Weigh::weight(&kept);
        self.answered.insert(asked, kept);
        self.order.push_back(asked);
        while self.order.len() > KEPT || self.bytes > KEPT_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.answered.remove(&oldest) {
                self.bytes -= crate::protocol::Weigh::weight(&gone);
            }
        }
        to
    }
}

/// What is kept of answer `msg` to request `id`: itself, or, past
/// [`KEPT_ONE`], a failure saying it was too big to keep.
fn keepable(id: u64, msg: &FromScheduler) -> FromScheduler {
    let weight = crate::protocol::Weigh::weight(msg);
    if weight <= KEPT_ONE {
        return msg.clone();
    }
    FromScheduler::Failed {
        id,
        message: format!(
            "the answer ({}) was lost with the connection and is too big to keep: \
             look at the keys' states (dtask status) before asking again",
            crate::value::human_bytes(weight as u64)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retried(id: u64) -> FromScheduler {
        FromScheduler::Retried {
            id,
            refused: Vec::new(),
        }
    }

    #[test]
    fn a_request_asked_again_is_answered_as_the_first_was() {
        let mut once = Once::default();
        assert_eq!(once.ask(1, 7, 3), Ask::Do);
        assert_eq!(once.answered(1, 3, &retried(3)), 1);
        // Its answer was lost with connection 1; connection 2 asks again.
        assert_eq!(once.ask(2, 7, 3), Ask::Answer(retried(3)));
        // Another session's request of the same id is its own.
        assert_eq!(once.ask(2, 8, 3), Ask::Do);
    }

    #[test]
    fn a_request_asked_again_while_worked_on_is_answered_where_asked_last() {
        let mut once = Once::default();
        assert_eq!(once.ask(1, 7, 3), Ask::Do);
        assert_eq!(once.ask(2, 7, 3), Ask::Wait);
        // The answer, addressed to the first connection, goes to the
        // second.
        assert_eq!(once.answered(1, 3, &retried(3)), 2);
        assert_eq!(once.ask(3, 7, 3), Ask::Answer(retried(3)));
    }

    #[test]
    fn without_a_session_every_copy_is_done_and_answers_go_where_addressed() {
        let mut once = Once::default();
        assert_eq!(once.ask(1, 0, 3), Ask::Do);
        assert_eq!(once.ask(1, 0, 3), Ask::Do);
        assert_eq!(once.answered(1, 3, &retried(3)), 1);
    }

    #[test]
    fn a_late_copy_from_an_older_connection_leaves_the_answer_to_the_newer() {
        let mut once = Once::default();
        assert_eq!(once.ask(5, 7, 3), Ask::Do);
        assert_eq!(once.ask(4, 7, 3), Ask::Wait);
        assert_eq!(once.answered(5, 3, &retried(3)), 5);
    }

    #[test]
    fn a_big_answer_is_kept_as_a_failure_and_bytes_are_bounded() {
        let mut once = Once::default();
        let big = FromScheduler::Retried {
            id: 3,
            refused: (0..10_000)
                .map(|i| (format!("key-{i}"), "it has not erred".to_string()))
                .collect(),
        };
        once.ask(1, 7, 3);
        once.answered(1, 3, &big);
        assert!(matches!(
            once.ask(2, 7, 3),
            Ask::Answer(FromScheduler::Failed { id: 3, .. })
        ));
        assert!(once.bytes < KEPT_ONE);
        for id in 10..10 + KEPT as u64 {
            once.ask(1, 7, id);
            once.answered(1, id, &retried(id));
        }
        assert!(once.bytes <= KEPT_BYTES);
        assert_eq!(once.answered.len(), KEPT);
    }

    #[test]
    fn the_oldest_answers_are_forgotten_first() {
        let mut once = Once::default();
        for id in 0..=KEPT as u64 {
            assert_eq!(once.ask(1, 7, id), Ask::Do);
            once.answered(1, id, &retried(id));
        }
        assert_eq!(once.answered.len(), KEPT);
        assert_eq!(once.ask(2, 7, 0), Ask::Do);
        assert_eq!(
            once.ask(2, 7, KEPT as u64),
            Ask::Answer(retried(KEPT as u64))
        );
    }
}
