//! A tiny real-mode guest that touches guest_memfd-backed memory and reports
//! over port I/O, and the fixture that sets a VM up to run it.
//!
//! Guest physical layout:
//! - slot 0 (`LOW_SLOT`): GPA 0x0..0x10000, ordinary anonymous memory; the
//!   code lives at `CODE_GPA`.
//! - slot 1 (`DATA_SLOT`): GPA 0x10000.., backed by guest_memfd; DS points at
//!   it (selector 0x1000, base 0x10000), BX selects the byte.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::harness::case::{OrFail, Stop, Tx};
use crate::kvm::caps::AccessMode;
use crate::kvm::{
    ename, errno_name, Errno, GmemFile, Mapping, Region, SysResult, Vm,
    GUEST_MEMFD_FLAG_INIT_SHARED, GUEST_MEMFD_FLAG_MMAP, KVM_MEMORY_ATTRIBUTE_PRIVATE,
    KVM_MEM_GUEST_MEMFD,
};

pub const LOW_SLOT: u32 = 0;
pub const LOW_SIZE: u64 = 0x10000;
pub const CODE_GPA: u64 = 0x1000;
pub const DATA_SLOT: u32 = 1;
pub const DATA_GPA: u64 = 0x10000;
/// Port on which the guest reports the byte it found.
pub const PORT_FOUND: u16 = 0x10;
/// Port on which the guest reports the byte it read back after its store.
pub const PORT_READBACK: u16 = 0x11;

/// The guest program, 16-bit real mode, entered at CS:IP = 0000:1000 with
/// BX = offset into the data slot and CL = byte to store.
///
/// ```text
/// 1000: 8A 07     mov al, [bx]     ; load DS:BX (first touch of the page)
/// 1002: E6 10     out 0x10, al     ; exit 1: report the byte found
/// 1004: 88 0F     mov [bx], cl     ; store CL at DS:BX
/// 1006: 8A 07     mov al, [bx]     ; load it back
/// 1008: E6 11     out 0x11, al     ; exit 2: report the byte read back
/// 100A: F4        hlt              ; not reached: the host stops at exit 2
/// ```
/// ModRM bytes: 0x07 = mod 00, reg 000 (AL), r/m 111 ([BX]);
/// 0x0F = mod 00, reg 001 (CL), r/m 111 ([BX]).
pub const GUEST_CODE: [u8; 11] = [
    0x8A, 0x07, // mov al, [bx]
    0xE6, 0x10, // out 0x10, al
    0x88, 0x0F, // mov [bx], cl
    0x8A, 0x07, // mov al, [bx]
    0xE6, 0x11, // out 0x11, al
    0xF4, // hlt
];

/// Second program, at `LOOP_GPA`: load DS:BX forever, so the vCPU stays in
/// KVM_RUN until something (a deleted slot, a signal) makes it exit.
///
/// ```text
/// 1010: 8A 07     mov al, [bx]     ; load DS:BX
/// 1012: EB FC     jmp 1010         ; rel8 -4: back to the load
/// ```
pub const GUEST_LOOP: [u8; 4] = [
    0x8A, 0x07, // mov al, [bx]
    0xEB, 0xFC, // jmp $-2 (0x1014 - 4 = 0x1010)
];
pub const LOOP_GPA: u64 = 0x1010;

/// A GDT for 32-bit flat protected mode, at `GDT_GPA` in the code slot:
/// null, then code (selector 0x08) and data (0x10), both base 0, limit
/// 4 GiB (G = 1, limit 0xFFFFF pages), present, ring 0, with the accessed
/// bit already set so that loading them writes nothing to guest memory.
pub const GDT: [u8; 24] = [
    0, 0, 0, 0, 0, 0, 0, 0, // null
    0xFF, 0xFF, 0x00, 0x00, 0x00, 0x9B, 0xCF, 0x00, // 0x08: code, execute/read, D = 1
    0xFF, 0xFF, 0x00, 0x00, 0x00, 0x93, 0xCF, 0x00, // 0x10: data, read/write, B = 1
];
pub const GDT_GPA: u64 = 0x3000;
/// The LGDT operand right after the GDT: limit, then 32-bit base.
pub const GDTR_GPA: u64 = GDT_GPA + GDT.len() as u64;
pub const FLAT_CODE_SEL: u16 = 0x08;
pub const FLAT_DATA_SEL: u16 = 0x10;
/// Port on which [`ENTER_FLAT`] reports that the vCPU is in flat mode.
pub const PORT_FLAT: u16 = 0x15;

/// Third program, at `ENTER_FLAT_GPA`, entered in real mode: switches the
/// vCPU to 32-bit flat protected mode (no paging) and reports on port 0x15.
/// Afterwards every GPA below 4 GiB is a plain 32-bit address.
///
/// ```text
/// 3020: 2E 0F 01 16 18 30   lgdt cs:[0x3018]    ; the GDTR after GDT
/// 3026: 0F 20 C0            mov eax, cr0
/// 3029: 0C 01               or al, 1            ; CR0.PE
/// 302B: 0F 22 C0            mov cr0, eax
/// 302E: EA 33 30 08 00      jmp 0x08:0x3033     ; load the 32-bit CS
///       ; 32-bit code from here
/// 3033: B8 10 00 00 00      mov eax, 0x10
/// 3038: 8E D8               mov ds, ax
/// 303A: 8E C0               mov es, ax
/// 303C: 8E D0               mov ss, ax
/// 303E: E6 15               out 0x15, al
/// 3040: F4                  hlt
/// ```
/// ModRM bytes: 0x16 = mod 00, reg 010 (/2: lgdt), r/m 110 (disp16);
/// 0xC0 = mod 11, reg 000 (CR0), r/m 000 (EAX); 0xD8, 0xC0, 0xD0 = mod 11,
/// reg 011 (DS) / 000 (ES) / 010 (SS), r/m 000 (EAX).
pub const ENTER_FLAT: [u8; 33] = [
    0x2E, 0x0F, 0x01, 0x16, 0x18, 0x30, // lgdt cs:[0x3018]
    0x0F, 0x20, 0xC0, // mov eax, cr0
    0x0C, 0x01, // or al, 1
    0x0F, 0x22, 0xC0, // mov cr0, eax
    0xEA, 0x33, 0x30, 0x08, 0x00, // jmp 0x08:0x3033
    0xB8, 0x10, 0x00, 0x00, 0x00, // mov eax, 0x10
    0x8E, 0xD8, // mov ds, ax
    0x8E, 0xC0, // mov es, ax
    0x8E, 0xD0, // mov ss, ax
    0xE6, 0x15, // out 0x15, al
    0xF4, // hlt
];
pub const ENTER_FLAT_GPA: u64 = 0x3020;

/// The 6-byte LGDT operand: limit (size - 1) and base of [`GDT`].
pub fn gdtr() -> [u8; 6] {
    let limit = (GDT.len() as u16 - 1).to_le_bytes();
    let base = (GDT_GPA as u32).to_le_bytes();
    [limit[0], limit[1], base[0], base[1], base[2], base[3]]
}

/// Copies the GDT, its GDTR and [`ENTER_FLAT`] into the code slot's memory.
pub fn install_flat_entry(low: &Mapping) {
    low.copy_in(GDT_GPA as usize, &GDT);
    low.copy_in(GDTR_GPA as usize, &gdtr());
    low.copy_in(ENTER_FLAT_GPA as usize, &ENTER_FLAT);
}

/// How one KVM_RUN ended, detached from the vCPU borrow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Io {
        port: u16,
        value: u8,
    },
    MemoryFault(MemoryFault),
    /// The deadline passed while KVM_RUN kept running (no exit at all).
    TimedOut,
    Other(String),
}

/// A KVM_EXIT_MEMORY_FAULT, which KVM_RUN returns with -1 and `errno`
/// (EFAULT, or EHWPOISON for a poisoned page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryFault {
    pub errno: i32,
    pub flags: u64,
    pub gpa: u64,
    pub size: u64,
}

impl std::fmt::Display for MemoryFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KVM_EXIT_MEMORY_FAULT ({}) gpa {:#x} size {:#x} flags {:#x}",
            errno_name(self.errno),
            self.gpa,
            self.size,
            self.flags
        )
    }
}

/// Result of one guest access: the byte found, and the byte read back after
/// storing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    pub found: u8,
    pub readback: u8,
}

extern "C" fn kick_handler(_: libc::c_int) {}

/// SIGUSR1 interrupts KVM_RUN (EINTR): installed without SA_RESTART.
fn install_kick_handler() {
    // A no-op handler; sigaction cannot fail for SIGUSR1 with a valid one.
    let _ = crate::harness::isolate::catch_signal(libc::SIGUSR1, kick_handler);
}

/// Kicks the calling thread with SIGUSR1 once `limit` has passed, and every
/// 10 ms after that, until dropped: a POSIX timer aimed at this thread
/// (SIGEV_THREAD_ID). Arming it spawns nothing and touches no new memory, so
/// no page freed by the host just before a KVM_RUN (a punched guest_memfd
/// page) is handed back out, zeroed, before the guest reads it: a watchdog
/// thread per KVM_RUN did exactly that (its stack faults took the hottest
/// free page) and hid stale guest mappings of punched pages.
struct Watchdog {
    timer: libc::timer_t,
    deadline: Instant,
}

impl Watchdog {
    fn arm(limit: Duration) -> std::io::Result<Watchdog> {
        install_kick_handler();
        // SAFETY: gettid has no arguments.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::c_int;
        // SAFETY: plain C struct; the fields that matter are set below.
        let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
        ev.sigev_notify = libc::SIGEV_THREAD_ID;
        ev.sigev_signo = libc::SIGUSR1;
        ev.sigev_notify_thread_id = tid;
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: `ev` and `timer` are valid for the call.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut timer) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let ts = |d: Duration| libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec {
            // A zero it_value would disarm the timer.
            it_value: ts(limit.max(Duration::from_nanos(1))),
            it_interval: ts(Duration::from_millis(10)),
        };
        let deadline = Instant::now() + limit;
        // SAFETY: `timer` was just created; `spec` is valid.
        if unsafe { libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) } != 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: `timer` was just created and is not used again.
            unsafe { libc::timer_delete(timer) };
            return Err(e);
        }
        Ok(Watchdog { timer, deadline })
    }

    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // SAFETY: the timer is ours and deleted once.
        unsafe { libc::timer_delete(self.timer) };
    }
}

/// One KVM_RUN that gives up after `limit`: a [`Watchdog`] timer starts
/// kicking this thread with SIGUSR1 once the limit passes, so a livelocked
/// KVM_RUN returns EINTR and we report `Exit::TimedOut`.
pub fn run_once(vcpu: &mut VcpuFd, limit: Duration) -> Exit {
    let dog = match Watchdog::arm(limit) {
        Ok(d) => d,
        Err(e) => return Exit::Other(format!("cannot arm the KVM_RUN watchdog timer: {e}")),
    };
    loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                break Exit::Io {
                    port,
                    value: data.first().copied().unwrap_or(0),
                };
            }
            Ok(VcpuExit::MemoryFault { flags, gpa, size }) => {
                // kvm-ioctls read errno right after the ioctl and made no
                // system call since, so errno is still KVM_RUN's.
                let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                break Exit::MemoryFault(MemoryFault {
                    errno,
                    flags,
                    gpa,
                    size,
                });
            }
            // Interrupted: by the watchdog after the limit (a KVM_RUN that
            // never exits on its own), or spuriously (retry).
            Ok(VcpuExit::Intr) => {
                if dog.expired() {
                    break Exit::TimedOut;
                }
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                if dog.expired() {
                    break Exit::TimedOut;
                }
            }
            Err(e) => break Exit::Other(format!("KVM_RUN failed: {}", ename(&e))),
            Ok(other) => break Exit::Other(describe_exit(&other)),
        }
    }
}

fn describe_exit(e: &VcpuExit) -> String {
    match e {
        VcpuExit::MmioRead(addr, _) => {
            format!("KVM_EXIT_MMIO read at GPA {addr:#x} (no memslot there?)")
        }
        VcpuExit::MmioWrite(addr, _) => {
            format!("KVM_EXIT_MMIO write at GPA {addr:#x} (no memslot there?)")
        }
        VcpuExit::IoIn(port, _) => format!("unexpected KVM_EXIT_IO in from port {port:#x}"),
        VcpuExit::Hlt => "KVM_EXIT_HLT before the expected port I/O".to_string(),
        VcpuExit::Shutdown => "KVM_EXIT_SHUTDOWN (triple fault)".to_string(),
        VcpuExit::FailEntry(reason, cpu) => {
            format!("KVM_EXIT_FAIL_ENTRY reason {reason:#x} cpu {cpu}")
        }
        VcpuExit::InternalError => "KVM_EXIT_INTERNAL_ERROR".to_string(),
        other => format!("unexpected exit {other:?}"),
    }
}

/// Where things went wrong in [`Guest::touch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TouchError {
    /// KVM_RUN did not come back within the limit (stage 1 = the load, 2 = the store).
    TimedOut {
        stage: u8,
        limit: Duration,
    },
    MemoryFault(MemoryFault),
    Unexpected(String),
}

impl std::fmt::Display for TouchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TouchError::TimedOut { stage, limit } => {
                write!(
                    f,
                    "vCPU made no progress for {:.1}s (stage {stage}: KVM_RUN never exited)",
                    limit.as_secs_f64()
                )
            }
            TouchError::MemoryFault(m) => write!(f, "{m}"),
            TouchError::Unexpected(m) => write!(f, "{m}"),
        }
    }
}

impl From<TouchError> for Stop {
    fn from(e: TouchError) -> Stop {
        Stop::Fail(e.to_string())
    }
}

/// What both vCPU fixtures ([`Guest`] and pageops' `Rig`) start from: a
/// VM, its guest_memfd with the memory behind the data slots, and the code
/// slot. Each fixture moves these into its own fields, after its vCPUs, so
/// that vCPUs and VM drop before the memory.
pub struct Machine {
    pub vm: Vm,
    pub gmem: GmemFile,
    /// The guest_memfd mapping (SharedMmap mode).
    pub gmem_map: Option<Mapping>,
    /// Anonymous memory for the slots' shared side (other modes).
    pub shared: Option<Mapping>,
    /// The code slot's memory, `programs` copied in.
    pub low: Mapping,
}

impl Machine {
    /// A VM of the case's type with a guest_memfd of `file_pages` (see
    /// [`data_backing`] for `mode` and `shared_pages`) and the code slot,
    /// into which `programs` copies the guest code.
    pub fn new(
        tx: &Tx,
        mode: Option<AccessMode>,
        file_pages: u64,
        shared_pages: u64,
        programs: impl FnOnce(&Mapping),
    ) -> Result<Machine, Stop> {
        let vm = tx.vm()?;
        let (gmem, gmem_map, shared) =
            data_backing(&vm, tx.page(), mode, file_pages, shared_pages)?;
        let low = code_slot(tx, &vm, programs)?;
        Ok(Machine {
            vm,
            gmem,
            gmem_map,
            shared,
            low,
        })
    }
}

/// The code slot of `vm`: memory holding the flat-mode entry and what
/// `programs` copies in, added as slot `LOW_SLOT` at GPA 0.
pub fn code_slot(tx: &Tx, vm: &Vm, programs: impl FnOnce(&Mapping)) -> Result<Mapping, Stop> {
    let low = Mapping::anon(LOW_SIZE as usize).or_fail("mmap(anon)")?;
    install_flat_entry(&low);
    programs(&low);
    add_code_slot(vm, &low, |m| tx.diag(m)).or_fail("KVM_SET_USER_MEMORY_REGION2(code slot)")?;
    Ok(low)
}

/// The mapping behind the data slots' userspace_addr: the guest_memfd's
/// own (SharedMmap mode) or the anonymous shared side. A [`Machine`] has
/// exactly one of the two.
pub fn slot_memory<'m>(gmem_map: &'m Option<Mapping>, shared: &'m Option<Mapping>) -> &'m Mapping {
    match (gmem_map, shared) {
        (Some(m), _) | (None, Some(m)) => m,
        (None, None) => unreachable!("data_backing returns a mapping or shared memory"),
    }
}

/// The memory behind a fixture's data slots: a guest_memfd of `file_pages`,
/// created MMAP|INIT_SHARED and mapped in SharedMmap mode (the mapping is the
/// slots' userspace_addr), otherwise with `shared_pages` of anonymous memory
/// for the slots' shared side.
fn data_backing(
    vm: &Vm,
    page: u64,
    mode: Option<AccessMode>,
    file_pages: u64,
    shared_pages: u64,
) -> Result<(GmemFile, Option<Mapping>, Option<Mapping>), Stop> {
    let size = file_pages * page;
    if mode == Some(AccessMode::SharedMmap) {
        let gmem = vm
            .create_gmem(size, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED)
            .or_fail("KVM_CREATE_GUEST_MEMFD")?;
        let map = gmem
            .mmap_shared(size as usize)
            .or_fail("mmap(guest_memfd)")?;
        return Ok((gmem, Some(map), None));
    }
    let gmem = vm.create_gmem(size, 0).or_fail("KVM_CREATE_GUEST_MEMFD")?;
    let shared = Mapping::anon((shared_pages * page) as usize).or_fail("mmap(anon)")?;
    Ok((gmem, None, Some(shared)))
}

/// Adds `low` (the programs already copied in) as the code slot, slot
/// `LOW_SLOT` at GPA 0, and sets the TSS real mode needs on Intel without
/// unrestricted guest (harmless elsewhere; its failure is only passed to
/// `note`).
pub fn add_code_slot(vm: &Vm, low: &Mapping, note: impl FnOnce(String)) -> SysResult<()> {
    vm.set_region2(&Region {
        slot: LOW_SLOT,
        gpa: 0,
        size: LOW_SIZE,
        uaddr: low.addr(),
        ..Default::default()
    })?;
    if let Err(e) = vm.set_tss_address(0xfffb_d000) {
        note(format!("KVM_SET_TSS_ADDR: {} (ignored)", ename(&e)));
    }
    Ok(())
}

/// vCPU `id` in real mode running from the code slot (CS base 0), with DS
/// at `ds_base` (a paragraph-aligned GPA below 1 MiB) when given.
pub fn real_mode_vcpu(vm: &Vm, id: u64, ds_base: Option<u64>) -> Result<VcpuFd, String> {
    let step = |what: &str, e: Errno| format!("{what}: {}", ename(&e));
    let vcpu = vm.create_vcpu(id).map_err(|e| step("KVM_CREATE_VCPU", e))?;
    let mut sregs = vcpu.get_sregs().map_err(|e| step("KVM_GET_SREGS", e))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    if let Some(base) = ds_base {
        sregs.ds.base = base;
        sregs.ds.selector = (base >> 4) as u16;
    }
    vcpu.set_sregs(&sregs)
        .map_err(|e| step("KVM_SET_SREGS", e))?;
    Ok(vcpu)
}

/// vCPU `id` in 32-bit flat protected mode: created in real mode, it runs
/// [`ENTER_FLAT`] from the code slot (which must hold it, see
/// [`install_flat_entry`]) until the program reports on `PORT_FLAT`; then
/// KVM_GET_SREGS must show the mode the program set up. Programs entered
/// afterwards address GPAs directly, up to 4 GiB.
pub fn flat_vcpu(vm: &Vm, id: u64, limit: Duration) -> Result<VcpuFd, String> {
    let mut vcpu = real_mode_vcpu(vm, id, None)?;
    let mut regs = vcpu
        .get_regs()
        .map_err(|e| format!("KVM_GET_REGS: {}", ename(&e)))?;
    regs.rip = ENTER_FLAT_GPA;
    regs.rflags = 2;
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {}", ename(&e)))?;
    match run_once(&mut vcpu, limit) {
        Exit::Io { port, .. } if port == PORT_FLAT => {}
        other => {
            return Err(format!(
                "switching to 32-bit protected mode: {other:?}, expected port I/O on {PORT_FLAT:#x}"
            ))
        }
    }
    let s = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {}", ename(&e)))?;
    let flat = |seg: &kvm_bindings::kvm_segment, sel: u16| {
        seg.selector == sel && seg.base == 0 && seg.limit == 0xFFFF_FFFF && seg.present == 1
    };
    if s.cr0 & 1 == 0
        || s.cr0 & (1 << 31) != 0
        || !flat(&s.cs, FLAT_CODE_SEL)
        || s.cs.db != 1
        || !flat(&s.ds, FLAT_DATA_SEL)
        || !flat(&s.es, FLAT_DATA_SEL)
    {
        return Err(format!(
            "after the switch to 32-bit protected mode: CR0 {:#x}, CS {:?}, DS {:?}, ES {:?}",
            s.cr0, s.cs, s.ds, s.es
        ));
    }
    Ok(vcpu)
}

/// Fixture: a VM with the code slot, a guest_memfd, its data slot and one vCPU.
/// Fields drop in order: vCPU and VM first, memory last.
pub struct Guest {
    pub vcpu: VcpuFd,
    pub vm: Vm,
    pub gmem: GmemFile,
    /// The guest_memfd mapping (SharedMmap mode).
    pub gmem_map: Option<Mapping>,
    /// Anonymous memory behind the data slot's userspace_addr (Private mode).
    pub shared: Option<Mapping>,
    pub low: Mapping,
    /// None: the data slot is plain anonymous memory.
    pub mode: Option<AccessMode>,
    pub slot_pages: u64,
    pub page: u64,
}

impl Guest {
    /// A guest whose gmem file has `file_pages` pages, of which the first
    /// `slot_pages` are bound at `DATA_GPA`, using the VM type's access mode.
    pub fn new(tx: &Tx, file_pages: u64, slot_pages: u64) -> Result<Guest, Stop> {
        let mode = tx.access_mode()?;
        Guest::build(tx, Some(mode), file_pages, slot_pages)
    }

    /// Like [`Guest::new`] with an explicit access mode.
    pub fn with_mode(
        tx: &Tx,
        mode: AccessMode,
        file_pages: u64,
        slot_pages: u64,
    ) -> Result<Guest, Stop> {
        Guest::build(tx, Some(mode), file_pages, slot_pages)
    }

    /// The data slot is ordinary anonymous memory (no guest_memfd); a
    /// one-page guest_memfd exists but is not bound.
    pub fn without_gmem(tx: &Tx, slot_pages: u64) -> Result<Guest, Stop> {
        Guest::build(tx, None, 1, slot_pages)
    }

    fn build(
        tx: &Tx,
        mode: Option<AccessMode>,
        file_pages: u64,
        slot_pages: u64,
    ) -> Result<Guest, Stop> {
        let page = tx.page();
        assert!(
            slot_pages * page <= 0x10000,
            "the guest addresses the data slot with 16-bit offsets"
        );
        let Machine {
            vm,
            gmem,
            gmem_map,
            shared,
            low,
        } = Machine::new(tx, mode, file_pages, file_pages.max(slot_pages), |low| {
            low.copy_in(CODE_GPA as usize, &GUEST_CODE);
            low.copy_in(LOOP_GPA as usize, &GUEST_LOOP);
        })?;
        let vcpu = real_mode_vcpu(&vm, 0, Some(DATA_GPA)).or_fail("vCPU 0")?;
        let g = Guest {
            vcpu,
            vm,
            gmem,
            gmem_map,
            shared,
            low,
            mode,
            slot_pages,
            page,
        };
        match mode {
            None => {
                let r = Region {
                    flags: 0,
                    gmem_fd: 0,
                    gmem_offset: 0,
                    ..g.data_region()
                };
                g.vm.set_region2(&r)
                    .or_fail("KVM_SET_USER_MEMORY_REGION2(anonymous data slot)")?;
            }
            Some(m) => {
                g.bind_data()
                    .or_fail("KVM_SET_USER_MEMORY_REGION2(guest_memfd data slot)")?;
                if m == AccessMode::Private {
                    g.vm.set_attributes(
                        DATA_GPA,
                        slot_pages * page,
                        KVM_MEMORY_ATTRIBUTE_PRIVATE as u64,
                    )
                    .or_fail("KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)")?;
                }
            }
        }
        Ok(g)
    }

    /// The data slot's request: gmem offset 0, `slot_pages` pages at DATA_GPA.
    pub fn data_region(&self) -> Region {
        let uaddr = slot_memory(&self.gmem_map, &self.shared).addr();
        Region {
            slot: DATA_SLOT,
            flags: KVM_MEM_GUEST_MEMFD,
            gpa: DATA_GPA,
            size: self.slot_pages * self.page,
            uaddr,
            gmem_offset: 0,
            gmem_fd: self.gmem.as_raw_fd() as u32,
        }
    }

    pub fn bind_data(&self) -> SysResult<()> {
        self.vm.set_region2(&self.data_region())
    }

    pub fn unbind_data(&self) -> SysResult<()> {
        self.vm.delete_region(&self.data_region())
    }

    /// Runs the guest program on byte `offset` of the data slot, storing `value`.
    pub fn touch(&mut self, offset: u16, value: u8, limit: Duration) -> Result<Touch, TouchError> {
        self.enter_at(CODE_GPA, offset, |regs| {
            regs.rcx = value as u64;
            regs.rax = 0;
        })?;
        let start = Instant::now();
        let found = self.expect_port(PORT_FOUND, 1, limit)?;
        let left = limit
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(100));
        let readback = self.expect_port(PORT_READBACK, 2, left)?;
        Ok(Touch { found, readback })
    }

    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            Some(AccessMode::Private) => "PRIVATE attributes",
            Some(AccessMode::SharedMmap) => "shared MMAP|INIT_SHARED guest_memfd",
            None => "anonymous memory (no guest_memfd)",
        }
    }

    /// Points the vCPU at the endless load loop on byte `offset`.
    pub fn start_loop(&mut self, offset: u16) -> Result<(), TouchError> {
        self.enter_at(LOOP_GPA, offset, |_| {})
    }

    /// Points the vCPU at guest code `rip` with the data byte `offset` in
    /// RBX; `extra` sets the entry point's other registers.
    fn enter_at(
        &mut self,
        rip: u64,
        offset: u16,
        extra: impl FnOnce(&mut kvm_bindings::kvm_regs),
    ) -> Result<(), TouchError> {
        let mut regs = self
            .vcpu
            .get_regs()
            .map_err(|e| TouchError::Unexpected(format!("KVM_GET_REGS: {}", ename(&e))))?;
        regs.rip = rip;
        regs.rflags = 2;
        regs.rbx = offset as u64;
        extra(&mut regs);
        self.vcpu
            .set_regs(&regs)
            .map_err(|e| TouchError::Unexpected(format!("KVM_SET_REGS: {}", ename(&e))))
    }

    fn expect_port(&mut self, port: u16, stage: u8, limit: Duration) -> Result<u8, TouchError> {
        match run_once(&mut self.vcpu, limit) {
            Exit::Io { port: p, value } if p == port => Ok(value),
            Exit::Io { port: p, value } => Err(TouchError::Unexpected(format!(
                "guest wrote {value:#x} to port {p:#x}, expected port {port:#x}"
            ))),
            Exit::MemoryFault(m) => Err(TouchError::MemoryFault(m)),
            Exit::TimedOut => Err(TouchError::TimedOut { stage, limit }),
            Exit::Other(m) => Err(TouchError::Unexpected(m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm::VmType;

    /// (mod, reg, r/m) of a ModRM byte.
    fn modrm(b: u8) -> (u8, u8, u8) {
        (b >> 6, (b >> 3) & 7, b & 7)
    }

    /// Decodes the programs from their bytes (the few real-mode opcodes
    /// they use) and checks each instruction does what the doc says.
    #[test]
    fn guest_code_is_the_documented_program() {
        const MOV_R8_RM8: u8 = 0x8A; // mov reg8, r/m8
        const MOV_RM8_R8: u8 = 0x88; // mov r/m8, reg8
        const OUT_IMM8_AL: u8 = 0xE6;
        const JMP_REL8: u8 = 0xEB;
        const HLT: u8 = 0xF4;
        const AL: u8 = 0;
        const CL: u8 = 1;
        const RM_BX: u8 = 7; // with mod 00 in 16-bit addressing: [bx]
        let c = &GUEST_CODE;
        // mov al, [bx]
        assert_eq!(c[0], MOV_R8_RM8);
        assert_eq!(modrm(c[1]), (0, AL, RM_BX));
        // out PORT_FOUND, al
        assert_eq!(c[2], OUT_IMM8_AL);
        assert_eq!(c[3] as u16, PORT_FOUND);
        // mov [bx], cl
        assert_eq!(c[4], MOV_RM8_R8);
        assert_eq!(modrm(c[5]), (0, CL, RM_BX));
        // mov al, [bx]; out PORT_READBACK, al; hlt
        assert_eq!(c[6], MOV_R8_RM8);
        assert_eq!(modrm(c[7]), (0, AL, RM_BX));
        assert_eq!(c[8], OUT_IMM8_AL);
        assert_eq!(c[9] as u16, PORT_READBACK);
        assert_eq!(c[10], HLT);
        assert_ne!(PORT_FOUND, PORT_READBACK);

        // The loop: mov al, [bx]; jmp back to the load. A rel8 jump lands
        // at the address after the jump plus the signed displacement.
        let l = &GUEST_LOOP;
        assert_eq!(l[0], MOV_R8_RM8);
        assert_eq!(modrm(l[1]), (0, AL, RM_BX));
        assert_eq!(l[2], JMP_REL8);
        let after_jmp = LOOP_GPA as i64 + 4;
        assert_eq!(after_jmp + l[3] as i8 as i64, LOOP_GPA as i64);

        assert_eq!(DATA_GPA & 0xF, 0, "DS base must be selector << 4");
        assert!(
            CODE_GPA + GUEST_CODE.len() as u64 <= LOOP_GPA,
            "the programs must not overlap"
        );
        assert!(LOOP_GPA + GUEST_LOOP.len() as u64 <= LOW_SIZE);
    }

    /// Decodes the flat-mode entry and its GDT from their bytes and checks
    /// they do what the listing says.
    #[test]
    fn flat_entry_is_the_documented_program() {
        // Descriptor fields: limit 15:0, base 23:0, access byte, flags with
        // limit 19:16, base 31:24.
        let desc = |i: usize| {
            let d = &GDT[i * 8..i * 8 + 8];
            let limit = u32::from(d[0]) | u32::from(d[1]) << 8 | u32::from(d[6] & 0xF) << 16;
            let base = u32::from(d[2])
                | u32::from(d[3]) << 8
                | u32::from(d[4]) << 16
                | u32::from(d[7]) << 24;
            (base, limit, d[5], d[6] >> 4)
        };
        assert_eq!(&GDT[..8], &[0; 8], "entry 0 is the null descriptor");
        const G_AND_32BIT: u8 = 0b1100; // G = 1 (4 KiB units), D/B = 1
                                        // Present, DPL 0, S = 1, type 1011 (code, execute/read, accessed).
        assert_eq!(desc(1), (0, 0xFFFFF, 0x9B, G_AND_32BIT));
        // Present, DPL 0, S = 1, type 0011 (data, read/write, accessed).
        assert_eq!(desc(2), (0, 0xFFFFF, 0x93, G_AND_32BIT));
        assert_eq!(usize::from(FLAT_CODE_SEL), 8);
        assert_eq!(usize::from(FLAT_DATA_SEL), 16);
        assert_eq!(gdtr(), [23, 0, 0x00, 0x30, 0, 0]);
        assert_eq!(GDT_GPA, 0x3000);

        let c = &ENTER_FLAT;
        // lgdt cs:[disp16]: CS prefix, 0F 01 /2, mod 00 r/m 110, disp16.
        assert_eq!(c[0], 0x2E);
        assert_eq!(&c[1..3], &[0x0F, 0x01]);
        assert_eq!(modrm(c[3]), (0, 2, 6));
        assert_eq!(u16::from_le_bytes([c[4], c[5]]) as u64, GDTR_GPA);
        // mov eax, cr0 (0F 20 /r: reg = CR number, r/m = GPR), or al, 1,
        // mov cr0, eax (0F 22 /r).
        assert_eq!(&c[6..8], &[0x0F, 0x20]);
        assert_eq!(modrm(c[8]), (3, 0, 0));
        assert_eq!(&c[9..11], &[0x0C, 0x01]);
        assert_eq!(&c[11..13], &[0x0F, 0x22]);
        assert_eq!(modrm(c[13]), (3, 0, 0));
        // jmp ptr16:16 to the next instruction, through the code selector.
        assert_eq!(c[14], 0xEA);
        let target = u16::from_le_bytes([c[15], c[16]]) as u64;
        assert_eq!(target, ENTER_FLAT_GPA + 19);
        assert_eq!(u16::from_le_bytes([c[17], c[18]]), FLAT_CODE_SEL);
        // 32-bit: mov eax, imm32 = the data selector; mov ds/es/ss, ax.
        assert_eq!(c[19], 0xB8);
        assert_eq!(
            u32::from_le_bytes([c[20], c[21], c[22], c[23]]),
            u32::from(FLAT_DATA_SEL)
        );
        const DS: u8 = 3;
        const ES: u8 = 0;
        const SS: u8 = 2;
        for (i, sreg) in [(24, DS), (26, ES), (28, SS)] {
            assert_eq!(c[i], 0x8E, "mov Sreg, r/m16 at byte {i}");
            assert_eq!(modrm(c[i + 1]), (3, sreg, 0));
        }
        // out PORT_FLAT, al; hlt.
        assert_eq!(c[30], 0xE6);
        assert_eq!(c[31] as u16, PORT_FLAT);
        assert_eq!(c[32], 0xF4);

        assert!(GDTR_GPA + 6 <= ENTER_FLAT_GPA);
        assert!(LOOP_GPA + (GUEST_LOOP.len() as u64) <= GDT_GPA);
        assert!(ENTER_FLAT_GPA + ENTER_FLAT.len() as u64 <= LOW_SIZE);
    }

    /// A vCPU spinning in KVM_RUN (the guest loops on `jmp $`, so KVM_RUN
    /// never returns on its own) is interrupted and reported as TimedOut:
    /// the mechanism the v12 regression case relies on for livelocks.
    /// Needs /dev/kvm, so it is ignored by default; CI runs it with the host
    /// lane (`cargo test -p selftests -- --ignored`), where a missing
    /// /dev/kvm fails it.
    #[test]
    #[ignore = "needs /dev/kvm: cargo test -p selftests -- --ignored"]
    fn spinning_vcpu_is_interrupted_at_the_limit() {
        let vm = Vm::create(VmType::Default).expect("a default VM (needs /dev/kvm)");
        let low = Mapping::anon(LOW_SIZE as usize).unwrap();
        low.copy_in(CODE_GPA as usize, &[0xEB, 0xFE]); // jmp $
        add_code_slot(&vm, &low, |m| eprintln!("{m}")).unwrap();
        let mut vcpu = real_mode_vcpu(&vm, 0, None).unwrap();
        let mut regs = vcpu.get_regs().unwrap();
        regs.rip = CODE_GPA;
        regs.rflags = 2;
        vcpu.set_regs(&regs).unwrap();
        let start = Instant::now();
        let exit = run_once(&mut vcpu, Duration::from_millis(300));
        let took = start.elapsed();
        assert_eq!(exit, Exit::TimedOut);
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(5),
            "{took:?}"
        );
        drop(vcpu);
        drop(vm);
    }
}
