//! Bounded races: PUNCH_HOLE against memslot churn and against a vCPU
//! walking the punched pages, and attribute conversions against a vCPU
//! faulting the converted gfn.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cases::guest::{run_once, Exit};
use crate::cases::guest::{Guest, TouchError};
use crate::cases::pageops::{
    expect_range, fill_range, start_walk, start_watch, Rig, DATA_BASE, EPOCH_GPA, EXPECT_GPA,
    PORT_WATCH_BAD,
};
use crate::harness::case::{ensure, fail, Case, OrFail, Stop, TestResult, Tx};
use crate::kvm::caps::{AccessMode, Need};
use crate::kvm::{ename, KVM_MEMORY_ATTRIBUTE_PRIVATE};

pub const CASES: &[Case] = &[
    case!(punch_vs_memslot_churn, needs: &[Need::GuestMemfd, Need::UserMemory2, Need::GuestAccess]),
    case!(punch_under_walking_vcpu, needs: &[Need::GuestMemfd, Need::UserMemory2, Need::GuestAccess]),
    case!(conversion_starting_at_the_faulting_gfn, needs: &[Need::GuestMemfd, Need::UserMemory2, Need::PrivateAttr]),
    case!(slot_delete_racing_last_close, needs: &[Need::GuestMemfd, Need::UserMemory2]),
];

const PAGES: u64 = 8;
/// Longest race; with the progress check the case stays under 10 s.
const RACE: Duration = Duration::from_secs(2);

fn punch_vs_memslot_churn(tx: &Tx) -> TestResult {
    let p = tx.page();
    let limit = tx.inner_limit(Duration::from_secs(5));
    let mut g = Guest::new(tx, PAGES, PAGES)?;
    let warm = (2 * p + 0x10) as u16;
    let t = g.touch(warm, 0x9C, limit)?;
    ensure(t.readback == 0x9C, || format!("warm-up access: {t:?}"))?;

    let punches = AtomicU64::new(0);
    let churns = AtomicU64::new(0);
    let region = g.data_region();
    // Shorter when the per-case timeout is tiny, so the case always finishes.
    let race = RACE.min(tx.timeout / 4);
    let deadline = Instant::now() + race;
    let (punch_err, churn_err) = {
        let gmem = &g.gmem;
        let vm = &g.vm;
        let (punches, churns) = (&punches, &churns);
        std::thread::scope(|s| {
            let a = s.spawn(move || -> Option<String> {
                while Instant::now() < deadline {
                    if let Err(e) = gmem.punch(0, PAGES * p) {
                        return Some(format!("PUNCH_HOLE failed during the race: {}", ename(&e)));
                    }
                    punches.fetch_add(1, Ordering::Relaxed);
                }
                None
            });
            let b = s.spawn(move || -> Option<String> {
                while Instant::now() < deadline {
                    if let Err(e) = vm.delete_region(&region) {
                        return Some(format!(
                            "deleting the slot failed during the race: {}",
                            ename(&e)
                        ));
                    }
                    if let Err(e) = vm.set_region2(&region) {
                        return Some(format!(
                            "re-creating the slot failed during the race: {}",
                            ename(&e)
                        ));
                    }
                    churns.fetch_add(1, Ordering::Relaxed);
                }
                None
            });
            (
                a.join()
                    .unwrap_or_else(|_| Some("punch thread panicked".into())),
                b.join()
                    .unwrap_or_else(|_| Some("memslot thread panicked".into())),
            )
        })
    };
    tx.diag(format!(
        "{:.1}s race: {} punches, {} slot delete/create cycles",
        race.as_secs_f64(),
        punches.load(Ordering::Relaxed),
        churns.load(Ordering::Relaxed)
    ));
    if let Some(e) = punch_err.or(churn_err) {
        return fail(e);
    }
    ensure(
        punches.load(Ordering::Relaxed) > 0 && churns.load(Ordering::Relaxed) > 0,
        || "the race did not run both loops at least once".to_string(),
    )?;
    // The last loop iteration re-created the slot; the vCPU must make progress.
    for page in 0..PAGES {
        let off = (page * p + 0x10) as u16;
        match g.touch(off, 0x20 + page as u8, limit) {
            Ok(t) => {
                ensure(t.found == 0, || {
                    format!("page {page} reads {:#x} after the race punched the whole file, expected 0", t.found)
                })?;
                ensure(t.readback == 0x20 + page as u8, || format!("page {page}: read back {:#x}", t.readback))?;
            }
            Err(TouchError::TimedOut { limit, .. }) => {
                return fail(format!(
                    "no vCPU progress on page {page} within {:.1}s after the race: an invalidation was left \
                     unbalanced (mmu_invalidate_in_progress stuck raised)",
                    limit.as_secs_f64()
                ))
            }
            Err(e) => return fail(format!("page {page} after the race: {e}")),
        }
    }
    Ok(())
}

/// Pages the vCPU walks over (and the host punches); as many again follow
/// that nobody punches.
const WALK_PAGES: u64 = 4;
/// Rounds are bounded by time and by count, so the case stays short under TCG.
const WALK_RACE: Duration = Duration::from_secs(4);
const MAX_ROUNDS: u64 = 48;
/// How long the vCPU stays in one KVM_RUN of the walk before the host
/// looks whether the punching thread is done.
const WALK_SLICE: Duration = Duration::from_millis(20);

/// A vCPU walks over guest_memfd pages (one load per page, round and round,
/// so it faults each page back in right after KVM zaps it) while another
/// thread punches each page and re-allocates it. Afterwards every punched
/// page must read zero and the others their old data; then the guest
/// stores a new byte everywhere, KVM rebuilds its mappings (slot deleted
/// and re-added), and every store must be found again.
///
/// A fault that races with a punch gets the page the punch is about to
/// free; KVM must notice the invalidation in progress for that gfn
/// (mmu_invalidate_retry_gfn() checks the range) and retry. If it does
/// not, the guest keeps a mapping of the freed page: it reads the old data
/// where zeros belong, or its later store lands in the freed page and is
/// missing once the mapping is rebuilt.
fn punch_under_walking_vcpu(tx: &Tx) -> TestResult {
    let limit = tx.inner_limit(Duration::from_secs(10));
    let mode = tx.access_mode()?;
    let pages = 2 * WALK_PAGES;
    let mut rig = Rig::new(tx, mode, pages, 1)?;
    let p = rig.page;
    let slot = rig.region(1, DATA_BASE, pages, 0);
    rig.add(&slot)?;
    let race = WALK_RACE.min(tx.timeout / 4);
    let deadline = Instant::now() + race;
    let (mut rounds, mut punches, mut slices) = (0u64, 0u64, 0u64);
    while rounds < MAX_ROUNDS && (rounds < 2 || Instant::now() < deadline) {
        let v = 0x10 + (rounds % 0x60) as u8;
        let at = |s: &str| format!("round {rounds}: {s}");
        fill_range(&mut rig.vcpus[0], DATA_BASE, pages * p, v, limit, || {
            at("guest fill before the race")
        })?;
        start_walk(&rig.vcpus[0], DATA_BASE, WALK_PAGES, p).map_err(|e| Stop::Fail(at(&e)))?;
        let done = AtomicBool::new(false);
        let (walk, punched) = {
            let Rig { vcpus, gmem, .. } = &mut rig;
            let vcpu = &mut vcpus[0];
            let done = &done;
            std::thread::scope(|s| {
                let walker = s.spawn(move || -> Result<u64, String> {
                    let mut n = 0;
                    loop {
                        match run_once(vcpu, WALK_SLICE) {
                            Exit::TimedOut => n += 1,
                            e => return Err(format!("the walking vCPU stopped: {e:?}")),
                        }
                        if done.load(Ordering::Acquire) {
                            return Ok(n);
                        }
                    }
                });
                let mut punched = Ok(0u64);
                // Let the walk get going, then punch page after page,
                // each time giving the vCPU a moment to fault it back in.
                std::thread::sleep(Duration::from_millis(5));
                for pg in (0..WALK_PAGES).map(|i| (i + rounds) % WALK_PAGES) {
                    let r = gmem
                        .punch(pg * p, p)
                        .and_then(|()| gmem.allocate(pg * p, p));
                    if let Err(e) = r {
                        punched = Err(format!(
                            "PUNCH_HOLE + re-allocate of page {pg}: {}",
                            ename(&e)
                        ));
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(3));
                    punched = punched.map(|n| n + 1);
                }
                done.store(true, Ordering::Release);
                let walk = walker
                    .join()
                    .unwrap_or_else(|_| Err("the walking thread panicked".into()));
                (walk, punched)
            })
        };
        slices += walk.map_err(|e| Stop::Fail(at(&e)))?;
        punches += punched.map_err(|e| Stop::Fail(at(&e)))?;
        let vcpu = &mut rig.vcpus[0];
        for pg in 0..pages {
            let punched = pg < WALK_PAGES;
            let want = if punched { 0 } else { v };
            expect_range(vcpu, DATA_BASE + pg * p, p, want, limit, || {
                at(&if punched {
                    format!(
                        "page {pg}, punched and re-allocated under the walking vCPU: old data \
                         means a fault that raced with the punch kept the freed page mapped"
                    )
                } else {
                    format!("page {pg}, never punched")
                })
            })?;
        }
        let w = v ^ 0x80;
        fill_range(vcpu, DATA_BASE, pages * p, w, limit, || {
            at("guest fill after the race")
        })?;
        rig.rebuild(std::slice::from_ref(&slot))?;
        let vcpu = &mut rig.vcpus[0];
        for pg in 0..pages {
            expect_range(vcpu, DATA_BASE + pg * p, p, w, limit, || {
                at(&format!(
                    "page {pg} after KVM rebuilt its mappings: the guest's store is gone, it \
                     went through a stale mapping to a page the punch freed"
                ))
            })?;
        }
        rounds += 1;
    }
    tx.diag(format!(
        "access mode {}: {rounds} rounds, {punches} punches under the walking vCPU, \
         {slices} KVM_RUN slices of {} ms",
        rig.mode_name(),
        WALK_SLICE.as_millis()
    ));
    Ok(())
}

/// Busy-waits `d` (a sleep would be far coarser than the steps).
fn spin(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// How long the conversion case converts. Against a kernel whose retry
/// check misses the range's first gfn, the guest caught a stale mapping
/// after 0.1 to 0.75 s under TCG (26 runs): about 10 conversions per ms
/// there, most of them costing the vCPU an exit.
const CONVERT_RACE: Duration = Duration::from_millis(1000);
/// After each conversion the host waits a gap of one of these steps, so
/// that the next one begins at every phase of the vCPU's fault after it.
const CONVERT_GAPS: u64 = 8;
const CONVERT_STEP: Duration = Duration::from_micros(2);
/// What the guest finds on each side of the watched page.
const SHARED_BYTE: u8 = 0x5A;
const PRIVATE_BYTE: u8 = 0xA7;

/// What the watching vCPU saw: the byte it found and the one it expected.
struct Caught {
    found: u8,
    expected: u8,
}

/// Runs the watching vCPU in slices until `done` or until the guest
/// reports a mismatch; `faults` counts the KVM_EXIT_MEMORY_FAULTs at the
/// page on the way.
///
/// Such an exit is no error here: a fault reads the page's attribute
/// when it starts and again once it sampled the invalidation sequence, and
/// when a conversion came in between it leaves to userspace (upstream
/// does the same), which, as a VMM would after converting, runs the vCPU
/// again.
fn watch_until(
    vcpu: &mut kvm_ioctls::VcpuFd,
    done: &AtomicBool,
    faults: &mut u64,
) -> Result<Option<Caught>, String> {
    loop {
        match run_once(vcpu, WALK_SLICE) {
            Exit::TimedOut => {}
            Exit::MemoryFault(m) if m.gpa == DATA_BASE => *faults += 1,
            Exit::Io {
                port: PORT_WATCH_BAD,
                value,
            } => {
                let r = vcpu
                    .get_regs()
                    .map_err(|e| format!("KVM_GET_REGS: {}", ename(&e)))?;
                return Ok(Some(Caught {
                    found: value,
                    expected: (r.rax >> 8) as u8,
                }));
            }
            e => return Err(format!("the watching vCPU stopped: {e:?}")),
        }
        if done.load(Ordering::Acquire) {
            return Ok(None);
        }
    }
}

/// A vCPU reads one page in a loop while the host flips that page between
/// shared and PRIVATE, each KVM_SET_MEMORY_ATTRIBUTES covering exactly
/// that gfn, so every invalidation range starts at the gfn the vCPU keeps
/// faulting back in. The guest knows which side it must see (the host
/// tells it through a seqlock in the code slot, see pageops' `watch`): the
/// shared memory's byte while shared, guest_memfd's while PRIVATE.
///
/// A fault that got its pfn just before an attribute change began must
/// find its gfn in the invalidation range under mmu_lock
/// (mmu_invalidate_retry_gfn(), `start <= gfn < end`) and retry. One that
/// goes ahead maps the old side's page after the change: the guest then
/// reads the other side's byte, and nothing removes that mapping before
/// the next change, so the guest catches it. The window is a few
/// instructions of each fault, so the case changes the attributes
/// thousands of times.
fn conversion_starting_at_the_faulting_gfn(tx: &Tx) -> TestResult {
    let limit = tx.inner_limit(Duration::from_secs(10));
    let mut rig = Rig::new(tx, AccessMode::Private, 1, 1)?;
    // The vCPU moves to the watching thread; the rest stays shared.
    let Some(mut vcpu) = rig.vcpus.pop() else {
        return fail("the fixture has no vCPU");
    };
    let rig = &rig;
    let p = rig.page;
    let slot = rig.region(1, DATA_BASE, 1, 0);
    rig.vm
        .set_region2(&slot)
        .or_fail("KVM_SET_USER_MEMORY_REGION2(guest_memfd slot, 1 page)")?;
    let shared = rig
        .shared
        .as_ref()
        .ok_or_else(|| Stop::Fail("no shared memory behind the slot".into()))?;
    shared.fill(0, p as usize, SHARED_BYTE);
    let set = |private: bool| {
        let attrs = if private {
            KVM_MEMORY_ATTRIBUTE_PRIVATE as u64
        } else {
            0
        };
        rig.vm.set_attributes(DATA_BASE, p, attrs)
    };
    set(true).or_fail("KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) on the page")?;
    fill_range(&mut vcpu, DATA_BASE, p, PRIVATE_BYTE, limit, || {
        "guest fill of the private page".into()
    })?;
    rig.low.write(EXPECT_GPA as usize, PRIVATE_BYTE);
    rig.low.write(EPOCH_GPA as usize, 0);
    start_watch(&vcpu, DATA_BASE).map_err(Stop::Fail)?;

    let race = CONVERT_RACE.min(tx.timeout / 4);
    let done = AtomicBool::new(false);
    let mut conversions = 0u64;
    let (watched, converted) = std::thread::scope(|s| {
        let done = &done;
        let watcher = s.spawn(move || {
            let mut faults = 0;
            let r = watch_until(&mut vcpu, done, &mut faults);
            done.store(true, Ordering::Release);
            (r, faults)
        });
        let deadline = Instant::now() + race;
        let mut private = true;
        let mut epoch = 0u8;
        // The guest reads the epoch and the expectation with plain loads:
        // the host's volatile stores reach it in program order (x86 keeps
        // stores in order), and the ioctl lies between the two epoch stores.
        let converted = loop {
            if done.load(Ordering::Acquire) || Instant::now() >= deadline {
                break Ok(());
            }
            private = !private;
            epoch = epoch.wrapping_add(1);
            rig.low.write(EPOCH_GPA as usize, epoch);
            if let Err(e) = set(private) {
                break Err(format!(
                    "conversion {conversions}: KVM_SET_MEMORY_ATTRIBUTES({}): {}",
                    if private { "PRIVATE" } else { "0" },
                    ename(&e)
                ));
            }
            let want = if private { PRIVATE_BYTE } else { SHARED_BYTE };
            rig.low.write(EXPECT_GPA as usize, want);
            epoch = epoch.wrapping_add(1);
            rig.low.write(EPOCH_GPA as usize, epoch);
            conversions += 1;
            spin(CONVERT_STEP * (conversions % CONVERT_GAPS) as u32);
        };
        done.store(true, Ordering::Release);
        let watched = watcher
            .join()
            .unwrap_or_else(|_| (Err("the watching thread panicked".into()), 0));
        (watched, converted)
    });
    let (watched, faults) = watched;
    tx.diag(format!(
        "{conversions} conversions of the page under the watching vCPU in at most {} ms, \
         {faults} KVM_EXIT_MEMORY_FAULT(s) on the way",
        race.as_millis()
    ));
    converted.map_err(Stop::Fail)?;
    match watched.map_err(Stop::Fail)? {
        None => Ok(()),
        Some(Caught { found, expected }) => fail(format!(
            "after {conversions} conversions the guest read {found:#x} at GPA {DATA_BASE:#x}, \
             expected {expected:#x} ({}): a fault that raced with a conversion starting at its \
             gfn was not retried and mapped the other side's page",
            if expected == PRIVATE_BYTE {
                "PRIVATE: guest_memfd's byte; the shared memory holds 0x5a"
            } else {
                "shared: the shared memory's byte; guest_memfd holds 0xa7"
            }
        )),
    }
}

/// A memslot deletion racing the last close() of the guest_memfd bound to
/// it. A memslot holds no reference to its file, so the close frees the
/// file while the deletion may already hold slots_lock: then the deletion
/// finds a file with no references left, unbinds it under the mapping's
/// invalidate lock itself, and the file's release, waiting for slots_lock,
/// finds nothing bound. Each iteration lines both up on a barrier and
/// shifts the close by a few microseconds more; the deletion spends
/// milliseconds under slots_lock (an SRCU grace period), so a share of the
/// iterations take the dying-file path, which userspace cannot see. A
/// lock the path leaves held makes the next close of a file hang; one it
/// releases without holding it is a DEBUG_RWSEMS warning (gmem config).
fn slot_delete_racing_last_close(tx: &Tx) -> TestResult {
    use crate::kvm::{Mapping, Region, KVM_MEM_GUEST_MEMFD};
    use std::os::fd::AsRawFd;
    use std::sync::Barrier;

    let p = tx.page();
    let vm = tx.vm()?;
    let mem = Mapping::anon((2 * p) as usize).or_fail("mmap(anon)")?;
    let race = Duration::from_millis(1500).min(tx.timeout / 4);
    let deadline = Instant::now() + race;
    let mut rounds = 0u64;
    while Instant::now() < deadline {
        let gmem = vm.create_gmem(2 * p, 0).or_fail("KVM_CREATE_GUEST_MEMFD")?;
        let region = Region {
            slot: 0,
            flags: KVM_MEM_GUEST_MEMFD,
            gpa: 0x10_0000,
            size: 2 * p,
            uaddr: mem.addr(),
            gmem_offset: 0,
            gmem_fd: gmem.as_raw_fd() as u32,
        };
        vm.set_region2(&region).or_fail("binding the slot")?;
        let delay = Duration::from_micros(rounds % 64 * 25);
        let start = Barrier::new(2);
        let deleted = std::thread::scope(|s| {
            let deleter = s.spawn(|| {
                start.wait();
                vm.delete_region(&region)
            });
            start.wait();
            let until = Instant::now() + delay;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            drop(gmem);
            deleter.join()
        });
        match deleted {
            Ok(r) => r.or_fail(&format!("deleting the slot in round {rounds}"))?,
            Err(_) => return fail("the deleting thread panicked"),
        }
        rounds += 1;
    }
    tx.diag(format!(
        "{rounds} rounds of a slot deletion racing its file's last close in {:.1}s",
        race.as_secs_f64()
    ));
    ensure(rounds > 0, || "no round ran".to_string())
}
