//! What the scheduler knows: workers, statistics, task states, logs and
//! listings.

use super::*;

impl Client {
    /// Data addresses of the workers holding each key.
    pub async fn who_has(
        &self,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Vec<String>)>, ClientError> {
        match self.request(|id| ToScheduler::WhoHas { id, keys }).await? {
            FromScheduler::WhoHas { holders, .. } => Ok(holders),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// The keys each worker holds, by data address.
    pub async fn has_what(&self) -> Result<Vec<(String, Vec<String>)>, ClientError> {
        match self.request(|id| ToScheduler::HasWhat { id }).await? {
            FromScheduler::HasWhat { holdings, .. } => Ok(holdings),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// The connected workers.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, ClientError> {
        match self.request(|id| ToScheduler::Workers { id }).await? {
            FromScheduler::Workers { workers, .. } => Ok(workers),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// The scheduler's counters: keys, runs sent, reruns after worker
    /// deaths.
    pub async fn stats(&self) -> Result<crate::protocol::Stats, ClientError> {
        Ok(self.stats_and_health().await?.0)
    }

    /// The counters, and how the scheduler is doing (memory, held keys,
    /// journal).
    pub async fn stats_and_health(
        &self,
    ) -> Result<(crate::protocol::Stats, crate::protocol::Health), ClientError> {
        match self.request(|id| ToScheduler::Stats { id }).await? {
            FromScheduler::Stats { stats, health, .. } => Ok((stats, health)),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Execution slots per worker (data address to slots).
    pub async fn nthreads(&self) -> Result<Vec<(String, u32)>, ClientError> {
        Ok(self
            .workers()
            .await?
            .into_iter()
            .map(|w| (w.address, w.nthreads))
            .collect())
    }

    /// Current state of each key (`None` for keys the scheduler does not
    /// know).
    pub async fn status(
        &self,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<TaskState>)>, ClientError> {
        Ok(self.status_with_reasons(keys).await?.0)
    }

    /// Like [`Client::status`], and for keys in
    /// [`TaskState::NoWorker`], why no connected worker can run them.
    #[allow(clippy::type_complexity)]
    pub async fn status_with_reasons(
        &self,
        keys: Vec<String>,
    ) -> Result<(Vec<(String, Option<TaskState>)>, HashMap<String, String>), ClientError> {
        let (states, reasons, _) = self.status_request(keys, false).await?;
        Ok((states, reasons))
    }

    /// Like [`Client::status_with_reasons`], and when each known key was
    /// submitted, began and ended, where it ran and how often it was
    /// retried: all in one request.
    pub async fn status_with_timings(
        &self,
        keys: Vec<String>,
    ) -> Result<StatusDetail, ClientError> {
        self.status_request(keys, true).await
    }

    async fn status_request(
        &self,
        keys: Vec<String>,
        timings: bool,
    ) -> Result<StatusDetail, ClientError> {
        let ask = |id| ToScheduler::Status { id, keys, timings };
        match self.request(ask).await? {
            FromScheduler::Status {
                states,
                reasons,
                timings,
                ..
            } => Ok((
                states,
                reasons.into_iter().collect(),
                timings.into_iter().collect(),
            )),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// What `key` wrote to stdout and stderr on the worker that ran it
    /// (its latest run), if a connected worker still keeps it: each keeps
    /// the last 64 KiB of each stream per task, for its latest 16 MiB of
    /// task output.
    pub async fn logs(&self, key: &str) -> Result<Option<crate::protocol::TaskLog>, ClientError> {
        let addrs: Vec<String> = self
            .workers()
            .await?
            .into_iter()
            .map(|w| w.address)
            .collect();
        crate::peer::logs(&addrs, &self.inner.peer_token, key)
            .await
            .map_err(|reason| ClientError::Data {
                key: key.to_string(),
                reason,
            })
    }

    /// Known tasks in `state` of `function` (each: any, if `None`): the
    /// newest `limit` in submission order as (key, state, function), and
    /// how many matched in all.
    #[allow(clippy::type_complexity)]
    pub async fn list_tasks(
        &self,
        state: Option<TaskState>,
        function: Option<String>,
        limit: u32,
    ) -> Result<(Vec<(String, TaskState, String)>, u64), ClientError> {
        let ask = |id| ToScheduler::ListTasks {
            id,
            state,
            function: function.clone(),
            limit,
        };
        match self.request(ask).await? {
            FromScheduler::TaskList { tasks, matched, .. } => Ok((tasks, matched)),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// The scheduler's address, as this client was given it.
    pub fn scheduler_address(&self) -> &str {
        &self.inner.address
    }

    /// A one-time login link to the scheduler's dashboard: its address
    /// as bound (`HOST:PORT`) and a code that `/login?code=` turns into a
    /// browser session. Fails saying why when the dashboard is off.
    pub async fn dashboard_login(&self) -> Result<(String, String), ClientError> {
        match self
            .request(|id| ToScheduler::DashboardLogin { id })
            .await?
        {
            FromScheduler::DashboardLogin { login, .. } => login.map_err(ClientError::Unavailable),
            other => Err(ClientError::unexpected(other)),
        }
    }
}
