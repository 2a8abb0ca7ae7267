//! Small typed wrappers over the KVM and guest_memfd uAPI, rust-vmm style:
//! kvm-ioctls/kvm-bindings where they have it, local definitions only for
//! what they lack. Every error carries the errno.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use kvm_bindings::{
    kvm_create_guest_memfd, kvm_memory_attributes, kvm_userspace_memory_region,
    kvm_userspace_memory_region2,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

pub mod caps;

/// Errno-carrying error of kvm-ioctls (vmm-sys-util's errno::Error).
pub type Errno = kvm_ioctls::Error;
pub type SysResult<T> = Result<T, Errno>;

// --- What kvm-bindings 0.14 (generated from 6.15) lacks -----------------
/// Bitmask of valid KVM_CREATE_GUEST_MEMFD flags (6.18+).
pub const KVM_CAP_GUEST_MEMFD_FLAGS: u32 = 244;
/// guest_memfd may be mmap()ed (6.18+).
pub const GUEST_MEMFD_FLAG_MMAP: u64 = 1 << 0;
/// guest_memfd pages start out shared, i.e. faultable by the host (6.18+).
pub const GUEST_MEMFD_FLAG_INIT_SHARED: u64 = 1 << 1;

// --- Re-exported from kvm-bindings so cases name one place ---------------
pub use kvm_bindings::{
    KVM_CAP_GUEST_MEMFD, KVM_CAP_MEMORY_ATTRIBUTES, KVM_CAP_MEMORY_FAULT_INFO,
    KVM_CAP_USER_MEMORY2, KVM_CAP_VM_TYPES, KVM_MEMORY_ATTRIBUTE_PRIVATE,
    KVM_MEMORY_EXIT_FLAG_PRIVATE, KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_X86_DEFAULT_VM,
    KVM_X86_SW_PROTECTED_VM,
};
pub use kvm_bindings::{KVM_CAP_MULTI_ADDRESS_SPACE, KVM_CAP_NR_MEMSLOTS, KVM_MEM_READONLY};

/// `EINVAL`-style name of an errno value.
pub fn errno_name(e: i32) -> String {
    let s = format!("{:?}", nix::errno::Errno::from_raw(e));
    if s == "UnknownErrno" {
        format!("errno {e}")
    } else {
        s
    }
}

/// "EINVAL" for an error, for messages.
pub fn ename(e: &Errno) -> String {
    errno_name(e.errno())
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory arguments.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

fn last() -> Errno {
    Errno::last()
}

/// The VM types the suite knows about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmType {
    Default,
    SwProtected,
}

impl VmType {
    pub const ALL: [VmType; 2] = [VmType::Default, VmType::SwProtected];

    pub fn raw(self) -> u64 {
        match self {
            VmType::Default => KVM_X86_DEFAULT_VM as u64,
            VmType::SwProtected => KVM_X86_SW_PROTECTED_VM as u64,
        }
    }

    /// Case-name suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            VmType::Default => "default",
            VmType::SwProtected => "sw_protected",
        }
    }

    pub fn uapi_name(self) -> &'static str {
        match self {
            VmType::Default => "KVM_X86_DEFAULT_VM",
            VmType::SwProtected => "KVM_X86_SW_PROTECTED_VM",
        }
    }
}

/// A VM: its own /dev/kvm handle and the VM fd (its [`AsRawFd`]).
pub struct Vm {
    fd: VmFd,
    kvm: Kvm,
    vm_type: VmType,
}

/// Why [`Vm::create`] failed: which step, and the errno it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateVmError {
    /// Opening /dev/kvm.
    OpenKvm(Errno),
    /// KVM_CREATE_VM with this type.
    CreateVm(VmType, Errno),
}

impl CreateVmError {
    pub fn errno(&self) -> i32 {
        match self {
            CreateVmError::OpenKvm(e) | CreateVmError::CreateVm(_, e) => e.errno(),
        }
    }
}

impl std::fmt::Display for CreateVmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CreateVmError::OpenKvm(e) => write!(f, "open /dev/kvm: {}", ename(e)),
            CreateVmError::CreateVm(t, e) => {
                write!(f, "KVM_CREATE_VM({}): {}", t.uapi_name(), ename(e))
            }
        }
    }
}

impl std::error::Error for CreateVmError {}

/// One KVM_SET_USER_MEMORY_REGION2 request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Region {
    pub slot: u32,
    pub flags: u32,
    pub gpa: u64,
    pub size: u64,
    pub uaddr: u64,
    pub gmem_offset: u64,
    pub gmem_fd: u32,
}

impl Region {
    pub fn raw2(&self) -> kvm_userspace_memory_region2 {
        kvm_userspace_memory_region2 {
            slot: self.slot,
            flags: self.flags,
            guest_phys_addr: self.gpa,
            memory_size: self.size,
            userspace_addr: self.uaddr,
            guest_memfd_offset: self.gmem_offset,
            guest_memfd: self.gmem_fd,
            pad1: 0,
            pad2: [0; 14],
        }
    }

    /// The same request as a deletion (size 0).
    pub fn deletion(&self) -> Region {
        Region { size: 0, ..*self }
    }
}

impl Vm {
    pub fn create(vm_type: VmType) -> Result<Vm, CreateVmError> {
        let kvm = Kvm::new().map_err(CreateVmError::OpenKvm)?;
        let fd = kvm
            .create_vm_with_type(vm_type.raw())
            .map_err(|e| CreateVmError::CreateVm(vm_type, e))?;
        Ok(Vm { fd, kvm, vm_type })
    }

    pub fn vm_type(&self) -> VmType {
        self.vm_type
    }

    /// This VM's own /dev/kvm fd.
    pub fn system_fd(&self) -> RawFd {
        self.kvm.as_raw_fd()
    }

    pub fn create_vcpu(&self, id: u64) -> SysResult<VcpuFd> {
        self.fd.create_vcpu(id)
    }

    /// KVM_SET_TSS_ADDR (x86 needs it before a vCPU runs in real mode).
    pub fn set_tss_address(&self, addr: usize) -> SysResult<()> {
        self.fd.set_tss_address(addr)
    }

    /// KVM_GET_DIRTY_LOG of `slot` (an address-space-qualified slot id).
    pub fn get_dirty_log(&self, slot: u32, size: usize) -> SysResult<Vec<u64>> {
        self.fd.get_dirty_log(slot, size)
    }

    /// KVM_CLEAR_DIRTY_LOG of `slot` (an address-space-qualified slot id)
    /// for `num_pages` from page 0 (kvm-ioctls has no wrapper for it).
    pub fn clear_dirty_log(&self, slot: u32, num_pages: u32) -> SysResult<()> {
        // _IOWR(KVMIO, 0xc0, struct kvm_clear_dirty_log)
        const KVM_CLEAR_DIRTY_LOG: libc::c_ulong = (3 << 30)
            | ((std::mem::size_of::<kvm_bindings::kvm_clear_dirty_log>() as libc::c_ulong) << 16)
            | (0xAE << 8)
            | 0xc0;
        let bitmap = vec![0u64; (num_pages as usize).div_ceil(64).max(1)];
        let mut log = kvm_bindings::kvm_clear_dirty_log {
            slot,
            num_pages,
            first_page: 0,
            ..Default::default()
        };
        log.__bindgen_anon_1.dirty_bitmap = bitmap.as_ptr() as *mut libc::c_void;
        // SAFETY: the struct and the bitmap it points to (num_pages bits,
        // rounded up to whole u64s) live across the call; KVM only reads
        // the bitmap.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), KVM_CLEAR_DIRTY_LOG as _, &log) };
        if r < 0 {
            return Err(Errno::last());
        }
        Ok(())
    }

    /// The VM ioctl `nr` (the `_IOW`/`_IOWR` command, whose argument KVM
    /// copies in) with an argument pointing into a page that is mapped
    /// PROT_NONE, so that the copy faults: what the ioctl returns.
    pub fn ioctl_with_unreadable_arg(&self, nr: libc::c_ulong) -> SysResult<i32> {
        let page = Mapping::anon(4096)?;
        // SAFETY: changes the protection of a page this function owns.
        if unsafe { libc::mprotect(page.ptr.cast(), page.len, libc::PROT_NONE) } != 0 {
            return Err(last());
        }
        // SAFETY: KVM reads the argument with copy_from_user(), which fails
        // on the unreadable page instead of touching it.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), nr as _, page.ptr) };
        if r < 0 {
            Err(last())
        } else {
            Ok(r)
        }
    }

    /// KVM_CHECK_EXTENSION on the VM fd (VM-type specific answers).
    pub fn check(&self, cap: u32) -> i32 {
        self.fd.check_extension_raw(cap as libc::c_ulong)
    }

    /// KVM_CHECK_EXTENSION on /dev/kvm (what the kernel supports for some VM).
    pub fn check_system(&self, cap: u32) -> i32 {
        self.kvm.check_extension_raw(cap as libc::c_ulong)
    }

    /// KVM_CREATE_GUEST_MEMFD with an arbitrary (possibly invalid) request.
    pub fn create_gmem_raw(
        &self,
        size: u64,
        flags: u64,
        reserved: [u64; 6],
    ) -> SysResult<GmemFile> {
        let fd = self.fd.create_guest_memfd(kvm_create_guest_memfd {
            size,
            flags,
            reserved,
        })?;
        // SAFETY: the ioctl returned a fresh fd that nobody else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        Ok(GmemFile { file, size })
    }

    pub fn create_gmem(&self, size: u64, flags: u64) -> SysResult<GmemFile> {
        self.create_gmem_raw(size, flags, [0; 6])
    }

    /// KVM_SET_USER_MEMORY_REGION2.
    ///
    /// The kernel validates every field; the memory behind `uaddr` must stay
    /// mapped while the slot exists and a vCPU may touch it, which the
    /// fixtures guarantee by owning the mappings and dropping VMs first.
    pub fn set_region2(&self, r: &Region) -> SysResult<()> {
        // SAFETY: see above; invalid requests are rejected by KVM before it
        // uses the address.
        unsafe { self.fd.set_user_memory_region2(r.raw2()) }
    }

    /// The old KVM_SET_USER_MEMORY_REGION with the same fields (no gmem ones).
    pub fn set_region_v1(&self, r: &Region) -> SysResult<()> {
        let raw = kvm_userspace_memory_region {
            slot: r.slot,
            flags: r.flags,
            guest_phys_addr: r.gpa,
            memory_size: r.size,
            userspace_addr: r.uaddr,
        };
        // SAFETY: as for set_region2.
        unsafe { self.fd.set_user_memory_region(raw) }
    }

    pub fn delete_region(&self, r: &Region) -> SysResult<()> {
        self.set_region2(&r.deletion())
    }

    pub fn set_attributes(&self, gpa: u64, size: u64, attributes: u64) -> SysResult<()> {
        self.set_attributes_raw(kvm_memory_attributes {
            address: gpa,
            size,
            attributes,
            flags: 0,
        })
    }

    /// KVM_SET_MEMORY_ATTRIBUTES with an arbitrary (possibly invalid) request.
    pub fn set_attributes_raw(&self, request: kvm_memory_attributes) -> SysResult<()> {
        self.fd.set_memory_attributes(request)
    }

    /// The VM's binary statistics (KVM_GET_STATS_FD, which kvm-ioctls has
    /// no wrapper for): each statistic's name and first value, read once.
    pub fn stats(&self) -> Result<Vec<(String, u64)>, String> {
        // _IO(KVMIO, 0xce)
        const KVM_GET_STATS_FD: libc::c_ulong = (0xAE << 8) | 0xce;
        // SAFETY: an ioctl without argument on our VM fd.
        let fd = unsafe { libc::ioctl(self.fd.as_raw_fd(), KVM_GET_STATS_FD as _) };
        if fd < 0 {
            return Err(format!("KVM_GET_STATS_FD: {}", ename(&last())));
        }
        // SAFETY: a new fd that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        read_stats(&file)
    }

    /// The VM's binary statistic `name` (e.g. x86's `pages_4k`, the 4 KiB
    /// mappings KVM holds): its first value, `None` when the VM has no
    /// statistic of that name.
    pub fn stat(&self, name: &str) -> Result<Option<u64>, String> {
        Ok(self
            .stats()?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v))
    }
}

/// Reads a binary stats file: the header, the descriptors (each followed
/// by its name in `name_size` bytes) and each statistic's first u64.
fn read_stats(file: &File) -> Result<Vec<(String, u64)>, String> {
    use std::os::unix::fs::FileExt;
    let read = |off: u64, len: usize| -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, off)
            .map_err(|e| format!("reading {len} bytes of the stats fd at {off:#x}: {e}"))?;
        Ok(buf)
    };
    let u32_at = |b: &[u8], i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap());
    let u16_at = |b: &[u8], i: usize| u16::from_ne_bytes(b[i..i + 2].try_into().unwrap());
    // struct kvm_stats_header: flags, name_size, num_desc, id_offset,
    // desc_offset, data_offset (u32 each).
    let h = read(0, std::mem::size_of::<kvm_bindings::kvm_stats_header>())?;
    let (name_size, num_desc) = (u32_at(&h, 4) as usize, u32_at(&h, 8) as usize);
    let (desc_offset, data_offset) = (u64::from(u32_at(&h, 16)), u64::from(u32_at(&h, 20)));
    // struct kvm_stats_desc: flags u32, exponent s16, size u16, offset u32,
    // bucket_size u32, then the name.
    let fixed = std::mem::size_of::<kvm_bindings::kvm_stats_desc>();
    let step = fixed + name_size;
    let descs = read(desc_offset, step * num_desc)?;
    let mut out = Vec::with_capacity(num_desc);
    for d in descs.chunks_exact(step) {
        let (size, offset) = (u16_at(d, 6), u64::from(u32_at(d, 8)));
        let name = &d[fixed..];
        let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
        if size == 0 {
            continue;
        }
        let v = read(data_offset + offset, 8)?;
        out.push((
            String::from_utf8_lossy(name).into_owned(),
            u64::from_ne_bytes(v[..8].try_into().unwrap()),
        ));
    }
    Ok(out)
}

/// A guest_memfd file.
pub struct GmemFile {
    file: File,
    pub size: u64,
}

impl AsRawFd for Vm {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsRawFd for GmemFile {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// `_IOC(dir, KVMIO, nr, size)` for the VM ioctls the kernel copies their
/// argument in for: dir 1 is `_IOW`, 3 `_IOWR`.
pub const fn kvm_ioc(dir: libc::c_ulong, nr: libc::c_ulong, size: usize) -> libc::c_ulong {
    (dir << 30) | ((size as libc::c_ulong) << 16) | (0xAE << 8) | nr
}

pub const KVM_SET_USER_MEMORY_REGION2: libc::c_ulong = kvm_ioc(
    1,
    0x49,
    std::mem::size_of::<kvm_bindings::kvm_userspace_memory_region2>(),
);
pub const KVM_SET_MEMORY_ATTRIBUTES: libc::c_ulong =
    kvm_ioc(1, 0xd2, std::mem::size_of::<kvm_memory_attributes>());
pub const KVM_CREATE_GUEST_MEMFD: libc::c_ulong =
    kvm_ioc(3, 0xd4, std::mem::size_of::<kvm_create_guest_memfd>());

pub const FALLOC_KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;
pub const FALLOC_PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE;

impl GmemFile {
    pub fn fallocate(&self, mode: i32, offset: u64, len: u64) -> SysResult<()> {
        // SAFETY: plain syscall on an fd we own.
        let r = unsafe { libc::fallocate64(self.as_raw_fd(), mode, offset as i64, len as i64) };
        if r == 0 {
            Ok(())
        } else {
            Err(last())
        }
    }

    pub fn allocate(&self, offset: u64, len: u64) -> SysResult<()> {
        self.fallocate(FALLOC_KEEP_SIZE, offset, len)
    }

    pub fn punch(&self, offset: u64, len: u64) -> SysResult<()> {
        self.fallocate(FALLOC_KEEP_SIZE | FALLOC_PUNCH_HOLE, offset, len)
    }

    pub fn fstat(&self) -> SysResult<libc::stat64> {
        // SAFETY: st is a valid out buffer.
        unsafe {
            let mut st: libc::stat64 = std::mem::zeroed();
            if libc::fstat64(self.as_raw_fd(), &mut st) == 0 {
                Ok(st)
            } else {
                Err(last())
            }
        }
    }

    pub fn truncate(&self, len: u64) -> SysResult<()> {
        // SAFETY: plain syscall on an fd we own.
        if unsafe { libc::ftruncate64(self.as_raw_fd(), len as i64) } == 0 {
            Ok(())
        } else {
            Err(last())
        }
    }

    pub fn chmod(&self, mode: libc::mode_t) -> SysResult<()> {
        // SAFETY: plain syscall on an fd we own.
        if unsafe { libc::fchmod(self.as_raw_fd(), mode) } == 0 {
            Ok(())
        } else {
            Err(last())
        }
    }

    pub fn mmap(&self, len: usize, flags: i32) -> SysResult<Mapping> {
        Mapping::new(len, flags, self.as_raw_fd())
    }

    pub fn mmap_shared(&self, len: usize) -> SysResult<Mapping> {
        self.mmap(len, libc::MAP_SHARED)
    }

    pub fn read(&self, buf: &mut [u8]) -> SysResult<usize> {
        // SAFETY: buf valid for its length.
        let n = unsafe { libc::read(self.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(last())
        } else {
            Ok(n as usize)
        }
    }

    pub fn write(&self, buf: &[u8]) -> SysResult<usize> {
        // SAFETY: buf valid for its length.
        let n = unsafe { libc::write(self.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(last())
        } else {
            Ok(n as usize)
        }
    }

    pub fn pread(&self, buf: &mut [u8], off: u64) -> SysResult<usize> {
        // SAFETY: buf valid for its length.
        let n = unsafe {
            libc::pread64(
                self.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                off as i64,
            )
        };
        if n < 0 {
            Err(last())
        } else {
            Ok(n as usize)
        }
    }

    pub fn pwrite(&self, buf: &[u8], off: u64) -> SysResult<usize> {
        // SAFETY: buf valid for its length.
        let n =
            unsafe { libc::pwrite64(self.as_raw_fd(), buf.as_ptr().cast(), buf.len(), off as i64) };
        if n < 0 {
            Err(last())
        } else {
            Ok(n as usize)
        }
    }
}

/// An mmap()ed range (anonymous or of a file), unmapped on drop.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory; accesses go through volatile
// reads/writes and the stress case only shares it read-only by address.
unsafe impl Send for Mapping {}
// SAFETY: see above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(len: usize, flags: i32, fd: RawFd) -> SysResult<Mapping> {
        // SAFETY: a new mapping at a kernel-chosen address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(last());
        }
        Ok(Mapping { ptr: p.cast(), len })
    }

    /// Zeroed anonymous private memory.
    pub fn anon(len: usize) -> SysResult<Mapping> {
        Mapping::new(
            len,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
        )
    }

    /// Zeroed anonymous private memory starting at a multiple of `align`
    /// (a power of two): a larger mapping with the unaligned head and the
    /// tail unmapped again.
    pub fn anon_aligned(len: usize, align: usize) -> SysResult<Mapping> {
        assert!(align.is_power_of_two());
        let wide = Mapping::anon(len + align)?;
        let start = (wide.addr() as usize).next_multiple_of(align);
        let head = start - wide.addr() as usize;
        let tail = align - head;
        let base = wide.ptr;
        std::mem::forget(wide);
        // SAFETY: both ranges lie inside the mapping just made and no longer
        // owned by anything; what stays mapped is owned by the result.
        unsafe {
            if head > 0 {
                libc::munmap(base.cast(), head);
            }
            if tail > 0 {
                libc::munmap(base.add(head + len).cast(), tail);
            }
        }
        Ok(Mapping {
            // SAFETY: inside the original mapping.
            ptr: unsafe { base.add(head) },
            len,
        })
    }

    /// madvise() over the whole mapping.
    pub fn madvise(&self, advice: i32) -> SysResult<()> {
        // SAFETY: our own mapping, whole.
        if unsafe { libc::madvise(self.ptr.cast(), self.len, advice) } != 0 {
            return Err(last());
        }
        Ok(())
    }

    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads one byte. Out-of-range offsets panic (a bug in the case).
    pub fn read(&self, off: usize) -> u8 {
        assert!(
            off < self.len,
            "offset {off} outside a {}-byte mapping",
            self.len
        );
        // SAFETY: in bounds of our mapping; may raise SIGBUS by design for
        // guest_memfd mappings, which cases only do in a throwaway child.
        unsafe { std::ptr::read_volatile(self.ptr.add(off)) }
    }

    pub fn write(&self, off: usize, v: u8) {
        assert!(
            off < self.len,
            "offset {off} outside a {}-byte mapping",
            self.len
        );
        // SAFETY: as for read.
        unsafe { std::ptr::write_volatile(self.ptr.add(off), v) }
    }

    pub fn copy_in(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= self.len, "copy outside the mapping");
        // SAFETY: bounds checked above.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(off), data.len()) }
    }

    pub fn fill(&self, off: usize, len: usize, v: u8) {
        assert!(off + len <= self.len, "fill outside the mapping");
        // SAFETY: bounds checked above.
        unsafe { std::ptr::write_bytes(self.ptr.add(off), v, len) }
    }

    /// The first offset in `off..off+len` whose byte differs from `v`.
    /// Compares a page at a time with memcmp, as `fill` writes with memset
    /// (the conversion cases check megabytes, in a debug build, under
    /// TCG); like `fill`, callers run no vCPU on these bytes meanwhile.
    pub fn first_ne(&self, off: usize, len: usize, v: u8) -> Option<usize> {
        assert!(off + len <= self.len, "read outside the mapping");
        const STEP: usize = 4096;
        let pattern = [v; STEP];
        let mut at = off;
        while at < off + len {
            let n = STEP.min(off + len - at);
            // SAFETY: in bounds (checked above); plain reads of our mapping.
            let chunk = unsafe { std::slice::from_raw_parts(self.ptr.add(at), n) };
            if chunk != &pattern[..n] {
                return (at..at + n).find(|&i| self.read(i) != v);
            }
            at += n;
        }
        None
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what we mapped.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// (major, minor) from a `uname -r` string such as "6.18.44-fc-v595".
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

pub fn kernel_release() -> String {
    // SAFETY: u is a valid out buffer; release is NUL-terminated on success.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return "unknown".to_string();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page-wise compare finds a differing byte at its offset wherever
    /// it sits relative to the compared pages and the range.
    #[test]
    fn first_ne_finds_the_first_differing_byte() {
        let m = Mapping::anon(3 * 4096).unwrap();
        m.fill(0, 3 * 4096, 7);
        assert_eq!(m.first_ne(0, 3 * 4096, 7), None);
        assert_eq!(m.first_ne(3, 29, 7), None);
        for at in [0, 1, 4095, 4096, 4097, 6000, 3 * 4096 - 1] {
            m.write(at, 9);
            assert_eq!(m.first_ne(0, 3 * 4096, 7), Some(at));
            assert_eq!(m.first_ne(at, 1, 7), Some(at));
            if at > 0 {
                assert_eq!(m.first_ne(0, at, 7), None, "range ending before {at}");
                assert_eq!(m.first_ne(at - 1, 2, 7), Some(at));
            }
            m.write(at, 7);
        }
        m.write(17, 9);
        m.write(5000, 9);
        assert_eq!(m.first_ne(18, 8000, 7), Some(5000));
    }

    /// A new VM's binary stats parse (header, descriptors, names) and name
    /// x86's page counters, all 0 before any memory is mapped.
    #[test]
    fn vm_stats_name_the_page_counters() {
        assert_eq!(std::mem::size_of::<kvm_bindings::kvm_stats_desc>(), 16);
        let vm = match Vm::create(VmType::Default) {
            Ok(vm) => vm,
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        let stats = vm.stats().unwrap();
        for name in ["pages_4k", "pages_2m", "pages_1g"] {
            let v = stats.iter().find(|(n, _)| n == name);
            assert_eq!(v.map(|(_, v)| *v), Some(0), "{name} in {stats:?}");
        }
    }

    /// A new VM maps nothing yet; a name it lacks is `None`. Needs
    /// /dev/kvm (`cargo test -p selftests -- --ignored`).
    #[test]
    #[ignore = "needs /dev/kvm: cargo test -p selftests -- --ignored"]
    fn reads_a_vm_stat() {
        let vm = Vm::create(VmType::Default).expect("a default VM (needs /dev/kvm)");
        assert_eq!(vm.stat("pages_4k").unwrap(), Some(0));
        assert_eq!(vm.stat("no_such_stat").unwrap(), None);
    }

    /// The numbers the uAPI header gives these ioctls.
    #[test]
    fn gmem_ioctl_numbers_match_the_uapi() {
        assert_eq!(KVM_CREATE_GUEST_MEMFD, 0xc040_aed4);
        assert_eq!(KVM_SET_USER_MEMORY_REGION2, 0x40a0_ae49);
        assert_eq!(KVM_SET_MEMORY_ATTRIBUTES, 0x4020_aed2);
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(parse_kernel_version("6.1.176"), Some((6, 1)));
        assert_eq!(parse_kernel_version("7.2.0-rc1+"), Some((7, 2)));
        assert_eq!(parse_kernel_version("garbage"), None);
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::EINVAL), "EINVAL");
        assert_eq!(errno_name(libc::EEXIST), "EEXIST");
        assert_eq!(errno_name(100000), "errno 100000");
    }

    #[test]
    fn uapi_struct_sizes_match_the_kernel() {
        assert_eq!(std::mem::size_of::<kvm_create_guest_memfd>(), 64);
        assert_eq!(std::mem::size_of::<kvm_userspace_memory_region2>(), 160);
        assert_eq!(std::mem::size_of::<kvm_memory_attributes>(), 32);
    }
}
