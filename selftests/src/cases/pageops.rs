//! Whole-range guest operations and a fixture with several memslots and
//! vCPUs on one guest_memfd, for the conversion, multi-slot, punch and
//! concurrency cases.
//!
//! Four more real-mode programs live in the code slot next to the ones of
//! `guest.rs`. Each is entered with DS = ES = the base of the range (a
//! page-aligned GPA below 1 MiB, selector = base >> 4), BX = offset, CX =
//! length, AL = byte value, DX = end offset (walk only):
//!
//! ```text
//! fill  (0x2000): mov di,bx; cld; rep stosb; out 0x14,al; hlt
//! check (0x2010): mov di,bx; cld; repe scasb; je ok
//!                 dec di; mov al,[di]; out 0x13,al; hlt   ; mismatch at DI, AL found
//!             ok: out 0x12,al; hlt
//! walk  (0x2030): mov si,bx
//!          loop:  mov al,[si]; add si,0x1000; cmp si,dx; jb loop
//!                 mov si,bx; jmp loop                      ; never exits
//! watch (0x2060): mov al,cs:[EPOCH]; test al,1; jnz watch  ; odd: the host is changing things
//!                 mov ah,cs:[EXPECT]; mov bl,[0]
//!                 cmp al,cs:[EPOCH]; jne watch             ; the epoch moved meanwhile
//!                 cmp bl,ah; je watch
//!                 mov al,bl; out 0x15,al; hlt              ; AL found, AH expected
//! ```
//!
//! `watch` is a seqlock reader: the host keeps, in the code slot, an epoch
//! byte ([`EPOCH_GPA`]) and the byte the first page of the range must hold
//! ([`EXPECT_GPA`]). It makes the epoch odd, changes the page's state (KVM
//! memory attributes, ...), writes the new expectation and makes the epoch
//! even again. A load of the page between two loads of the same even epoch
//! happened after one change was complete and before the next began, so it
//! must find the expected byte; the guest exits only when it does not.
//!
//! A check reads every byte of the range in the guest, so a page that
//! kept stale data, or reads another page's data, is found wherever the
//! bytes differ.
//!
//! A vCPU switched to 32-bit flat protected mode (`guest::flat_vcpu`)
//! reaches any GPA below 4 GiB: `fill` and `check` then run with EBX = the
//! range's GPA and ECX = its length, no segment set up, one run per range.
//! `fill`'s bytes mean the same in both modes (the operand and address size
//! come from CS: `mov edi, ebx; rep stosb` over ECX bytes at ES:EDI).
//! `check` has a 32-bit twin, `check32` at 0x2040, which compares four
//! bytes at a time (the flat cases read megabytes, under TCG) and then
//! finds the byte that differs; it needs a length that is a multiple of 4
//! and EAX = the byte four times (every program is entered so):
//!
//! ```text
//! check32 (0x2040): mov edi,ebx; cld; shr ecx,2; repe scasd; je ok
//!                   sub edi,4; mov ecx,4; repe scasb      ; the dword that differs
//!                   dec edi; mov al,[edi]; out 0x13,al; hlt
//!               ok: out 0x12,al; hlt
//! ```

use std::os::fd::AsRawFd;
use std::time::Duration;

use kvm_ioctls::VcpuFd;

use crate::cases::guest::{flat_vcpu, real_mode_vcpu, run_once, slot_memory, Exit, Machine};
use crate::harness::case::{OrFail, Stop, TestResult, Tx};
use crate::kvm::caps::AccessMode;
use crate::kvm::{
    ename, GmemFile, Mapping, Region, SysResult, Vm, KVM_MEMORY_ATTRIBUTE_PRIVATE,
    KVM_MEM_GUEST_MEMFD,
};

pub const FILL_GPA: u64 = 0x2000;
pub const CHECK_GPA: u64 = 0x2010;
pub const WALK_GPA: u64 = 0x2030;
pub const CHECK32_GPA: u64 = 0x2040;
pub const WATCH_GPA: u64 = 0x2060;
/// The host's epoch and expected byte for `watch`, in the code slot (above
/// the GDT and the flat-mode entry at 0x3000-0x30ff).
pub const EPOCH_GPA: u64 = 0x3800;
pub const EXPECT_GPA: u64 = 0x3801;
pub const PORT_CHECK_OK: u16 = 0x12;
pub const PORT_CHECK_BAD: u16 = 0x13;
const PORT_FILLED: u16 = 0x14;
/// `watch` found a byte other than the expected one.
pub const PORT_WATCH_BAD: u16 = 0x15;

pub const FILL: [u8; 8] = [
    0x89, 0xDF, // mov di, bx
    0xFC, // cld
    0xF3, 0xAA, // rep stosb
    0xE6, 0x14, // out 0x14, al
    0xF4, // hlt
];

pub const CHECK: [u8; 16] = [
    0x89, 0xDF, // mov di, bx
    0xFC, // cld
    0xF3, 0xAE, // repe scasb
    0x74, 0x06, // je ok (+6)
    0x4F, // dec di
    0x8A, 0x05, // mov al, [di]
    0xE6, 0x13, // out 0x13, al
    0xF4, // hlt
    0xE6, 0x12, // ok: out 0x12, al
    0xF4, // hlt
];

pub const WALK: [u8; 16] = [
    0x89, 0xDE, // mov si, bx
    0x8A, 0x04, // loop: mov al, [si]
    0x81, 0xC6, 0x00, 0x10, // add si, 0x1000
    0x39, 0xD6, // cmp si, dx
    0x72, 0xF6, // jb loop (-10)
    0x89, 0xDE, // mov si, bx
    0xEB, 0xF2, // jmp loop (-14)
];

/// `CHECK` for 32-bit flat mode, by dwords (see the module doc).
pub const CHECK32: [u8; 29] = [
    0x89, 0xDF, // mov edi, ebx
    0xFC, // cld
    0xC1, 0xE9, 0x02, // shr ecx, 2
    0xF3, 0xAF, // repe scasd
    0x74, 0x10, // je ok (+16)
    0x83, 0xEF, 0x04, // sub edi, 4
    0xB9, 0x04, 0x00, 0x00, 0x00, // mov ecx, 4
    0xF3, 0xAE, // repe scasb
    0x4F, // dec edi
    0x8A, 0x07, // mov al, [edi]
    0xE6, 0x13, // out 0x13, al
    0xF4, // hlt
    0xE6, 0x12, // ok: out 0x12, al
    0xF4, // hlt
];

pub const WATCH: [u8; 33] = [
    0x2E, 0xA0, 0x00, 0x38, // watch: mov al, cs:[0x3800]
    0xA8, 0x01, // test al, 1
    0x75, 0xF8, // jnz watch (-8)
    0x2E, 0x8A, 0x26, 0x01, 0x38, // mov ah, cs:[0x3801]
    0x8A, 0x1E, 0x00, 0x00, // mov bl, [0]
    0x2E, 0x3A, 0x06, 0x00, 0x38, // cmp al, cs:[0x3800]
    0x75, 0xE8, // jne watch (-24)
    0x38, 0xE3, // cmp bl, ah
    0x74, 0xE4, // je watch (-28)
    0x88, 0xD8, // mov al, bl
    0xE6, 0x15, // out 0x15, al
    0xF4, // hlt
];

/// Data slots of real-mode vCPUs live between the code slot and 1 MiB
/// (real-mode reach); flat-mode vCPUs reach up to 4 GiB.
pub const DATA_BASE: u64 = 0x10000;
pub const DATA_END: u64 = 0x10_0000;
/// Longest range one program run covers in real mode (CX is 16 bits; keep
/// BX + CX in the segment).
const CHUNK: u64 = 0x8000;
/// End of what a flat-mode vCPU addresses (32-bit offsets, no paging).
pub const FLAT_END: u64 = 1 << 32;

pub fn install(low: &Mapping) {
    low.copy_in(FILL_GPA as usize, &FILL);
    low.copy_in(CHECK_GPA as usize, &CHECK);
    low.copy_in(WALK_GPA as usize, &WALK);
    low.copy_in(CHECK32_GPA as usize, &CHECK32);
    low.copy_in(WATCH_GPA as usize, &WATCH);
}

/// How a vCPU's programs address a range: read from the vCPU (CR0.PE), so
/// the same `fill` and `check` serve both kinds of fixture vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addressing {
    /// Real mode: DS = ES = the chunk's base, BX = 0, chunks of [`CHUNK`].
    Real,
    /// 32-bit flat: EBX = the GPA, the whole range in one run.
    Flat,
}

impl Addressing {
    fn of(vcpu: &VcpuFd) -> Result<Addressing, String> {
        let s = vcpu
            .get_sregs()
            .map_err(|e| format!("KVM_GET_SREGS: {}", ename(&e)))?;
        Ok(if s.cr0 & 1 != 0 {
            Addressing::Flat
        } else {
            Addressing::Real
        })
    }

    /// Longest part of a range one run covers.
    fn chunk(self) -> u64 {
        match self {
            Addressing::Real => CHUNK,
            Addressing::Flat => FLAT_END,
        }
    }

    fn check_program(self) -> u64 {
        match self {
            Addressing::Real => CHECK_GPA,
            Addressing::Flat => CHECK32_GPA,
        }
    }

    /// Makes `gpa` reachable and returns the BX/EBX value that names it.
    fn aim(self, vcpu: &VcpuFd, gpa: u64, len: u64) -> Result<u64, String> {
        match self {
            Addressing::Real => point(vcpu, gpa).map(|()| 0),
            Addressing::Flat => {
                assert!(gpa + len <= FLAT_END, "GPA {gpa:#x}+{len:#x} beyond 4 GiB");
                assert!(
                    len % 4 == 0,
                    "flat ranges are whole dwords, not {len:#x} bytes"
                );
                Ok(gpa)
            }
        }
    }

    /// The GPA the guest's DI/EDI names in a run over the chunk at `at`.
    fn gpa_of(self, at: u64, rdi: u64) -> u64 {
        match self {
            Addressing::Real => at + (rdi & 0xFFFF),
            Addressing::Flat => rdi & 0xFFFF_FFFF,
        }
    }
}

/// A byte the guest found that differs from what it expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    pub gpa: u64,
    pub found: u8,
}

/// Points DS and ES of `vcpu` at `base` (page aligned, below 1 MiB).
fn point(vcpu: &VcpuFd, base: u64) -> Result<(), String> {
    assert!(base < DATA_END && base & 0xF == 0, "segment base {base:#x}");
    let mut s = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {}", ename(&e)))?;
    for seg in [&mut s.ds, &mut s.es] {
        seg.base = base;
        seg.selector = (base >> 4) as u16;
    }
    vcpu.set_sregs(&s)
        .map_err(|e| format!("KVM_SET_SREGS: {}", ename(&e)))
}

/// Enters the program at `rip` with EAX = `al` four times (the 16-bit
/// programs use AL only), BX, CX and DX as given.
fn enter(vcpu: &VcpuFd, rip: u64, al: u8, bx: u64, cx: u64, dx: u64) -> Result<(), String> {
    let mut r = vcpu
        .get_regs()
        .map_err(|e| format!("KVM_GET_REGS: {}", ename(&e)))?;
    r.rip = rip;
    r.rflags = 2;
    r.rax = u64::from(u32::from_ne_bytes([al; 4]));
    r.rbx = bx;
    r.rcx = cx;
    r.rdx = dx;
    r.rdi = 0;
    r.rsi = 0;
    vcpu.set_regs(&r)
        .map_err(|e| format!("KVM_SET_REGS: {}", ename(&e)))
}

fn describe(e: Exit, what: &str, limit: Duration) -> String {
    match e {
        Exit::TimedOut => format!(
            "{what}: vCPU made no progress for {:.1}s (KVM_RUN never exited)",
            limit.as_secs_f64()
        ),
        Exit::MemoryFault(m) => format!("{what}: {m}"),
        Exit::Io { port, value } => {
            format!("{what}: unexpected port I/O {port:#x} = {value:#x}")
        }
        Exit::Other(m) => format!("{what}: {m}"),
    }
}

/// How a program's run over one chunk ended, as its caller reads it.
enum Chunk<T> {
    /// As expected: go on with the next chunk.
    Next,
    /// Stop here with this answer.
    Stop(T),
    /// Not an exit this program makes.
    Unexpected(Exit),
}

/// Runs the program at `rip` over `gpa..gpa+len`, one KVM_RUN per chunk
/// (the vCPU's addressing `mode` says how long), with AL = `val`; `read`
/// judges each chunk's exit. `what(at, n)` names a chunk in errors.
fn over_chunks<T>(
    vcpu: &mut VcpuFd,
    (mode, rip): (Addressing, u64),
    (gpa, len): (u64, u64),
    val: u8,
    limit: Duration,
    what: impl Fn(u64, u64) -> String,
    mut read: impl FnMut(&VcpuFd, u64, Exit) -> Result<Chunk<T>, String>,
) -> Result<Option<T>, String> {
    let mut at = gpa;
    while at < gpa + len {
        let n = mode.chunk().min(gpa + len - at);
        let bx = mode.aim(vcpu, at, n)?;
        enter(vcpu, rip, val, bx, n, 0)?;
        let exit = run_once(vcpu, limit);
        match read(vcpu, at, exit)? {
            Chunk::Next => {}
            Chunk::Stop(answer) => return Ok(Some(answer)),
            Chunk::Unexpected(e) => return Err(describe(e, &what(at, n), limit)),
        }
        at += n;
    }
    Ok(None)
}

/// The guest stores `val` in every byte of `gpa..gpa+len`.
pub fn fill(vcpu: &mut VcpuFd, gpa: u64, len: u64, val: u8, limit: Duration) -> Result<(), String> {
    let what = |at, n| format!("guest fill of GPA {at:#x}+{n:#x} with {val:#x}");
    let mode = Addressing::of(vcpu)?;
    over_chunks::<()>(
        vcpu,
        (mode, FILL_GPA),
        (gpa, len),
        val,
        limit,
        what,
        |_, _, exit| {
            Ok(match exit {
                Exit::Io {
                    port: PORT_FILLED, ..
                } => Chunk::Next,
                e => Chunk::Unexpected(e),
            })
        },
    )
    .map(|_| ())
}

/// The guest reads every byte of `gpa..gpa+len`; the first one that is
/// not `val`, if any.
pub fn check(
    vcpu: &mut VcpuFd,
    gpa: u64,
    len: u64,
    val: u8,
    limit: Duration,
) -> Result<Option<Mismatch>, String> {
    let what = |at, n| format!("guest check of GPA {at:#x}+{n:#x} for {val:#x}");
    let mode = Addressing::of(vcpu)?;
    over_chunks(
        vcpu,
        (mode, mode.check_program()),
        (gpa, len),
        val,
        limit,
        what,
        |vcpu, at, exit| {
            Ok(match exit {
                Exit::Io {
                    port: PORT_CHECK_OK,
                    ..
                } => Chunk::Next,
                Exit::Io {
                    port: PORT_CHECK_BAD,
                    value,
                } => {
                    let r = vcpu
                        .get_regs()
                        .map_err(|e| format!("KVM_GET_REGS: {}", ename(&e)))?;
                    Chunk::Stop(Mismatch {
                        gpa: mode.gpa_of(at, r.rdi),
                        found: value,
                    })
                }
                e => Chunk::Unexpected(e),
            })
        },
    )
}

/// Runs `check` once over `gpa..gpa+len` (one chunk at most) and hands
/// back how KVM_RUN ended, for a caller that expects an exit other than a
/// finished check (a memory fault).
pub fn check_exit(
    vcpu: &mut VcpuFd,
    gpa: u64,
    len: u64,
    val: u8,
    limit: Duration,
) -> Result<Exit, String> {
    assert!(
        len <= CHUNK,
        "one program run covers at most {CHUNK:#x} bytes"
    );
    point(vcpu, gpa)?;
    enter(vcpu, CHECK_GPA, val, 0, len, 0)?;
    Ok(run_once(vcpu, limit))
}

/// Points the vCPU at the walk loop over `pages` pages from `gpa`: one
/// load per page, round and round, until KVM_RUN is interrupted.
pub fn start_walk(vcpu: &VcpuFd, gpa: u64, pages: u64, page: u64) -> Result<(), String> {
    assert!(pages * page < 0x10000, "the walk covers less than 64 KiB");
    point(vcpu, gpa)?;
    enter(vcpu, WALK_GPA, 0, 0, 0, pages * page)
}

/// Points the vCPU at the watch loop over the page at `gpa`; it leaves
/// KVM_RUN only through [`PORT_WATCH_BAD`] (or an interruption).
pub fn start_watch(vcpu: &VcpuFd, gpa: u64) -> Result<(), String> {
    point(vcpu, gpa)?;
    enter(vcpu, WATCH_GPA, 0, 0, 0, 0)
}

/// Fixture: a VM with the code slot, one guest_memfd of `file_pages`, the
/// memory behind its slots' userspace_addr, and `n` vCPUs. Slots are added
/// by the case. Fields drop in order: vCPUs and VM first, memory last.
pub struct Rig {
    pub vcpus: Vec<VcpuFd>,
    pub vm: Vm,
    pub gmem: GmemFile,
    /// The guest_memfd mapping (SharedMmap mode): slots' userspace_addr.
    pub gmem_map: Option<Mapping>,
    /// Anonymous memory, one page per file page (Private mode): the shared
    /// side of every slot.
    pub shared: Option<Mapping>,
    pub low: Mapping,
    pub mode: AccessMode,
    pub page: u64,
}

impl Rig {
    /// `n` real-mode vCPUs: slots below 1 MiB.
    pub fn new(tx: &Tx, mode: AccessMode, file_pages: u64, n: usize) -> Result<Rig, Stop> {
        Rig::build(tx, mode, file_pages, n, |vm, id| {
            real_mode_vcpu(vm, id, None)
        })
    }

    /// `n` vCPUs in 32-bit flat protected mode: slots anywhere below 4 GiB.
    pub fn flat(tx: &Tx, mode: AccessMode, file_pages: u64, n: usize) -> Result<Rig, Stop> {
        let limit = tx.inner_limit(Duration::from_secs(10));
        Rig::build(tx, mode, file_pages, n, |vm, id| flat_vcpu(vm, id, limit))
    }

    fn build(
        tx: &Tx,
        mode: AccessMode,
        file_pages: u64,
        n: usize,
        vcpu: impl Fn(&Vm, u64) -> Result<VcpuFd, String>,
    ) -> Result<Rig, Stop> {
        let Machine {
            vm,
            gmem,
            gmem_map,
            shared,
            low,
        } = Machine::new(tx, Some(mode), file_pages, file_pages, install)?;
        let vcpus = (0..n as u64)
            .map(|id| vcpu(&vm, id).or_fail(&format!("vCPU {id}")))
            .collect::<Result<Vec<_>, Stop>>()?;
        Ok(Rig {
            vcpus,
            vm,
            gmem,
            gmem_map,
            shared,
            low,
            mode,
            page: tx.page(),
        })
    }

    /// The mapping behind the slots' userspace_addr, indexed by file offset.
    pub fn backing(&self) -> &Mapping {
        slot_memory(&self.gmem_map, &self.shared)
    }

    /// Slot `slot` at `gpa`, `pages` long, bound to the file from `file_page`.
    pub fn region(&self, slot: u32, gpa: u64, pages: u64, file_page: u64) -> Region {
        Region {
            slot,
            flags: KVM_MEM_GUEST_MEMFD,
            gpa,
            size: pages * self.page,
            uaddr: self.backing().addr() + file_page * self.page,
            gmem_offset: file_page * self.page,
            gmem_fd: self.gmem.as_raw_fd() as u32,
        }
    }

    /// Adds the slot; in Private mode its range becomes PRIVATE.
    pub fn add(&self, r: &Region) -> Result<(), Stop> {
        self.vm.set_region2(r).or_fail(&format!(
            "KVM_SET_USER_MEMORY_REGION2(slot {} at GPA {:#x}, file offset {:#x})",
            r.slot, r.gpa, r.gmem_offset
        ))?;
        if self.mode == AccessMode::Private {
            self.set_private(r.gpa, r.size, true)
                .or_fail("KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)")?;
        }
        Ok(())
    }

    pub fn set_private(&self, gpa: u64, len: u64, private: bool) -> SysResult<()> {
        let attrs = if private {
            KVM_MEMORY_ATTRIBUTE_PRIVATE as u64
        } else {
            0
        };
        self.vm.set_attributes(gpa, len, attrs)
    }

    /// Deletes and re-adds the slots: KVM drops every mapping of them and
    /// rebuilds it from the file on the next access.
    pub fn rebuild(&self, slots: &[Region]) -> Result<(), Stop> {
        for r in slots {
            self.vm
                .delete_region(r)
                .or_fail(&format!("delete slot {}", r.slot))?;
        }
        for r in slots {
            self.vm
                .set_region2(r)
                .or_fail(&format!("re-add slot {}", r.slot))?;
        }
        Ok(())
    }

    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            AccessMode::Private => "PRIVATE attributes",
            AccessMode::SharedMmap => "shared MMAP|INIT_SHARED guest_memfd",
        }
    }
}

/// Runs `work(k, vcpu)` for every vCPU `k` at once, each in a thread of
/// its own; after all have finished, the first failure in vCPU order.
pub fn on_each_vcpu(
    vcpus: &mut [VcpuFd],
    work: impl Fn(usize, &mut VcpuFd) -> TestResult + Sync,
) -> TestResult {
    let work = &work;
    let results: Vec<TestResult> = std::thread::scope(|s| {
        let workers: Vec<_> = vcpus
            .iter_mut()
            .enumerate()
            .map(|(k, vcpu)| s.spawn(move || work(k, vcpu)))
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(Stop::Fail("a vCPU thread panicked".into())))
            })
            .collect()
    });
    results.into_iter().collect()
}

/// `Err(Stop::Fail)` naming `what` when the guest found something other
/// than `want` in the range.
pub fn expect_range(
    vcpu: &mut VcpuFd,
    gpa: u64,
    len: u64,
    want: u8,
    limit: Duration,
    what: impl FnOnce() -> String,
) -> Result<(), Stop> {
    match check(vcpu, gpa, len, want, limit) {
        Ok(None) => Ok(()),
        Ok(Some(m)) => Err(Stop::Fail(format!(
            "{}: the guest reads {:#x} at GPA {:#x} (range {gpa:#x}+{len:#x}), expected {want:#x}",
            what(),
            m.found,
            m.gpa
        ))),
        Err(e) => Err(Stop::Fail(format!("{}: {e}", what()))),
    }
}

/// `fill`, failing the case with `what` on error.
pub fn fill_range(
    vcpu: &mut VcpuFd,
    gpa: u64,
    len: u64,
    val: u8,
    limit: Duration,
    what: impl FnOnce() -> String,
) -> Result<(), Stop> {
    fill(vcpu, gpa, len, val, limit).map_err(|e| Stop::Fail(format!("{}: {e}", what())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::guest::{
        add_code_slot, install_flat_entry, CODE_GPA, ENTER_FLAT, ENTER_FLAT_GPA, GDT_GPA,
        GUEST_CODE, GUEST_LOOP, LOOP_GPA, LOW_SIZE,
    };

    #[test]
    fn programs_fit_beside_the_others() {
        let code_end = CODE_GPA as usize + GUEST_CODE.len();
        let loop_end = LOOP_GPA as usize + GUEST_LOOP.len();
        assert!(code_end <= FILL_GPA as usize && loop_end <= FILL_GPA as usize);
        assert!(FILL_GPA as usize + FILL.len() <= CHECK_GPA as usize);
        assert!(CHECK_GPA as usize + CHECK.len() <= WALK_GPA as usize);
        assert!(WALK_GPA as usize + WALK.len() <= CHECK32_GPA as usize);
        assert!(CHECK32_GPA as usize + CHECK32.len() <= WATCH_GPA as usize);
        assert!(WATCH_GPA as usize + WATCH.len() <= GDT_GPA as usize);
        assert!(GDT_GPA < LOW_SIZE);
        assert!(ENTER_FLAT_GPA as usize + ENTER_FLAT.len() <= EPOCH_GPA as usize);
        assert!((EXPECT_GPA as usize) < LOW_SIZE as usize);
    }

    /// (mod, reg, r/m) of a ModRM byte.
    fn modrm(b: u8) -> (u8, u8, u8) {
        (b >> 6, (b >> 3) & 7, b & 7)
    }

    /// Decodes `fill`, `check` and `check32` from their bytes. Register
    /// numbers are the same for 16- and 32-bit operands (BX/EBX 3, CX/ECX
    /// 1, DI/EDI 7); what differs is the memory operand: with mod 00, r/m
    /// 101 is `[di]` in 16-bit addressing but a bare disp32 in 32-bit
    /// addressing, where `[edi]` is r/m 111.
    #[test]
    fn programs_decode_in_both_modes() {
        const MOV_RM_R: u8 = 0x89; // mov r/m16|32, reg16|32
        const MOV_R8_RM8: u8 = 0x8A;
        const CLD: u8 = 0xFC;
        const REP: u8 = 0xF3;
        const STOSB: u8 = 0xAA;
        const SCASB: u8 = 0xAE;
        const SCASD: u8 = 0xAF; // scasd with a 32-bit operand size
        const JE_REL8: u8 = 0x74;
        const DEC_DI: u8 = 0x4F; // 48+r: dec DI (16-bit) / EDI (32-bit)
        const OUT_IMM8_AL: u8 = 0xE6;
        const HLT: u8 = 0xF4;
        const AL: u8 = 0;
        const CX: u8 = 1;
        const BX: u8 = 3;
        const DI: u8 = 7;
        // fill: mov di|edi, bx|ebx; cld; rep stosb; out PORT_FILLED, al; hlt.
        assert_eq!(FILL[0], MOV_RM_R);
        assert_eq!(modrm(FILL[1]), (3, BX, DI));
        assert_eq!(&FILL[2..5], &[CLD, REP, STOSB]);
        assert_eq!(FILL[5], OUT_IMM8_AL);
        assert_eq!(FILL[6] as u16, PORT_FILLED);
        assert_eq!(FILL[7], HLT);

        // check: mov di, bx; cld; repe scasb; je ok; dec di; mov al, [di];
        // out PORT_CHECK_BAD, al; hlt; ok: out PORT_CHECK_OK, al; hlt.
        let c = &CHECK;
        assert_eq!(c[0], MOV_RM_R);
        assert_eq!(modrm(c[1]), (3, BX, DI));
        assert_eq!(&c[2..5], &[CLD, REP, SCASB]);
        assert_eq!(c[5], JE_REL8);
        assert_eq!(7 + c[6] as usize, 13, "je: next instruction at 7, ok at 13");
        assert_eq!(c[7], DEC_DI);
        assert_eq!(c[8], MOV_R8_RM8);
        assert_eq!(modrm(c[9]), (0, AL, 5), "mov al, [di]: r/m 101");
        assert_eq!(&c[10..13], &[OUT_IMM8_AL, PORT_CHECK_BAD as u8, HLT]);
        assert_eq!(&c[13..16], &[OUT_IMM8_AL, PORT_CHECK_OK as u8, HLT]);

        // check32: mov edi, ebx; cld; shr ecx, 2 (C1 /5 ib); repe scasd;
        // je ok; sub edi, 4 (83 /5 ib); mov ecx, 4 (B8+r imm32); repe
        // scasb; dec edi; mov al, [edi]; out PORT_CHECK_BAD, al; hlt;
        // ok: out PORT_CHECK_OK, al; hlt.
        let c = &CHECK32;
        assert_eq!(c[0], MOV_RM_R);
        assert_eq!(modrm(c[1]), (3, BX, DI));
        assert_eq!(c[2], CLD);
        assert_eq!((c[3], modrm(c[4]), c[5]), (0xC1, (3, 5, CX), 2));
        assert_eq!(&c[6..8], &[REP, SCASD]);
        assert_eq!(c[8], JE_REL8);
        assert_eq!(
            10 + c[9] as usize,
            26,
            "je: next instruction at 10, ok at 26"
        );
        assert_eq!((c[10], modrm(c[11]), c[12]), (0x83, (3, 5, DI), 4));
        assert_eq!(c[13], 0xB8 + CX);
        assert_eq!(u32::from_le_bytes([c[14], c[15], c[16], c[17]]), 4);
        assert_eq!(&c[18..20], &[REP, SCASB]);
        assert_eq!(c[20], DEC_DI);
        assert_eq!(c[21], MOV_R8_RM8);
        assert_eq!(modrm(c[22]), (0, AL, DI), "mov al, [edi]: r/m 111");
        assert_eq!(&c[23..26], &[OUT_IMM8_AL, PORT_CHECK_BAD as u8, HLT]);
        assert_eq!(&c[26..29], &[OUT_IMM8_AL, PORT_CHECK_OK as u8, HLT]);
    }

    /// walk's relative jumps land where the listing says.
    #[test]
    fn walk_jump_targets() {
        // jb at 10 (next 12) and jmp at 14 (next 16) both go to "loop" at 2.
        assert_eq!((WALK[10], WALK[14]), (0x72, 0xEB));
        assert_eq!(12 + (WALK[11] as i8) as isize, 2);
        assert_eq!(16 + (WALK[15] as i8) as isize, 2);
        // watch: jnz at 6 (next 8), jne at 22 (next 24), je at 26 (next 28)
        // all go back to the start; both host bytes are where it loads them.
        assert_eq!(8 + (WATCH[7] as i8) as isize, 0);
        assert_eq!(24 + (WATCH[23] as i8) as isize, 0);
        assert_eq!(28 + (WATCH[27] as i8) as isize, 0);
        assert_eq!(&WATCH[6..7], &[0x75]);
        assert_eq!(&WATCH[22..23], &[0x75]);
        assert_eq!(&WATCH[26..27], &[0x74]);
        let at = |i: usize| u16::from_le_bytes([WATCH[i], WATCH[i + 1]]) as u64;
        assert_eq!(at(2), EPOCH_GPA);
        assert_eq!(at(11), EXPECT_GPA);
        assert_eq!(at(20), EPOCH_GPA);
        assert_eq!(WATCH[31], PORT_WATCH_BAD as u8);
    }

    /// vCPU 0 (made by `vcpu`) of a default VM with the programs and a
    /// data slot of `size` at `gpa` over anonymous memory, which comes
    /// last; `None` (the test passes, saying why) without /dev/kvm.
    fn vm_with_data(
        gpa: u64,
        size: u64,
        vcpu: impl FnOnce(&Vm) -> Result<VcpuFd, String>,
    ) -> Option<(VcpuFd, Vm, Mapping, Mapping)> {
        let vm = match Vm::create(crate::kvm::VmType::Default) {
            Ok(vm) => vm,
            Err(e) => {
                eprintln!("skipped: {e}");
                return None;
            }
        };
        let low = Mapping::anon(LOW_SIZE as usize).unwrap();
        install_flat_entry(&low);
        install(&low);
        add_code_slot(&vm, &low, |m| eprintln!("{m}")).unwrap();
        let data = Mapping::anon(size as usize).unwrap();
        vm.set_region2(&Region {
            slot: 1,
            gpa,
            size,
            uaddr: data.addr(),
            ..Default::default()
        })
        .unwrap();
        let vcpu = vcpu(&vm).unwrap();
        Some((vcpu, vm, low, data))
    }

    /// The programs on a real vCPU over anonymous memory: fill, a clean
    /// check, one planted byte found at its address, the walk interrupted
    /// at its limit, and watch quiet until an even epoch disagrees.
    #[test]
    fn programs_run_on_a_vcpu() {
        let Some((mut vcpu, _vm, low, data)) =
            vm_with_data(DATA_BASE, 0x12000, |vm| real_mode_vcpu(vm, 0, None))
        else {
            return;
        };
        let lim = Duration::from_secs(5);
        // Across a chunk boundary (CHUNK is 0x8000).
        fill(&mut vcpu, DATA_BASE + 0x1000, 0x10000, 0x5A, lim).unwrap();
        assert_eq!(data.first_ne(0x1000, 0x10000, 0x5A), None);
        assert_eq!(data.read(0xFFF), 0);
        assert_eq!(data.read(0x11000), 0);
        assert_eq!(
            check(&mut vcpu, DATA_BASE + 0x1000, 0x10000, 0x5A, lim),
            Ok(None)
        );
        data.write(0x9ABC, 0x77);
        assert_eq!(
            check(&mut vcpu, DATA_BASE + 0x1000, 0x10000, 0x5A, lim),
            Ok(Some(Mismatch {
                gpa: DATA_BASE + 0x9ABC,
                found: 0x77
            }))
        );
        start_walk(&vcpu, DATA_BASE, 4, 0x1000).unwrap();
        assert_eq!(
            run_once(&mut vcpu, Duration::from_millis(200)),
            Exit::TimedOut
        );
        // watch: quiet while the page holds the expected byte or the epoch
        // is odd, an exit naming both bytes once an even epoch disagrees.
        data.write(0x1000, 0x5A);
        low.write(EPOCH_GPA as usize, 2);
        low.write(EXPECT_GPA as usize, 0x5A);
        start_watch(&vcpu, DATA_BASE + 0x1000).unwrap();
        let quiet = Duration::from_millis(100);
        assert_eq!(run_once(&mut vcpu, quiet), Exit::TimedOut);
        low.write(EPOCH_GPA as usize, 3);
        low.write(EXPECT_GPA as usize, 0x11);
        assert_eq!(run_once(&mut vcpu, quiet), Exit::TimedOut);
        low.write(EPOCH_GPA as usize, 4);
        assert_eq!(
            run_once(&mut vcpu, lim),
            Exit::Io {
                port: PORT_WATCH_BAD,
                value: 0x5A
            }
        );
        assert_eq!((vcpu.get_regs().unwrap().rax >> 8) & 0xFF, 0x11);
    }

    /// The same programs on a vCPU switched to flat mode, over a range
    /// above 1 MiB that crosses a 2 MiB boundary: the fill stops at the
    /// range's ends, the check reads all of it and names a planted byte's
    /// GPA wherever it sits in a dword.
    #[test]
    fn programs_run_on_a_flat_vcpu() {
        const GPA: u64 = 0x1F_0000;
        const SIZE: u64 = 0x2_0000;
        let lim = Duration::from_secs(5);
        let Some((mut vcpu, _vm, _low, data)) = vm_with_data(GPA, SIZE, |vm| flat_vcpu(vm, 0, lim))
        else {
            return;
        };
        fill(&mut vcpu, GPA + 0x1000, SIZE - 0x2000, 0xA5, lim).unwrap();
        assert_eq!(data.first_ne(0x1000, (SIZE - 0x2000) as usize, 0xA5), None);
        assert_eq!(data.read(0xFFF), 0);
        assert_eq!(data.read((SIZE - 0x1000) as usize), 0);
        assert_eq!(
            check(&mut vcpu, GPA + 0x1000, SIZE - 0x2000, 0xA5, lim),
            Ok(None)
        );
        // Each byte of a dword, and the range's first and last bytes.
        for at in [
            0x1000,
            0x1_2344,
            0x1_2345,
            0x1_2346,
            0x1_2347,
            SIZE - 0x1001,
        ] {
            data.write(at as usize, 0x3C);
            assert_eq!(
                check(&mut vcpu, GPA + 0x1000, SIZE - 0x2000, 0xA5, lim),
                Ok(Some(Mismatch {
                    gpa: GPA + at,
                    found: 0x3C
                })),
                "planted at {at:#x}"
            );
            data.write(at as usize, 0xA5);
        }
        assert_eq!(
            check(&mut vcpu, GPA, 0x1000, 0, lim),
            Ok(None),
            "below the filled range"
        );
    }
}
