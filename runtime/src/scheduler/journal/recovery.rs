//! Reading a journal back: the snapshot folded with the logs after it,
//! a torn or damaged tail cut off, and the JSON-lines export.

use super::*;

/// A journal directory read up to its tasks: everything but the tasks
/// (small) in `rest`, the logs' changes to tasks in `window`, and the
/// snapshot's tasks still to be read, which [`Fold::tasks`] merges with
/// the window as a stream.
#[derive(Default)]
pub(super) struct Fold {
    pub(super) rest: Model,
    pub(super) window: Window,
    pub(super) old: Option<SnapshotReader>,
    /// The snapshot's first task, read while looking for the end of `rest`.
    pub(super) first: Option<SavedTask>,
    /// The last log generation read.
    pub(super) last: u64,
    /// Tasks forgotten in the logs read (what folding them would drop).
    pub(super) forgets: u64,
    /// Whether there was a snapshot or a log at all.
    pub(super) found: bool,
    /// Logs set aside because they follow a damaged one, for the user:
    /// what they held is not recovered.
    pub(super) set_aside: Vec<PathBuf>,
}

impl Fold {
    /// Hands every task of the folded state to `out`, in key order.
    pub(super) fn tasks(
        self,
        out: impl FnMut(SavedTask) -> Result<(), String>,
    ) -> Result<(), String> {
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
pub(super) fn fold(dir: &Path, upto: Option<u64>, repair: bool) -> Result<Fold, LoadError> {
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
                if std::fs::rename(from, &to).is_ok() {
                    f.set_aside.push(to);
                }
            }
            continue;
        }
        f.last = generation;
        f.found = true;
        // Room for the tasks the log may change, at once: growing the table
        // as it went was a tenth of a restore.
        f.window
            .reserve(count_records(&log_path(dir, generation)) as usize);
        let (window, rest, forgets) = (&mut f.window, &mut f.rest, &mut f.forgets);
        let fold = |r: Record| {
            if let Record::Forget { .. } = r {
                *forgets += 1;
            }
            window.apply(r, rest)
        };
        if read_log(dir, generation, repair, fold)? {
            // Outside a restart's repair (a compaction), a damaged log is
            // no end of the journal: stopping there would fold less than
            // the logs hold, and the logs would then be removed.
            if !repair {
                return Err(LoadError::Damaged(format!(
                    "{} is damaged; the logs stay as they are",
                    log_path(dir, generation).display()
                )));
            }
            damaged_after = Some(generation);
        }
    }
    Ok(f)
}

/// How many records log `path` holds: the count each whole frame starts
/// with, read without decoding the rest (frames are checked, so a damaged
/// one cannot make the count absurd; counting stops there, as reading
/// will). 0 if it cannot be read (the reading proper says why).
pub(super) fn count_records(path: &Path) -> u64 {
    let Ok(log) = open_log(path) else {
        return 0;
    };
    let Some(mut frames) = log.frames() else {
        return 0;
    };
    let mut records = 0u64;
    // The payload is an encoded list: its length, a varint, comes first.
    while let Ok(Some(payload)) = frames.next_checked() {
        match postcard::take_from_bytes::<u64>(payload) {
            Ok((n, _)) => records += n.min(payload.len() as u64),
            Err(_) => break,
        }
    }
    records
}

/// A log file opened for reading, with as much of its header as it has.
struct OpenLog {
    file: std::io::BufReader<std::fs::File>,
    header: [u8; LOG_HEADER],
    /// Header bytes read (fewer than `LOG_HEADER` if the file is shorter).
    read: usize,
}

fn open_log(path: &Path) -> std::io::Result<OpenLog> {
    let file = std::fs::File::open(path)?;
    let mut file = std::io::BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; LOG_HEADER];
    let read = read_full(&mut file, &mut header)?;
    Ok(OpenLog { file, header, read })
}

impl OpenLog {
    fn has_magic(&self) -> bool {
        self.read >= 8 && &self.header[..8] == LOG_MAGIC
    }

    /// The journal version its header names, if it got that far.
    fn version(&self) -> Option<u32> {
        (self.has_magic() && self.read >= 12)
            .then(|| u32::from_le_bytes(self.header[8..12].try_into().expect("4 bytes")))
    }

    /// Its frames, if its whole header is there (a log that never got it
    /// was cut by a crash right at its creation).
    fn frames(self) -> Option<Frames> {
        (self.has_magic() && self.read == LOG_HEADER)
            .then(|| Frames::new(self.file, LOG_HEADER as u64))
    }
}

/// Why a journal could not be read.
#[derive(Debug)]
pub(super) enum LoadError {
    /// Damaged: its content cannot be trusted; it is set aside.
    Damaged(String),
    /// Another format, or unreadable: the scheduler refuses to start on it.
    Refused(String),
}

pub(super) fn version_error(path: &Path, found: u32) -> LoadError {
    LoadError::Refused(format!(
        "the journal file {} has format version {found}, and this dtask reads version \
         {JOURNAL_VERSION}; run the dtask that wrote it, or move the journal away to start afresh",
        path.display()
    ))
}

/// Hands each record of log `generation` to `each`, in order. A damaged
/// or torn frame ends it (cut off there with `repair`); returns whether
/// that happened.
pub(super) fn read_log(
    dir: &Path,
    generation: u64,
    repair: bool,
    mut each: impl FnMut(Record),
) -> Result<bool, LoadError> {
    let path = log_path(dir, generation);
    let unreadable =
        |e: std::io::Error| LoadError::Refused(format!("cannot read {}: {e}", path.display()));
    let log = open_log(&path).map_err(unreadable)?;
    if let Some(version) = log.version()
        && version != JOURNAL_VERSION
    {
        return Err(version_error(&path, version));
    }
    let Some(mut frames) = log.frames() else {
        // A log that never got its header: a crash right at creation.
        tracing::warn!("journal log {} has no header; ignored", path.display());
        if repair {
            let _ = std::fs::remove_file(&path);
        }
        return Ok(true);
    };
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
