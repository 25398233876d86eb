//! The task acting as a client of the cluster: submit, map, gather, wait.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::dtask::task::client as wit;
use crate::value::timeout_ms;
use crate::{Error, IntoArgs, Result, decode, encode};

/// The cluster as the running task sees it; see [`client`].
///
/// A `Client` is a zero-sized handle: create one wherever it is needed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Client {
    _private: (),
}

/// A handle for submitting work and waiting for it from inside a task.
///
/// ```no_run
/// # fn main() -> dtask_sdk::Result<()> {
/// let c = dtask_sdk::client();
/// let a = c.submit("inc", (1,))?;
/// let b = c.submit("add", (&a, 10))?;
/// let sums: Vec<i64> = c.gather(&[a, b])?;
/// # Ok(()) }
/// ```
pub fn client() -> Client {
    Client { _private: () }
}

/// A task's future: the key naming its result.
///
/// A future is only a key; cloning it is cheap and dropping it does
/// nothing. Keys this task submitted are held until the task ends or they
/// are [released](Future::release); use [`Client::fire_and_forget`] for work
/// that must outlive the task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Future {
    key: String,
}

impl Future {
    /// The future named by `key`, such as one printed by `dtask submit`.
    pub fn from_key(key: impl Into<String>) -> Future {
        Future { key: key.into() }
    }

    /// Its key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Its key, consuming the future.
    pub fn into_key(self) -> String {
        self.key
    }

    /// Waits for the result and decodes it as `T`.
    pub fn result<T: DeserializeOwned>(&self) -> Result<T> {
        self.result_within(None)
    }

    /// Waits at most `timeout` for the result and decodes it as `T`.
    pub fn result_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        self.result_within(Some(timeout))
    }

    fn result_within<T: DeserializeOwned>(&self, timeout: Option<Duration>) -> Result<T> {
        let values = wit::gather(std::slice::from_ref(&self.key), timeout_ms(timeout))?;
        match values.as_slice() {
            [value] => decode(value),
            _ => Err(Error::Other(format!(
                "the host returned {} values for one key",
                values.len()
            ))),
        }
    }

    /// Stops holding the key.
    pub fn release(self) {
        wit::release(std::slice::from_ref(&self.key));
    }

    /// Cancels the task (and its dependents) unless other clients hold it.
    pub fn cancel(&self) {
        wit::cancel(std::slice::from_ref(&self.key), false);
    }
}

impl fmt::Display for Future {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

/// Whether [`Client::wait`] returns when all futures are done or when the
/// first one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitMode {
    /// Return once every future is done.
    #[default]
    AllCompleted,
    /// Return once any future is done.
    FirstCompleted,
}

/// How a submitted task runs; build it with the setters:
///
/// ```no_run
/// # fn main() -> dtask_sdk::Result<()> {
/// use std::time::Duration;
/// use dtask_sdk::{client, SubmitOptions};
///
/// let opts = SubmitOptions::new().pure(false).retries(2).timeout(Duration::from_secs(5));
/// let f = client().submit_with("work", ("input",), &opts)?;
/// # Ok(()) }
/// ```
///
/// The defaults: the calling task's own module, a key computed from the
/// call (pure), the host's default priority (one more than the caller), no
/// retries and no timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitOptions {
    module: Option<String>,
    key: Option<String>,
    pure: bool,
    priority: Option<i32>,
    retries: u32,
    timeout: Option<Duration>,
}

impl Default for SubmitOptions {
    fn default() -> SubmitOptions {
        SubmitOptions {
            module: None,
            key: None,
            pure: true,
            priority: None,
            retries: 0,
            timeout: None,
        }
    }
}

impl SubmitOptions {
    /// The default options.
    pub fn new() -> SubmitOptions {
        SubmitOptions::default()
    }

    /// Calls a function of another module, given by its hex BLAKE3 hash.
    pub fn module(mut self, hash: impl Into<String>) -> SubmitOptions {
        self.module = Some(hash.into());
        self
    }

    /// Uses this key instead of a computed one.
    pub fn key(mut self, key: impl Into<String>) -> SubmitOptions {
        self.key = Some(key.into());
        self
    }

    /// `false` gives the task a random key, so that submitting the same
    /// call twice runs it twice.
    pub fn pure(mut self, pure: bool) -> SubmitOptions {
        self.pure = pure;
        self
    }

    /// Higher priorities run earlier.
    pub fn priority(mut self, priority: i32) -> SubmitOptions {
        self.priority = Some(priority);
        self
    }

    /// Runs the task again up to `retries` times after an error.
    pub fn retries(mut self, retries: u32) -> SubmitOptions {
        self.retries = retries;
        self
    }

    /// Wall-clock limit of one run.
    pub fn timeout(mut self, timeout: Duration) -> SubmitOptions {
        self.timeout = Some(timeout);
        self
    }

    fn to_wit(&self) -> wit::SubmitOptions {
        wit::SubmitOptions {
            module: self.module.clone(),
            key: self.key.clone(),
            pure: self.pure,
            priority: self.priority,
            retries: self.retries,
            timeout_ms: timeout_ms(self.timeout),
        }
    }
}

fn keys(futures: &[Future]) -> Vec<String> {
    futures.iter().map(|f| f.key.clone()).collect()
}

fn futures(keys: Vec<String>) -> Vec<Future> {
    keys.into_iter().map(Future::from_key).collect()
}

pub(crate) fn wit_items(
    args: impl IntoArgs,
) -> Result<Vec<crate::bindings::dtask::task::types::Item>> {
    Ok(args
        .into_items()?
        .into_iter()
        .map(|item| item.into_wit())
        .collect())
}

impl Client {
    /// Submits a call of `function` in this task's own module with the
    /// default options; returns its future.
    ///
    /// `args` is a tuple whose elements are values or futures:
    /// `client().submit("add", (&x, 1))`.
    pub fn submit(&self, function: &str, args: impl IntoArgs) -> Result<Future> {
        self.submit_with(function, args, &SubmitOptions::default())
    }

    /// Submits a call of `function` with `options`; returns its future.
    pub fn submit_with(
        &self,
        function: &str,
        args: impl IntoArgs,
        options: &SubmitOptions,
    ) -> Result<Future> {
        let key = wit::submit(function, &wit_items(args)?, &options.to_wit())?;
        Ok(Future::from_key(key))
    }

    /// Submits one call of `function` per argument list, with the default
    /// options; returns their futures in order.
    ///
    /// ```no_run
    /// # fn main() -> dtask_sdk::Result<()> {
    /// let c = dtask_sdk::client();
    /// let futures = c.map("inc", (0..10).map(|i| (i,)))?;
    /// let results: Vec<i64> = c.gather(&futures)?;
    /// # Ok(()) }
    /// ```
    pub fn map<I>(&self, function: &str, calls: I) -> Result<Vec<Future>>
    where
        I: IntoIterator,
        I::Item: IntoArgs,
    {
        self.map_with(function, calls, &SubmitOptions::default())
    }

    /// Submits one call of `function` per argument list, with `options`;
    /// returns their futures in order.
    pub fn map_with<I>(
        &self,
        function: &str,
        calls: I,
        options: &SubmitOptions,
    ) -> Result<Vec<Future>>
    where
        I: IntoIterator,
        I::Item: IntoArgs,
    {
        let calls = calls
            .into_iter()
            .map(wit_items)
            .collect::<Result<Vec<_>>>()?;
        Ok(futures(wit::map(function, &calls, &options.to_wit())?))
    }

    /// Waits for all `futures` and returns their results decoded as `T`, in
    /// order. Fails with the first error or cancellation among them.
    pub fn gather<T: DeserializeOwned>(&self, futures: &[Future]) -> Result<Vec<T>> {
        self.gather_within(futures, None)
    }

    /// Like [`gather`](Client::gather), waiting at most `timeout`.
    pub fn gather_timeout<T: DeserializeOwned>(
        &self,
        futures: &[Future],
        timeout: Duration,
    ) -> Result<Vec<T>> {
        self.gather_within(futures, Some(timeout))
    }

    fn gather_within<T: DeserializeOwned>(
        &self,
        futures: &[Future],
        timeout: Option<Duration>,
    ) -> Result<Vec<T>> {
        self.gather_raw(futures, timeout)?
            .iter()
            .map(|value| decode(value))
            .collect()
    }

    /// Waits for all `futures` (at most `timeout`; `None` for ever) and
    /// returns their results still encoded, for results of differing types.
    pub fn gather_raw(
        &self,
        futures: &[Future],
        timeout: Option<Duration>,
    ) -> Result<Vec<Vec<u8>>> {
        if futures.is_empty() {
            return Ok(Vec::new());
        }
        Ok(wit::gather(&keys(futures), timeout_ms(timeout))?)
    }

    /// Waits until all (or, with [`WaitMode::FirstCompleted`], the first)
    /// of `futures` are done, finished or failed, at most `timeout` (`None`
    /// waits for ever); returns the futures that are done.
    pub fn wait(
        &self,
        futures: &[Future],
        mode: WaitMode,
        timeout: Option<Duration>,
    ) -> Result<Vec<Future>> {
        let mode = match mode {
            WaitMode::AllCompleted => wit::WaitMode::AllCompleted,
            WaitMode::FirstCompleted => wit::WaitMode::FirstCompleted,
        };
        Ok(self::futures(wit::wait(
            &keys(futures),
            mode,
            timeout_ms(timeout),
        )?))
    }

    /// Stores values on workers as finished futures, to pass to many tasks
    /// without sending them each time; returns their futures in order.
    pub fn scatter<T: Serialize>(
        &self,
        values: impl IntoIterator<Item = T>,
    ) -> Result<Vec<Future>> {
        let values = values
            .into_iter()
            .map(|value| encode(&value))
            .collect::<Result<Vec<_>>>()?;
        Ok(futures(wit::scatter(&values)?))
    }

    /// Cancels `futures` and their dependents; `force` cancels them even if
    /// other clients hold them.
    pub fn cancel(&self, futures: &[Future], force: bool) {
        wit::cancel(&keys(futures), force);
    }

    /// Stops holding `futures`.
    pub fn release(&self, futures: &[Future]) {
        wit::release(&keys(futures));
    }

    /// Computes `futures` to the end even once nobody holds them, such as
    /// after this task ends.
    pub fn fire_and_forget(&self, futures: &[Future]) {
        wit::fire_and_forget(&keys(futures));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_are_pure_with_no_limits() {
        let wit = SubmitOptions::new().to_wit();
        assert_eq!(wit.module, None);
        assert_eq!(wit.key, None);
        assert!(wit.pure);
        assert_eq!(wit.priority, None);
        assert_eq!(wit.retries, 0);
        assert_eq!(wit.timeout_ms, None);
    }

    #[test]
    fn setters_fill_every_option() {
        let wit = SubmitOptions::new()
            .module("ab12")
            .key("mine")
            .pure(false)
            .priority(-3)
            .retries(2)
            .timeout(Duration::from_secs(2))
            .to_wit();
        assert_eq!(wit.module.as_deref(), Some("ab12"));
        assert_eq!(wit.key.as_deref(), Some("mine"));
        assert!(!wit.pure);
        assert_eq!(wit.priority, Some(-3));
        assert_eq!(wit.retries, 2);
        assert_eq!(wit.timeout_ms, Some(2000));
    }

    #[test]
    fn futures_are_keys() {
        let f = Future::from_key("inc-1");
        assert_eq!(f.key(), "inc-1");
        assert_eq!(f.to_string(), "inc-1");
        assert_eq!(keys(&[f.clone(), Future::from_key("b")]), ["inc-1", "b"]);
        assert_eq!(f.into_key(), "inc-1");
    }

    #[test]
    fn gathering_nothing_does_not_call_the_host() {
        assert_eq!(client().gather::<i64>(&[]).unwrap(), Vec::<i64>::new());
    }
}
