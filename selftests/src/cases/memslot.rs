//! Memslot rules around guest_memfd as upstream has them: which flag
//! combinations a slot may be created with, that a gmem-bound slot can only
//! be created and deleted, and how many memslot address spaces a VM has.
//!
//! Every refused request is followed by a probe that it left nothing
//! behind (no slot, no binding), and every refusal has a control showing
//! that the same request minus the offending part is accepted, so a case
//! cannot pass because the setup itself was invalid.

use std::os::fd::AsRawFd;

use crate::harness::case::{
    ensure, expect_errno, expect_ok, fail, Case, OrFail, Stop, TestResult, Tx,
};
use crate::kvm::caps::{Lack, Need};
use crate::kvm::{
    ename, Errno, GmemFile, Mapping, Region, SysResult, Vm, KVM_CAP_MULTI_ADDRESS_SPACE,
    KVM_CAP_NR_MEMSLOTS, KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY,
};

const GMEM_SLOTS: &[Need] = &[Need::GuestMemfd, Need::UserMemory2];
const PRIVATE_GMEM_SLOTS: &[Need] = &[Need::PrivateAttr, Need::GuestMemfd, Need::UserMemory2];

pub const CASES: &[Case] = &[
    case!(readonly_gmem_einval, needs: GMEM_SLOTS),
    case!(log_dirty_gmem_einval_at_creation, needs: GMEM_SLOTS),
    case!(unknown_flags_einval_v2, needs: &[Need::UserMemory2]),
    case!(unknown_flags_einval_v1),
    case!(v1_ioctl_gmem_flag_einval_with_gmem_at_fd0, needs: GMEM_SLOTS),
    case!(gmem_slot_modifications_einval, needs: GMEM_SLOTS),
    case!(plain_slot_gaining_gmem_einval, needs: GMEM_SLOTS),
    case!(smm_slot_einval_with_private_mem, needs: PRIVATE_GMEM_SLOTS),
    case!(one_address_space_with_private_mem, needs: &[Need::PrivateAttr]),
    case!(address_spaces_match_cap),
    case!(dirty_log_of_the_first_internal_slot_id_einval),
];

/// Pages of each guest_memfd file and of the anonymous memory behind slots.
const FILE_PAGES: u64 = 8;
/// Pages of the slot most cases work on.
const SLOT_PAGES: u64 = 4;
/// GPA of page 0 of every slot here.
const BASE_GPA: u64 = 0x10_0000;
/// A slot id no case creates: used to probe for overlaps.
const PROBE_SLOT: u32 = 9;

/// The memslot id for `id` in address space `as_id`.
fn slot_id(as_id: u32, id: u32) -> u32 {
    (as_id << 16) | id
}

fn flags_name(flags: u32) -> String {
    let mut names = Vec::new();
    for (bit, name) in [
        (KVM_MEM_LOG_DIRTY_PAGES, "LOG_DIRTY_PAGES"),
        (KVM_MEM_READONLY, "READONLY"),
        (KVM_MEM_GUEST_MEMFD, "GUEST_MEMFD"),
    ] {
        if flags & bit != 0 {
            names.push(name.to_string());
        }
    }
    let rest = flags & !(KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD);
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    if names.is_empty() {
        "0".to_string()
    } else {
        names.join("|")
    }
}

/// Fixture: a VM, anonymous memory for userspace_addr and, where the VM
/// type takes guest_memfd slots, two guest_memfd files of the VM.
struct Fx {
    vm: Vm,
    mem: Mapping,
    gmem: Option<GmemFile>,
    other_gmem: Option<GmemFile>,
    page: u64,
}

impl Fx {
    fn new(tx: &Tx, with_gmem: bool) -> Result<Fx, Stop> {
        let vm = tx.vm()?;
        let page = tx.page();
        let mem = Mapping::anon((2 * FILE_PAGES * page) as usize).or_fail("mmap(anon)")?;
        let (gmem, other_gmem) = if with_gmem {
            let create = |what: &str| {
                vm.create_gmem(FILE_PAGES * page, 0)
                    .or_fail(&format!("KVM_CREATE_GUEST_MEMFD ({what})"))
            };
            (Some(create("first file")?), Some(create("second file")?))
        } else {
            (None, None)
        };
        Ok(Fx {
            vm,
            mem,
            gmem,
            other_gmem,
            page,
        })
    }

    fn gmem(&self) -> &GmemFile {
        self.gmem
            .as_ref()
            .expect("fixture made without guest_memfd")
    }

    /// A slot without guest_memfd at BASE_GPA + `gpa_page` pages.
    fn plain(&self, slot: u32, gpa_page: u64, pages: u64, flags: u32) -> Region {
        Region {
            slot,
            flags,
            gpa: BASE_GPA + gpa_page * self.page,
            size: pages * self.page,
            uaddr: self.mem.addr(),
            gmem_offset: 0,
            gmem_fd: 0,
        }
    }

    /// A slot bound to the first file from `file_page` on.
    fn bound(&self, slot: u32, gpa_page: u64, pages: u64, file_page: u64) -> Region {
        Region {
            flags: KVM_MEM_GUEST_MEMFD,
            gmem_offset: file_page * self.page,
            gmem_fd: self.gmem().as_raw_fd() as u32,
            ..self.plain(slot, gpa_page, pages, 0)
        }
    }

    /// Deletes `slot` (size 0, flags 0; the v1 ioctl exists on every kernel).
    fn delete(&self, slot: u32) -> SysResult<()> {
        self.vm.set_region_v1(&Region {
            slot,
            ..Region::default()
        })
    }

    /// Fails unless `slot` does not exist: deleting it is refused.
    fn expect_no_slot(&self, slot: u32, after: &str) -> TestResult {
        match self.delete(slot) {
            Err(e) if e.errno() == libc::EINVAL => Ok(()),
            Ok(()) => fail(format!(
                "{after}: slot {slot:#x} existed afterwards (deleting it succeeded): \
                 the refused request created it"
            )),
            Err(e) => fail(format!(
                "{after}: deleting slot {slot:#x} to check it does not exist: expected EINVAL, got {}",
                ename(&e)
            )),
        }
    }

    /// Fails unless a slot still covers `r`'s GPA range in its address
    /// space: a new slot there overlaps (EEXIST).
    fn expect_in_place(&self, r: &Region, after: &str) -> TestResult {
        let probe = Region {
            slot: (r.slot & !0xffff) | PROBE_SLOT,
            flags: 0,
            gmem_offset: 0,
            gmem_fd: 0,
            ..*r
        };
        match self.vm.set_region_v1(&probe) {
            Err(e) if e.errno() == libc::EEXIST => Ok(()),
            Ok(()) => fail(format!(
                "{after}: GPA {:#x}+{:#x} was free afterwards (a new slot there was accepted): \
                 the refused request moved or dropped slot {:#x}",
                r.gpa, r.size, r.slot
            )),
            Err(e) => fail(format!(
                "{after}: probing that slot {:#x} still covers GPA {:#x}: expected EEXIST, got {}",
                r.slot,
                r.gpa,
                ename(&e)
            )),
        }
    }

    /// Fails unless file pages `file_page`..+`pages` are bindable, i.e. no
    /// slot holds them: a new slot bound there is accepted, then deleted.
    fn expect_file_range_free(&self, file_page: u64, pages: u64, after: &str) -> TestResult {
        let r = self.bound(PROBE_SLOT, 2 * FILE_PAGES, pages, file_page);
        expect_ok(
            &format!(
                "{after}: binding file pages {file_page}..{} to a new slot (no slot may hold them)",
                file_page + pages
            ),
            self.vm.set_region2(&r),
        )?;
        expect_ok("deleting that probe slot", self.delete(r.slot))
    }
}

/// READONLY|GUEST_MEMFD is refused at creation: writes to a read-only slot
/// are emulated MMIO, which private memory cannot take.
fn readonly_gmem_einval(tx: &Tx) -> TestResult {
    let fx = Fx::new(tx, true)?;
    let ro_gmem = Region {
        flags: KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD,
        ..fx.bound(0, 0, SLOT_PAGES, 0)
    };
    expect_errno(
        "create a slot with KVM_MEM_READONLY|KVM_MEM_GUEST_MEMFD",
        fx.vm.set_region2(&ro_gmem),
        libc::EINVAL,
    )?;
    fx.expect_no_slot(0, "after the READONLY|GUEST_MEMFD request")?;
    fx.expect_file_range_free(0, SLOT_PAGES, "after the READONLY|GUEST_MEMFD request")?;
    // Controls: each flag alone is accepted for the same slot.
    expect_ok(
        "control: the same slot with KVM_MEM_GUEST_MEMFD alone",
        fx.vm.set_region2(&fx.bound(0, 0, SLOT_PAGES, 0)),
    )?;
    expect_ok("delete it", fx.delete(0))?;
    expect_ok(
        "control: the same GPA range as a KVM_MEM_READONLY slot without guest_memfd",
        fx.vm
            .set_region2(&fx.plain(0, 0, SLOT_PAGES, KVM_MEM_READONLY)),
    )
}

/// Dirty logging of guest_memfd memory is unsupported: LOG_DIRTY_PAGES with
/// GUEST_MEMFD is refused when the slot is created (not only on an existing
/// slot, where the no-modify rule would refuse it first).
fn log_dirty_gmem_einval_at_creation(tx: &Tx) -> TestResult {
    let fx = Fx::new(tx, true)?;
    for flags in [
        KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_GUEST_MEMFD,
        KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD,
    ] {
        let what = format!("create a slot with {}", flags_name(flags));
        expect_errno(
            &what,
            fx.vm.set_region2(&Region {
                flags,
                ..fx.bound(0, 0, SLOT_PAGES, 0)
            }),
            libc::EINVAL,
        )?;
        fx.expect_no_slot(0, &format!("after: {what}"))?;
    }
    fx.expect_file_range_free(
        0,
        SLOT_PAGES,
        "after the LOG_DIRTY_PAGES|GUEST_MEMFD requests",
    )?;
    expect_ok(
        "control: KVM_MEM_LOG_DIRTY_PAGES on a slot without guest_memfd",
        fx.vm
            .set_region2(&fx.plain(0, 0, SLOT_PAGES, KVM_MEM_LOG_DIRTY_PAGES)),
    )
}

/// Flag bits no kernel defines for memslots (3..31 after GUEST_MEMFD).
fn unknown_flag_bits(first: u32) -> impl Iterator<Item = u32> {
    (first..32).map(|b| 1u32 << b)
}

/// KVM_SET_USER_MEMORY_REGION2 refuses every undefined flag bit, alone and
/// next to GUEST_MEMFD, and none of the refused requests creates a slot.
fn unknown_flags_einval_v2(tx: &Tx) -> TestResult {
    let with_gmem = tx.vm_caps().guest_memfd > 0;
    let fx = Fx::new(tx, with_gmem)?;
    if !with_gmem {
        tx.diag(format!(
            "{} VMs take no guest_memfd slots here: undefined bits tried alone only",
            tx.vm_type.suffix()
        ));
    }
    for bit in unknown_flag_bits(3) {
        let mut requests = vec![fx.plain(0, 0, SLOT_PAGES, bit)];
        if with_gmem {
            requests.push(Region {
                flags: bit | KVM_MEM_GUEST_MEMFD,
                ..fx.bound(0, 0, SLOT_PAGES, 0)
            });
        }
        for r in requests {
            let what = format!(
                "KVM_SET_USER_MEMORY_REGION2 with flags {}",
                flags_name(r.flags)
            );
            expect_errno(&what, fx.vm.set_region2(&r), libc::EINVAL)?;
            fx.expect_no_slot(0, &what)?;
        }
    }
    expect_ok(
        "control: the same slot with flags 0",
        fx.vm.set_region2(&fx.plain(0, 0, SLOT_PAGES, 0)),
    )
}

/// KVM_SET_USER_MEMORY_REGION takes only LOG_DIRTY_PAGES and READONLY:
/// every other bit, GUEST_MEMFD included, is refused. (That GUEST_MEMFD is
/// refused even when the zero-filled guest_memfd field names a real
/// guest_memfd is `v1_ioctl_gmem_flag_einval_with_gmem_at_fd0`.)
fn unknown_flags_einval_v1(tx: &Tx) -> TestResult {
    let fx = Fx::new(tx, false)?;
    for bit in unknown_flag_bits(2) {
        let r = fx.plain(0, 0, SLOT_PAGES, bit);
        let what = format!(
            "KVM_SET_USER_MEMORY_REGION with flags {}",
            flags_name(r.flags)
        );
        expect_errno(&what, fx.vm.set_region_v1(&r), libc::EINVAL)?;
        fx.expect_no_slot(0, &what)?;
    }
    expect_ok(
        "control: the same slot with flags 0",
        fx.vm.set_region_v1(&fx.plain(0, 0, SLOT_PAGES, 0)),
    )
}

/// The v1 ioctl's struct has no guest_memfd field, so the kernel sees it as
/// 0. With a guest_memfd of the VM at fd 0 a missing v1 flag filter would
/// bind it; the filter must refuse the flag whatever fd 0 is.
fn v1_ioctl_gmem_flag_einval_with_gmem_at_fd0(tx: &Tx) -> TestResult {
    let fx = Fx::new(tx, true)?;
    // SAFETY: dup2 onto fd 0 of this forked child only; the harness talks
    // to it over a pipe, not stdin.
    if unsafe { libc::dup2(fx.gmem().as_raw_fd(), 0) } != 0 {
        return fail(format!("dup2(guest_memfd, 0): {}", ename(&Errno::last())));
    }
    let at_fd0 = Region {
        gmem_fd: 0,
        ..fx.bound(0, 0, SLOT_PAGES, 0)
    };
    expect_errno(
        "KVM_SET_USER_MEMORY_REGION (v1) with KVM_MEM_GUEST_MEMFD, a guest_memfd of the VM at fd 0",
        fx.vm.set_region_v1(&at_fd0),
        libc::EINVAL,
    )?;
    fx.expect_no_slot(0, "after the v1 request")?;
    // Control: fd 0 really is bindable, through the v2 ioctl.
    expect_ok(
        "control: the same slot through KVM_SET_USER_MEMORY_REGION2 with guest_memfd = 0",
        fx.vm.set_region2(&at_fd0),
    )
}

/// A gmem-bound slot can only be deleted: every modification is EINVAL
/// (each flag toggled each way, move, resize, another userspace_addr,
/// offset or file), and none of them changes the slot. Upstream v6.8 as
/// released accepted clearing GUEST_MEMFD (a flags-only change or a move
/// without the flag), leaving the file bound to a freed slot; commit
/// 9935df5333aa ("KVM: Disallow toggling KVM_MEM_GUEST_MEMFD on an
/// existing memslot") refuses it, as the 6.12 stable kernels do.
fn gmem_slot_modifications_einval(tx: &Tx) -> TestResult {
    let fx = Fx::new(tx, true)?;
    let p = fx.page;
    let s = fx.bound(0, 0, SLOT_PAGES, 0);
    expect_ok(
        "create slot 0 bound to file pages 0..4",
        fx.vm.set_region2(&s),
    )?;
    let other_fd = fx
        .other_gmem
        .as_ref()
        .expect("fixture made with guest_memfd")
        .as_raw_fd() as u32;
    let with_flags = |flags: u32| Region { flags, ..s };
    let moved = Region {
        gpa: s.gpa + 4 * SLOT_PAGES * p,
        ..s
    };
    let requests = [
        ("the same request again", s),
        (
            "add KVM_MEM_LOG_DIRTY_PAGES",
            with_flags(KVM_MEM_GUEST_MEMFD | KVM_MEM_LOG_DIRTY_PAGES),
        ),
        (
            "add KVM_MEM_READONLY",
            with_flags(KVM_MEM_GUEST_MEMFD | KVM_MEM_READONLY),
        ),
        ("clear KVM_MEM_GUEST_MEMFD (flags 0)", with_flags(0)),
        (
            "clear KVM_MEM_GUEST_MEMFD, set KVM_MEM_LOG_DIRTY_PAGES",
            with_flags(KVM_MEM_LOG_DIRTY_PAGES),
        ),
        (
            "clear KVM_MEM_GUEST_MEMFD, set KVM_MEM_READONLY",
            with_flags(KVM_MEM_READONLY),
        ),
        ("move to another GPA", moved),
        (
            "move to another GPA without KVM_MEM_GUEST_MEMFD",
            Region { flags: 0, ..moved },
        ),
        ("shrink to 2 pages", Region { size: 2 * p, ..s }),
        (
            "grow to 6 pages (still inside the file)",
            Region { size: 6 * p, ..s },
        ),
        (
            "shrink to 2 pages without KVM_MEM_GUEST_MEMFD",
            Region {
                size: 2 * p,
                flags: 0,
                ..s
            },
        ),
        (
            "another userspace_addr",
            Region {
                uaddr: s.uaddr + SLOT_PAGES * p,
                ..s
            },
        ),
        (
            "another guest_memfd_offset (file pages 4..8)",
            Region {
                gmem_offset: SLOT_PAGES * p,
                ..s
            },
        ),
        (
            "another guest_memfd of the same VM",
            Region {
                gmem_fd: other_fd,
                ..s
            },
        ),
    ];
    for (what, r) in requests {
        let what = format!("modify gmem-bound slot 0: {what}");
        expect_errno(&what, fx.vm.set_region2(&r), libc::EINVAL)?;
        fx.expect_in_place(&s, &what)?;
    }
    tx.diag(format!(
        "{} modifications refused, slot 0 still in place",
        requests.len()
    ));
    // The slot is intact and deletable, and deleting it releases exactly
    // its file range; a request that half-applied would show here.
    fx.expect_file_range_free(
        SLOT_PAGES,
        FILE_PAGES - SLOT_PAGES,
        "slot 0 holds pages 0..4",
    )?;
    expect_ok("delete slot 0", fx.delete(0))?;
    fx.expect_file_range_free(0, SLOT_PAGES, "after deleting slot 0")?;
    fx.expect_no_slot(0, "after deleting slot 0")
}

/// An existing slot without guest_memfd cannot gain it, whatever its flags.
fn plain_slot_gaining_gmem_einval(tx: &Tx) -> TestResult {
    let fx = Fx::new(tx, true)?;
    for start in [0, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY] {
        let s = fx.plain(0, 0, SLOT_PAGES, start);
        expect_ok(
            &format!("create slot 0 with flags {}", flags_name(start)),
            fx.vm.set_region2(&s),
        )?;
        let bound = fx.bound(0, 0, SLOT_PAGES, 0);
        let mut targets = vec![KVM_MEM_GUEST_MEMFD];
        if start != 0 {
            targets.push(start | KVM_MEM_GUEST_MEMFD);
        }
        for flags in targets {
            let what = format!(
                "modify slot 0 from flags {} to {} (bound to file pages 0..4)",
                flags_name(start),
                flags_name(flags)
            );
            expect_errno(
                &what,
                fx.vm.set_region2(&Region { flags, ..bound }),
                libc::EINVAL,
            )?;
            fx.expect_in_place(&s, &what)?;
            fx.expect_file_range_free(0, SLOT_PAGES, &what)?;
        }
        expect_ok("delete slot 0", fx.delete(0))?;
    }
    Ok(())
}

/// VMs with private memory have one memslot address space: a slot in
/// address space 1 (SMM) is refused, bound to guest_memfd or not.
fn smm_slot_einval_with_private_mem(tx: &Tx) -> TestResult {
    let fx = Fx::new(tx, true)?;
    let smm = slot_id(1, 0);
    let requests = [
        (
            "a slot without guest_memfd in address space 1 (SMM)",
            fx.plain(smm, 0, SLOT_PAGES, 0),
        ),
        (
            "a gmem-bound slot in address space 1 (SMM)",
            fx.bound(smm, 2 * SLOT_PAGES, SLOT_PAGES, 0),
        ),
    ];
    for (what, r) in requests {
        expect_errno(what, fx.vm.set_region2(&r), libc::EINVAL)?;
        fx.expect_no_slot(smm, what)?;
    }
    // The address space is gone for the dirty log too (not merely empty,
    // which would be ENOENT).
    expect_errno(
        "KVM_GET_DIRTY_LOG for slot 0 of address space 1",
        fx.vm.get_dirty_log(smm, (SLOT_PAGES * fx.page) as usize),
        libc::EINVAL,
    )?;
    expect_errno(
        "KVM_CLEAR_DIRTY_LOG for slot 0 of address space 1",
        fx.vm.clear_dirty_log(smm, SLOT_PAGES as u32),
        libc::EINVAL,
    )?;
    // Controls: the same two slots in address space 0. The gmem-bound one
    // also shows the refused SMM request left no binding of file pages 0..4.
    let controls = [
        (
            "control: a slot without guest_memfd in address space 0",
            fx.plain(slot_id(0, 0), 0, SLOT_PAGES, 0),
        ),
        (
            "control: a gmem-bound slot in address space 0 (file pages 0..4)",
            fx.bound(slot_id(0, 1), 2 * SLOT_PAGES, SLOT_PAGES, 0),
        ),
    ];
    for (what, r) in controls {
        expect_ok(what, fx.vm.set_region2(&r))?;
    }
    Ok(())
}

/// KVM_CAP_MULTI_ADDRESS_SPACE on a VM with private memory is 1, on a
/// kernel that has the SMM address space at all.
fn one_address_space_with_private_mem(tx: &Tx) -> TestResult {
    let vm = tx.vm()?;
    let system = vm.check_system(KVM_CAP_MULTI_ADDRESS_SPACE);
    let on_vm = vm.check(KVM_CAP_MULTI_ADDRESS_SPACE);
    tx.diag(format!(
        "KVM_CAP_MULTI_ADDRESS_SPACE: /dev/kvm {system}, {} VM {on_vm}",
        tx.vm_type.suffix()
    ));
    if system < 2 {
        // x86 has a second (SMM) address space exactly when KVM emulates
        // SMM: always on 6.1, with CONFIG_KVM_SMM from 6.2.
        return Err(Stop::lacking(
            Lack::Config("CONFIG_KVM_SMM"),
            format!(
                "KVM_CAP_MULTI_ADDRESS_SPACE is {system} on /dev/kvm: this kernel has one memslot \
                 address space for every VM (no SMM address space), so a VM with private memory \
                 has none to give up"
            ),
        ));
    }
    ensure(on_vm == 1, || {
        format!(
            "KVM_CAP_MULTI_ADDRESS_SPACE on a {} VM (private memory) is {on_vm}, expected 1 \
             (the kernel has {system} address spaces, the SMM one is not for VMs with private memory)",
            tx.vm_type.suffix()
        )
    })
}

/// Whatever a VM's KVM_CAP_MULTI_ADDRESS_SPACE says is what memslot
/// creation does: address spaces below it take a slot, the next one is
/// EINVAL. A VM without private memory has what /dev/kvm reports.
fn address_spaces_match_cap(tx: &Tx) -> TestResult {
    let fx = Fx::new(tx, false)?;
    let system = fx.vm.check_system(KVM_CAP_MULTI_ADDRESS_SPACE);
    let on_vm = fx.vm.check(KVM_CAP_MULTI_ADDRESS_SPACE);
    let private = tx.vm_caps().has_private();
    tx.diag(format!(
        "KVM_CAP_MULTI_ADDRESS_SPACE: /dev/kvm {system}, {} VM {on_vm} ({})",
        tx.vm_type.suffix(),
        if private {
            "private memory"
        } else {
            "no private memory"
        }
    ));
    if !private {
        ensure(on_vm == system, || {
            format!(
                "a {} VM has no private memory, so it should have every address space /dev/kvm \
                 reports ({system}), but its KVM_CAP_MULTI_ADDRESS_SPACE is {on_vm}",
                tx.vm_type.suffix()
            )
        })?;
    }
    // 0: the capability is absent, the kernel has one address space.
    let spaces = on_vm.max(1) as u32;
    for as_id in 0..spaces {
        let r = fx.plain(slot_id(as_id, 0), 0, SLOT_PAGES, 0);
        expect_ok(
            &format!("a slot in address space {as_id} (of {spaces})"),
            fx.vm.set_region_v1(&r),
        )?;
        expect_ok("delete it", fx.delete(r.slot))?;
    }
    let beyond = fx.plain(slot_id(spaces, 0), 0, SLOT_PAGES, 0);
    expect_errno(
        &format!("a slot in address space {spaces}, one past KVM_CAP_MULTI_ADDRESS_SPACE"),
        fx.vm.set_region_v1(&beyond),
        libc::EINVAL,
    )?;
    expect_errno(
        &format!("KVM_GET_DIRTY_LOG for slot 0 of address space {spaces}"),
        fx.vm
            .get_dirty_log(beyond.slot, (SLOT_PAGES * fx.page) as usize),
        libc::EINVAL,
    )?;
    expect_errno(
        &format!("KVM_CLEAR_DIRTY_LOG for slot 0 of address space {spaces}"),
        fx.vm.clear_dirty_log(beyond.slot, SLOT_PAGES as u32),
        libc::EINVAL,
    )?;
    fx.expect_no_slot(beyond.slot, "after the refused request")
}

/// Slot ids from KVM_CAP_NR_MEMSLOTS up are KVM's own (x86 keeps its
/// internal slots just above the user ones): KVM_GET_DIRTY_LOG and
/// KVM_CLEAR_DIRTY_LOG refuse the first of them with EINVAL, while the last
/// user slot id, with dirty logging, answers both.
fn dirty_log_of_the_first_internal_slot_id_einval(tx: &Tx) -> TestResult {
    let fx = Fx::new(tx, false)?;
    let n = fx.vm.check_system(KVM_CAP_NR_MEMSLOTS);
    tx.diag(format!("KVM_CAP_NR_MEMSLOTS {n}"));
    if n <= 0 {
        return fail(format!(
            "KVM_CAP_NR_MEMSLOTS is {n}: KVM always has user memslots"
        ));
    }
    let last = fx.plain(n as u32 - 1, 0, SLOT_PAGES, KVM_MEM_LOG_DIRTY_PAGES);
    expect_ok(
        &format!(
            "slot {} (the last user slot id) with dirty logging",
            last.slot
        ),
        fx.vm.set_region_v1(&last),
    )?;
    let bytes = (SLOT_PAGES * fx.page) as usize;
    expect_ok(
        &format!("KVM_GET_DIRTY_LOG of slot {}", last.slot),
        fx.vm.get_dirty_log(last.slot, bytes),
    )?;
    expect_ok(
        &format!("KVM_CLEAR_DIRTY_LOG of slot {}", last.slot),
        fx.vm.clear_dirty_log(last.slot, SLOT_PAGES as u32),
    )?;
    expect_errno(
        &format!("KVM_GET_DIRTY_LOG of slot {n}"),
        fx.vm.get_dirty_log(n as u32, bytes),
        libc::EINVAL,
    )?;
    expect_errno(
        &format!("KVM_CLEAR_DIRTY_LOG of slot {n}"),
        fx.vm.clear_dirty_log(n as u32, SLOT_PAGES as u32),
        libc::EINVAL,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_names() {
        assert_eq!(flags_name(0), "0");
        assert_eq!(
            flags_name(KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD),
            "READONLY|GUEST_MEMFD"
        );
        assert_eq!(
            flags_name(KVM_MEM_LOG_DIRTY_PAGES | (1 << 5)),
            "LOG_DIRTY_PAGES|0x20"
        );
    }

    #[test]
    fn slot_ids_carry_the_address_space_in_the_high_half() {
        assert_eq!(slot_id(0, 3), 3);
        assert_eq!(slot_id(1, 0), 0x1_0000);
        assert_eq!(slot_id(1, PROBE_SLOT) & 0xffff, PROBE_SLOT);
    }

    #[test]
    fn undefined_bits_start_past_the_known_flags() {
        let v2: Vec<u32> = unknown_flag_bits(3).collect();
        assert_eq!(v2.len(), 29);
        assert!(v2
            .iter()
            .all(|b| b & (KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD) == 0));
        assert_eq!(unknown_flag_bits(2).next(), Some(KVM_MEM_GUEST_MEMFD));
    }
}
