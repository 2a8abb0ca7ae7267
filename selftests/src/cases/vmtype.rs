//! Which VM types KVM creates, and under which conditions.
//!
//! VMs with private memory (KVM_X86_SW_PROTECTED_VM) exist only on the TDP
//! MMU: without it KVM_CREATE_VM refuses the type and KVM_CAP_VM_TYPES
//! stops listing it. On 6.1 the `kvm.tdp_mmu` module parameter is writable
//! and sampled per VM at creation, so the case turns it off for a moment
//! and restores it; where it is read-only (6.3 and later) the check needs a
//! boot with `kvm.tdp_mmu=0`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::case::{ensure, expect_ok, fail, Case, Stop, TestResult, Tx};
use crate::kvm::caps::{listed_in_vm_types, Lack, Need};
use crate::kvm::{
    ename, CreateVmError, Vm, VmType, KVM_CAP_MEMORY_ATTRIBUTES, KVM_CAP_VM_TYPES,
    KVM_MEMORY_ATTRIBUTE_PRIVATE,
};

pub const CASES: &[Case] = &[
    // Runs even where the type cannot be created: that may be the point.
    case!(private_mem_needs_tdp_mmu, needs: &[Need::Kvm]),
    case!(creation_races_tdp_mmu_toggle, needs: &[Need::Kvm]),
];

const TDP_MMU_PARAM: &str = "/sys/module/kvm/parameters/tdp_mmu";
const BOOT_HINT: &str = "boot with kvm.tdp_mmu=0 (cargo xtask test --append kvm.tdp_mmu=0)";

/// The `kvm.tdp_mmu` parameter: its value and whether root may change it.
struct TdpMmuParam {
    on: bool,
    writable: bool,
}

impl TdpMmuParam {
    fn read() -> Result<TdpMmuParam, String> {
        let path = Path::new(TDP_MMU_PARAM);
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("read {TDP_MMU_PARAM}: {e}"))?;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("stat {TDP_MMU_PARAM}: {e}"))?
            .permissions()
            .mode();
        TdpMmuParam::parse(&text, mode)
    }

    /// The sysfs text of a bool parameter and its file mode.
    fn parse(text: &str, mode: u32) -> Result<TdpMmuParam, String> {
        let on = match text.trim() {
            "Y" | "y" | "1" => true,
            "N" | "n" | "0" => false,
            other => return Err(format!("{TDP_MMU_PARAM} reads {other:?}, not Y or N")),
        };
        Ok(TdpMmuParam {
            on,
            writable: mode & 0o200 != 0,
        })
    }
}

fn write_tdp_mmu(on: bool) -> Result<(), String> {
    std::fs::write(TDP_MMU_PARAM, if on { "Y" } else { "N" }).map_err(|e| {
        format!(
            "write {} to {TDP_MMU_PARAM}: {e}",
            if on { "Y" } else { "N" }
        )
    })
}

/// Sets `kvm.tdp_mmu` for the guard's lifetime and puts the old value back
/// on drop, failure and panic included.
struct TdpMmuSet {
    restore: bool,
}

impl TdpMmuSet {
    fn new(tx: &Tx, on: bool, restore: bool) -> Result<TdpMmuSet, Stop> {
        write_tdp_mmu(on).map_err(Stop::Fail)?;
        tx.diag(format!(
            "kvm.tdp_mmu set to {} for this check, restored to {} afterwards",
            yn(on),
            yn(restore)
        ));
        Ok(TdpMmuSet { restore })
    }
}

impl Drop for TdpMmuSet {
    fn drop(&mut self) {
        if let Err(e) = write_tdp_mmu(self.restore) {
            eprintln!("gmem-selftests: could not restore kvm.tdp_mmu: {e}");
        }
    }
}

fn yn(on: bool) -> &'static str {
    if on {
        "Y"
    } else {
        "N"
    }
}

/// What KVM says about this case's VM type right now: listed in
/// KVM_CAP_VM_TYPES, and KVM_CREATE_VM's result (errno on refusal).
fn probe(t: VmType) -> Result<(bool, Result<(), i32>), Stop> {
    let kvm =
        kvm_ioctls::Kvm::new().map_err(|e| Stop::Fail(format!("open /dev/kvm: {}", ename(&e))))?;
    let vm_types = kvm.check_extension_raw(KVM_CAP_VM_TYPES as libc::c_ulong);
    let created = match Vm::create(t) {
        Ok(_) => Ok(()),
        Err(e @ CreateVmError::CreateVm(..)) => Err(e.errno()),
        Err(e @ CreateVmError::OpenKvm(_)) => return Err(Stop::Fail(e.to_string())),
    };
    Ok((listed_in_vm_types(t, vm_types), created))
}

/// With the TDP MMU off: a VM type with private memory is refused (EINVAL)
/// and not listed; the default type is still created and listed.
fn check_without_tdp_mmu(tx: &Tx) -> TestResult {
    let t = tx.vm_type;
    let (listed, created) = probe(t)?;
    tx.diag(format!(
        "without the TDP MMU: {} {} in KVM_CAP_VM_TYPES, KVM_CREATE_VM {}",
        t.uapi_name(),
        if listed { "listed" } else { "not listed" },
        match created {
            Ok(()) => "ok".to_string(),
            Err(e) => crate::kvm::errno_name(e),
        }
    ));
    match t {
        VmType::Default => {
            ensure(listed, || {
                "KVM_X86_DEFAULT_VM is not listed in KVM_CAP_VM_TYPES without the TDP MMU".into()
            })?;
            expect_ok(
                "KVM_CREATE_VM(KVM_X86_DEFAULT_VM) without the TDP MMU",
                created.map_err(crate::kvm::Errno::new),
            )
        }
        VmType::SwProtected => {
            match created {
                Err(e) if e == libc::EINVAL => {}
                Ok(()) => {
                    return fail(
                        "KVM_CREATE_VM(KVM_X86_SW_PROTECTED_VM) succeeded without the TDP MMU: \
                         a VM with private memory on the shadow MMU (upstream refuses it with EINVAL)",
                    )
                }
                Err(e) => {
                    return fail(format!(
                        "KVM_CREATE_VM(KVM_X86_SW_PROTECTED_VM) without the TDP MMU: expected EINVAL, got {}",
                        crate::kvm::errno_name(e)
                    ))
                }
            }
            ensure(!listed, || {
                "KVM_CAP_VM_TYPES lists KVM_X86_SW_PROTECTED_VM without the TDP MMU, \
                 but KVM_CREATE_VM refuses it"
                    .into()
            })
        }
    }
}

/// With the TDP MMU on: the type is created and listed (the control that
/// shows the refusal came from the MMU and not from a missing type).
fn check_with_tdp_mmu(tx: &Tx) -> TestResult {
    let t = tx.vm_type;
    let (listed, created) = probe(t)?;
    if let Err(e) = created {
        return fail(format!(
            "control: KVM_CREATE_VM({}) with the TDP MMU on: {}",
            t.uapi_name(),
            crate::kvm::errno_name(e)
        ));
    }
    ensure(listed, || {
        format!(
            "control: {} created with the TDP MMU on but not listed in KVM_CAP_VM_TYPES",
            t.uapi_name()
        )
    })
}

fn private_mem_needs_tdp_mmu(tx: &Tx) -> TestResult {
    if tx.vm_type == VmType::SwProtected {
        // Without private memory support at all there is nothing to refuse.
        let kvm = kvm_ioctls::Kvm::new()
            .map_err(|e| Stop::Fail(format!("open /dev/kvm: {}", ename(&e))))?;
        let attrs = kvm.check_extension_raw(KVM_CAP_MEMORY_ATTRIBUTES as libc::c_ulong);
        if attrs <= 0 || (attrs as u64) & KVM_MEMORY_ATTRIBUTE_PRIVATE as u64 == 0 {
            return Err(Stop::lacking(
                Lack::Bits(
                    "KVM_CAP_MEMORY_ATTRIBUTES",
                    KVM_MEMORY_ATTRIBUTE_PRIVATE as u64,
                ),
                format!(
                    "KVM_CAP_MEMORY_ATTRIBUTES on /dev/kvm is {:#x}, without \
                     KVM_MEMORY_ATTRIBUTE_PRIVATE: no VM type with private memory on this kernel",
                    attrs.max(0)
                ),
            ));
        }
    }
    let param = match TdpMmuParam::read() {
        Ok(p) => p,
        Err(e) => {
            return Err(Stop::lacking(
                Lack::Env("kvm.tdp_mmu".into()),
                format!("no kvm.tdp_mmu module parameter to turn the TDP MMU off: {e}"),
            ))
        }
    };
    tx.diag(format!(
        "kvm.tdp_mmu is {} ({})",
        yn(param.on),
        if param.writable {
            "writable"
        } else {
            "read-only"
        }
    ));
    match (param.on, param.writable) {
        (true, false) => Err(Stop::lacking(
            Lack::Boot("kvm.tdp_mmu=0"),
            format!(
                "kvm.tdp_mmu is Y and read-only on this kernel, so the TDP MMU cannot be turned \
                 off at run time: {BOOT_HINT}"
            ),
        )),
        (true, true) => {
            if let Some(why) = &tx.vm_caps().unavailable {
                return Err(Stop::lacking(
                    Lack::VmType(tx.vm_type),
                    format!(
                        "no {} VM even with kvm.tdp_mmu=Y: {why}",
                        tx.vm_type.suffix()
                    ),
                ));
            }
            {
                let _off = TdpMmuSet::new(tx, false, true)?;
                check_without_tdp_mmu(tx)?;
            }
            check_with_tdp_mmu(tx)
        }
        (false, writable) => {
            check_without_tdp_mmu(tx)?;
            if writable {
                let _on = TdpMmuSet::new(tx, true, false)?;
                check_with_tdp_mmu(tx)
            } else {
                tx.diag(
                    "kvm.tdp_mmu is N and read-only: the refusal is checked, the control with \
                     the TDP MMU on needs a boot without kvm.tdp_mmu=0",
                );
                Ok(())
            }
        }
    }
}

/// How long the race runs at least (and at most, when one of the two
/// outcomes has not shown up yet), and how often each outcome must have
/// been seen before it may stop early. Under TCG a VM that is created and
/// destroyed costs about half a second while the parameter flips, a
/// refusal a few milliseconds, so most attempts are refusals and the few
/// created VMs bound the time.
const RACE_MIN: Duration = Duration::from_secs(1);
const RACE_MAX: Duration = Duration::from_secs(5);
const RACE_EACH: u64 = 3;

/// What the creating side of the race saw.
#[derive(Default)]
struct RaceTally {
    created: u64,
    refused: u64,
}

/// Creates VMs of `t` until the tally is conclusive, while `flipping` runs.
fn create_while_flipping(t: VmType) -> Result<RaceTally, Stop> {
    let start = Instant::now();
    let mut n = RaceTally::default();
    loop {
        match Vm::create(t) {
            Ok(vm) => {
                n.created += 1;
                drop(vm);
            }
            Err(CreateVmError::CreateVm(_, e)) if e.errno() == libc::EINVAL => n.refused += 1,
            Err(e) => {
                return Err(Stop::Fail(format!(
                    "KVM_CREATE_VM({}) while kvm.tdp_mmu flips: {e} (after {} created, {} refused)",
                    t.uapi_name(),
                    n.created,
                    n.refused
                )))
            }
        }
        let seen_both = n.created >= RACE_EACH && (t == VmType::Default || n.refused >= RACE_EACH);
        let spent = start.elapsed();
        if (spent >= RACE_MIN && seen_both) || spent >= RACE_MAX {
            return Ok(n);
        }
    }
}

/// 6.1 samples `kvm.tdp_mmu` when KVM_CREATE_VM checks the type and again
/// when it sets up the VM's MMU, and root may flip it in between. A VM type
/// with private memory must then still be refused with EINVAL (the series
/// checks which MMU the VM got) and the half-made VM torn down cleanly (a
/// splat fails the case), never handed out on the shadow MMU; default VMs
/// are created whatever the parameter says. Where the parameter is
/// read-only (upstream since 6.3) there is nothing to race.
fn creation_races_tdp_mmu_toggle(tx: &Tx) -> TestResult {
    let t = tx.vm_type;
    let param = TdpMmuParam::read().map_err(|e| {
        Stop::lacking(
            Lack::Env("kvm.tdp_mmu".into()),
            format!("no kvm.tdp_mmu module parameter to flip: {e}"),
        )
    })?;
    if !param.writable {
        return Err(Stop::lacking(
            Lack::Param("kvm.tdp_mmu"),
            "kvm.tdp_mmu is read-only on this kernel: it cannot change while a VM is created",
        ));
    }
    if param.on {
        if let Some(why) = &tx.vm_caps().unavailable {
            return Err(Stop::lacking(
                Lack::VmType(t),
                format!("no {} VM even with kvm.tdp_mmu=Y: {why}", t.suffix()),
            ));
        }
    }
    let _restore = TdpMmuSet::new(tx, param.on, param.on)?;
    let stop = AtomicBool::new(false);
    let flips = AtomicU64::new(0);
    let (tally, flipped) = std::thread::scope(|s| {
        let flipper = s.spawn(|| {
            let mut on = !param.on;
            while !stop.load(Ordering::Relaxed) {
                write_tdp_mmu(on)?;
                flips.fetch_add(1, Ordering::Relaxed);
                on = !on;
            }
            Ok::<(), String>(())
        });
        let tally = create_while_flipping(t);
        stop.store(true, Ordering::Relaxed);
        let flipped = flipper
            .join()
            .unwrap_or_else(|_| Err("the flipping thread panicked".into()));
        (tally, flipped)
    });
    flipped.map_err(Stop::Fail)?;
    let n = tally?;
    let flips = flips.load(Ordering::Relaxed);
    tx.diag(format!(
        "{} KVM_CREATE_VM({}) calls while kvm.tdp_mmu flipped {flips} times: {} created, {} refused with EINVAL",
        n.created + n.refused,
        t.uapi_name(),
        n.created,
        n.refused
    ));
    match t {
        VmType::Default => ensure(n.refused == 0, || {
            format!(
                "KVM_CREATE_VM(KVM_X86_DEFAULT_VM) was refused {} times: the default type needs no TDP MMU",
                n.refused
            )
        }),
        VmType::SwProtected => ensure(n.created > 0 && n.refused > 0, || {
            format!(
                "the flips never showed in KVM_CREATE_VM ({} created, {} refused in {}s): the race was not run",
                n.created,
                n.refused,
                RACE_MAX.as_secs()
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::TdpMmuParam;

    #[test]
    fn tdp_mmu_param_value_and_mode() {
        let p = TdpMmuParam::parse("Y\n", 0o100644).unwrap();
        assert!(p.on && p.writable);
        let p = TdpMmuParam::parse("N\n", 0o100444).unwrap();
        assert!(!p.on && !p.writable);
        assert!(TdpMmuParam::parse("maybe\n", 0o644).is_err());
    }
}
