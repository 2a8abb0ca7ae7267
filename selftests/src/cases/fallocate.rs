//! fallocate() on guest_memfd: allocate and punch, alignment, EOF, modes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::case::{
    ensure, expect_errno, expect_ok, fail, Case, OrFail, Stop, TestResult, Tx,
};
use crate::harness::isolate::catch_signal;
use crate::harness::meminfo::{agreed, file_pages, slack_kib, unevictable_kib, AGREE};
use crate::kvm::caps::{Lack, Need};
use crate::kvm::{errno_name, GmemFile, FALLOC_KEEP_SIZE, FALLOC_PUNCH_HOLE};

pub const CASES: &[Case] = &[
    case!(allocate_aligned, needs: &[Need::GmemCreate]),
    case!(unaligned_einval, needs: &[Need::GmemCreate]),
    case!(allocate_past_eof_einval, needs: &[Need::GmemCreate]),
    case!(punch_past_eof_ok, needs: &[Need::GmemCreate]),
    case!(bad_mode_eopnotsupp, needs: &[Need::GmemCreate]),
    case!(punch_unaligned_pairs_einval, needs: &[Need::GmemCreate]),
    case!(signal_stops_allocation_with_eintr, needs: &[Need::GmemCreate]),
    case!(times_advance_only_on_success, needs: &[Need::GmemCreate]),
    case!(allocates_exactly_the_range, needs: &[Need::GmemCreate]),
];

const PAGES: u64 = 4;

fn allocate_aligned(tx: &Tx) -> TestResult {
    let p = tx.page();
    let (_vm, g) = tx.vm_with_gmem(PAGES, 0)?;
    expect_ok("allocate the whole file", g.allocate(0, PAGES * p))?;
    expect_ok("allocate page 1 again", g.allocate(p, p))?;
    expect_ok("allocate the last page", g.allocate((PAGES - 1) * p, p))?;
    expect_ok("punch it all", g.punch(0, PAGES * p))?;
    expect_ok("allocate after punching", g.allocate(0, PAGES * p))?;
    Ok(())
}

fn unaligned_einval(tx: &Tx) -> TestResult {
    let p = tx.page();
    let (_vm, g) = tx.vm_with_gmem(PAGES, 0)?;
    expect_errno(
        "allocate at offset page-1",
        g.allocate(p - 1, p),
        libc::EINVAL,
    )?;
    expect_errno("allocate at offset 1", g.allocate(1, p), libc::EINVAL)?;
    expect_errno("allocate length page-1", g.allocate(0, p - 1), libc::EINVAL)?;
    expect_errno("allocate length page+1", g.allocate(0, p + 1), libc::EINVAL)?;
    expect_errno("punch length page-1", g.punch(p, p - 1), libc::EINVAL)?;
    Ok(())
}

fn allocate_past_eof_einval(tx: &Tx) -> TestResult {
    let p = tx.page();
    let total = PAGES * p;
    let (_vm, g) = tx.vm_with_gmem(PAGES, 0)?;
    expect_errno(
        "allocate one page at EOF",
        g.allocate(total, p),
        libc::EINVAL,
    )?;
    expect_errno(
        "allocate one page past EOF",
        g.allocate(total + p, p),
        libc::EINVAL,
    )?;
    expect_errno(
        "allocate straddling EOF",
        g.allocate(total - p, 2 * p),
        libc::EINVAL,
    )?;
    expect_errno(
        "allocate more than the file",
        g.allocate(0, total + p),
        libc::EINVAL,
    )?;
    Ok(())
}

fn punch_past_eof_ok(tx: &Tx) -> TestResult {
    let p = tx.page();
    let total = PAGES * p;
    let (_vm, g) = tx.vm_with_gmem(PAGES, 0)?;
    expect_ok("allocate the file", g.allocate(0, total))?;
    expect_ok("punch one page at EOF", g.punch(total, p))?;
    expect_ok("punch one page past EOF", g.punch(total + p, p))?;
    expect_ok("punch straddling EOF", g.punch(total - p, 2 * p))?;
    Ok(())
}

fn bad_mode_eopnotsupp(tx: &Tx) -> TestResult {
    let p = tx.page();
    let (_vm, g) = tx.vm_with_gmem(PAGES, 0)?;
    expect_errno(
        "PUNCH_HOLE without KEEP_SIZE",
        g.fallocate(FALLOC_PUNCH_HOLE, 0, p),
        libc::EOPNOTSUPP,
    )?;
    expect_errno(
        "allocate without KEEP_SIZE (mode 0)",
        g.fallocate(0, 0, p),
        libc::EOPNOTSUPP,
    )?;
    expect_errno(
        "ZERO_RANGE|KEEP_SIZE (mode unknown to guest_memfd)",
        g.fallocate(libc::FALLOC_FL_ZERO_RANGE | FALLOC_KEEP_SIZE, 0, p),
        libc::EOPNOTSUPP,
    )?;
    expect_errno(
        "undefined mode bit 0x1000|KEEP_SIZE",
        g.fallocate(0x1000 | FALLOC_KEEP_SIZE, 0, p),
        libc::EOPNOTSUPP,
    )?;
    Ok(())
}

/// Ten (offset, len) punch requests with an unaligned offset or length.
fn punch_unaligned_pairs_einval(tx: &Tx) -> TestResult {
    let p = tx.page();
    let (_vm, g) = tx.vm_with_gmem(PAGES, 0)?;
    let pairs = [
        (0, 1),
        (0, p - 1),
        (0, p + 1),
        (1, 1),
        (1, p - 1),
        (1, p),
        (1, p + 1),
        (p, 1),
        (p, p - 1),
        (p, p + 1),
    ];
    for (off, len) in pairs {
        expect_errno(
            &format!("punch offset {off:#x} len {len:#x}"),
            g.punch(off, len),
            libc::EINVAL,
        )?;
    }
    Ok(())
}

/// SIGALRMs delivered while [`Alarms`] was armed.
static ALARMS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_alarm(_: libc::c_int) {
    ALARMS.fetch_add(1, Ordering::Relaxed);
}

/// SIGALRM every `period` (ITIMER_REAL), caught without SA_RESTART so a
/// system call it interrupts returns EINTR; disarmed on drop.
struct Alarms;

impl Alarms {
    fn start(period: Duration) -> Result<Alarms, Stop> {
        ALARMS.store(0, Ordering::Relaxed);
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: period.as_micros() as libc::suseconds_t,
        };
        let it = libc::itimerval {
            it_interval: tv,
            it_value: tv,
        };
        let fail = |e: std::io::Error| Stop::Fail(format!("arming SIGALRM every {period:?}: {e}"));
        // The handler only bumps an atomic (async-signal-safe).
        catch_signal(libc::SIGALRM, count_alarm).map_err(fail)?;
        // SAFETY: setitimer gets a valid pointer to a local.
        if unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) } != 0 {
            return Err(fail(std::io::Error::last_os_error()));
        }
        Ok(Alarms)
    }

    fn delivered(&self) -> u64 {
        ALARMS.load(Ordering::Relaxed)
    }
}

impl Drop for Alarms {
    fn drop(&mut self) {
        // SAFETY: a zeroed itimerval disarms the timer; the handler stays
        // installed (harmless) in this forked case process.
        unsafe {
            let off: libc::itimerval = std::mem::zeroed();
            libc::setitimer(libc::ITIMER_REAL, &off, std::ptr::null_mut());
        }
    }
}

/// Allocating a large file while signals keep arriving: the allocation
/// loop stops at a pending signal with EINTR (as upstream's does, so the
/// caller can retry), and when fallocate() does report success the whole
/// range is allocated. The pages are counted in /proc/meminfo's
/// Unevictable (guest_memfd's mapping is unevictable).
fn signal_stops_allocation_with_eintr(tx: &Tx) -> TestResult {
    const MIB: u64 = 256;
    let p = tx.page();
    let pages = MIB * 1024 * 1024 / p;
    let want_kib = MIB * 1024;
    let slack_kib = slack_kib(p, MIB * 1024);
    let (_vm, g) = tx.vm_with_gmem(pages, 0)?;
    let before = unevictable_kib()?;

    let alarms = Alarms::start(Duration::from_millis(2))?;
    let start = Instant::now();
    let first = g.allocate(0, pages * p);
    let took = start.elapsed();
    let signals = alarms.delivered();
    drop(alarms);
    let grew = unevictable_kib()?.saturating_sub(before);
    tx.diag(format!(
        "fallocate of {MIB} MiB with SIGALRM every 2 ms: {} after {took:?}, {signals} signal(s) \
         caught, Unevictable grew by {grew} KiB",
        match &first {
            Ok(()) => "success".to_string(),
            Err(e) => errno_name(e.errno()),
        }
    ));
    match first {
        Ok(()) => ensure(grew + slack_kib >= want_kib, || {
            format!(
                "fallocate reported success, but only {grew} KiB of {want_kib} KiB were allocated \
                 ({signals} signal(s) arrived during the call): an interrupted allocation must \
                 return EINTR"
            )
        }),
        Err(e) if e.errno() == libc::EINTR => {
            ensure(signals > 0, || {
                "fallocate returned EINTR although no signal was caught".into()
            })?;
            ensure(grew < want_kib, || {
                format!("fallocate returned EINTR after allocating all {want_kib} KiB")
            })?;
            // Without signals the rest of the range is allocated, and what
            // the interrupted call allocated is kept.
            expect_ok(
                "fallocate of the whole file again, without signals",
                g.allocate(0, pages * p),
            )?;
            let total = unevictable_kib()?.saturating_sub(before);
            ensure(total + slack_kib >= want_kib, || {
                format!("after the retry Unevictable grew by {total} KiB of {want_kib} KiB")
            })
        }
        Err(e) => fail(format!(
            "fallocate of {MIB} MiB with signals arriving: expected success or EINTR, got {}",
            errno_name(e.errno())
        )),
    }
}

/// A file time, (seconds, nanoseconds): compares in time order.
type Stamp = (i64, i64);

/// The file's (mtime, ctime).
fn file_times(g: &GmemFile, when: &str) -> Result<(Stamp, Stamp), Stop> {
    let st = g.fstat().or_fail(&format!("fstat {when}"))?;
    Ok((
        (st.st_mtime, st.st_mtime_nsec),
        (st.st_ctime, st.st_ctime_nsec),
    ))
}

/// CLOCK_REALTIME_COARSE: the clock file times are taken from (the
/// kernel's current_time(), at timer-tick granularity).
fn coarse_now() -> Result<Stamp, Stop> {
    // SAFETY: a zeroed timespec is a valid value.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: ts is a valid out buffer.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } != 0 {
        return fail(format!(
            "clock_gettime(CLOCK_REALTIME_COARSE): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok((ts.tv_sec, ts.tv_nsec))
}

/// Waits until the coarse clock has moved past both of `times`, so that a
/// change made from now on gets a later time than either. A fixed sleep
/// would have to guess the tick; a kernel may also stamp a little ahead of
/// the coarse clock (6.13+ keeps a floor for fine-grained timestamps),
/// which waiting for the clock itself to pass the stamp covers.
fn wait_for_clock_past((mtime, ctime): (Stamp, Stamp)) -> TestResult {
    let stamp = mtime.max(ctime);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = coarse_now()?;
        if now > stamp {
            return Ok(());
        }
        if Instant::now() > deadline {
            return fail(format!(
                "CLOCK_REALTIME_COARSE stayed at {}.{:09} for 2 s, not past the file time {}.{:09}",
                now.0, now.1, stamp.0, stamp.1
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn show((mtime, ctime): (Stamp, Stamp)) -> String {
    format!(
        "mtime {}.{:09} ctime {}.{:09}",
        mtime.0, mtime.1, ctime.0, ctime.1
    )
}

/// As upstream's kvm_gmem_fallocate(), a successful allocation or punch
/// marks the file modified (file_modified(): mtime and ctime take the
/// current time), and a failed request leaves both alone: the update is
/// made only when the allocation or punch returned 0, so also an
/// allocation past EOF, refused inside the allocation path, changes
/// nothing. Before each request the clock moves on, so a missing update
/// cannot hide behind an unchanged tick.
fn times_advance_only_on_success(tx: &Tx) -> TestResult {
    let p = tx.page();
    let (_vm, g) = tx.vm_with_gmem(PAGES, 0)?;
    let created = file_times(&g, "after creation")?;

    wait_for_clock_past(created)?;
    expect_ok("allocate pages 0-1", g.allocate(0, 2 * p))?;
    let allocated = file_times(&g, "after the allocation")?;
    ensure(allocated.0 > created.0 && allocated.1 > created.1, || {
        format!(
            "a successful allocation a clock tick later left the times as they were at \
                 creation ({}), now {}: fallocate() must mark the file modified",
            show(created),
            show(allocated)
        )
    })?;

    wait_for_clock_past(allocated)?;
    expect_errno(
        "allocate one page at EOF",
        g.allocate(PAGES * p, p),
        libc::EINVAL,
    )?;
    expect_errno("allocate at offset 1", g.allocate(1, p), libc::EINVAL)?;
    expect_errno("punch length page-1", g.punch(0, p - 1), libc::EINVAL)?;
    let refused = file_times(&g, "after the refused requests")?;
    ensure(refused == allocated, || {
        format!(
            "refused fallocate() requests a clock tick later changed the times from {} to {}",
            show(allocated),
            show(refused)
        )
    })?;

    expect_ok("punch page 0", g.punch(0, p))?;
    let punched = file_times(&g, "after the punch")?;
    tx.diag(format!(
        "created: {}; allocated: {}; punched: {}",
        show(created),
        show(allocated),
        show(punched)
    ));
    ensure(punched.0 > allocated.0 && punched.1 > allocated.1, || {
        format!(
            "a successful punch a clock tick later left the times at {}, now {}: \
                 fallocate() must mark the file modified",
            show(allocated),
            show(punched)
        )
    })
}

/// Pages of the file [`allocates_exactly_the_range`] works on.
const COUNT_PAGES: u64 = 16;

/// One allocation to count: (pages allocated beforehand as (first, n),
/// the range allocated as (first, n), the pages it must add, what it is).
type Shape = (Option<(u64, u64)>, (u64, u64), i64, &'static str);

const SHAPES: [Shape; 4] = [
    (None, (0, 1), 1, "one page at offset 0"),
    (None, (5, 3), 3, "pages 5-7"),
    (
        None,
        (11, COUNT_PAGES - 11),
        (COUNT_PAGES - 11) as i64,
        "pages 11 up to EOF",
    ),
    (
        Some((5, 3)),
        (0, COUNT_PAGES),
        COUNT_PAGES as i64 - 3,
        "the whole file, pages 5-7 already allocated",
    ),
];

/// Empties the file, allocates the shape's earlier pages, then counts
/// how many pages the page cache gained from the shape's allocation.
fn pages_added(g: &GmemFile, p: u64, (before, (first, n), _, what): Shape) -> Result<i64, Stop> {
    g.punch(0, COUNT_PAGES * p)
        .or_fail("punch the whole file")?;
    if let Some((f, m)) = before {
        g.allocate(f * p, m * p)
            .or_fail(&format!("allocate pages {f}..{} beforehand", f + m))?;
    }
    let start = file_pages()?;
    g.allocate(first * p, n * p)
        .or_fail(&format!("allocate {what}"))?;
    Ok(file_pages()? as i64 - start as i64)
}

/// fallocate() allocates exactly the pages of its range that are not
/// allocated yet: one page, a range inside the file, a range up to EOF,
/// and the whole file over pages allocated earlier. The count is the page
/// cache's (`nr_file_pages`, folded to the page), which guest_memfd folios
/// enter as they are allocated.
///
/// That counter is system-wide, so each allocation is measured until
/// three measurements agree: in a quiet guest the first three do, and
/// the check is exact (one page too few or too many fails); on a host
/// busy enough that no value comes back three times in nine tries the
/// counter cannot tell, and the case skips rather than guess.
fn allocates_exactly_the_range(tx: &Tx) -> TestResult {
    let p = tx.page();
    let (_vm, g) = tx.vm_with_gmem(COUNT_PAGES, 0)?;
    for shape in SHAPES {
        let (_, (first, n), want, what) = shape;
        match agreed(|| pages_added(&g, p, shape))? {
            Ok(got) => {
                tx.diag(format!("{what}: {got} page(s) added"));
                ensure(got == want, || {
                    format!(
                        "allocating {what} (pages {first}..{}) added {got} page(s) to the page \
                         cache ({AGREE} measurements agree), expected {want}",
                        first + n
                    )
                })?;
            }
            Err(all) => {
                return Err(Stop::lacking(
                    Lack::Env("quiet-page-cache".into()),
                    format!(
                        "nr_file_pages moved with other activity: allocating {what} counted \
                         {all:?} page(s), no value {AGREE} times"
                    ),
                ))
            }
        }
    }
    Ok(())
}
