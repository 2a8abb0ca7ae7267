//! A real-mode vCPU on guest_memfd memory, and KVM_EXIT_MEMORY_FAULT.

use std::time::Duration;

use crate::cases::guest::{run_once, Exit, Guest, TouchError, DATA_GPA};
use crate::harness::case::{ensure, fail, Case, OrFail, TestResult, Tx};
use crate::kvm::caps::{AccessMode, Need};
use crate::kvm::{
    GUEST_MEMFD_FLAG_INIT_SHARED, GUEST_MEMFD_FLAG_MMAP, KVM_MEMORY_ATTRIBUTE_PRIVATE,
    KVM_MEMORY_EXIT_FLAG_PRIVATE,
};

pub const CASES: &[Case] = &[
    case!(shared_mmap_roundtrip, needs: &[Need::GuestMemfd, Need::UserMemory2, Need::GmemFlags(GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED)]),
    case!(private_roundtrip, needs: &[Need::GuestMemfd, Need::UserMemory2, Need::PrivateAttr]),
    case!(memory_fault_private_without_gmem, needs: &[Need::GuestMemfd, Need::UserMemory2, Need::PrivateAttr, Need::MemoryFaultInfo]),
    case!(memory_fault_slot_deleted, needs: &[Need::GuestMemfd, Need::UserMemory2, Need::PrivateAttr, Need::MemoryFaultInfo]),
    case!(memory_fault_slot_deleted_under_vcpu, needs: &[Need::GuestMemfd, Need::UserMemory2, Need::PrivateAttr, Need::MemoryFaultInfo]),
];

const PAGES: u64 = 4;

fn limit(tx: &Tx) -> Duration {
    tx.inner_limit(Duration::from_secs(10))
}

/// MMAP|INIT_SHARED: bytes written through the host mapping are what the
/// guest reads, and the guest's stores show up in the mapping.
fn shared_mmap_roundtrip(tx: &Tx) -> TestResult {
    let mut g = Guest::with_mode(tx, AccessMode::SharedMmap, PAGES, PAGES)?;
    let p = tx.page();
    for (page, host_val, guest_val) in [(0u64, 0x77u8, 0x99u8), (3, 0x12, 0x34), (1, 0xFE, 0x01)] {
        let off = (page * p + 0x123) as u16;
        let m = g
            .gmem_map
            .as_ref()
            .ok_or_else(|| crate::harness::case::Stop::Fail("no gmem mapping".into()))?;
        m.write(off as usize, host_val);
        let t = g.touch(off, guest_val, limit(tx))?;
        ensure(t.found == host_val, || {
            format!(
                "page {page}: guest read {:#x}, host wrote {host_val:#x} through the mapping",
                t.found
            )
        })?;
        ensure(t.readback == guest_val, || {
            format!(
                "page {page}: guest read back {:#x} after storing {guest_val:#x}",
                t.readback
            )
        })?;
        let m = g
            .gmem_map
            .as_ref()
            .ok_or_else(|| crate::harness::case::Stop::Fail("no gmem mapping".into()))?;
        let host = m.read(off as usize);
        ensure(host == guest_val, || {
            format!("page {page}: host reads {host:#x} through the mapping, guest stored {guest_val:#x}")
        })?;
    }
    Ok(())
}

/// PRIVATE attributes: the guest's accesses go to guest_memfd (fresh pages
/// read 0), never to the shared userspace_addr memory behind the slot.
fn private_roundtrip(tx: &Tx) -> TestResult {
    let mut g = Guest::with_mode(tx, AccessMode::Private, PAGES, PAGES)?;
    let p = tx.page();
    let shared = g
        .shared
        .as_ref()
        .ok_or_else(|| crate::harness::case::Stop::Fail("no shared backing".into()))?;
    shared.fill(0, shared.len(), 0xEE);
    for (page, val) in [(0u64, 0x99u8), (2, 0x42)] {
        let off = (page * p + 0x80) as u16;
        let t = g.touch(off, val, limit(tx))?;
        ensure(t.found == 0, || {
            format!("page {page}: first private read returned {:#x}, expected 0 (0xee would mean the shared memory)", t.found)
        })?;
        ensure(t.readback == val, || {
            format!(
                "page {page}: read back {:#x} after storing {val:#x}",
                t.readback
            )
        })?;
        let t = g.touch(off, val.wrapping_add(1), limit(tx))?;
        ensure(t.found == val, || {
            format!("page {page}: private data did not persist: {:#x}", t.found)
        })?;
    }
    let shared = g
        .shared
        .as_ref()
        .ok_or_else(|| crate::harness::case::Stop::Fail("no shared backing".into()))?;
    if let Some(i) = shared.first_ne(0, shared.len(), 0xEE) {
        return fail(format!(
            "a private store leaked into the shared memory at offset {i:#x} ({:#x})",
            shared.read(i)
        ));
    }
    Ok(())
}

/// Expects the access to end in KVM_EXIT_MEMORY_FAULT for the PRIVATE page
/// at `gpa`, with KVM_RUN failing with EFAULT (EHWPOISON is only for a
/// poisoned page).
fn expect_fault(
    what: &str,
    r: Result<crate::cases::guest::Touch, TouchError>,
    gpa: u64,
    size: u64,
) -> TestResult {
    match r {
        Err(TouchError::MemoryFault(m)) => {
            let want_flags = KVM_MEMORY_EXIT_FLAG_PRIVATE as u64;
            ensure(
                m.errno == libc::EFAULT && m.gpa == gpa && m.size == size && m.flags == want_flags,
                || {
                    format!(
                        "{what}: {m}, expected EFAULT, gpa {gpa:#x} size {size:#x} flags \
                         {want_flags:#x} (PRIVATE)"
                    )
                },
            )
        }
        Err(e) => fail(format!("{what}: expected KVM_EXIT_MEMORY_FAULT, got: {e}")),
        Ok(t) => fail(format!(
            "{what}: expected KVM_EXIT_MEMORY_FAULT, the guest completed its access ({t:?})"
        )),
    }
}

/// A PRIVATE page in a slot without guest_memfd: KVM_EXIT_MEMORY_FAULT.
fn memory_fault_private_without_gmem(tx: &Tx) -> TestResult {
    let p = tx.page();
    let mut g = Guest::without_gmem(tx, PAGES)?;
    // Shared page 0 works normally.
    let t = g.touch(0x10, 0x21, limit(tx))?;
    ensure(t.readback == 0x21, || {
        format!("shared access in the anonymous slot: {t:?}")
    })?;
    let gpa = DATA_GPA + 2 * p;
    g.vm.set_attributes(gpa, p, KVM_MEMORY_ATTRIBUTE_PRIVATE as u64)
        .or_fail("KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) on page 2")?;
    let r = g.touch((2 * p + 0x234) as u16, 0x55, limit(tx));
    expect_fault("PRIVATE page 2 in a slot without guest_memfd", r, gpa, p)
}

/// A PRIVATE page whose guest_memfd slot was deleted: KVM_EXIT_MEMORY_FAULT.
fn memory_fault_slot_deleted(tx: &Tx) -> TestResult {
    let p = tx.page();
    let mut g = Guest::with_mode(tx, AccessMode::Private, PAGES, PAGES)?;
    let off = (p + 0x10) as u16;
    let t = g.touch(off, 0x66, limit(tx))?;
    ensure(t.readback == 0x66, || {
        format!("private access before deletion: {t:?}")
    })?;
    g.unbind_data().or_fail("delete the guest_memfd slot")?;
    let r = g.touch(off, 0x67, limit(tx));
    expect_fault(
        "PRIVATE page 1 after its slot was deleted",
        r,
        DATA_GPA + p,
        p,
    )
}

/// The vCPU loops loading a PRIVATE page while another thread deletes its
/// guest_memfd slot: KVM_RUN must end in KVM_EXIT_MEMORY_FAULT for that page.
fn memory_fault_slot_deleted_under_vcpu(tx: &Tx) -> TestResult {
    let p = tx.page();
    let mut g = Guest::with_mode(tx, AccessMode::Private, PAGES, PAGES)?;
    let off = (3 * p + 0x18) as u16;
    let t = g.touch(off, 0x31, limit(tx))?;
    ensure(t.readback == 0x31, || {
        format!("private access before deletion: {t:?}")
    })?;
    g.start_loop(off)?;
    let region = g.data_region();
    let lim = limit(tx);
    let Guest { vcpu, vm, .. } = &mut g;
    let (exit, deleted) = std::thread::scope(|s| {
        let deleter = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            vm.delete_region(&region)
        });
        let exit = run_once(vcpu, lim);
        (exit, deleter.join())
    });
    match deleted {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return fail(format!(
                "deleting the slot under the vCPU: {}",
                crate::kvm::ename(&e)
            ))
        }
        Err(_) => return fail("the deleting thread panicked"),
    }
    let r = match exit {
        Exit::MemoryFault(m) => Err(TouchError::MemoryFault(m)),
        Exit::TimedOut => Err(TouchError::TimedOut {
            stage: 1,
            limit: lim,
        }),
        Exit::Io { port, value } => Err(TouchError::Unexpected(format!(
            "port I/O {port:#x} = {value:#x} from the load loop"
        ))),
        Exit::Other(m) => Err(TouchError::Unexpected(m)),
    };
    expect_fault(
        "PRIVATE page 3 whose slot was deleted while the vCPU ran",
        r,
        DATA_GPA + 3 * p,
        p,
    )
}
