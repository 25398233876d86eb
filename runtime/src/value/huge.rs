//! Big buffers backed by huge pages where the kernel allows it.
//!
//! A fresh 100 MB buffer costs about 25,000 page faults as it is first
//! written, each one zeroing and charging a 4 KiB page; with transparent
//! huge pages in `madvise` mode (the common default) the kernel only backs a
//! region with 2 MiB pages when asked. Buffers that receive a big value are
//! asked for them: a 50th of the faults for the same bytes.

/// Buffers smaller than this are left alone (a few pages either way).
const WORTH_IT: usize = 8 << 20;

/// A huge page (x86-64 and aarch64 with 4 KiB base pages).
const HUGE: usize = 2 << 20;

/// An empty buffer with room for `len` bytes, asked to be backed by huge
/// pages when `len` is big; an error saying so when the memory cannot be
/// had (`len` comes from a peer: it must not abort the process).
pub fn buffer(len: u64) -> Result<Vec<u8>, String> {
    let mut v = Vec::new();
    usize::try_from(len)
        .ok()
        .and_then(|n| v.try_reserve_exact(n).ok())
        .ok_or_else(|| format!("cannot allocate {} for a value", super::human_bytes(len)))?;
    advise(v.as_mut_ptr(), v.capacity());
    Ok(v)
}

/// Asks for huge pages over the whole 2 MiB blocks of `[ptr, ptr + len)`,
/// memory this process owns and has not written yet. Only advice: where
/// the kernel says no, nothing changes.
pub fn advise(ptr: *mut u8, len: usize) {
    if len < WORTH_IT {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize + len) / HUGE * HUGE;
    if end > start {
        // SAFETY: the range lies inside an allocation the caller owns;
        // MADV_HUGEPAGE changes how its pages are backed, never its
        // contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}
