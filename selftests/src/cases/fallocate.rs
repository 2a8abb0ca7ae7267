//! fallocate() on guest_memfd: allocate and punch, alignment, EOF, modes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::case::{ensure, expect_errno, expect_ok, fail, Case, Stop, TestResult, Tx};
use crate::harness::isolate::catch_signal;
use crate::harness::meminfo::{slack_kib, unevictable_kib};
use crate::kvm::caps::Need;
use crate::kvm::{errno_name, FALLOC_KEEP_SIZE, FALLOC_PUNCH_HOLE};

pub const CASES: &[Case] = &[
    case!(allocate_aligned, needs: &[Need::GmemCreate]),
    case!(unaligned_einval, needs: &[Need::GmemCreate]),
    case!(allocate_past_eof_einval, needs: &[Need::GmemCreate]),
    case!(punch_past_eof_ok, needs: &[Need::GmemCreate]),
    case!(bad_mode_eopnotsupp, needs: &[Need::GmemCreate]),
    case!(punch_unaligned_pairs_einval, needs: &[Need::GmemCreate]),
    case!(signal_stops_allocation_with_eintr, needs: &[Need::GmemCreate]),
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
