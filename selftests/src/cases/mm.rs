//! The core memory manager acting on guest_memfd pages behind KVM's back:
//! compaction, which must leave them where they are, and memory failure,
//! which must take a poisoned page away from the guest.
//!
//! KVM maps guest_memfd pages into the guest by pfn with no MMU notifier,
//! so a page that moved would leave the guest on the old one. Upstream
//! (6.8+) keeps compaction away from these pages altogether (the mapping
//! is unmovable; 6.12 calls it inaccessible, and compaction does not even
//! isolate its folios). 6.1 has no such mapping flag: compaction isolates
//! the folios and the series' kvm_gmem_migrate_folio() refuses to move
//! them. What both promise, and what the compaction case checks, is that
//! the guest keeps its data and the file keeps its pages.
//!
//! On memory failure guest_memfd zaps the poisoned page from the guest
//! (between an invalidation's begin and end) and leaves it in the file,
//! marked poisoned: what to do about it is userspace's decision. The
//! guest's next access to that gfn fails KVM_RUN with EHWPOISON and
//! KVM_EXIT_MEMORY_FAULT (upstream's kvm_faultin_pfn_private() passes
//! kvm_gmem_get_pfn()'s -EHWPOISON on). Userspace recovers by punching
//! the page out of the file, after which the page can be unpoisoned and
//! the gfn reads a fresh zero page.

use std::path::Path;
use std::time::Duration;

use crate::cases::guest::Exit;
use crate::cases::pageops::{
    check_exit, expect_range, fill_range, Rig, DATA_BASE, DATA_END, PORT_CHECK_BAD, PORT_CHECK_OK,
};
use crate::harness::case::{ensure, fail, Case, OrFail, Stop, TestResult, Tx};
use crate::harness::hwpoison::Injector;
use crate::harness::isolate::exits_within;
use crate::harness::meminfo;
use crate::harness::pageflags::{self, GMEM_CLEAR, GMEM_SET, KPF_HWPOISON};
use crate::kvm::caps::{AccessMode, Lack, Need};
use crate::kvm::{errno_name, GmemFile, KVM_MEMORY_EXIT_FLAG_PRIVATE};

pub const CASES: &[Case] = &[
    case!(compaction_keeps_guest_data, needs: &[Need::GuestMemfd, Need::UserMemory2, Need::GuestAccess]),
    case!(poisoned_page_leaves_the_guest, needs: &[Need::GuestMemfd, Need::UserMemory2, Need::PrivateAttr]),
];

const COMPACT_MEMORY: &str = "/proc/sys/vm/compact_memory";
const UNEVICTABLE_ALLOWED: &str = "/proc/sys/vm/compact_unevictable_allowed";

/// How long a fallocate() may take before the case calls it stuck: it
/// returns in milliseconds, unless a lock was left held or the page cache
/// is inconsistent, when it never returns.
const STUCK: Duration = Duration::from_secs(10);

/// What compaction did, as /proc/vmstat counts it (diagnostics only: what
/// it attempts depends on where pages sit and on the kernel).
const COMPACTION_COUNTERS: [&str; 5] = [
    "compact_migrate_scanned",
    "compact_isolated",
    "pgmigrate_success",
    "pgmigrate_fail",
    "compact_fail",
];

/// The byte the guest writes into page `i`: distinct for 255 pages, never 0.
fn pattern(i: u64) -> u8 {
    (i % 255 + 1) as u8
}

/// The guest fills page `i` of the slot at DATA_BASE with `pattern(i)`.
fn fill_pages(rig: &mut Rig, pages: impl Iterator<Item = u64>, limit: Duration) -> TestResult {
    let p = rig.page;
    for i in pages {
        fill_range(
            &mut rig.vcpus[0],
            DATA_BASE + i * p,
            p,
            pattern(i),
            limit,
            || format!("guest fill of page {i}"),
        )?;
    }
    Ok(())
}

/// The guest reads every byte of each page `i` and finds `pattern(i)`.
fn check_pages(
    rig: &mut Rig,
    pages: impl Iterator<Item = u64>,
    limit: Duration,
    when: &str,
) -> TestResult {
    let p = rig.page;
    for i in pages {
        expect_range(
            &mut rig.vcpus[0],
            DATA_BASE + i * p,
            p,
            pattern(i),
            limit,
            || format!("{when}: page {i}"),
        )?;
    }
    Ok(())
}

/// Runs a fallocate() (`call`, returning its errno or 0) in a throwaway
/// child, so that a call that never returns fails the case instead of
/// hanging it; failures name `what`.
fn fallocate_returns(what: &str, call: impl FnOnce() -> i32) -> TestResult {
    match exits_within(STUCK, call).or_fail("fork for the fallocate() probe")? {
        Some(0) => Ok(()),
        Some(code) if code > 0 => fail(format!("{what}: {}", errno_name(code))),
        Some(_) => fail(format!("{what}: the probe process died")),
        None => fail(format!(
            "{what} did not return within {}s: stuck in the kernel",
            STUCK.as_secs()
        )),
    }
}

/// Every page the guest can reach holds its own pattern; the host compacts
/// all memory (/proc/sys/vm/compact_memory). The guest must then read every
/// pattern back, through the mappings it had and again after KVM rebuilt
/// them from the file, and allocating over the whole file must still work:
/// a page that compaction moved, or believes it moved, shows up as wrong
/// data, or as a page cache entry that no longer belongs to the file (a
/// page cache lookup that loops, which the allocation probe reports).
///
/// Whether compaction tries the file's pages at all is up to it: it moves
/// pages only into partly used movable pageblocks, and in an idle guest,
/// where free memory is whole free blocks, it often finds none and stops
/// the zone at the first page it cannot place (migrate_pages() -ENOMEM).
/// On 6.1 this case therefore reaches kvm_gmem_migrate_folio() on some
/// boots only; it never fails because of that.
fn compaction_keeps_guest_data(tx: &Tx) -> TestResult {
    if !Path::new(COMPACT_MEMORY).exists() {
        return Err(Stop::lacking(
            Lack::Env("CONFIG_COMPACTION".into()),
            format!("no {COMPACT_MEMORY}: this kernel cannot compact memory"),
        ));
    }
    let limit = tx.inner_limit(Duration::from_secs(10));
    let mode = tx.access_mode()?;
    let p = tx.page();
    // As many pages as the real-mode guest reaches, for as many chances
    // as possible that compaction's scanner meets one of them.
    let pages = (DATA_END - DATA_BASE) / p;
    let mut rig = Rig::new(tx, mode, pages, 1)?;
    let slot = rig.region(1, DATA_BASE, pages, 0);
    rig.add(&slot)?;
    tx.diag(format!("access mode {}, {pages} pages", rig.mode_name()));
    fill_pages(&mut rig, 0..pages, limit)?;

    // 6.1 compacts unevictable pages (guest_memfd's) only while this is 1.
    if let Ok(v) = std::fs::read_to_string(UNEVICTABLE_ALLOWED) {
        tx.diag(format!("{UNEVICTABLE_ALLOWED} = {}", v.trim()));
    }
    let before = meminfo::vmstat(&COMPACTION_COUNTERS)?;
    let t = std::time::Instant::now();
    std::fs::write(COMPACT_MEMORY, "1\n").or_fail(&format!("write 1 to {COMPACT_MEMORY}"))?;
    tx.diag(format!("compaction took {} ms", t.elapsed().as_millis()));
    let after = meminfo::vmstat(&COMPACTION_COUNTERS)?;
    tx.diag(format!("compaction: {}", counter_deltas(&before, &after)));

    check_pages(
        &mut rig,
        0..pages,
        limit,
        "after compaction, through the guest's mappings",
    )?;
    let gmem = &rig.gmem;
    fallocate_returns("allocating over the whole file after compaction", || {
        errno_of(gmem.allocate(0, gmem.size))
    })?;
    rig.rebuild(&[slot])?;
    check_pages(
        &mut rig,
        0..pages,
        limit,
        "after compaction, once KVM mapped the pages again from the file",
    )
}

/// `name +delta` for each of COMPACTION_COUNTERS the kernel counts.
fn counter_deltas(before: &[Option<u64>], after: &[Option<u64>]) -> String {
    let moved: Vec<String> = COMPACTION_COUNTERS
        .iter()
        .zip(before.iter().zip(after))
        .filter_map(|(n, (b, a))| Some(format!("{n} +{}", (*a)?.saturating_sub((*b)?))))
        .collect();
    if moved.is_empty() {
        "no event counters in /proc/vmstat (CONFIG_VM_EVENT_COUNTERS off)".into()
    } else {
        moved.join(", ")
    }
}

fn errno_of(r: crate::kvm::SysResult<()>) -> i32 {
    r.map_or_else(|e| e.errno(), |()| 0)
}

/// Pages of the memory failure case's file, all bound; the poisoned one
/// has a neighbour on each side and is not page 0 (an invalidation that
/// ends one page early would then cover nothing, not everything).
const MF_PAGES: u64 = 4;
const POISONED: u64 = 2;

/// A guest_memfd page, mapped by the guest with a pattern in it, is
/// poisoned as a memory failure would (hwpoison injector). The guest must
/// lose it: its next read of that gfn fails KVM_RUN with EHWPOISON and
/// KVM_EXIT_MEMORY_FAULT for that gfn (private, one page), while the other
/// pages keep their data. Then userspace's recovery must work: punching
/// the page returns, releases the last reference to it (unpoison succeeds
/// only then) and the guest reads a fresh zero page there.
fn poisoned_page_leaves_the_guest(tx: &Tx) -> TestResult {
    let inj = Injector::open()?;
    pageflags::available()?;
    let limit = tx.inner_limit(Duration::from_secs(10));
    let p = tx.page();
    let poisoned = Poisoned::new(&inj);
    let mut rig = Rig::new(tx, AccessMode::Private, MF_PAGES, 1)?;
    let slot = rig.region(1, DATA_BASE, MF_PAGES, 0);
    rig.add(&slot)?;
    let pfn = find_pfn(tx, &rig.gmem, POISONED)?;
    fill_pages(&mut rig, 0..MF_PAGES, limit)?;
    check_pages(&mut rig, 0..MF_PAGES, limit, "before the memory failure")?;

    let mapped = rig.vm.stat("pages_4k").or_fail("VM statistic pages_4k")?;
    poison(tx, &inj, &rig.gmem, pfn, &poisoned)?;
    let unmapped = rig.vm.stat("pages_4k").or_fail("VM statistic pages_4k")?;
    expect_one_unmapped(tx, mapped, unmapped)?;
    let gpa = DATA_BASE + POISONED * p;
    let exit = check_exit(&mut rig.vcpus[0], gpa, p, pattern(POISONED), limit)
        .or_fail("guest read of the poisoned page")?;
    expect_hwpoison_exit(exit, gpa, p, limit)?;
    let others = (0..MF_PAGES).filter(|&i| i != POISONED);
    check_pages(&mut rig, others, limit, "after the memory failure")?;

    let gmem = &rig.gmem;
    fallocate_returns("PUNCH_HOLE of the poisoned page", || {
        errno_of(gmem.punch(POISONED * p, p))
    })?;
    poisoned.unpoison()?;
    expect_range(&mut rig.vcpus[0], gpa, p, 0, limit, || {
        "the poisoned page's gfn after PUNCH_HOLE (a new page)".to_string()
    })?;
    fill_pages(&mut rig, POISONED..POISONED + 1, limit)?;
    check_pages(&mut rig, 0..MF_PAGES, limit, "after the recovery")
}

/// Allocates page `index` of the file alone and finds its pfn: the one
/// page that became an unevictable page cache page meanwhile. Retries a
/// few times when other pages did too (the page is punched out again).
fn find_pfn(tx: &Tx, gmem: &GmemFile, index: u64) -> Result<u64, Stop> {
    let p = tx.page();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let found = pageflags::pages_gained_by(p, || {
            gmem.allocate(index * p, p)
                .or_fail(&format!("allocate page {index} of the file"))
        })?;
        if let [pfn] = found[..] {
            tx.diag(format!("file page {index} is pfn {pfn:#x}"));
            return Ok(pfn);
        }
        seen.push(found.len());
        gmem.punch(index * p, p)
            .or_fail(&format!("punch page {index} to look again"))?;
    }
    fail(format!(
        "no single pfn for file page {index}: the pages that became unevictable page cache \
         pages while it was allocated numbered {seen:?} in three tries (another process \
         adds such pages, or the page never reached the LRU)"
    ))
}

/// Poisons `pfn`, with the injector restricted to pages of files on the
/// guest_memfd's device that look like guest_memfd pages, and checks that
/// the page is poisoned now.
fn poison(tx: &Tx, inj: &Injector, gmem: &GmemFile, pfn: u64, poisoned: &Poisoned) -> TestResult {
    let dev = gmem.fstat().or_fail("fstat(guest_memfd)")?.st_dev;
    let corrupted = meminfo::hardware_corrupted_kib()?;
    {
        // PG_hwpoison is already set when memory_failure() checks the
        // filter again, so the mask leaves it out.
        let _only_gmem =
            inj.only_files_on(dev, GMEM_SET | (GMEM_CLEAR & !KPF_HWPOISON), GMEM_SET)?;
        poisoned.arm(pfn);
        // memory_failure() reports the page as not recovered (EBUSY): the
        // file keeps it, so its page cache reference remains.
        match inj.poison(pfn) {
            Ok(()) => tx.diag(format!("corrupt-pfn {pfn:#x}: accepted")),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => tx.diag(format!(
                "corrupt-pfn {pfn:#x}: EBUSY (page kept by its file)"
            )),
            Err(e) => return fail(format!("write {pfn:#x} to hwpoison/corrupt-pfn: {e}")),
        }
    }
    tx.diag(format!(
        "HardwareCorrupted {} -> {} kB",
        corrupted.unwrap_or(0),
        meminfo::hardware_corrupted_kib()?.unwrap_or(0)
    ));
    let flags = pageflags::flags_of(pfn)?;
    ensure(flags & KPF_HWPOISON != 0, || {
        format!(
            "pfn {pfn:#x} is not poisoned (flags {flags:#x}): the injector's filter refused it, \
             so it was no guest_memfd page and the pfn search found the wrong one"
        )
    })
}

/// KVM's count of 4 KiB mappings (`pages_4k`) before and after the memory
/// failure: the guest's mapping of exactly the poisoned page must be gone
/// (guest_memfd invalidates the poisoned folio's range, one page here), not
/// none and not a neighbour's as well.
fn expect_one_unmapped(tx: &Tx, before: Option<u64>, after: Option<u64>) -> TestResult {
    let (Some(b), Some(a)) = (before, after) else {
        tx.diag("no pages_4k VM statistic: the unmapping is checked by the guest's access only");
        return Ok(());
    };
    tx.diag(format!("pages_4k {b} -> {a}"));
    ensure(a + 1 == b, || {
        format!(
            "KVM held {b} 4 KiB mappings before the memory failure and {a} after: it must \
             drop exactly the poisoned page's"
        )
    })
}

/// The guest's read of the poisoned page must end in KVM_EXIT_MEMORY_FAULT
/// with EHWPOISON for exactly that page.
fn expect_hwpoison_exit(exit: Exit, gpa: u64, size: u64, limit: Duration) -> TestResult {
    let private = KVM_MEMORY_EXIT_FLAG_PRIVATE as u64;
    match exit {
        Exit::MemoryFault(m) => ensure(
            m.errno == libc::EHWPOISON && m.gpa == gpa && m.size == size && m.flags == private,
            || {
                format!(
                    "guest read of the poisoned page: {m}, expected EHWPOISON, gpa {gpa:#x} \
                     size {size:#x} flags {private:#x} (PRIVATE)"
                )
            },
        ),
        Exit::Io {
            port: PORT_CHECK_OK,
            ..
        } => fail(
            "the guest still reads its data from the poisoned page: the memory failure left \
             KVM's mapping of it in place",
        ),
        Exit::Io {
            port: PORT_CHECK_BAD,
            value,
        } => fail(format!(
            "the guest reads {value:#x} in the poisoned page instead of faulting"
        )),
        Exit::TimedOut => fail(format!(
            "the guest's read of the poisoned page made no progress for {:.1}s: the fault \
             retries for ever (an invalidation left in progress?)",
            limit.as_secs_f64()
        )),
        other => fail(format!("guest read of the poisoned page: {other:?}")),
    }
}

/// The pfn the case poisoned, unpoisoned on drop if the case did not get
/// that far. Declared before the VM and file, so that it drops after them:
/// the file's release takes the page out of the page cache, without which
/// unpoison refuses.
struct Poisoned<'a> {
    inj: &'a Injector,
    pfn: std::cell::Cell<Option<u64>>,
}

impl<'a> Poisoned<'a> {
    fn new(inj: &'a Injector) -> Poisoned<'a> {
        Poisoned {
            inj,
            pfn: std::cell::Cell::new(None),
        }
    }

    fn arm(&self, pfn: u64) {
        self.pfn.set(Some(pfn));
    }

    /// Unpoisons the page once the file has let go of it; unpoison refuses
    /// (EBUSY) while anything else holds a reference to the page.
    fn unpoison(&self) -> TestResult {
        let Some(pfn) = self.pfn.take() else {
            return fail("no page was poisoned");
        };
        if let Err(e) = self.inj.unpoison(pfn) {
            return fail(format!(
                "unpoison-pfn {pfn:#x} after PUNCH_HOLE took the page out of the file: {e} \
                 (a reference to the poisoned page was not dropped)"
            ));
        }
        let flags = pageflags::flags_of(pfn)?;
        ensure(flags & KPF_HWPOISON == 0, || {
            format!("pfn {pfn:#x} still poisoned after unpoison-pfn (flags {flags:#x})")
        })
    }
}

impl Drop for Poisoned<'_> {
    fn drop(&mut self) {
        if let Some(pfn) = self.pfn.take() {
            // Best effort: a page something still holds stays poisoned.
            let _ = self.inj.unpoison(pfn);
        }
    }
}
