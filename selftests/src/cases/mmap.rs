//! mmap() of guest_memfd (GUEST_MEMFD_FLAG_MMAP, 6.18+).

use crate::caps::Need;
use crate::case::{ensure, expect_errno, fail, Case, OrFail, TestResult, Tx};
use crate::isolate::signal_name;
use crate::kvm::{dies_with_signal, Mapping, GUEST_MEMFD_FLAG_INIT_SHARED, GUEST_MEMFD_FLAG_MMAP};

const MMAP: u64 = GUEST_MEMFD_FLAG_MMAP;
const BOTH: u64 = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED;

pub const CASES: &[Case] = &[
    Case {
        area: "mmap",
        name: "without_mmap_flag_enodev",
        needs: &[Need::GmemCreate],
        run: without_mmap_flag_enodev,
    },
    Case {
        area: "mmap",
        name: "map_private_einval",
        needs: &[Need::GmemCreate, Need::GmemFlags(MMAP)],
        run: map_private_einval,
    },
    Case {
        area: "mmap",
        name: "no_init_shared_sigbus",
        needs: &[Need::GmemCreate, Need::GmemFlags(MMAP)],
        run: no_init_shared_sigbus,
    },
    Case {
        area: "mmap",
        name: "punched_pages_read_zero",
        needs: &[Need::GmemCreate, Need::GmemFlags(BOTH)],
        run: punched_pages_read_zero,
    },
    Case {
        area: "mmap",
        name: "past_eof_sigbus",
        needs: &[Need::GmemCreate, Need::GmemFlags(BOTH)],
        run: past_eof_sigbus,
    },
];

const PAGES: u64 = 4;

fn without_mmap_flag_enodev(tx: &Tx) -> TestResult {
    let (_vm, g) = tx.vm_with_gmem(PAGES, 0)?;
    expect_errno(
        "MAP_SHARED of a guest_memfd created without MMAP",
        g.mmap_shared((PAGES * tx.page()) as usize),
        libc::ENODEV,
    )
}

fn map_private_einval(tx: &Tx) -> TestResult {
    let (_vm, g) = tx.vm_with_gmem(PAGES, MMAP)?;
    let len = (PAGES * tx.page()) as usize;
    expect_errno(
        "MAP_PRIVATE of a guest_memfd",
        g.mmap(len, libc::MAP_PRIVATE),
        libc::EINVAL,
    )?;
    // The same file maps fine shared.
    g.mmap_shared(len).or_fail("MAP_SHARED of the same file")?;
    Ok(())
}

/// Accesses `off` of `m` in a throwaway child; the access must raise SIGBUS.
fn expect_sigbus(what: &str, m: &Mapping, off: usize, write: bool) -> TestResult {
    let sig = dies_with_signal(|| {
        if write {
            m.write(off, 0x42);
        } else {
            let _ = m.read(off);
        }
    })
    .or_fail("fork")?;
    match sig {
        Some(libc::SIGBUS) => Ok(()),
        Some(s) => fail(format!(
            "{what}: expected SIGBUS, died with {}",
            signal_name(s)
        )),
        None => fail(format!("{what}: expected SIGBUS, the access succeeded")),
    }
}

fn no_init_shared_sigbus(tx: &Tx) -> TestResult {
    let (_vm, g) = tx.vm_with_gmem(PAGES, MMAP)?;
    let m = g
        .mmap_shared((PAGES * tx.page()) as usize)
        .or_fail("mmap(MAP_SHARED)")?;
    expect_sigbus(
        "read of a page of an MMAP-only (not INIT_SHARED) file",
        &m,
        0,
        false,
    )?;
    expect_sigbus(
        "write to a page of an MMAP-only (not INIT_SHARED) file",
        &m,
        tx.page() as usize,
        true,
    )?;
    Ok(())
}

fn punched_pages_read_zero(tx: &Tx) -> TestResult {
    let p = tx.page() as usize;
    let (_vm, g) = tx.vm_with_gmem(PAGES, BOTH)?;
    let m = g
        .mmap_shared(PAGES as usize * p)
        .or_fail("mmap(MAP_SHARED)")?;
    ensure(m.first_ne(0, m.len(), 0).is_none(), || {
        "fresh mapping is not zero-filled".to_string()
    })?;
    m.fill(0, m.len(), 0xAA);
    // Punch pages 1 and 3.
    g.punch(p as u64, p as u64).or_fail("punch page 1")?;
    g.punch(3 * p as u64, p as u64).or_fail("punch page 3")?;
    for page in 0..PAGES as usize {
        let want = if page % 2 == 1 { 0 } else { 0xAA };
        if let Some(i) = m.first_ne(page * p, p, want) {
            return fail(format!(
                "page {page} byte {:#x} reads {:#x}, expected {want:#x} ({})",
                i - page * p,
                m.read(i),
                if want == 0 { "punched" } else { "kept" }
            ));
        }
    }
    // Punched pages can be written again.
    m.write(p, 0x11);
    ensure(m.read(p) == 0x11, || {
        "write to a punched page did not stick".to_string()
    })?;
    Ok(())
}

fn past_eof_sigbus(tx: &Tx) -> TestResult {
    let p = tx.page() as usize;
    let (_vm, g) = tx.vm_with_gmem(PAGES, BOTH)?;
    // Map twice the file: the second half is past EOF.
    let m = g
        .mmap_shared(2 * PAGES as usize * p)
        .or_fail("mmap(MAP_SHARED, 2x file size)")?;
    m.write(PAGES as usize * p - 1, 0x5A);
    ensure(m.read(PAGES as usize * p - 1) == 0x5A, || {
        "last byte before EOF not writable".to_string()
    })?;
    expect_sigbus(
        "read of the first page past EOF",
        &m,
        PAGES as usize * p,
        false,
    )?;
    expect_sigbus(
        "write to the last mapped page past EOF",
        &m,
        2 * PAGES as usize * p - 1,
        true,
    )?;
    Ok(())
}
