//! The scheduler's journal on disk: a directory holding the latest
//! [`Snapshot`] of its durable state and the modules it was given, so a
//! restarted scheduler picks up where the last one stopped.
//!
//! Snapshots are written by a thread of their own, at most once per
//! [`HEARTBEAT`](crate::protocol::HEARTBEAT) and only when something
//! changed: write to a temporary file, fsync, rename over the old one,
//! fsync the directory. So at most about a second of work is at risk, and a
//! crash mid-write leaves the previous snapshot whole. Modules are written
//! once, when uploaded.

use super::state::Snapshot;
use bincode::Options;
use bytes::Bytes;
use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

const SNAPSHOT: &str = "snapshot.bin";
const MODULES: &str = "modules";

enum Write {
    Snapshot(Vec<u8>),
    Module(String, Bytes),
    Clear,
}

/// Hands writes to the journal's thread.
pub struct Journal {
    tx: mpsc::Sender<Write>,
    thread: std::thread::JoinHandle<()>,
}

/// What a journal directory held when opened.
pub struct Recovered {
    /// The last snapshot.
    pub snapshot: Snapshot,
    /// The modules it names, by hash.
    pub modules: HashMap<String, Bytes>,
}

impl Journal {
    /// Opens (creating) the journal in `dir`; returns what it held, if
    /// anything.
    pub fn open(dir: &Path) -> Result<(Self, Option<Recovered>), String> {
        let modules_dir = dir.join(MODULES);
        private_dir(dir)
            .and_then(|()| private_dir(&modules_dir))
            .map_err(|e| format!("cannot create the journal in {}: {e}", dir.display()))?;
        let recovered = recover(dir)?;
        let (tx, rx) = mpsc::channel();
        let dir = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("dtask-journal".into())
            .spawn(move || writer(dir, rx))
            .map_err(|e| format!("cannot start the journal writer: {e}"))?;
        Ok((Self { tx, thread }, recovered))
    }

    /// Records the state (written in the background).
    pub fn snapshot(&self, snapshot: &Snapshot) {
        let bytes = bincode::DefaultOptions::new()
            .serialize(snapshot)
            .expect("snapshots serialize");
        let _ = self.tx.send(Write::Snapshot(bytes));
    }

    /// Records a module.
    pub fn module(&self, hash: &str, bytes: Bytes) {
        let _ = self.tx.send(Write::Module(hash.to_string(), bytes));
    }

    /// Forgets the state (after a requested shutdown: nothing to resume),
    /// and waits for the writer to finish.
    pub fn clear(self) {
        let _ = self.tx.send(Write::Clear);
        self.close();
    }

    /// Waits until everything handed over is written.
    pub fn close(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

fn recover(dir: &Path) -> Result<Option<Recovered>, String> {
    let path = dir.join(SNAPSHOT);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let snapshot: Snapshot = bincode::DefaultOptions::new()
        .with_limit(bytes.len() as u64 * 8 + 1024)
        .deserialize(&bytes)
        .map_err(|e| {
            format!(
                "the journal {} is damaged ({e}); move it away to start afresh",
                path.display()
            )
        })?;
    let mut modules = HashMap::new();
    for hash in snapshot.modules() {
        let file = dir.join(MODULES).join(format!("{hash}.wasm"));
        match std::fs::read(&file) {
            Ok(b) if blake3::hash(&b).to_hex().as_str() == hash => {
                modules.insert(hash.clone(), Bytes::from(b));
            }
            Ok(_) => tracing::warn!("journal module {} is damaged; skipped", file.display()),
            Err(e) => tracing::warn!("journal module {} unreadable: {e}", file.display()),
        }
    }
    Ok(Some(Recovered { snapshot, modules }))
}

fn writer(dir: PathBuf, rx: mpsc::Receiver<Write>) {
    while let Ok(first) = rx.recv() {
        // Only the newest snapshot matters.
        let mut pending = vec![first];
        pending.extend(rx.try_iter());
        let last_snapshot = pending
            .iter()
            .rposition(|w| matches!(w, Write::Snapshot(_) | Write::Clear));
        for (i, w) in pending.into_iter().enumerate() {
            let result = match w {
                Write::Module(hash, bytes) => {
                    let dest = dir.join(MODULES).join(format!("{hash}.wasm"));
                    if dest.exists() {
                        Ok(())
                    } else {
                        durable_write(&dest, &bytes)
                    }
                }
                Write::Snapshot(bytes) if Some(i) == last_snapshot => {
                    durable_write(&dir.join(SNAPSHOT), &bytes)
                }
                Write::Clear if Some(i) == last_snapshot => {
                    match std::fs::remove_file(dir.join(SNAPSHOT)) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                        _ => Ok(()),
                    }
                }
                Write::Snapshot(_) | Write::Clear => Ok(()),
            };
            if let Err(e) = result {
                tracing::error!("cannot write the journal in {}: {e}", dir.display());
            }
        }
    }
}

/// Writes `bytes` to `dest` so that a crash leaves either the old file or
/// the new one, whole.
fn durable_write(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        dest.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("journal")
    ));
    // Task arguments and granted environment (secrets, often) are in
    // here: only the scheduler's user may read them.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dest)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` (and its parents) if needed, and makes it private to this
/// user (0700) whatever it was before.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
