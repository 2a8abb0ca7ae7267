//! What the guest_memfd inode looks like from userspace.
//!
//! Upstream makes the gmem file a secure anonymous inode (the LSM hook
//! security_inode_init_security_anon() runs for it). The hook itself leaves
//! no trace userspace can read; what does show is where the file lives:
//! /proc/self/fd/N of an anon_inode file reads `anon_inode:[kvm-gmem]` and
//! fstatfs() gives the anon_inode filesystem's magic, while a file of a
//! private pseudo mount reads `/[kvm-gmem] (deleted)` and has that mount's.

use crate::harness::case::{ensure, fail, Case, OrFail, Stop, TestResult, Tx};
use crate::kvm::caps::Lack;
use crate::kvm::{ename, Errno, KVM_CAP_GUEST_MEMFD};
use std::os::fd::AsRawFd;

pub const CASES: &[Case] = &[
    // KVM_CREATE_GUEST_MEMFD itself has no VM-type check on the 6.8 uAPI:
    // what the case needs is /dev/kvm's KVM_CAP_GUEST_MEMFD, checked below,
    // not the per-VM answer (whether the VM takes gmem memslots).
    case!(proc_fd_link_is_anon_inode),
];

const WANT: &str = "anon_inode:[kvm-gmem]";
/// ANON_INODE_FS_MAGIC (include/uapi/linux/magic.h).
const ANON_INODE_FS_MAGIC: i64 = 0x0904_1934;

fn proc_fd_link_is_anon_inode(tx: &Tx) -> TestResult {
    let vm = tx.vm()?;
    let system = vm.check_system(KVM_CAP_GUEST_MEMFD);
    if system <= 0 {
        return Err(Stop::lacking(
            Lack::Cap("KVM_CAP_GUEST_MEMFD"),
            format!("KVM_CAP_GUEST_MEMFD is {system} on /dev/kvm: no guest_memfd on this kernel"),
        ));
    }
    let g = vm.create_gmem(tx.page(), 0).or_fail(&format!(
        "KVM_CREATE_GUEST_MEMFD on a {} VM",
        tx.vm_type.suffix()
    ))?;
    let link = format!("/proc/self/fd/{}", g.as_raw_fd());
    let target = std::fs::read_link(&link).or_fail(&format!("readlink {link}"))?;
    let target = target.to_string_lossy();
    tx.diag(format!("readlink {link}: {target}"));
    // SAFETY: st is a valid out buffer for fstatfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: plain syscall on an fd we own.
    if unsafe { libc::fstatfs(g.as_raw_fd(), &mut st) } != 0 {
        return fail(format!("fstatfs(guest_memfd): {}", ename(&Errno::last())));
    }
    let magic = st.f_type as i64;
    tx.diag(format!("fstatfs f_type {magic:#x}"));
    ensure(target == WANT, || {
        format!(
            "readlink of a guest_memfd fd gives {target:?}, upstream gives {WANT:?} \
             (the file should be an anon_inode file, made with the secure anon inode API)"
        )
    })?;
    ensure(magic == ANON_INODE_FS_MAGIC, || {
        format!(
            "fstatfs(guest_memfd) f_type is {magic:#x}, upstream's gmem inode lives on the \
             anon_inode filesystem ({ANON_INODE_FS_MAGIC:#x})"
        )
    })
}
