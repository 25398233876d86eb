//! Reading and writing the journal's files a frame at a time, so that
//! neither recovery nor compaction holds a whole file in memory.
//!
//! Both kinds of file are a header followed by frames of
//! `[length u32][crc32 u32][postcard Vec<T>]`: records in a log, snapshot
//! [`Item`]s in a snapshot.

use super::{JOURNAL_VERSION, LoadError, MAX_FRAME, SNAPSHOT_MAGIC, version_error};
use crate::scheduler::state::Item;
use serde::de::DeserializeOwned;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Fewer bytes than any task takes in a snapshot (a key, a module hash and
/// a function name at least).
const MIN_TASK_BYTES: u64 = 16;

/// Header of a snapshot: magic, version (u32), last log generation it
/// covers (u64).
pub(super) const SNAPSHOT_HEADER: usize = 8 + 4 + 8;

/// A frame's items are written once they encode to this many bytes.
const FRAME_BYTES: usize = 1 << 20;

/// What the next frame of a file is.
pub(super) enum Frame<T> {
    /// A whole frame.
    Batch(Vec<T>),
    /// The file ends cleanly here.
    End,
    /// The file is torn or damaged from here on.
    Damaged,
}

/// Frames read one at a time from a file.
pub(super) struct Frames {
    file: BufReader<File>,
    /// Offset of the next frame.
    pub(super) at: u64,
    /// The payload of the frame read last.
    payload: Vec<u8>,
    /// The file's length when opened.
    len: u64,
}

/// What reading a frame's payload found.
enum Payload {
    /// A whole frame, whose payload is in [`Frames::payload`].
    Read,
    /// The file ends cleanly here.
    End,
    /// The file is torn or damaged from here on.
    Damaged,
}

impl Frames {
    /// Reads the frames of `file`, whose first `at` bytes (its header)
    /// were read already.
    pub(super) fn new(file: BufReader<File>, at: u64) -> Self {
        let len = file.get_ref().metadata().map_or(u64::MAX, |m| m.len());
        Self {
            file,
            at,
            payload: Vec::new(),
            len,
        }
    }

    /// The next frame's payload, its checksum checked, not decoded.
    fn next_payload(&mut self) -> io::Result<Payload> {
        let mut header = [0u8; 8];
        match read_full(&mut self.file, &mut header)? {
            0 => return Ok(Payload::End),
            8 => {}
            _ => return Ok(Payload::Damaged),
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        // A torn or damaged header may claim up to a gigabyte: nothing is
        // allocated for more than the file still holds.
        if len > MAX_FRAME || self.at + 8 + len as u64 > self.len {
            return Ok(Payload::Damaged);
        }
        // One buffer for every frame, rather than fresh memory (zeroed by
        // the kernel) for each.
        let payload = &mut self.payload;
        payload.resize(len, 0);
        if read_full(&mut self.file, payload)? != len || crc32fast::hash(payload) != crc {
            return Ok(Payload::Damaged);
        }
        self.at += 8 + len as u64;
        Ok(Payload::Read)
    }

    /// The next whole frame's payload, its checksum checked; `None` at the
    /// end or at a damaged frame.
    pub(super) fn next_checked(&mut self) -> io::Result<Option<&[u8]>> {
        Ok(match self.next_payload()? {
            Payload::Read => Some(&self.payload),
            Payload::End | Payload::Damaged => None,
        })
    }

    /// The next frame.
    pub(super) fn next<T: DeserializeOwned>(&mut self) -> io::Result<Frame<T>> {
        let at = self.at;
        match self.next_payload()? {
            Payload::Read => {}
            Payload::End => return Ok(Frame::End),
            Payload::Damaged => return Ok(Frame::Damaged),
        }
        match decode(&self.payload) {
            Some(batch) => Ok(Frame::Batch(batch)),
            None => {
                self.at = at;
                Ok(Frame::Damaged)
            }
        }
    }
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Option<Vec<T>> {
    postcard::from_bytes(payload).ok()
}

/// Reads until `buf` is full or the file ends; returns how much was read.
pub(super) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes to `out` the frame of `count` items, encoded one after another
/// in `items`: length and checksum, then what a `Vec` of them encodes to
/// (their count, then each). Returns the bytes written.
pub(super) fn write_frame(out: &mut impl Write, count: u64, items: &[u8]) -> io::Result<u64> {
    let mut buf = [0u8; 10];
    let prefix = postcard::to_slice(&count, &mut buf).map_err(io::Error::other)?;
    let len = prefix.len() + items.len();
    let mut crc = crc32fast::Hasher::new();
    crc.update(prefix);
    crc.update(items);
    out.write_all(&(len as u32).to_le_bytes())?;
    out.write_all(&crc.finalize().to_le_bytes())?;
    out.write_all(prefix)?;
    out.write_all(items)?;
    Ok(8 + len as u64)
}

/// A snapshot being written, item by item, to a temporary file that
/// [`SnapshotWriter::finish`] makes whole and [`install`] puts in place.
pub(super) struct SnapshotWriter {
    tmp: PathBuf,
    file: BufWriter<File>,
    /// The frame being filled: its items, encoded one after another.
    payload: Vec<u8>,
    items: u64,
    tasks: u64,
}

impl SnapshotWriter {
    /// Starts a snapshot covering the logs up to generation `covers`, in
    /// `tmp` (private to this user: task arguments and granted secrets
    /// are in it).
    pub(super) fn create(tmp: PathBuf, covers: u64) -> io::Result<Self> {
        let mut file = BufWriter::with_capacity(1 << 20, super::private_file(&tmp)?);
        file.write_all(SNAPSHOT_MAGIC)?;
        file.write_all(&JOURNAL_VERSION.to_le_bytes())?;
        file.write_all(&covers.to_le_bytes())?;
        Ok(Self {
            tmp,
            file,
            payload: Vec::new(),
            items: 0,
            tasks: 0,
        })
    }

    /// Adds an item.
    pub(super) fn push(&mut self, item: &Item) -> io::Result<()> {
        if matches!(item, Item::Task(_)) {
            self.tasks += 1;
        }
        postcard::to_io(item, &mut self.payload).map_err(io::Error::other)?;
        self.items += 1;
        if self.payload.len() >= FRAME_BYTES {
            self.flush_frame()?;
        }
        Ok(())
    }

    /// Writes the items so far as one frame: a `Vec<Item>` is its length
    /// followed by its items, each encoded as on its own.
    fn flush_frame(&mut self) -> io::Result<()> {
        if self.items == 0 {
            return Ok(());
        }
        write_frame(&mut self.file, self.items, &self.payload)?;
        self.payload.clear();
        self.items = 0;
        Ok(())
    }

    /// Ends the snapshot and syncs it; returns its temporary path.
    pub(super) fn finish(mut self) -> io::Result<PathBuf> {
        let end = Item::End { tasks: self.tasks };
        self.push(&end)?;
        self.flush_frame()?;
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
        Ok(self.tmp)
    }
}

/// Puts a finished snapshot in place of `dest`, durably.
pub(super) fn install(tmp: &Path, dest: &Path) -> io::Result<()> {
    std::fs::rename(tmp, dest)?;
    File::open(dest.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// A snapshot read item by item.
pub(super) struct SnapshotReader {
    path: PathBuf,
    frames: Frames,
    pending: std::vec::IntoIter<Item>,
    /// The log generations it covers.
    pub(super) covers: u64,
    tasks: u64,
    ended: bool,
}

impl SnapshotReader {
    /// Opens the snapshot at `path`; `None` if there is none.
    pub(super) fn open(path: &Path) -> Result<Option<Self>, LoadError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(LoadError::Refused(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        let mut file = BufReader::with_capacity(1 << 20, file);
        let mut header = [0u8; SNAPSHOT_HEADER];
        let n = read_full(&mut file, &mut header)
            .map_err(|e| LoadError::Refused(format!("cannot read {}: {e}", path.display())))?;
        if n < 12 || &header[..8] != SNAPSHOT_MAGIC {
            return Err(LoadError::Damaged(format!(
                "{} is not a dtask journal snapshot (or is damaged)",
                path.display()
            )));
        }
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if version != JOURNAL_VERSION {
            return Err(version_error(path, version));
        }
        if n < SNAPSHOT_HEADER {
            return Err(LoadError::Damaged(format!(
                "the journal snapshot {} is cut short",
                path.display()
            )));
        }
        Ok(Some(Self {
            path: path.to_path_buf(),
            frames: Frames::new(file, SNAPSHOT_HEADER as u64),
            pending: Vec::new().into_iter(),
            covers: u64::from_le_bytes(header[12..20].try_into().expect("8 bytes")),
            tasks: 0,
            ended: false,
        }))
    }

    /// Checks the whole snapshot before anything is restored from it:
    /// every frame's checksum, and the end mark in the last one; returns
    /// how many tasks that mark says it holds.
    pub(super) fn verify(mut self) -> Result<u64, LoadError> {
        let mut any = false;
        loop {
            match self.frames.next_payload() {
                Ok(Payload::Read) => any = true,
                Ok(Payload::End) => break,
                Ok(Payload::Damaged) => return Err(self.damaged("a checksum or length is wrong")),
                Err(e) => {
                    return Err(LoadError::Refused(format!(
                        "cannot read {}: {e}",
                        self.path.display()
                    )));
                }
            }
        }
        // The buffer still holds the last frame's payload.
        match any
            .then(|| decode::<Item>(&self.frames.payload))
            .flatten()
            .and_then(|items| items.last().cloned())
        {
            // Only a hint (to size tables), and from a file: never more
            // than the file could hold, whatever the mark says.
            Some(Item::End { tasks }) => {
                let bytes = std::fs::metadata(&self.path).map_or(0, |m| m.len());
                Ok(tasks.min(bytes / MIN_TASK_BYTES))
            }
            _ => Err(self.damaged("it ends early")),
        }
    }

    fn damaged(&self, why: &str) -> LoadError {
        LoadError::Damaged(format!(
            "the journal snapshot {} is damaged ({why} at byte {})",
            self.path.display(),
            self.frames.at
        ))
    }

    /// The next item; `None` after the last.
    pub(super) fn next_item(&mut self) -> Result<Option<Item>, LoadError> {
        loop {
            if let Some(item) = self.pending.next() {
                match &item {
                    Item::Task(_) => self.tasks += 1,
                    Item::End { tasks } => {
                        if *tasks != self.tasks {
                            return Err(self.damaged("it holds fewer tasks than it says"));
                        }
                        self.ended = true;
                        return Ok(None);
                    }
                    _ => {}
                }
                return Ok(Some(item));
            }
            if self.ended {
                return Ok(None);
            }
            match self.frames.next::<Item>() {
                Ok(Frame::Batch(items)) => self.pending = items.into_iter(),
                Ok(Frame::End) => return Err(self.damaged("it ends early")),
                Ok(Frame::Damaged) => return Err(self.damaged("a checksum or length is wrong")),
                Err(e) => {
                    return Err(LoadError::Refused(format!(
                        "cannot read {}: {e}",
                        self.path.display()
                    )));
                }
            }
        }
    }
}
