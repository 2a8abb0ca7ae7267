//! KVM_CREATE_GUEST_MEMFD: flags, sizes, identity, fstat, no read/write.

use crate::caps::flag_names;
use crate::caps::Need;
use crate::case::{ensure, expect_errno, expect_ok, Case, OrFail, TestResult, Tx};
use crate::kvm::ename;

pub const CASES: &[Case] = &[
    Case {
        area: "create",
        name: "each_flag_bit",
        needs: &[Need::GmemCreate],
        run: each_flag_bit,
    },
    Case {
        area: "create",
        name: "unaligned_sizes_einval",
        needs: &[Need::GmemCreate],
        run: unaligned_sizes_einval,
    },
    Case {
        area: "create",
        name: "distinct_inodes",
        needs: &[Need::GmemCreate],
        run: distinct_inodes,
    },
    Case {
        area: "create",
        name: "fstat_size_and_blksize",
        needs: &[Need::GmemCreate],
        run: fstat_size_and_blksize,
    },
    Case {
        area: "create",
        name: "read_write_fail",
        needs: &[Need::GmemCreate],
        run: read_write_fail,
    },
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

/// read, write, pread and pwrite all fail on a guest_memfd.
fn read_write_fail(tx: &Tx) -> TestResult {
    let (_vm, g) = tx.vm_with_gmem(1, 0)?;
    let mut buf = vec![0u8; tx.page() as usize];
    let results = [
        ("read", g.read(&mut buf)),
        ("write", g.write(&buf)),
        ("pread", g.pread(&mut buf, 0)),
        ("pwrite", g.pwrite(&buf, 0)),
    ];
    for (what, r) in results {
        match r {
            Ok(n) => {
                return crate::case::fail(format!(
                    "{what} on a guest_memfd returned {n}, expected an error"
                ))
            }
            Err(e) => tx.diag(format!("{what}: {}", ename(&e))),
        }
    }
    Ok(())
}
