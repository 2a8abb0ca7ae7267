//! Whole-range guest operations and a fixture with several memslots and
//! vCPUs on one guest_memfd, for the conversion, multi-slot, punch and
//! concurrency cases.
//!
//! Three more real-mode programs live in the code slot next to the ones of
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
//! ```
//!
//! A check reads every byte of the range in the guest, so a page that
//! kept stale data, or reads another page's data, is found wherever the
//! bytes differ.

use std::os::fd::AsRawFd;
use std::time::Duration;

use kvm_ioctls::VcpuFd;

use crate::cases::guest::{real_mode_vcpu, run_once, slot_memory, Exit, Machine};
use crate::harness::case::{OrFail, Stop, Tx};
use crate::kvm::caps::AccessMode;
use crate::kvm::{
    ename, GmemFile, Mapping, Region, SysResult, Vm, KVM_MEMORY_ATTRIBUTE_PRIVATE,
    KVM_MEM_GUEST_MEMFD,
};

pub const FILL_GPA: u64 = 0x2000;
pub const CHECK_GPA: u64 = 0x2010;
pub const WALK_GPA: u64 = 0x2030;
pub const PORT_CHECK_OK: u16 = 0x12;
pub const PORT_CHECK_BAD: u16 = 0x13;
const PORT_FILLED: u16 = 0x14;

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

/// Data slots live between the code slot and 1 MiB (real-mode reach).
pub const DATA_BASE: u64 = 0x10000;
pub const DATA_END: u64 = 0x10_0000;
/// Longest range one program run covers (CX is 16 bits; keep BX + CX in the segment).
const CHUNK: u64 = 0x8000;

pub fn install(low: &Mapping) {
    low.copy_in(FILL_GPA as usize, &FILL);
    low.copy_in(CHECK_GPA as usize, &CHECK);
    low.copy_in(WALK_GPA as usize, &WALK);
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

fn enter(vcpu: &VcpuFd, rip: u64, al: u8, bx: u64, cx: u64, dx: u64) -> Result<(), String> {
    let mut r = vcpu
        .get_regs()
        .map_err(|e| format!("KVM_GET_REGS: {}", ename(&e)))?;
    r.rip = rip;
    r.rflags = 2;
    r.rax = al as u64;
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

/// Runs the program at `rip` over `gpa..gpa+len`, one KVM_RUN per chunk of
/// at most [`CHUNK`] bytes, with AL = `val`; `read` judges each chunk's
/// exit. `what(at, n)` names a chunk in errors.
fn over_chunks<T>(
    vcpu: &mut VcpuFd,
    rip: u64,
    (gpa, len): (u64, u64),
    val: u8,
    limit: Duration,
    what: impl Fn(u64, u64) -> String,
    mut read: impl FnMut(&VcpuFd, u64, Exit) -> Result<Chunk<T>, String>,
) -> Result<Option<T>, String> {
    let mut at = gpa;
    while at < gpa + len {
        let n = CHUNK.min(gpa + len - at);
        point(vcpu, at)?;
        enter(vcpu, rip, val, 0, n, 0)?;
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
    over_chunks::<()>(
        vcpu,
        FILL_GPA,
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
    over_chunks(
        vcpu,
        CHECK_GPA,
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
                        gpa: at + (r.rdi & 0xFFFF),
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
    pub fn new(tx: &Tx, mode: AccessMode, file_pages: u64, n: usize) -> Result<Rig, Stop> {
        let Machine {
            vm,
            gmem,
            gmem_map,
            shared,
            low,
        } = Machine::new(tx, Some(mode), file_pages, file_pages, install)?;
        let vcpus = (0..n as u64)
            .map(|id| real_mode_vcpu(&vm, id, None).or_fail(&format!("vCPU {id}")))
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
        add_code_slot, CODE_GPA, GUEST_CODE, GUEST_LOOP, LOOP_GPA, LOW_SIZE,
    };

    #[test]
    fn programs_fit_beside_the_others() {
        let code_end = CODE_GPA as usize + GUEST_CODE.len();
        let loop_end = LOOP_GPA as usize + GUEST_LOOP.len();
        assert!(code_end <= FILL_GPA as usize && loop_end <= FILL_GPA as usize);
        assert!(FILL_GPA as usize + FILL.len() <= CHECK_GPA as usize);
        assert!(CHECK_GPA as usize + CHECK.len() <= WALK_GPA as usize);
        assert!((WALK_GPA as usize + WALK.len()) < LOW_SIZE as usize);
    }

    /// The relative jumps land where the listing says.
    #[test]
    fn jump_targets() {
        // check: je at offset 5, next instruction at 7, target "ok" at 13.
        assert_eq!(CHECK[5], 0x74);
        assert_eq!(7 + CHECK[6] as usize, 13);
        assert_eq!(&CHECK[13..15], &[0xE6, PORT_CHECK_OK as u8]);
        assert_eq!(CHECK[11], PORT_CHECK_BAD as u8);
        assert_eq!(FILL[6], PORT_FILLED as u8);
        // walk: jb at 10 (next 12) and jmp at 14 (next 16) both go to "loop" at 2.
        assert_eq!(12 + (WALK[11] as i8) as isize, 2);
        assert_eq!(16 + (WALK[15] as i8) as isize, 2);
    }

    /// The programs on a real vCPU over anonymous memory: fill, a clean
    /// check, one planted byte found at its address, and the walk
    /// interrupted at its limit.
    #[test]
    fn programs_run_on_a_vcpu() {
        let vm = match Vm::create(crate::kvm::VmType::Default) {
            Ok(vm) => vm,
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        let low = Mapping::anon(LOW_SIZE as usize).unwrap();
        install(&low);
        add_code_slot(&vm, &low, |m| eprintln!("{m}")).unwrap();
        let data = Mapping::anon(0x12000).unwrap();
        vm.set_region2(&Region {
            slot: 1,
            gpa: DATA_BASE,
            size: 0x12000,
            uaddr: data.addr(),
            ..Default::default()
        })
        .unwrap();
        let mut vcpu = real_mode_vcpu(&vm, 0, None).unwrap();
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
    }
}
