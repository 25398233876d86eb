//! The journal's writer thread: appends records in batches, fsyncs at
//! the configured interval, and compacts the logs into a snapshot in the
//! background.

use super::*;

pub(super) struct Writer {
    pub(super) dir: PathBuf,
    pub(super) options: JournalOptions,
    pub(super) health: Arc<Health>,
    /// Generation of the log being appended to.
    pub(super) generation: u64,
    pub(super) log: Option<std::io::BufWriter<std::fs::File>>,
    /// Bytes in logs since the last snapshot started.
    pub(super) log_bytes: u64,
    /// Tasks forgotten in those logs (see [`Writer::shrinks`]).
    pub(super) forgets: u64,
    pub(super) unsynced: bool,
    pub(super) last_sync: Instant,
    pub(super) compacting: Arc<AtomicBool>,
    /// Bytes of the snapshot in place (set by compactions too): see
    /// [`JournalOptions::compact_ratio`].
    pub(super) snapshot_bytes: Arc<AtomicU64>,
    /// When records last came to be written.
    pub(super) last_records: Instant,
    /// Held while a snapshot is put in place or the journal cleared; it
    /// counts the clears, so that a compaction begun before one does not
    /// put back what it cleared.
    pub(super) snapshot_lock: Arc<Mutex<u64>>,
    /// Where written batches go back, emptied, for the core to refill.
    pub(super) spare: Arc<Mutex<Vec<Vec<Record>>>>,
    /// The frame being written (reused: its room stays).
    pub(super) frame: Vec<u8>,
    /// Modules whose writing failed (a full disk, say): written again
    /// before the whole snapshot that mends the journal, which needs them.
    pub(super) unwritten_modules: Vec<(String, Bytes)>,
    /// Writes handled, ever (see [`Health::reached`]).
    pub(super) handled: u64,
    /// Each batch of records waits this long before it is written
    /// (`DTASK_FAULT_SLOW_JOURNAL_MS`; none unless asked).
    pub(super) slow: Option<Duration>,
}

/// Most records a batch handed back for reuse may have room for (about
/// 850 kB): a burst bigger than that is not kept.
const SPARE_RECORDS: usize = 8 * 1024;

/// Most room the frame buffer keeps between batches.
const FRAME_KEPT: usize = 8 << 20;

/// A batch's records go in frames of about this many bytes (the last
/// record may take one past it): far below the [`MAX_FRAME`] the reader
/// accepts.
const LOG_FRAME_BYTES: usize = 4 << 20;

/// Most emptied batches kept for reuse: one filling while another is
/// written.
const SPARES: usize = 2;

/// Most writes taken at once before the log's buffer goes to the file and
/// the sync and compaction checks run.
const DRAIN: usize = 64;

/// Past this many times [`Writer::compact_at`], the logs are folded even
/// while records keep coming.
const COMPACT_PUSH: u64 = 4;

/// Fewest tasks forgotten in the logs since the snapshot for folding them
/// to shrink the journal (see [`Writer::shrinks`]).
const SHRINK_FORGETS: u64 = 10_000;

/// Niceness of the compaction thread: folding the logs is housekeeping,
/// and on a busy machine it yields the CPU to the scheduler's core and
/// the workers' tasks rather than slowing them.
#[cfg(target_os = "linux")]
const COMPACT_NICE: libc::c_int = 10;

/// Lowers the calling thread's priority to [`COMPACT_NICE`] (Linux sets
/// niceness per thread); elsewhere, or if refused, it runs as it is.
fn yield_to_the_rest() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on this thread's id changes only its niceness.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, COMPACT_NICE);
    }
}

/// Bytes of the snapshot in `dir`, 0 if there is none (or it cannot be
/// read).
pub(super) fn snapshot_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(SNAPSHOT)).map_or(0, |m| m.len())
}

impl Writer {
    pub(super) fn run(&mut self, rx: mpsc::Receiver<Write>) {
        loop {
            let mut wait = if self.unsynced {
                self.options
                    .sync_every
                    .saturating_sub(self.last_sync.elapsed())
            } else {
                Duration::from_secs(3600)
            };
            if self.compaction_waiting() {
                // Woken when the quiet that lets it compact has passed.
                wait = wait.min(
                    self.options
                        .compact_quiet
                        .saturating_sub(self.last_records.elapsed()),
                );
            }
            let closed = match rx.recv_timeout(wait) {
                Ok(w) => {
                    self.handle(w);
                    let closed = self.drain(&rx);
                    self.write_out();
                    // A killed process keeps them now: what waited on them
                    // may go.
                    self.health.reached.store(self.handled, Ordering::Release);
                    self.health.reached_note.notify_one();
                    closed
                }
                Err(mpsc::RecvTimeoutError::Timeout) => false,
                Err(mpsc::RecvTimeoutError::Disconnected) => true,
            };
            if closed {
                self.sync();
                return;
            }
            if self.unsynced && self.last_sync.elapsed() >= self.options.sync_every {
                self.sync();
            }
            if self.compaction_due() {
                self.compact();
            }
        }
    }

    /// Handles whatever else is waiting, [`DRAIN`] writes at most, so that
    /// under steady load the syncs and compactions still come; after it
    /// the file gets what was written ([`Writer::write_out`]): a killed
    /// scheduler process (`kill -9`, the OOM killer) loses only what the
    /// writer had not caught up with, not a sync interval's worth. Whether
    /// the channel closed.
    fn drain(&mut self, rx: &mpsc::Receiver<Write>) -> bool {
        for _ in 0..DRAIN {
            match rx.try_recv() {
                Ok(w) => self.handle(w),
                Err(mpsc::TryRecvError::Empty) => return false,
                Err(mpsc::TryRecvError::Disconnected) => return true,
            }
        }
        false
    }

    /// Whether the logs are past [`Writer::compact_at`] and may be folded
    /// (no compaction running, writing not broken).
    fn compaction_waiting(&self) -> bool {
        (self.log_bytes >= self.compact_at() || self.shrinks())
            && !self.compacting.load(Ordering::Acquire)
            && !self.health.broken.load(Ordering::Acquire)
    }

    /// Whether folding the logs would shrink the journal to a fraction of
    /// its files: at least [`SHRINK_FORGETS`] tasks were forgotten in the
    /// logs since the snapshot, and no fewer than the tasks alive, so the
    /// files carry more tasks gone than tasks held (a pipeline whose
    /// results were all released, which would otherwise leave its
    /// snapshot and logs as big as they grew until the next compaction by
    /// size, and a restart reading them all). Such a fold waits for a
    /// quiet moment, as any does, but never pushes in while records keep
    /// coming. Each costs about the files it folds, at most twice the
    /// tasks forgotten since the last: bounded per task forgotten.
    fn shrinks(&self) -> bool {
        self.forgets >= SHRINK_FORGETS.max(self.health.live_tasks.load(Ordering::Relaxed))
    }

    /// Whether the logs are to be folded now: waiting
    /// ([`Writer::compaction_waiting`]) once no records came for
    /// [`JournalOptions::compact_quiet`] (a pipeline's burst is over), or
    /// past [`COMPACT_PUSH`] times [`Writer::compact_at`] whatever comes.
    fn compaction_due(&self) -> bool {
        self.compaction_waiting()
            && (self.last_records.elapsed() >= self.options.compact_quiet
                || self.log_bytes >= self.compact_at().saturating_mul(COMPACT_PUSH))
    }

    /// Log bytes at which the logs are folded into a snapshot (see
    /// [`JournalOptions::compact_ratio`]).
    fn compact_at(&self) -> u64 {
        let snapshot = self.snapshot_bytes.load(Ordering::Relaxed);
        self.options
            .compact_bytes
            .max(snapshot.saturating_mul(self.options.compact_ratio))
    }

    /// Appends one batch of records to the log (dropped while writing is
    /// broken, until a whole snapshot mends it), as frames of about
    /// [`LOG_FRAME_BYTES`] or less, so that however big a batch is, every
    /// frame is one the reader accepts.
    fn append(&mut self, records: &[Record]) {
        if self.health.broken.load(Ordering::Acquire) {
            return;
        }
        let mut payload = std::mem::take(&mut self.frame);
        payload.clear();
        let mut count = 0u64;
        let mut result = Ok(());
        for (i, r) in records.iter().enumerate() {
            if let Record::Forget { .. } = r {
                self.forgets += 1;
            }
            payload = postcard::to_extend(r, payload).expect("records serialize");
            count += 1;
            if payload.len() >= LOG_FRAME_BYTES || i + 1 == records.len() {
                result = self.write_frame(count, &payload);
                payload.clear();
                count = 0;
                if result.is_err() {
                    break;
                }
            }
        }
        // The room of a huge burst is not kept.
        if payload.capacity() <= FRAME_KEPT {
            self.frame = payload;
        }
        if let Err(e) = result {
            self.failed(format!(
                "cannot append to the journal in {}: {e}",
                self.dir.display()
            ));
        }
    }

    /// Writes one frame of `count` records, encoded one after another in
    /// `records`, and counts it.
    fn write_frame(&mut self, count: u64, records: &[u8]) -> std::io::Result<()> {
        let log = self
            .log
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no log file is open"))?;
        let written = files::write_frame(log, count, records)?;
        self.log_bytes += written;
        self.unsynced = true;
        self.health.bytes.fetch_add(written, Ordering::Relaxed);
        self.health.records.fetch_add(count, Ordering::Relaxed);
        Ok(())
    }

    pub(super) fn handle(&mut self, w: Write) {
        self.handled += 1;
        match w {
            Write::Records(mut records) => {
                if let Some(slow) = self.slow {
                    std::thread::sleep(slow);
                }
                self.last_records = Instant::now();
                let n = records.len() as u64;
                self.append(&records);
                self.health.backlog.fetch_sub(n, Ordering::AcqRel);
                self.health.written.notify_one();
                if records.capacity() <= SPARE_RECORDS {
                    records.clear();
                    let mut spare = self.spare.lock().expect("spare lock");
                    if spare.len() < SPARES {
                        spare.push(records);
                    }
                }
            }
            Write::Module(hash, bytes) => {
                if let Err(e) = self.write_module(&hash, &bytes) {
                    self.unwritten_modules.push((hash, bytes));
                    self.failed(e);
                }
            }
            Write::Snapshot(snapshot) => {
                // Everything up to now is in it: it covers the current log,
                // and appending goes on in a fresh one. The modules it
                // names go first.
                let covers = self.generation;
                let written = self
                    .write_unwritten_modules()
                    .map_err(std::io::Error::other)
                    .and_then(|()| {
                        write_snapshot(&self.dir, covers, snapshot.into_items(), "whole")
                    })
                    .and_then(|tmp| {
                        let _guard = self.snapshot_lock.lock().expect("snapshot lock");
                        files::install(&tmp, &self.dir.join(SNAPSHOT))
                    });
                if written.is_ok() {
                    self.snapshot_bytes
                        .store(snapshot_bytes(&self.dir), Ordering::Relaxed);
                }
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
                        self.health.snapshot_done(self.log.is_some());
                    }
                    Err(e) => {
                        self.failed(format!(
                            "cannot write a snapshot to the journal in {}: {e}",
                            self.dir.display()
                        ));
                        self.health.snapshot_done(false);
                    }
                }
            }
            Write::Clear => {
                self.log = None;
                let mut clears = self.snapshot_lock.lock().expect("snapshot lock");
                *clears += 1;
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

    /// Writes a module's bytes to the journal, unless it is there.
    fn write_module(&self, hash: &str, bytes: &[u8]) -> Result<(), String> {
        let dest = self.dir.join(MODULES).join(format!("{hash}.wasm"));
        if dest.exists() {
            return Ok(());
        }
        durable_write(&dest, bytes).map_err(|e| {
            format!(
                "cannot write module {hash} to the journal in {}: {e}",
                self.dir.display()
            )
        })
    }

    /// Writes the modules whose writing failed before; those that fail
    /// again stay to be tried with the next snapshot.
    fn write_unwritten_modules(&mut self) -> Result<(), String> {
        let mut first_error = Ok(());
        let unwritten = std::mem::take(&mut self.unwritten_modules);
        for (hash, bytes) in unwritten {
            if let Err(e) = self.write_module(&hash, &bytes) {
                self.unwritten_modules.push((hash, bytes));
                if first_error.is_ok() {
                    first_error = Err(e);
                }
            }
        }
        first_error
    }

    pub(super) fn failed(&mut self, what: String) {
        // The log may now end in a partial frame: start a new one once the
        // whole state can be written.
        self.log = None;
        self.unsynced = false;
        self.health.fail(what);
    }

    /// Hands what the log's buffer holds to the file (the kernel's page
    /// cache: it then outlives the process, not the machine).
    fn write_out(&mut self) {
        if let Some(log) = &mut self.log
            && let Err(e) = log.flush()
        {
            self.failed(format!(
                "cannot append to the journal in {}: {e}",
                self.dir.display()
            ));
        }
    }

    pub(super) fn sync(&mut self) {
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

    pub(super) fn open_log(&mut self) {
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
    pub(super) fn compact(&mut self) {
        self.sync();
        let upto = self.generation;
        self.log = None;
        self.generation += 1;
        self.log_bytes = 0;
        self.forgets = 0;
        self.open_log();
        self.compacting.store(true, Ordering::Release);
        let dir = self.dir.clone();
        let flag = self.compacting.clone();
        let lock = self.snapshot_lock.clone();
        let clears = *lock.lock().expect("snapshot lock");
        let health = self.health.clone();
        let installed = self.snapshot_bytes.clone();
        let spawned = std::thread::Builder::new()
            .name("dtask-compact".into())
            .spawn(move || {
                yield_to_the_rest();
                let began = Instant::now();
                let compacted = install_compaction(&dir, upto, compact(&dir, upto), &lock, clears);
                match compacted {
                    Ok(Some(tasks)) => {
                        let bytes = snapshot_bytes(&dir);
                        installed.store(bytes, Ordering::Relaxed);
                        tracing::info!(
                            "journal compacted: {tasks} tasks in a snapshot of {} MiB, in {:?}",
                            bytes >> 20,
                            began.elapsed()
                        )
                    }
                    Ok(None) => {}
                    Err(e) => health.fail(e),
                }
                flag.store(false, Ordering::Release);
                health.compactions.fetch_add(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            self.compacting.store(false, Ordering::Release);
        }
    }
}

/// Puts the snapshot a compaction folded from the logs up to `upto` in
/// place of the old one, and removes those logs; the tasks it holds, or
/// `None` if it is no longer wanted: the journal was cleared since the
/// compaction began (a shutdown that forgets; `clears` is the count it
/// began at), or a whole snapshot written meanwhile covers more (and may
/// have removed logs it was reading, so its failure is no news either).
pub(super) fn install_compaction(
    dir: &Path,
    upto: u64,
    folded: Result<(PathBuf, u64), String>,
    lock: &Mutex<u64>,
    clears: u64,
) -> Result<Option<u64>, String> {
    let guard = lock.lock().expect("snapshot lock");
    let superseded = *guard != clears || read_snapshot_gen(dir).is_some_and(|g| g > upto);
    match folded {
        Ok((tmp, _)) if superseded => {
            let _ = std::fs::remove_file(&tmp);
            Ok(None)
        }
        Err(_) if superseded => Ok(None),
        Ok((tmp, tasks)) => {
            files::install(&tmp, &dir.join(SNAPSHOT))
                .map_err(|e| format!("cannot compact the journal in {}: {e}", dir.display()))?;
            remove_logs(dir, upto);
            Ok(Some(tasks))
        }
        Err(e) => Err(e),
    }
}
