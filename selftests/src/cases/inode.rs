//! What the guest_memfd inode looks like from userspace.
//!
//! Upstream makes the gmem file a secure anonymous inode (the LSM hook
//! security_inode_init_security_anon() runs for it). The hook itself leaves
//! no trace userspace can read; what does show is where the file lives:
//! /proc/self/fd/N of an anon_inode file reads `anon_inode:[kvm-gmem]`,
//! while a file of a private pseudo mount reads `/[kvm-gmem] (deleted)`.

use crate::caps::Need;
use crate::case::{ensure, Case, OrFail, TestResult, Tx};

pub const CASES: &[Case] = &[Case {
    area: "inode",
    name: "proc_fd_link_is_anon_inode",
    needs: &[Need::GuestMemfd],
    run: proc_fd_link_is_anon_inode,
}];

const WANT: &str = "anon_inode:[kvm-gmem]";

fn proc_fd_link_is_anon_inode(tx: &Tx) -> TestResult {
    let (_vm, g) = tx.vm_with_gmem(1, 0)?;
    let link = format!("/proc/self/fd/{}", g.fd());
    let target = std::fs::read_link(&link).or_fail(&format!("readlink {link}"))?;
    let target = target.to_string_lossy();
    tx.diag(format!("readlink {link}: {target}"));
    ensure(target == WANT, || {
        format!(
            "readlink of a guest_memfd fd gives {target:?}, upstream gives {WANT:?} \
             (the file should be an anon_inode file, made with the secure anon inode API)"
        )
    })
}
