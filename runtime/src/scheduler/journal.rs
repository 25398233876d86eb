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

use super::state::{Item, Model, Record, SavedTask, Snapshot, Window};
use bytes::Bytes;
use files::{Frame, Frames, SNAPSHOT_HEADER, SnapshotReader, SnapshotWriter, read_full};
use std::collections::HashMap;
use std::io::{Read, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

const SNAPSHOT: &str = "snapshot.bin";
const MODULES: &str = "modules";
const LOG_MAGIC: &[u8; 8] = b"DTASKLOG";
const SNAPSHOT_MAGIC: &[u8; 8] = b"DTASKSNP";
/// Header: magic, version (u32), generation (u64).
const LOG_HEADER: usize = 8 + 4 + 8;
/// Largest frame the reader accepts (a frame is one batch of records).
const MAX_FRAME: usize = 1 << 30;

/// Version of the on-disk format. A journal of another version is refused
/// with a message naming both.
pub const JOURNAL_VERSION: u32 = 6;

/// How the journal writes.
#[derive(Clone, Debug)]
pub struct JournalOptions {
    /// Longest a written record waits for fsync: what a crash can lose.
    pub sync_every: Duration,
    /// Log bytes since the last snapshot that start a compaction.
    pub compact_bytes: u64,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self {
            sync_every: Duration::from_millis(200),
            compact_bytes: 64 << 20,
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
    thread: std::thread::JoinHandle<()>,
    health: Arc<Health>,
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
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            options,
            health: health.clone(),
            generation: last_generation + 1,
            log: None,
            log_bytes: 0,
            unsynced: false,
            last_sync: Instant::now(),
            compacting: Arc::new(AtomicBool::new(false)),
            snapshot_lock: Arc::new(Mutex::new(())),
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
                thread,
                health,
            },
            recovered,
        ))
    }

    /// Appends records, handed to the writer at the next
    /// [`Journal::hand_over`] (or any other write), and written in the
    /// background.
    pub fn append(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        let mut pending = self.pending.lock().expect("pending lock");
        if pending.is_empty() {
            *pending = records;
        } else {
            pending.extend(records);
        }
    }

    /// Hands the records appended so far to the writer.
    pub fn hand_over(&self) {
        let records = std::mem::take(&mut *self.pending.lock().expect("pending lock"));
        if !records.is_empty() {
            let _ = self.tx.send(Write::Records(records));
        }
    }

    /// Records a module.
    pub fn module(&self, hash: &str, bytes: Bytes) {
        self.hand_over();
        let _ = self.tx.send(Write::Module(hash.to_string(), bytes));
    }

    /// Whether records were dropped and a whole snapshot is needed
    /// ([`Journal::snapshot`]) before the journal is whole again.
    pub fn needs_snapshot(&self) -> bool {
        self.health.broken.load(Ordering::Acquire)
    }

    /// Writes the whole state (after writing failed).
    pub fn snapshot(&self, snapshot: Snapshot) {
        // Records of what the snapshot already holds must not follow it.
        self.pending.lock().expect("pending lock").clear();
        let _ = self.tx.send(Write::Snapshot(snapshot));
    }

    /// What the journal is doing.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Waits until everything handed over so far is written and synced.
    pub fn flush(&self) {
        self.hand_over();
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Write::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Forgets the state (after a requested shutdown: nothing to resume),
    /// and waits for the writer to finish.
    pub fn clear(self) {
        self.pending.lock().expect("pending lock").clear();
        let _ = self.tx.send(Write::Clear);
        self.close();
    }

    /// Waits until everything handed over is written.
    pub fn close(self) {
        self.hand_over();
        drop(self.tx);
        let _ = self.thread.join();
    }
}

struct Writer {
    dir: PathBuf,
    options: JournalOptions,
    health: Arc<Health>,
    /// Generation of the log being appended to.
    generation: u64,
    log: Option<std::io::BufWriter<std::fs::File>>,
    /// Bytes in logs since the last snapshot started.
    log_bytes: u64,
    unsynced: bool,
    last_sync: Instant,
    compacting: Arc<AtomicBool>,
    snapshot_lock: Arc<Mutex<()>>,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Write>) {
        loop {
            let wait = if self.unsynced {
                self.options
                    .sync_every
                    .saturating_sub(self.last_sync.elapsed())
            } else {
                Duration::from_secs(3600)
            };
            match rx.recv_timeout(wait) {
                Ok(w) => self.handle(w),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.sync();
                    return;
                }
            }
            if self.unsynced && self.last_sync.elapsed() >= self.options.sync_every {
                self.sync();
            }
            if self.log_bytes >= self.options.compact_bytes
                && !self.compacting.load(Ordering::Acquire)
                && !self.health.broken.load(Ordering::Acquire)
            {
                self.compact();
            }
        }
    }

    fn handle(&mut self, w: Write) {
        match w {
            Write::Records(records) => {
                if self.health.broken.load(Ordering::Acquire) {
                    return;
                }
                let n = records.len() as u64;
                let payload = postcard::to_allocvec(&records).expect("records serialize");
                let mut frame = Vec::with_capacity(payload.len() + 8);
                frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
                frame.extend_from_slice(&payload);
                let result = match &mut self.log {
                    Some(log) => log.write_all(&frame),
                    None => Err(std::io::Error::other("no log file is open")),
                };
                match result {
                    Ok(()) => {
                        self.log_bytes += frame.len() as u64;
                        self.unsynced = true;
                        self.health
                            .bytes
                            .fetch_add(frame.len() as u64, Ordering::Relaxed);
                        self.health.records.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => self.failed(format!(
                        "cannot append to the journal in {}: {e}",
                        self.dir.display()
                    )),
                }
            }
            Write::Module(hash, bytes) => {
                let dest = self.dir.join(MODULES).join(format!("{hash}.wasm"));
                if !dest.exists()
                    && let Err(e) = durable_write(&dest, &bytes)
                {
                    self.failed(format!(
                        "cannot write module {hash} to the journal in {}: {e}",
                        self.dir.display()
                    ));
                }
            }
            Write::Snapshot(snapshot) => {
                // Everything up to now is in it: it covers the current log,
                // and appending goes on in a fresh one.
                let covers = self.generation;
                let written = write_snapshot(&self.dir, covers, snapshot.into_items(), "whole")
                    .and_then(|tmp| {
                        let _guard = self.snapshot_lock.lock().expect("snapshot lock");
                        files::install(&tmp, &self.dir.join(SNAPSHOT))
                    });
                match written {
                    Ok(()) => {
                        self.log = None;
                        self.generation += 1;
                        self.log_bytes = 0;
                        remove_logs(&self.dir, covers);
                        self.open_log();
                        if self.log.is_some() {
                            self.health.healed();
                        }
                    }
                    Err(e) => self.failed(format!(
                        "cannot write a snapshot to the journal in {}: {e}",
                        self.dir.display()
                    )),
                }
            }
            Write::Clear => {
                self.log = None;
                let _guard = self.snapshot_lock.lock().expect("snapshot lock");
                remove_logs(&self.dir, u64::MAX);
                let _ = std::fs::remove_file(self.dir.join(SNAPSHOT));
                self.unsynced = false;
            }
            Write::Flush(ack) => {
                self.sync();
                let _ = ack.send(());
            }
        }
    }

    fn failed(&mut self, what: String) {
        // The log may now end in a partial frame: start a new one once the
        // whole state can be written.
        self.log = None;
        self.unsynced = false;
        self.health.fail(what);
    }

    fn sync(&mut self) {
        if !self.unsynced {
            return;
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
        let result = match &mut self.log {
            Some(log) => log.flush().and_then(|()| log.get_ref().sync_data()),
            None => Ok(()),
        };
        let took = self.last_sync.elapsed().as_micros() as u64;
        self.health.syncs.fetch_add(1, Ordering::Relaxed);
        self.health.sync_micros.fetch_add(took, Ordering::Relaxed);
        if let Err(e) = result {
            self.failed(format!(
                "cannot sync the journal in {}: {e}",
                self.dir.display()
            ));
        }
    }

    fn open_log(&mut self) {
        let path = log_path(&self.dir, self.generation);
        let opened = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            let mut header = Vec::with_capacity(LOG_HEADER);
            header.extend_from_slice(LOG_MAGIC);
            header.extend_from_slice(&JOURNAL_VERSION.to_le_bytes());
            header.extend_from_slice(&self.generation.to_le_bytes());
            f.write_all(&header)?;
            f.sync_all()?;
            std::fs::File::open(&self.dir)?.sync_all()?;
            Ok::<_, std::io::Error>(f)
        })();
        match opened {
            Ok(f) => self.log = Some(std::io::BufWriter::with_capacity(1 << 20, f)),
            Err(e) => self.failed(format!("cannot create {}: {e}", path.display())),
        }
    }

    /// Starts a new log and folds the older ones into a snapshot in the
    /// background.
    fn compact(&mut self) {
        self.sync();
        let upto = self.generation;
        self.log = None;
        self.generation += 1;
        self.log_bytes = 0;
        self.open_log();
        self.compacting.store(true, Ordering::Release);
        let dir = self.dir.clone();
        let flag = self.compacting.clone();
        let lock = self.snapshot_lock.clone();
        let health = self.health.clone();
        let spawned = std::thread::Builder::new()
            .name("dtask-compact".into())
            .spawn(move || {
                let began = Instant::now();
                let compacted = compact(&dir, upto).and_then(|(tmp, tasks)| {
                    let _guard = lock.lock().expect("snapshot lock");
                    // A whole snapshot written meanwhile covers more.
                    if read_snapshot_gen(&dir).is_some_and(|g| g > upto) {
                        let _ = std::fs::remove_file(&tmp);
                        return Ok(None);
                    }
                    files::install(&tmp, &dir.join(SNAPSHOT)).map_err(|e| {
                        format!("cannot compact the journal in {}: {e}", dir.display())
                    })?;
                    remove_logs(&dir, upto);
                    Ok(Some(tasks))
                });
                match compacted {
                    Ok(Some(tasks)) => tracing::info!(
                        "journal compacted: {tasks} tasks in a snapshot, in {:?}",
                        began.elapsed()
                    ),
                    Ok(None) => {}
                    Err(e) => health.fail(e),
                }
                flag.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.compacting.store(false, Ordering::Release);
        }
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

/// A journal directory read up to its tasks: everything but the tasks
/// (small) in `rest`, the logs' changes to tasks in `window`, and the
/// snapshot's tasks still to be read, which [`Fold::tasks`] merges with
/// the window as a stream.
#[derive(Default)]
struct Fold {
    rest: Model,
    window: Window,
    old: Option<SnapshotReader>,
    /// The snapshot's first task, read while looking for the end of `rest`.
    first: Option<SavedTask>,
    /// The last log generation read.
    last: u64,
    /// Whether there was a snapshot or a log at all.
    found: bool,
}

impl Fold {
    /// Hands every task of the folded state to `out`, in key order.
    fn tasks(self, out: impl FnMut(SavedTask) -> Result<(), String>) -> Result<(), String> {
        let mut old = self.old;
        let old_tasks = self
            .first
            .into_iter()
            .map(Ok)
            .chain(std::iter::from_fn(move || {
                let r = old.as_mut()?;
                match r.next_item() {
                    Ok(Some(Item::Task(t))) => Some(Ok(t)),
                    Ok(Some(other)) => Some(Err(format!(
                        "the journal snapshot has {other:?} among its tasks"
                    ))),
                    Ok(None) => None,
                    Err(LoadError::Damaged(m) | LoadError::Refused(m)) => Some(Err(m)),
                }
            }));
        self.window.merge(old_tasks, out)
    }
}

/// Reads the snapshot in `dir` up to its tasks, and folds the logs after
/// it (up to `upto`, if given). With `repair`, a damaged log tail is cut
/// off (and later logs set aside) so appending can go on after what was
/// recovered.
fn fold(dir: &Path, upto: Option<u64>, repair: bool) -> Result<Fold, LoadError> {
    let mut f = Fold::default();
    let mut covered = 0;
    if let Some(mut reader) = SnapshotReader::open(&dir.join(SNAPSHOT))? {
        f.found = true;
        covered = reader.covers;
        while let Some(item) = reader.next_item()? {
            match item {
                Item::Task(t) => {
                    f.first = Some(t);
                    break;
                }
                other => f.rest.apply_item(other),
            }
        }
        f.old = Some(reader);
    }
    f.last = covered;
    let generations: Vec<u64> = log_gens(dir)
        .into_iter()
        .filter(|g| *g > covered && upto.is_none_or(|u| *g <= u))
        .collect();
    let mut damaged_after = None;
    for generation in generations {
        if let Some(bad) = damaged_after {
            if repair {
                let from = log_path(dir, generation);
                let to = dir.join(format!("log-{generation:012}.after-damage-in-{bad}"));
                tracing::error!(
                    "journal log {} follows a damaged one; set aside as {}",
                    from.display(),
                    to.display()
                );
                let _ = std::fs::rename(from, to);
            }
            continue;
        }
        f.last = generation;
        f.found = true;
        let (window, rest) = (&mut f.window, &mut f.rest);
        if read_log(dir, generation, repair, |r| window.apply(r, rest))? {
            damaged_after = Some(generation);
        }
    }
    Ok(f)
}

/// Why a journal could not be read.
#[derive(Debug)]
enum LoadError {
    /// Damaged: its content cannot be trusted; it is set aside.
    Damaged(String),
    /// Another format, or unreadable: the scheduler refuses to start on it.
    Refused(String),
}

fn version_error(path: &Path, found: u32) -> LoadError {
    LoadError::Refused(format!(
        "the journal file {} has format version {found}, and this dtask reads version \
         {JOURNAL_VERSION}; run the dtask that wrote it, or move the journal away to start afresh",
        path.display()
    ))
}

/// Hands each record of log `generation` to `each`, in order. A damaged
/// or torn frame ends it (cut off there with `repair`); returns whether
/// that happened.
fn read_log(
    dir: &Path,
    generation: u64,
    repair: bool,
    mut each: impl FnMut(Record),
) -> Result<bool, LoadError> {
    let path = log_path(dir, generation);
    let unreadable =
        |e: std::io::Error| LoadError::Refused(format!("cannot read {}: {e}", path.display()));
    let file = std::fs::File::open(&path).map_err(unreadable)?;
    let mut file = std::io::BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; LOG_HEADER];
    let n = read_full(&mut file, &mut header).map_err(unreadable)?;
    if n >= 12 && &header[..8] == LOG_MAGIC {
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if version != JOURNAL_VERSION {
            return Err(version_error(&path, version));
        }
    }
    if n < LOG_HEADER || &header[..8] != LOG_MAGIC {
        // A log that never got its header: a crash right at creation.
        tracing::warn!("journal log {} has no header; ignored", path.display());
        if repair {
            let _ = std::fs::remove_file(&path);
        }
        return Ok(true);
    }
    let mut frames = Frames::new(file, LOG_HEADER as u64);
    let mut batches = 0usize;
    loop {
        match frames.next::<Record>().map_err(unreadable)? {
            Frame::Batch(records) => {
                records.into_iter().for_each(&mut each);
                batches += 1;
            }
            Frame::End => return Ok(false),
            Frame::Damaged => {
                let at = frames.at;
                let len = std::fs::metadata(&path).map_or(at, |m| m.len());
                tracing::error!(
                    "journal log {}: torn or damaged at byte {at} ({} bytes after it dropped); \
                     recovered the {batches} batches of changes before it",
                    path.display(),
                    len.saturating_sub(at)
                );
                if repair && let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) {
                    let _ = f.set_len(at).and_then(|()| f.sync_all());
                }
                return Ok(true);
            }
        }
    }
}

/// Every record a journal directory holds, in order: the snapshot's state
/// as records, then each log's. For `dtask journal export`.
pub fn export(dir: &Path, mut each: impl FnMut(&str, &Record)) -> Result<(), String> {
    let message = |e: LoadError| match e {
        LoadError::Damaged(m) | LoadError::Refused(m) => m,
    };
    let mut covered = 0;
    if let Some(mut reader) = SnapshotReader::open(&dir.join(SNAPSHOT)).map_err(message)? {
        covered = reader.covers;
        while let Some(item) = reader.next_item().map_err(message)? {
            for r in item.into_records() {
                each(SNAPSHOT, &r);
            }
        }
    }
    for generation in log_gens(dir).into_iter().filter(|g| *g > covered) {
        let name = format!("log-{generation:012}.bin");
        let damaged = read_log(dir, generation, false, |r| each(&name, &r)).map_err(message)?;
        if damaged {
            return Err(format!(
                "{name} is torn or damaged; the records before it were printed"
            ));
        }
    }
    Ok(())
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
        let (j, _) = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        j.append(vec![event("kept")]);
        j.flush();
        j.append(vec![event("damaged")]);
        j.close();
        let log = only_log(dir.path());
        let mut bytes = std::fs::read(&log).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&log, bytes).unwrap();
        let (j, found) = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        let records = records_of(found.expect("recovered"));
        assert!(records.contains(&event("kept")));
        assert!(!records.contains(&event("damaged")));
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
