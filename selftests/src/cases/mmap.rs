//! mmap() of guest_memfd (GUEST_MEMFD_FLAG_MMAP, 6.18+).

use std::path::Path;

use crate::harness::case::{ensure, expect_errno, fail, Case, OrFail, Stop, TestResult, Tx};
use crate::harness::isolate::{dies_with_signal, signal_name};
use crate::kvm::caps::{Lack, Need};
use crate::kvm::{errno_name, Errno, Mapping, GUEST_MEMFD_FLAG_INIT_SHARED, GUEST_MEMFD_FLAG_MMAP};
use std::os::fd::AsRawFd;

const MMAP: u64 = GUEST_MEMFD_FLAG_MMAP;
const BOTH: u64 = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED;

pub const CASES: &[Case] = &[
    case!(without_mmap_flag_enodev, needs: &[Need::GmemCreate]),
    case!(map_private_einval, needs: &[Need::GmemCreate, Need::GmemFlags(MMAP)]),
    case!(no_init_shared_sigbus, needs: &[Need::GmemCreate, Need::GmemFlags(MMAP)]),
    case!(punched_pages_read_zero, needs: &[Need::GmemCreate, Need::GmemFlags(BOTH)]),
    case!(past_eof_sigbus, needs: &[Need::GmemCreate, Need::GmemFlags(BOTH)]),
    case!(mbind_policy_round_trip, needs: &[Need::GmemCreate, Need::GmemFlags(MMAP)]),
    case!(numa_allocation_follows_policy, needs: &[Need::GmemCreate, Need::GmemFlags(BOTH)]),
    case!(madv_collapse_einval, needs: &[Need::GmemCreate, Need::GmemFlags(BOTH)]),
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

/// The online NUMA nodes, from /sys/devices/system/node/online.
pub const NODE_ONLINE: &str = "/sys/devices/system/node/online";

pub fn online_nodes() -> Result<Vec<u32>, String> {
    let text = std::fs::read_to_string(NODE_ONLINE).map_err(|e| format!("{NODE_ONLINE}: {e}"))?;
    parse_node_list(&text).ok_or_else(|| format!("{NODE_ONLINE}: cannot parse {text:?}"))
}

/// A kernel node list such as "0-1,3" (a trailing newline is fine).
fn parse_node_list(text: &str) -> Option<Vec<u32>> {
    let mut nodes = Vec::new();
    for part in text.trim().split(',').filter(|s| !s.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b) = (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?);
        if a > b {
            return None;
        }
        nodes.extend(a..=b);
    }
    Some(nodes)
}

/// Skips unless nodes 0 and 1 are online (upstream's
/// is_multi_numa_node_system()); a one-node guest has nowhere to place pages.
fn need_two_nodes(tx: &Tx) -> Result<(), Stop> {
    if !Path::new(NODE_ONLINE).exists() {
        return Err(Stop::lacking(
            Lack::Numa(2),
            format!(
                "no {NODE_ONLINE}: the kernel is built without CONFIG_NUMA (the numa fragment)"
            ),
        ));
    }
    let nodes = online_nodes().map_err(Stop::Fail)?;
    tx.diag(format!("online NUMA nodes {nodes:?}"));
    if nodes.contains(&0) && nodes.contains(&1) {
        Ok(())
    } else {
        Err(Stop::lacking(
            Lack::Numa(2),
            format!(
                "NUMA nodes 0 and 1 not both online (online: {nodes:?}): one node leaves nowhere \
                 else to place pages (`cargo xtask test --numa 2` gives a guest two)"
            ),
        ))
    }
}

fn mbind(addr: u64, len: u64, mode: i32, mask: Option<&u64>, maxnode: u64) -> Result<(), Errno> {
    let m = mask.map_or(std::ptr::null(), |m| m as *const u64);
    // SAFETY: mbind only reads `mask` (maxnode bits of one u64) and changes
    // the policy of a range we mapped.
    let r = unsafe { libc::syscall(libc::SYS_mbind, addr, len, mode, m, maxnode, 0u32) };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// get_mempolicy(MPOL_F_ADDR) of the page at `addr`: (mode, nodemask).
fn policy_at(addr: u64) -> Result<(i32, u64), Errno> {
    const MPOL_F_ADDR: u64 = 1 << 1;
    let (mut mode, mut mask) = (0i32, 0u64);
    // SAFETY: valid out pointers; 64 bits of mask.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            &mut mode as *mut i32,
            &mut mask as *mut u64,
            64u64,
            addr,
            MPOL_F_ADDR,
        )
    };
    if r == 0 {
        Ok((mode, mask))
    } else {
        Err(Errno::last())
    }
}

/// The node each page of `addrs` is on (move_pages with no target nodes).
fn nodes_of(addrs: &[u64]) -> Result<Vec<i32>, Errno> {
    let pages: Vec<*mut libc::c_void> = addrs.iter().map(|&a| a as *mut libc::c_void).collect();
    let mut status = vec![-1i32; addrs.len()];
    // SAFETY: arrays of addrs.len() entries; nodes NULL means "query".
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            0,
            addrs.len() as u64,
            pages.as_ptr(),
            std::ptr::null::<i32>(),
            status.as_mut_ptr(),
            0,
        )
    };
    if r == 0 {
        Ok(status)
    } else {
        Err(Errno::last())
    }
}

fn mpol_ok<T>(what: &str, r: Result<T, Errno>) -> Result<T, Stop> {
    r.map_err(|e| Stop::Fail(format!("{what}: {}", errno_name(e.errno()))))
}

/// Upstream's mbind test on a guest_memfd mapping: INTERLEAVE and BIND on
/// node 0 read back with get_mempolicy(MPOL_F_ADDR), DEFAULT clears them,
/// an unknown mode is EINVAL.
fn mbind_policy_round_trip(tx: &Tx) -> TestResult {
    need_two_nodes(tx)?;
    let p = tx.page();
    let (_vm, g) = tx.vm_with_gmem(PAGES, MMAP)?;
    let m = g
        .mmap_shared((PAGES * p) as usize)
        .or_fail("mmap(MAP_SHARED)")?;
    let node0 = 1u64;
    mpol_ok(
        "mbind(MPOL_INTERLEAVE, node 0) pages 0..2",
        mbind(m.addr(), 2 * p, libc::MPOL_INTERLEAVE, Some(&node0), 64),
    )?;
    let got = mpol_ok("get_mempolicy(page 0)", policy_at(m.addr()))?;
    ensure(got == (libc::MPOL_INTERLEAVE, node0), || {
        format!("page 0: policy {got:?}, expected (MPOL_INTERLEAVE, 0x1)")
    })?;
    mpol_ok(
        "mbind(MPOL_BIND, node 0) pages 2..4",
        mbind(m.addr() + 2 * p, 2 * p, libc::MPOL_BIND, Some(&node0), 64),
    )?;
    let got = mpol_ok("get_mempolicy(page 2)", policy_at(m.addr() + 2 * p))?;
    ensure(got == (libc::MPOL_BIND, node0), || {
        format!("page 2: policy {got:?}, expected (MPOL_BIND, 0x1)")
    })?;
    mpol_ok(
        "mbind(MPOL_DEFAULT) over the mapping",
        mbind(m.addr(), PAGES * p, libc::MPOL_DEFAULT, None, 0),
    )?;
    let got = mpol_ok("get_mempolicy(page 0)", policy_at(m.addr()))?;
    ensure(got == (libc::MPOL_DEFAULT, 0), || {
        format!("page 0 after MPOL_DEFAULT: policy {got:?}, expected (MPOL_DEFAULT, 0x0)")
    })?;
    expect_errno(
        "mbind with mode 999",
        mbind(m.addr(), p, 999, Some(&node0), 64),
        libc::EINVAL,
    )
}

/// Upstream's NUMA allocation test: pages allocated after mbind land on
/// the bound node, and after a punch the new policy places the new pages.
fn numa_allocation_follows_policy(tx: &Tx) -> TestResult {
    // No capability announces it: guest_memfd allocates by the mapping's
    // shared policy from 6.19 (6.18 has no kvm_gmem set_policy/get_policy;
    // its pages follow the faulting task's policy instead).
    if !tx.caps.version.is_some_and(|v| v >= (6, 19)) {
        let why = match tx.caps.version {
            Some(_) => format!(
                "kernel {} is older than 6.19: guest_memfd does not allocate by NUMA mempolicy",
                tx.caps.release
            ),
            None => format!(
                "kernel release {:?} not parsed: cannot tell whether guest_memfd allocates by \
                 NUMA mempolicy (6.19+)",
                tx.caps.release
            ),
        };
        return Err(Stop::lacking(Lack::Version(6, 19), why));
    }
    need_two_nodes(tx)?;
    let p = tx.page();
    let (_vm, g) = tx.vm_with_gmem(PAGES, BOTH)?;
    let m = g
        .mmap_shared((PAGES * p) as usize)
        .or_fail("mmap(MAP_SHARED)")?;
    let (n0, n1) = (1u64, 2u64);
    let addrs: Vec<u64> = (0..PAGES).map(|i| m.addr() + i * p).collect();
    let place = |lo: u64, hi: u64, want: [i32; 4], what: &str| -> TestResult {
        mpol_ok(
            "mbind(MPOL_BIND) pages 0..2",
            mbind(addrs[0], 2 * p, libc::MPOL_BIND, Some(&lo), 8),
        )?;
        mpol_ok(
            "mbind(MPOL_BIND) pages 2..4",
            mbind(addrs[2], 2 * p, libc::MPOL_BIND, Some(&hi), 8),
        )?;
        m.fill(0, m.len(), 0xAA);
        let got = mpol_ok("move_pages (query)", nodes_of(&addrs))?;
        ensure(got == want, || {
            format!("{what}: pages are on nodes {got:?}, expected {want:?}")
        })
    };
    // A policy set after the page was allocated, then the page punched.
    m.fill(0, p as usize, 0xAA);
    mpol_ok(
        "mbind(MPOL_BIND, node 0) page 0",
        mbind(addrs[0], p, libc::MPOL_BIND, Some(&n0), 8),
    )?;
    g.punch(0, p).or_fail("PUNCH_HOLE page 0")?;
    place(n1, n0, [1, 1, 0, 0], "bound 0..2 to node 1, 2..4 to node 0")?;
    g.punch(0, PAGES * p).or_fail("PUNCH_HOLE the file")?;
    place(
        n0,
        n1,
        [0, 0, 1, 1],
        "after the punch: 0..2 to node 0, 2..4 to node 1",
    )
}

/// Upstream's collapse test: MADV_HUGEPAGE on a PMD-aligned mapping of a
/// PMD-sized MMAP|INIT_SHARED file is fine, MADV_COLLAPSE is EINVAL (a
/// huge folio would map beyond the shared ranges), and the pages fault
/// back in after MADV_DONTNEED.
fn madv_collapse_einval(tx: &Tx) -> TestResult {
    let path = "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size";
    let pmd: u64 = match std::fs::read_to_string(path) {
        Ok(t) => t
            .trim()
            .parse()
            .map_err(|_| Stop::Fail(format!("{path}: cannot parse {t:?}")))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Stop::lacking(
                Lack::Config("CONFIG_TRANSPARENT_HUGEPAGE"),
                format!("no transparent huge pages ({path}: {e})"),
            ))
        }
        Err(e) => return fail(format!("{path}: {e}")),
    };
    let (_vm, g) = tx.vm_with_gmem(pmd / tx.page(), BOTH)?;
    // Reserve twice the size, then map the file at the aligned address in it.
    let reserve = Mapping::anon(2 * pmd as usize).or_fail("mmap(anon reserve)")?;
    let aligned = (reserve.addr() + pmd - 1) & !(pmd - 1);
    // SAFETY: MAP_FIXED inside our own reservation, which stays mapped
    // (and is unmapped as a whole on drop) for as long as we use it.
    let mem = unsafe {
        libc::mmap(
            aligned as *mut libc::c_void,
            pmd as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_FIXED,
            g.as_raw_fd(),
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        return fail(format!(
            "mmap(MAP_FIXED|MAP_SHARED) of the guest_memfd at {aligned:#x}: {}",
            errno_name(Errno::last().errno())
        ));
    }
    let madvise = |advice: i32| -> Result<(), Errno> {
        // SAFETY: advice on our own mapping.
        if unsafe { libc::madvise(aligned as *mut libc::c_void, pmd as usize, advice) } == 0 {
            Ok(())
        } else {
            Err(Errno::last())
        }
    };
    // Reads populate the page tables without dirtying the pages.
    for off in (0..pmd).step_by(tx.page() as usize) {
        // SAFETY: inside the file mapping just made.
        let _ = unsafe { std::ptr::read_volatile((aligned + off) as *const u8) };
    }
    mpol_ok("madvise(MADV_HUGEPAGE)", madvise(libc::MADV_HUGEPAGE))?;
    expect_errno(
        "madvise(MADV_COLLAPSE) on a guest_memfd mapping",
        madvise(libc::MADV_COLLAPSE),
        libc::EINVAL,
    )?;
    mpol_ok("madvise(MADV_DONTNEED)", madvise(libc::MADV_DONTNEED))?;
    // SAFETY: as above.
    let b = unsafe { std::ptr::read_volatile(aligned as *const u8) };
    ensure(b == 0, || {
        format!("first byte after MADV_DONTNEED reads {b:#x}, expected 0")
    })?;
    drop(reserve);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_node_list;

    #[test]
    fn node_lists() {
        assert_eq!(parse_node_list("0\n"), Some(vec![0]));
        assert_eq!(parse_node_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_node_list("0-1,3"), Some(vec![0, 1, 3]));
        assert_eq!(parse_node_list(""), Some(vec![]));
        assert_eq!(parse_node_list("x"), None);
        assert_eq!(parse_node_list("3-1"), None);
    }
}
