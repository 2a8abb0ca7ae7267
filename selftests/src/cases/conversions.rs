//! Explicit shared <-> private conversions with KVM_SET_MEMORY_ATTRIBUTES
//! over ranges that mix both, checked from the guest on each side.

use std::time::Duration;

use crate::cases::pageops::{expect_range, fill_range, Rig, DATA_BASE};
use crate::harness::case::{expect_errno, expect_ok, Case, OrFail, Stop, TestResult, Tx};
use crate::kvm::caps::{AccessMode, Need};
use crate::kvm::{Mapping, KVM_MEMORY_ATTRIBUTE_PRIVATE};

const NEEDS: &[Need] = &[Need::GuestMemfd, Need::UserMemory2, Need::PrivateAttr];

pub const CASES: &[Case] = &[
    case!(round_trips_keep_each_side, needs: NEEDS),
    case!(round_trips_with_fallocate, needs: NEEDS),
    case!(range_ending_on_a_new_xarray_node, needs: NEEDS),
    case!(set_private_as_cap_says, needs: &[Need::GmemCreate]),
];

const FILE_PAGES: u64 = 16;
/// Test ranges (first page, pages): single pages at the start, inside and at
/// the end, and multi-page ranges starting on even and odd pages.
const RANGES: [(u64, u64); 6] = [(0, 1), (0, 4), (1, 1), (1, 6), (9, 1), (11, 5)];
const INIT: u8 = 0xCC;
const P1: u8 = 0x11;
const P2: u8 = 0x22;
const P3: u8 = 0x33;
const P4: u8 = 0x44;

fn round_trips_keep_each_side(tx: &Tx) -> TestResult {
    round_trips(tx, false)
}

fn round_trips_with_fallocate(tx: &Tx) -> TestResult {
    round_trips(tx, true)
}

/// The host's view of the shared side: byte `off..off+len` of `m` is `want`.
fn host_sees(m: &Mapping, off: u64, len: u64, want: u8, what: &str) -> TestResult {
    match m.first_ne(off as usize, len as usize, want) {
        None => Ok(()),
        Some(i) => Err(Stop::Fail(format!(
            "{what}: the host reads {:#x} at shared offset {i:#x} (GPA {:#x}), expected {want:#x}",
            m.read(i),
            DATA_BASE + i as u64
        ))),
    }
}

/// Upstream's explicit conversion test, one vCPU, one slot, 16 pages:
/// for each range, shared data written by the guest is seen by the host;
/// after converting to PRIVATE the guest sees guest_memfd (fresh pages read
/// 0) and its private stores never reach the shared memory; odd pages go
/// back to shared and show the shared data again while even pages stay
/// private; the whole range goes shared, then PRIVATE again, where the
/// private data is still there unless `fallocate` punched it on the way
/// to shared. Around the range the shared pattern is untouched.
fn round_trips(tx: &Tx, fallocate: bool) -> TestResult {
    let limit = tx.inner_limit(Duration::from_secs(10));
    let mut rig = Rig::new(tx, AccessMode::Private, FILE_PAGES, 1)?;
    let p = rig.page;
    let slot = rig.region(1, DATA_BASE, FILE_PAGES, 0);
    rig.add(&slot)?;
    let total = FILE_PAGES * p;
    // Everything shared to start with.
    rig.set_private(DATA_BASE, total, false)
        .or_fail("KVM_SET_MEMORY_ATTRIBUTES(0) over the slot")?;
    let shared = rig
        .shared
        .as_ref()
        .ok_or_else(|| Stop::Fail("no shared memory behind the slot".into()))?;
    shared.fill(0, total as usize, INIT);
    let vcpu = &mut rig.vcpus[0];
    expect_range(vcpu, DATA_BASE, total, INIT, limit, || {
        "shared slot before any conversion (host wrote the pattern)".into()
    })?;
    tx.diag(format!(
        "{} ranges, fallocate on conversion: {fallocate}",
        RANGES.len()
    ));

    let convert = |gpa: u64, len: u64, private: bool| -> TestResult {
        let off = gpa - DATA_BASE;
        if fallocate {
            let r = if private {
                rig.gmem.allocate(off, len)
            } else {
                rig.gmem.punch(off, len)
            };
            r.or_fail(if private {
                "fallocate(KEEP_SIZE) before converting to PRIVATE"
            } else {
                "PUNCH_HOLE before converting to shared"
            })?;
        }
        rig.vm
            .set_attributes(
                gpa,
                len,
                if private {
                    KVM_MEMORY_ATTRIBUTE_PRIVATE as u64
                } else {
                    0
                },
            )
            .or_fail(&format!(
                "KVM_SET_MEMORY_ATTRIBUTES({}) GPA {gpa:#x}+{len:#x}",
                if private { "PRIVATE" } else { "0" }
            ))
    };
    for (first, pages) in RANGES {
        let gpa = DATA_BASE + first * p;
        let len = pages * p;
        let off = first * p;
        let at = |s: &str| format!("range pages {first}..{}: {s}", first + pages);
        let vcpu = &mut rig.vcpus[0];

        fill_range(vcpu, gpa, len, P1, limit, || at("guest fill, shared"))?;
        host_sees(shared, off, len, P1, &at("guest's shared store"))?;

        convert(gpa, len, true)?;
        let vcpu = &mut rig.vcpus[0];
        expect_range(vcpu, gpa, len, 0, limit, || {
            at("first private read (fresh guest_memfd pages)")
        })?;
        fill_range(vcpu, gpa, len, P2, limit, || at("guest fill, private"))?;
        expect_range(vcpu, gpa, len, P2, limit, || at("private data read back"))?;
        host_sees(
            shared,
            off,
            len,
            P1,
            &at("shared side after private stores"),
        )?;
        if first > 0 {
            expect_range(vcpu, DATA_BASE, off, INIT, limit, || {
                at("shared pages below the range")
            })?;
        }
        if off + len < total {
            expect_range(vcpu, gpa + len, total - off - len, INIT, limit, || {
                at("shared pages above the range")
            })?;
        }

        // Odd pages of the range back to shared: holes in a private range.
        for j in (0..pages).filter(|j| j % 2 == 1) {
            let pg = gpa + j * p;
            convert(pg, p, false)?;
            let vcpu = &mut rig.vcpus[0];
            expect_range(vcpu, pg, p, P1, limit, || {
                at(&format!("page +{j} converted back to shared"))
            })?;
            shared.fill((off + j * p) as usize, p as usize, P3);
            expect_range(vcpu, pg, p, P3, limit, || {
                at(&format!("page +{j}: host's shared store"))
            })?;
        }
        for j in (0..pages).filter(|j| j % 2 == 0) {
            let vcpu = &mut rig.vcpus[0];
            expect_range(vcpu, gpa + j * p, p, P2, limit, || {
                at(&format!("page +{j} still private beside shared holes"))
            })?;
        }

        // The whole range shared: even pages show the guest's P1, odd ones
        // the host's P3.
        convert(gpa, len, false)?;
        for j in 0..pages {
            let want = if j % 2 == 1 { P3 } else { P1 };
            let vcpu = &mut rig.vcpus[0];
            expect_range(vcpu, gpa + j * p, p, want, limit, || {
                at(&format!("page +{j} after converting the range to shared"))
            })?;
        }
        let vcpu = &mut rig.vcpus[0];
        fill_range(vcpu, gpa, len, P4, limit, || at("guest fill, shared again"))?;
        host_sees(shared, off, len, P4, &at("guest's second shared store"))?;

        // PRIVATE again: guest_memfd kept the private data, unless it was
        // punched on the way to shared.
        convert(gpa, len, true)?;
        let (want, why) = if fallocate {
            (0, "punched on the way to shared")
        } else {
            (P2, "kept across the shared phase")
        };
        let vcpu = &mut rig.vcpus[0];
        expect_range(vcpu, gpa, len, want, limit, || {
            at(&format!("private again: data {why}"))
        })?;
        host_sees(shared, off, len, P4, &at("shared side after private reads"))?;

        // Clean slate: everything shared with the initial pattern, nothing
        // left in the file.
        convert(gpa, len, false)?;
        shared.fill(off as usize, len as usize, INIT);
        rig.gmem
            .punch(0, total)
            .or_fail("PUNCH_HOLE over the whole file")?;
    }
    let vcpu = &mut rig.vcpus[0];
    expect_range(vcpu, DATA_BASE, total, INIT, limit, || {
        "shared slot after all round trips".into()
    })?;
    Ok(())
}

/// Entries per node of KVM's attribute xarray (XA_CHUNK_SIZE).
const XA_NODE_GFNS: u64 = 64;

/// KVM_SET_MEMORY_ATTRIBUTES on gfns 64..=128, in a slot one page wider on
/// each side: the attribute xarray holds 64 gfns per node, so the range's
/// last gfn (128) is the first of a node no earlier entry needed, which
/// KVM must reserve with the rest before it zaps anything (a store into it
/// cannot fail then). Every gfn of the range, the last one included, must
/// take each change: the guest reads guest_memfd there once PRIVATE (fresh
/// pages: 0, then what it stored), the shared memory again once shared,
/// and the private data once more after the second PRIVATE; the two
/// neighbouring gfns stay shared throughout.
fn range_ending_on_a_new_xarray_node(tx: &Tx) -> TestResult {
    let limit = tx.inner_limit(Duration::from_secs(10));
    let first_gfn = XA_NODE_GFNS;
    let range_pages = XA_NODE_GFNS + 1;
    let slot_pages = range_pages + 2;
    let mut rig = Rig::new(tx, AccessMode::Private, slot_pages, 1)?;
    let p = rig.page;
    let slot_gpa = (first_gfn - 1) * p;
    let gpa = first_gfn * p;
    let len = range_pages * p;
    let total = slot_pages * p;
    let slot = rig.region(1, slot_gpa, slot_pages, 0);
    rig.vm.set_region2(&slot).or_fail(&format!(
        "KVM_SET_USER_MEMORY_REGION2(guest_memfd slot at GPA {slot_gpa:#x}, {slot_pages} pages)"
    ))?;
    let shared = rig
        .shared
        .as_ref()
        .ok_or_else(|| Stop::Fail("no shared memory behind the slot".into()))?;
    shared.fill(0, total as usize, INIT);
    let last = gpa + len - p;
    tx.diag(format!(
        "slot GPA {slot_gpa:#x}+{total:#x}, attributes on GPA {gpa:#x}+{len:#x} (gfns \
         {first_gfn}..={}, the last at GPA {last:#x})",
        first_gfn + range_pages - 1
    ));

    let vm = &rig.vm;
    let set = |private: bool| {
        let attrs = if private {
            KVM_MEMORY_ATTRIBUTE_PRIVATE as u64
        } else {
            0
        };
        vm.set_attributes(gpa, len, attrs).or_fail(&format!(
            "KVM_SET_MEMORY_ATTRIBUTES({}) GPA {gpa:#x}+{len:#x}",
            if private { "PRIVATE" } else { "0" }
        ))
    };
    let neighbours = |vcpu: &mut kvm_ioctls::VcpuFd, when: &str| -> TestResult {
        for n in [slot_gpa, gpa + len] {
            expect_range(vcpu, n, p, INIT, limit, || {
                format!("GPA {n:#x}, outside the range, {when}: must stay shared")
            })?;
        }
        Ok(())
    };

    set(true)?;
    let vcpu = &mut rig.vcpus[0];
    expect_range(vcpu, gpa, len, 0, limit, || {
        "the range after PRIVATE (fresh guest_memfd pages)".into()
    })?;
    neighbours(vcpu, "after PRIVATE")?;
    fill_range(vcpu, gpa, len, P2, limit, || "guest fill, private".into())?;
    host_sees(
        shared,
        0,
        total,
        INIT,
        "the shared side after private stores",
    )?;

    set(false)?;
    let vcpu = &mut rig.vcpus[0];
    expect_range(vcpu, gpa, len, INIT, limit, || {
        "the range back to shared (the shared memory again)".into()
    })?;
    neighbours(vcpu, "after shared")?;

    set(true)?;
    let vcpu = &mut rig.vcpus[0];
    expect_range(vcpu, gpa, len, P2, limit, || {
        "the range PRIVATE again (guest_memfd kept the private data)".into()
    })?;
    neighbours(vcpu, "after PRIVATE again")
}

/// KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) succeeds exactly on VM types whose
/// KVM_CAP_MEMORY_ATTRIBUTES has PRIVATE; elsewhere it is EINVAL (upstream
/// 6.8: attributes outside the VM's supported set), and so is an unknown
/// attribute bit or a nonzero flags field on every VM type.
fn set_private_as_cap_says(tx: &Tx) -> TestResult {
    let vm = tx.vm()?;
    let p = tx.page();
    let private = KVM_MEMORY_ATTRIBUTE_PRIVATE as u64;
    let sys = tx
        .caps
        .system
        .iter()
        .find(|(n, _)| *n == "MEMORY_ATTRIBUTES")
        .map(|&(_, v)| v)
        .unwrap_or(0);
    let has = tx.vm_caps().has_private();
    tx.diag(format!(
        "KVM_CAP_MEMORY_ATTRIBUTES {:#x} on /dev/kvm, {:#x} on this VM",
        sys.max(0),
        tx.vm_caps().memory_attributes.max(0)
    ));
    let r = vm.set_attributes(DATA_BASE, 4 * p, private);
    if has {
        expect_ok("KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)", r)?;
        expect_ok(
            "KVM_SET_MEMORY_ATTRIBUTES(0) back to shared",
            vm.set_attributes(DATA_BASE, 4 * p, 0),
        )?;
    } else if sys > 0 {
        expect_errno(
            "KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) on a VM type without PRIVATE",
            r,
            libc::EINVAL,
        )?;
    } else {
        // /dev/kvm answers PRIVATE whenever the ioctl is built in (6.8: the
        // system-wide answer is what some VM type could support), so here it
        // is not there at all.
        return expect_errno(
            "KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) where /dev/kvm reports no attributes",
            r,
            libc::ENOTTY,
        );
    }
    expect_errno(
        "KVM_SET_MEMORY_ATTRIBUTES with an unknown attribute bit (1 << 4)",
        vm.set_attributes(DATA_BASE, p, 1 << 4),
        libc::EINVAL,
    )?;
    let bad_flags = vm.set_attributes_raw(kvm_bindings::kvm_memory_attributes {
        address: DATA_BASE,
        size: p,
        attributes: if has { private } else { 0 },
        flags: 1,
    });
    expect_errno(
        "KVM_SET_MEMORY_ATTRIBUTES with flags 1",
        bad_flags,
        libc::EINVAL,
    )?;
    if has {
        for (what, gpa, size) in [
            ("size 0", DATA_BASE, 0),
            ("unaligned address", DATA_BASE + 1, p),
            ("unaligned size", DATA_BASE, p + 1),
            ("address + size wraps", u64::MAX - p + 1, 2 * p),
        ] {
            expect_errno(
                &format!("KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) with {what}"),
                vm.set_attributes(gpa, size, private),
                libc::EINVAL,
            )?;
        }
    }
    Ok(())
}
