//! The embedded local default: when no scheduler is configured, commands use
//! a local cluster recorded in the state directory, starting one in the
//! background if none answers (like Dask's `Client()` with no address).
//!
//! The cluster is `dtask cluster --record-local` run as a detached process;
//! it writes `local.toml` (address and pid) into the state directory once it
//! listens, and removes it when it stops. `dtask shutdown` stops it.

use crate::config::{self, Endpoint};
use serde::{Deserialize, Serialize};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the local cluster records about itself.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct LocalRecord {
    /// Scheduler address.
    pub address: String,
    /// Process id of the cluster.
    pub pid: u32,
    /// The [`PROTOCOL_VERSION`](crate::protocol::PROTOCOL_VERSION) it
    /// speaks (0 in records written before dtask noted it).
    #[serde(default)]
    pub protocol: u32,
    /// The Unix socket it also listens on, which this machine's commands
    /// use (absent in records written before dtask had one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
}

impl LocalRecord {
    /// Where this machine's commands reach it: its Unix socket if it has
    /// one, else its TCP address.
    pub fn reach(&self) -> String {
        match &self.socket {
            Some(p) => crate::connection::unix_address(p),
            None => self.address.clone(),
        }
    }
}

/// Path of the record in the state directory.
pub fn record_path() -> PathBuf {
    config::state_dir().join("local.toml")
}

/// Writes the record (called by the cluster once it listens).
pub fn write_record(rec: &LocalRecord) -> std::io::Result<()> {
    let dir = config::ensure_state_dir()?;
    let tmp = dir.join(format!(".local.toml.{}", rec.pid));
    std::fs::write(&tmp, toml::to_string(rec).expect("a record serializes"))?;
    std::fs::rename(tmp, record_path())
}

/// Removes the record if it is this process's.
pub fn remove_record(pid: u32) {
    if read_record().is_some_and(|r| r.pid == pid) {
        let _ = std::fs::remove_file(record_path());
    }
}

/// The recorded local cluster, if any.
pub fn read_record() -> Option<LocalRecord> {
    toml::from_str(&std::fs::read_to_string(record_path()).ok()?).ok()
}

async fn answers(addr: &str) -> bool {
    let connect = async {
        match crate::connection::unix_path(addr) {
            Some(path) => tokio::net::UnixStream::connect(path).await.map(drop),
            None => tokio::net::TcpStream::connect(addr).await.map(drop),
        }
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), connect).await,
        Ok(Ok(()))
    )
}

/// Whether process `pid` lives and is not on its way out. A cluster killed
/// while holding much memory keeps accepting connections on its port while
/// the kernel frees that memory, so answering alone does not tell.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        // No procfs: the process exists if it can be signalled.
        return libc::pid_t::try_from(pid)
            // SAFETY: kill(2) with signal 0 only checks that the process exists.
            .is_ok_and(|p| unsafe { libc::kill(p, 0) } == 0);
    };
    // After the command name in parentheses: state, ppid, pgrp, session,
    // tty_nr, tpgid, flags.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    const PF_EXITING: u64 = 0x4;
    let exiting = fields
        .get(6)
        .and_then(|f| f.parse::<u64>().ok())
        .is_none_or(|flags| flags & PF_EXITING != 0);
    let dead = matches!(fields.first(), None | Some(&"Z" | &"X" | &"x"));
    !exiting && !dead
}

/// Resolves once the local cluster reached at `reach` (as
/// [`LocalRecord::reach`] gave it) has ended: its record is gone or names
/// another cluster, or its process is dead or exiting. For a command whose
/// first connect to it would otherwise retry a dead socket for its whole
/// grace.
pub async fn ended(reach: &str) {
    loop {
        match read_record() {
            Some(rec) if rec.reach() == reach && alive(rec.pid) => {}
            _ => return,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The running local cluster, if one answers.
pub async fn running() -> Option<Endpoint> {
    let rec = read_record()?;
    let address = rec.reach();
    if !alive(rec.pid) || !answers(&address).await {
        return None;
    }
    let token = config::client_token(None).ok()?;
    Some(Endpoint {
        address,
        token,
        source: format!("local cluster (pid {})", rec.pid),
    })
}

/// The running local cluster, as [`running`]; if none runs yet but another
/// command is starting one (it holds the start lock), waits up to a minute
/// for that start to finish first. For verbs that need a cluster running
/// but do not start one, run beside one that does (`dtask submit … &
/// dtask wait …`).
pub async fn running_or_starting() -> Option<Endpoint> {
    if let Some(e) = running().await {
        return Some(e);
    }
    let lock = std::fs::File::open(config::state_dir().join("local.lock")).ok()?;
    match lock.try_lock() {
        // Nobody is starting one.
        Ok(()) => return None,
        Err(std::fs::TryLockError::WouldBlock) => {}
        Err(std::fs::TryLockError::Error(_)) => return None,
    }
    let wait = tokio::task::spawn_blocking(move || lock.lock());
    match tokio::time::timeout(Duration::from_secs(60), wait).await {
        Ok(Ok(Ok(()))) => running().await,
        _ => None,
    }
}

/// Whether a local cluster that stopped without `dtask shutdown` (it was
/// killed, crashed, or the machine went down) left its journal in the
/// state directory: starting one resumes what it held.
pub fn left_a_journal() -> bool {
    std::fs::read_dir(config::state_dir().join("journal"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n == "snapshot.bin" || n.starts_with("log-"))
        })
}

/// Stops a running local cluster that another dtask version started (after
/// an upgrade, say): no command of this version could talk to it, `dtask
/// shutdown` included. It stops as on `dtask shutdown` (SIGTERM), leaving
/// its journal for the next local cluster. Says so on stderr; true if it
/// stopped one.
pub async fn retire_other_version() -> Result<bool, String> {
    let this = crate::protocol::PROTOCOL_VERSION;
    let Some(rec) = read_record() else {
        return Ok(false);
    };
    if rec.protocol == this || !answers(&rec.reach()).await {
        return Ok(false);
    }
    let Ok(pid) = libc::pid_t::try_from(rec.pid) else {
        return Ok(false);
    };
    // SAFETY: kill(2) with a pid from the record, which is alive and
    // answers at the recorded address.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        return Err(format!(
            "the local cluster (pid {pid}) is from another dtask version and cannot be \
             stopped: {}; stop it by hand",
            std::io::Error::last_os_error()
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_record().is_some_and(|r| r.pid == rec.pid) {
        if Instant::now() > deadline {
            return Err(format!(
                "the local cluster (pid {pid}) of another dtask version did not stop within \
                 30 s of SIGTERM; stop it by hand (kill {pid})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let version = match rec.protocol {
        0 => "an older protocol".to_string(),
        v => format!("protocol {v}"),
    };
    eprintln!(
        "dtask: stopped the local cluster (pid {pid}): another dtask version started it \
         ({version}; this one speaks protocol {this})"
    );
    Ok(true)
}

/// The local cluster, started in the background if none answers. Says so on
/// stderr when it starts one.
pub async fn ensure(workers: usize) -> Result<Endpoint, String> {
    retire_other_version().await?;
    if let Some(e) = running().await {
        return Ok(e);
    }
    let dir = config::ensure_state_dir()
        .map_err(|e| format!("cannot create the state directory: {e}"))?;
    // One starter at a time: others wait for its record.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("local.lock"))
        .map_err(|e| format!("cannot open the local cluster lock: {e}"))?;
    // Waits on a blocking thread (so any runtime flavour works); held until
    // `_held` drops at the end of this function.
    let _held = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
        .await
        .map_err(|e| format!("cannot wait for the local cluster lock: {e}"))?
        .map_err(|e| format!("cannot lock the local cluster lock: {e}"))?;
    if let Some(e) = running().await {
        return Ok(e);
    }
    config::server_token()?;
    let child = spawn_cluster(&dir, workers)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(rec) = read_record()
            && rec.pid == child
            && let Some(e) = running().await
        {
            eprintln!(
                "dtask: started a local cluster at {} with {workers} workers (logs in {}); \
                 `dtask shutdown` stops it",
                e.address,
                dir.join("local.log").display()
            );
            return Ok(e);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the local cluster did not start within 60 s; see {}",
                dir.join("local.log").display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spawn_cluster(dir: &Path, workers: usize) -> Result<u32, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the dtask binary: {e}"))?;
    // Appended to, so the log of a cluster that went before is kept.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("local.log"))
        .map_err(|e| format!("cannot create the local cluster's log: {e}"))?;
    let child = Command::new(exe)
        .args(["cluster", "--port", "0", "--record-local", "--n-workers"])
        .arg(workers.to_string())
        .env("DTASK_STATE_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the local cluster: {e}"))?;
    Ok(child.id())
}

#[cfg(test)]
mod tests {
    use super::alive;
    use std::process::Command;

    #[test]
    fn a_process_that_has_ended_is_not_taken_for_a_running_cluster() {
        assert!(alive(std::process::id()));
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Ended but not yet reaped: a zombie, as a killed cluster is while
        // nobody has waited for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "an ended child still counts as alive"
            );
            std::thread::yield_now();
        }
        child.wait().unwrap();
        assert!(!alive(pid), "a reaped pid counts as alive");
    }
}
