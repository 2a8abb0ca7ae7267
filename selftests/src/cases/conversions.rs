//! Explicit shared <-> private conversions with KVM_SET_MEMORY_ATTRIBUTES
//! over ranges that mix both, checked from the guest on each side.

use std::time::Duration;

use kvm_ioctls::VcpuFd;

use crate::cases::pageops::{expect_range, fill_range, on_each_vcpu, Rig, DATA_BASE};
use crate::harness::case::{
    ensure, expect_errno, expect_ok, fail, Case, OrFail, Stop, TestResult, Tx,
};
use crate::kvm::caps::{AccessMode, Lack, Need};
use crate::kvm::{
    ename, GmemFile, Mapping, Vm, KVM_MEMORY_ATTRIBUTE_PRIVATE, KVM_SET_MEMORY_ATTRIBUTES,
};

const NEEDS: &[Need] = &[Need::GuestMemfd, Need::UserMemory2, Need::PrivateAttr];

pub const CASES: &[Case] = &[
    case!(round_trips_keep_each_side, needs: NEEDS),
    case!(round_trips_with_fallocate, needs: NEEDS),
    case!(range_ending_on_a_new_xarray_node, needs: NEEDS),
    case!(stages_2m_keep_each_side, needs: NEEDS),
    case!(stages_2m_with_fallocate_two_vcpus, needs: NEEDS),
    case!(punch_stages_2m_read_zero, needs: NEEDS),
    case!(converting_a_page_unmaps_only_that_page, needs: NEEDS),
    case!(set_private_as_cap_says, needs: &[Need::GmemCreate]),
    case!(unreadable_request_efault, needs: &[Need::Kvm]),
];

const FILE_PAGES: u64 = 16;
/// Test ranges (first page, pages): single pages at the start, inside and at
/// the end, and multi-page ranges starting on even and odd pages.
const RANGES: [(u64, u64); 6] = [(0, 1), (0, 4), (1, 1), (1, 6), (9, 1), (11, 5)];
const INIT: u8 = 0xCC;
const P1: u8 = 0x11;
const P2: u8 = 0x22;
const P3: u8 = 0x33;
const P4: u8 = 0x44;

fn round_trips_keep_each_side(tx: &Tx) -> TestResult {
    round_trips(tx, false)
}

fn round_trips_with_fallocate(tx: &Tx) -> TestResult {
    round_trips(tx, true)
}

/// The host's view of the shared side: byte `off..off+len` of `m` is `want`.
fn host_sees(m: &Mapping, off: u64, len: u64, want: u8, what: &str) -> TestResult {
    match m.first_ne(off as usize, len as usize, want) {
        None => Ok(()),
        Some(i) => Err(Stop::Fail(format!(
            "{what}: the host reads {:#x} at shared offset {i:#x} (GPA {:#x}), expected {want:#x}",
            m.read(i),
            DATA_BASE + i as u64
        ))),
    }
}

/// Upstream's explicit conversion test, one vCPU, one slot, 16 pages:
/// for each range, shared data written by the guest is seen by the host;
/// after converting to PRIVATE the guest sees guest_memfd (fresh pages read
/// 0) and its private stores never reach the shared memory; odd pages go
/// back to shared and show the shared data again while even pages stay
/// private; the whole range goes shared, then PRIVATE again, where the
/// private data is still there unless `fallocate` punched it on the way
/// to shared. Around the range the shared pattern is untouched.
fn round_trips(tx: &Tx, fallocate: bool) -> TestResult {
    let limit = tx.inner_limit(Duration::from_secs(10));
    let mut rig = Rig::new(tx, AccessMode::Private, FILE_PAGES, 1)?;
    let p = rig.page;
    let slot = rig.region(1, DATA_BASE, FILE_PAGES, 0);
    rig.add(&slot)?;
    let total = FILE_PAGES * p;
    // Everything shared to start with.
    rig.set_private(DATA_BASE, total, false)
        .or_fail("KVM_SET_MEMORY_ATTRIBUTES(0) over the slot")?;
    let shared = rig
        .shared
        .as_ref()
        .ok_or_else(|| Stop::Fail("no shared memory behind the slot".into()))?;
    shared.fill(0, total as usize, INIT);
    let vcpu = &mut rig.vcpus[0];
    expect_range(vcpu, DATA_BASE, total, INIT, limit, || {
        "shared slot before any conversion (host wrote the pattern)".into()
    })?;
    tx.diag(format!(
        "{} ranges, fallocate on conversion: {fallocate}",
        RANGES.len()
    ));

    let convert = |gpa: u64, len: u64, private: bool| -> TestResult {
        let off = gpa - DATA_BASE;
        if fallocate {
            let r = if private {
                rig.gmem.allocate(off, len)
            } else {
                rig.gmem.punch(off, len)
            };
            r.or_fail(if private {
                "fallocate(KEEP_SIZE) before converting to PRIVATE"
            } else {
                "PUNCH_HOLE before converting to shared"
            })?;
        }
        rig.vm
            .set_attributes(
                gpa,
                len,
                if private {
                    KVM_MEMORY_ATTRIBUTE_PRIVATE as u64
                } else {
                    0
                },
            )
            .or_fail(&format!(
                "KVM_SET_MEMORY_ATTRIBUTES({}) GPA {gpa:#x}+{len:#x}",
                if private { "PRIVATE" } else { "0" }
            ))
    };
    for (first, pages) in RANGES {
        let gpa = DATA_BASE + first * p;
        let len = pages * p;
        let off = first * p;
        let at = |s: &str| format!("range pages {first}..{}: {s}", first + pages);
        let vcpu = &mut rig.vcpus[0];

        fill_range(vcpu, gpa, len, P1, limit, || at("guest fill, shared"))?;
        host_sees(shared, off, len, P1, &at("guest's shared store"))?;

        convert(gpa, len, true)?;
        let vcpu = &mut rig.vcpus[0];
        expect_range(vcpu, gpa, len, 0, limit, || {
            at("first private read (fresh guest_memfd pages)")
        })?;
        fill_range(vcpu, gpa, len, P2, limit, || at("guest fill, private"))?;
        expect_range(vcpu, gpa, len, P2, limit, || at("private data read back"))?;
        host_sees(
            shared,
            off,
            len,
            P1,
            &at("shared side after private stores"),
        )?;
        if first > 0 {
            expect_range(vcpu, DATA_BASE, off, INIT, limit, || {
                at("shared pages below the range")
            })?;
        }
        if off + len < total {
            expect_range(vcpu, gpa + len, total - off - len, INIT, limit, || {
                at("shared pages above the range")
            })?;
        }

        // Odd pages of the range back to shared: holes in a private range.
        for j in (0..pages).filter(|j| j % 2 == 1) {
            let pg = gpa + j * p;
            convert(pg, p, false)?;
            let vcpu = &mut rig.vcpus[0];
            expect_range(vcpu, pg, p, P1, limit, || {
                at(&format!("page +{j} converted back to shared"))
            })?;
            shared.fill((off + j * p) as usize, p as usize, P3);
            expect_range(vcpu, pg, p, P3, limit, || {
                at(&format!("page +{j}: host's shared store"))
            })?;
        }
        for j in (0..pages).filter(|j| j % 2 == 0) {
            let vcpu = &mut rig.vcpus[0];
            expect_range(vcpu, gpa + j * p, p, P2, limit, || {
                at(&format!("page +{j} still private beside shared holes"))
            })?;
        }

        // The whole range shared: even pages show the guest's P1, odd ones
        // the host's P3.
        convert(gpa, len, false)?;
        for j in 0..pages {
            let want = if j % 2 == 1 { P3 } else { P1 };
            let vcpu = &mut rig.vcpus[0];
            expect_range(vcpu, gpa + j * p, p, want, limit, || {
                at(&format!("page +{j} after converting the range to shared"))
            })?;
        }
        let vcpu = &mut rig.vcpus[0];
        fill_range(vcpu, gpa, len, P4, limit, || at("guest fill, shared again"))?;
        host_sees(shared, off, len, P4, &at("guest's second shared store"))?;

        // PRIVATE again: guest_memfd kept the private data, unless it was
        // punched on the way to shared.
        convert(gpa, len, true)?;
        let (want, why) = if fallocate {
            (0, "punched on the way to shared")
        } else {
            (P2, "kept across the shared phase")
        };
        let vcpu = &mut rig.vcpus[0];
        expect_range(vcpu, gpa, len, want, limit, || {
            at(&format!("private again: data {why}"))
        })?;
        host_sees(shared, off, len, P4, &at("shared side after private reads"))?;

        // Clean slate: everything shared with the initial pattern, nothing
        // left in the file.
        convert(gpa, len, false)?;
        shared.fill(off as usize, len as usize, INIT);
        rig.gmem
            .punch(0, total)
            .or_fail("PUNCH_HOLE over the whole file")?;
    }
    let vcpu = &mut rig.vcpus[0];
    expect_range(vcpu, DATA_BASE, total, INIT, limit, || {
        "shared slot after all round trips".into()
    })?;
    Ok(())
}

const SZ_2M: u64 = 2 << 20;
/// GPA of the first vCPU's data: above real mode's reach, 2 MiB aligned.
const STAGES_GPA: u64 = 0x40_0000;
const DEF: u8 = 0xAA;

/// Upstream's conversion stages as (offset, size) in a vCPU's data of
/// 2 MiB + 1 page: one page and 2 MiB from the start, the same one page
/// in, and the last page. The 2 MiB ranges cover a whole 2 MiB-aligned
/// GPA range, or straddle that boundary.
fn stages(page: u64) -> [(u64, u64); 5] {
    [
        (0, page),
        (0, SZ_2M),
        (page, page),
        (page, SZ_2M),
        (SZ_2M, page),
    ]
}

/// Odd pages of an `n`-page range that go back to shared while the rest
/// stays private: those among the first and the last four. In the 2 MiB
/// stages the last ones sit at the 2 MiB GPA boundary the range ends on
/// or crosses, where a zap or an attribute update spans two page tables.
/// One-page ranges have none.
fn hole_pages(n: u64) -> Vec<u64> {
    (0..n)
        .filter(|j| j % 2 == 1 && (*j < 4 || j + 4 >= n))
        .collect()
}

/// One vCPU's data for the stage cases: 2 MiB + 1 page of a slot at `gpa`,
/// file offset `file_off`, whose shared side is `shared` at the same offset.
struct Area<'a> {
    vm: &'a Vm,
    gmem: &'a GmemFile,
    shared: &'a Mapping,
    gpa: u64,
    file_off: u64,
    page: u64,
    /// Allocate before converting to PRIVATE, PUNCH_HOLE before converting
    /// to shared (upstream's `do_fallocate`).
    fallocate: bool,
    limit: Duration,
    /// Names the vCPU in messages.
    who: String,
}

impl Area<'_> {
    fn size(&self) -> u64 {
        SZ_2M + self.page
    }

    fn off(&self, gpa: u64) -> u64 {
        self.file_off + gpa - self.gpa
    }

    /// KVM_SET_MEMORY_ATTRIBUTES on `gpa..gpa+len`, after fallocate() of
    /// the file range when the area converts with it.
    fn convert(&self, gpa: u64, len: u64, private: bool, fallocate: bool) -> TestResult {
        let off = self.off(gpa);
        if fallocate {
            let (r, what) = if private {
                (self.gmem.allocate(off, len), "fallocate(KEEP_SIZE)")
            } else {
                (self.gmem.punch(off, len), "PUNCH_HOLE")
            };
            r.or_fail(&format!(
                "{}: {what} of file range {off:#x}+{len:#x}",
                self.who
            ))?;
        }
        let attrs = if private {
            KVM_MEMORY_ATTRIBUTE_PRIVATE as u64
        } else {
            0
        };
        self.vm.set_attributes(gpa, len, attrs).map_err(|e| {
            Stop::Fail(format!(
                "{}: KVM_SET_MEMORY_ATTRIBUTES({attrs:#x}) GPA {gpa:#x}+{len:#x}: {}",
                self.who,
                ename(&e)
            ))
        })
    }

    /// The host's view of the shared side of `gpa..gpa+len` is `want`.
    fn host_sees(&self, gpa: u64, len: u64, want: u8, what: &str) -> TestResult {
        let off = self.off(gpa);
        match self.shared.first_ne(off as usize, len as usize, want) {
            None => Ok(()),
            Some(i) => Err(Stop::Fail(format!(
                "{}: {what}: the host reads {:#x} at GPA {:#x} of its shared memory, expected \
                 {want:#x}",
                self.who,
                self.shared.read(i),
                self.gpa + i as u64 - self.file_off
            ))),
        }
    }

    fn host_fill(&self, gpa: u64, len: u64, v: u8) {
        self.shared.fill(self.off(gpa) as usize, len as usize, v);
    }

    fn guest_fill(&self, vcpu: &mut VcpuFd, gpa: u64, len: u64, v: u8, what: &str) -> TestResult {
        fill_range(vcpu, gpa, len, v, self.limit, || {
            format!("{}: {what}", self.who)
        })
    }

    fn guest_sees(&self, vcpu: &mut VcpuFd, gpa: u64, len: u64, v: u8, what: &str) -> TestResult {
        expect_range(vcpu, gpa, len, v, self.limit, || {
            format!("{}: {what}", self.who)
        })
    }

    /// Guest check of the `n` pages from `gpa`, page `j` holding `want(j)`,
    /// one run per stretch of pages that should hold the same byte.
    fn guest_sees_pages(
        &self,
        vcpu: &mut VcpuFd,
        (gpa, n): (u64, u64),
        want: impl Fn(u64) -> u8,
        what: &str,
    ) -> TestResult {
        let mut j = 0;
        while j < n {
            let end = (j..n).find(|&k| want(k) != want(j)).unwrap_or(n);
            let at = gpa + j * self.page;
            self.guest_sees(vcpu, at, (end - j) * self.page, want(j), what)?;
            j = end;
        }
        Ok(())
    }

    /// Shared with the host's pattern `INIT` everywhere, the file empty:
    /// where each stage starts (upstream's clean slate between stages).
    fn clean_slate(&self) -> TestResult {
        self.convert(self.gpa, self.size(), false, true)?;
        self.host_fill(self.gpa, self.size(), INIT);
        Ok(())
    }

    /// Upstream's explicit conversion test on this area (see
    /// [`stages_2m_keep_each_side`] and
    /// [`stages_2m_with_fallocate_two_vcpus`]).
    fn run_stages(&self, vcpu: &mut VcpuFd) -> TestResult {
        let (base, total, p) = (self.gpa, self.size(), self.page);
        self.convert(base, total, false, false)?;
        self.guest_fill(vcpu, base, total, DEF, "guest fill of the shared area")?;
        self.host_sees(base, total, DEF, "the guest's shared stores")?;
        self.host_fill(base, total, INIT);
        self.guest_sees(vcpu, base, total, INIT, "the host's shared stores")?;
        for (o, len) in stages(p) {
            self.conversion_stage(vcpu, o, len)?;
            self.clean_slate()?;
        }
        self.guest_sees(
            vcpu,
            base,
            total,
            INIT,
            "after the last stage's clean slate",
        )
    }

    /// One stage of [`Area::run_stages`]: `len` bytes at offset `o` of the
    /// area, shared and holding `INIT` around it, from shared to PRIVATE,
    /// with shared holes, shared again and PRIVATE again.
    fn conversion_stage(&self, vcpu: &mut VcpuFd, o: u64, len: u64) -> TestResult {
        let (p, total) = (self.page, self.size());
        let gpa = self.gpa + o;
        let n = len / p;
        let stage = |s: &str| format!("stage {o:#x}+{len:#x}: {s}");
        self.guest_fill(vcpu, gpa, len, P1, &stage("guest fill, shared"))?;
        self.host_sees(gpa, len, P1, &stage("the guest's shared stores"))?;

        self.convert(gpa, len, true, self.fallocate)?;
        self.guest_sees(vcpu, gpa, len, 0, &stage("first private read"))?;
        self.guest_fill(vcpu, gpa, len, P2, &stage("guest fill, private"))?;
        self.host_sees(gpa, len, P1, &stage("shared side after private stores"))?;
        // The pages next to the range, where a conversion that runs
        // one page long or short shows, stayed shared; the whole area
        // is checked after the last stage.
        if o > 0 {
            self.guest_sees(vcpu, gpa - p, p, INIT, &stage("shared page below"))?;
        }
        if o + len < total {
            self.guest_sees(vcpu, gpa + len, p, INIT, &stage("shared page above"))?;
        }

        let holes = hole_pages(n);
        for &j in &holes {
            let pg = gpa + j * p;
            let what = |s: &str| stage(&format!("page +{j} back to shared: {s}"));
            self.convert(pg, p, false, self.fallocate)?;
            self.guest_sees(vcpu, pg, p, P1, &what("the shared data"))?;
            self.host_fill(pg, p, P3);
            self.guest_sees(vcpu, pg, p, P3, &what("the host's store"))?;
        }
        let holes = &holes;
        let hole_or = |no: u8| move |j: u64| if holes.contains(&j) { P3 } else { no };
        self.guest_sees_pages(
            vcpu,
            (gpa, n),
            hole_or(P2),
            &stage("private data read back beside the shared holes"),
        )?;

        self.convert(gpa, len, false, self.fallocate)?;
        self.guest_sees_pages(
            vcpu,
            (gpa, n),
            hole_or(P1),
            &stage("range shared again: the shared data"),
        )?;
        self.guest_fill(vcpu, gpa, len, P3, &stage("guest fill, shared again"))?;
        self.host_sees(gpa, len, P3, &stage("the guest's second shared stores"))?;
        self.host_fill(gpa, len, P4);
        self.guest_sees(vcpu, gpa, len, P4, &stage("the host's second stores"))?;

        // PRIVATE again: guest_memfd kept the private data (the holes'
        // too), unless the way to shared punched it.
        self.convert(gpa, len, true, self.fallocate)?;
        let (want, why) = if self.fallocate {
            (0, "punched on the way to shared")
        } else {
            (P2, "kept while shared")
        };
        self.guest_sees(vcpu, gpa, len, want, &stage(&format!("private data {why}")))?;
        self.host_sees(gpa, len, P4, &stage("shared side after private reads"))
    }

    /// Upstream's PUNCH_HOLE test on this area (see
    /// [`punch_stages_2m_read_zero`]); the area is PRIVATE throughout.
    fn punch_stages(&self, vcpu: &mut VcpuFd) -> TestResult {
        let (base, total, p) = (self.gpa, self.size(), self.page);
        self.guest_fill(vcpu, base, total, INIT, "guest fill of the private area")?;
        for (o, len) in stages(p) {
            let gpa = base + o;
            let stage = |s: &str| format!("punch stage {o:#x}+{len:#x}: {s}");
            self.gmem
                .punch(self.off(gpa), len)
                .or_fail(&stage("PUNCH_HOLE"))?;
            self.guest_sees(vcpu, gpa, len, 0, &stage("punched private pages"))?;
            if o > 0 {
                self.guest_sees(vcpu, gpa - p, p, INIT, &stage("private page below"))?;
            }
            if o + len < total {
                self.guest_sees(vcpu, gpa + len, p, INIT, &stage("private page above"))?;
            }
            self.guest_fill(vcpu, gpa, len, INIT, &stage("guest fill again"))?;
        }
        self.guest_sees(vcpu, base, total, INIT, "after the last punch stage")
    }
}

/// Upstream's explicit conversion test over its stage list, one vCPU in
/// 32-bit flat mode and one slot of 2 MiB + 1 page at a 2 MiB-aligned GPA
/// above 1 MiB, converting with KVM_SET_MEMORY_ATTRIBUTES alone. Per
/// stage: the guest's shared stores reach the host; converted to PRIVATE
/// the range reads 0 (fresh guest_memfd pages), takes private stores that
/// never reach the shared side, and the pages around it stay shared; odd
/// pages at the range's ends (where the 2 MiB ranges meet or cross a 2 MiB
/// GPA boundary) go back to shared (the shared data is there, the host's
/// stores reach the guest) while their neighbours stay private; the whole
/// range goes shared (the shared data again) and PRIVATE once more, where
/// guest_memfd still holds the private data. Between stages the file is
/// punched and the slot made shared. Upstream writes only the first page of
/// a 2 MiB range while private; here the guest writes and reads all of it.
fn stages_2m_keep_each_side(tx: &Tx) -> TestResult {
    on_stage_slots(tx, 1, false, |a, vcpu| a.run_stages(vcpu))
}

/// [`stages_2m_keep_each_side`] with fallocate() around each conversion
/// (upstream's second pass), on two vCPUs at once as upstream's `-n 2 -m
/// 2`: each in its own thread on its own slot of 2 MiB + 1 page. Private
/// data is then gone after a round trip through shared: the range reads 0.
/// The slots sit back to back in GPA and in the file (upstream aligns each
/// vCPU's data to 2 MiB for hugepage backing; here the second slot starts
/// one page past a 2 MiB boundary), so a conversion, punch or zap that
/// runs past the end of one vCPU's range lands on the first page of the
/// next one, which that vCPU checks.
fn stages_2m_with_fallocate_two_vcpus(tx: &Tx) -> TestResult {
    on_stage_slots(tx, 2, true, |a, vcpu| a.run_stages(vcpu))
}

/// Upstream's PUNCH_HOLE test over the same stages, one vCPU: the whole
/// slot PRIVATE and written by the guest, then per stage a punch of the
/// range's file pages, after which the guest reads 0 there (KVM dropped
/// its mappings of the freed pages and faults in fresh ones) and the old
/// data on the pages right below and above (the punch freed nothing
/// more); the guest writes the range again for the next stage.
fn punch_stages_2m_read_zero(tx: &Tx) -> TestResult {
    on_stage_slots(tx, 1, false, |a, vcpu| a.punch_stages(vcpu))
}

/// A flat-mode rig with `vcpus` vCPUs, each with its slot of 2 MiB + 1
/// page (PRIVATE, back to back from `STAGES_GPA` and from file offset 0),
/// and `run` on each vCPU's [`Area`] in a thread of its own.
fn on_stage_slots(
    tx: &Tx,
    vcpus: u64,
    fallocate: bool,
    run: fn(&Area, &mut VcpuFd) -> TestResult,
) -> TestResult {
    let limit = tx.inner_limit(Duration::from_secs(10));
    let p = tx.page();
    let area_pages = (SZ_2M + p) / p;
    let mut rig = Rig::flat(tx, AccessMode::Private, vcpus * area_pages, vcpus as usize)?;
    let slots: Vec<_> = (0..vcpus)
        .map(|k| {
            let gpa = STAGES_GPA + k * area_pages * p;
            rig.region(10 + k as u32, gpa, area_pages, k * area_pages)
        })
        .collect();
    for s in &slots {
        rig.add(s)?;
    }
    tx.diag(format!(
        "{vcpus} vCPU(s) in flat mode, slots at GPA {}; fallocate on conversion: {fallocate}",
        slots
            .iter()
            .map(|s| format!("{:#x}+{:#x}", s.gpa, s.size))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let Rig {
        vcpus,
        vm,
        gmem,
        shared,
        ..
    } = &mut rig;
    let shared = shared
        .as_ref()
        .ok_or_else(|| Stop::Fail("no shared memory behind the slots".into()))?;
    let (vm, gmem) = (&*vm, &*gmem);
    on_each_vcpu(vcpus, |k, vcpu| {
        let slot = &slots[k];
        let area = Area {
            vm,
            gmem,
            shared,
            gpa: slot.gpa,
            file_off: slot.gmem_offset,
            page: p,
            fallocate,
            limit,
            who: format!("vCPU {k}"),
        };
        run(&area, vcpu)
    })
}

/// Entries per node of KVM's attribute xarray (XA_CHUNK_SIZE).
const XA_NODE_GFNS: u64 = 64;

/// KVM_SET_MEMORY_ATTRIBUTES on gfns 64..=128, in a slot one page wider on
/// each side: the attribute xarray holds 64 gfns per node, so the range's
/// last gfn (128) is the first of a node no earlier entry needed, which
/// KVM must reserve with the rest before it zaps anything (a store into it
/// cannot fail then). Every gfn of the range, the last one included, must
/// take each change: the guest reads guest_memfd there once PRIVATE (fresh
/// pages: 0, then what it stored), the shared memory again once shared,
/// and the private data once more after the second PRIVATE; the two
/// neighbouring gfns stay shared throughout.
fn range_ending_on_a_new_xarray_node(tx: &Tx) -> TestResult {
    let limit = tx.inner_limit(Duration::from_secs(10));
    let first_gfn = XA_NODE_GFNS;
    let range_pages = XA_NODE_GFNS + 1;
    let slot_pages = range_pages + 2;
    let mut rig = Rig::new(tx, AccessMode::Private, slot_pages, 1)?;
    let p = rig.page;
    let slot_gpa = (first_gfn - 1) * p;
    let gpa = first_gfn * p;
    let len = range_pages * p;
    let total = slot_pages * p;
    let slot = rig.region(1, slot_gpa, slot_pages, 0);
    rig.vm.set_region2(&slot).or_fail(&format!(
        "KVM_SET_USER_MEMORY_REGION2(guest_memfd slot at GPA {slot_gpa:#x}, {slot_pages} pages)"
    ))?;
    let shared = rig
        .shared
        .as_ref()
        .ok_or_else(|| Stop::Fail("no shared memory behind the slot".into()))?;
    shared.fill(0, total as usize, INIT);
    let last = gpa + len - p;
    tx.diag(format!(
        "slot GPA {slot_gpa:#x}+{total:#x}, attributes on GPA {gpa:#x}+{len:#x} (gfns \
         {first_gfn}..={}, the last at GPA {last:#x})",
        first_gfn + range_pages - 1
    ));

    let vm = &rig.vm;
    let set = |private: bool| {
        let attrs = if private {
            KVM_MEMORY_ATTRIBUTE_PRIVATE as u64
        } else {
            0
        };
        vm.set_attributes(gpa, len, attrs).or_fail(&format!(
            "KVM_SET_MEMORY_ATTRIBUTES({}) GPA {gpa:#x}+{len:#x}",
            if private { "PRIVATE" } else { "0" }
        ))
    };
    let neighbours = |vcpu: &mut kvm_ioctls::VcpuFd, when: &str| -> TestResult {
        for n in [slot_gpa, gpa + len] {
            expect_range(vcpu, n, p, INIT, limit, || {
                format!("GPA {n:#x}, outside the range, {when}: must stay shared")
            })?;
        }
        Ok(())
    };

    set(true)?;
    let vcpu = &mut rig.vcpus[0];
    expect_range(vcpu, gpa, len, 0, limit, || {
        "the range after PRIVATE (fresh guest_memfd pages)".into()
    })?;
    neighbours(vcpu, "after PRIVATE")?;
    fill_range(vcpu, gpa, len, P2, limit, || "guest fill, private".into())?;
    host_sees(
        shared,
        0,
        total,
        INIT,
        "the shared side after private stores",
    )?;

    set(false)?;
    let vcpu = &mut rig.vcpus[0];
    expect_range(vcpu, gpa, len, INIT, limit, || {
        "the range back to shared (the shared memory again)".into()
    })?;
    neighbours(vcpu, "after shared")?;

    set(true)?;
    let vcpu = &mut rig.vcpus[0];
    expect_range(vcpu, gpa, len, P2, limit, || {
        "the range PRIVATE again (guest_memfd kept the private data)".into()
    })?;
    neighbours(vcpu, "after PRIVATE again")
}

/// KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) succeeds exactly on VM types whose
/// KVM_CAP_MEMORY_ATTRIBUTES has PRIVATE; elsewhere it is EINVAL (upstream
/// 6.8: attributes outside the VM's supported set), and so is an unknown
/// attribute bit or a nonzero flags field on every VM type.
fn set_private_as_cap_says(tx: &Tx) -> TestResult {
    let vm = tx.vm()?;
    let p = tx.page();
    let private = KVM_MEMORY_ATTRIBUTE_PRIVATE as u64;
    let sys = tx.caps.system_value("MEMORY_ATTRIBUTES");
    let has = tx.vm_caps().has_private();
    tx.diag(format!(
        "KVM_CAP_MEMORY_ATTRIBUTES {:#x} on /dev/kvm, {:#x} on this VM",
        sys.max(0),
        tx.vm_caps().memory_attributes.max(0)
    ));
    let r = vm.set_attributes(DATA_BASE, 4 * p, private);
    if has {
        expect_ok("KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)", r)?;
        expect_ok(
            "KVM_SET_MEMORY_ATTRIBUTES(0) back to shared",
            vm.set_attributes(DATA_BASE, 4 * p, 0),
        )?;
    } else if sys > 0 {
        expect_errno(
            "KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) on a VM type without PRIVATE",
            r,
            libc::EINVAL,
        )?;
    } else {
        // /dev/kvm answers PRIVATE whenever the ioctl is built in (6.8: the
        // system-wide answer is what some VM type could support), so here it
        // is not there at all.
        return expect_errno(
            "KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) where /dev/kvm reports no attributes",
            r,
            libc::ENOTTY,
        );
    }
    expect_errno(
        "KVM_SET_MEMORY_ATTRIBUTES with an unknown attribute bit (1 << 4)",
        vm.set_attributes(DATA_BASE, p, 1 << 4),
        libc::EINVAL,
    )?;
    let bad_flags = vm.set_attributes_raw(kvm_bindings::kvm_memory_attributes {
        address: DATA_BASE,
        size: p,
        attributes: if has { private } else { 0 },
        flags: 1,
    });
    expect_errno(
        "KVM_SET_MEMORY_ATTRIBUTES with flags 1",
        bad_flags,
        libc::EINVAL,
    )?;
    if has {
        for (what, gpa, size) in [
            ("size 0", DATA_BASE, 0),
            ("unaligned address", DATA_BASE + 1, p),
            ("unaligned size", DATA_BASE, p + 1),
            ("address + size wraps", u64::MAX - p + 1, 2 * p),
        ] {
            expect_errno(
                &format!("KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) with {what}"),
                vm.set_attributes(gpa, size, private),
                libc::EINVAL,
            )?;
        }
    }
    Ok(())
}

/// A KVM_SET_MEMORY_ATTRIBUTES request KVM cannot read is EFAULT, on every
/// VM type: the ioctl copies its request in before it looks at the VM.
fn unreadable_request_efault(tx: &Tx) -> TestResult {
    let sys = tx.caps.system_value("MEMORY_ATTRIBUTES");
    if sys <= 0 {
        return Err(Stop::lacking(
            Lack::Cap("KVM_CAP_MEMORY_ATTRIBUTES"),
            format!("KVM_CAP_MEMORY_ATTRIBUTES is {sys} on /dev/kvm: no KVM_SET_MEMORY_ATTRIBUTES"),
        ));
    }
    let vm = tx.vm()?;
    expect_errno(
        "KVM_SET_MEMORY_ATTRIBUTES, request in a PROT_NONE page",
        vm.ioctl_with_unreadable_arg(KVM_SET_MEMORY_ATTRIBUTES),
        libc::EFAULT,
    )
}

/// Converting one private page to shared zaps exactly that gfn's mapping,
/// as upstream's kvm_arch_pre_set_memory_attributes() unmaps the range
/// [start, end): the guest maps four private pages, page 2 becomes shared,
/// and the VM's count of 4 KiB mappings (`pages_4k`) drops by one, while
/// its neighbours keep theirs. An invalidation one page too wide (or too
/// early) takes a neighbour with it, which the guest would only notice as
/// a refault.
fn converting_a_page_unmaps_only_that_page(tx: &Tx) -> TestResult {
    const PAGES: u64 = 4;
    const CONVERTED: u64 = 2;
    let p = tx.page();
    let limit = tx.inner_limit(Duration::from_secs(10));
    let mut rig = Rig::new(tx, AccessMode::Private, PAGES, 1)?;
    let slot = rig.region(1, DATA_BASE, PAGES, 0);
    rig.add(&slot)?;
    fill_range(&mut rig.vcpus[0], DATA_BASE, PAGES * p, 0x6b, limit, || {
        "guest fill of the four private pages".into()
    })?;
    let count = |rig: &Rig| -> Result<u64, Stop> {
        match rig.vm.stat("pages_4k").or_fail("VM statistic pages_4k")? {
            Some(n) => Ok(n),
            None => fail("the VM has no pages_4k statistic (x86 always has)"),
        }
    };
    let before = count(&rig)?;
    rig.set_private(DATA_BASE + CONVERTED * p, p, false)
        .or_fail("KVM_SET_MEMORY_ATTRIBUTES(0) on page 2")?;
    let after = count(&rig)?;
    tx.diag(format!("pages_4k {before} -> {after}"));
    ensure(after + 1 == before, || {
        format!(
            "KVM held {before} 4 KiB mappings before page {CONVERTED} became shared and {after} \
             after: the conversion must unmap exactly that page"
        )
    })?;
    for i in (0..PAGES).filter(|&i| i != CONVERTED) {
        expect_range(&mut rig.vcpus[0], DATA_BASE + i * p, p, 0x6b, limit, || {
            format!("private page {i} after page {CONVERTED} became shared")
        })?;
    }
    ensure(count(&rig)? == after, || {
        "reading the private neighbours faulted something in: one of them had been unmapped"
            .to_string()
    })
}
