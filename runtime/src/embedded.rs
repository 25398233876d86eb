//! A cluster inside the program that uses it: what [`Client::from_env`]
//! starts for a Rust program when no scheduler is configured.
//!
//! The CLI keeps its background local cluster (`local`), shared by every
//! shell command. A Rust program gets its own instead: a scheduler and
//! workers on threads of their own (with their own tokio runtime, so the
//! program's runtime may be of any flavour), on an ephemeral loopback port
//! with a fresh token, and gone when the program's last client handle is
//! dropped. Nothing is started as a process and nothing is left running.
//! Its workers and the program's clients reach it on a Unix socket in a
//! private temporary directory (as the CLI's local default does), where
//! the system allows one; else on the loopback port.
//!
//! [`Client::from_env`]: crate::client::Client::from_env

use crate::scheduler::server::{SchedulerOptions, SchedulerServer};
use crate::worker::{self, WorkerOptions, sandbox::Limits};
use std::time::Duration;

/// A scheduler and its workers running in this process until dropped.
pub struct EmbeddedCluster {
    address: String,
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedCluster")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl EmbeddedCluster {
    /// Starts a scheduler and `workers` single-slot workers (each task
    /// limited to 256 MiB, results kept in memory up to a share of half
    /// the machine's memory, then spilled under the state directory).
    /// Returns once the scheduler listens; workers join right after.
    pub fn start(workers: usize) -> Result<Self, String> {
        let workers = workers.max(1);
        let token = crate::key::random_key("embedded");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<String, String>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server_token = token.clone();
        let thread = std::thread::Builder::new()
            .name("dtask-embedded".into())
            .spawn(move || {
                // Multi-threaded: no busy polling (see `busy_poll`).
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers + 1)
                    .thread_name("dtask-embedded")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot start its runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(serve(server_token, workers, ready_tx, stopped));
                // Running tasks are abandoned with the program's last handle.
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| format!("cannot start its thread: {e}"))?;
        let address = ready_rx
            .recv()
            .map_err(|_| "it stopped while starting".to_string())??;
        Ok(Self {
            address,
            token,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The scheduler's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The token its peers present.
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// Runs the scheduler and workers until `stopped` fires (or its sender is
/// dropped).
async fn serve(
    token: String,
    workers: usize,
    ready: std::sync::mpsc::Sender<Result<String, String>>,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    // Its workers are in this process: a worker token of their own all
    // the same, so that they are admitted as workers, not clients.
    let worker_token = crate::secret::Secret::new(crate::key::random_key("embedded-worker"));
    let options = SchedulerOptions {
        credentials: crate::secret::Credentials {
            client: token.as_str().into(),
            worker: worker_token.clone(),
        },
        max_frame: 512 << 20,
        worker_timeout: Duration::from_secs(10),
        max_module: 256 << 20,
        max_value: 128 << 20,
        client_buffer: 64 << 20,
        rejoin_grace: Duration::from_secs(30),
        journal: None,
        journal_options: Default::default(),
        own_workers: workers as u32,
        on_resumed: None,
    };
    let scheduler = match SchedulerServer::bind("127.0.0.1:0", options).await {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot listen on loopback: {e}")));
            return;
        }
    };
    let address = match scheduler.local_addr() {
        Ok(a) => a.to_string(),
        Err(e) => {
            let _ = ready.send(Err(format!("cannot tell its own address: {e}")));
            return;
        }
    };
    // Removed (with the socket in it) when this function returns.
    let socket_dir = tempfile::Builder::new().prefix("dtask-").tempdir();
    let (scheduler, address) = match socket_dir.as_ref().map(|d| d.path().join("s.sock")) {
        Ok(path) => match crate::scheduler::server::bind_unix(&path) {
            Ok(l) => (
                scheduler.with_unix_socket(l, path.clone()),
                crate::connection::unix_address(&path),
            ),
            Err(e) => {
                tracing::debug!("the embedded scheduler stays on {address}: {e}");
                (scheduler, address)
            }
        },
        Err(e) => {
            tracing::debug!("the embedded scheduler stays on {address}: {e}");
            (scheduler, address)
        }
    };
    let server = tokio::spawn(scheduler.run());
    for _ in 0..workers {
        let options = WorkerOptions {
            scheduler: address.clone(),
            token: worker_token.clone(),
            nthreads: 1,
            listen_host: "127.0.0.1".into(),
            data_port: 0,
            advertise: None,
            cache_dir: Some(crate::config::cache_dir()),
            limits: Limits {
                memory: 256 << 20,
                ..Limits::default()
            },
            resources: Vec::new(),
            reconnect_grace: Duration::ZERO,
            allow_dirs: Vec::new(),
            memory_budget: worker::default_memory_budget(workers),
            spill_dir: crate::config::state_dir().join("spill"),
            restarts: 0,
        };
        tokio::spawn(async move {
            if let Err(e) = worker::run(options).await {
                tracing::warn!("an embedded worker stopped: {e:#}");
            }
        });
    }
    let _ = ready.send(Ok(address));
    let _ = stopped.await;
    server.abort();
    let _ = server.await;
    drop(socket_dir);
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
