//! A future: a key the client holds, released when the last handle goes,
//! and its result or error on demand.

use super::*;

/// What [`Client::gather_with`] does with failed futures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Errors {
    /// Fail the gather with the first failure.
    Raise,
    /// Leave failed futures out.
    Skip,
}

/// A handle on a key, like Dask's `Future`: while any handle lives the
/// client holds the key; dropping the last one releases it.
pub struct Future {
    pub(super) key: String,
    pub(super) client: Client,
}

impl Future {
    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Waits for the result (or the task's error); `timeout` bounds the
    /// wait.
    pub async fn result(&self, timeout: Option<Duration>) -> Result<Value, ClientError> {
        match timeout {
            None => self.client.result(&self.key).await,
            Some(t) => tokio::time::timeout(t, self.client.result(&self.key))
                .await
                .map_err(|_| ClientError::Timeout(t))?,
        }
    }

    /// Waits for the future to end; its error if it erred, else `None`.
    pub async fn exception(&self) -> Result<Option<TaskError>, ClientError> {
        match self.result(None).await {
            Err(ClientError::Task(e)) => Ok(Some(*e)),
            Err(ClientError::Cancelled(_)) => Ok(None),
            Err(e) => Err(e),
            Ok(_) => Ok(None),
        }
    }

    /// Its state now (`None` if the scheduler does not know it).
    pub async fn status(&self) -> Result<Option<TaskState>, ClientError> {
        let mut s = self.client.status(vec![self.key.clone()]).await?;
        Ok(s.pop().and_then(|(_, st)| st))
    }

    /// Whether it has finished, erred or been cancelled.
    pub async fn done(&self) -> Result<bool, ClientError> {
        Ok(matches!(
            self.status().await?,
            Some(TaskState::Finished | TaskState::Error | TaskState::Cancelled)
        ))
    }

    /// Whether it was cancelled.
    pub async fn cancelled(&self) -> Result<bool, ClientError> {
        Ok(self.status().await? == Some(TaskState::Cancelled))
    }

    /// Cancels it (and its dependents).
    pub fn cancel(&self, force: bool) -> Result<(), ClientError> {
        self.client.cancel(vec![self.key.clone()], force)
    }

    /// Releases this handle now (same as dropping it).
    pub fn release(self) {}

    /// Passes this future as a task argument.
    pub fn arg(&self) -> Arg {
        Arg::Future(self.key.clone())
    }
}

impl Clone for Future {
    fn clone(&self) -> Self {
        self.client.future(self.key.clone())
    }
}

impl std::fmt::Debug for Future {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Future({})", self.key)
    }
}

impl Drop for Future {
    fn drop(&mut self) {
        let last = {
            let mut refs = self.client.inner.refs.lock().expect("refs lock");
            match refs.get_mut(&self.key) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    refs.remove(&self.key);
                    true
                }
            }
        };
        if last {
            let _ = self.client.release(vec![self.key.clone()]);
        }
    }
}
