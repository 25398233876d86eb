//! Publish and subscribe.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::dtask::task::pubsub as wit;
use crate::value::timeout_ms;
use crate::{Result, decode, encode};

/// Sends `message` to every current subscriber of `topic`.
pub fn publish<T: Serialize + ?Sized>(topic: &str, message: &T) -> Result<()> {
    Ok(wit::publish(topic, &encode(message)?)?)
}

/// A subscription to a topic, receiving every message published after it
/// was created, in order per publisher, decoded as `T`. Dropping it
/// unsubscribes.
///
/// As an [`Iterator`] it waits for ever for each message and never ends;
/// an error (a message that does not decode, the scheduler gone) comes
/// through as `Some(Err(..))`.
///
/// ```no_run
/// # fn main() -> dtask_sdk::Result<()> {
/// use dtask_sdk::Subscription;
///
/// let prices = Subscription::<f64>::new("prices");
/// for price in prices.take(3) {
///     println!("{}", price?);
/// }
/// # Ok(()) }
/// ```
pub struct Subscription<T> {
    topic: String,
    inner: wit::Subscription,
    _messages: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Subscription<T> {
    /// Subscribes to `topic`.
    pub fn new(topic: impl Into<String>) -> Subscription<T> {
        let topic = topic.into();
        let inner = wit::Subscription::new(&topic);
        Subscription {
            topic,
            inner,
            _messages: PhantomData,
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The next message, waiting at most `timeout`:
    /// [`Error::Timeout`](crate::Error::Timeout) if none arrives.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<T> {
        self.receive(Some(timeout))
    }

    fn receive(&mut self, timeout: Option<Duration>) -> Result<T> {
        let bytes = self.inner.next(timeout_ms(timeout))?;
        decode(&bytes)
    }
}

impl<T: DeserializeOwned> Iterator for Subscription<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        Some(self.receive(None))
    }
}

impl<T> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}
