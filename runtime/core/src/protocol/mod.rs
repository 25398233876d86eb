//! The wire protocol: every message that crosses a socket between clients,
//! the scheduler and workers, with its meaning.
//!
//! A connection carries length-delimited frames (see `dtask_runtime::connection`);
//! each frame is a postcard-encoded `Vec` of one direction's message enum, so a
//! burst of messages (a `map` of 100k tasks, a worker's finished batch) costs a
//! handful of writes. Every connection opens with [`Hello`] and an answer of
//! [`Welcome`] before any other frame. Values and arguments travel as
//! MessagePack bytes (`dtask_runtime::value`) that the scheduler never decodes.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Version of this protocol. A peer with another version is refused at the
/// handshake with a message naming both versions.
pub const PROTOCOL_VERSION: u32 = 24;

/// How long a client lets the scheduler say nothing before it asks
/// whether it is there ([`ToScheduler::Ping`]), and then how long it waits
/// for the answer before it takes the connection as lost.
pub const QUIET: std::time::Duration = std::time::Duration::from_secs(10);

/// Results at most this large travel with the worker's completion report and
/// are kept by the scheduler too, so gathering them needs no worker round
/// trip. Larger ones stay on the worker that made them and move directly
/// between workers (or to the client) when needed.
pub const INLINE_RESULT_LIMIT: usize = 1024;

/// How often a worker tells the scheduler it is alive.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// Hex BLAKE3 of a module's bytes.
pub type ModuleHash = String;

/// The first message on every connection, from the side that connected.
/// Its `Debug` leaves the token out, so no log can show it.
#[derive(Clone, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the connecting side.
    pub version: u32,
    /// The credential: the client token for [`Role::Client`], the worker
    /// token for [`Role::Worker`] and [`Role::Tasks`], either for
    /// [`Role::Peer`] (see [`crate::secret`]).
    pub token: String,
    /// Who is connecting.
    pub role: Role,
}

/// What a connecting peer is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Role {
    /// A client: the CLI, a Rust program, or later a task acting as one.
    Client {
        /// Name under which the client's keys are held. A named client keeps
        /// its keys after it disconnects (the CLI's `DTASK_CLIENT`); an
        /// unnamed one (`None`) releases them when its connection closes…
        name: Option<String>,
        /// …unless it gives a session (a random number, not 0, kept across
        /// its reconnects): then its holds and leases wait a grace period
        /// for it to come back under the same session before they end
        /// (none if it sent [`ToScheduler::Leave`](super::ToScheduler::Leave)).
        /// (Names beginning with `session-` are refused: they are the
        /// scheduler's for these.)
        session: u64,
    },
    /// A worker process registering with the scheduler.
    Worker {
        /// Execution slots.
        nthreads: u32,
        /// Address at which the worker serves its results to peers.
        data_addr: String,
        /// Human-readable name (host and pid).
        name: String,
        /// Abstract resources it offers, e.g. `("GPU", 2.0)`.
        resources: Vec<(String, f64)>,
        /// The largest memory one task may use there, in bytes: tasks
        /// asking for more are placed elsewhere.
        memory_limit: u64,
        /// How many times the process supervising it (`dtask cluster`'s
        /// nanny) has started a worker in its place after one died.
        restarts: u32,
    },
    /// A worker or client fetching results from a worker's data port.
    Peer,
    /// A worker's connection for the tasks it runs acting as a client
    /// (`get_client` inside a task): an unnamed client that presents the
    /// worker token and may not shut the cluster down.
    Tasks,
}

/// The answer to [`Hello`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Welcome {
    /// Accepted; the rest of the connection follows.
    Accepted {
        /// Identifier the scheduler gave this connection (a worker's id).
        id: u64,
        /// For a worker: the digest of the client token
        /// ([`crate::secret::digest`]), so that its data port can admit
        /// clients without knowing their token.
        client_digest: Option<[u8; 32]>,
        /// For a client: the largest value the scheduler takes
        /// (`--max-value-size`), so it can refuse a bigger one itself
        /// where the scheduler gives no answer (a publish).
        max_value: Option<u64>,
    },
    /// Refused, with the reason to show the user.
    Refused(String),
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("version", &self.version)
            .field("token", &"…")
            .field("role", &self.role)
            .finish()
    }
}

mod from_scheduler;
mod info;
mod ops;
mod peer;
mod task;
mod to_scheduler;
mod weigh;

pub use from_scheduler::*;
pub use info::*;
pub use ops::*;
pub use peer::*;
pub use task::*;
pub use to_scheduler::*;
pub use weigh::*;

#[cfg(test)]
mod secrets_tests {
    use super::*;

    #[test]
    fn tokens_and_granted_values_never_show_in_debug_output() {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            token: "s3cret-token".into(),
            role: Role::Client {
                name: None,
                session: 0,
            },
        };
        assert!(!format!("{hello:?}").contains("s3cret"), "{hello:?}");
        let grants = Grants {
            env: vec![("API_KEY".into(), "hunter2".into())],
            dirs: vec!["/data".into()],
        };
        let shown = format!("{grants:?}");
        assert!(
            shown.contains("API_KEY") && shown.contains("/data"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        let spec = TaskSpec {
            key: "k".into(),
            module: "m".into(),
            function: "f".into(),
            args: vec![],
            priority: 0,
            timeout_ms: None,
            memory_limit: None,
            grants,
            placement: Placement::default(),
            retries: 0,
        };
        assert!(!format!("{spec:?}").contains("hunter2"));
    }
}
