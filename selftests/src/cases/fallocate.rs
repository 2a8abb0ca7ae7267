//! fallocate() on guest_memfd: allocate and punch, alignment, EOF, modes.

use crate::harness::case::{expect_errno, expect_ok, Case, TestResult, Tx};
use crate::kvm::caps::Need;
use crate::kvm::{FALLOC_KEEP_SIZE, FALLOC_PUNCH_HOLE};

pub const CASES: &[Case] = &[
    case!(allocate_aligned, needs: &[Need::GmemCreate]),
    case!(unaligned_einval, needs: &[Need::GmemCreate]),
    case!(allocate_past_eof_einval, needs: &[Need::GmemCreate]),
    case!(punch_past_eof_ok, needs: &[Need::GmemCreate]),
    case!(bad_mode_eopnotsupp, needs: &[Need::GmemCreate]),
    case!(punch_unaligned_pairs_einval, needs: &[Need::GmemCreate]),
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
