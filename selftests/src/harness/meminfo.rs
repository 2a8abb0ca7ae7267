//! Memory counters from /proc/meminfo and /proc/vmstat, for cases that
//! check that guest_memfd pages are allocated and freed when they should
//! be, and that say what compaction did.
//!
//! guest_memfd marks its mapping unevictable, so its page cache folios sit
//! on the unevictable LRU and are counted in `Unevictable`: in the quiet
//! guest (nothing mlock()s, no ramfs in use) that counter moves only with
//! guest_memfd pages. Additions reach it through per-CPU LRU batches (15
//! folios on 6.1, 31 on later kernels, and more than one batch per CPU), so
//! it lags by a few hundred KiB: checks compare with a tolerance.

use std::time::Duration;

use super::case::Stop;

/// Pages one per-CPU LRU batch may hold back from the counter (6.1's
/// PAGEVEC_SIZE is 15, later kernels' folio batches hold 31).
pub const LRU_BATCH_PAGES: u64 = 31;

/// The `Unevictable:` line of /proc/meminfo, in KiB.
pub fn unevictable_kib() -> Result<u64, Stop> {
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| Stop::Fail(format!("read /proc/meminfo: {e}")))?;
    parse_kib(&text, "Unevictable")
        .ok_or_else(|| Stop::Fail("/proc/meminfo has no `Unevictable:` line".into()))
}

/// The `HardwareCorrupted:` line (poisoned memory) in KiB; `None` when the
/// kernel has no memory failure handling (CONFIG_MEMORY_FAILURE), which
/// is when the line is missing.
pub fn hardware_corrupted_kib() -> Result<Option<u64>, Stop> {
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| Stop::Fail(format!("read /proc/meminfo: {e}")))?;
    Ok(parse_kib(&text, "HardwareCorrupted"))
}

/// The counters of /proc/vmstat named in `names`, in that order (`None`
/// for one the kernel does not count: event counters need
/// CONFIG_VM_EVENT_COUNTERS).
pub fn vmstat(names: &[&str]) -> Result<Vec<Option<u64>>, Stop> {
    let text = std::fs::read_to_string("/proc/vmstat")
        .map_err(|e| Stop::Fail(format!("read /proc/vmstat: {e}")))?;
    Ok(names.iter().map(|n| parse_vmstat(&text, n)).collect())
}

/// `name N` from vmstat text.
fn parse_vmstat(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok())?
    })
}

/// `field:   N kB` from meminfo text.
fn parse_kib(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// How far the counter may be off for `total_kib` of guest_memfd pages,
/// in KiB: two full LRU batches per CPU, or 1% of the total when that is
/// more (measured on a 2-CPU 6.18 host: 256 MiB allocated, 332 KiB not
/// yet counted). Freed folios leave the counter at once; RCU-deferred
/// frees may take a grace period, which the caller waits out with `settle`.
pub fn slack_kib(page: u64, total_kib: u64) -> u64 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    (2 * cpus * LRU_BATCH_PAGES * page / 1024).max(total_kib / 100)
}

/// Gives deferred frees (RCU callbacks, per-CPU batches drained by other
/// activity) a moment before a counter is read for the last time.
pub fn settle() {
    std::thread::sleep(Duration::from_millis(200));
}

#[cfg(test)]
mod tests {
    use super::{parse_kib, parse_vmstat};

    #[test]
    fn reads_a_field_in_kib() {
        let t = "MemTotal:        2030596 kB\nUnevictable:        1234 kB\nMlocked: 0 kB\n";
        assert_eq!(parse_kib(t, "Unevictable"), Some(1234));
        assert_eq!(parse_kib(t, "MemTotal"), Some(2030596));
        assert_eq!(parse_kib(t, "Unevict"), None);
        assert_eq!(parse_kib(t, "Missing"), None);
    }

    #[test]
    fn reads_a_vmstat_counter() {
        let t = "compact_stall 0\ncompact_isolated 117\npgmigrate_fail 3\n";
        assert_eq!(parse_vmstat(t, "compact_isolated"), Some(117));
        assert_eq!(parse_vmstat(t, "pgmigrate_fail"), Some(3));
        assert_eq!(parse_vmstat(t, "compact"), None);
    }
}
