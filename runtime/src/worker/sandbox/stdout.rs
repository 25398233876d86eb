//! A command's stdout, its result, taken as it is written: encoded as it
//! arrives (the MessagePack byte-string header reserved in front, filled in
//! at the end, so the bytes are never copied into an encoding afterwards),
//! held in memory while it fits, and streamed on to a spill file of the
//! worker's store once it is over the store's memory budget. Its size is
//! then bounded by the spill directory's disk, not by memory.

use super::capture::OutputSink;
use super::*;
use crate::worker::store::{ResultStore, SpillFile};

/// Bytes gathered in memory before each write to the spill file, so a
/// program writing a line at a time does not cost a system call per line.
const FILE_BUFFER: usize = 1 << 20;

/// Where a command's stdout goes; clones write to the same place.
#[derive(Clone)]
pub(super) struct Stdout(Arc<Mutex<Sink>>);

struct Sink {
    /// The header's room, then what is not yet in the file (all of it while
    /// there is no file).
    buf: Vec<u8>,
    /// Stdout bytes written so far.
    written: u64,
    /// The spill file, once over the memory budget.
    file: Option<SpillFile>,
    /// Where a spill file comes from; without one, stdout is held in memory
    /// up to `cap` and a write past it fails.
    spill: Option<Arc<ResultStore>>,
    /// With a spill store: the room in its budget what is held in memory
    /// takes, shared with values arriving on the data port, so that many
    /// commands writing at once hold no more than the budget together.
    room: Option<crate::worker::store::Reserved>,
    cap: usize,
    /// Why writing stopped, reported as the task's error.
    failed: Option<Failure>,
}

/// Why a command's stdout could not be kept.
#[derive(Clone, Debug)]
pub(super) enum Failure {
    /// Over the memory cap, with nowhere to spill.
    OverCap,
    /// Over what one value holds, or the disk refused it (the message).
    Refused(String),
}

/// A command's stdout once it has ended, as its result's encoding.
pub(super) enum Taken {
    /// In memory.
    Memory(bytes::Bytes),
    /// In a spill file of the worker's store.
    File(SpillFile),
}

impl Stdout {
    /// A sink holding up to `cap` bytes in memory and, with `spill`, going
    /// on to a spill file past its memory budget.
    pub(super) fn new(cap: usize, spill: Option<Arc<ResultStore>>) -> Self {
        let buf = vec![0; value::BIN32_ROOM];
        Self(Arc::new(Mutex::new(Sink {
            buf,
            written: 0,
            file: None,
            spill,
            room: None,
            cap,
            failed: None,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sink> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `bytes`, or says why not (and keeps saying so).
    fn push(&self, bytes: &[u8]) -> Result<(), Failure> {
        let mut sink = self.lock();
        if let Some(f) = &sink.failed {
            return Err(f.clone());
        }
        let pushed = sink.push(bytes);
        if let Err(f) = &pushed {
            sink.failed = Some(f.clone());
            // What was written is of no use now: memory and disk go back.
            sink.buf = Vec::new();
            sink.file = None;
        }
        pushed
    }

    /// The output once the program has ended, or why it could not be kept.
    pub(super) fn take(self) -> Result<Taken, Failure> {
        let mut sink = self.lock();
        if let Some(f) = sink.failed.take() {
            return Err(f);
        }
        let buf = std::mem::take(&mut sink.buf);
        let refused = |e: std::io::Error| Failure::Refused(e.to_string());
        match sink.file.take() {
            None => Ok(Taken::Memory(
                value::finish_binary(buf).map_err(refused)?.into(),
            )),
            Some(mut file) => {
                // Under 4 GiB: `push` saw to that.
                let header = value::bin32_header(sink.written as u32);
                let store = sink.spill.clone().expect("a spill file has a store");
                file.write(&store, &buf)
                    .and_then(|()| file.rewrite_start(&store, &header))
                    .map_err(Failure::Refused)?;
                Ok(Taken::File(file))
            }
        }
    }
}

impl Sink {
    /// Whether `written` bytes may stay in memory: room for them in the
    /// store's budget, taken a doubling at a time.
    fn held_in_memory(&mut self, store: &Arc<ResultStore>, written: u64) -> bool {
        let room = self.room.get_or_insert_with(|| store.no_room());
        written <= room.len()
            || room.grow_to(written.max(room.len() * 2).max(64 << 10))
            || room.grow_to(written)
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let written = self.written + bytes.len() as u64;
        if written > u32::MAX as u64 {
            return Err(Failure::Refused(format!(
                "wrote more than {} to stdout, the most one value holds",
                value::human_bytes(u32::MAX as u64)
            )));
        }
        self.written = written;
        if self.file.is_none() {
            match self.spill.clone() {
                Some(store) if !self.held_in_memory(&store, written) => {
                    // From here on, to disk: what is held goes first.
                    self.file = Some(store.spill_file().map_err(Failure::Refused)?);
                    self.room = None;
                }
                Some(_) => {}
                None if written > self.cap as u64 => return Err(Failure::OverCap),
                None => {}
            }
        }
        self.buf.extend_from_slice(bytes);
        if let Some(file) = &mut self.file
            && self.buf.len() >= FILE_BUFFER
        {
            let store = self.spill.as_ref().expect("a spill file has a store");
            file.write(store, &self.buf).map_err(Failure::Refused)?;
            self.buf.clear();
        }
        Ok(())
    }
}

impl Failure {
    fn message(&self) -> String {
        match self {
            Failure::OverCap => "stdout is full".to_string(),
            Failure::Refused(m) => m.clone(),
        }
    }
}

// Writing to the spill file blocks the async thread for as long as the page
// cache takes a megabyte: the guest is waiting on this write anyway.
impl OutputSink for Stdout {
    fn push(&self, bytes: &[u8]) -> Result<(), String> {
        Stdout::push(self, bytes).map_err(|f| f.message())
    }

    fn permit(&self) -> Result<usize, String> {
        match &self.lock().failed {
            Some(f) => Err(f.message()),
            None => Ok(FILE_BUFFER),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_writing_at_once_hold_at_most_the_budget_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ResultStore::new(1 << 20, dir.path().join("spill")));
        let chunk = vec![7u8; 100 << 10];
        let (a, b) = (
            Stdout::new(usize::MAX, Some(store.clone())),
            Stdout::new(usize::MAX, Some(store.clone())),
        );
        // 700 kB each, written side by side: 1.4 MB do not fit a 1 MiB
        // budget, so one of them goes to disk.
        for _ in 0..7 {
            a.push(&chunk).unwrap();
            b.push(&chunk).unwrap();
        }
        let mut kinds: Vec<&str> = [a, b]
            .into_iter()
            .map(|s| match s.take().unwrap() {
                Taken::Memory(_) => "memory",
                Taken::File(_) => "file",
            })
            .collect();
        kinds.sort_unstable();
        assert_eq!(kinds, ["file", "memory"]);
        // What one alone writes stays in memory once the room is back.
        let c = Stdout::new(usize::MAX, Some(store));
        for _ in 0..7 {
            c.push(&chunk).unwrap();
        }
        assert!(matches!(c.take().unwrap(), Taken::Memory(_)));
    }
}
