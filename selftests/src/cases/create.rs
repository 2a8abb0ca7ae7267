//! KVM_CREATE_GUEST_MEMFD: flags, sizes, identity, fstat, no read/write.

use std::os::fd::AsRawFd;

use crate::harness::case::{ensure, expect_errno, expect_ok, fail, Case, OrFail, TestResult, Tx};
use crate::kvm::caps::flag_names;
use crate::kvm::caps::Need;
use crate::kvm::{GUEST_MEMFD_FLAG_INIT_SHARED, GUEST_MEMFD_FLAG_MMAP, KVM_CREATE_GUEST_MEMFD};

pub const CASES: &[Case] = &[
    case!(each_flag_bit, needs: &[Need::GmemCreate]),
    case!(unaligned_sizes_einval, needs: &[Need::GmemCreate]),
    case!(distinct_inodes, needs: &[Need::GmemCreate]),
    case!(fstat_size_and_blksize, needs: &[Need::GmemCreate]),
    case!(size_and_mode_are_fixed, needs: &[Need::GmemCreate]),
    case!(mmap_file_rules, needs: &[Need::GmemCreate, Need::GmemFlags(GUEST_MEMFD_FLAG_MMAP)]),
    case!(init_shared_file_rules, needs: &[Need::GmemCreate, Need::GmemFlags(GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED)]),
    case!(read_write_fail, needs: &[Need::GmemCreate]),
    case!(unreadable_request_efault, needs: &[Need::GmemCreate]),
    case!(lowest_free_fd_is_zero, needs: &[Need::GmemCreate]),
];

/// Every single flag bit: those in KVM_CAP_GUEST_MEMFD_FLAGS succeed, the rest EINVAL.
fn each_flag_bit(tx: &Tx) -> TestResult {
    let vm = tx.vm()?;
    let valid = tx.gmem_flags();
    tx.diag(format!(
        "valid flags per KVM_CAP_GUEST_MEMFD_FLAGS: {valid:#x} ({})",
        flag_names(valid)
    ));
    for bit in 0..64 {
        let flag = 1u64 << bit;
        let r = vm.create_gmem(tx.page(), flag);
        if valid & flag != 0 {
            expect_ok(&format!("create with valid flag {flag:#x}"), r)?;
        } else {
            expect_errno(
                &format!("create with invalid flag bit {bit} ({flag:#x})"),
                r,
                libc::EINVAL,
            )?;
        }
    }
    if valid != 0 {
        expect_ok(
            &format!("create with all valid flags {valid:#x}"),
            vm.create_gmem(tx.page(), valid),
        )?;
    }
    Ok(())
}

/// Size 0 and every size that is not a multiple of the page size: EINVAL.
fn unaligned_sizes_einval(tx: &Tx) -> TestResult {
    let vm = tx.vm()?;
    let p = tx.page();
    expect_errno("create with size 0", vm.create_gmem(0, 0), libc::EINVAL)?;
    for size in (1..p).chain([p + 1, 2 * p - 1, 3 * p + p / 2]) {
        expect_errno(
            &format!("create with size {size:#x}"),
            vm.create_gmem(size, 0),
            libc::EINVAL,
        )?;
    }
    expect_ok("create with size of one page", vm.create_gmem(p, 0))?;
    Ok(())
}

/// Two guest_memfd files of different sizes are distinct inodes, each with
/// its own size: creating the second leaves the first as it was.
fn distinct_inodes(tx: &Tx) -> TestResult {
    let p = tx.page();
    let (vm, a) = tx.vm_with_gmem(1, 0)?;
    let before = a.fstat().or_fail("fstat(first)")?;
    ensure(before.st_size as u64 == p, || {
        format!("first file: st_size {} != requested {p}", before.st_size)
    })?;
    let b = vm
        .create_gmem(2 * p, 0)
        .or_fail("second KVM_CREATE_GUEST_MEMFD")?;
    let sb = b.fstat().or_fail("fstat(second)")?;
    ensure(sb.st_size as u64 == 2 * p, || {
        format!("second file: st_size {} != requested {}", sb.st_size, 2 * p)
    })?;
    let sa = a.fstat().or_fail("fstat(first, again)")?;
    tx.diag(format!(
        "inodes {} ({} bytes) and {} ({} bytes)",
        sa.st_ino, sa.st_size, sb.st_ino, sb.st_size
    ));
    ensure(sa.st_size as u64 == p, || {
        format!(
            "first file's st_size changed from {p} to {} when the second was created",
            sa.st_size
        )
    })?;
    ensure(sa.st_ino == before.st_ino, || {
        format!(
            "first file's inode changed from {} to {}",
            before.st_ino, sa.st_ino
        )
    })?;
    ensure(sa.st_ino != sb.st_ino, || {
        format!("both files have inode {}", sa.st_ino)
    })
}

fn mmap_file_rules(tx: &Tx) -> TestResult {
    file_rules(tx, GUEST_MEMFD_FLAG_MMAP)
}

fn init_shared_file_rules(tx: &Tx) -> TestResult {
    file_rules(tx, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED)
}

/// Upstream runs its file tests once per flag set the VM type offers: the
/// size, inode and fallocate rules hold for mmap()able files too.
fn file_rules(tx: &Tx, flags: u64) -> TestResult {
    let vm = tx.vm()?;
    let p = tx.page();
    let f = flag_names(flags);
    tx.diag(format!("flags {flags:#x} ({f})"));
    for size in (0..p).chain([p + 1, 2 * p - 1]) {
        expect_errno(
            &format!("create {f} with size {size:#x}"),
            vm.create_gmem(size, flags),
            libc::EINVAL,
        )?;
    }
    let a = vm
        .create_gmem(p, flags)
        .or_fail(&format!("create {f}, one page"))?;
    let b = vm
        .create_gmem(4 * p, flags)
        .or_fail(&format!("create {f}, four pages"))?;
    let (sa, sb) = (a.fstat().or_fail("fstat")?, b.fstat().or_fail("fstat")?);
    ensure(sa.st_size as u64 == p && sb.st_size as u64 == 4 * p, || {
        format!(
            "{f}: st_size {} and {}, expected {p} and {}",
            sa.st_size,
            sb.st_size,
            4 * p
        )
    })?;
    ensure(sa.st_blksize as u64 == p && sa.st_ino != sb.st_ino, || {
        format!(
            "{f}: st_blksize {} (page {p}), inodes {} and {}",
            sa.st_blksize, sa.st_ino, sb.st_ino
        )
    })?;
    let total = 4 * p;
    expect_ok("allocate the file", b.allocate(0, total))?;
    expect_errno("punch at unaligned offset", b.punch(p - 1, p), libc::EINVAL)?;
    expect_errno("allocate at EOF", b.allocate(total, p), libc::EINVAL)?;
    expect_errno("allocate past EOF", b.allocate(total + p, p), libc::EINVAL)?;
    expect_ok("punch at EOF", b.punch(total, p))?;
    expect_ok("punch past EOF", b.punch(total + p, p))?;
    expect_errno("punch of unaligned length", b.punch(p, p - 1), libc::EINVAL)?;
    expect_ok("punch page 1", b.punch(p, p))?;
    expect_ok("re-allocate page 1", b.allocate(p, p))?;
    for (off, len) in [(0, 1), (1, p), (p, p + 1)] {
        expect_errno(
            &format!("punch offset {off:#x} len {len:#x}"),
            b.punch(off, len),
            libc::EINVAL,
        )?;
    }
    Ok(())
}

/// fstat reports the requested size and the page size as blksize.
fn fstat_size_and_blksize(tx: &Tx) -> TestResult {
    let p = tx.page();
    let (_vm, g) = tx.vm_with_gmem(4, 0)?;
    let st = g.fstat().or_fail("fstat")?;
    ensure(st.st_size as u64 == 4 * p, || {
        format!("st_size {} != requested {}", st.st_size, 4 * p)
    })?;
    ensure(st.st_blksize as u64 == p, || {
        format!("st_blksize {} != page size {p}", st.st_blksize)
    })?;
    Ok(())
}

/// A guest_memfd's attributes cannot change: its setattr refuses every
/// change with EINVAL (upstream since 6.8), so ftruncate() to another size
/// (or to the same one) and fchmod() fail, and fstat still shows the size
/// and mode the file was created with.
fn size_and_mode_are_fixed(tx: &Tx) -> TestResult {
    let p = tx.page();
    let (_vm, g) = tx.vm_with_gmem(4, 0)?;
    let before = g.fstat().or_fail("fstat")?;
    for len in [8 * p, 2 * p, 4 * p, 0] {
        expect_errno(
            &format!("ftruncate to {len:#x}"),
            g.truncate(len),
            libc::EINVAL,
        )?;
    }
    let other_mode = (before.st_mode & 0o7777) ^ 0o077;
    expect_errno(
        &format!("fchmod {other_mode:#o}"),
        g.chmod(other_mode),
        libc::EINVAL,
    )?;
    let after = g.fstat().or_fail("fstat")?;
    ensure(
        (after.st_size, after.st_mode) == (before.st_size, before.st_mode),
        || {
            format!(
                "size {:#x} mode {:#o} became size {:#x} mode {:#o}",
                before.st_size, before.st_mode, after.st_size, after.st_mode
            )
        },
    )
}

/// A request KVM cannot read is EFAULT, and no file is made.
fn unreadable_request_efault(tx: &Tx) -> TestResult {
    let vm = tx.vm()?;
    expect_errno(
        "KVM_CREATE_GUEST_MEMFD, request in a PROT_NONE page",
        vm.ioctl_with_unreadable_arg(KVM_CREATE_GUEST_MEMFD),
        libc::EFAULT,
    )
}

/// read, write, pread and pwrite all fail on a guest_memfd, with upstream's
/// errnos: the file has no read/write operations (EINVAL from vfs_read and
/// vfs_write) and, being an anonymous-inode file, no FMODE_PREAD/PWRITE
/// (ESPIPE), as measured on 6.1 + the series and on 7.2.
fn read_write_fail(tx: &Tx) -> TestResult {
    let (_vm, g) = tx.vm_with_gmem(1, 0)?;
    let mut buf = vec![0u8; tx.page() as usize];
    expect_errno("read", g.read(&mut buf), libc::EINVAL)?;
    expect_errno("write", g.write(&buf), libc::EINVAL)?;
    expect_errno("pread", g.pread(&mut buf, 0), libc::ESPIPE)?;
    expect_errno("pwrite", g.pwrite(&buf, 0), libc::ESPIPE)?;
    Ok(())
}

/// The new file gets the lowest free descriptor, as any open() does, and
/// that may be 0: with stdin closed KVM_CREATE_GUEST_MEMFD returns 0, a
/// file that works like any other (not an error, and not an unfilled slot).
fn lowest_free_fd_is_zero(tx: &Tx) -> TestResult {
    let p = tx.page();
    let vm = tx.vm()?;
    // SAFETY: closes stdin of this forked case process, which never reads it.
    if unsafe { libc::close(0) } != 0 {
        return fail(format!("close(0): {}", std::io::Error::last_os_error()));
    }
    let g = vm
        .create_gmem(2 * p, 0)
        .or_fail("KVM_CREATE_GUEST_MEMFD with fd 0 free")?;
    ensure(g.as_raw_fd() == 0, || {
        format!(
            "KVM_CREATE_GUEST_MEMFD returned fd {}, but fd 0 was the lowest free one",
            g.as_raw_fd()
        )
    })?;
    let st = g.fstat().or_fail("fstat of the guest_memfd at fd 0")?;
    ensure(st.st_size as u64 == 2 * p, || {
        format!("fstat(0): st_size {} != requested {}", st.st_size, 2 * p)
    })?;
    expect_ok("fallocate on the guest_memfd at fd 0", g.allocate(0, 2 * p))?;
    expect_ok("punch on the guest_memfd at fd 0", g.punch(0, p))
}
