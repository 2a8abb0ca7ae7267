//! PUNCH_HOLE while memslots are bound to the file.

use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::cases::guest::{Guest, DATA_GPA};
use crate::cases::pageops::{expect_range, fill_range, Rig, DATA_BASE};
use crate::harness::case::{ensure, expect_ok, fail, Case, OrFail, TestResult, Tx};
use crate::kvm::caps::{AccessMode, Need};
use crate::kvm::{Mapping, Region, KVM_MEM_GUEST_MEMFD};

pub const CASES: &[Case] = &[
    case!(bound_range, needs: &[Need::GuestMemfd, Need::UserMemory2]),
    case!(unbound_range, needs: &[Need::GuestMemfd, Need::UserMemory2]),
    case!(bound_range_guest_sees_zero, needs: &[Need::GuestMemfd, Need::UserMemory2, Need::GuestAccess]),
    case!(private_page_reads_zero_after_punch, needs: &[Need::GuestMemfd, Need::UserMemory2, Need::PrivateAttr]),
    case!(multi_page_checked_page_by_page, needs: &[Need::GuestMemfd, Need::UserMemory2, Need::GuestAccess]),
];

const FILE_PAGES: u64 = 8;

fn slot(
    tx: &Tx,
    fd: i32,
    mem: &Mapping,
    slot: u32,
    gpa: u64,
    pages: u64,
    file_page: u64,
) -> Region {
    Region {
        slot,
        flags: KVM_MEM_GUEST_MEMFD,
        gpa,
        size: pages * tx.page(),
        uaddr: mem.addr(),
        gmem_offset: file_page * tx.page(),
        gmem_fd: fd as u32,
    }
}

/// Punching ranges a slot is bound to succeeds, before and after deletion.
fn bound_range(tx: &Tx) -> TestResult {
    let p = tx.page();
    let (vm, g) = tx.vm_with_gmem(FILE_PAGES, 0)?;
    let mem = Mapping::anon((FILE_PAGES * p) as usize).or_fail("mmap(anon)")?;
    let r = slot(tx, g.as_raw_fd(), &mem, 0, 0x10_0000, 4, 0);
    expect_ok("bind file pages 0..4", vm.set_region2(&r))?;
    expect_ok("allocate the file", g.allocate(0, FILE_PAGES * p))?;
    expect_ok("punch the whole bound range", g.punch(0, 4 * p))?;
    expect_ok("punch one page inside the bound range", g.punch(2 * p, p))?;
    expect_ok(
        "punch straddling bound and unbound pages",
        g.punch(3 * p, 2 * p),
    )?;
    expect_ok("re-allocate the bound range", g.allocate(0, 4 * p))?;
    expect_ok("delete the slot", vm.delete_region(&r))?;
    expect_ok("punch the formerly bound range", g.punch(0, 4 * p))?;
    Ok(())
}

/// Punching ranges no slot is bound to succeeds and leaves the binding usable.
fn unbound_range(tx: &Tx) -> TestResult {
    let p = tx.page();
    let (vm, g) = tx.vm_with_gmem(FILE_PAGES, 0)?;
    let mem = Mapping::anon((FILE_PAGES * p) as usize).or_fail("mmap(anon)")?;
    let r0 = slot(tx, g.as_raw_fd(), &mem, 0, 0x10_0000, 4, 0);
    expect_ok("bind file pages 0..4", vm.set_region2(&r0))?;
    expect_ok("allocate the file", g.allocate(0, FILE_PAGES * p))?;
    expect_ok("punch unbound pages 4..8", g.punch(4 * p, 4 * p))?;
    expect_ok("punch unbound page 6", g.punch(6 * p, p))?;
    let r1 = slot(tx, g.as_raw_fd(), &mem, 1, 0x20_0000, 4, 4);
    expect_ok("bind the punched pages 4..8 to slot 1", vm.set_region2(&r1))?;
    expect_ok("delete slot 0", vm.delete_region(&r0))?;
    expect_ok("punch the now unbound pages 0..4", g.punch(0, 4 * p))?;
    Ok(())
}

/// After punching a bound page the guest must see a fresh zero page, not
/// stale data through an old mapping; other pages keep their contents.
///
/// The zero check only sees a PUNCH_HOLE that skips the MMU invalidation
/// while the freed page still holds the old data: it is the hottest page on
/// the allocator's per-CPU free list, and any allocation before the guest's
/// read (a thread's stack faults, a pipe buffer) hands it out again zeroed,
/// so nothing may run between the punch and the next `touch` (see
/// `guest::Watchdog`). `private_page_reads_zero_after_punch` adds a check
/// that does not depend on what became of the freed page.
fn bound_range_guest_sees_zero(tx: &Tx) -> TestResult {
    let limit = tx.inner_limit(Duration::from_secs(10));
    let mut g = Guest::new(tx, FILE_PAGES, FILE_PAGES)?;
    let p = tx.page();
    let at = |page: u64| (page * p + 0x40) as u16;
    tx.diag(format!("access mode {}", g.mode_name()));

    let t = g.touch(at(1), 0xA5, limit)?;
    ensure(
        t == crate::cases::guest::Touch {
            found: 0,
            readback: 0xA5,
        },
        || format!("first touch of page 1: {t:?}, expected found 0, readback 0xa5"),
    )?;
    let t = g.touch(at(2), 0x3C, limit)?;
    ensure(t.found == 0 && t.readback == 0x3C, || {
        format!("first touch of page 2: {t:?}")
    })?;
    let t = g.touch(at(1), 0x5A, limit)?;
    ensure(t.found == 0xA5, || {
        format!(
            "page 1 lost its data before any punch: found {:#x}",
            t.found
        )
    })?;

    g.gmem
        .punch(p, p)
        .or_fail("punch page 1 (bound, mapped by the guest)")?;

    let t = g.touch(at(1), 0x77, limit)?;
    ensure(t.found == 0, || {
        format!("after punching page 1 the guest still reads {:#x} there (stale mapping not invalidated)", t.found)
    })?;
    let t = g.touch(at(2), 0x3D, limit)?;
    ensure(t.found == 0x3C, || {
        format!(
            "page 2 was not punched but now reads {:#x}, expected 0x3c",
            t.found
        )
    })?;
    if g.mode == Some(AccessMode::SharedMmap) {
        if let Some(m) = &g.gmem_map {
            let host = m.read(at(1) as usize);
            ensure(host == 0x77, || {
                format!("host mapping of page 1 reads {host:#x}, guest wrote 0x77")
            })?;
        }
    }
    Ok(())
}

const PATTERN: u8 = 0xA5;
const AFTER_PUNCH: u8 = 0x77;
const AFTER_REFAULT: u8 = 0x99;
const STALE: &str = "PUNCH_HOLE did not invalidate the bound range";

/// PRIVATE guest_memfd page, mapped in the guest (NPT/EPT) with a pattern in
/// it; the host punches it. The guest must then read 0 (a new zeroed page),
/// and its store after the punch must land in the file: once the host makes
/// KVM rebuild the mapping (slot deleted and re-added), the guest reads
/// that store back. A punch that frees the page but leaves KVM's mapping
/// shows up as the old pattern in the first read (freed page not reused
/// yet), or, when the allocator has already handed the freed page out
/// again zeroed, as a lost store: it went to the freed page, and the
/// rebuilt mapping finds a fresh page of the file instead.
fn private_page_reads_zero_after_punch(tx: &Tx) -> TestResult {
    let limit = tx.inner_limit(Duration::from_secs(10));
    let p = tx.page();
    let mut g = Guest::with_mode(tx, AccessMode::Private, FILE_PAGES, FILE_PAGES)?;
    let page = 3u64;
    let off = (page * p + 0x80) as u16;
    tx.diag(format!(
        "access mode {}; file page {page} at GPA {:#x}, byte {:#x}",
        g.mode_name(),
        DATA_GPA + page * p,
        off
    ));

    // Fault the page in: the guest's mapping of it now exists.
    let t = g.touch(off, PATTERN, limit)?;
    ensure(t.found == 0 && t.readback == PATTERN, || {
        format!("first touch of page {page}: {t:?}, expected found 0, readback {PATTERN:#x}")
    })?;

    // Nothing between the punch and the guest's next read, so the freed
    // page is as likely as possible to still hold the pattern.
    g.gmem
        .punch(page * p, p)
        .or_fail("PUNCH_HOLE|KEEP_SIZE over the page the guest mapped")?;

    let t = g.touch(off, AFTER_PUNCH, limit)?;
    ensure(t.found != PATTERN, || {
        format!(
            "guest still sees pre-punch data: {STALE} (read {PATTERN:#x} from the punched page)"
        )
    })?;
    ensure(t.found == 0, || {
        format!(
            "guest reads {:#x} from the punched page, expected 0: it maps a freed page \
             now used by someone else; {STALE}",
            t.found
        )
    })?;
    ensure(t.readback == AFTER_PUNCH, || {
        format!(
            "store after the punch read back {:#x}, expected {AFTER_PUNCH:#x}",
            t.readback
        )
    })?;

    // Make KVM drop and rebuild every mapping of the slot.
    g.unbind_data()
        .or_fail("delete the guest_memfd data slot")?;
    g.bind_data().or_fail("re-add the guest_memfd data slot")?;
    let t = g.touch(off, AFTER_REFAULT, limit)?;
    ensure(t.found == AFTER_PUNCH, || {
        format!(
            "guest's store after the punch is gone once KVM rebuilt the mapping (found {:#x}, \
             expected {AFTER_PUNCH:#x}): it went through a stale mapping to the freed page, not \
             to the page now in the file; {STALE}",
            t.found
        )
    })?;
    Ok(())
}

/// Punch ranges (first page, pages) of a 16-page file: one page at either
/// end, several in the middle, an odd-length run ending at EOF, all of it.
const PUNCH_RANGES: [(u64, u64); 6] = [(0, 1), (15, 1), (3, 4), (6, 1), (9, 7), (0, 16)];

/// Upstream's PUNCH_HOLE test, page by page: the guest writes a distinct
/// byte into every page of the file (all faulted in), the host punches a
/// multi-page range, and the guest must read zeros in exactly the punched
/// pages while every other page, in particular the ones either side of the
/// range, keeps its byte. Then the "precise" variant: only the target
/// range is faulted in before the punch. Off-by-one at either end of the
/// invalidation, or of the truncation, shows up on a boundary page.
fn multi_page_checked_page_by_page(tx: &Tx) -> TestResult {
    const PAGES: u64 = 16;
    let limit = tx.inner_limit(Duration::from_secs(10));
    let mode = tx.access_mode()?;
    let mut rig = Rig::new(tx, mode, PAGES, 1)?;
    let p = rig.page;
    let slot = rig.region(1, DATA_BASE, PAGES, 0);
    rig.add(&slot)?;
    tx.diag(format!("access mode {}", rig.mode_name()));
    let gpa = |pg: u64| DATA_BASE + pg * p;
    let val = |pg: u64, round: u64| 0x40 + (round as u8) * 0x10 + pg as u8;
    for (round, (first, n)) in PUNCH_RANGES.iter().copied().enumerate() {
        let round = round as u64 % 8;
        let at = |s: String| format!("punch of pages {first}..{}: {s}", first + n);
        let vcpu = &mut rig.vcpus[0];
        for pg in 0..PAGES {
            fill_range(vcpu, gpa(pg), p, val(pg, round), limit, || {
                at(format!("guest fill of page {pg}"))
            })?;
        }
        rig.gmem
            .punch(first * p, n * p)
            .or_fail(&at("PUNCH_HOLE".into()))?;
        let vcpu = &mut rig.vcpus[0];
        for pg in 0..PAGES {
            let punched = (first..first + n).contains(&pg);
            let want = if punched { 0 } else { val(pg, round) };
            expect_range(vcpu, gpa(pg), p, want, limit, || {
                at(format!(
                    "page {pg} ({})",
                    if punched {
                        "punched: stale data means the invalidation missed it"
                    } else {
                        "not punched: must keep its data"
                    }
                ))
            })?;
        }
        if let Some(m) = &rig.gmem_map {
            for pg in 0..PAGES {
                let punched = (first..first + n).contains(&pg);
                let want = if punched { 0 } else { val(pg, round) };
                if let Some(i) = m.first_ne((pg * p) as usize, p as usize, want) {
                    return fail(at(format!(
                        "host mapping of page {pg} reads {:#x} at {i:#x}, expected {want:#x}",
                        m.read(i)
                    )));
                }
            }
        }
        // Precise: punch everything, fault in only the target range, punch it.
        rig.gmem
            .punch(0, PAGES * p)
            .or_fail("PUNCH_HOLE of the whole file")?;
        let vcpu = &mut rig.vcpus[0];
        fill_range(vcpu, gpa(first), n * p, 0xE7, limit, || {
            at("guest fill of the range alone".into())
        })?;
        expect_range(vcpu, gpa(first), n * p, 0xE7, limit, || {
            at("range read back before the punch".into())
        })?;
        rig.gmem
            .punch(first * p, n * p)
            .or_fail(&at("PUNCH_HOLE (precise)".into()))?;
        expect_range(vcpu, gpa(first), n * p, 0, limit, || {
            at("precise: only the range was faulted in, it must read zero".into())
        })?;
    }
    Ok(())
}
