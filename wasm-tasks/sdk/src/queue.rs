//! Global first-in first-out queues.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::dtask::task::queue as wit;
use crate::value::timeout_ms;
use crate::{Future, Item, Result};

/// A global first-in first-out queue of values and futures, named so that
/// tasks, clients and the shell can share it.
///
/// The queue is created by its first `put`; a `maxsize` given with
/// [`Queue::with_maxsize`] applies if that put creates it.
///
/// ```no_run
/// # fn main() -> dtask_sdk::Result<()> {
/// use dtask_sdk::Queue;
///
/// let q = Queue::new("jobs");
/// q.put(&42i64)?;
/// let job: i64 = q.get()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    name: String,
    maxsize: Option<u64>,
}

impl Queue {
    /// The queue called `name`, whatever its size limit.
    pub fn new(name: impl Into<String>) -> Queue {
        Queue {
            name: name.into(),
            maxsize: None,
        }
    }

    /// The queue called `name`, holding at most `maxsize` items (0:
    /// unbounded) if a put through this handle creates it. Putting through
    /// it is an error if the queue exists with another limit.
    pub fn with_maxsize(name: impl Into<String>, maxsize: u64) -> Queue {
        Queue {
            name: name.into(),
            maxsize: Some(maxsize),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Appends a value, waiting while the queue is full.
    pub fn put<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.put_item(&Item::value(value)?, None)
    }

    /// Appends a value, waiting at most `timeout` while the queue is full.
    pub fn put_timeout<T: Serialize + ?Sized>(&self, value: &T, timeout: Duration) -> Result<()> {
        self.put_item(&Item::value(value)?, Some(timeout))
    }

    /// Appends a future, waiting while the queue is full. The queue keeps
    /// the future's key alive while it holds it.
    pub fn put_future(&self, future: &Future) -> Result<()> {
        self.put_item(&Item::from(future), None)
    }

    /// Appends an item, waiting at most `timeout` (`None`: for ever) while
    /// the queue is full.
    pub fn put_item(&self, item: &Item, timeout: Option<Duration>) -> Result<()> {
        Ok(wit::put(
            &self.name,
            &item.clone().into_wit(),
            self.maxsize,
            timeout_ms(timeout),
        )?)
    }

    /// Takes the oldest item and decodes it as `T`, waiting while the queue
    /// is empty. A future item is an [`Error::Decode`](crate::Error::Decode);
    /// use [`get_item`](Queue::get_item) for queues of futures.
    pub fn get<T: DeserializeOwned>(&self) -> Result<T> {
        self.get_item()?.decode()
    }

    /// Like [`get`](Queue::get), waiting at most `timeout`.
    pub fn get_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        self.get_item_timeout(timeout)?.decode()
    }

    /// Takes the oldest item, value or future, waiting while the queue is
    /// empty.
    pub fn get_item(&self) -> Result<Item> {
        self.get_item_within(None)
    }

    /// Like [`get_item`](Queue::get_item), waiting at most `timeout`.
    pub fn get_item_timeout(&self, timeout: Duration) -> Result<Item> {
        self.get_item_within(Some(timeout))
    }

    fn get_item_within(&self, timeout: Option<Duration>) -> Result<Item> {
        Ok(Item::from_wit(wit::get(&self.name, timeout_ms(timeout))?))
    }

    /// How many items the queue holds.
    pub fn len(&self) -> Result<u64> {
        Ok(wit::len(&self.name)?)
    }

    /// Whether the queue holds no items.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}
