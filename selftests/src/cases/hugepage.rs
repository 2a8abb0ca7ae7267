//! Which page size KVM maps guest memory with when a 2 MiB transparent
//! huge page backs it (upstream's private_mem_conversions_test with `-s`
//! THP backing), read from the VM's binary stats `pages_4k` and `pages_2m`.

use std::os::fd::AsRawFd;
use std::time::Duration;

use kvm_ioctls::VcpuFd;

use crate::cases::guest::{code_slot, flat_vcpu};
use crate::cases::pageops::{self, expect_range};
use crate::harness::case::{ensure, Case, OrFail, Stop, TestResult, Tx};
use crate::harness::thp;
use crate::kvm::caps::{Lack, Need};
use crate::kvm::{Mapping, Region, Vm, VmType, KVM_MEMORY_ATTRIBUTE_PRIVATE, KVM_MEM_GUEST_MEMFD};

const NEEDS: &[Need] = &[Need::GuestMemfd, Need::UserMemory2, Need::PrivateAttr];

pub const CASES: &[Case] = &[case!(thp_shared_side_mapping_level, needs: NEEDS)];

const SZ_2M: u64 = 2 << 20;
/// The data slot: one 2 MiB-aligned range of GPAs.
const SLOT: u32 = 1;
const SLOT_GPA: u64 = 0x40_0000;
const PATTERN: u8 = 0x5C;
/// The page of the slot made PRIVATE to mix the 2 MiB range.
const MIXED_PAGE: u64 = 5;

/// The VM's current count of 4 KiB and 2 MiB mappings.
#[derive(Debug, Clone, Copy)]
struct Levels {
    pages_4k: u64,
    pages_2m: u64,
}

fn levels(vm: &Vm) -> Result<Levels, Stop> {
    let stats = vm.stats().map_err(Stop::Fail)?;
    let get = |name: &str| {
        stats
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, v)| v)
            .ok_or_else(|| Stop::Fail(format!("the VM's binary stats have no {name}")))
    };
    Ok(Levels {
        pages_4k: get("pages_4k")?,
        pages_2m: get("pages_2m")?,
    })
}

/// 2 MiB of anonymous memory on one transparent huge page, filled with
/// `PATTERN`; a SKIP naming THP when the kernel has none (`config=`) or
/// gives none (`env=THP`: disabled, or no free huge page).
fn thp_backing(tx: &Tx) -> Result<Mapping, Stop> {
    let lack = |why: String| Stop::lacking(Lack::Env("THP".into()), why);
    match thp::mode().as_deref() {
        None => {
            return Err(Stop::lacking(
                Lack::Config("CONFIG_TRANSPARENT_HUGEPAGE"),
                format!("no {}", thp::ENABLED),
            ))
        }
        Some("never") => return Err(lack(format!("{} is `never`", thp::ENABLED))),
        Some(_) => {}
    }
    let m = Mapping::anon_aligned(SZ_2M as usize, SZ_2M as usize)
        .or_fail("mmap(anon) of 2 MiB at a 2 MiB boundary")?;
    m.madvise(libc::MADV_HUGEPAGE)
        .or_fail("madvise(MADV_HUGEPAGE)")?;
    m.fill(0, SZ_2M as usize, PATTERN);
    let mut huge = thp::anon_huge_kib(m.addr()).map_err(Stop::Fail)?;
    if huge < 2048 {
        // The first touch found no free huge page; a collapse compacts
        // memory for one (its failure shows in the count).
        let _ = m.madvise(libc::MADV_COLLAPSE);
        huge = thp::anon_huge_kib(m.addr()).map_err(Stop::Fail)?;
    }
    if huge < 2048 {
        return Err(lack(format!(
            "no 2 MiB page behind a 2 MiB-aligned MADV_HUGEPAGE mapping (AnonHugePages {huge} kB \
             after MADV_COLLAPSE)"
        )));
    }
    tx.diag(format!(
        "THP {:?}: the slot's memory is one 2 MiB page",
        thp::mode()
    ));
    Ok(m)
}

/// The guest reads the whole slot: `PATTERN`, except the page made
/// PRIVATE (fresh guest_memfd memory: 0) when there is one.
fn guest_reads_slot(
    vcpu: &mut VcpuFd,
    page: u64,
    private_page: Option<u64>,
    limit: Duration,
    who: &str,
) -> TestResult {
    let stretches = match private_page {
        None => vec![(0, SZ_2M, PATTERN)],
        Some(k) => vec![
            (0, k * page, PATTERN),
            (k * page, page, 0),
            ((k + 1) * page, SZ_2M - (k + 1) * page, PATTERN),
        ],
    };
    for (off, len, want) in stretches {
        expect_range(vcpu, SLOT_GPA + off, len, want, limit, || {
            format!("{who}: guest read of the THP-backed slot")
        })?;
    }
    Ok(())
}

/// A 2 MiB-aligned slot whose memory is one transparent huge page, read
/// by the guest of two VMs. A default VM (the control) maps it with a
/// 2 MiB page: KVM and the machine can map huge pages here, so the next
/// check can fail. Then a VM of the case's type with private memory, the
/// slot bound to a guest_memfd and every gfn shared: the series maps it
/// with 4 KiB pages only (it does not backport upstream's tracking of
/// mixed attributes per huge page, 90b4fe17981e, and caps such VMs at 4
/// KiB), upstream (6.8+) with one 2 MiB page. With one gfn of the range
/// PRIVATE, no 2 MiB page maps it on either.
fn thp_shared_side_mapping_level(tx: &Tx) -> TestResult {
    let limit = tx.inner_limit(Duration::from_secs(10));
    let p = tx.page();
    let thp = thp_backing(tx)?;

    let control = {
        let vm = Vm::create(VmType::Default).map_err(|e| Stop::Fail(e.to_string()))?;
        let _low = code_slot(tx, &vm, pageops::install)?;
        vm.set_region2(&Region {
            slot: SLOT,
            gpa: SLOT_GPA,
            size: SZ_2M,
            uaddr: thp.addr(),
            ..Default::default()
        })
        .or_fail("KVM_SET_USER_MEMORY_REGION2(default VM, THP-backed slot)")?;
        let mut vcpu = flat_vcpu(&vm, 0, limit).or_fail("vCPU 0 of the default VM")?;
        guest_reads_slot(&mut vcpu, p, None, limit, "default VM")?;
        levels(&vm)?
    };
    tx.diag(format!("default VM: {control:?}"));
    ensure(control.pages_2m >= 1, || {
        format!(
            "a default VM maps the THP-backed slot with {} 4 KiB pages and no 2 MiB page: a VM \
             without private memory lost its huge mappings (or this machine maps none, and the \
             check on private memory could not fail)",
            control.pages_4k
        )
    })?;

    let vm = tx.vm()?;
    let _low = code_slot(tx, &vm, pageops::install)?;
    let gmem = vm.create_gmem(SZ_2M, 0).or_fail("KVM_CREATE_GUEST_MEMFD")?;
    vm.set_region2(&Region {
        slot: SLOT,
        flags: KVM_MEM_GUEST_MEMFD,
        gpa: SLOT_GPA,
        size: SZ_2M,
        uaddr: thp.addr(),
        gmem_offset: 0,
        gmem_fd: gmem.as_raw_fd() as u32,
    })
    .or_fail("KVM_SET_USER_MEMORY_REGION2(guest_memfd slot, THP shared side)")?;
    let who = tx.vm_type.suffix();
    let mut vcpu = flat_vcpu(&vm, 0, limit).or_fail("vCPU 0")?;
    guest_reads_slot(&mut vcpu, p, None, limit, who)?;
    let shared = levels(&vm)?;
    let (huge_ok, why) = tx.caps.huge_shared_with_private_mem();
    tx.diag(format!("{who} VM, every gfn shared: {shared:?}; {why}"));
    if huge_ok {
        ensure(shared.pages_2m >= 1, || {
            format!(
                "{who} VM: the all-shared THP-backed range is mapped with {} 4 KiB pages and no \
                 2 MiB page ({why})",
                shared.pages_4k
            )
        })?;
    } else {
        ensure(shared.pages_2m == 0, || {
            format!(
                "{who} VM: {} 2 MiB mapping(s) in a VM with private memory ({why})",
                shared.pages_2m
            )
        })?;
    }

    vm.set_attributes(
        SLOT_GPA + MIXED_PAGE * p,
        p,
        KVM_MEMORY_ATTRIBUTE_PRIVATE as u64,
    )
    .or_fail("KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) of one page of the slot")?;
    guest_reads_slot(&mut vcpu, p, Some(MIXED_PAGE), limit, who)?;
    let mixed = levels(&vm)?;
    tx.diag(format!("{who} VM, page {MIXED_PAGE} PRIVATE: {mixed:?}"));
    ensure(mixed.pages_2m == 0, || {
        format!(
            "{who} VM: {} 2 MiB mapping(s) while page {MIXED_PAGE} of the 2 MiB range is PRIVATE",
            mixed.pages_2m
        )
    })?;
    ensure(mixed.pages_4k >= SZ_2M / p, || {
        format!(
            "{who} VM: {} 4 KiB mappings after the guest read all {} pages of the mixed range",
            mixed.pages_4k,
            SZ_2M / p
        )
    })
}
