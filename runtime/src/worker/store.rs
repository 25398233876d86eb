//! The results a worker holds: in memory up to its budget, the least
//! recently used beyond it written to its spill directory and read back
//! when asked for.
//!
//! A result that cannot be kept (the budget is exceeded and the spill
//! directory is full or unusable) is refused with a message saying so;
//! nothing already held is ever dropped to make room.
//!
//! A spill file that cannot be read back (removed or cut short behind the
//! worker's back, by a cleaner of temporary files say) drops its result:
//! the store stops holding it and tells the scheduler
//! ([`ToScheduler::Dropped`]), which computes it again if it is still
//! wanted, as it would for a result lost with its worker. So does one
//! whose bytes changed: each [`BLOCK`] of a spill file has its CRC-32 kept
//! in memory, and what is read back is checked against it.

use crate::protocol::{INLINE_RESULT_LIMIT, Located, ToScheduler};
use crate::value::{FileBytes, human_bytes};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where a held result is. (A result small enough to travel inline lives at
/// the scheduler, so what a worker holds is mostly bigger: one `Bytes`
/// keeps this enum at 32 bytes.)
enum Place {
    /// In memory.
    Memory(Bytes),
    /// In the spill file of this number, with the CRC-32 of each of its
    /// [`BLOCK`]s.
    Disk { len: usize, file: u64, sums: Sums },
}

/// Bytes of a spill file each checksum covers: a 4 GiB value keeps 16 KiB
/// of them.
pub const BLOCK: usize = 1 << 20;

/// The CRC-32 of each [`BLOCK`] of a spill file, in order.
type Sums = Arc<[u32]>;

/// The [`Sums`] of `bytes`.
fn sums_of(bytes: &[u8]) -> Sums {
    bytes.chunks(BLOCK).map(crc32fast::hash).collect()
}

/// Whether `bytes`, read from a spill file from block `first` on (the
/// last block perhaps short), match `sums`.
fn matches_sums(bytes: &[u8], sums: &[u32], first: usize) -> bool {
    bytes
        .chunks(BLOCK)
        .enumerate()
        .all(|(i, b)| sums.get(first + i) == Some(&crc32fast::hash(b)))
}

impl Place {
    /// Its bytes, if in memory.
    fn bytes(&self) -> Option<Bytes> {
        match self {
            Place::Memory(b) => Some(b.clone()),
            Place::Disk { .. } => None,
        }
    }

    /// Whether it is `bytes` in memory (the same copy).
    fn is(&self, bytes: &Bytes) -> bool {
        matches!(self, Place::Memory(b) if b.as_ptr() == bytes.as_ptr() && b.len() == bytes.len())
    }

    /// Bytes it takes in memory.
    fn memory(&self) -> usize {
        match self {
            Place::Memory(b) => b.len(),
            Place::Disk { .. } => 0,
        }
    }
}

/// The bounds of `len` bytes from `offset` in a value of `total` bytes.
fn range(total: u64, offset: u64, len: u64) -> (usize, usize) {
    let start = offset.min(total);
    let end = start.saturating_add(len).min(total);
    (start as usize, end as usize)
}

/// A key as the store holds it. A hashed key (`{prefix}-{32 hex}`, as pure,
/// random and scattered keys are) is its 16 bytes and the number of its
/// prefix, with no allocation of its own; any other key is its text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum StoreKey {
    Hashed { prefix: u32, hash: [u8; 16] },
    Text(Box<str>),
}

/// `key` split into its prefix and hash, if it is a hashed key written
/// canonically (lowercase hex, so that it reads back the same).
fn hashed(key: &str) -> Option<(&str, [u8; 16])> {
    let (prefix, hex) = key.rsplit_once('-')?;
    if hex.len() != 32 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut hash = [0u8; 16];
    hex::decode_to_slice(hex, &mut hash).ok()?;
    Some((prefix, hash))
}

/// A held result: where it is, and when it was last used.
struct Entry {
    place: Place,
    used: u64,
}

#[derive(Default)]
struct Inner {
    /// Each key once: a held result costs its entry, its key inline.
    entries: HashMap<StoreKey, Entry>,
    /// Prefixes of hashed keys (function names, `data`), each once.
    prefixes: Vec<Box<str>>,
    prefix_ids: HashMap<Box<str>, u32>,
    /// The next results to spill, least recently used first, with the
    /// tick each was last used at when chosen (one used since is skipped).
    /// Refilled by one scan for about an eighth of the budget at a time,
    /// so no per-result index of ages is kept.
    victims: VecDeque<(u64, StoreKey)>,
    tick: u64,
    next_file: u64,
    in_memory: usize,
    /// Results in memory being written to disk by an insert (outside the
    /// lock), with their lengths: not chosen again, and counted as gone
    /// (`leaving`, their sum) until written, removed or replaced.
    spilling: HashMap<StoreKey, usize>,
    leaving: usize,
    spilled: usize,
    spilled_count: usize,
}

impl Inner {
    /// How `key` is held, if it may be (a prefix never seen, never).
    fn find(&self, key: &str) -> Option<StoreKey> {
        Some(match hashed(key) {
            Some((prefix, hash)) => StoreKey::Hashed {
                prefix: *self.prefix_ids.get(prefix)?,
                hash,
            },
            None => StoreKey::Text(key.into()),
        })
    }

    /// How `key` is to be held, its prefix noted if new.
    fn intern(&mut self, key: &str) -> StoreKey {
        let Some((prefix, hash)) = hashed(key) else {
            return StoreKey::Text(key.into());
        };
        let id = match self.prefix_ids.get(prefix) {
            Some(id) => *id,
            None => {
                let id = self.prefixes.len() as u32;
                self.prefixes.push(prefix.into());
                self.prefix_ids.insert(prefix.into(), id);
                id
            }
        };
        StoreKey::Hashed { prefix: id, hash }
    }

    /// A held key's text.
    fn text(&self, key: &StoreKey) -> String {
        match key {
            StoreKey::Hashed { prefix, hash } => {
                format!("{}-{}", self.prefixes[*prefix as usize], hex::encode(hash))
            }
            StoreKey::Text(t) => t.to_string(),
        }
    }

    /// A spill file's number, never used before.
    fn new_file(&mut self) -> u64 {
        self.next_file += 1;
        self.next_file - 1
    }

    /// Holds `key` as the spill file `file` of `len` bytes.
    fn keep_on_disk(&mut self, key: &str, len: usize, file: u64, sums: Sums) {
        self.spilled += len;
        self.spilled_count += 1;
        let key = self.intern(key);
        let place = Place::Disk { len, file, sums };
        self.entries.insert(key, Entry { place, used: 0 });
    }

    /// Holds `bytes` as `key` in memory, as just used (room is made first).
    fn keep_in_memory(&mut self, key: StoreKey, bytes: Bytes) {
        self.tick += 1;
        self.in_memory += bytes.len();
        let entry = Entry {
            used: self.tick,
            place: Place::Memory(bytes),
        };
        self.entries.insert(key, entry);
    }
}

/// Bytes a store holds, in memory and spilled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Results held.
    pub count: usize,
    /// Bytes of results in memory.
    pub in_memory: u64,
    /// Bytes of results written to the spill directory.
    pub spilled: u64,
    /// Results written to the spill directory.
    pub spilled_count: usize,
}

/// A worker's results. See the module docs.
pub struct ResultStore {
    inner: Mutex<Inner>,
    budget: usize,
    dir: PathBuf,
    /// Bytes held in memory for values still arriving ([`Reserved`]).
    arriving: AtomicU64,
    /// Where results dropped for an unreadable spill file are reported.
    reports: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<ToScheduler>>,
}

/// Room in memory for a value still arriving on the data port, taken by
/// [`ResultStore::reserve`] and given back when dropped.
pub struct Reserved {
    store: Arc<ResultStore>,
    len: u64,
}

impl Reserved {
    /// Bytes of room held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no room is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Grows the room held to `len` bytes, if the values arriving together
    /// stay within the memory budget; false (and unchanged) if not.
    pub fn grow_to(&mut self, len: u64) -> bool {
        if len <= self.len {
            return true;
        }
        if !self.store.take_room(len - self.len) {
            return false;
        }
        self.len = len;
        true
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.store.arriving.fetch_sub(self.len, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for ResultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultStore")
            .field("budget", &self.budget)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ResultStore {
    /// A store keeping up to `budget` bytes in memory and spilling the rest
    /// to files in `dir` (created when first needed, removed on drop).
    pub fn new(budget: usize, dir: PathBuf) -> Self {
        Self {
            inner: Mutex::default(),
            budget,
            dir,
            arriving: AtomicU64::new(0),
            reports: std::sync::OnceLock::new(),
        }
    }

    /// Reports results dropped for an unreadable spill file to the
    /// scheduler through `reports` (the worker's own messages to it).
    pub fn report_drops_to(&self, reports: tokio::sync::mpsc::UnboundedSender<ToScheduler>) {
        let _ = self.reports.set(reports);
    }

    /// `key`'s spill file `file` could not be read back (`why`): unless the
    /// result was freed or replaced meanwhile (which removes its file),
    /// it is dropped here and the scheduler is told, so that it is
    /// computed again rather than asked of this worker for good.
    fn unreadable(&self, key: &str, file: u64, why: &str) {
        {
            let mut inner = self.lock();
            let same = inner
                .find(key)
                .and_then(|k| inner.entries.get(&k))
                .is_some_and(|e| matches!(e.place, Place::Disk { file: f, .. } if f == file));
            if !same {
                return;
            }
            self.remove_locked(&mut inner, key);
        }
        tracing::warn!(
            "result {key} is lost: its spill file {} cannot be read ({why}; removed behind \
             this worker's back?); the scheduler computes it again if it is still wanted",
            self.path(file).display()
        );
        if let Some(reports) = self.reports.get() {
            let _ = reports.send(ToScheduler::Dropped {
                keys: vec![key.to_string()],
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, file: u64) -> PathBuf {
        self.dir.join(format!("{file}.bin"))
    }

    /// Whether a value of `len` bytes is over the memory budget on its own
    /// (so it is kept on disk from the start).
    pub fn over_budget(&self, len: u64) -> bool {
        len > self.budget as u64
    }

    /// Room in memory for a value of `len` bytes that is still arriving,
    /// if the values arriving together stay within the memory budget;
    /// `None` means write this one to disk as it comes. (A finished value
    /// is then kept as any result is, spilling others to make room.)
    pub fn reserve(self: &Arc<Self>, len: u64) -> Option<Reserved> {
        let mut room = self.no_room();
        room.grow_to(len).then_some(room)
    }

    /// No room yet, to grow with [`Reserved::grow_to`] as a value arrives.
    pub fn no_room(self: &Arc<Self>) -> Reserved {
        Reserved {
            store: self.clone(),
            len: 0,
        }
    }

    /// Adds `len` bytes to what arriving values hold, if that stays within
    /// the budget.
    fn take_room(&self, len: u64) -> bool {
        let mut now = self.arriving.load(Ordering::Relaxed);
        loop {
            let Some(after) = now.checked_add(len).filter(|a| *a <= self.budget as u64) else {
                return false;
            };
            match self.arriving.compare_exchange_weak(
                now,
                after,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => now = actual,
            }
        }
    }

    /// A new spill file for a value written as it arrives (see
    /// [`SpillFile`]), for one over the budget on its own.
    pub fn spill_file(&self) -> Result<SpillFile, String> {
        let file = self.lock().new_file();
        let path = self.path(file);
        // Readable too: a start written over is read back to sum it.
        let create = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
        };
        let opened = std::fs::create_dir_all(&self.dir).and_then(|()| create());
        match opened {
            Ok(out) => Ok(SpillFile {
                file,
                path,
                out: Some(out),
                written: 0,
                sums: Vec::new(),
                block: crc32fast::Hasher::new(),
                rewritten: false,
            }),
            Err(e) => Err(self.cannot_spill(0, &e)),
        }
    }

    /// Holds the value written to `spill` as `key`, on disk.
    pub fn adopt(&self, key: &str, mut spill: SpillFile) {
        let sums = spill.sums();
        // Closed and kept: no longer removed when `spill` drops.
        spill.out = None;
        let mut inner = self.lock();
        self.remove_locked(&mut inner, key);
        inner.keep_on_disk(key, spill.written as usize, spill.file, sums);
    }

    /// Why `len` more bytes cannot be spilled (`e`), and what to do.
    fn cannot_spill(&self, len: usize, e: &std::io::Error) -> String {
        format!(
            "this worker's results are over its memory budget of {} and it cannot spill \
             {} more to {}: {e}; free space there, release results (`dtask release`), or \
             raise `--memory-budget`",
            human_bytes(self.budget as u64),
            human_bytes(len as u64),
            self.dir.display(),
        )
    }

    /// Holds `bytes` as `key`, spilling the least recently used results
    /// (this one included, if it alone is over budget) to stay within the
    /// budget. Blocking (it may write files): call it off the async threads.
    ///
    /// Files are written outside the store's lock: what to spill is chosen
    /// under it (and set aside, so no other insert chooses it too), and the
    /// written results move to disk under it again. Meanwhile the data
    /// port, heartbeats and releases go on.
    pub fn insert(&self, key: String, bytes: Bytes) -> Result<(), String> {
        let len = bytes.len();
        if len > self.budget {
            // Over budget on its own: straight to disk.
            let file = self.lock().new_file();
            let sums = self.write(file, &bytes)?;
            let mut inner = self.lock();
            self.remove_locked(&mut inner, &key);
            inner.keep_on_disk(&key, len, file, sums);
            return Ok(());
        }
        let chosen = {
            let mut inner = self.lock();
            self.remove_locked(&mut inner, &key);
            let mut chosen = Vec::new();
            while inner.in_memory - inner.leaving + len > self.budget {
                let Some(victim) = self.victim(&mut inner) else {
                    break;
                };
                let Some(old) = inner.entries.get(&victim).and_then(|e| e.place.bytes()) else {
                    continue;
                };
                let file = inner.new_file();
                inner.leaving += old.len();
                inner.spilling.insert(victim.clone(), old.len());
                chosen.push((victim, old, file));
            }
            let stored = inner.intern(&key);
            inner.keep_in_memory(stored, bytes.clone());
            chosen
        };
        // Room is made before this result counts as kept: a full disk
        // refuses it rather than dropping one already held.
        let mut refused = None;
        let written: Vec<Option<Sums>> = chosen
            .iter()
            .map(|(_, old, file)| {
                if refused.is_some() {
                    return None;
                }
                self.write(*file, old).map_err(|e| refused = Some(e)).ok()
            })
            .collect();
        let mut inner = self.lock();
        for ((victim, old, file), written) in chosen.into_iter().zip(written) {
            // Released or replaced meanwhile (which ended its spilling):
            // its file is not needed.
            let unchanged = inner.entries.get(&victim).is_some_and(|e| e.place.is(&old));
            if unchanged && inner.spilling.remove(&victim).is_some() {
                inner.leaving -= old.len();
            }
            match (written, unchanged) {
                (Some(sums), true) => {
                    inner.in_memory -= old.len();
                    inner.spilled += old.len();
                    inner.spilled_count += 1;
                    let entry = inner.entries.get_mut(&victim).expect("just seen");
                    entry.place = Place::Disk {
                        len: old.len(),
                        file,
                        sums,
                    };
                }
                (Some(_), false) => {
                    let _ = std::fs::remove_file(self.path(file));
                }
                (None, _) => {}
            }
        }
        if let Some(why) = refused {
            let ours = inner
                .find(&key)
                .and_then(|k| inner.entries.get(&k))
                .is_some_and(|e| e.place.is(&bytes));
            if ours {
                self.remove_locked(&mut inner, &key);
            }
            return Err(why);
        }
        Ok(())
    }

    /// The next result to spill: the least recently used one in memory.
    fn victim(&self, inner: &mut Inner) -> Option<StoreKey> {
        loop {
            while let Some((used, key)) = inner.victims.pop_front() {
                let still = !inner.spilling.contains_key(&key)
                    && inner
                        .entries
                        .get(&key)
                        .is_some_and(|e| e.used == used && matches!(e.place, Place::Memory(_)));
                if still {
                    return Some(key);
                }
            }
            let mut candidates: Vec<(u64, &StoreKey, usize)> = inner
                .entries
                .iter()
                .filter_map(|(k, e)| match &e.place {
                    Place::Memory(b) if !inner.spilling.contains_key(k) => {
                        Some((e.used, k, b.len()))
                    }
                    _ => None,
                })
                .collect();
            if candidates.is_empty() {
                return None;
            }
            candidates.sort_unstable_by_key(|c| c.0);
            let mut chosen = 0;
            let mut victims = VecDeque::new();
            for (used, key, len) in candidates {
                victims.push_back((used, key.clone()));
                chosen += len;
                if chosen >= self.budget / 8 {
                    break;
                }
            }
            inner.victims = victims;
        }
    }

    /// Holds `bytes` as `key` if that needs no file work (it fits in the
    /// budget beside what is in memory, and no spilled copy of `key` is to
    /// be removed); otherwise gives `bytes` back for [`ResultStore::insert`]
    /// off the async threads. Never blocks on the disk.
    pub fn insert_in_memory(&self, key: &str, bytes: Bytes) -> Result<(), Bytes> {
        let mut inner = self.lock();
        let len = bytes.len();
        let previous = match inner.find(key).and_then(|k| inner.entries.get(&k)) {
            Some(Entry {
                place: Place::Disk { .. },
                ..
            }) => return Err(bytes),
            Some(e) => e.place.memory(),
            None => 0,
        };
        if inner.in_memory - previous + len > self.budget {
            return Err(bytes);
        }
        self.remove_locked(&mut inner, key);
        let key = inner.intern(key);
        inner.keep_in_memory(key, bytes);
        Ok(())
    }

    /// Writes `bytes` to spill file `file` (from [`Inner::new_file`]) and
    /// gives their block sums; none is left if that fails.
    fn write(&self, file: u64, bytes: &[u8]) -> Result<Sums, String> {
        let path = self.path(file);
        let written =
            std::fs::create_dir_all(&self.dir).and_then(|()| std::fs::write(&path, bytes));
        match written {
            // Summed here, outside the store's lock, as the writing is.
            Ok(()) => Ok(sums_of(bytes)),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(self.cannot_spill(bytes.len(), &e))
            }
        }
    }

    fn remove_locked(&self, inner: &mut Inner, key: &str) {
        let Some(k) = inner.find(key) else {
            return;
        };
        if let Some(len) = inner.spilling.remove(&k) {
            inner.leaving -= len;
        }
        let held = inner.entries.remove(&k);
        match held.map(|e| e.place) {
            Some(Place::Disk { len, file, .. }) => {
                inner.spilled -= len;
                inner.spilled_count -= 1;
                let _ = std::fs::remove_file(self.path(file));
            }
            Some(place) => inner.in_memory -= place.memory(),
            None => {}
        }
    }

    /// Stops holding `key`.
    pub fn remove(&self, key: &str) {
        let mut inner = self.lock();
        self.remove_locked(&mut inner, key);
    }

    /// The result held as `key`, read back from disk if it was spilled.
    pub async fn get(&self, key: &str) -> Option<Bytes> {
        self.get_within(key, u64::MAX).await.ok().flatten()
    }

    /// The result held as `key`, as [`get`](Self::get), if it is at most
    /// `most` bytes; `Err` with its length if it is bigger (and then it is
    /// not read).
    pub async fn get_within(&self, key: &str, most: u64) -> Result<Option<Bytes>, u64> {
        let Some(opened) = self.open(key).await else {
            return Ok(None);
        };
        if opened.len() > most {
            return Err(opened.len());
        }
        // A result freed meanwhile stays readable through what was opened.
        Ok(self.read_opened(&opened, 0, opened.len()).await)
    }

    /// Up to `len` bytes of the result held as `key` from `offset` (fewer
    /// at its end, none past it), and its whole length. A spilled result is
    /// read from its file one range at a time, never whole (the [`BLOCK`]s
    /// the range touches, to check them). (The data port reads what it
    /// holds open, [`open`](Self::open); this is for tests.)
    #[cfg(test)]
    pub async fn read(&self, key: &str, offset: u64, len: u64) -> Option<(u64, Bytes)> {
        let opened = self.open(key).await?;
        let bytes = self.read_opened(&opened, offset, len).await?;
        Some((opened.len(), bytes))
    }

    /// The result held as `key`, held open to be read range by range with
    /// [`read_opened`](Self::read_opened): it stays readable after the
    /// store lets it go (released, or dropped to disk meanwhile), so a
    /// reader that began it can finish it. `None` if it is not held (or
    /// its spill file cannot be opened).
    pub async fn open(&self, key: &str) -> Option<Opened> {
        let (file, len, sums) = {
            let mut inner = self.lock();
            inner.tick += 1;
            let tick = inner.tick;
            let held = inner.find(key)?;
            let entry = inner.entries.get_mut(&held)?;
            match &entry.place {
                Place::Disk { file, len, sums } => (*file, *len as u64, sums.clone()),
                place => {
                    let bytes = place.bytes()?;
                    entry.used = tick;
                    return Some(Opened {
                        key: key.into(),
                        at: Source::Memory(bytes),
                    });
                }
            }
        };
        let path = self.path(file);
        // Opened outside the lock; a result freed meanwhile reads as absent.
        match tokio::task::spawn_blocking(move || std::fs::File::open(path)).await {
            Ok(Ok(handle)) => Some(Opened {
                key: key.into(),
                at: Source::Disk {
                    file,
                    handle: Arc::new(handle),
                    len,
                    sums,
                },
            }),
            Ok(Err(e)) => self.read_failed(key, file, Some(&e)),
            Err(_) => None,
        }
    }

    /// Up to `len` bytes of `opened` from `offset` (fewer at its end, none
    /// past it); `None` if its spill file cannot be read, or its bytes
    /// changed (the result is dropped then, as it is for any failed read).
    pub async fn read_opened(&self, opened: &Opened, offset: u64, len: u64) -> Option<Bytes> {
        let (file, handle, total, sums) = match &opened.at {
            Source::Memory(bytes) => {
                let (start, end) = range(bytes.len() as u64, offset, len);
                return Some(bytes.slice(start..end));
            }
            Source::Disk {
                file,
                handle,
                len,
                sums,
            } => (*file, handle.clone(), *len, sums.clone()),
        };
        let (start, end) = range(total, offset, len);
        if start == end {
            return Some(Bytes::new());
        }
        // Whole blocks, to check them.
        let first = start / BLOCK;
        let (from, to) = (
            first * BLOCK,
            (end.div_ceil(BLOCK) * BLOCK).min(total as usize),
        );
        let read = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0; to - from];
            handle.read_exact_at(&mut buf, from as u64)?;
            Ok::<_, std::io::Error>(buf)
        })
        .await;
        match read {
            Ok(Ok(buf)) if matches_sums(&buf, &sums, first) => {
                Some(Bytes::from(buf).slice(start - from..end - from))
            }
            Ok(Ok(_)) => self.read_failed(&opened.key, file, None),
            Ok(Err(e)) => self.read_failed(&opened.key, file, Some(&e)),
            Err(_) => None,
        }
    }

    /// A read of `key`'s spill file `file` failed (`None`: its bytes
    /// changed): the result is dropped unless the error may pass. `None`,
    /// to answer the read with.
    fn read_failed<T>(&self, key: &str, file: u64, error: Option<&std::io::Error>) -> Option<T> {
        match error {
            None => self.unreadable(key, file, "its bytes changed"),
            Some(e) if gone(e) => self.unreadable(key, file, &e.to_string()),
            Some(_) => {}
        }
        None
    }

    /// The payload of the byte string or string held as `key` (the bytes a
    /// command reads as its stdin), if it is held in a spill file (as a
    /// range of the open file, checked whole first: the command reads the
    /// file itself); `None` if it is in memory, absent, or another value.
    pub async fn spilled_bytes(&self, key: &str) -> Option<FileBytes> {
        let opened = self.open(key).await?;
        let Source::Disk {
            file, handle, sums, ..
        } = &opened.at
        else {
            return None;
        };
        let (file, handle, sums) = (*file, handle.clone(), sums.clone());
        let checked = tokio::task::spawn_blocking(move || {
            if !file_matches(&handle, &sums)? {
                return Ok(None);
            }
            handle.try_clone().map(Some)
        })
        .await;
        match checked {
            Ok(Ok(Some(f))) => payload_of(f),
            Ok(Ok(None)) => self.read_failed(key, file, None),
            Ok(Err(e)) => self.read_failed(key, file, Some(&e)),
            Err(_) => None,
        }
    }

    /// Whether `key` is held here, in memory or on disk.
    pub fn holds(&self, key: &str) -> bool {
        let inner = self.lock();
        inner
            .find(key)
            .is_some_and(|k| inner.entries.contains_key(&k))
    }

    /// Every result held, as reported to a scheduler (small ones inline).
    pub fn located(&self) -> Vec<(String, Located)> {
        let inner = self.lock();
        inner
            .entries
            .iter()
            .map(|(k, e)| {
                let k = inner.text(k);
                let at = match &e.place {
                    Place::Disk { len, file, sums } => {
                        let small = *len <= INLINE_RESULT_LIMIT;
                        // One that no longer reads back is reported held
                        // (not inline): a read of it then drops it.
                        let read = || {
                            std::fs::read(self.path(*file))
                                .ok()
                                .filter(|b| b.len() == *len && matches_sums(b, sums, 0))
                                .map(Bytes::from)
                        };
                        Located {
                            inline: small.then(read).flatten(),
                            who_has: Vec::new(),
                            nbytes: *len as u64,
                        }
                    }
                    place => located(&place.bytes().expect("in memory")),
                };
                (k, at)
            })
            .collect()
    }

    /// What the store holds.
    pub fn usage(&self) -> Usage {
        let inner = self.lock();
        Usage {
            count: inner.entries.len(),
            in_memory: inner.in_memory as u64,
            spilled: inner.spilled as u64,
            spilled_count: inner.spilled_count,
        }
    }

    /// The spill directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The spill directory of this process's worker `id` under `root`, named
/// by host and process, so that a worker starting later on the same host
/// can tell one a worker left when it died ([`remove_stale`]).
pub fn spill_dir_for(root: &Path, id: u64) -> PathBuf {
    root.join(format!(
        "worker-{}-{}-{id}",
        super::host_name(),
        std::process::id()
    ))
}

/// Removes the spill directories under `root` that workers on this host
/// left when they were killed (their stores never dropped): those whose
/// process no longer runs. Directories of other hosts (a spill directory
/// on a shared file system) and of running processes are left alone.
/// Returns how many were removed.
pub fn remove_stale(root: &Path) -> usize {
    let prefix = format!("worker-{}-", super::host_name());
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, id)| id.parse::<u64>().ok().and(pid.parse::<i32>().ok()))
        else {
            continue;
        };
        if pid as u32 != std::process::id()
            && !running(pid)
            && std::fs::remove_dir_all(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Whether process `pid` exists (a signal 0 reaches it, or it exists but
/// belongs to someone else).
fn running(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 checks for the process; nothing is sent.
    let sent = unsafe { libc::kill(pid, 0) } == 0;
    sent || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl Drop for ResultStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A result held open for reading ([`ResultStore::open`]): its bytes in
/// memory, or its spill file open (a file removed when the store lets the
/// result go stays readable through it), until this is dropped.
#[derive(Debug)]
pub struct Opened {
    key: Box<str>,
    at: Source,
}

#[derive(Debug)]
enum Source {
    Memory(Bytes),
    Disk {
        file: u64,
        handle: Arc<std::fs::File>,
        len: u64,
        sums: Sums,
    },
}

impl Opened {
    /// The key it was opened as.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Its whole length in bytes.
    pub fn len(&self) -> u64 {
        match &self.at {
            Source::Memory(b) => b.len() as u64,
            Source::Disk { len, .. } => *len,
        }
    }

    /// Whether it has no bytes (no value encodes to none).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A value being written to a spill file as it arrives, for a value too big
/// for the memory budget: [`ResultStore::adopt`] keeps it once complete;
/// dropped before that, the file is removed.
#[derive(Debug)]
pub struct SpillFile {
    file: u64,
    path: PathBuf,
    out: Option<std::fs::File>,
    written: u64,
    /// The CRC-32 of each whole [`BLOCK`] written so far…
    sums: Vec<u32>,
    /// …and of what is written of the next.
    block: crc32fast::Hasher,
    /// Whether its first bytes were written over since (see
    /// [`SpillFile::rewrite_start`]): its first block is summed again.
    rewritten: bool,
}

impl SpillFile {
    /// Appends `bytes` (blocking: call it off the async threads). The error
    /// says what to do about a full or unusable disk.
    pub fn write(&mut self, store: &ResultStore, bytes: &[u8]) -> Result<(), String> {
        use std::io::Write;
        let out = self.out.as_mut().ok_or("the spill file is closed")?;
        out.write_all(bytes)
            .map_err(|e| store.cannot_spill(bytes.len(), &e))?;
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = BLOCK - (self.written % BLOCK as u64) as usize;
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.block.update(now);
            self.written += now.len() as u64;
            if self.written.is_multiple_of(BLOCK as u64) {
                let done = std::mem::replace(&mut self.block, crc32fast::Hasher::new());
                self.sums.push(done.finalize());
            }
            rest = later;
        }
        Ok(())
    }

    /// The CRC-32 of each [`BLOCK`] of what was written (blocking, when the
    /// start was written over: the first block is read back to sum it).
    fn sums(&mut self) -> Sums {
        let mut sums = std::mem::take(&mut self.sums);
        if !self.written.is_multiple_of(BLOCK as u64) {
            let last = std::mem::replace(&mut self.block, crc32fast::Hasher::new());
            sums.push(last.finalize());
        }
        if self.rewritten && !sums.is_empty() {
            use std::os::unix::fs::FileExt;
            let mut first = vec![0; (self.written as usize).min(BLOCK)];
            let read = match &self.out {
                Some(out) => out.read_exact_at(&mut first, 0),
                None => Err(std::io::Error::other("closed")),
            };
            // Unreadable: a sum no read can match, so the first read drops
            // it (as it would find the file unreadable anyway).
            sums[0] = match read {
                Ok(()) => crc32fast::hash(&first),
                Err(_) => !crc32fast::hash(&first),
            };
        }
        sums.into()
    }
}

impl SpillFile {
    /// Writes `bytes` over the file's first bytes (a header whose content
    /// was known only at the end), leaving its length as it is.
    pub fn rewrite_start(&mut self, store: &ResultStore, bytes: &[u8]) -> Result<(), String> {
        use std::os::unix::fs::FileExt;
        let out = self.out.as_ref().ok_or("the spill file is closed")?;
        self.rewritten = true;
        out.write_all_at(bytes, 0)
            .map_err(|e| store.cannot_spill(bytes.len(), &e))
    }

    /// Its whole content (blocking).
    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        std::fs::read(&self.path)
    }

    /// The payload of the byte string or string written to it, as a range
    /// of the file opened for reading (blocking). The file leaves the
    /// spill directory with `self` but stays readable through the range
    /// until that is dropped. `Ok(Err(self))` if it holds another value.
    pub fn into_payload(self) -> std::io::Result<Result<FileBytes, SpillFile>> {
        Ok(payload_of(std::fs::File::open(&self.path)?).ok_or(self))
    }

    /// Bytes written to it.
    pub fn len(&self) -> u64 {
        self.written
    }

    /// Whether nothing was written to it.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The payload of the encoded byte string or string that is the whole of
/// `file`, as a range of it; `None` for another value. Blocking.
fn payload_of(file: std::fs::File) -> Option<FileBytes> {
    use std::os::unix::fs::FileExt;
    let size = file.metadata().ok()?.len();
    let mut first = [0; 5];
    let n = file.read_at(&mut first, 0).ok()?;
    match crate::value::head(&first[..n]) {
        crate::value::Head::Payload { at, len, .. } if at as u64 + len == size => {
            Some(FileBytes::new(file, at as u64, len))
        }
        _ => None,
    }
}

/// Whether all of `file` matches `sums`, read a [`BLOCK`] at a time; a
/// file shorter or longer than they cover does not.
fn file_matches(file: &std::fs::File, sums: &[u32]) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    if len.div_ceil(BLOCK as u64) != sums.len() as u64 {
        return Ok(false);
    }
    let mut buf = vec![0; BLOCK.min(len as usize)];
    for (i, sum) in sums.iter().enumerate() {
        let at = i as u64 * BLOCK as u64;
        let n = (len - at).min(BLOCK as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        if crc32fast::hash(&buf[..n]) != *sum {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether reading a spill file failed because it is gone or cut short
/// (its result is lost), rather than for a reason that may pass (too
/// many open files, say: the result is kept).
fn gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof
    )
}

/// How a result is reported: small ones travel inline.
pub fn located(bytes: &Bytes) -> Located {
    Located {
        inline: (bytes.len() <= INLINE_RESULT_LIMIT).then(|| bytes.clone()),
        who_has: Vec::new(),
        nbytes: bytes.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(n: usize, b: u8) -> Bytes {
        Bytes::from(vec![b; n])
    }

    #[tokio::test]
    async fn results_that_would_spill_are_given_back_for_the_blocking_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResultStore::new(2000, dir.path().join("spill"));
        store.insert_in_memory("a", value(1000, 1)).unwrap();
        // Replacing a result in memory counts only the difference.
        store.insert_in_memory("a", value(1500, 2)).unwrap();
        let back = store.insert_in_memory("b", value(1000, 3)).unwrap_err();
        assert_eq!(back, value(1000, 3), "over budget: handed back whole");
        store.insert("b".into(), back).unwrap();
        let u = store.usage();
        assert_eq!((u.count, u.spilled_count), (2, 1));
        // a is on disk now: replacing it needs the disk too.
        assert!(store.insert_in_memory("a", value(10, 4)).is_err());
        assert_eq!(store.get("a").await.unwrap(), value(1500, 2));
    }

    /// Spilling writes files outside the store's lock: while a victim's
    /// write is stuck (its spill file is a FIFO no one reads yet), the
    /// store still answers. Once the write goes through, the victim is on
    /// disk and the new result in memory.
    #[test]
    fn a_slow_spill_does_not_hold_up_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let spill = dir.path().join("spill");
        std::fs::create_dir_all(&spill).unwrap();
        let fifo = spill.join("0.bin");
        let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let store = Arc::new(ResultStore::new(2000, spill));
        store.insert("old".into(), value(1500, 1)).unwrap();
        let inserting = {
            let store = store.clone();
            std::thread::spawn(move || store.insert("new".into(), value(1000, 2)))
        };
        // The store shows the new result, and answers, while the write
        // waits for a reader.
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let store = store.clone();
            std::thread::spawn(move || {
                while store.usage().count < 2 {
                    std::thread::yield_now();
                }
                let _ = tx.send(store.holds("old"));
            });
        }
        let answered = rx.recv_timeout(std::time::Duration::from_secs(10));
        // Unblock the writer whatever happened.
        let read = std::fs::read(&fifo).unwrap();
        assert_eq!(
            answered.ok(),
            Some(true),
            "the store did not answer while spilling"
        );
        inserting.join().unwrap().unwrap();
        assert_eq!(read, value(1500, 1));
        let u = store.usage();
        assert_eq!((u.count, u.spilled_count, u.in_memory), (2, 1, 1000));
    }

    /// A result released while it is being spilled no longer counts as
    /// leaving memory: the room it made is counted once.
    #[test]
    fn a_result_released_while_it_spills_is_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let spill = dir.path().join("spill");
        std::fs::create_dir_all(&spill).unwrap();
        let fifo = spill.join("0.bin");
        let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let store = Arc::new(ResultStore::new(2000, spill));
        store.insert("old".into(), value(1500, 1)).unwrap();
        let inserting = {
            let store = store.clone();
            std::thread::spawn(move || store.insert("new".into(), value(1000, 2)))
        };
        while store.usage().count < 2 {
            std::thread::yield_now();
        }
        // Released while its write waits for a reader.
        store.remove("old");
        // 1,000 in memory and 900 more fit the budget: nothing spills.
        store.insert("third".into(), value(900, 3)).unwrap();
        let u = store.usage();
        let at_once = (u.in_memory, u.spilled_count);
        let _ = std::fs::read(&fifo).unwrap();
        inserting.join().unwrap().unwrap();
        assert_eq!(at_once, (1900, 0));
        let u = store.usage();
        assert_eq!((u.count, u.in_memory, u.spilled_count), (2, 1900, 0));
    }

    /// A worker starting removes the spill directories of this host's
    /// workers that died, and nothing else.
    #[test]
    fn spill_directories_of_dead_workers_on_this_host_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let host = super::super::host_name();
        let me = std::process::id();
        let names = [
            format!("worker-{host}-{dead}-1"),
            format!("worker-{host}-{me}-2"),
            format!("worker-elsewhere-{dead}-3"),
            format!("worker-{dead}-4"),
            "other".to_string(),
        ];
        for n in &names {
            std::fs::create_dir_all(root.path().join(n)).unwrap();
            std::fs::write(root.path().join(n).join("0.bin"), b"x").unwrap();
        }
        assert_eq!(remove_stale(root.path()), 1);
        let left: Vec<bool> = names.iter().map(|n| root.path().join(n).exists()).collect();
        assert_eq!(left, [false, true, true, true, true]);
        assert!(
            spill_dir_for(root.path(), 7)
                .to_str()
                .unwrap()
                .ends_with(&format!("worker-{host}-{me}-7"))
        );
    }

    #[tokio::test]
    async fn hashed_and_other_keys_are_held_and_named_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResultStore::new(1 << 20, dir.path().join("spill"));
        let keys = [
            "inc-0123456789abcdef0123456789abcdef",
            "add-0123456789abcdef0123456789abcdef",
            "inc-0123456789ABCDEF0123456789ABCDEF",
            "my-result",
            "data-ffffffffffffffffffffffffffffffff",
            "-00000000000000000000000000000000",
        ];
        for (i, k) in keys.iter().enumerate() {
            assert!(store.insert_in_memory(k, value(2000, i as u8)).is_ok());
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(store.get(k).await, Some(value(2000, i as u8)), "{k}");
        }
        assert_eq!(
            store.get("sub-0123456789abcdef0123456789abcdef").await,
            None
        );
        let mut named: Vec<String> = store.located().into_iter().map(|(k, _)| k).collect();
        named.sort();
        let mut want: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        want.sort();
        assert_eq!(named, want);
        store.remove(keys[0]);
        assert_eq!(store.get(keys[0]).await, None);
        assert!(
            store.get(keys[1]).await.is_some(),
            "same hash, other prefix"
        );
        // Held means held: not merely a known prefix, or any other key.
        assert!(store.holds(keys[1]) && store.holds("my-result"));
        assert!(!store.holds(keys[0]), "removed");
        assert!(!store.holds("inc-ffffffffffffffffffffffffffffffff"));
        assert!(!store.holds("other-result"));
    }

    #[tokio::test]
    async fn ranges_read_from_memory_and_from_a_spill_file_alike() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResultStore::new(3000, dir.path().join("spill"));
        let bytes: Vec<u8> = (0..2500u32).map(|i| (i * 7) as u8).collect();
        store
            .insert("m".into(), Bytes::from(bytes.clone()))
            .unwrap();
        // Over budget alone: straight to its spill file.
        let big: Vec<u8> = (0..5000u32).map(|i| (i * 13) as u8).collect();
        store.insert("d".into(), Bytes::from(big.clone())).unwrap();
        assert_eq!(store.usage().spilled_count, 1);
        for (key, whole) in [("m", &bytes), ("d", &big)] {
            let total = whole.len() as u64;
            let (t, r) = store.read(key, 100, 1000).await.unwrap();
            assert_eq!((t, &r[..]), (total, &whole[100..1100]), "{key}");
            // Fewer at the end, none past it.
            let (_, r) = store.read(key, total - 10, 1000).await.unwrap();
            assert_eq!(&r[..], &whole[whole.len() - 10..], "{key}");
            let (_, r) = store.read(key, total + 5, 1000).await.unwrap();
            assert!(r.is_empty(), "{key}");
            let (_, r) = store.read(key, u64::MAX, u64::MAX).await.unwrap();
            assert!(r.is_empty(), "{key}");
        }
        assert!(store.read("absent", 0, 10).await.is_none());
    }

    /// A spill file removed (or cut short) behind the store's back drops
    /// its result, whichever way it is read, and says so once per result;
    /// a result freed meanwhile (its file removed by the store) is not
    /// reported.
    #[tokio::test]
    async fn a_result_whose_spill_file_is_gone_is_dropped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResultStore::new(100, dir.path().join("spill"));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        store.report_drops_to(tx);
        for (i, k) in ["a", "b", "c", "d"].into_iter().enumerate() {
            store.insert(k.into(), value(1000, i as u8)).unwrap();
        }
        assert_eq!(store.usage().spilled_count, 4);
        let files: Vec<_> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|f| f.unwrap().path())
            .collect();
        for f in &files {
            std::fs::remove_file(f).unwrap();
        }
        // Removed: by a whole read, a range and as a command's stdin; cut
        // short: by a whole read.
        assert_eq!(store.get("a").await, None);
        assert_eq!(store.read("b", 0, 10).await, None);
        assert!(store.spilled_bytes("c").await.is_none());
        store.insert("e".into(), value(1000, 5)).unwrap();
        let e = std::fs::read_dir(store.dir()).unwrap().next().unwrap();
        std::fs::write(e.unwrap().path(), b"short").unwrap();
        assert_eq!(store.get("e").await, None);
        let mut dropped = Vec::new();
        while let Ok(m) = rx.try_recv() {
            match m {
                ToScheduler::Dropped { keys } => dropped.extend(keys),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(dropped, ["a", "b", "c", "e"]);
        for k in ["a", "b", "c", "e"] {
            assert!(!store.holds(k), "{k}");
        }
        assert_eq!(store.usage().spilled_count, 1, "d, never read");
        // Asked again: absent, and not reported twice.
        assert_eq!(store.get("a").await, None);
        store.remove("d");
        assert!(rx.try_recv().is_err());
    }

    /// A spill file whose bytes changed behind the store's back (same
    /// length) is caught by its block sums, whichever way it is read:
    /// dropped and reported, never handed out. Ranges read back right,
    /// across blocks, from spills written whole and as they arrived (with
    /// a start written over at the end).
    #[tokio::test]
    async fn a_spill_file_whose_bytes_changed_is_dropped_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ResultStore::new(100, dir.path().join("spill")));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        store.report_drops_to(tx);
        let n = 2 * BLOCK + 1234;
        let whole: Vec<u8> = (0..n).map(|i| (i * 31 + i / 7) as u8).collect();
        for k in ["a", "b", "c", "d"] {
            store.insert(k.into(), Bytes::from(whole.clone())).unwrap();
        }
        // Written as it arrives, its start written over at the end.
        let mut spill = store.spill_file().unwrap();
        spill.write(&store, &[0; 10]).unwrap();
        for part in whole[10..].chunks(BLOCK / 3) {
            spill.write(&store, part).unwrap();
        }
        spill.rewrite_start(&store, &whole[..10]).unwrap();
        store.adopt("e", spill);
        for k in ["a", "e"] {
            assert!(store.get(k).await.unwrap() == whole, "{k}");
            for (at, len) in [(0, 10), (BLOCK - 5, 10), (BLOCK, BLOCK), (n - 3, 100)] {
                let (total, got) = store.read(k, at as u64, len as u64).await.unwrap();
                assert_eq!(total, n as u64);
                assert!(got[..] == whole[at..(at + len).min(n)], "{k} at {at}");
            }
        }
        // One byte changed in the second block of each file but a's.
        let files: Vec<_> = ["b", "c", "d", "e"]
            .iter()
            .map(|k| {
                let file = {
                    let inner = store.lock();
                    let held = inner.find(k).unwrap();
                    match &inner.entries[&held].place {
                        Place::Disk { file, .. } => *file,
                        Place::Memory(_) => panic!("{k} is in memory"),
                    }
                };
                store.path(file)
            })
            .collect();
        for f in &files {
            use std::os::unix::fs::FileExt;
            let out = std::fs::OpenOptions::new().write(true).open(f).unwrap();
            out.write_all_at(b"X", BLOCK as u64 + 7).unwrap();
        }
        // A range that does not touch the changed block still reads.
        assert!(store.read("b", 0, 10).await.unwrap().1[..] == whole[..10]);
        assert_eq!(store.read("b", BLOCK as u64, 10).await, None);
        assert_eq!(store.get("c").await, None);
        assert!(store.spilled_bytes("d").await.is_none());
        assert_eq!(store.get("e").await, None);
        let mut dropped = Vec::new();
        while let Ok(ToScheduler::Dropped { keys }) = rx.try_recv() {
            dropped.extend(keys);
        }
        assert_eq!(dropped, ["b", "c", "d", "e"]);
        assert!(store.get("a").await.unwrap() == whole, "a, untouched");
    }

    #[tokio::test]
    async fn least_recently_used_results_spill_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResultStore::new(3000, dir.path().join("spill"));
        store.insert("a".into(), value(1000, 1)).unwrap();
        store.insert("b".into(), value(1000, 2)).unwrap();
        store.insert("c".into(), value(1000, 3)).unwrap();
        assert_eq!(store.usage().spilled, 0);
        // Using a makes b the least recently used.
        assert_eq!(store.get("a").await.unwrap(), value(1000, 1));
        store.insert("d".into(), value(1000, 4)).unwrap();
        let u = store.usage();
        assert_eq!((u.in_memory, u.spilled, u.spilled_count), (3000, 1000, 1));
        assert_eq!(store.get("b").await.unwrap(), value(1000, 2), "read back");
        // Over budget alone: straight to disk.
        store.insert("big".into(), value(5000, 9)).unwrap();
        assert_eq!(store.get("big").await.unwrap(), value(5000, 9));
        assert_eq!(store.usage().spilled, 6000);
        store.remove("b");
        store.remove("big");
        let u = store.usage();
        assert_eq!((u.count, u.spilled, u.spilled_count), (3, 0, 0));
        assert_eq!(std::fs::read_dir(store.dir()).unwrap().count(), 0);
        let located = store.located();
        assert_eq!(located.len(), 3);
    }

    #[tokio::test]
    async fn an_unusable_spill_directory_refuses_new_results_and_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"not a directory").unwrap();
        let store = ResultStore::new(1500, blocker.join("spill"));
        store.insert("a".into(), value(1000, 1)).unwrap();
        let err = store.insert("b".into(), value(1000, 2)).unwrap_err();
        assert!(err.contains("memory budget of 1.5 KiB"), "{err}");
        assert!(err.contains("--memory-budget"), "{err}");
        assert_eq!(store.get("a").await.unwrap(), value(1000, 1));
        assert!(store.get("b").await.is_none());
        assert_eq!(store.usage().in_memory, 1000);
    }
}
