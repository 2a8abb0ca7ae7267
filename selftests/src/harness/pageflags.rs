//! Page flags from /proc/kpageflags (CONFIG_PROC_PAGE_MONITOR), to find the
//! physical page behind a guest_memfd page.
//!
//! On the 6.8 uAPI guest_memfd cannot be mapped, so no pagemap entry leads
//! to its pages; what tells them apart is their flags. The file's mapping is
//! unevictable, so its page cache pages sit on the unevictable LRU and are
//! neither anonymous, nor mapped, nor swap-backed, nor mlocked: in the quiet
//! guest nothing else gains that state (no mlock, no ramfs writes). Taking a
//! snapshot of every page's flags before and after allocating one page of
//! the file makes that page the only one that gained it.
//!
//! A new page reaches the LRU (PG_lru, PG_unevictable) only when the
//! per-CPU batch it went into is drained. [`pages_gained_by`] keeps the
//! thread on one CPU and, after the allocation, faults in more anonymous
//! pages than a batch holds: the batch overflows and is drained by the
//! kernel's own path, with the file's page in it.

use std::io::Read;

use crate::harness::case::Stop;
use crate::harness::meminfo::LRU_BATCH_PAGES;
use crate::kvm::caps::Lack;
use crate::kvm::Mapping;

pub const KPFLAGS: &str = "/proc/kpageflags";

// Bit numbers of include/uapi/linux/kernel-page-flags.h and, for
// KPF_MLOCKED, of the kernel-internal flags /proc/kpageflags also reports.
pub const KPF_SLAB: u64 = 1 << 7;
pub const KPF_LRU: u64 = 1 << 5;
pub const KPF_BUDDY: u64 = 1 << 10;
pub const KPF_MMAP: u64 = 1 << 11;
pub const KPF_ANON: u64 = 1 << 12;
pub const KPF_SWAPBACKED: u64 = 1 << 14;
pub const KPF_COMPOUND_HEAD: u64 = 1 << 15;
pub const KPF_COMPOUND_TAIL: u64 = 1 << 16;
pub const KPF_UNEVICTABLE: u64 = 1 << 18;
pub const KPF_HWPOISON: u64 = 1 << 19;
pub const KPF_NOPAGE: u64 = 1 << 20;
pub const KPF_MLOCKED: u64 = 1 << 33;

/// The flags a guest_memfd page has on the LRU must include ...
pub const GMEM_SET: u64 = KPF_LRU | KPF_UNEVICTABLE;
/// ... and must not include: anything that marks another kind of page (a
/// huge folio, which guest_memfd does not allocate, included), and
/// HWPOISON, so that a poisoned page is not found again.
pub const GMEM_CLEAR: u64 = KPF_SLAB
    | KPF_BUDDY
    | KPF_MMAP
    | KPF_ANON
    | KPF_SWAPBACKED
    | KPF_COMPOUND_HEAD
    | KPF_COMPOUND_TAIL
    | KPF_HWPOISON
    | KPF_NOPAGE
    | KPF_MLOCKED;

/// Whether `flags` are those of an unevictable, unmapped page cache page
/// on the LRU, as guest_memfd's pages are.
pub fn looks_like_gmem(flags: u64) -> bool {
    flags & (GMEM_SET | GMEM_CLEAR) == GMEM_SET
}

/// Skips when the kernel has no /proc/kpageflags.
pub fn available() -> Result<(), Stop> {
    match std::fs::File::open(KPFLAGS) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Stop::lacking(
            Lack::Env("CONFIG_PROC_PAGE_MONITOR".into()),
            format!("no {KPFLAGS}: no way to find a guest_memfd page's pfn"),
        )),
        Err(e) => Err(Stop::lacking(
            Lack::Env(KPFLAGS.into()),
            format!("cannot open it: {e}"),
        )),
    }
}

/// Every page's flags, indexed by pfn.
pub fn snapshot() -> Result<Vec<u64>, Stop> {
    let mut f = std::fs::File::open(KPFLAGS).map_err(|e| fail_io("open", e))?;
    let mut bytes = Vec::new();
    // The file reports no size; it ends at the highest pfn.
    f.read_to_end(&mut bytes).map_err(|e| fail_io("read", e))?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8-byte chunk")))
        .collect())
}

/// The flags of one page.
pub fn flags_of(pfn: u64) -> Result<u64, Stop> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(KPFLAGS).map_err(|e| fail_io("open", e))?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, pfn * 8)
        .map_err(|e| fail_io(&format!("read pfn {pfn:#x} of"), e))?;
    Ok(u64::from_ne_bytes(b))
}

fn fail_io(what: &str, e: std::io::Error) -> Stop {
    Stop::Fail(format!("{what} {KPFLAGS}: {e}"))
}

/// The pfns whose flags look like a guest_memfd page's in `after` and did
/// not in `before`.
pub fn gained(before: &[u64], after: &[u64]) -> Vec<u64> {
    after
        .iter()
        .enumerate()
        .filter(|&(pfn, &f)| {
            looks_like_gmem(f) && !before.get(pfn).is_some_and(|&b| looks_like_gmem(b))
        })
        .map(|(pfn, _)| pfn as u64)
        .collect()
}

/// Runs `allocate` between two snapshots, on one CPU, and drains that
/// CPU's LRU batch before the second: the pfns of the pages that became
/// unevictable page cache pages meanwhile.
pub fn pages_gained_by(
    page: u64,
    allocate: impl FnOnce() -> Result<(), Stop>,
) -> Result<Vec<u64>, Stop> {
    let _pin = Pinned::here().map_err(|e| Stop::Fail(format!("pin to this CPU: {e}")))?;
    let before = snapshot()?;
    allocate()?;
    overflow_lru_batch(page)?;
    let after = snapshot()?;
    Ok(gained(&before, &after))
}

/// Faults in twice as many anonymous pages as an LRU batch holds, on the
/// current CPU: each new page goes into that CPU's batch, which the kernel
/// drains onto the LRU lists whenever it is full.
fn overflow_lru_batch(page: u64) -> Result<(), Stop> {
    let n = 2 * LRU_BATCH_PAGES as usize + 2;
    let m = Mapping::anon(n * page as usize)
        .map_err(|e| Stop::Fail(format!("mmap(anon) to drain the LRU batch: {e}")))?;
    for i in 0..n {
        m.write(i * page as usize, 1);
    }
    Ok(())
}

/// The calling thread kept on the CPU it runs on, until dropped.
struct Pinned {
    old: libc::cpu_set_t,
}

impl Pinned {
    fn here() -> std::io::Result<Pinned> {
        // SAFETY: a zeroed cpu_set_t is an empty set; the calls get valid
        // pointers of the right size for the calling thread (pid 0).
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            if libc::sched_getaffinity(0, size, &mut old) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let cpu = libc::sched_getcpu();
            if cpu < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut one);
            if libc::sched_setaffinity(0, size, &one) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Pinned { old })
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: restores the mask read in `here` for the calling thread.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint() {
        let gmem = KPF_LRU | KPF_UNEVICTABLE | (1 << 3); // + UPTODATE
        assert!(looks_like_gmem(gmem));
        assert!(!looks_like_gmem(gmem | KPF_MMAP));
        assert!(!looks_like_gmem(gmem | KPF_ANON | KPF_SWAPBACKED));
        assert!(!looks_like_gmem(gmem | KPF_MLOCKED));
        assert!(!looks_like_gmem(gmem | KPF_HWPOISON));
        assert!(!looks_like_gmem(KPF_UNEVICTABLE), "not on the LRU yet");
        assert!(!looks_like_gmem(KPF_LRU), "evictable");
    }

    #[test]
    fn gained_lists_only_new_gmem_like_pages() {
        let g = KPF_LRU | KPF_UNEVICTABLE;
        let before = [0, g, KPF_LRU, 0];
        let after = [0, g, g, KPF_ANON | g, g];
        // pfn 1 was already one, pfn 3 is anonymous, pfn 4 is past the
        // old end (memory that came online).
        assert_eq!(gained(&before, &after), vec![2, 4]);
    }
}
