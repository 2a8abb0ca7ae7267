//! Memslot binding: KVM_SET_USER_MEMORY_REGION2 with KVM_MEM_GUEST_MEMFD.

use std::os::fd::{AsRawFd, FromRawFd};

use crate::harness::case::{
    ensure, expect_errno, expect_ok, fail, Case, OrFail, Stop, TestResult, Tx,
};
use crate::harness::meminfo::{settle, slack_kib, unevictable_kib};
use crate::kvm::caps::Need;
use crate::kvm::{
    ename, Errno, GmemFile, Mapping, Region, Vm, KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES,
    KVM_SET_USER_MEMORY_REGION2,
};

const NEEDS: &[Need] = &[Need::GuestMemfd, Need::UserMemory2];

pub const CASES: &[Case] = &[
    case!(gmem_slot_as_cap_says, needs: &[Need::GmemCreate, Need::UserMemory2]),
    case!(v1_ioctl_einval, needs: NEEDS),
    case!(fd_not_gmem_einval, needs: NEEDS),
    case!(other_vms_gmem_einval, needs: NEEDS),
    case!(closed_fd_ebadf, needs: NEEDS),
    case!(unaligned_offset_einval, needs: NEEDS),
    case!(past_eof_einval, needs: NEEDS),
    case!(offset_negative_as_loff_t_einval, needs: NEEDS),
    case!(unreadable_request_efault, needs: &[Need::UserMemory2]),
    case!(gpa_overlap_eexist, needs: NEEDS),
    case!(gmem_overlap_disjoint_gpa, needs: NEEDS),
    case!(modify_gmem_slot_einval, needs: NEEDS),
    case!(delete_then_rebind, needs: NEEDS),
    case!(delete_keeps_neighbours_bindings, needs: NEEDS),
    case!(failed_create_releases_range, needs: NEEDS),
    case!(file_keeps_vm_alive, needs: NEEDS),
    case!(last_file_close_destroys_the_vm, needs: NEEDS),
    case!(unbound_file_is_freed_on_close, needs: NEEDS),
];

const FILE_PAGES: u64 = 8;
/// GPA of the first bound page (far from anything else).
const BASE_GPA: u64 = 0x10_0000;

/// Fixture: a VM, a guest_memfd of FILE_PAGES and anonymous memory for the
/// slots' userspace_addr.
struct Bind {
    vm: Vm,
    gmem: GmemFile,
    mem: Mapping,
    page: u64,
}

impl Bind {
    fn new(tx: &Tx) -> Result<Bind, Stop> {
        let (vm, gmem) = tx.vm_with_gmem(FILE_PAGES, 0)?;
        let mem = Mapping::anon((2 * FILE_PAGES * tx.page()) as usize).or_fail("mmap(anon)")?;
        Ok(Bind {
            vm,
            gmem,
            mem,
            page: tx.page(),
        })
    }

    /// Slot `slot` at BASE_GPA + `gpa_page` pages, `pages` long, bound to the
    /// file at page `file_page`.
    fn region(&self, slot: u32, gpa_page: u64, pages: u64, file_page: u64) -> Region {
        Region {
            slot,
            flags: KVM_MEM_GUEST_MEMFD,
            gpa: BASE_GPA + gpa_page * self.page,
            size: pages * self.page,
            uaddr: self.mem.addr(),
            gmem_offset: file_page * self.page,
            gmem_fd: self.gmem.as_raw_fd() as u32,
        }
    }
}

impl Bind {
    /// A two-page slot bound at each of `offsets` is refused with EINVAL.
    fn offsets_einval(&self, offsets: &[u64]) -> TestResult {
        for &off in offsets {
            let r = Region {
                gmem_offset: off,
                ..self.region(0, 0, 2, 0)
            };
            expect_errno(
                &format!("guest_memfd_offset {off:#x}"),
                self.vm.set_region2(&r),
                libc::EINVAL,
            )?;
        }
        Ok(())
    }
}

/// A guest_memfd memslot is accepted exactly on VM types whose
/// KVM_CAP_GUEST_MEMFD is nonzero; elsewhere KVM_MEM_GUEST_MEMFD is not a
/// valid flag (upstream 6.8: EINVAL), while the same slot without the flag
/// is fine.
fn gmem_slot_as_cap_says(tx: &Tx) -> TestResult {
    let b = Bind::new(tx)?;
    let cap = tx.vm_caps().guest_memfd;
    let r = b.region(0, 0, 2, 0);
    tx.diag(format!("KVM_CAP_GUEST_MEMFD {cap} on this VM"));
    if cap > 0 {
        expect_ok(
            "guest_memfd slot where the VM reports the capability",
            b.vm.set_region2(&r),
        )
    } else {
        expect_errno(
            "guest_memfd slot on a VM type that reports KVM_CAP_GUEST_MEMFD 0",
            b.vm.set_region2(&r),
            libc::EINVAL,
        )?;
        expect_ok(
            "control: the same slot without KVM_MEM_GUEST_MEMFD",
            b.vm.set_region2(&Region {
                flags: 0,
                gmem_fd: 0,
                gmem_offset: 0,
                ..r
            }),
        )
    }
}

fn v1_ioctl_einval(tx: &Tx) -> TestResult {
    let b = Bind::new(tx)?;
    let r = b.region(0, 0, 2, 0);
    expect_errno(
        "KVM_SET_USER_MEMORY_REGION (v1) with KVM_MEM_GUEST_MEMFD",
        b.vm.set_region_v1(&r),
        libc::EINVAL,
    )?;
    // Control: the same request through the v2 ioctl works.
    expect_ok(
        "the same slot through KVM_SET_USER_MEMORY_REGION2",
        b.vm.set_region2(&r),
    )
}

fn fd_not_gmem_einval(tx: &Tx) -> TestResult {
    let b = Bind::new(tx)?;
    // SAFETY: a NUL-terminated name; the fd is wrapped immediately.
    let raw = unsafe { libc::memfd_create(c"gmem-selftests".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return fail(format!("memfd_create: {}", ename(&Errno::last())));
    }
    // SAFETY: a fresh fd we own.
    let memfd = unsafe { std::fs::File::from_raw_fd(raw) };
    memfd
        .set_len(FILE_PAGES * b.page)
        .or_fail("ftruncate(memfd)")?;
    let candidates = [
        ("the /dev/kvm fd", b.vm.system_fd()),
        ("the VM fd", b.vm.as_raw_fd()),
        ("a memfd", memfd.as_raw_fd()),
    ];
    for (what, fd) in candidates {
        let r = Region {
            gmem_fd: fd as u32,
            ..b.region(0, 0, 2, 0)
        };
        expect_errno(
            &format!("guest_memfd = {what}"),
            b.vm.set_region2(&r),
            libc::EINVAL,
        )?;
    }
    expect_ok(
        "control: the VM's own guest_memfd",
        b.vm.set_region2(&b.region(0, 0, 2, 0)),
    )
}

fn other_vms_gmem_einval(tx: &Tx) -> TestResult {
    let b = Bind::new(tx)?;
    let (_other_vm, other_gmem) = tx.vm_with_gmem(FILE_PAGES, 0)?;
    let r = Region {
        gmem_fd: other_gmem.as_raw_fd() as u32,
        ..b.region(0, 0, 2, 0)
    };
    expect_errno(
        "guest_memfd created by another VM",
        b.vm.set_region2(&r),
        libc::EINVAL,
    )
}

fn closed_fd_ebadf(tx: &Tx) -> TestResult {
    let b = Bind::new(tx)?;
    let closed = {
        let f = std::fs::File::open("/dev/null").or_fail("open /dev/null")?;
        f.as_raw_fd()
    }; // closed here; the case is single-threaded so the number stays free
    let r = Region {
        gmem_fd: closed as u32,
        ..b.region(0, 0, 2, 0)
    };
    expect_errno(
        &format!("guest_memfd = closed fd {closed}"),
        b.vm.set_region2(&r),
        libc::EBADF,
    )
}

fn unaligned_offset_einval(tx: &Tx) -> TestResult {
    let b = Bind::new(tx)?;
    b.offsets_einval(&[1, b.page / 2, b.page - 1, b.page + 8])
}

fn past_eof_einval(tx: &Tx) -> TestResult {
    let b = Bind::new(tx)?;
    let cases = [
        (
            "slot larger than the file",
            b.region(0, 0, FILE_PAGES + 1, 0),
        ),
        (
            "offset + size one page past EOF",
            b.region(0, 0, FILE_PAGES, 1),
        ),
        ("offset at EOF", b.region(0, 0, 1, FILE_PAGES)),
        ("offset past EOF", b.region(0, 0, 1, FILE_PAGES + 4)),
    ];
    for (what, r) in cases {
        expect_errno(what, b.vm.set_region2(&r), libc::EINVAL)?;
    }
    expect_ok(
        "control: exactly up to EOF",
        b.vm.set_region2(&b.region(0, 0, 2, FILE_PAGES - 2)),
    )
}

/// An aligned guest_memfd_offset with bit 63 set passes the generic
/// memslot checks (aligned, offset + size does not wrap) and is a negative
/// `loff_t` to guest_memfd, whose bind must refuse it on its own: a negative
/// offset plus the size is never past EOF, so only the `offset < 0` test
/// stands between it and a binding at a page index the file cannot have.
fn offset_negative_as_loff_t_einval(tx: &Tx) -> TestResult {
    let b = Bind::new(tx)?;
    b.offsets_einval(&[1u64 << 63, u64::MAX - FILE_PAGES * b.page - (b.page - 1)])
}

/// A KVM_SET_USER_MEMORY_REGION2 request KVM cannot read is EFAULT.
fn unreadable_request_efault(tx: &Tx) -> TestResult {
    let vm = tx.vm()?;
    expect_errno(
        "KVM_SET_USER_MEMORY_REGION2, request in a PROT_NONE page",
        vm.ioctl_with_unreadable_arg(KVM_SET_USER_MEMORY_REGION2),
        libc::EFAULT,
    )
}

fn gpa_overlap_eexist(tx: &Tx) -> TestResult {
    let b = Bind::new(tx)?;
    expect_ok(
        "slot 0: GPA pages 0..2, file pages 0..2",
        b.vm.set_region2(&b.region(0, 0, 2, 0)),
    )?;
    expect_errno(
        "slot 1: GPA pages 1..3 (overlap), file pages 4..6 (disjoint)",
        b.vm.set_region2(&b.region(1, 1, 2, 4)),
        libc::EEXIST,
    )?;
    expect_ok(
        "control: slot 1 at GPA pages 2..4, file pages 4..6",
        b.vm.set_region2(&b.region(1, 2, 2, 4)),
    )
}

fn gmem_overlap_disjoint_gpa(tx: &Tx) -> TestResult {
    let b = Bind::new(tx)?;
    let (want, why) = tx.caps.gmem_overlap_errno();
    tx.diag(why);
    expect_ok(
        "slot 0: GPA pages 0..2, file pages 0..2",
        b.vm.set_region2(&b.region(0, 0, 2, 0)),
    )?;
    expect_errno(
        "slot 1: GPA pages 16..18 (disjoint), file pages 1..3 (overlap)",
        b.vm.set_region2(&b.region(1, 16, 2, 1)),
        want,
    )?;
    expect_errno(
        "slot 1: GPA pages 16..20, file pages 0..4 (covers slot 0's range)",
        b.vm.set_region2(&b.region(1, 16, 4, 0)),
        want,
    )?;
    expect_ok(
        "control: slot 1 at GPA pages 16..18, file pages 2..4",
        b.vm.set_region2(&b.region(1, 16, 2, 2)),
    )
}

fn modify_gmem_slot_einval(tx: &Tx) -> TestResult {
    let b = Bind::new(tx)?;
    let r = b.region(0, 0, 2, 0);
    expect_ok("create slot 0", b.vm.set_region2(&r))?;
    expect_errno(
        "re-issue slot 0 unchanged",
        b.vm.set_region2(&r),
        libc::EINVAL,
    )?;
    expect_errno(
        "move slot 0 to another GPA",
        b.vm.set_region2(&b.region(0, 8, 2, 0)),
        libc::EINVAL,
    )?;
    expect_errno(
        "add KVM_MEM_LOG_DIRTY_PAGES to slot 0",
        b.vm.set_region2(&Region {
            flags: r.flags | KVM_MEM_LOG_DIRTY_PAGES,
            ..r
        }),
        libc::EINVAL,
    )?;
    expect_errno(
        "rebind slot 0 to other file pages",
        b.vm.set_region2(&b.region(0, 0, 2, 4)),
        libc::EINVAL,
    )?;
    Ok(())
}

fn delete_then_rebind(tx: &Tx) -> TestResult {
    let b = Bind::new(tx)?;
    let r = b.region(0, 0, 4, 0);
    expect_ok("create slot 0 on file pages 0..4", b.vm.set_region2(&r))?;
    expect_ok("delete slot 0", b.vm.delete_region(&r))?;
    expect_ok("re-create slot 0 on the same range", b.vm.set_region2(&r))?;
    expect_ok("delete slot 0 again", b.vm.delete_region(&r))?;
    expect_ok(
        "slot 1 on the range slot 0 released",
        b.vm.set_region2(&b.region(1, 8, 4, 0)),
    )?;
    expect_ok(
        "slot 0 on the rest of the file",
        b.vm.set_region2(&b.region(0, 0, 4, 4)),
    )?;
    Ok(())
}

/// Deleting a slot unbinds exactly its own file range: the slots bound
/// just below and just above it in the same file keep theirs, so a new
/// slot on the last page of the one below or the first page of the one
/// above still overlaps, while the deleted range is free again.
fn delete_keeps_neighbours_bindings(tx: &Tx) -> TestResult {
    let b = Bind::new(tx)?;
    let (want, why) = tx.caps.gmem_overlap_errno();
    tx.diag(why);
    let middle = b.region(1, 4, 2, 2);
    expect_ok(
        "slot 0: GPA pages 0..2, file pages 0..2",
        b.vm.set_region2(&b.region(0, 0, 2, 0)),
    )?;
    expect_ok(
        "slot 1: GPA pages 4..6, file pages 2..4",
        b.vm.set_region2(&middle),
    )?;
    expect_ok(
        "slot 2: GPA pages 8..10, file pages 4..6",
        b.vm.set_region2(&b.region(2, 8, 2, 4)),
    )?;
    expect_ok("delete slot 1", b.vm.delete_region(&middle))?;
    expect_errno(
        "slot 3 on file page 1 (slot 0's last)",
        b.vm.set_region2(&b.region(3, 16, 1, 1)),
        want,
    )?;
    expect_errno(
        "slot 3 on file page 4 (slot 2's first)",
        b.vm.set_region2(&b.region(3, 16, 1, 4)),
        want,
    )?;
    expect_ok(
        "slot 3 on file pages 2..4 (slot 1's, released)",
        b.vm.set_region2(&b.region(3, 16, 2, 2)),
    )
}

/// GPA of a slot no x86 MMU can map: gfn 2^40 is above kvm_mmu_max_gfn()
/// for every MAXPHYADDR (at most 52 bits), while the generic memslot checks
/// only refuse a GPA range that wraps around.
const UNMAPPABLE_GPA: u64 = 1 << 52;

/// A memslot creation that fails after the guest_memfd range was bound (the
/// arch code refuses a GPA above the MMU's largest gfn, in
/// kvm_arch_prepare_memory_region(), which runs after kvm_gmem_bind()) must
/// release the range again, as upstream's `out_unbind` does: the same range
/// binds afterwards, through the same slot id and through another one.
fn failed_create_releases_range(tx: &Tx) -> TestResult {
    let b = Bind::new(tx)?;
    let high = Region {
        gpa: UNMAPPABLE_GPA,
        ..b.region(0, 0, 4, 0)
    };
    expect_errno(
        &format!("slot 0 at GPA {UNMAPPABLE_GPA:#x} on file pages 0..4"),
        b.vm.set_region2(&high),
        libc::EINVAL,
    )?;
    expect_ok(
        "slot 0 on the same file pages at a mappable GPA",
        b.vm.set_region2(&b.region(0, 0, 4, 0)),
    )?;
    expect_ok("delete slot 0", b.vm.delete_region(&b.region(0, 0, 4, 0)))?;
    expect_errno(
        &format!("slot 1 at GPA {UNMAPPABLE_GPA:#x} on file pages 2..6"),
        b.vm.set_region2(&Region {
            slot: 1,
            gpa: UNMAPPABLE_GPA,
            ..b.region(1, 0, 4, 2)
        }),
        libc::EINVAL,
    )?;
    expect_ok(
        "slot 2 on file pages 0..8 (covers both failed ranges)",
        b.vm.set_region2(&b.region(2, 0, FILE_PAGES, 0)),
    )?;
    // Closing the file before the VM walks the file's bindings: a stale one
    // would point at a freed memslot (KASAN builds report it here).
    let Bind { vm, gmem, .. } = b;
    drop(gmem);
    drop(vm);
    Ok(())
}

fn file_keeps_vm_alive(tx: &Tx) -> TestResult {
    let b = Bind::new(tx)?;
    expect_ok(
        "bind slot 0 to file pages 0..4",
        b.vm.set_region2(&b.region(0, 0, 4, 0)),
    )?;
    let Bind {
        vm,
        gmem,
        mem,
        page,
    } = b;
    drop(vm); // closes the VM fd and /dev/kvm: only the file holds the VM now
    expect_ok(
        "allocate after closing the VM fd",
        gmem.allocate(0, FILE_PAGES * page),
    )?;
    expect_ok(
        "punch a bound range after closing the VM fd",
        gmem.punch(0, 2 * page),
    )?;
    expect_ok(
        "punch an unbound range after closing the VM fd",
        gmem.punch(4 * page, 2 * page),
    )?;
    expect_ok("fstat after closing the VM fd", gmem.fstat())?;
    drop(gmem); // destroys the VM; the harness checks the log and taint
    drop(mem);
    Ok(())
}

/// A guest_memfd holds a reference to its VM, and its release drops it:
/// with the VM fd closed the VM lives on (its debugfs directory,
/// `<pid>-<vm fd>` under debugfs's kvm/, is still there), and closing the
/// file destroys it (the directory goes, at once: the release runs before
/// close() returns). A reference the release forgets keeps the VM and
/// everything it holds for good.
fn last_file_close_destroys_the_vm(tx: &Tx) -> TestResult {
    let debugfs = crate::harness::hwpoison::debugfs()?;
    let b = Bind::new(tx)?;
    expect_ok(
        "bind slot 0 to file pages 0..4",
        b.vm.set_region2(&b.region(0, 0, 4, 0)),
    )?;
    let dir = debugfs
        .join("kvm")
        .join(format!("{}-{}", std::process::id(), b.vm.as_raw_fd()));
    ensure(dir.is_dir(), || {
        format!("no {} for the new VM (KVM's debugfs naming)", dir.display())
    })?;
    let Bind { vm, gmem, mem, .. } = b;
    drop(vm);
    ensure(dir.is_dir(), || {
        format!(
            "{} went with the VM fd although the guest_memfd still holds the VM",
            dir.display()
        )
    })?;
    drop(gmem);
    ensure(!dir.exists(), || {
        format!(
            "{} is still there after the last guest_memfd of the VM was closed:              something still holds the VM",
            dir.display()
        )
    })?;
    drop(mem);
    Ok(())
}

/// Binding and unbinding take and drop references on the guest_memfd file;
/// once its memslot is deleted and the fd, the VM and the memory are
/// closed, nothing may keep it alive: the file is released and its pages
/// freed (counted in /proc/meminfo's Unevictable, as guest_memfd's mapping
/// is unevictable). A reference left behind keeps every allocated page.
fn unbound_file_is_freed_on_close(tx: &Tx) -> TestResult {
    const PAGES: u64 = 1024;
    let p = tx.page();
    let allocated_kib = PAGES * p / 1024;
    let slack_kib = slack_kib(p, allocated_kib);
    let before = unevictable_kib()?;
    {
        let (vm, gmem) = tx.vm_with_gmem(PAGES, 0)?;
        expect_ok("allocate the whole file", gmem.allocate(0, PAGES * p))?;
        let mem = Mapping::anon((PAGES * p) as usize).or_fail("mmap(anon)")?;
        let r = Region {
            slot: 0,
            flags: KVM_MEM_GUEST_MEMFD,
            gpa: BASE_GPA,
            size: PAGES * p,
            uaddr: mem.addr(),
            gmem_offset: 0,
            gmem_fd: gmem.as_raw_fd() as u32,
        };
        expect_ok("bind the whole file to slot 0", vm.set_region2(&r))?;
        let held = unevictable_kib()?.saturating_sub(before);
        tx.diag(format!(
            "{allocated_kib} KiB allocated and bound: Unevictable grew by {held} KiB"
        ));
        ensure(held + slack_kib >= allocated_kib, || {
            format!("Unevictable grew by {held} KiB for {allocated_kib} KiB allocated: the counter does not see guest_memfd pages here")
        })?;
        expect_ok("delete slot 0", vm.delete_region(&r))?;
        drop(gmem);
        drop(vm);
        drop(mem);
    }
    settle();
    let left = unevictable_kib()?.saturating_sub(before);
    tx.diag(format!(
        "after deleting the slot and closing the file and the VM: {left} KiB still counted"
    ));
    ensure(left <= slack_kib, || {
        format!(
            "{left} KiB of the {allocated_kib} KiB stay allocated after the slot was deleted and the \
             file and the VM were closed: something still holds the guest_memfd file"
        )
    })
}
