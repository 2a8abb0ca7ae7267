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

pub const CASES: &[Case] = &[
    case!(thp_shared_side_mapping_level, needs: NEEDS),
    case!(thp_all_shared_range_mapped_huge, needs: NEEDS),
];

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

/// A VM of the case's type with private memory whose 2 MiB-aligned
/// guest_memfd slot has one transparent huge page as its shared side,
/// every gfn shared, after the guest read all of it.
struct ThpSlot {
    vm: Vm,
    vcpu: VcpuFd,
    _code: Mapping,
    _gmem: crate::kvm::GmemFile,
    _thp: Mapping,
    /// The VM's mappings once the guest read the all-shared slot.
    shared: Levels,
}

/// Builds a `ThpSlot`, after a default VM (the control) showed that this
/// machine maps the same THP-backed slot with a 2 MiB page: without that,
/// no check on the level could fail.
fn thp_slot(tx: &Tx, limit: Duration) -> Result<ThpSlot, Stop> {
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
    let code = code_slot(tx, &vm, pageops::install)?;
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
    tx.diag(format!("{who} VM, every gfn shared: {shared:?}"));
    Ok(ThpSlot {
        vm,
        vcpu,
        _code: code,
        _gmem: gmem,
        _thp: thp,
        shared,
    })
}

/// With one gfn of a THP-backed 2 MiB range PRIVATE, no 2 MiB page may
/// map that range, on any kernel: the huge mapping would cover a private
/// gfn with shared memory (upstream tracks mixed attributes per huge page,
/// 90b4fe17981e; the series maps VMs with private memory at 4 KiB only).
/// Which level the all-shared range gets differs between them, and is
/// the next case's.
fn thp_shared_side_mapping_level(tx: &Tx) -> TestResult {
    let limit = tx.inner_limit(Duration::from_secs(10));
    let p = tx.page();
    let mut slot = thp_slot(tx, limit)?;
    let who = tx.vm_type.suffix();
    slot.vm
        .set_attributes(
            SLOT_GPA + MIXED_PAGE * p,
            p,
            KVM_MEMORY_ATTRIBUTE_PRIVATE as u64,
        )
        .or_fail("KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) of one page of the slot")?;
    guest_reads_slot(&mut slot.vcpu, p, Some(MIXED_PAGE), limit, who)?;
    let mixed = levels(&slot.vm)?;
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

/// Upstream (6.8+) maps an all-shared 2 MiB range of a VM with private
/// memory with a 2 MiB page when a huge page backs it; the series does
/// not (it caps such VMs at 4 KiB instead of backporting the tracking of
/// mixed attributes per huge page, 90b4fe17981e), so on it the case skips
/// and the matrix shows the divergence patches/divergences.toml explains.
fn thp_all_shared_range_mapped_huge(tx: &Tx) -> TestResult {
    if !tx.caps.version.is_some_and(|v| v >= (6, 8)) {
        let why = match tx.caps.version {
            Some(_) => format!(
                "kernel {} is older than 6.8: VMs with private memory are mapped at 4 KiB only \
                 (the series does not backport 90b4fe17981e's per-huge-page attribute tracking)",
                tx.caps.release
            ),
            None => format!(
                "kernel release {:?} not parsed: cannot tell whether it maps huge pages for VMs \
                 with private memory (6.8+)",
                tx.caps.release
            ),
        };
        return Err(Stop::lacking(Lack::Version(6, 8), why));
    }
    let limit = tx.inner_limit(Duration::from_secs(10));
    let slot = thp_slot(tx, limit)?;
    let who = tx.vm_type.suffix();
    ensure(slot.shared.pages_2m >= 1, || {
        format!(
            "{who} VM: the all-shared THP-backed range is mapped with {} 4 KiB pages and no 2 MiB \
             page",
            slot.shared.pages_4k
        )
    })
}
