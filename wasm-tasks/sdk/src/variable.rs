//! Global named variables.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::dtask::task::variable as wit;
use crate::value::timeout_ms;
use crate::{Future, Item, Result};

/// A global named variable holding one value or future.
///
/// ```no_run
/// # fn main() -> dtask_sdk::Result<()> {
/// use dtask_sdk::Variable;
///
/// let threshold = Variable::new("threshold");
/// threshold.set(&0.5f64)?;
/// let t: f64 = threshold.get()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    name: String,
}

impl Variable {
    /// The variable called `name`.
    pub fn new(name: impl Into<String>) -> Variable {
        Variable { name: name.into() }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets it to a value, replacing what it held.
    pub fn set<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.set_item(&Item::value(value)?)
    }

    /// Sets it to a future, whose key it keeps alive while it holds it.
    pub fn set_future(&self, future: &Future) -> Result<()> {
        self.set_item(&Item::from(future))
    }

    /// Sets it to an item.
    pub fn set_item(&self, item: &Item) -> Result<()> {
        Ok(wit::set(&self.name, &item.clone().into_wit())?)
    }

    /// Its value decoded as `T`, waiting until it is set. A future is an
    /// [`Error::Decode`](crate::Error::Decode); use
    /// [`get_item`](Variable::get_item) for variables holding futures.
    pub fn get<T: DeserializeOwned>(&self) -> Result<T> {
        self.get_item()?.decode()
    }

    /// Like [`get`](Variable::get), waiting at most `timeout`:
    /// [`Error::Timeout`](crate::Error::Timeout) if it is still unset.
    pub fn get_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        self.get_item_timeout(timeout)?.decode()
    }

    /// Its item, value or future, waiting until it is set.
    pub fn get_item(&self) -> Result<Item> {
        self.get_item_within(None)
    }

    /// Like [`get_item`](Variable::get_item), waiting at most `timeout`.
    pub fn get_item_timeout(&self, timeout: Duration) -> Result<Item> {
        self.get_item_within(Some(timeout))
    }

    fn get_item_within(&self, timeout: Option<Duration>) -> Result<Item> {
        Ok(Item::from_wit(wit::get(&self.name, timeout_ms(timeout))?))
    }

    /// Deletes the variable.
    pub fn delete(&self) -> Result<()> {
        Ok(wit::delete(&self.name)?)
    }
}
