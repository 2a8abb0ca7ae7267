//! Several memslots on one guest_memfd at nonzero offsets, and several
//! vCPUs each working on its own range (upstream's conversion test with
//! `-n` vCPUs and `-m` memslots).

use std::time::Duration;

use crate::cases::pageops::{expect_range, fill_range, on_each_vcpu, Rig, DATA_BASE};
use crate::harness::case::{fail, Case, OrFail, Stop, TestResult, Tx};
use crate::kvm::caps::Need;
use crate::kvm::{ename, Mapping};

const NEEDS: &[Need] = &[Need::GuestMemfd, Need::UserMemory2, Need::GuestAccess];

pub const CASES: &[Case] = &[
    case!(two_slots_one_file_at_offsets, needs: NEEDS),
    case!(vcpus_each_own_range, needs: NEEDS),
];

/// Checks through the host's mapping of the file (SharedMmap mode only).
fn host_file_page(
    m: Option<&Mapping>,
    page: u64,
    file_page: u64,
    want: u8,
    what: &str,
) -> TestResult {
    if let Some(m) = m {
        let off = (file_page * page) as usize;
        if let Some(i) = m.first_ne(off, page as usize, want) {
            return fail(format!(
                "{what}: the host's mapping of file page {file_page} reads {:#x} at byte {:#x}, \
                 expected {want:#x}",
                m.read(i),
                i - off
            ));
        }
    }
    Ok(())
}

/// Slot A: GPA 0x10000, 4 pages, file pages 6..10; slot B: GPA 0x40000,
/// 4 pages, file pages 1..5; file pages 0, 5, 10 and 11 are unbound.
/// Distinct bytes written through each slot must not alias (a fault that
/// ignores the slot's offset maps both slots onto the same file pages),
/// must land on the right file pages (host view in SharedMmap mode), and a
/// punch of file pages must zero exactly the GPAs bound to them in either
/// slot (an invalidation that drops the offset zaps the wrong gfns of the
/// second slot and leaves a stale mapping); stores after the punch survive
/// KVM rebuilding its mappings.
fn two_slots_one_file_at_offsets(tx: &Tx) -> TestResult {
    const A_GPA: u64 = DATA_BASE;
    const B_GPA: u64 = 0x40000;
    const A_FILE: u64 = 6;
    const B_FILE: u64 = 1;
    const N: u64 = 4;
    let limit = tx.inner_limit(Duration::from_secs(10));
    let mode = tx.access_mode()?;
    let mut rig = Rig::new(tx, mode, 12, 1)?;
    let p = rig.page;
    let a = rig.region(1, A_GPA, N, A_FILE);
    let b = rig.region(2, B_GPA, N, B_FILE);
    rig.add(&a)?;
    rig.add(&b)?;
    tx.diag(format!(
        "access mode {}; slot 1 at GPA {A_GPA:#x} on file pages {A_FILE}..{}, slot 2 at GPA \
         {B_GPA:#x} on file pages {B_FILE}..{}",
        rig.mode_name(),
        A_FILE + N,
        B_FILE + N
    ));
    // (slot name, GPA of page i, file page of page i)
    let pages: Vec<(&str, u64, u64, u64)> = (0..N)
        .map(|i| ("slot 1", i, A_GPA + i * p, A_FILE + i))
        .chain((0..N).map(|i| ("slot 2", i, B_GPA + i * p, B_FILE + i)))
        .collect();
    let first = |fp: u64| 0xA0 + fp as u8;
    for &(_, _, gpa, fp) in &pages {
        fill_range(&mut rig.vcpus[0], gpa, p, first(fp), limit, || {
            format!("guest fill of GPA {gpa:#x} (file page {fp})")
        })?;
    }
    for &(s, i, gpa, fp) in &pages {
        expect_range(&mut rig.vcpus[0], gpa, p, first(fp), limit, || {
            format!("{s} page {i} (file page {fp}) after every page was written: aliasing")
        })?;
        host_file_page(
            rig.gmem_map.as_ref(),
            p,
            fp,
            first(fp),
            &format!("{s} page {i}"),
        )?;
    }
    for unbound in [0, 5, 10, 11] {
        host_file_page(rig.gmem_map.as_ref(), p, unbound, 0, "unbound file page")?;
    }

    // Punch file page 7 (slot 1 page 1) and file pages 2..5 (slot 2 pages
    // 1..4) plus the unbound page 5 between the slots' ranges.
    rig.gmem.punch(7 * p, p).or_fail("PUNCH_HOLE file page 7")?;
    rig.gmem
        .punch(2 * p, 4 * p)
        .or_fail("PUNCH_HOLE file pages 2..6")?;
    let punched = |fp: u64| fp == 7 || (2..6).contains(&fp);
    for &(s, i, gpa, fp) in &pages {
        let want = if punched(fp) { 0 } else { first(fp) };
        expect_range(&mut rig.vcpus[0], gpa, p, want, limit, || {
            format!(
                "{s} page {i} (file page {fp}) after punching file pages 7 and 2..6: {}",
                if punched(fp) {
                    "punched, stale data means the invalidation missed this gfn"
                } else {
                    "not punched, must keep its data"
                }
            )
        })?;
    }
    let second = |fp: u64| 0xC0 + fp as u8;
    for &(_, _, gpa, fp) in &pages {
        fill_range(&mut rig.vcpus[0], gpa, p, second(fp), limit, || {
            format!("guest fill of GPA {gpa:#x} after the punch")
        })?;
    }
    rig.rebuild(&[a, b])?;
    for &(s, i, gpa, fp) in &pages {
        expect_range(&mut rig.vcpus[0], gpa, p, second(fp), limit, || {
            format!(
                "{s} page {i} (file page {fp}) once KVM rebuilt its mappings: the store after \
                 the punch is not in the file"
            )
        })?;
        host_file_page(
            rig.gmem_map.as_ref(),
            p,
            fp,
            second(fp),
            &format!("{s} page {i}"),
        )?;
    }
    Ok(())
}

const VCPUS: u64 = 3;
const PER_VCPU: u64 = 4;
const ROUNDS: u64 = 3;

/// Two slots on one 12-page file (file pages 0..6 at GPA 0x10000, 6..12
/// right after it, so the second slot has offset 6 pages) and three vCPUs,
/// each in its own thread on its own 4 pages (the middle vCPU's range
/// straddles the two slots). Concurrently, each thread: guest fill and
/// check; punch the middle two pages of its range and check zeros there
/// and data around; in PRIVATE mode convert its range to shared, check the
/// host's shared data from the guest, and back to PRIVATE with the private
/// data kept. One thread's invalidations and conversions must never show
/// in another's range.
fn vcpus_each_own_range(tx: &Tx) -> TestResult {
    let limit = tx.inner_limit(Duration::from_secs(10));
    let mode = tx.access_mode()?;
    let file_pages = VCPUS * PER_VCPU;
    let mut rig = Rig::new(tx, mode, file_pages, VCPUS as usize)?;
    let p = rig.page;
    let half = file_pages / 2;
    let s1 = rig.region(1, DATA_BASE, half, 0);
    let s2 = rig.region(2, DATA_BASE + half * p, half, half);
    rig.add(&s1)?;
    rig.add(&s2)?;
    tx.diag(format!(
        "access mode {}; {VCPUS} vCPUs x {PER_VCPU} pages, {ROUNDS} rounds, two slots split at \
         file page {half}",
        rig.mode_name()
    ));
    let Rig {
        vcpus,
        vm,
        gmem,
        shared,
        ..
    } = &mut rig;
    let (vm, gmem, shared) = (&*vm, &*gmem, shared.as_ref());
    on_each_vcpu(vcpus, |k, vcpu| {
        let k = k as u64;
        let first = k * PER_VCPU;
        let gpa = DATA_BASE + first * p;
        let len = PER_VCPU * p;
        let at = |r: u64, m: &str| format!("vCPU {k} round {r}: {m}");
        for r in 0..ROUNDS {
            let v = 0x20 + (k * 0x10 + r) as u8;
            fill_range(vcpu, gpa, len, v, limit, || at(r, "guest fill"))?;
            expect_range(vcpu, gpa, len, v, limit, || at(r, "guest check"))?;
            gmem.punch((first + 1) * p, 2 * p)
                .map_err(|e| Stop::Fail(at(r, &format!("PUNCH_HOLE: {}", ename(&e)))))?;
            for j in 0..PER_VCPU {
                let want = if j == 1 || j == 2 { 0 } else { v };
                expect_range(vcpu, gpa + j * p, p, want, limit, || {
                    at(r, &format!("own page {j} after punching own pages 1..3"))
                })?;
            }
            if let Some(sh) = shared {
                let off = (first * p) as usize;
                sh.fill(off, len as usize, v ^ 0xFF);
                vm.set_attributes(gpa, len, 0)
                    .map_err(|e| Stop::Fail(at(r, &format!("convert to shared: {}", ename(&e)))))?;
                expect_range(vcpu, gpa, len, v ^ 0xFF, limit, || {
                    at(r, "shared data written by the host")
                })?;
                vm.set_attributes(gpa, len, crate::kvm::KVM_MEMORY_ATTRIBUTE_PRIVATE as u64)
                    .map_err(|e| {
                        Stop::Fail(at(r, &format!("convert to PRIVATE: {}", ename(&e))))
                    })?;
                for j in 0..PER_VCPU {
                    let want = if j == 1 || j == 2 { 0 } else { v };
                    expect_range(vcpu, gpa + j * p, p, want, limit, || {
                        at(r, &format!("own page {j} private again"))
                    })?;
                }
            }
        }
        Ok(())
    })
}
