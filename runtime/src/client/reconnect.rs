//! The client's connection: the first connect, and reconnecting within the
//! grace after the scheduler went away.

use super::*;

impl Inner {
    /// `waiters` of `key` were told it ended as `outcome`: each reading
    /// one that will not read it (it stopped listening, or the result is
    /// not one the scheduler holds for readers) is done with it now; the
    /// others are when they have read it ([`Client::read_over`]).
    fn told(&self, key: &str, outcome: &Outcome, waiters: &[Waiter]) {
        if !waiters.iter().any(|(_, reads)| *reads) {
            return;
        }
        let held = outcome.held_for_readers();
        let done = waiters
            .iter()
            .filter(|(tx, reads)| *reads && (!held || tx.is_closed()))
            .count() as u32;
        let let_go = {
            let mut reading = self.reading.lock().expect("reading lock");
            if held && let Some(r) = reading.get_mut(key) {
                r.held = true;
            }
            done_with(&mut reading, key, done)
        };
        if let_go {
            self.let_go(vec![key.to_string()]);
        }
    }

    /// Each of `keys` has one reading waiter fewer (see
    /// [`Client::watch_reading_into`]): those that have none left are let
    /// go of, in one message.
    pub(super) fn reads_over<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let done: Vec<String> = {
            let mut reading = self.reading.lock().expect("reading lock");
            keys.into_iter()
                .filter(|k| done_with(&mut reading, k, 1))
                .map(str::to_string)
                .collect()
        };
        if !done.is_empty() {
            self.let_go(done);
        }
    }

    /// Tells the scheduler that this connection's readers are done with
    /// `keys`. After a broken connection, sent on the next: the scheduler
    /// let go of the last one's holds as it closed, and any it holds now
    /// for these keys are for waiters that are done.
    fn let_go(&self, keys: Vec<String>) {
        let _ = self
            .tx
            .lock()
            .expect("sender lock")
            .send(ToScheduler::DoneReading { keys });
    }

    pub(super) fn dispatch(&self, msg: FromScheduler) {
        let msg = match msg {
            FromScheduler::Done { key, outcome } => {
                let senders = self
                    .watchers
                    .lock()
                    .expect("watchers lock")
                    .as_mut()
                    .and_then(|w| w.remove(&key))
                    .unwrap_or_default();
                self.told(&key, &outcome, &senders);
                // The last watcher takes the key and outcome as they came.
                if let Some(((last, _), others)) = senders.split_last() {
                    for (tx, _) in others {
                        let _ = tx.send((key.clone(), outcome.clone()));
                    }
                    let _ = last.send((key, outcome));
                }
                return;
            }
            msg => msg,
        };
        let Some(id) = msg.request_id() else {
            match &msg {
                FromScheduler::Message {
                    subscription,
                    message,
                } => {
                    let subs = self.subscriptions.lock().expect("subscriptions lock");
                    if let Some((_, tx)) = subs.get(subscription) {
                        let _ = tx.send(message.clone());
                    }
                }
                // The scheduler is stopping for good: once the connection
                // closes, nothing is waited for.
                FromScheduler::Shutdown => {
                    self.grace_ms.store(0, std::sync::atomic::Ordering::Relaxed);
                    self.shut_down
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                // Any message says the scheduler is there.
                FromScheduler::Pong => {}
                other => tracing::warn!("unexpected message for a client: {other:?}"),
            }
            return;
        };
        let tx = self
            .replies
            .lock()
            .expect("replies lock")
            .as_mut()
            .and_then(|r| r.remove(&id));
        // Answered: never asked again.
        self.resend.lock().expect("resend lock").remove(&id);
        if let Some(tx) = tx {
            let _ = tx.send(msg);
        }
    }
}

/// The reconnect grace from `DTASK_RECONNECT_GRACE` (`500ms`, `30s`, `2m`
/// or seconds), else 30 seconds.
pub(super) fn default_grace() -> Duration {
    const DEFAULT: Duration = Duration::from_secs(30);
    let Ok(s) = std::env::var("DTASK_RECONNECT_GRACE") else {
        return DEFAULT;
    };
    crate::config::parse_duration(&s).unwrap_or_else(|e| {
        tracing::warn!("DTASK_RECONNECT_GRACE={s:?} is not a duration ({e}); using {DEFAULT:?}");
        DEFAULT
    })
}

/// Connects to `addr`. A scheduler that is not listening may be restarting:
/// keep trying for `grace` (saying so once), so a command started during a
/// restart waits like one that was already connected. A refusal is final.
/// An attempt that hangs (an address that drops what is sent to it, a
/// listener that never answers) ends with the grace too, not the
/// connection's own longer timeouts; the first attempt gets at least
/// [`FIRST_ATTEMPT`] however short the grace.
pub(super) async fn first_connect(
    addr: &str,
    hello: &Hello,
    grace: Duration,
) -> Result<Reconnected, ClientError> {
    let began = tokio::time::Instant::now();
    let deadline = began + grace;
    let mut said = false;
    loop {
        let attempt = connection::connect::<FromScheduler, ToScheduler>(addr, hello.clone());
        let attempt =
            match tokio::time::timeout_at(deadline.max(began + FIRST_ATTEMPT), attempt).await {
                Ok(attempt) => attempt,
                Err(_) => {
                    return Err(ClientError::Connect {
                        addr: addr.to_string(),
                        reason: format!(
                            "no answer within {:?} (DTASK_RECONNECT_GRACE)",
                            grace.max(FIRST_ATTEMPT)
                        ),
                    });
                }
            };
        match attempt {
            Ok((admitted, tx, rx)) => return Ok((tx, rx, admitted.max_value)),
            // Bad input, not a scheduler that is away.
            Err(connection::WireError::Address(why)) => return Err(ClientError::Invalid(why)),
            Err(e) if e.is_final() => {
                return Err(ClientError::Connect {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                });
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(ClientError::Connect {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                });
            }
            Err(e) => {
                // A scheduler that is merely slow to accept is not worth a
                // word; one that stays away for a second is.
                if !said && began.elapsed() >= Duration::from_secs(1) {
                    said = true;
                    tracing::warn!(
                        "cannot reach the scheduler at {addr} ({e}); retrying for up to \
                         {grace:?} in case it is restarting (DTASK_RECONNECT_GRACE)"
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The least time a client's first connection attempt gets.
const FIRST_ATTEMPT: Duration = Duration::from_secs(1);

/// A connection made: its sender and receiver, and the largest value the
/// scheduler said it takes.
type Reconnected = (
    Sender<ToScheduler>,
    connection::Receiver<FromScheduler>,
    Option<u64>,
);

/// Connects again to `addr`, trying until `grace` has passed; after the
/// first failed attempt, starts the scheduler again with `restart`, if
/// given (once, within the grace). Hands `restart` back if it was not
/// used.
pub(super) async fn reconnect(
    addr: &str,
    hello: &Hello,
    grace: Duration,
    mut restart: Option<super::Restart>,
) -> (Option<Reconnected>, Option<super::Restart>) {
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        // An attempt at an address that answers nothing ends with the grace.
        let attempt = connection::connect::<FromScheduler, ToScheduler>(addr, hello.clone());
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok((admitted, tx, rx))) => return (Some((tx, rx, admitted.max_value)), restart),
            Ok(Err(why)) if why.is_final() => {
                tracing::warn!("the scheduler at {addr} refused to take this client back: {why}");
                return (None, restart);
            }
            Ok(Err(why)) => {
                if let Some(start) = restart.take() {
                    tracing::warn!("the scheduler at {addr} is gone ({why}); starting it again");
                    match tokio::time::timeout_at(deadline, start()).await {
                        Ok(Ok(())) => continue,
                        Ok(Err(e)) => tracing::warn!("cannot start the scheduler again: {e}"),
                        Err(_) => break,
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(_) => break,
        }
    }
    (None, restart)
}

/// `n` reading waiters of `key` in `reading` are done with it: whether
/// they were the last and the scheduler holds it for them (so it is to be
/// let go of).
fn done_with(reading: &mut rustc_hash::FxHashMap<String, Reading>, key: &str, n: u32) -> bool {
    match reading.get_mut(key) {
        Some(r) if r.waiters > n => {
            r.waiters -= n;
            false
        }
        Some(_) if n > 0 => reading.remove(key).is_some_and(|r| r.held),
        _ => false,
    }
}
