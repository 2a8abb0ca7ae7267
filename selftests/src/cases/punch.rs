//! PUNCH_HOLE while memslots are bound to the file.

use std::time::Duration;

use crate::caps::{AccessMode, Need};
use crate::case::{ensure, expect_ok, Case, OrFail, TestResult, Tx};
use crate::guest::Guest;
use crate::kvm::{Mapping, Region, KVM_MEM_GUEST_MEMFD};

pub const CASES: &[Case] = &[
    Case {
        area: "punch",
        name: "bound_range",
        needs: &[Need::GuestMemfd, Need::UserMemory2],
        run: bound_range,
    },
    Case {
        area: "punch",
        name: "unbound_range",
        needs: &[Need::GuestMemfd, Need::UserMemory2],
        run: unbound_range,
    },
    Case {
        area: "punch",
        name: "bound_range_guest_sees_zero",
        needs: &[Need::GuestMemfd, Need::UserMemory2, Need::GuestAccess],
        run: bound_range_guest_sees_zero,
    },
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
    let r = slot(tx, g.fd(), &mem, 0, 0x10_0000, 4, 0);
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
    let r0 = slot(tx, g.fd(), &mem, 0, 0x10_0000, 4, 0);
    expect_ok("bind file pages 0..4", vm.set_region2(&r0))?;
    expect_ok("allocate the file", g.allocate(0, FILE_PAGES * p))?;
    expect_ok("punch unbound pages 4..8", g.punch(4 * p, 4 * p))?;
    expect_ok("punch unbound page 6", g.punch(6 * p, p))?;
    let r1 = slot(tx, g.fd(), &mem, 1, 0x20_0000, 4, 4);
    expect_ok("bind the punched pages 4..8 to slot 1", vm.set_region2(&r1))?;
    expect_ok("delete slot 0", vm.delete_region(&r0))?;
    expect_ok("punch the now unbound pages 0..4", g.punch(0, 4 * p))?;
    Ok(())
}

/// After punching a bound page the guest must see a fresh zero page, not
/// stale data through an old mapping; other pages keep their contents.
fn bound_range_guest_sees_zero(tx: &Tx) -> TestResult {
    let limit = tx.inner_limit(Duration::from_secs(10));
    let mut g = Guest::new(tx, FILE_PAGES, FILE_PAGES)?;
    let p = tx.page();
    let at = |page: u64| (page * p + 0x40) as u16;
    tx.diag(format!("access mode {}", g.mode_name()));

    let t = g.touch(at(1), 0xA5, limit)?;
    ensure(
        t == crate::guest::Touch {
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
