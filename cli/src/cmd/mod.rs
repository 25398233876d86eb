//! One file per verb, plus what they share: finding the scheduler, typed
//! argument parsing, printing values, and failures with exit codes.

pub mod actor;
pub mod as_completed;
pub mod cancel;
pub mod cert;
pub mod cluster;
pub mod dashboard;
pub mod event;
pub mod gather;
pub mod info;
pub mod inspect;
pub mod journal;
pub mod lock;
pub mod logs;
pub mod map;
pub mod progress;
pub mod pubsub;
pub mod queue;
pub mod release;
pub mod retry;
pub mod scatter;
pub mod scheduler;
pub mod semaphore;
pub mod show_config;
pub mod shutdown;
pub mod status;
pub mod submit;
pub mod task_options;
pub mod tasks;
pub mod var;
pub mod wait;
pub mod who_has;
pub mod worker;
pub mod workers;

mod args;
mod failure;
mod keys;
mod output;

pub use args::*;
pub use failure::*;
pub use keys::*;
pub use output::*;

use dtask_runtime::client::{Client, ClientError, Item};
use dtask_runtime::config::{self, Resolved};
use dtask_runtime::local;
use dtask_runtime::module::{LocalModule, Type};
use dtask_runtime::protocol::{Arg, TaskError};
use dtask_runtime::value::{self, Value};
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::time::Duration;

/// Most keys a verb watches at once (asked about and not yet answered).
/// Watching a million finished keys at once would have the scheduler
/// answer them all in one burst, past what it may queue for one client
/// (`--client-buffer`, 64 MiB with results inline): the verb would be cut
/// off, reconnect, ask again, and never finish. A window keeps every burst
/// well under that (at most about 18 MB) at no cost in throughput.
pub const WATCH_WINDOW: usize = 16_384;

// Which scheduler a client verb (or a worker) talks to. (A plain comment:
// clap would take a doc comment for the help text of every verb.)
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Global {
    /// Scheduler address (host:port, or unix:PATH for its Unix socket).
    /// Else DTASK_SCHEDULER, dtask.toml, or the local default cluster.
    #[arg(long, global = true, value_name = "ADDR")]
    pub scheduler: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

// The TLS files a process uses (DESIGN §8; `dtask_runtime::tls`). (A
// plain comment, as for `Global`.)
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// The cluster's CA certificate (PEM): connect over TLS and trust
    /// peers it signed. Else `ca` under [tls] in dtask.toml.
    #[arg(long, global = true, env = "DTASK_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// This process's certificate (PEM), presented by schedulers and
    /// workers (`dtask cert init` makes one).
    #[arg(long, global = true, env = "DTASK_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, global = true, env = "DTASK_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl TlsArgs {
    /// The files to use: these flags (and their variables), else `[tls]`
    /// in the config file.
    pub fn files(&self) -> Result<dtask_runtime::tls::TlsFiles, Failure> {
        let file = config::file_config()
            .map_err(Failure::usage)?
            .map(|(_, c)| c.tls)
            .unwrap_or_default();
        Ok(dtask_runtime::tls::TlsFiles {
            ca: self.tls_ca.clone().or(file.ca),
            cert: self.tls_cert.clone().or(file.cert),
            key: self.tls_key.clone().or(file.key),
        })
    }

    /// Sets up this process's TLS from [`TlsArgs::files`]; a file that
    /// cannot be used is a usage error naming it.
    pub fn install(&self) -> Result<dtask_runtime::tls::TlsFiles, Failure> {
        let files = self.files()?;
        dtask_runtime::tls::install(&files).map_err(Failure::usage)?;
        Ok(files)
    }
}

// A verb's own arguments, with `--scheduler`: daemons that are the
// scheduler (`scheduler`, `cluster`) and verbs that need none (`inspect`,
// `journal`) do not take it. (A plain comment, as for `Global`.)
#[derive(clap::Args)]
pub struct WithScheduler<T: clap::Args> {
    #[command(flatten)]
    pub global: Global,
    #[command(flatten)]
    pub args: T,
}

/// Connects to the scheduler the configuration names. With nothing
/// configured, uses the local default cluster, starting it only if `start`
/// (verbs that submit work start it; verbs that read keys need one running).
pub async fn connect(global: &Global, start: bool) -> Result<Client, Failure> {
    let configured =
        config::resolve_address(global.scheduler.as_deref()).map_err(Failure::usage)?;
    let resolved = match configured {
        Some((address, source)) => {
            let token_file = config::file_config()
                .map_err(Failure::usage)?
                .and_then(|(_, c)| c.token_file);
            // No credential is an authentication failure (exit 3), not a
            // usage error.
            let token =
                config::client_token(token_file.as_deref()).map_err(|e| Failure::new(3, e))?;
            Resolved::Configured(config::Endpoint {
                address,
                token,
                source,
            })
        }
        None => Resolved::LocalDefault,
    };
    let start_local = || async {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        local::ensure(workers).await.map_err(|e| Failure::new(3, e))
    };
    let local_default = matches!(resolved, Resolved::LocalDefault);
    let endpoint = match resolved {
        Resolved::Configured(e) => e,
        Resolved::LocalDefault if start => start_local().await?,
        Resolved::LocalDefault => match local::running_or_starting().await {
            Some(e) => e,
            // One that stopped without `dtask shutdown` (killed, say) left
            // its keys in its journal: started again, it resumes them, and
            // what this verb asks of them is answered.
            None if local::left_a_journal() => start_local().await?,
            None => {
                return Err(Failure::new(
                    3,
                    "no scheduler is configured and no local cluster is running; \
                     submit a task to start one, or pass --scheduler",
                ));
            }
        },
    };
    let name = std::env::var("DTASK_CLIENT").unwrap_or_else(|_| "default".into());
    let first = Client::connect(&endpoint.address, &endpoint.token, Some(name.clone()));
    let connected = if local_default {
        tokio::select! {
            biased;
            c = first => Ok(c),
            () = local::ended(&endpoint.address) => Err(()),
        }
    } else {
        Ok(first.await)
    };
    let (endpoint, connected) = match connected {
        Ok(c) => (endpoint, c),
        // The local default died as this command connected to it: started
        // again (as for a command already waiting on it when it dies), if
        // this verb starts one or it left keys in its journal.
        Err(()) if start || local::left_a_journal() => {
            let endpoint = start_local().await?;
            let c = Client::connect(&endpoint.address, &endpoint.token, Some(name)).await;
            (endpoint, c)
        }
        Err(()) => {
            return Err(Failure::new(
                3,
                "the local cluster stopped as this command connected to it; submit a task to \
                 start one, or pass --scheduler",
            ));
        }
    };
    let client = connected.map_err(|e| {
        let mut f = Failure::from(e);
        f.detail
            .push(format!("scheduler address from {}", endpoint.source));
        f
    })?;
    // The shell's commands share a client name, and each releases what it
    // printed: pipelines that submit the same calls each hold them.
    client.count_submits();
    if local_default {
        // A local default that went away (killed, crashed) is started
        // again by the commands waiting on it, and resumes its journal.
        client.restart_when_lost(|| {
            Box::pin(async {
                let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
                local::ensure(workers).await.map(|_| ())
            })
        });
    }
    Ok(client)
}

/// After a first interrupt (Ctrl-C) that a verb handles by finishing up
/// (printing or releasing what it must), a second one ends the process
/// at once, exit 130.
pub fn exit_on_next_interrupt() {
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
}

/// Loads a module file, with the compiled-module cache of the state
/// directory.
pub fn load_module(path: &Path) -> Result<LocalModule, Failure> {
    LocalModule::load(path).map_err(Failure::usage)
}

/// Runs `work`, a verb that waits, within `timeout` if one is given;
/// past it, exit 4 saying what was not done (`what`) and what to do next.
pub async fn within(
    timeout: Option<Duration>,
    what: &str,
    next: &str,
    work: impl std::future::Future<Output = Result<(), Failure>>,
) -> Result<(), Failure> {
    match timeout {
        None => work.await,
        Some(t) => tokio::time::timeout(t, work)
            .await
            .unwrap_or_else(|_| Err(Failure::new(4, format!("{what} after {t:?}; {next}")))),
    }
}

/// The next message on `rx`, a channel the verb feeds too (so it never
/// closes); `None` once `client` has lost its scheduler for good.
pub async fn next_or_lost<T>(
    client: &Client,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
) -> Option<T> {
    tokio::select! {
        n = rx.recv() => n,
        () = client.lost() => None,
    }
}
