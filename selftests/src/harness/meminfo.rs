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
//!
//! A count to the page comes from `nr_file_pages` instead (NR_FILE_PAGES,
//! meminfo's `Cached` plus swap cache and buffers): the page cache adds a
//! folio's pages to it as it inserts the folio, with no LRU batch in
//! between. Its per-CPU deltas (up to the vmstat threshold per CPU) are
//! folded into the global value by writing /proc/sys/vm/stat_refresh
//! (root), so [`file_pages`] is exact at the moment it is read; whether
//! anything else in the system moved it meanwhile is the caller's concern.

use std::time::Duration;

use super::case::Stop;
use crate::kvm::caps::Lack;

/// Writing to it folds every CPU's pending vmstat deltas (root only).
const STAT_REFRESH: &str = "/proc/sys/vm/stat_refresh";

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

/// Pages in the page cache (`nr_file_pages` of /proc/vmstat), with every
/// CPU's pending delta folded in first. Skips, naming stat_refresh, where
/// the deltas cannot be folded (not root, or a kernel without it): the
/// value would then be off by up to a vmstat threshold per CPU.
pub fn file_pages() -> Result<u64, Stop> {
    std::fs::write(STAT_REFRESH, "1").map_err(|e| {
        Stop::lacking(
            Lack::Env(STAT_REFRESH.into()),
            format!("writing it to fold the per-CPU vmstat deltas: {e}"),
        )
    })?;
    let text = std::fs::read_to_string("/proc/vmstat")
        .map_err(|e| Stop::Fail(format!("read /proc/vmstat: {e}")))?;
    parse_count(&text, "nr_file_pages")
        .ok_or_else(|| Stop::Fail("/proc/vmstat has no `nr_file_pages` line".into()))
}

/// How many times [`agreed`] measures one change at most, and how many of
/// its measurements must be equal.
pub const TRIES: usize = 9;
pub const AGREE: usize = 3;

/// Measures one change of a system-wide counter until [`AGREE`] results
/// are equal, at most [`TRIES`] times: `Ok(value)` they agree on, or
/// `Err(every result)` when none did. A system-wide counter also moves with
/// whatever else the system does at the time; in a quiet guest that is
/// rare, so the same value comes back at once, while a busy host may never
/// give the same value three times (and then the counter cannot tell).
pub fn agreed<E>(mut measure: impl FnMut() -> Result<i64, E>) -> Result<Result<i64, Vec<i64>>, E> {
    let mut seen = Vec::with_capacity(TRIES);
    while seen.len() < TRIES {
        let v = measure()?;
        seen.push(v);
        if seen.iter().filter(|&&s| s == v).count() == AGREE {
            return Ok(Ok(v));
        }
    }
    Ok(Err(seen))
}

/// `name N` from vmstat text.
fn parse_count(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
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
    Ok(names.iter().map(|n| parse_count(&text, n)).collect())
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
    use super::{agreed, parse_count, parse_kib, AGREE, TRIES};

    #[test]
    fn reads_a_field_in_kib() {
        let t = "MemTotal:        2030596 kB\nUnevictable:        1234 kB\nMlocked: 0 kB\n";
        assert_eq!(parse_kib(t, "Unevictable"), Some(1234));
        assert_eq!(parse_kib(t, "MemTotal"), Some(2030596));
        assert_eq!(parse_kib(t, "Unevict"), None);
        assert_eq!(parse_kib(t, "Missing"), None);
    }

    #[test]
    fn reads_a_vmstat_count() {
        let t = "nr_free_pages 123\nnr_file_pages 4567\nnr_file_pages_x 1\n";
        assert_eq!(parse_count(t, "nr_file_pages"), Some(4567));
        assert_eq!(parse_count(t, "nr_free_pages"), Some(123));
        assert_eq!(parse_count(t, "nr_file"), None);
        assert_eq!(parse_count(t, "missing"), None);
    }

    #[test]
    fn agreement_stops_at_the_third_equal_result() {
        let mut results = [1, 7, 1, 2, 1, 7, 7].into_iter();
        let mut calls = 0;
        let got = agreed(|| -> Result<i64, ()> {
            calls += 1;
            Ok(results.next().unwrap())
        });
        assert_eq!(got, Ok(Ok(1)));
        assert_eq!(calls, 5);
    }

    #[test]
    fn no_agreement_returns_every_result() {
        let mut n = 0;
        let got = agreed(|| -> Result<i64, ()> {
            n += 1;
            Ok(n % 5)
        });
        let Ok(Err(all)) = got else { panic!("{got:?}") };
        assert_eq!(all.len(), TRIES);
        assert!(all
            .iter()
            .all(|v| all.iter().filter(|&w| w == v).count() < AGREE));
    }

    #[test]
    fn a_failed_measurement_stops_at_once() {
        let mut calls = 0;
        let got: Result<Result<i64, Vec<i64>>, &str> = agreed(|| {
            calls += 1;
            if calls == 2 {
                Err("broken")
            } else {
                Ok(0)
            }
        });
        assert_eq!(got, Err("broken"));
        assert_eq!(calls, 2);
    }
}
