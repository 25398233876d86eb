//! The scheduler's journal on disk: an append-only log of [`Record`]s,
//! compacted in the background into a [`Snapshot`], plus the modules it
//! was given, so a restarted scheduler picks up where the last one stopped.
//!
//! Layout of the journal directory (0700; files 0600, since task arguments
//! and granted environment variables are in them):
//!
//! - `log-GEN.bin`: a header (`DTASKLOG`, [`JOURNAL_VERSION`], GEN), then
//!   frames of `[length u32][crc32 u32][postcard Vec<Record>]`, one per
//!   batch of changes.
//! - `snapshot.bin`: a header (`DTASKSNP`, version, the last GEN it covers),
//!   then frames like a log's of snapshot [`Item`]s: everything but the
//!   tasks, the tasks in submission order, and an end mark that counts
//!   them. Records name a task by its submission number after the first.
//! - `modules/HASH.wasm`: each module, written once.
//!
//! The core loop hands each event's records to the writer thread, which
//! appends them and fsyncs at most every `sync_every` (so a crash loses at
//! most that much); nothing on the core loop grows with the state. When the
//! log since the last snapshot passes `compact_bytes`, the writer starts a
//! new log and a compaction thread folds the old snapshot and logs into a
//! new snapshot, then deletes them. It streams: the logs' changes to tasks
//! are folded into a map kept as small as those logs (encoded), and merged
//! with the old snapshot's tasks as they are read, in submission order, so what a
//! compaction holds in memory grows with the changes since the last one,
//! never with the tasks held. Recovery is the same fold: snapshot, then
//! every later log in order. A torn or corrupt frame ends the replay
//! there: everything before it is recovered, the damaged tail is cut off,
//! and the scheduler says so.
//!
//! If writing fails (a full disk, a read-only directory), the scheduler
//! keeps serving, reports the problem (stderr, `dtask info`), and drops
//! records until a write succeeds again; then it writes a whole snapshot
//! of its state, so nothing recorded from then on depends on what was
//! dropped.

mod files;
mod recovery;
mod writer;

use super::state::{Item, Model, Record, SavedTask, Snapshot, Window};
use bytes::Bytes;
use files::{Frame, Frames, SNAPSHOT_HEADER, SnapshotReader, SnapshotWriter, read_full};
pub use recovery::export;
use recovery::*;
use std::collections::HashMap;
use std::io::{Read, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use writer::Writer;

const SNAPSHOT: &str = "snapshot.bin";
const MODULES: &str = "modules";
const LOG_MAGIC: &[u8; 8] = b"DTASKLOG";
const SNAPSHOT_MAGIC: &[u8; 8] = b"DTASKSNP";
/// Header: magic, version (u32), generation (u64).
const LOG_HEADER: usize = 8 + 4 + 8;
/// Largest frame the reader accepts (a frame is one batch of records).
const MAX_FRAME: usize = 1 << 30;
/// Records that may wait for the writer before the core loop waits for it
/// ([`Journal::caught_up`]): a few tens of megabytes.
const MAX_BACKLOG: u64 = 100_000;

/// Version of the on-disk format. A journal of another version is refused
/// with a message naming both.
pub const JOURNAL_VERSION: u32 = 6;

/// How the journal writes.
#[derive(Clone, Debug)]
pub struct JournalOptions {
    /// Longest a written record waits for fsync: what a crash can lose.
    pub sync_every: Duration,
    /// Log bytes since the last snapshot that start a compaction…
    pub compact_bytes: u64,
    /// …once they are also this many times the snapshot's bytes: each
    /// compaction rewrites the whole state, so with a state of a million
    /// tasks a fixed size would rewrite it every few seconds of a busy
    /// pipeline. This way its cost per record logged stays bounded; a
    /// restart reads the snapshot and at most four times the size that
    /// made a compaction due (see `compact_quiet`) of log.
    pub compact_ratio: u64,
    /// A compaction due waits for this long without records (a burst of
    /// work is over) before it begins, so that folding the state does not
    /// take the CPU from a busy pipeline; past four times the size that
    /// made it due, it begins anyway.
    pub compact_quiet: Duration,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self {
            sync_every: Duration::from_millis(200),
            compact_bytes: 64 << 20,
            compact_ratio: 2,
            compact_quiet: Duration::from_millis(500),
        }
    }
}

enum Write {
    Records(Vec<Record>),
    Module(String, Bytes),
    /// The whole state, after writes failed.
    Snapshot(Snapshot),
    Clear,
    Flush(mpsc::Sender<()>),
}

/// What the journal is doing, shared with the scheduler for `dtask info`.
#[derive(Debug, Default)]
pub struct Health {
    /// Writing failed and records are being dropped until a whole snapshot
    /// is written.
    broken: AtomicBool,
    /// The latest problem, for the user.
    problem: Mutex<Option<String>>,
    /// Bytes of records appended since the journal opened.
    pub bytes: AtomicU64,
    /// Records appended since the journal opened.
    pub records: AtomicU64,
    /// Syncs to disk since the journal opened.
    pub syncs: AtomicU64,
    /// Microseconds those syncs took, in all.
    pub sync_micros: AtomicU64,
    /// Compactions ended (done, given up or failed) since the journal
    /// opened.
    pub compactions: AtomicU64,
    /// Tasks the scheduler holds, as of its last hand-over (set by the
    /// scheduler; unknown, the most, while a journal found is read back):
    /// a journal whose logs forgot more than these is folded to shrink it.
    pub live_tasks: AtomicU64,
    /// Records handed to the writer and not yet written (or dropped).
    backlog: AtomicU64,
    /// Told each time the writer has taken a batch off the backlog.
    written: tokio::sync::Notify,
    /// Writes the writer has handled and handed to the file (a killed
    /// process no longer loses them), counted as [`Journal::sent`] counts
    /// them.
    reached: AtomicU64,
    /// Told each time `reached` moves.
    reached_note: tokio::sync::Notify,
    /// A whole snapshot is on its way to the writer or being written.
    snapshot_in_flight: AtomicBool,
    /// When to try a whole snapshot again after the last one failed, and
    /// how many failed in a row (the wait doubles with each, up to a
    /// minute: each try walks every task on the core).
    snapshot_retry: Mutex<(Option<Instant>, u32)>,
}

impl Health {
    fn fail(&self, what: String) {
        if !self.broken.swap(true, Ordering::AcqRel) {
            tracing::error!(
                "{what}; the scheduler keeps serving, but changes are not recorded until the journal \
                 can be written again"
            );
        }
        *self.problem.lock().expect("health lock") = Some(what);
    }

    fn healed(&self) {
        if self.broken.swap(false, Ordering::AcqRel) {
            tracing::warn!("the journal is written again (a whole snapshot was taken)");
        }
        *self.problem.lock().expect("health lock") = None;
    }

    /// A whole snapshot was written, or failed (`false`).
    fn snapshot_done(&self, ok: bool) {
        let mut retry = self.snapshot_retry.lock().expect("health lock");
        *retry = if ok {
            (None, 0)
        } else {
            let failures = retry.1.saturating_add(1);
            let wait = Duration::from_secs(1 << failures.min(6)).min(Duration::from_secs(60));
            (Some(Instant::now() + wait), failures)
        };
        self.snapshot_in_flight.store(false, Ordering::Release);
    }

    /// Waits until [`Journal::reached`] may have moved.
    pub async fn reached_moved(&self) {
        self.reached_note.notified().await;
    }

    /// The current problem, if any.
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().expect("health lock").clone()
    }
}

/// Hands writes to the journal's thread.
pub struct Journal {
    tx: mpsc::Sender<Write>,
    /// Records appended since the last [`Journal::hand_over`]: handed to
    /// the writer a batch of events at a time, not one wake-up per event.
    pending: Mutex<Vec<Record>>,
    /// Batches the writer has written and emptied, handed back so that
    /// the next ones reuse their room instead of growing from nothing.
    spare: Arc<Mutex<Vec<Vec<Record>>>>,
    thread: std::thread::JoinHandle<()>,
    health: Arc<Health>,
    /// Writes handed to the writer thread, ever.
    sent: AtomicU64,
}

/// What a journal directory held when opened.
pub struct Recovered {
    /// The state it recorded but its tasks, which
    /// [`Recovered::tasks`] streams.
    pub snapshot: Snapshot,
    /// The modules it names, by hash.
    pub modules: HashMap<String, Bytes>,
    fold: Fold,
    /// About how many tasks [`Recovered::tasks`] will hand over.
    expected: u64,
}

impl Recovered {
    /// About how many tasks [`Recovered::tasks`] will hand over (the
    /// snapshot's, and those the logs changed or added), to size the
    /// scheduler's tables once rather than grow them a million times.
    pub fn expected_tasks(&self) -> u64 {
        self.expected
    }

    /// Hands each task the journal recorded to `each` (in the order the
    /// snapshot and logs hold them, one at a time: never all in memory at
    /// once); returns how many there were. Reading, checking and decoding
    /// happen on a thread of their own, a batch ahead of `each`, so a
    /// restore costs about the slower of the two, not their sum.
    pub fn tasks(self, mut each: impl FnMut(SavedTask)) -> Result<u64, String> {
        const BATCH: usize = 1024;
        let fold = self.fold;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<SavedTask>>(8);
        let reader = std::thread::Builder::new()
            .name("dtask-journal-read".into())
            .spawn(move || {
                let mut n = 0;
                let mut batch = Vec::with_capacity(BATCH);
                fold.tasks(|t| {
                    n += 1;
                    batch.push(t);
                    if batch.len() == BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        // The receiver only goes away after this thread ends.
                        let _ = tx.send(full);
                    }
                    Ok(())
                })?;
                if !batch.is_empty() {
                    let _ = tx.send(batch);
                }
                Ok::<u64, String>(n)
            })
            .map_err(|e| format!("cannot start reading the journal: {e}"))?;
        for batch in rx {
            batch.into_iter().for_each(&mut each);
        }
        reader
            .join()
            .map_err(|_| "reading the journal failed unexpectedly".to_string())?
    }

    /// The whole state, tasks included, in memory.
    pub fn into_snapshot(mut self) -> Result<Snapshot, String> {
        let mut snapshot = Snapshot::empty();
        std::mem::swap(&mut snapshot, &mut self.snapshot);
        let mut tasks = Vec::new();
        self.tasks(|t| tasks.push(t))?;
        Ok(snapshot.with_tasks(tasks))
    }
}

impl Journal {
    /// Opens (creating) the journal in `dir`; returns what it held, if
    /// anything. A journal of another format version is an error; a
    /// damaged tail is cut off and reported.
    pub fn open(dir: &Path, options: JournalOptions) -> Result<(Self, Option<Recovered>), String> {
        private_dir(dir)
            .and_then(|()| private_dir(&dir.join(MODULES)))
            .map_err(|e| format!("cannot create the journal in {}: {e}", dir.display()))?;
        let mut problem = None;
        let verified = match SnapshotReader::open(&dir.join(SNAPSHOT)) {
            Ok(Some(reader)) => reader.verify(),
            Ok(None) => Ok(0),
            Err(e) => Err(e),
        };
        let mut expected = 0;
        let folded = verified.and_then(|n| {
            expected = n;
            fold(dir, None, true)
        });
        let (fold, last_generation) = match folded {
            Ok(found) => {
                let last = found.last;
                expected += found.window.len() as u64;
                if let Some(first) = found.set_aside.first() {
                    problem = Some(format!(
                        "a journal log was damaged: what came after the damage is not recovered; \
                         {} later log(s) were set aside, the first as {}",
                        found.set_aside.len(),
                        first.display()
                    ));
                }
                (found.found.then_some(found), last)
            }
            Err(LoadError::Refused(why)) => return Err(why),
            Err(LoadError::Damaged(why)) => {
                let aside = set_aside(dir)
                    .map_err(|e| format!("{why}, and it cannot be set aside: {e}"))?;
                let what = format!(
                    "{why}; it was moved to {} and the scheduler started empty",
                    aside.display()
                );
                tracing::error!("{what}");
                problem = Some(what);
                (None, 0)
            }
        };
        let recovered = match fold {
            None => None,
            Some(mut fold) => {
                let snapshot = std::mem::take(&mut fold.rest).into_snapshot();
                let mut modules = HashMap::new();
                for hash in snapshot.modules() {
                    let file = dir.join(MODULES).join(format!("{hash}.wasm"));
                    match std::fs::read(&file) {
                        Ok(b) if blake3::hash(&b).to_hex().as_str() == hash => {
                            modules.insert(hash.clone(), Bytes::from(b));
                        }
                        Ok(_) => {
                            tracing::warn!("journal module {} is damaged; skipped", file.display())
                        }
                        Err(e) => {
                            tracing::warn!("journal module {} unreadable: {e}", file.display())
                        }
                    }
                }
                Some(Recovered {
                    snapshot,
                    modules,
                    fold,
                    expected,
                })
            }
        };
        let health = Arc::new(Health::default());
        *health.problem.lock().expect("health lock") = problem;
        // Not known until the state is restored (the scheduler then says):
        // no fold to shrink the journal while it is being read back.
        if recovered.is_some() {
            health.live_tasks.store(u64::MAX, Ordering::Relaxed);
        }
        let (tx, rx) = mpsc::channel();
        let spare = Arc::new(Mutex::new(Vec::new()));
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            options,
            health: health.clone(),
            generation: last_generation + 1,
            log: None,
            log_bytes: 0,
            forgets: recovered.as_ref().map_or(0, |r| r.fold.forgets),
            unsynced: false,
            last_sync: Instant::now(),
            last_records: Instant::now(),
            compacting: Arc::new(AtomicBool::new(false)),
            snapshot_bytes: Arc::new(AtomicU64::new(writer::snapshot_bytes(dir))),
            snapshot_lock: Arc::new(Mutex::new(0)),
            spare: spare.clone(),
            frame: Vec::new(),
            unwritten_modules: Vec::new(),
            handled: 0,
            slow: super::faults::slow_journal(),
        };
        writer.open_log();
        let thread = std::thread::Builder::new()
            .name("dtask-journal".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| format!("cannot start the journal writer: {e}"))?;
        let pending = Mutex::default();
        Ok((
            Self {
                tx,
                pending,
                spare,
                thread,
                health,
                sent: AtomicU64::new(0),
            },
            recovered,
        ))
    }

    /// Appends records, handed to the writer at the next
    /// [`Journal::hand_over`] (or any other write), and written in the
    /// background.
    pub fn append(&self, records: Vec<Record>) {
        self.record(|pending| pending.extend(records));
    }

    /// Appends what `add` pushes onto the records waiting for the next
    /// hand-over (as [`Journal::append`], without a vector of its own).
    pub fn record(&self, add: impl FnOnce(&mut Vec<Record>)) {
        add(&mut self.pending.lock().expect("pending lock"));
    }

    /// Records appended since the last hand-over.
    pub fn pending(&self) -> usize {
        self.pending.lock().expect("pending lock").len()
    }

    /// Hands the records appended so far to the writer.
    pub fn hand_over(&self) {
        let mut pending = self.pending.lock().expect("pending lock");
        if !pending.is_empty() {
            let spare = self.spare.lock().expect("spare lock").pop();
            let spare = spare.unwrap_or_default();
            let records = std::mem::replace(&mut *pending, spare);
            drop(pending);
            self.health
                .backlog
                .fetch_add(records.len() as u64, Ordering::AcqRel);
            self.send(Write::Records(records));
        }
    }

    /// Hands `write` to the writer thread, counting it; whether the
    /// writer took it.
    fn send(&self, write: Write) -> bool {
        let sent = self.tx.send(write).is_ok();
        if sent {
            self.sent.fetch_add(1, Ordering::AcqRel);
        }
        sent
    }

    /// How many writes were handed to the writer so far: once
    /// [`Journal::reached`] is as many, all of them are in the file.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }

    /// How many of the writes handed over are in the file (written, if
    /// not yet synced to disk): a process killed now keeps them. Should
    /// the writer thread have ended, all are counted, so that nothing
    /// waits for it forever.
    pub fn reached(&self) -> u64 {
        if self.thread.is_finished() {
            return u64::MAX;
        }
        self.health.reached.load(Ordering::Acquire)
    }

    /// Waits while more than [`MAX_BACKLOG`] records wait for the writer:
    /// the core loop calls it after each hand-over, so a disk or a writer
    /// thread slower than the events holds the scheduler back (and, through
    /// its bounded queues, the clients) instead of queueing records without
    /// bound.
    pub async fn caught_up(&self) {
        while self.health.backlog.load(Ordering::Acquire) > MAX_BACKLOG {
            // Polled too, should a wake-up come between the check and the
            // wait.
            let _ = tokio::time::timeout(Duration::from_millis(20), self.health.written.notified())
                .await;
        }
    }

    /// Records a module.
    pub fn module(&self, hash: &str, bytes: Bytes) {
        self.hand_over();
        self.send(Write::Module(hash.to_string(), bytes));
    }

    /// Whether records were dropped and a whole snapshot is needed
    /// ([`Journal::snapshot`]) before the journal is whole again.
    pub fn needs_snapshot(&self) -> bool {
        let h = &self.health;
        h.broken.load(Ordering::Acquire)
            && !h.snapshot_in_flight.load(Ordering::Acquire)
            && h.snapshot_retry
                .lock()
                .expect("health lock")
                .0
                .is_none_or(|at| Instant::now() >= at)
    }

    /// Writes the whole state (after writing failed).
    pub fn snapshot(&self, snapshot: Snapshot) {
        // Records of what the snapshot already holds must not follow it.
        self.pending.lock().expect("pending lock").clear();
        self.health
            .snapshot_in_flight
            .store(true, Ordering::Release);
        if !self.send(Write::Snapshot(snapshot)) {
            self.health.snapshot_done(false);
        }
    }

    /// What the journal is doing.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Waits until everything handed over so far is written and synced.
    pub fn flush(&self) {
        self.hand_over();
        let (tx, rx) = mpsc::channel();
        if self.send(Write::Flush(tx)) {
            let _ = rx.recv();
        }
    }

    /// Forgets the state (after a requested shutdown: nothing to resume),
    /// and waits for the writer to finish.
    pub fn clear(self) {
        self.pending.lock().expect("pending lock").clear();
        self.send(Write::Clear);
        self.close();
    }

    /// Waits until everything handed over is written.
    pub fn close(self) {
        self.hand_over();
        drop(self.tx);
        let _ = self.thread.join();
    }
}

fn log_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("log-{generation:012}.bin"))
}

/// The generations of the logs in `dir`, sorted.
fn log_gens(dir: &Path) -> Vec<u64> {
    let mut generations: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("log-")?
                .strip_suffix(".bin")?
                .parse()
                .ok()
        })
        .collect();
    generations.sort_unstable();
    generations
}

/// Deletes the logs of generations up to `upto`.
fn remove_logs(dir: &Path, upto: u64) {
    for generation in log_gens(dir).into_iter().filter(|g| *g <= upto) {
        let _ = std::fs::remove_file(log_path(dir, generation));
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The last log generation the snapshot in `dir` covers, if there is one.
pub(crate) fn read_snapshot_gen(dir: &Path) -> Option<u64> {
    let mut f = std::fs::File::open(dir.join(SNAPSHOT)).ok()?;
    let mut header = [0u8; SNAPSHOT_HEADER];
    f.read_exact(&mut header).ok()?;
    Some(u64::from_le_bytes(header[12..20].try_into().ok()?))
}

/// Writes `items` as a snapshot covering the logs up to `covers`, to a
/// temporary file named after `what` (which [`files::install`] puts in
/// place).
fn write_snapshot(
    dir: &Path,
    covers: u64,
    items: impl Iterator<Item = Item>,
    what: &str,
) -> std::io::Result<PathBuf> {
    let mut w = SnapshotWriter::create(dir.join(format!(".{SNAPSHOT}.{what}.tmp")), covers)?;
    for item in items {
        w.push(&item)?;
    }
    w.finish()
}

/// Folds the snapshot and the logs up to `upto` into a new snapshot, as a
/// stream (see the module docs); returns its temporary file and how many
/// tasks it holds.
fn compact(dir: &Path, upto: u64) -> Result<(PathBuf, u64), String> {
    let mut found = fold(dir, Some(upto), false).map_err(|e| match e {
        LoadError::Damaged(m) | LoadError::Refused(m) => format!("cannot compact the journal: {m}"),
    })?;
    let write = |e: std::io::Error| format!("cannot compact the journal in {}: {e}", dir.display());
    let tmp = dir.join(format!(".{SNAPSHOT}.compact.tmp"));
    let mut w = SnapshotWriter::create(tmp, upto).map_err(write)?;
    for item in std::mem::take(&mut found.rest).into_snapshot().into_items() {
        w.push(&item).map_err(write)?;
    }
    let mut tasks = 0u64;
    found.tasks(|t| {
        tasks += 1;
        w.push(&Item::Task(t)).map_err(write)
    })?;
    Ok((w.finish().map_err(write)?, tasks))
}

/// Moves a damaged journal's snapshot and logs into a `damaged-SECONDS`
/// directory inside it, for a person to look at.
fn set_aside(dir: &Path) -> std::io::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = dir.join(format!("damaged-{secs}"));
    private_dir(&aside)?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let n = name.to_string_lossy();
        if n == SNAPSHOT || n.starts_with("log-") {
            std::fs::rename(entry.path(), aside.join(&name))?;
        }
    }
    Ok(aside)
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
    let mut f = private_file(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dest)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Creates (or empties) the file at `path`, readable by this user alone:
/// task arguments and granted environment (secrets, often) are in the
/// journal's files.
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> Record {
        Record::Event {
            name: name.into(),
            set: true,
        }
    }

    fn records_of(r: Recovered) -> Vec<Record> {
        Model::from_snapshot(r.into_snapshot().unwrap()).into_records()
    }

    fn only_log(dir: &Path) -> PathBuf {
        let gens = log_gens(dir);
        assert_eq!(gens.len(), 1, "{gens:?}");
        log_path(dir, gens[0])
    }

    /// A journal in `dir` whose one log holds `kept`, then `last` in a
    /// frame of its own; the log's path.
    fn kept_then(dir: &Path, last: &str) -> PathBuf {
        let (j, _) = Journal::open(dir, JournalOptions::default()).unwrap();
        j.append(vec![event("kept")]);
        j.flush();
        j.append(vec![event(last)]);
        j.close();
        only_log(dir)
    }

    /// Damages the last frame of `log` (its last byte flipped); what the
    /// file then holds.
    fn damage_last_frame(log: &Path) -> Vec<u8> {
        let mut bytes = std::fs::read(log).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(log, &bytes).unwrap();
        bytes
    }

    #[test]
    fn the_core_waits_while_the_writer_is_too_far_behind_and_goes_on_once_it_catches_up() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        rt.block_on(async {
            // Nothing waits: no wait.
            tokio::time::timeout(Duration::from_secs(10), j.caught_up())
                .await
                .expect("caught up at once");
            // A writer further behind than the limit allows, and one batch
            // more.
            j.health
                .backlog
                .fetch_add(MAX_BACKLOG + 1, Ordering::AcqRel);
            j.append(vec![event("one"), event("two")]);
            j.hand_over();
            let waited = tokio::time::timeout(Duration::from_millis(200), j.caught_up()).await;
            assert!(
                waited.is_err(),
                "the core must wait while the writer is behind"
            );
            // The writer has written the real batch meanwhile; once the rest
            // of its backlog is written too, the core goes on.
            j.flush();
            assert_eq!(j.health.backlog.load(Ordering::Acquire), MAX_BACKLOG + 1);
            j.health
                .backlog
                .fetch_sub(MAX_BACKLOG + 1, Ordering::AcqRel);
            j.health.written.notify_one();
            tokio::time::timeout(Duration::from_secs(10), j.caught_up())
                .await
                .expect("caught up once written");
        });
        j.close();
    }

    #[test]
    fn a_big_batch_is_written_as_frames_the_reader_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        let set = |i: u8| Record::Variable {
            name: format!("v{i}"),
            item: Some(crate::protocol::Arg::Value(Bytes::from(vec![i; 3 << 20]))),
        };
        // One turn's records, 15 MiB together.
        j.append((0..5).map(set).collect());
        j.close();
        let log = only_log(dir.path());
        let bytes = std::fs::read(&log).unwrap();
        let mut at = LOG_HEADER;
        let mut frames = 0;
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            assert!(len < 8 << 20, "a frame of {len} bytes");
            at += 8 + len;
            frames += 1;
        }
        assert!(frames >= 2, "one frame for the whole turn");
        let (j, found) = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        let records = records_of(found.expect("recovered"));
        for i in 0..5 {
            assert!(records.contains(&set(i)), "v{i} was not recovered");
        }
        j.close();
    }

    #[test]
    fn a_logs_records_are_counted_from_its_whole_frames_only() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        j.append(vec![event("a"), event("b")]);
        j.hand_over();
        j.append(vec![event("c")]);
        j.close();
        let log = only_log(dir.path());
        assert_eq!(recovery::count_records(&log), 3);
        // A frame whose checksum is wrong, claiming a huge count: not
        // counted, and nothing after it either.
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let payload = [0xff, 0xff, 0xff, 0xff, 0x0f];
        f.write_all(&(payload.len() as u32).to_le_bytes()).unwrap();
        f.write_all(&0u32.to_le_bytes()).unwrap();
        f.write_all(&payload).unwrap();
        files::write_frame(&mut f, 1, &postcard::to_allocvec(&event("d")).unwrap()).unwrap();
        drop(f);
        assert_eq!(recovery::count_records(&log), 3);
        assert_eq!(recovery::count_records(&dir.path().join("absent")), 0);
    }

    #[test]
    fn a_torn_tail_recovers_everything_before_it_and_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let (j, found) = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        assert!(found.is_none());
        j.append(vec![event("first")]);
        j.append(vec![event("second")]);
        j.close();
        let log = only_log(dir.path());
        let whole = std::fs::metadata(&log).unwrap().len();
        // A frame cut short by a crash: its length promises more than is there.
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
        drop(f);
        let (j, found) = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        let records = records_of(found.expect("recovered"));
        assert!(records.contains(&event("first")) && records.contains(&event("second")));
        assert_eq!(std::fs::metadata(&log).unwrap().len(), whole, "cut back");
        j.close();
    }

    #[test]
    fn a_damaged_frame_ends_the_replay_there() {
        let dir = tempfile::tempdir().unwrap();
        damage_last_frame(&kept_then(dir.path(), "damaged"));
        let (j, found) = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        let records = records_of(found.expect("recovered"));
        assert!(records.contains(&event("kept")));
        assert!(!records.contains(&event("damaged")));
        j.close();
    }

    #[test]
    fn a_broken_journal_asks_for_one_whole_snapshot_at_a_time_and_waits_after_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        j.health().fail("writing failed".into());
        assert!(j.needs_snapshot());
        // The directory gone, the snapshot cannot be written.
        std::fs::remove_dir_all(dir.path()).unwrap();
        j.snapshot(crate::scheduler::state::Scheduler::new().snapshot());
        assert!(
            !j.needs_snapshot(),
            "a second snapshot while one is in flight"
        );
        j.flush();
        assert!(j.health().problem().is_some());
        assert!(!j.needs_snapshot(), "asked again at once after a failure");
        // Once the wait is over, it asks again.
        j.health().snapshot_retry.lock().unwrap().0 = Some(Instant::now());
        assert!(j.needs_snapshot());
        j.close();
    }

    #[test]
    fn compacting_over_a_damaged_log_fails_and_keeps_the_logs() {
        let dir = tempfile::tempdir().unwrap();
        let log = kept_then(dir.path(), "after");
        let generation = log_gens(dir.path())[0];
        let bytes = damage_last_frame(&log);
        let err = compact(dir.path(), generation).expect_err("compacted over damage");
        assert!(err.contains("damaged"), "{err}");
        assert_eq!(std::fs::read(&log).unwrap(), bytes, "the log was changed");
        assert!(!dir.path().join(SNAPSHOT).exists());
    }

    #[test]
    fn a_compaction_begun_before_a_clear_or_a_whole_snapshot_puts_nothing_back() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        j.append(vec![event("forgotten")]);
        j.close();
        let generation = log_gens(dir.path())[0];
        let lock = Mutex::new(0);
        // Cleared (count 0 → 1) between folding the logs and installing.
        let folded = compact(dir.path(), generation).unwrap();
        *lock.lock().unwrap() += 1;
        let tmp = folded.0.clone();
        let put = writer::install_compaction(dir.path(), generation, Ok(folded), &lock, 0);
        assert_eq!(put, Ok(None));
        assert!(!dir.path().join(SNAPSHOT).exists(), "the clear was undone");
        assert!(!tmp.exists(), "its file was left behind");
        assert!(log_path(dir.path(), generation).exists());
        // A whole snapshot covering more was written meanwhile (and removed
        // the logs the compaction was reading): its failure is no news.
        let newer = write_snapshot(
            dir.path(),
            generation + 1,
            Snapshot::empty().into_items(),
            "whole",
        )
        .unwrap();
        files::install(&newer, &dir.path().join(SNAPSHOT)).unwrap();
        let failed = Err("cannot read a log that is gone".to_string());
        let put = writer::install_compaction(dir.path(), generation, failed, &lock, 1);
        assert_eq!(put, Ok(None));
        // Unless superseded, a failure is reported and a fold installed.
        let failed = Err("damaged".to_string());
        assert!(writer::install_compaction(dir.path(), generation + 5, failed, &lock, 1).is_err());
    }

    #[test]
    fn logs_set_aside_after_a_damaged_one_are_shown_in_the_journals_health() {
        let dir = tempfile::tempdir().unwrap();
        let damaged = kept_then(dir.path(), "damaged");
        let (j, _) = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        assert_eq!(j.health.problem(), None);
        j.append(vec![event("later")]);
        j.close();
        damage_last_frame(&damaged);
        let (j, found) = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        let records = records_of(found.expect("recovered"));
        assert!(records.contains(&event("kept")));
        assert!(!records.contains(&event("later")));
        let problem = j.health.problem().expect("the damage is shown");
        assert!(problem.contains("set aside"), "{problem}");
        j.close();
    }

    #[test]
    fn a_module_whose_writing_failed_is_written_with_the_snapshot_that_mends_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        let modules = dir.path().join(MODULES);
        // Its folder unusable: the write fails.
        std::fs::remove_dir(&modules).unwrap();
        std::fs::write(&modules, b"not a folder").unwrap();
        let bytes = Bytes::from_static(b"\0asm module bytes");
        let hash = blake3::hash(&bytes).to_hex().to_string();
        j.module(&hash, bytes.clone());
        j.flush();
        let problem = j.health.problem().expect("the failure is shown");
        assert!(problem.contains("cannot write module"), "{problem}");
        assert!(j.needs_snapshot());
        // Usable again: the mending snapshot writes it first.
        std::fs::remove_file(&modules).unwrap();
        std::fs::create_dir(&modules).unwrap();
        j.snapshot(Snapshot::empty());
        j.flush();
        assert_eq!(j.health.problem(), None);
        let written = std::fs::read(modules.join(format!("{hash}.wasm"))).unwrap();
        assert_eq!(written, bytes);
        j.close();
    }

    #[test]
    fn a_journal_of_another_version_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let mut header = LOG_MAGIC.to_vec();
        header.extend_from_slice(&99u32.to_le_bytes());
        header.extend_from_slice(&1u64.to_le_bytes());
        std::fs::write(log_path(dir.path(), 1), header).unwrap();
        let err = Journal::open(dir.path(), JournalOptions::default())
            .err()
            .expect("refused");
        assert!(err.contains("version 99"), "{err}");
        assert!(err.contains(&format!("version {JOURNAL_VERSION}")), "{err}");
    }

    #[test]
    fn compaction_folds_the_logs_into_a_snapshot_that_recovers_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let options = JournalOptions {
            compact_bytes: 1,
            compact_ratio: 0,
            compact_quiet: Duration::ZERO,
            ..JournalOptions::default()
        };
        let (j, _) = Journal::open(dir.path(), options.clone()).unwrap();
        j.append(vec![event("a")]);
        j.append(vec![event("b")]);
        j.flush();
        let deadline = Instant::now() + Duration::from_secs(20);
        while read_snapshot_gen(dir.path()).is_none() {
            assert!(Instant::now() < deadline, "no compaction");
            std::thread::sleep(Duration::from_millis(10));
        }
        j.append(vec![event("c")]);
        j.close();
        let (j, found) = Journal::open(dir.path(), options).unwrap();
        let records = records_of(found.expect("recovered"));
        for e in ["a", "b", "c"] {
            assert!(records.contains(&event(e)), "{e}: {records:?}");
        }
        j.close();
    }

    #[test]
    fn compaction_waits_for_the_log_to_outgrow_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let options = JournalOptions {
            compact_bytes: 1,
            compact_ratio: 2,
            compact_quiet: Duration::ZERO,
            ..JournalOptions::default()
        };
        let (j, _) = Journal::open(dir.path(), options).unwrap();
        let named = |i: usize| event(&format!("{i:0200}"));
        j.append((0..100).map(named).collect());
        j.flush();
        let deadline = Instant::now() + Duration::from_secs(20);
        while j.health().compactions.load(Ordering::Acquire) == 0 {
            assert!(Instant::now() < deadline, "no first compaction");
            std::thread::sleep(Duration::from_millis(10));
        }
        let snapshot = std::fs::metadata(dir.path().join(SNAPSHOT)).unwrap().len();
        assert!(snapshot > 100 * 200, "{snapshot}");
        // A compaction begins by opening the next log, before the writer
        // takes its next write: once a flush is answered, whether this
        // write started one is seen in the logs.
        let before = log_gens(dir.path());
        assert_eq!(before.len(), 1, "the folded log is gone: {before:?}");
        j.append((100..110).map(named).collect());
        j.flush();
        assert_eq!(
            log_gens(dir.path()),
            before,
            "far less than twice the snapshot"
        );
        j.append((110..600).map(named).collect());
        j.flush();
        let after = log_gens(dir.path());
        assert!(after.last() > before.last(), "{after:?} after {before:?}");
        j.close();
    }

    #[test]
    fn a_due_compaction_waits_for_quiet_unless_the_log_runs_far_past() {
        let named = |i: usize| event(&format!("{i:0200}"));
        // Records keep coming (the quiet is never reached here): due at
        // 10 kB, it begins only past four times that.
        let dir = tempfile::tempdir().unwrap();
        let options = JournalOptions {
            compact_bytes: 10_000,
            compact_ratio: 0,
            compact_quiet: Duration::from_secs(3600),
            ..JournalOptions::default()
        };
        let (j, _) = Journal::open(dir.path(), options).unwrap();
        let first = log_gens(dir.path());
        j.append((0..100).map(named).collect());
        j.flush();
        assert_eq!(log_gens(dir.path()), first, "due, but records keep coming");
        j.append((100..250).map(named).collect());
        j.flush();
        let pushed = log_gens(dir.path());
        assert!(pushed.last() > first.last(), "{pushed:?}");
        j.close();
        // Due, then quiet: it begins with no further write.
        let dir = tempfile::tempdir().unwrap();
        let options = JournalOptions {
            compact_bytes: 10_000,
            compact_ratio: 0,
            compact_quiet: Duration::from_millis(50),
            ..JournalOptions::default()
        };
        let (j, _) = Journal::open(dir.path(), options).unwrap();
        j.append((0..100).map(named).collect());
        j.flush();
        let deadline = Instant::now() + Duration::from_secs(20);
        while j.health().compactions.load(Ordering::Acquire) == 0 {
            assert!(Instant::now() < deadline, "no compaction once quiet");
            std::thread::sleep(Duration::from_millis(10));
        }
        j.close();
    }

    /// What the writer wrote is in the file once it has caught up, long
    /// before the next sync: a killed process does not take it along.
    #[test]
    fn records_reach_the_file_without_waiting_for_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let options = JournalOptions {
            sync_every: Duration::from_secs(3600),
            ..JournalOptions::default()
        };
        let (j, _) = Journal::open(dir.path(), options).unwrap();
        let log = log_path(dir.path(), *log_gens(dir.path()).last().unwrap());
        let header = std::fs::metadata(&log).unwrap().len();
        j.append(vec![event("a"), event("b")]);
        j.hand_over();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&log).unwrap().len() == header {
            assert!(
                Instant::now() < deadline,
                "the records stayed in the writer's buffer"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        j.close();
    }

    #[test]
    fn a_snapshot_cut_short_is_damaged_not_half_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let items = vec![Item::Event("kept".into()), Item::End { tasks: 0 }];
        let tmp = write_snapshot(dir.path(), 1, items.into_iter(), "test").unwrap();
        files::install(&tmp, &dir.path().join(SNAPSHOT)).unwrap();
        let whole = std::fs::read(dir.path().join(SNAPSHOT)).unwrap();
        let (j, found) = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        assert!(records_of(found.expect("whole")).contains(&event("kept")));
        j.close();
        // The same snapshot without its last bytes (its end mark).
        std::fs::write(dir.path().join(SNAPSHOT), &whole[..whole.len() - 3]).unwrap();
        let (j, found) = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        assert!(found.is_none());
        let problem = j.health().problem().expect("reported");
        assert!(problem.contains("damaged"), "{problem}");
        j.close();
    }

    #[test]
    fn a_damaged_snapshot_is_set_aside_and_the_scheduler_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        bytes.extend_from_slice(&JOURNAL_VERSION.to_le_bytes());
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(b"not what the checksum says");
        std::fs::write(dir.path().join(SNAPSHOT), &bytes).unwrap();
        let (j, found) = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        assert!(found.is_none());
        let problem = j.health().problem().expect("reported");
        assert!(problem.contains("damaged"), "{problem}");
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("damaged-"))
            .expect("set aside");
        assert_eq!(std::fs::read(aside.path().join(SNAPSHOT)).unwrap(), bytes);
        j.close();
    }
}
